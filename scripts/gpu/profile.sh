#!/usr/bin/env bash
# Where a training step's and a sampling step's GPU time goes, kernel by kernel (Nsight Compute,
# clocks left alone), on a 2-block model at the real widths; plus flash against cuDNN attention.
# Usage (device tool): bash scripts/gpu/profile.sh [all|sample]
set -uo pipefail
source scripts/gpu/env.sh
log() { echo "$@" | tee -a "$OUT/summary.txt"; }
run() { log "\$ $*"; "$@" 2>&1 | tee -a "$OUT/log.txt" | grep -E '^(wanlora|peer|breakdown|  )' | tee -a "$OUT/summary.txt"; }
kernels() { # name, then the command: per-kernel time summed over the run, top 40
  local name=$1; shift
  ncu --clock-control none --metrics gpu__time_duration.sum --csv "$@" > "$OUT/ncu_$name.csv" 2> "$OUT/ncu_$name.err"
  python3 scripts/gpu/ncu_table.py "$OUT/ncu_$name.csv" | tee -a "$OUT/summary.txt"
}
S="bench step --frames 41 --height 512 --width 512 --rank 16"
if [ "${1:-all}" = all ]; then
  run $WANLORA $S --steps 3 --breakdown
  WANLORA_SDPA=flash run $WANLORA $S --steps 3 --breakdown
  log "== training step kernels, 2 blocks, 3 steps (41 f 512²)"
  kernels step $WANLORA $S --layers 2 --steps 1
fi
log "== sampling kernels, 2 blocks, 2 steps (81 f 480×832, CFG batched)"
kernels sample $WANLORA bench sample --layers 2 --steps 2 --no-vae
log "== the same with fp8 matmuls"
kernels sample_fp8 $WANLORA bench sample --layers 2 --steps 2 --no-vae --fp8 matmul
echo "==== summary"; cat "$OUT/summary.txt"
