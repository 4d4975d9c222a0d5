#!/usr/bin/env bash
# Quick checks of every CUDA path before the long benchmarks: a tiny job on the GPU (bf16, fp8
# weights, low_vram parking, streamed blocks, previews), fp8 matmuls and streaming at the real width
# on 4 blocks, and the component benchmarks at small sizes.
set -uo pipefail
source scripts/gpu/env.sh
log() { echo "$@" | tee -a "$OUT/summary.txt"; }
$WANLORA doctor 2>&1 | tee "$OUT/doctor.txt"
D=/tmp/smoke; rm -rf $D
$WANLORA demo --prepare $D --steps 12 >/dev/null
sed -i 's/device: cpu/device: cuda/; s/dtype: fp32/dtype: bf16/' $D/job.yaml
sed -i 's/        arch: wan22_14b_i2v/        arch: wan22_14b_i2v\n        quantize: true\n        qtype: float8\n        low_vram: true\n        layer_offloading: true\n        layer_offloading_transformer_percent: 0.5/' $D/job.yaml
$WANLORA train --no-progress $D/job.yaml > "$OUT/smoke_train.txt" 2>&1; log "tiny job on cuda (fp8 weights, low_vram, streaming): rc=$?"
tail -4 "$OUT/smoke_train.txt"; ls $D/demo/samples | tee -a "$OUT/summary.txt"
sed -i 's/        qtype: float8/        qtype: float8\n        fp8_matmul: true/' $D/job.yaml; rm -rf $D/demo
$WANLORA train --no-progress $D/job.yaml > "$OUT/smoke_train2.txt" 2>&1; log "tiny job on cuda (fp8 matmul): rc=$?"; tail -2 "$OUT/smoke_train2.txt"
for mode in off weights matmul; do
  $WANLORA bench step --layers 4 --frames 41 --height 512 --width 512 --steps 3 --fp8 $mode 2>&1 | grep '^wanlora' | tee -a "$OUT/summary.txt"
done
$WANLORA bench step --layers 4 --frames 41 --height 512 --width 512 --steps 3 --fp8 weights --offload-blocks 4 --park 2>&1 | grep -E '^wanlora|park' | tee -a "$OUT/summary.txt"
$WANLORA bench vae --frames 17 --height 256 --width 256 --repeats 1 2>&1 | grep '^wanlora' | tee -a "$OUT/summary.txt"
$WANLORA bench text --tokens 64 --repeats 1 2>&1 | grep '^wanlora' | tee -a "$OUT/summary.txt"
$WANLORA bench sample --frames 17 --height 256 --width 256 --steps 2 --layers 4 2>&1 | grep '^wanlora' | tee -a "$OUT/summary.txt"
echo "==== summary"; cat "$OUT/summary.txt"
