"""Peer anchors for Wan 2.2 TI2V-5B, random weights with the real shapes (bf16), the way diffusers runs the model:
  step    the LoRA training step as ai-toolkit runs it (WanTransformer3DModel + PEFT LoRA on every block linear,
          gradient checkpointing, SDPA), with diffusers' per-token timesteps (expand_timesteps: the start frame's
          tokens at 0) and the start frame left out of the loss;
  sample  one guided sampling step (cond + uncond as two transformer calls, as WanPipeline does), per-token
          timesteps;
  vae     AutoencoderKLWan with the Wan 2.2 configuration (TI2V-5B's vae/config.json): encode and decode.
Sizes: frames height width (multiples of 32). Usage: python3 peer_ti2v.py step|sample|vae [frames] [height] [width]
[rank] [steps]"""
import sys
import time

import torch
from diffusers import AutoencoderKLWan, WanTransformer3DModel

mode = sys.argv[1] if len(sys.argv) > 1 else "step"
frames, H, W, rank, steps = [int(a) for a in (sys.argv[2:] + ["121", "704", "1280", "16", "3"])[:5]]
lt, lh, lw = (frames - 1) // 4 + 1, H // 16, W // 16
tokens = lt * (lh // 2) * (lw // 2)
dev, dt = "cuda", torch.bfloat16


def timed(fn, n):
    fn()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.time()
    for _ in range(n):
        fn()
    torch.cuda.synchronize()
    return (time.time() - t0) / n, torch.cuda.max_memory_allocated() / 2**30


def random_(module):
    with torch.no_grad():
        for n, p in module.named_parameters():
            if p.dim() > 1:
                p.normal_(0, 0.02)
            elif "norm" in n or "gamma" in n:
                p.fill_(1.0)
            else:
                p.zero_()
    return module


if mode == "vae":
    cfg = dict(base_dim=160, decoder_base_dim=256, z_dim=48, is_residual=True, in_channels=12, out_channels=12,
               patch_size=2, scale_factor_spatial=16, scale_factor_temporal=4,
               latents_mean=[0.0] * 48, latents_std=[1.0] * 48)
    vae = random_(AutoencoderKLWan(**cfg).to(dev, dt)).eval()
    with torch.no_grad():
        x = torch.rand(1, 3, frames, H, W, device=dev, dtype=dt) * 2 - 1
        s, m = timed(lambda: vae.encode(x).latent_dist.mean, 2)
        print(f"peer vae22_encode: frames={frames} {H}x{W}: {s:.3f} s, peak {m:.1f} GiB", flush=True)
        del x
        z = torch.randn(1, 48, lt, lh, lw, device=dev, dtype=dt)
        s, m = timed(lambda: vae.decode(z).sample, 2)
        print(f"peer vae22_decode: frames={frames} {H}x{W}: {s:.3f} s, peak {m:.1f} GiB", flush=True)
    sys.exit(0)

cfg = dict(patch_size=(1, 2, 2), num_attention_heads=24, attention_head_dim=128, in_channels=48, out_channels=48,
           text_dim=4096, freq_dim=256, ffn_dim=14336, num_layers=30, cross_attn_norm=True,
           qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=None, added_kv_proj_dim=None, rope_max_seq_len=1024)
with torch.device("meta"):
    model = WanTransformer3DModel(**cfg)
model = model.to_empty(device=dev).to(dt)
with torch.no_grad():
    for p in model.parameters():
        p.normal_(0, 0.02)
x = torch.randn(1, 48, lt, lh, lw, device=dev, dtype=dt)
ctx = torch.randn(1, 512, 4096, device=dev, dtype=dt)
# WanPipeline with expand_timesteps: mask (0 on latent frame 0) · t, one value per token.
frame_mask = torch.ones(lt, device=dev)
frame_mask[0] = 0


def per_token(t):
    return (frame_mask.repeat_interleave((lh // 2) * (lw // 2))[None] * t).float()


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
    tgt = torch.randn(1, 48, lt, lh, lw, device=dev, dtype=dt)

    def step():
        t = per_token(torch.randint(0, 1000, (1,), device=dev))
        with torch.autocast("cuda", dtype=dt):
            out = model(hidden_states=x, timestep=t, encoder_hidden_states=ctx, return_dict=False)[0]
        loss = torch.nn.functional.mse_loss(out[:, :, 1:].float(), tgt[:, :, 1:].float())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    s, peak = timed(step, steps)
    print(f"peer diffusers+peft ti2v: frames={frames} {H}x{W} tokens={tokens} rank={rank}: {s:.3f} s/step, "
          f"peak {peak:.1f} GiB", flush=True)
else:
    model.eval()
    t = per_token(torch.tensor([500.0], device=dev))

    def cfg_step():
        with torch.no_grad():
            a = model(hidden_states=x, timestep=t, encoder_hidden_states=ctx, return_dict=False)[0]
            b = model(hidden_states=x, timestep=t, encoder_hidden_states=ctx, return_dict=False)[0]
        return a - b

    s, peak = timed(cfg_step, steps)
    print(f"peer sample_step_cfg ti2v: frames={frames} {H}x{W} tokens={tokens}: {s:.3f} s, peak {peak:.1f} GiB",
          flush=True)
