#!/bin/sh
# A stand-in for `wanlora train JOB.yaml`, used by run.sh only while `wanlora demo` does not exist.
# It follows the job-folder contract (docs/JOB-FOLDER.md) with made-up numbers: status.json,
# metrics.jsonl for both experts (with validation_loss records when the job has validation_items), an mp4 sample (+ jpg thumbnail) made by ffmpeg, checkpoints,
# control/stop + SIGINT, and resume from state/step. It trains nothing.
set -u
yaml="$1"
name=$(sed -n 's/^  name: *//p' "$yaml" | head -n 1)
total=$(sed -n 's/^ *steps: *//p' "$yaml" | head -n 1)
[ -n "$total" ] || total=40
validate=no
grep -q 'validation_items' "$yaml" && validate=yes
step=0
[ -f state/step ] && step=$(cat state/step)
echo "stand-in trainer: job $name, steps $total, starting at step $step"
status() {
  printf '{"state":"%s","step":%s,"total_steps":%s,"expert":"%s","seconds_per_step":0.4,"eta_seconds":%s,"message":"%s","pid":%s,"updated":"%s","error":null}\n' \
    "$1" "$step" "$total" "$expert" "$(( (total - step) * 2 / 5 ))" "$2" "$$" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" > status.json.tmp
  mv status.json.tmp status.json
}
save() {
  mkdir -p state
  echo "$step" > state/step
  for e in high_noise low_noise; do : > "${name}_$(printf %09d "$step")_${e}.safetensors"; done
}
finish() { status saving "Saving"; save; status "$1" "$2"; rm -f pid; echo "stand-in trainer: $1 at step $step"; exit 0; }
sample() {
  mkdir -p samples
  base="samples/$(printf %09d "$step")_0"
  status sampling "Generating samples"
  ffmpeg -nostdin -v error -y -f lavfi -i "testsrc=size=160x96:rate=16" -t 1 -pix_fmt yuv420p "$base.mp4"
  ffmpeg -nostdin -v error -y -i "$base.mp4" -frames:v 1 "$base.jpg"
}
expert=high_noise
trap 'finish stopped "Stopped"' INT
while [ "$step" -lt "$total" ]; do
  step=$((step + 1))
  if [ $(( (step - 1) / 5 % 2 )) -eq 0 ]; then expert=high_noise; else expert=low_noise; fi
  loss=$(awk -v s="$step" -v e="$expert" 'BEGIN { srand(s); b = (e == "high_noise") ? 0.30 : 0.18; printf "%.4f", b * exp(-s / 25) + 0.05 + rand() * 0.03 }')
  printf '{"step":%s,"expert":"%s","loss":%s,"lr":0.0001,"grad_norm":0.5,"timestep":500.0,"seconds":0.4,"time":"%s"}\n' \
    "$step" "$expert" "$loss" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >> metrics.jsonl
  if [ "$validate" = yes ] && [ $(( step % 5 )) -eq 1 ]; then
    printf '{"step":%s,"expert":"%s","validation_loss":%s,"validation_timesteps":[1000.0,500.0],"validation_items":1,"seconds":0.1,"time":"%s"}\n' \
      "$step" "$expert" "$(awk -v l="$loss" 'BEGIN { printf "%.4f", l + 0.02 }')" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >> metrics.jsonl
  fi
  echo "step $step/$total $expert loss $loss"
  status training "Training"
  if [ "$step" -eq 3 ] || [ -f control/sample_now ]; then rm -f control/sample_now; sample; fi
  if [ -f control/save_now ]; then rm -f control/save_now; save; fi
  if [ -f control/stop ]; then rm -f control/stop; finish stopped "Stopped"; fi
  sleep 0.4
done
finish completed "Done"
