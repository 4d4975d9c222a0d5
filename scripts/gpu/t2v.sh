#!/usr/bin/env bash
# Wan 2.2 T2V A14B on the GPU machine, beside the peer with the same 16-channel input:
#   bench step at 41 frames 512² rank 16 (and the same with fp8 matmuls), peer diffusers + peft;
#   bench sample at 81 frames 480×832 (3 of the 40 steps), peer: diffusers' guided step (two calls).
# Usage (device tool, one call): bash scripts/gpu/t2v.sh   (the release binary in .gpu/wanlora.xz, as for step.sh)
set -uo pipefail
source scripts/gpu/env.sh
log() { echo "$@" | tee -a "$OUT/summary.txt"; }
run() { log "\$ $*"; "$@" 2>&1 | tee -a "$OUT/t2v_log.txt" | grep -E '^(wanlora|peer)' | tee -a "$OUT/summary.txt"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$OUT/summary.txt"
S="bench step --arch t2v --frames 41 --height 512 --width 512 --rank 16 --steps 5"
run $WANLORA $S
run $WANLORA $S --fp8 matmul --keep-blocks 26
run python3 scripts/gpu/peer_t2v.py step 41 512 512 16 5
run $WANLORA bench sample --arch t2v --frames 81 --height 480 --width 832 --steps 3
run $WANLORA bench sample --arch t2v --frames 81 --height 480 --width 832 --steps 3 --fp8 matmul
run python3 scripts/gpu/peer_t2v.py sample 81 480 832 16 2
echo "==== summary"; cat "$OUT/summary.txt"
