#!/usr/bin/env bash
# VAE, text encoder and sampling against diffusers / transformers in one call (81 frames 480×832).
set -uo pipefail
source scripts/gpu/env.sh
run() { echo "\$ $*" >> "$OUT/components_log.txt"; "$@" 2>&1 | tee -a "$OUT/components_log.txt" | grep -E '^(wanlora|peer)' | tee -a "$OUT/summary.txt"; }
run python3 .gpu/peers/diffusers_wan_components.py 81 480 832
run $WANLORA bench vae --frames 81 --height 480 --width 832 --tiled --repeats 2
run $WANLORA bench text --tokens 512
run $WANLORA bench sample --frames 81 --height 480 --width 832 --steps 3
echo "==== summary"; cat "$OUT/summary.txt"
