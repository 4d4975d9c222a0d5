#!/usr/bin/env bash
# Issue 18 item 4: the LoRA down-projection in the frozen weight's GEMM (WANLORA_FUSED_LORA=1),
# measured against the two-pass LoRA in the same call. The 41-frame 512² rank-16 bf16 step with the
# flags scripts/gpu/step.sh uses for bf16 (every block recomputed; keep_attention 13, the peer's
# memory), each run twice in the order off, on, on, off so that a drifting clock favours neither;
# then one LoRA'd A14B linear (q 5120→5120, ffn0 5120→13824, ffn2 13824→5120) at 11 k, 25 k and
# 45 k tokens, forward and forward+backward, with the fused/two-pass relative difference in bf16.
# First the CUDA half of crates/models/tests/fused_lora.rs when its binary is carried
# (xz -c target/debug/deps/fused_lora-<hash> > .gpu/tests/fused_lora.xz). Prints a short table last.
# Usage (device tool): bash scripts/gpu/fused_lora.sh
set -uo pipefail
source scripts/gpu/env.sh
log() { echo "$@" | tee -a "$OUT/summary.txt"; }
run() { log "\$ $*"; "$@" 2>&1 | tee -a "$OUT/fused_lora_log.txt" | grep -E '^(wanlora|random|\|)' | tee -a "$OUT/summary.txt"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$OUT/summary.txt"
# The fused op against the two-pass LoRA in bf16 on CUDA (crates/models/tests/fused_lora.rs, its debug
# test binary carried as .gpu/tests/fused_lora.xz), before anything is timed.
if [ -f .gpu/tests/fused_lora.xz ]; then
  log "\$ fused_lora (CUDA tests)"
  xz -dc .gpu/tests/fused_lora.xz > /tmp/fused_lora_tests && chmod +x /tmp/fused_lora_tests
  timeout 120 /tmp/fused_lora_tests cuda_ --test-threads 1 2>&1 | tee -a "$OUT/tests_log.txt" | grep -E "test result|panicked" | tee -a "$OUT/summary.txt"
fi
S="bench step --frames 41 --height 512 --width 512 --rank 16 --steps 5"
for flags in "" "--keep-attention 13"; do
  run $WANLORA $S $flags
  WANLORA_FUSED_LORA=1 run $WANLORA $S $flags
  WANLORA_FUSED_LORA=1 run $WANLORA $S $flags
  run $WANLORA $S $flags
done
run $WANLORA bench lora-linear --tokens 11264,25344,45056 --rank 16 --warmup 2 --repeats 10
echo "==== summary"; cat "$OUT/summary.txt"
echo "==== table"
python3 - "$OUT/summary.txt" <<'PY'
import re, sys
from collections import defaultdict
steps = defaultdict(lambda: {"off": [], "on": []})
for line in open(sys.argv[1]):
    m = re.match(r"wanlora step: .*?keep_blocks=(\d+)( keep_attention=\d+)?.*?: ([\d.]+) s/step, peak ([\d.]+) GiB.*loss ([\d.]+)", line)
    if not m:
        continue
    config = f"keep_blocks={m[1]}{m[2] or ''}"
    steps[config]["on" if "fused_lora=" in line else "off"].append((float(m[3]), float(m[4]), float(m[5])))
print("| 41 f 512² r16 bf16 | two-pass s/step | fused s/step | speed-up | peak GiB two-pass → fused | last loss two-pass / fused |")
print("|---|---|---|---|---|---|")
mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")
for config, runs in steps.items():
    off, on = runs["off"], runs["on"]
    t_off, t_on = mean([r[0] for r in off]), mean([r[0] for r in on])
    print(f"| {config} | {t_off:.3f} ({', '.join(f'{r[0]:.3f}' for r in off)}) | {t_on:.3f} ({', '.join(f'{r[0]:.3f}' for r in on)}) "
          f"| {t_off / t_on:.3f}× | {max(r[1] for r in off):.1f} → {max(r[1] for r in on):.1f} "
          f"| {off[0][2]:.4f} / {on[0][2]:.4f} |")
PY
grep -E '^\|' "$OUT/summary.txt" | grep -v '^| 41 f' || true
