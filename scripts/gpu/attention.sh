#!/usr/bin/env bash
# Self-attention kernels at Wan's long sequences (issue 18, item 3): torch SDPA per backend (cuDNN, flash,
# memory-efficient, the default's pick) and cuDNN through cudnn-frontend in bf16 and fp8, forward and
# backward, at 41 frames of 512², 768² and 1024² (11264, 25344, 45056 tokens; B 1, H 40, D 128), with the
# error of each against exact fp32 attention. Then the errors once more at 11264 tokens with sharper
# attention (q, k of std 2: logits of std 4).
# Usage (device tool, carry .whl-attn): bash scripts/gpu/attention.sh [extra attention.py arguments]
set -uo pipefail
source scripts/gpu/env.sh
# cudnn-frontend's Python package (nvidia-cudnn-frontend, cp312 wheel carried in .whl-attn/); it uses the
# libcudnn that torch has loaded (attention.py points it there).
if ls .whl-attn/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site-attn .whl-attn/*.whl \
    && export PYTHONPATH=/tmp/site-attn${PYTHONPATH:+:$PYTHONPATH}
else
  echo "no .whl-attn/*.whl: the cudnn-frontend variants will report that cudnn is missing"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader | tee "$OUT/attention_summary.txt"
# SM clock and power meanwhile (a card at its power cap lowers its clock: the TFLOP/s follow).
nvidia-smi --query-gpu=clocks.sm,power.draw --format=csv,noheader,nounits -lms 500 > "$OUT/attention_smi.csv" &
smi=$!
python3 scripts/gpu/attention.py --out "$OUT" "$@" 2>&1 | tee "$OUT/attention_log.txt"
python3 scripts/gpu/attention.py --out "$OUT" --lengths 11264 --qk-std 2 --target-s 0.3 "$@" 2>&1 | tee "$OUT/attention_sharp_log.txt"
kill "$smi" 2>/dev/null
busy=$(awk -F', *' '$2 + 0 > 400 { print $1 }' "$OUT/attention_smi.csv" | sort -n)
if [ -n "$busy" ]; then
  n=$(echo "$busy" | wc -l)
  echo "while above 400 W ($n samples of 0.5 s): median SM clock $(echo "$busy" | sed -n "$(((n + 1) / 2))p") MHz" \
    | tee -a "$OUT/attention_summary.txt"
fi
sed -n '/^==== table/,$p' "$OUT/attention_log.txt"
