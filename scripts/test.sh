#!/usr/bin/env bash
# Every test of the project, from a fresh clone: set-up (apt packages, libtorch, the Python hub
# client, Chromium and playwright-core), formatting, the Rust tests of every crate, and the web UI
# end to end in headless Chromium. CI runs exactly this (.ci/run).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh --python --browser
export WANLORA_TEST_PYTHON="$ROOT/.venv/bin/python"
step() { printf '\n\033[1;34m[test]\033[0m %s\n' "$*"; }

step "formatting"
cargo fmt --all --check

step "build"
cargo build --workspace --all-targets

step "Rust tests (all crates)"
cargo test --workspace

step "web UI end to end (headless Chromium)"
bash tests/e2e/run.sh target/debug/wanlora

step "all tests passed"
