"""Peer anchors for Wan 2.2 T2V A14B (in_channels 16: the noisy latent alone), random weights with the real shapes
(bf16): the LoRA training step the way ai-toolkit runs it (diffusers WanTransformer3DModel + PEFT LoRA on every
block linear, gradient checkpointing, SDPA) and one guided sampling step (cond + uncond as two transformer calls,
as diffusers' WanPipeline does). The same recipes as ../shared/peers/diffusers_wan_lora_step.py and
diffusers_wan_components.py (I2V, 36 channels), with the T2V input.
Usage: python3 peer_t2v.py step|sample [frames] [height] [width] [rank] [steps]"""
import sys
import time

import torch
from diffusers import WanTransformer3DModel

mode = sys.argv[1] if len(sys.argv) > 1 else "step"
defaults = ["41", "512", "512", "16", "5"] if mode == "step" else ["81", "480", "832", "16", "2"]
frames, H, W, rank, steps = [int(a) for a in (sys.argv[2:] + defaults)[:5]]
IN_CHANNELS = 16
cfg = dict(patch_size=(1, 2, 2), num_attention_heads=40, attention_head_dim=128, in_channels=IN_CHANNELS,
           out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=13824, num_layers=40, cross_attn_norm=True,
           qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=None, added_kv_proj_dim=None, rope_max_seq_len=1024)
with torch.device("meta"):
    model = WanTransformer3DModel(**cfg)
model = model.to_empty(device="cuda").to(torch.bfloat16)
with torch.no_grad():
    for p in model.parameters():
        p.normal_(0, 0.02)
lt, lh, lw = (frames - 1) // 4 + 1, H // 8, W // 8
x = torch.randn(1, IN_CHANNELS, lt, lh, lw, device="cuda", dtype=torch.bfloat16)
ctx = torch.randn(1, 512, 4096, device="cuda", dtype=torch.bfloat16)
tokens = lt * (lh // 2) * (lw // 2)


def timed(fn, n):
    for _ in range(2):
        fn()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.time()
    for _ in range(n):
        fn()
    torch.cuda.synchronize()
    return (time.time() - t0) / n, torch.cuda.max_memory_allocated() / 2**30


if mode == "step":
    from peft import LoraConfig
    model.requires_grad_(False)
    targets = ["to_q", "to_k", "to_v", "to_out.0", "ffn.net.0.proj", "ffn.net.2"]
    model.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=targets, init_lora_weights="gaussian"))
    for n, p in model.named_parameters():
        if "lora" in n:
            p.data = p.data.float()
            p.requires_grad_(True)
    model.enable_gradient_checkpointing()
    model.train()
    lora = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(lora, lr=1e-4)
    tgt = torch.randn(1, 16, lt, lh, lw, device="cuda", dtype=torch.bfloat16)

    def step():
        t = torch.randint(0, 1000, (1,), device="cuda")
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(hidden_states=x, timestep=t, encoder_hidden_states=ctx, return_dict=False)[0]
        loss = torch.nn.functional.mse_loss(out.float(), tgt.float())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    s, peak = timed(step, steps)
    print(f"peer diffusers+peft t2v: frames={frames} {H}x{W} tokens={tokens} rank={rank}: {s:.3f} s/step, "
          f"peak {peak:.1f} GiB", flush=True)
else:
    model.eval()
    t = torch.tensor([500.0], device="cuda")

    def cfg_step():
        with torch.no_grad():
            a = model(hidden_states=x, timestep=t, encoder_hidden_states=ctx, return_dict=False)[0]
            b = model(hidden_states=x, timestep=t, encoder_hidden_states=ctx, return_dict=False)[0]
        return a - b

    s, peak = timed(cfg_step, steps)
    print(f"peer sample_step_cfg t2v: frames={frames} {H}x{W}: {s:.3f} s, peak {peak:.1f} GiB", flush=True)
