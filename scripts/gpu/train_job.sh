#!/usr/bin/env bash
# A whole `wanlora train` job on the GPU: two A14B experts (random weights made in place, both resident),
# 20 clips of 5 s cached at 41 frames 512², 50 steps. Reports the cache pass (clips/s) and s/step.
# Usage: bash scripts/gpu/train_job.sh [keep_blocks] [keep_attention]
set -uo pipefail
source scripts/gpu/env.sh
KEEP=${1:-0}
KEEP_ATTN=${2:-0}
make_clips /tmp/clips 20
J=/tmp/trainjob; rm -rf $J; mkdir -p $J
cat > $J/job.yaml <<YAML
job: extension
config:
  name: bench_job
  process:
    - type: sd_trainer
      training_folder: $J
      device: cuda
      trigger_word: zkw
      training_seed: 1
      network: {type: lora, linear: 16, linear_alpha: 16}
      save: {dtype: bf16, save_every: 1000, max_step_saves_to_keep: 2}
      datasets:
        - folder_path: /tmp/clips
          caption_ext: txt
          num_frames: 41
          resolution: [512]
          cache_latents_to_disk: true
      train:
        batch_size: 1
        steps: 50
        lr: 0.0001
        optimizer: adamw
        dtype: bf16
        timestep_type: linear
        switch_boundary_every: 10
        cache_text_embeddings: true
        disable_sampling: true
        keep_blocks: $KEEP
        keep_attention: $KEEP_ATTN
      model:
        name_or_path: "wanlora:random-a14b"
        arch: wan22_14b_i2v
        model_kwargs: {train_high_noise: true, train_low_noise: true}
      logging: {log_every: 10}
YAML
nvidia-smi --query-gpu=name --format=csv,noheader
( while true; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits >> /tmp/gpumem.txt; sleep 2; done ) &
MON=$!
/usr/bin/time -v $WANLORA train --no-progress $J/job.yaml > "$OUT/train_job.txt" 2>&1; rc=$?
kill $MON
tail -5 "$OUT/train_job.txt"; cp $J/bench_job/log.txt "$OUT/train_log.txt" 2>/dev/null
python3 - "$J/bench_job" "$KEEP" "$rc" "$KEEP_ATTN" <<'PY' | tee -a "$OUT/summary.txt"
import json, sys, re
d, keep, rc = sys.argv[1], sys.argv[2], sys.argv[3]
m = [json.loads(l) for l in open(d + "/metrics.jsonl")]
s = [x["seconds"] for x in m if x["step"] > 5]
log = open(d + "/log.txt").read()
cache = re.search(r"cache pass: (\d+) encoded, (\d+) reused, (\d+) failed in ([\d.]+) s", log)
peak = max(int(x) for x in open("/tmp/gpumem.txt").read().split()) / 1024
print(f"train job rc={rc}: {len(m)} steps, keep_blocks={keep}, keep_attention={sys.argv[4]}, mean {sum(s)/len(s):.3f} s/step over steps 6-50 "
      f"(high {sum(x['seconds'] for x in m if x['step']>5 and x['expert']=='high_noise')/max(1,len([1 for x in m if x['step']>5 and x['expert']=='high_noise'])):.3f}, "
      f"low {sum(x['seconds'] for x in m if x['step']>5 and x['expert']=='low_noise')/max(1,len([1 for x in m if x['step']>5 and x['expert']=='low_noise'])):.3f}), "
      f"GPU memory used (nvidia-smi max) {peak:.1f} GiB, loss first {m[0]['loss']:.4f} last {m[-1]['loss']:.4f}")
if cache:
    n, secs = int(cache.group(1)), float(cache.group(4))
    print(f"cache pass: {n} clips (5 s, 768x512, 41 frames at 512x512 buckets) encoded in {secs:.1f} s = {n/secs:.2f} clips/s")
PY
