#!/usr/bin/env bash
# Several processes on the one-GPU machine (issue 21), the demo's tiny model on CUDA:
#   expert-parallel: alternating in one process vs both experts' ranks on GPU 0 (`--gpus 0,0`), LoRA files of
#   every save compared (no collectives);
#   data-parallel: one expert, batches of 2, one process vs two ranks on GPU 0 (`--gpus 0,0`, gloo all-reduce of
#   the gradient through host memory: NCCL cannot put two ranks on one GPU), final LoRA compared (1e-6);
#   NCCL: the test binary's world of one on cuda:0 (.gpu/tests/dist.xz, `cuda_nccl_…`), and the trainer as a
#   torchrun-style world of one over ProcessGroupNCCL (WORLD_SIZE=1 WANLORA_DIST_BACKEND=nccl) against the plain run;
#   both modes combined: `--gpus 0,0,0,0` (each expert on a gloo group of two, all on GPU 0) against the
#   alternating run with the same batches.
# Usage (device tool, one call): bash scripts/gpu/dist.sh   (the binary in .gpu/wanlora.xz, as for step.sh)
set -uo pipefail
source scripts/gpu/env.sh
log() { echo "$@" | tee -a "$OUT/summary.txt"; }
# compare LABEL TOLERANCE A.safetensors B.safetensors [...]: the largest difference over the pairs, against TOLERANCE.
compare() {
  python3 - "$@" <<'PY' | tee -a "$OUT/summary.txt"
import sys
from safetensors.torch import load_file
label, tol, files = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
worst, equal = 0.0, True
for a, b in zip(files[::2], files[1::2]):
    x, y = load_file(a), load_file(b)
    equal &= all(x[k].equal(y[k]) for k in x)
    worst = max(worst, max((x[k].float() - y[k].float()).abs().max().item() for k in x))
verdict = "equal" if equal else f"max |diff| {worst:.3e} ({'within' if worst <= tol else 'ABOVE'} {tol:g})"
print(f"wanlora dist {label}: {verdict}")
PY
}
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
compare "data-parallel low_noise" 1e-6 $D/one/one_low_noise.safetensors $D/dp/dp_low_noise.safetensors
# NCCL through libtorch_cuda's ProcessGroupNCCL: the test binary, then the trainer with a world of one.
if [ -f .gpu/tests/dist.xz ]; then
  xz -dc .gpu/tests/dist.xz > /tmp/t_dist && chmod +x /tmp/t_dist
  timeout 120 /tmp/t_dist cuda_nccl --nocapture 2>&1 | tee "$OUT/dist_nccl_test.txt" | grep -E "test result|panicked" \
    | sed 's/^/wanlora dist nccl test: /' | tee -a "$OUT/summary.txt"
fi
sed -e 's/  name: one/  name: nccl/' $D/one.yaml > $D/nccl.yaml
t0=$(date +%s.%N)
MASTER_ADDR=127.0.0.1 MASTER_PORT=29517 WORLD_SIZE=1 RANK=0 LOCAL_RANK=0 WANLORA_DIST_BACKEND=nccl \
  $WANLORA train --no-progress $D/nccl.yaml > "$OUT/dist_nccl.txt" 2>&1; rc_nccl=$?
t1=$(date +%s.%N)
log "wanlora dist NCCL world of one: rc=$rc_nccl $(echo "$t1 - $t0" | bc) s"
compare "NCCL world of one vs one process" 0 $D/one/one_low_noise.safetensors $D/nccl/nccl_low_noise.safetensors
# Both modes combined: four ranks on GPU 0 (two per expert, gloo inside each group).
for name in alt4 par4; do
  sed -e "s/  name: demo/  name: $name/" -e 's/device: cpu/device: cuda/' -e 's/        batch_size: 1/        batch_size: 2/' \
      -e 's/        lr: 0.003/        lr: 0.0003/' -e 's/        dtype: bf16/        dtype: float32/' \
      -e 's/switch_boundary_every: 5/switch_boundary_every: 2/' -e 's/skip_first_sample: true/disable_sampling: true/' \
      "$JOB" > $D/$name.yaml
done
t0=$(date +%s.%N); $WANLORA train --no-progress $D/alt4.yaml > "$OUT/dist_alt4.txt" 2>&1; rc_a=$?
t1=$(date +%s.%N); $WANLORA train --no-progress --gpus 0,0,0,0 $D/par4.yaml > "$OUT/dist_par4.txt" 2>&1; rc_p=$?
t2=$(date +%s.%N)
log "wanlora dist combined: alternating rc=$rc_a $(echo "$t1 - $t0" | bc) s; --gpus 0,0,0,0 rc=$rc_p $(echo "$t2 - $t1" | bc) s"
compare "combined vs alternating" 1e-6 $D/alt4/alt4_high_noise.safetensors $D/par4/par4_high_noise.safetensors \
  $D/alt4/alt4_low_noise.safetensors $D/par4/par4_low_noise.safetensors
echo "==== summary"; cat "$OUT/summary.txt"
