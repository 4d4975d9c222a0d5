#!/usr/bin/env bash
# Wan 2.2 TI2V-5B on the GPU machine, beside the peer (diffusers + peft, scripts/gpu/peer_ti2v.py), random weights:
#   the LoRA step (rank 16) at 121 frames 704×1280 and at 49 frames 704×1280, and the 121-frame step with the
#   allocator capped at 16 GiB (plain, then with half the blocks streamed);
#   the Wan 2.2 VAE: encode and decode of 121 frames at 704×1280 (720p);
#   one guided sampling step (cond + uncond) at 121 frames 704×1280.
# Every line carries its peak memory. Usage (device tool, one call): bash scripts/gpu/ti2v.sh
# (the release binary in .gpu/wanlora.xz and the diffusers/peft wheels in .whl, as for step.sh)
set -uo pipefail
source scripts/gpu/env.sh
log() { echo "$@" | tee -a "$OUT/summary.txt"; }
run() { log "\$ $*"; "$@" 2>&1 | tee -a "$OUT/ti2v_log.txt" | grep -E '^(wanlora|peer|Error|error)' | tee -a "$OUT/summary.txt"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$OUT/summary.txt"
S="bench step --ti2v --height 704 --width 1280 --rank 16 --steps 3"
run $WANLORA $S --frames 121
run python3 scripts/gpu/peer_ti2v.py step 121 704 1280 16 3
run $WANLORA $S --frames 49
run python3 scripts/gpu/peer_ti2v.py step 49 704 1280 16 3
run $WANLORA $S --frames 121 --max-memory-gib 16
run $WANLORA $S --frames 121 --max-memory-gib 16 --offload-percent 50
run $WANLORA bench vae --wan22 --frames 121 --height 704 --width 1280 --repeats 2
run python3 scripts/gpu/peer_ti2v.py vae 121 704 1280
run $WANLORA bench step --ti2v --sample-step --frames 121 --height 704 --width 1280 --steps 3
run python3 scripts/gpu/peer_ti2v.py sample 121 704 1280 16 3
echo "==== summary"; cat "$OUT/summary.txt"
