#!/usr/bin/env bash
# Expert-parallel on the one-GPU machine (issue 21): the demo's tiny model on CUDA, trained alternating in one
# process and expert-parallel with both ranks on GPU 0 (`--gpus 0,0`); the LoRA files of every save are compared
# (a functional check of the CUDA path of the ranks; NCCL is not used: the ranks need no collectives).
# Usage (device tool, one call): bash scripts/gpu/dist.sh   (the binary in .gpu/wanlora.xz, as for step.sh)
set -uo pipefail
source scripts/gpu/env.sh
log() { echo "$@" | tee -a "$OUT/summary.txt"; }
D=/tmp/distdemo; rm -rf $D; mkdir -p $D
JOB=$($WANLORA demo --steps 12 --prepare $D) || { log "demo --prepare failed"; exit 1; }
for name in alt par; do
  sed -e "s/  name: demo/  name: $name/" -e 's/device: cpu/device: cuda/' -e 's/save_every: 6/save_every: 4/' \
      -e 's/switch_boundary_every: 5/switch_boundary_every: 2/' -e 's/skip_first_sample: true/disable_sampling: true/' \
      "$JOB" > $D/$name.yaml
done
t0=$(date +%s.%N); $WANLORA train --no-progress $D/alt.yaml > "$OUT/dist_alt.txt" 2>&1; rc_alt=$?
t1=$(date +%s.%N); $WANLORA train --no-progress --gpus 0,0 $D/par.yaml > "$OUT/dist_par.txt" 2>&1; rc_par=$?
t2=$(date +%s.%N)
log "wanlora dist alternating rc=$rc_alt $(echo "$t1 - $t0" | bc) s; expert-parallel (--gpus 0,0) rc=$rc_par $(echo "$t2 - $t1" | bc) s"
cp $D/par/status.json "$OUT/dist_par_status.json" 2>/dev/null
python3 - "$D" <<'PY' | tee -a "$OUT/summary.txt"
import sys, glob, os, json
from safetensors.torch import load_file
d = sys.argv[1]
same = True
for a in sorted(glob.glob(f"{d}/alt/alt*.safetensors")):
    p = a.replace("/alt/alt", "/par/par")
    if not os.path.exists(p):
        print(f"wanlora dist missing {os.path.basename(p)}"); same = False; continue
    x, y = load_file(a), load_file(p)
    diff = max((x[k].float() - y[k].float()).abs().max().item() for k in x)
    equal = all(x[k].equal(y[k]) for k in x)
    same &= equal
    print(f"wanlora dist {os.path.basename(a)}: {'equal' if equal else f'max |diff| {diff:.3e}'}")
m = [json.loads(l) for l in open(f"{d}/par/metrics.jsonl") if '"loss"' in l]
print(f"wanlora dist metrics: {len(m)} steps, experts {sorted({r['expert'] for r in m})}")
print(f"wanlora dist result: {'SAME FILES' if same else 'FILES DIFFER'}")
PY
log "NCCL: not exercised (no process group is built yet; data-parallel over c10d is not implemented)"
echo "==== summary"; cat "$OUT/summary.txt"
