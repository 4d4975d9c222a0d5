#!/usr/bin/env bash
# Idempotent project set-up: system packages, libtorch 2.11.0 (CPU libraries from PyPI's torch wheel),
# and the Python reference environment used by the fixture generators (only with --python).
# Safe to run again: every step checks first and does nothing when the work is already done.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

TORCH_VERSION=2.11.0
CUDART_VERSION=13.0.96
CUPTI_VERSION=13.0.85
LIBTORCH_DIR="$ROOT/.libtorch"
WANT_PYTHON=0
WANT_BROWSER=0
for arg in "$@"; do
  case "$arg" in
    --python) WANT_PYTHON=1 ;;
    --browser) WANT_BROWSER=1 ;;
    *) echo "setup.sh: unknown option $arg (known: --python, --browser)" >&2; exit 2 ;;
  esac
done

say() { printf '\033[1;34m[setup]\033[0m %s\n' "$*"; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "setup.sh: need root for: $* (install sudo or run as root)" >&2; exit 1; fi
}

# --- system packages --------------------------------------------------------------------------
missing=()
command -v ffmpeg >/dev/null || missing+=(ffmpeg)
command -v ffprobe >/dev/null || missing+=(ffmpeg)
command -v unzip >/dev/null || missing+=(unzip)
command -v g++ >/dev/null || missing+=(g++)
command -v pkg-config >/dev/null || missing+=(pkg-config)
if [ "$WANT_BROWSER" = 1 ]; then
  command -v chromium >/dev/null || missing+=(chromium)
  command -v node >/dev/null || missing+=(nodejs npm)
fi
if [ "${#missing[@]}" -gt 0 ]; then
  say "installing system packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq
  as_root apt-get install -y -qq --no-install-recommends $(printf '%s\n' "${missing[@]}" | sort -u) >/dev/null
fi

# --- libtorch from the PyPI wheel ---------------------------------------------------------------
# Only the CPU libraries are linked; libtorch_cuda.so is dlopen'ed at start-up when it is on the
# library path (the GPU machine's own PyTorch), so one binary serves CPU and GPU machines.
if [ "$(cat "$LIBTORCH_DIR/build-version" 2>/dev/null)" != "$TORCH_VERSION" ] \
   || [ ! -f "$LIBTORCH_DIR/lib/libtorch_cpu.so" ]; then
  say "fetching libtorch $TORCH_VERSION (torch wheel from PyPI, CPU libraries only)"
  wheels="$LIBTORCH_DIR/wheels"
  mkdir -p "$wheels"
  python3 -m pip download -q --no-deps --only-binary=:all: --platform manylinux_2_28_x86_64 \
    --platform manylinux_2_25_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --python-version 3.11 --implementation cp -d "$wheels" \
    "torch==$TORCH_VERSION" "nvidia-cuda-runtime==$CUDART_VERSION" "nvidia-cuda-cupti==$CUPTI_VERSION"
  stage="$(mktemp -d "$LIBTORCH_DIR/stage.XXXX")"
  torch_whl=$(ls "$wheels"/torch-"$TORCH_VERSION"-*.whl | head -n1)
  unzip -q -o "$torch_whl" 'torch/include/*' \
    torch/lib/libc10.so torch/lib/libtorch.so torch/lib/libtorch_cpu.so torch/lib/libgomp.so.1 \
    torch/lib/libshm.so torch/lib/libtorch_global_deps.so -d "$stage"
  unzip -q -o "$wheels"/nvidia_cuda_runtime-"$CUDART_VERSION"-*.whl 'nvidia/cu13/lib/libcudart.so.13' -d "$stage"
  unzip -q -o "$wheels"/nvidia_cuda_cupti-"$CUPTI_VERSION"-*.whl 'nvidia/cu13/lib/libcupti.so.13' -d "$stage"
  rm -rf "$LIBTORCH_DIR/include" "$LIBTORCH_DIR/lib"
  mv "$stage/torch/include" "$LIBTORCH_DIR/include"
  mkdir -p "$LIBTORCH_DIR/lib"
  mv "$stage"/torch/lib/* "$stage"/nvidia/cu13/lib/* "$LIBTORCH_DIR/lib/"
  rm -rf "$stage" "$wheels"
  echo "$TORCH_VERSION" > "$LIBTORCH_DIR/build-version"
  say "libtorch $TORCH_VERSION ready in $LIBTORCH_DIR"
fi

# --- Python reference environment (fixture generators, hub-cache interop tests) ----------------
if [ "$WANT_PYTHON" = 1 ]; then
  VENV="$ROOT/.venv"
  if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV"
    python3 -m venv "$VENV"
  fi
  if ! "$VENV/bin/python" -c 'import huggingface_hub, sys; sys.exit(int(huggingface_hub.__version__.split(".")[0]) != 1)' 2>/dev/null; then
    say "installing huggingface_hub 1.x (the hub-cache interop tests read our cache with it)"
    "$VENV/bin/pip" install -q "huggingface_hub>=1,<2"
  fi
fi

# --- browser end-to-end tests: Debian's Chromium driven by playwright-core ----------------------
if [ "$WANT_BROWSER" = 1 ] && [ ! -d "$ROOT/tests/e2e/node_modules/playwright-core" ]; then
  say "installing playwright-core for the browser tests (no browser download: Debian's chromium is used)"
  (cd "$ROOT/tests/e2e" && npm ci --no-audit --no-fund --silent)
fi
