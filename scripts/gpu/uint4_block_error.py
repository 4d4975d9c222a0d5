"""Relative output error of one Wan 2.2 A14B block (real widths, random weights) with its ten linears stored as
uint4 (AI Toolkit's scheme), uint4 + a rank-r recovery adapter fitted to the quantisation error (truncated SVD of
W − deq(W₄), the best rank-r correction in the weights' norm), and fp8 e4m3 per-channel, against bf16.

Usage: python3 scripts/gpu/uint4_block_error.py [tokens=4096] [rank=32] [dim=5120 ffn=13824 heads=40]
"""
import sys

import torch
from diffusers.models.transformers.transformer_wan import WanTransformerBlock

TOKENS = int(sys.argv[1]) if len(sys.argv) > 1 else 4096
RANK = int(sys.argv[2]) if len(sys.argv) > 2 else 32
DIM = int(sys.argv[3]) if len(sys.argv) > 3 else 5120
FFN = int(sys.argv[4]) if len(sys.argv) > 4 else 13824
HEADS = int(sys.argv[5]) if len(sys.argv) > 5 else 40
DEV = "cuda" if torch.cuda.is_available() else "cpu"


def uint4(w):
    """AI Toolkit's UIntXQuantizer for 4 bits (bf16 arithmetic), returning the dequantised weight."""
    out_f, in_f = w.shape
    wv = w.view(out_f, in_f // 64, 64)
    lo = torch.clamp(wv.amin(2), max=0)
    hi = torch.clamp(wv.amax(2), min=0)
    scale = torch.clamp((hi - lo) / 15.0, min=torch.finfo(torch.float32).eps)
    zp = torch.clamp(-torch.round(lo / scale), 0, 15)
    q = torch.clamp(torch.round(wv * (1.0 / scale[..., None])) + zp[..., None], 0, 15)
    return ((q - zp[..., None]) * scale[..., None]).view(out_f, in_f)


def fp8(w):
    s = w.float().abs().amax(1, keepdim=True) / 448.0
    return ((w.float() / s).to(torch.float8_e4m3fn).float() * s).to(w.dtype)


def fitted_adapter(w, deq, rank):
    u, s, vh = torch.linalg.svd((w.float() - deq.float()), full_matrices=False)
    return (u[:, :rank] * s[:rank]) @ vh[:rank]


def main():
    torch.manual_seed(0)
    block = WanTransformerBlock(DIM, FFN, HEADS, qk_norm="rms_norm_across_heads", cross_attn_norm=True, eps=1e-6)
    block = block.to(DEV, torch.bfloat16)
    with torch.no_grad():
        for p in block.parameters():
            p.normal_(0, 0.02)
    linears = {n: m for n, m in block.named_modules() if isinstance(m, torch.nn.Linear)}
    bf16 = {n: m.weight.detach().clone() for n, m in linears.items()}
    x = torch.randn(1, TOKENS, DIM, device=DEV, dtype=torch.bfloat16)
    ctx = torch.randn(1, 512, DIM, device=DEV, dtype=torch.bfloat16)
    temb = torch.randn(1, 6, DIM, device=DEV, dtype=torch.float32) * 0.1
    head = DIM // HEADS
    rope = (torch.ones(1, TOKENS, 1, head, device=DEV), torch.zeros(1, TOKENS, 1, head, device=DEV))

    def run(store):
        with torch.no_grad():
            for n, m in linears.items():
                m.weight.copy_(store(bf16[n]))
            return block(x, ctx, temb, rope).float()

    ref = run(lambda w: w)
    # The residual stream carries x unchanged; the block's own contribution is y − x.
    delta = ref - x.float()

    def rel(y):
        return f"{((y - ref).norm() / ref.norm()).item():.4f} (of the block's update y − x: {((y - ref).norm() / delta.norm()).item():.4f})"

    print(f"block error dim={DIM} ffn={FFN} tokens={TOKENS} (relative to the bf16 block):")
    print(f"  uint4                     {rel(run(uint4))}")
    print(f"  uint4 + rank-{RANK} fitted    {rel(run(lambda w: (uint4(w).float() + fitted_adapter(w, uint4(w), RANK)).to(w.dtype)))}")
    print(f"  fp8 e4m3 per channel      {rel(run(fp8))}")
    for n in ["attn1.to_q", "ffn.net.2"]:
        w = bf16[n].float()
        e4 = uint4(bf16[n]).float()
        print(f"  weight {n}: uint4 {((e4 - w).norm() / w.norm()).item():.4f}, fp8 {((fp8(bf16[n]).float() - w).norm() / w.norm()).item():.4f}")


if __name__ == "__main__":
    main()
