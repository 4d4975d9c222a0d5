#!/usr/bin/env bash
# Issue 17's GPU lines in one call: the 41-frame 512² rank-16 step with 4-bit weights + a rank-32
# recovery adapter against the fp8 and bf16 steps of the same call, its peak memory with the
# allocator capped at 24 and 16 GiB, expert load time, and the block output error of uint4,
# uint4 + a fitted rank-32 adapter and fp8 against bf16 at real A14B widths.
# Usage (device tool): bash scripts/gpu/uint4.sh
set -uo pipefail
source scripts/gpu/env.sh
log() { echo "$@" | tee -a "$OUT/summary.txt"; }
run() { log "\$ $*"; "$@" 2>&1 | tee -a "$OUT/uint4_log.txt" | grep -E '^(wanlora|random|block|  )' | tee -a "$OUT/summary.txt"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$OUT/summary.txt"
S="bench step --frames 41 --height 512 --width 512 --rank 16 --steps 5"
run $WANLORA $S
run $WANLORA $S --fp8 weights
run $WANLORA $S --fp8 uint4
run $WANLORA $S --fp8 uint4 --ara-rank 32
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
run $WANLORA $S --fp8 uint4 --ara-rank 32 --max-memory-gib 24
run $WANLORA $S --fp8 uint4 --ara-rank 32 --max-memory-gib 16
run $WANLORA $S --fp8 weights --max-memory-gib 16
unset PYTORCH_CUDA_ALLOC_CONF
run $WANLORA $S --fp8 uint4 --ara-rank 32 --park
run python3 scripts/gpu/uint4_block_error.py 11264 32
echo "==== summary"; cat "$OUT/summary.txt"
