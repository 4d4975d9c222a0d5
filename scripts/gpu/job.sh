#!/usr/bin/env bash
# The guide's job shape through the real `wanlora train` (issue 18): both A14B experts (random weights
# made in place, `wanlora:random-a14b`; nothing downloaded), fp8 weights and matmuls, rank 16, 41 frames,
# three datasets that fill the 512², 768² and 1024² buckets (N clips each, one epoch: N steps per bucket),
# switch every 10, keep_blocks/keep_attention left to the memory plan (auto), under each GPU memory
# cap given (`none` = uncapped). The uncapped run also makes the guide's preview first (2 prompts,
# 768×768, 41 frames, 25 steps) and times it. Then the peer's step (diffusers + peft) at each bucket.
# Prints the table last: per bucket and cap the median s/step and the plan, the peer's s/step, and the
# 3000-step job with previews every 250 (24 previews) extrapolated.
#
# Usage: bash scripts/gpu/job.sh [N] [caps...]     (default: N=3, caps "none 80 48 24")
#        PEER=0 skips the peer; PREVIEW=0 skips the uncapped run's preview.
# Expected time on an H200 (estimates, not measured): per cap ≈ 60 s set-up (random experts, text
# encoder, cache pass) + N·(2 + 6 + 15) s of steps; the uncapped run's 2 previews ≈ 160 s more; the
# peer ≈ 3 × 60 s. N=3, all four caps and the peer ≈ 13 min: two calls of ≤ 8 min each,
# `bash scripts/gpu/job.sh 3 none` (≈ 7 min, with the peer) then `PEER=0 bash scripts/gpu/job.sh 3 80 48 24`
# (≈ 6 min).
set -uo pipefail
source scripts/gpu/env.sh
N=${1:-3}
shift || true
CAPS=${*:-none 80 48 24}
PEER=${PEER:-1}
log() { echo "$@" | tee -a "$OUT/summary.txt"; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee -a "$OUT/summary.txt"

# N square clips per bucket (41 frames at 16 fps need 2.6 s; 3 s are made), each only big enough for
# its own bucket (buckets never upscale).
D=/tmp/jobdata
for side in 512 768 1024; do make_clips "$D/s$side" "$N" "${side}x${side}" 3 16; done

job_yaml() { # $1 folder, $2 steps, $3 low_vram, $4 samples (true/false)
  cat <<YAML
job: extension
config:
  name: guide_job
  process:
    - type: sd_trainer
      training_folder: $1
      device: cuda
      trigger_word: zkw
      training_seed: 1
      performance_log_every: $2
      network: {type: lora, linear: 16, linear_alpha: 16}
      save: {dtype: bf16, save_every: 100000, max_step_saves_to_keep: 1}
      datasets:
        - {folder_path: $D/s512, caption_ext: txt, num_frames: 41, resolution: [512], cache_latents_to_disk: true}
        - {folder_path: $D/s768, caption_ext: txt, num_frames: 41, resolution: [768], cache_latents_to_disk: true}
        - {folder_path: $D/s1024, caption_ext: txt, num_frames: 41, resolution: [1024], cache_latents_to_disk: true}
      train:
        batch_size: 1
        steps: $2
        lr: 0.0001
        optimizer: adamw
        dtype: bf16
        timestep_type: linear
        switch_boundary_every: 10
        cache_text_embeddings: true
        skip_first_sample: $( [ "$4" = true ] && echo false || echo true )
        disable_sampling: $( [ "$4" = true ] && echo false || echo true )
      model:
        name_or_path: "wanlora:random-a14b"
        arch: wan22_14b_i2v
        quantize: true
        qtype: float8
        fp8_matmul: true
        low_vram: $3
        model_kwargs: {train_high_noise: true, train_low_noise: true}
      sample:
        sample_every: 100000
        width: 768
        height: 768
        num_frames: 41
        fps: 16
        sample_steps: 25
        guidance_scale: 3.5
        samples:
          - {prompt: "zkw a test pattern drifts to the left", ctrl_img: $D/start.png}
          - {prompt: "zkw a test pattern drifts to the right", ctrl_img: $D/start.png}
      logging: {log_every: 1}
YAML
}
[ -f $D/start.png ] || ffmpeg -nostdin -v error -f lavfi -i "testsrc2=size=768x768" -frames:v 1 $D/start.png

# One epoch is 3N steps; the run is stopped after it (control/stop) so that the end's previews and
# save do not run; the +1 keeps the stop from landing before the epoch's last step.
STEPS=$((3 * N + 1))
for cap in $CAPS; do
  J=/tmp/guidejob_$cap; rm -rf "$J"; mkdir -p "$J"
  samples=false; [ "$cap" = none ] && [ "${PREVIEW:-1}" = 1 ] && samples=true
  low_vram=false; [ "$cap" != none ] && [ "$cap" -lt 80 ] && low_vram=true
  job_yaml "$J" "$STEPS" "$low_vram" "$samples" > "$J/job.yaml"
  if [ "$cap" = none ]; then unset WANLORA_MEMORY_CAP_GIB; else export WANLORA_MEMORY_CAP_GIB=$cap; fi
  log "\$ wanlora train (cap $cap GiB, low_vram $low_vram, previews $samples, $STEPS steps)"
  t0=$(date +%s)
  ( M="$J/guide_job/metrics.jsonl"
    while sleep 1; do
      if [ -f "$M" ] && [ "$(wc -l < "$M")" -ge $((3 * N)) ]; then
        mkdir -p "$J/guide_job/control" && touch "$J/guide_job/control/stop"; break
      fi
    done ) &
  WATCH=$!
  PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True $WANLORA train --no-progress "$J/job.yaml" > "$OUT/job_$cap.txt" 2>&1
  echo "rc=$? wall $(( $(date +%s) - t0 )) s" >> "$OUT/job_$cap.txt"
  kill "$WATCH" 2>/dev/null
  cp "$J/guide_job/log.txt" "$OUT/log_$cap.txt" 2>/dev/null
  cp "$J/guide_job/metrics.jsonl" "$OUT/metrics_$cap.jsonl" 2>/dev/null
  tail -2 "$OUT/job_$cap.txt" | tee -a "$OUT/summary.txt"
done
unset WANLORA_MEMORY_CAP_GIB

if [ "$PEER" = 1 ]; then
  for side in 512 768 1024; do
    log "\$ peer $side"
    python3 .gpu/peers/diffusers_wan_lora_step.py 41 $side $side 16 3 2>&1 | tee -a "$OUT/peer_log.txt" | grep '^peer' | tee "$OUT/peer_$side.txt" | tee -a "$OUT/summary.txt"
  done
fi

python3 - "$OUT" "$N" "$CAPS" <<'PY' | tee -a "$OUT/summary.txt"
import json, re, statistics, sys
from datetime import datetime
out, n, caps = sys.argv[1], int(sys.argv[2]), sys.argv[3].split()
tokens = {512: 11264, 768: 25344, 1024: 45056}
def peer(side):
    try:
        m = re.search(r"([\d.]+) s/step, peak ([\d.]+) GiB", open(f"{out}/peer_{side}.txt").read())
        return float(m.group(1)), float(m.group(2))
    except (OSError, AttributeError):
        return None
def preview_seconds(log):
    # The second prompt of the step-0 preview: from the first sample's log line to the second's.
    times = [datetime.fromisoformat(l.split(" ", 1)[0].replace("Z", "+00:00"))
             for l in log.splitlines() if re.search(r"sample \d at step 0:", l)]
    return (times[1] - times[0]).total_seconds() if len(times) >= 2 else None
print(f"\n== the guide's job: 41 frames, buckets 512/768/1024, both experts, switch every 10, rank 16, fp8 matmuls, {n} steps per bucket")
print("| cap GiB | bucket | plan (auto) | s/step (median) | peer s/step (peak) | peer / ours |")
print("|---|---|---|---|---|---|")
prompt = None
for cap in caps:
    try:
        m = [json.loads(l) for l in open(f"{out}/metrics_{cap}.jsonl")]
        log = open(f"{out}/log_{cap}.txt").read()
    except OSError:
        print(f"| {cap} | — | no metrics: see job_{cap}.txt | | | |")
        continue
    plans = {int(t): p for t, p in re.findall(r"memory plan for bucket .*?\((\d+) tokens\): (keep_blocks \d+, keep_attention \d+)", log)}
    ooms = log.count("ran out of memory")
    if cap == "none":
        prompt = preview_seconds(log)
    # The first epoch: every clip once, so its N fastest steps are the 512 bucket's, and so on (the
    # median of each third drops a first step's warm-up).
    secs = sorted(x["seconds"] for x in sorted(m, key=lambda x: x["step"])[:3 * n])
    per = {}
    for k, side in enumerate((512, 768, 1024)):
        third = secs[k * n:(k + 1) * n]
        if len(third) == n and len(secs) == 3 * n:
            per[side] = statistics.median(third)
    for side, s in per.items():
        p = peer(side)
        peer_cell, ratio = (f"{p[0]:.3f} ({p[1]:.1f} GiB)", f"{p[0] / s:.2f}×") if p else ("", "")
        print(f"| {cap} | {side}² | {plans.get(tokens[side], '?')} | {s:.3f} | {peer_cell} | {ratio} |")
    if len(per) == 3:
        mean = sum(per.values()) / 3
        hours = 3000 * mean / 3600
        with_previews = f"; with 24 previews × {prompt:.1f} s: {hours + 24 * prompt / 3600:.2f} h" if prompt else ""
        print(f"| {cap} | 3000 steps | {ooms} out-of-memory fallbacks | {mean:.3f} mean → {hours:.2f} h{with_previews} | | |")
    else:
        print(f"| {cap} | — | {len(m)} of {3 * n} steps ran, {ooms} out-of-memory fallbacks: see job_{cap}.txt | | | |")
if prompt:
    print(f"preview: one 768² 41-frame 25-step prompt {prompt:.1f} s (2 per preview, every 250 steps: 24 in 3000 steps)")
PY
