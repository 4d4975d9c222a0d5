#!/usr/bin/env bash
# The transformer training step on the GPU machine, side by side with the peer (diffusers + peft).
# Usage (device tool): bash scripts/gpu/step.sh 41|81|sample|tests|check
set -uo pipefail
source scripts/gpu/env.sh
log() { echo "$@" | tee -a "$OUT/summary.txt"; }
run() { log "\$ $*"; "$@" 2>&1 | tee -a "$OUT/step_log.txt" | grep -E '^(wanlora|peer|breakdown|  )' | tee -a "$OUT/summary.txt"; }
# The GPU halves of the Rust tests (recorded attention through cuDNN, the NVRTC kernels, the
# checkpointed backward in bf16): debug test binaries carried xz-compressed in .gpu/tests/.
gpu_tests() {
  for t in .gpu/tests/*.xz; do
    [ -f "$t" ] || continue
    log "\$ $(basename "$t" .xz) (CUDA tests)"
    xz -dc "$t" > /tmp/t && chmod +x /tmp/t
    /tmp/t cuda_ --test-threads 1 --nocapture 2>&1 | tee -a "$OUT/tests_log.txt" | grep -E "relative error|test result|panicked" | tee -a "$OUT/summary.txt"
  done
}
# Like run, with the GPU's SM clock and power sampled meanwhile: a busy H100 sits at its 700 W cap
# and lowers its clock, so a step's time follows its energy.
run_clocked() {
  # `wanlora doctor`, then correctness on CUDA before timing: the tiny parity fixture in f32 against
# diffusers' output.
doctor_and_parity() {
  $WANLORA doctor 2>&1 | tee "$OUT/doctor.txt"
  local F=crates/models/tests/fixtures/transformer
  $WANLORA debug transformer --weights $F/diffusers --inputs $F/inputs.safetensors --out /tmp/cuda_out.safetensors \
    --lora $F/lora_comfy.safetensors --device cuda 2>&1 | tail -1
  python3 -c "
from safetensors.torch import load_file
a = load_file('/tmp/cuda_out.safetensors')['output']; r = load_file('$F/reference.safetensors')['output_lora']
print(f'cuda f32 parity (tiny model + LoRA): rel err {((a - r).norm() / r.norm()).item():.2e}')" | tee -a "$OUT/summary.txt"
}
nvidia-smi --query-gpu=clocks.sm,power.draw --format=csv,noheader,nounits -lms 200 > "$OUT/smi_now.csv" &
  local smi=$!
  run "$@"
  kill "$smi"
  python3 - "$OUT/smi_now.csv" <<'PY' | tee -a "$OUT/summary.txt"
import sys
rows = [l.split(",") for l in open(sys.argv[1]) if l.strip() and l[0].isdigit()]
busy = sorted((float(p), int(c)) for c, p in rows if float(p) > 400)
if busy:
    clocks = sorted(c for _, c in busy)
    print(f"  while above 400 W ({len(busy)} samples): median SM clock {clocks[len(clocks) // 2]} MHz, "
          f"median power {busy[len(busy) // 2][0]:.0f} W")
PY
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$OUT/summary.txt"
case "${1:-41}" in
  41)
    doctor_and_parity
    gpu_tests
    S="bench step --frames 41 --height 512 --width 512 --rank 16 --steps 5"
    WANLORA_FUSED=0 run $WANLORA $S
    run $WANLORA $S --breakdown
    run $WANLORA $S --keep-attention 13
    run $WANLORA $S --keep-attention 40
    run $WANLORA $S --keep-blocks 18
    run $WANLORA $S --keep-blocks 16 --keep-attention 24
    run $WANLORA $S --fp8 matmul --keep-blocks 26
    run $WANLORA $S --fp8 matmul --keep-blocks 24 --keep-attention 16
    export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
    run $WANLORA bench step --frames 41 --height 512 --width 512 --rank 16 --steps 3 --fp8 matmul --max-memory-gib 24
    unset PYTORCH_CUDA_ALLOC_CONF
    run python3 .gpu/peers/diffusers_wan_lora_step.py 41 512 512 16 5
    ;;
  tests)
    gpu_tests
    ;;
  check)
    # A short call for a change that must not move the step time: CUDA parity of the tiny model,
    # the 41-frame step in bf16 at the peer's memory and in fp8 with every block kept, the peer.
    doctor_and_parity
    S="bench step --frames 41 --height 512 --width 512 --rank 16 --steps 5"
    run_clocked $WANLORA $S --keep-attention 13
    run_clocked $WANLORA $S --fp8 matmul --keep-blocks 40
    run_clocked python3 .gpu/peers/diffusers_wan_lora_step.py 41 512 512 16 5
    ;;
  81)
    S="bench step --frames 81 --height 480 --width 832 --rank 16 --steps 3"
    run $WANLORA $S
    run $WANLORA $S --fp8 matmul --keep-attention 40
    run python3 .gpu/peers/diffusers_wan_lora_step.py 81 480 832 16 3
    ;;
  sample)
    # One 40-step-recipe sampling step with CFG (3 of the 40 steps timed), fused kernels on and off,
    # and the peer's CFG step (two transformer calls, as diffusers' I2V pipeline does).
    # fp8 matmuls are a lower precision than the reference: a separate line, not the comparison.
    gpu_tests
    run_clocked $WANLORA bench sample --frames 81 --height 480 --width 832 --steps 3
    WANLORA_FUSED=0 run_clocked $WANLORA bench sample --frames 81 --height 480 --width 832 --steps 3
    run_clocked $WANLORA bench sample --frames 81 --height 480 --width 832 --steps 3 --fp8 matmul
    run_clocked python3 .gpu/peers/diffusers_wan_components.py 81 480 832
    # The peer with the same fp8 recipe (torchao, per-row weights, per-token inputs; wheel in .whl/).
    run_clocked python3 scripts/gpu/peer_fp8_sample_step.py 81 480 832
    ;;
esac
echo "==== summary"; cat "$OUT/summary.txt"
