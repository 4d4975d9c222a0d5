#!/usr/bin/env bash
# Previews of an expert-parallel run on the one-GPU machine (issue 21), the demo's tiny model on CUDA:
# alternating in one process vs both experts' ranks on GPU 0 (`--gpus 0,0`), a UniPC preview every 3 steps
# and at the end; the high-noise rank hands each preview's latents and sampler state to the low-noise rank
# (ranks/previews/). Compares samples/ file by file (bytes; where they differ, the decoded frames) and the
# final LoRA files.
# Usage (device tool, one call): bash scripts/gpu/dist_previews.sh   (the binary in .gpu/wanlora.xz)
set -uo pipefail
source scripts/gpu/env.sh
log() { echo "$@" | tee -a "$OUT/summary.txt"; }
D=/tmp/distpreviews; rm -rf $D; mkdir -p $D
JOB=$($WANLORA demo --steps 6 --prepare $D) || { log "demo --prepare failed"; exit 1; }
for name in alt par; do
  sed -e "s/  name: demo/  name: $name/" -e 's/device: cpu/device: cuda/' -e 's/save_every: 3/save_every: 2/' \
      -e 's/switch_boundary_every: 5/switch_boundary_every: 2/' \
      -e 's/sample_every: 6/sample_every: 3\n        sampler: unipc/' "$JOB" > $D/$name.yaml
done
t0=$(date +%s.%N); $WANLORA train --no-progress $D/alt.yaml > "$OUT/previews_alt.txt" 2>&1; rc_alt=$?
t1=$(date +%s.%N); $WANLORA train --no-progress --gpus 0,0 $D/par.yaml > "$OUT/previews_par.txt" 2>&1; rc_par=$?
t2=$(date +%s.%N)
log "wanlora previews alternating rc=$rc_alt $(echo "$t1 - $t0" | bc) s; expert-parallel (--gpus 0,0) rc=$rc_par $(echo "$t2 - $t1" | bc) s"
cp $D/par/log.txt "$OUT/previews_par_log.txt" 2>/dev/null
same=1
for a in $D/alt/samples/*; do
  f=$(basename "$a"); p=$D/par/samples/$f
  if [ ! -f "$p" ]; then log "wanlora previews missing samples/$f"; same=0; continue; fi
  if cmp -s "$a" "$p"; then log "wanlora previews samples/$f: equal"; continue; fi
  same=0
  diff=$(python3 - "$a" "$p" <<'PY'
import subprocess, sys
def frames(path):
    return subprocess.run(["ffmpeg", "-v", "error", "-i", path, "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                          capture_output=True, check=True).stdout
a, b = frames(sys.argv[1]), frames(sys.argv[2])
print(max(abs(x - y) for x, y in zip(a, b)) if len(a) == len(b) else f"sizes {len(a)} vs {len(b)}")
PY
)
  log "wanlora previews samples/$f: DIFFERS (max |frame diff| $diff of 255)"
done
[ -d $D/par/ranks/previews ] && log "wanlora previews: hand-offs left in ranks/previews: $(ls $D/par/ranks/previews)"
python3 - "$D" <<'PY' | tee -a "$OUT/summary.txt"
import sys
from safetensors.torch import load_file
d = sys.argv[1]
for e in ("high_noise", "low_noise"):
    x, y = load_file(f"{d}/alt/alt_{e}.safetensors"), load_file(f"{d}/par/par_{e}.safetensors")
    print(f"wanlora previews LoRA {e}: {'equal' if all(x[k].equal(y[k]) for k in x) else 'DIFFERS'}")
PY
log "wanlora previews result: $([ $same = 1 ] && echo 'SAME PREVIEWS' || echo 'PREVIEWS DIFFER')"
echo "==== summary"; cat "$OUT/summary.txt"
