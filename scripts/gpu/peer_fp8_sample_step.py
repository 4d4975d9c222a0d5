"""The peer's sampling step (diffusers' WanTransformer3DModel, random A14B weights, cond + uncond as two
calls as its I2V pipeline runs them) with the block linears in fp8 the way diffusers users get it:
torchao's dynamic float8 quantisation, per-row weight scales and per-token activation scales, the same
recipe as `wanlora bench sample --fp8 matmul`. Eager, like the bf16 peer.
Usage: python3 peer_fp8_sample_step.py [frames] [height] [width]"""
import sys, time, torch
from diffusers import WanTransformer3DModel
from torchao.quantization import quantize_, Float8DynamicActivationFloat8WeightConfig, PerRow

F, H, W = [int(a) for a in (sys.argv[1:] + ["81", "480", "832"])[:3]]
dev, dt = "cuda", torch.bfloat16
tcfg = dict(patch_size=(1, 2, 2), num_attention_heads=40, attention_head_dim=128, in_channels=36, out_channels=16,
            text_dim=4096, freq_dim=256, ffn_dim=13824, num_layers=40, cross_attn_norm=True,
            qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=None, added_kv_proj_dim=None, rope_max_seq_len=1024)
with torch.device("meta"):
    tr = WanTransformer3DModel(**tcfg)
tr = tr.to_empty(device=dev).to(dt)
with torch.no_grad():
    for p in tr.parameters():
        p.normal_(0, 0.02)
tr.eval()
quantize_(tr, Float8DynamicActivationFloat8WeightConfig(granularity=PerRow()),
          filter_fn=lambda m, fqn: isinstance(m, torch.nn.Linear) and fqn.startswith("blocks."))
hs = torch.randn(1, 36, (F - 1) // 4 + 1, H // 8, W // 8, device=dev, dtype=dt)
ctx = torch.randn(1, 512, 4096, device=dev, dtype=dt)
t = torch.tensor([500.0], device=dev)

def cfg_step():
    a = tr(hidden_states=hs, timestep=t, encoder_hidden_states=ctx, return_dict=False)[0]
    b = tr(hidden_states=hs, timestep=t, encoder_hidden_states=ctx, return_dict=False)[0]
    return a - b

with torch.no_grad():
    cfg_step(); torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
    start = time.time()
    for _ in range(2):
        cfg_step()
    torch.cuda.synchronize()
    s = (time.time() - start) / 2
print(f"peer sample_step_cfg_fp8: frames={F} {H}x{W}: {s:.3f} s, peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB",
      flush=True)
