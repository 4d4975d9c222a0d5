#!/usr/bin/env bash
# Prepares what a device call carries, in the git-ignored .gpu/ (run here, before the call):
#   .gpu/wanlora.xz        the CLI (the dev profile is optimised, see Cargo.toml), stripped, xz-compressed;
#   .gpu/tests/<name>.xz   each test binary that holds CUDA tests (`fn cuda_…`), stripped, xz-compressed.
# The working tree plus the carried paths must stay under 64 MiB: `du -sh .gpu .whl .whl-attn` is printed last.
# The scripts unpack them (scripts/gpu/env.sh, wave2.sh, dist.sh, fused_lora.sh); test binaries find their
# fixtures under /work/main, which those scripts link to the checkout.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export LIBTORCH=${LIBTORCH:-$PWD/.libtorch} LIBTORCH_CXX11_ABI=1
cargo build -p wanlora-cli
mkdir -p .gpu/tests
strip -o /tmp/wanlora-stripped target/debug/wanlora
xz -T2 -c /tmp/wanlora-stripped > .gpu/wanlora.xz
# The test files with CUDA tests, and their crates.
grep -l "fn cuda_" crates/*/tests/*.rs | while read -r file; do
  crate=$(basename "$(dirname "$(dirname "$file")")")
  name=$(basename "$file" .rs)
  exe=$(cargo test -p "wanlora-$crate" --test "$name" --no-run --message-format=json 2>/dev/null \
    | python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable"): print(m["executable"])' | tail -n1)
  strip -o "/tmp/$name-stripped" "$exe"
  xz -T2 -c "/tmp/$name-stripped" > ".gpu/tests/$name.xz"
  echo "packed $crate/$name"
done
du -sh .gpu .whl .whl-attn 2>/dev/null || true
