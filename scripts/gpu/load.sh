#!/usr/bin/env bash
# Loading a 28.6 GB bf16 A14B expert (one ComfyUI-style file with original names) from disk, cold and
# warm; then as 4-bit weights, quantised on a first start and from the quantised-weights cache later.
set -uo pipefail
source scripts/gpu/env.sh
F=/tmp/expert_bf16.safetensors
python3 - "$F" <<'PY'
import sys, torch
from safetensors.torch import save_file
D, F, L = 5120, 13824, 40
shapes = {"patch_embedding.weight": (D, 36, 1, 2, 2), "patch_embedding.bias": (D,),
          "text_embedding.0.weight": (D, 4096), "text_embedding.0.bias": (D,), "text_embedding.2.weight": (D, D), "text_embedding.2.bias": (D,),
          "time_embedding.0.weight": (D, 256), "time_embedding.0.bias": (D,), "time_embedding.2.weight": (D, D), "time_embedding.2.bias": (D,),
          "time_projection.1.weight": (6 * D, D), "time_projection.1.bias": (6 * D,), "head.modulation": (1, 2, D),
          "head.head.weight": (64, D), "head.head.bias": (64,)}
for i in range(L):
    p = f"blocks.{i}."
    shapes[p + "modulation"] = (1, 6, D)
    for a in ("self_attn", "cross_attn"):
        for l in "qkvo":
            shapes[f"{p}{a}.{l}.weight"] = (D, D); shapes[f"{p}{a}.{l}.bias"] = (D,)
        shapes[f"{p}{a}.norm_q.weight"] = (D,); shapes[f"{p}{a}.norm_k.weight"] = (D,)
    shapes[p + "norm3.weight"] = (D,); shapes[p + "norm3.bias"] = (D,)
    shapes[p + "ffn.0.weight"] = (F, D); shapes[p + "ffn.0.bias"] = (F,)
    shapes[p + "ffn.2.weight"] = (D, F); shapes[p + "ffn.2.bias"] = (D,)
g = torch.Generator(device="cuda").manual_seed(0)
sd = {"diffusion_model." + k: (torch.randn(s, generator=g, device="cuda") * 0.02).to(torch.bfloat16).cpu() for k, s in shapes.items()}
save_file(sd, sys.argv[1])
print("wrote", sys.argv[1], sum(t.numel() for t in sd.values()) / 1e9, "B parameters")
PY
ls -la $F
sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null && echo "page cache dropped" || echo "could not drop the page cache"
$WANLORA bench load --weights $F 2>&1 | grep '^wanlora' | sed 's/^/cold: /' | tee -a "$OUT/summary.txt"
$WANLORA bench load --weights $F 2>&1 | grep '^wanlora' | sed 's/^/warm: /' | tee -a "$OUT/summary.txt"
# 4-bit (issue 17): the first start reads and quantises, then writes the cache; a later start reads the cache.
sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null
$WANLORA bench load --weights $F --uint4 2>&1 | grep -E '^wanlora|rror' | tee -a "$OUT/summary.txt"
rm -f $F
