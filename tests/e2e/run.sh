#!/usr/bin/env bash
# End-to-end test of `wanlora ui` in headless Chromium (Debian's /usr/bin/chromium, driven by
# playwright-core). Usage: tests/e2e/run.sh path/to/wanlora
#
# Builds nothing: it takes a built `wanlora` binary, prepares the demo (`wanlora demo --prepare`:
# tiny random model, synthetic captioned clips, job YAML), starts `wanlora ui` on a free port with
# a temporary data folder, and runs scenario.mjs. Screenshots land in tests/e2e/artifacts/.
#
# While `wanlora demo` does not exist yet, the scenario runs against stand-in-trainer.sh (which
# follows the job-folder contract with made-up numbers) and clips made here with ffmpeg; it says
# so on its first line.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ $# -ne 1 ] || [ ! -x "$1" ]; then
  echo "usage: $0 path/to/wanlora   (a built binary, e.g. target/debug/wanlora)" >&2
  exit 2
fi
WANLORA="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
[ -x "$CHROMIUM" ] || { echo "e2e: $CHROMIUM is missing: apt-get install chromium" >&2; exit 1; }
command -v node >/dev/null || { echo "e2e: node is missing: apt-get install nodejs npm" >&2; exit 1; }
command -v ffmpeg >/dev/null || { echo "e2e: ffmpeg is missing: apt-get install ffmpeg" >&2; exit 1; }
if [ ! -d "$HERE/node_modules/playwright-core" ]; then
  (cd "$HERE" && npm ci --no-audit --no-fund --silent)
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/wanlora-e2e.XXXXXX")"
UI_PID=""
AUTH_PID=""
cleanup() {
  for pid in "$UI_PID" "$AUTH_PID"; do
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -INT "$pid"; wait "$pid" 2>/dev/null || true; fi
  done
  # Trainers outlive the UI on purpose; the test's own ones are ended here by their recorded pid.
  for pidfile in "$WORK"/data/output/*/pid; do
    [ -f "$pidfile" ] && kill -INT "$(cat "$pidfile")" 2>/dev/null || true
  done
  sleep 1
  rm -rf "$WORK"
}
trap cleanup EXIT

ARTIFACTS="$HERE/artifacts"
rm -rf "$ARTIFACTS"
mkdir -p "$ARTIFACTS"
UI_ARGS=()
if "$WANLORA" demo --help >/dev/null 2>&1; then
  echo "e2e: preparing the demo with $WANLORA demo --prepare"
  "$WANLORA" demo --prepare "$WORK/demo" > "$ARTIFACTS/demo-prepare.log" 2>&1
  DEMO_JOB="$(ls "$WORK"/demo/*.yaml | head -n 1)"
  DATASET_DIR="$(sed -n 's/^ *- *folder_path: *//p; s/^ *folder_path: *//p' "$DEMO_JOB" | head -n 1 | tr -d "'\"")"
  case "$DATASET_DIR" in /*) ;; *) DATASET_DIR="$(dirname "$DEMO_JOB")/$DATASET_DIR" ;; esac
  START_FRAME="$(find "$WORK/demo" -name '*.png' | head -n 1)"
else
  echo "e2e: NOTE: '$WANLORA demo' is not available yet; running the UI scenario with the stand-in trainer"
  DATASET_DIR="$WORK/clips"
  mkdir -p "$DATASET_DIR"
  for i in 1 2 3; do
    ffmpeg -nostdin -v error -f lavfi -i "testsrc=size=160x96:rate=16" -t 3 -vf "hue=h=$((i * 90))" \
      -pix_fmt yuv420p "$DATASET_DIR/clip_$i.mp4"
    echo "a test pattern drifts, variant $i" > "$DATASET_DIR/clip_$i.txt"
  done
  START_FRAME="$WORK/start.png"
  ffmpeg -nostdin -v error -f lavfi -i "testsrc=size=160x96" -frames:v 1 "$START_FRAME"
  DEMO_JOB="$WORK/demo.yaml"
  cat > "$DEMO_JOB" <<EOF
job: extension
config:
  name: stand_in_demo
  process:
    - type: sd_trainer
      device: cpu
      datasets: [{folder_path: $DATASET_DIR, num_frames: 9, resolution: [256]}]
      train: {steps: 40, switch_boundary_every: 5}
      save: {save_every: 20}
      model: {name_or_path: $WORK/tiny-model, arch: wan22_14b_i2v, quantize: false, quantize_te: false, low_vram: false}
      sample: {sample_every: 20, width: 160, height: 96, num_frames: 9, sample_steps: 2, fps: 16}
EOF
  UI_ARGS+=(--trainer-program "$HERE/stand-in-trainer.sh")
  chmod +x "$HERE/stand-in-trainer.sh"
fi

"$WANLORA" ui --port 0 --data "$WORK/data" --stop-timeout 60 "${UI_ARGS[@]}" > "$ARTIFACTS/ui.log" 2>&1 &
UI_PID=$!
UI_URL=""
for _ in $(seq 1 100); do
  UI_URL="$(sed -n 's|^wanlora UI: \(http://[^/ ]*\)/.*|\1|p' "$ARTIFACTS/ui.log" | head -n 1)"
  [ -n "$UI_URL" ] && break
  kill -0 "$UI_PID" 2>/dev/null || { cat "$ARTIFACTS/ui.log" >&2; exit 1; }
  sleep 0.1
done
[ -n "$UI_URL" ] || { echo "e2e: the UI did not start" >&2; cat "$ARTIFACTS/ui.log" >&2; exit 1; }
echo "e2e: UI at $UI_URL, data in $WORK/data"

# A second UI with an access token, for the login check (no jobs run on it).
AUTH_TOKEN="e2e-$(date +%s)-token-$$"
WANLORA_AUTH="$AUTH_TOKEN" "$WANLORA" ui --port 0 --data "$WORK/data-auth" > "$ARTIFACTS/ui-auth.log" 2>&1 &
AUTH_PID=$!
AUTH_URL=""
for _ in $(seq 1 100); do
  AUTH_URL="$(sed -n 's|^wanlora UI: \(http://[^/ ]*\)/.*|\1|p' "$ARTIFACTS/ui-auth.log" | head -n 1)"
  [ -n "$AUTH_URL" ] && break
  sleep 0.1
done

UI_URL="$UI_URL" AUTH_URL="$AUTH_URL" AUTH_TOKEN="$AUTH_TOKEN" DEMO_JOB="$DEMO_JOB" DATASET_DIR="$DATASET_DIR" START_FRAME="$START_FRAME" \
  ARTIFACTS="$ARTIFACTS" CHROMIUM="$CHROMIUM" node "$HERE/scenario.mjs"
