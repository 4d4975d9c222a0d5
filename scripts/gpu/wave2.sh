#!/usr/bin/env bash
# One call for this session's model changes (issues 16, 17, 18): CUDA tests (the 4-bit dequantisation
# kernel bit for bit, the checkpointed backward with host-stashed inputs in bf16), the 41-frame step
# before/after the refactors (bf16 at the peer's memory, fp8 with every block kept), the 4-bit step
# with its recovery adapter under 24 and 16 GiB caps with and without host-stashed block inputs, the
# 1024² step with 4-bit weights and host-stashed inputs under a 24 GiB cap, and the peer.
# Usage (device tool): bash scripts/gpu/wave2.sh
set -uo pipefail
source scripts/gpu/env.sh
# The test binaries name their fixtures by the absolute path they were built at.
[ -e /work/main ] || { mkdir -p /work && ln -s "$PWD" /work/main; }
log() { echo "$@" | tee -a "$OUT/summary.txt"; }
run() { log "\$ $*"; "$@" 2>&1 | tee -a "$OUT/wave2_log.txt" | grep -E '^(wanlora|peer|random|  )|out of memory|Error|error' | tail -4 | tee -a "$OUT/summary.txt"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$OUT/summary.txt"
for t in .gpu/tests/*.xz; do
  log "\$ $(basename "$t" .xz) (CUDA tests)"
  xz -dc "$t" > /tmp/t && chmod +x /tmp/t
  timeout 120 /tmp/t cuda_ --test-threads 1 --nocapture 2>&1 | tee -a "$OUT/tests_log.txt" | grep -E "relative error|test result|panicked" | tee -a "$OUT/summary.txt"
done
S="bench step --frames 41 --height 512 --width 512 --rank 16 --steps 5"
run $WANLORA $S --keep-attention 13
run $WANLORA $S --fp8 matmul --keep-blocks 40
run $WANLORA $S --fp8 uint4 --ara-rank 32
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
run $WANLORA $S --fp8 uint4 --ara-rank 32 --max-memory-gib 16
run $WANLORA $S --fp8 uint4 --ara-rank 32 --max-memory-gib 16 --host-inputs
run $WANLORA $S --fp8 uint4 --ara-rank 32 --max-memory-gib 16 --host-inputs --keep-attention 40
run $WANLORA $S --fp8 weights --max-memory-gib 16 --host-inputs
run $WANLORA bench step --frames 41 --height 1024 --width 1024 --rank 16 --steps 2 --fp8 uint4 --ara-rank 32 --max-memory-gib 24 --host-inputs
run $WANLORA bench step --frames 41 --height 1024 --width 1024 --rank 16 --steps 2 --fp8 matmul --max-memory-gib 24 --host-inputs
unset PYTORCH_CUDA_ALLOC_CONF
run python3 .gpu/peers/diffusers_wan_lora_step.py 41 512 512 16 5
echo "==== summary"; cat "$OUT/summary.txt"
