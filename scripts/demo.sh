#!/usr/bin/env bash
# The main job on the embedded default: set-up (apt packages, libtorch), a release build, then
# `wanlora demo` — a tiny random Wan 2.2 I2V-architecture model trained on synthetic clips on the CPU,
# with the LoRA files, loss plot and preview sample written to ./wanlora-demo/. Extra arguments go to
# `wanlora demo` (e.g. --steps 200).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
cargo build --release --manifest-path "$ROOT/Cargo.toml" -p wanlora-cli
exec "$ROOT/target/release/wanlora" demo "$@"
