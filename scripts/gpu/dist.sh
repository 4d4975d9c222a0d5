#!/usr/bin/env bash
# Several processes on the one-GPU machine (issue 21), the demo's tiny model on CUDA:
#   expert-parallel: alternating in one process vs both experts' ranks on GPU 0 (`--gpus 0,0`), LoRA files of
#   every save compared (no collectives);
#   data-parallel: one expert, batches of 2, one process vs two ranks on GPU 0 (`--gpus 0,0`, gloo all-reduce of
#   the gradient through host memory), final LoRA compared (the CPU test asks for 1e-6).
# NCCL is not exercised: the process group is gloo only so far.
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
for name in one dp; do
  sed -e "s/  name: demo/  name: $name/" -e 's/device: cpu/device: cuda/' -e 's/        batch_size: 1/        batch_size: 2/' \
      -e 's/        lr: 0.003/        lr: 0.0003/' -e 's/          train_high_noise: true/          train_high_noise: false/' \
      -e 's/        dtype: bf16/        dtype: float32/' -e 's/skip_first_sample: true/disable_sampling: true/' \
      "$JOB" > $D/$name.yaml
done
t0=$(date +%s.%N); $WANLORA train --no-progress $D/one.yaml > "$OUT/dist_one.txt" 2>&1; rc_one=$?
t1=$(date +%s.%N); $WANLORA train --no-progress --gpus 0,0 $D/dp.yaml > "$OUT/dist_dp.txt" 2>&1; rc_dp=$?
t2=$(date +%s.%N)
log "wanlora dist data-parallel: one process rc=$rc_one $(echo "$t1 - $t0" | bc) s; two ranks on GPU 0 rc=$rc_dp $(echo "$t2 - $t1" | bc) s"
python3 - "$D" <<'PY' | tee -a "$OUT/summary.txt"
import sys
from safetensors.torch import load_file
d = sys.argv[1]
x, y = load_file(f"{d}/one/one_low_noise.safetensors"), load_file(f"{d}/dp/dp_low_noise.safetensors")
diff = max((x[k].float() - y[k].float()).abs().max().item() for k in x)
print(f"wanlora dist data-parallel low_noise: max |diff| {diff:.3e} ({'within' if diff <= 1e-6 else 'ABOVE'} 1e-6)")
PY
log "NCCL: not exercised (the process group is gloo only so far)"
echo "==== summary"; cat "$OUT/summary.txt"
