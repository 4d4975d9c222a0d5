#!/usr/bin/env bash
# The transformer training step on the GPU machine, side by side with the peer (diffusers + peft).
# Usage (device tool): bash scripts/gpu/step.sh 41|81|quick
set -uo pipefail
source scripts/gpu/env.sh
log() { echo "$@" | tee -a "$OUT/summary.txt"; }
run() { log "\$ $*"; "$@" 2>&1 | tee -a "$OUT/step_log.txt" | grep -E '^(wanlora|peer|breakdown|  )' | tee -a "$OUT/summary.txt"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$OUT/summary.txt"
case "${1:-41}" in
  41)
    $WANLORA doctor 2>&1 | tee "$OUT/doctor.txt"
    # Correctness on CUDA before timing: the tiny parity fixture in f32 against diffusers' output.
    F=crates/models/tests/fixtures/transformer
    $WANLORA debug transformer --weights $F/diffusers --inputs $F/inputs.safetensors --out /tmp/cuda_out.safetensors \
      --lora $F/lora_comfy.safetensors --device cuda 2>&1 | tail -1
    python3 -c "
from safetensors.torch import load_file
a = load_file('/tmp/cuda_out.safetensors')['output']; r = load_file('$F/reference.safetensors')['output_lora']
print(f'cuda f32 parity (tiny model + LoRA): rel err {((a - r).norm() / r.norm()).item():.2e}')" | tee -a "$OUT/summary.txt"
    run $WANLORA bench step --frames 41 --height 512 --width 512 --rank 16 --steps 5 --breakdown
    run $WANLORA bench step --frames 41 --height 512 --width 512 --rank 16 --steps 5 --keep-blocks 18
    run $WANLORA bench step --frames 41 --height 512 --width 512 --rank 16 --steps 5 --fp8 matmul --keep-blocks 26
    export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
    run $WANLORA bench step --frames 41 --height 512 --width 512 --rank 16 --steps 3 --fp8 matmul --max-memory-gib 24
    unset PYTORCH_CUDA_ALLOC_CONF
    run python3 .gpu/peers/diffusers_wan_lora_step.py 41 512 512 16 5
    ;;
  81)
    run $WANLORA bench step --frames 81 --height 480 --width 832 --rank 16 --steps 3
    run $WANLORA bench step --frames 81 --height 480 --width 832 --rank 16 --steps 3 --fp8 matmul
    run python3 .gpu/peers/diffusers_wan_lora_step.py 81 480 832 16 3
    ;;
esac
echo "==== summary"; cat "$OUT/summary.txt"
