//! `wanlora bench step`: one expert's LoRA training step at the real A14B shapes with random weights
//! (never zeros): seconds per step, peak GPU memory, and MFU against the step's FLOPs. `--fp8`,
//! `--offload-blocks` / `--offload-percent` and `--max-memory-gib` measure the memory-saving modes
//! (crates/models/README-quant.md).

use anyhow::{bail, Result};
use std::time::Instant;
use tch::{Device, Kind, Tensor};
use wanlora_models::lora::{LoraApply, LoraSet, Multiplier};
use wanlora_models::quant::Fp8Mode;
use wanlora_models::recovery::RecoveryAdapter;
use wanlora_models::transformer::checkpoint::{forward_backward, CheckpointPolicy};
use wanlora_models::transformer::{BlockOffload, LoadOptions, TransformerConfig, WanTransformer};
use wanlora_torch::weights::RandomWeights;
use wanlora_train::optim::{clip_grad_norm, AdamW, AdamWConfig, FlatParams};
use wanlora_train::ti2v::{masked, training_input};

#[derive(clap::Args)]
pub struct StepArgs {
    /// i2v (36 input channels: latent, mask, start frame) or t2v (16: the latent alone).
    #[arg(long, default_value = "i2v", value_parser = crate::cmd::sample::parse_arch)]
    pub arch: wanlora_config::ModelArch,
    #[arg(long, default_value_t = 41)]
    pub frames: i64,
    #[arg(long, default_value_t = 512)]
    pub height: i64,
    #[arg(long, default_value_t = 512)]
    pub width: i64,
    #[arg(long, default_value_t = 16)]
    pub rank: i64,
    /// Timed steps (after two warm-up steps).
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// Blocks that keep their activations instead of being recomputed.
    #[arg(long, default_value_t = 0)]
    pub keep_blocks: usize,
    /// How many recomputed blocks keep their self-attention output (train.keep_attention; a bare
    /// flag means all).
    #[arg(long, default_value_t = 0, num_args = 0..=1, default_missing_value = "40")]
    pub keep_attention: usize,
    /// Keep the recomputed blocks' inputs in page-locked host memory (copied out during the
    /// forward, fetched back one block ahead of the backward) instead of on the GPU.
    #[arg(long)]
    pub host_inputs: bool,
    /// Transformer blocks (the model's: 40 for A14B, 30 for TI2V-5B; fewer for quick CPU checks).
    #[arg(long)]
    pub layers: Option<i64>,
    /// The TI2V-5B model instead of an A14B expert (--arch is then ignored): 48 channels, the Wan
    /// 2.2 VAE's 16× latents, the start frame's latent at timestep 0 and left out of the loss.
    #[arg(long)]
    pub ti2v: bool,
    /// Time one guided sampling step (two forwards without a graph, as CFG runs them) instead of
    /// a training step.
    #[arg(long)]
    pub sample_step: bool,
    /// Also time the parts of one block (linears, attention, LoRA, the rest).
    #[arg(long)]
    pub breakdown: bool,
    /// cuda or cpu.
    #[arg(long, default_value = "cuda")]
    pub device: String,
    /// Block linears: off (compute dtype), weights (fp8, dequantised per layer), matmul (fp8
    /// matmuls, sm89 or newer) or uint4 (AI Toolkit's 4-bit, dequantised per layer).
    #[arg(long, default_value = "off", value_parser = parse_fp8)]
    pub fp8: Fp8Mode,
    /// Also store the text embedding and the time projection in fp8.
    #[arg(long)]
    pub fp8_embeddings: bool,
    /// With `--fp8 uint4`: a frozen accuracy recovery adapter of this rank (random factors) beside
    /// every block linear, as AI Toolkit's "4 bit with ARA".
    #[arg(long)]
    pub ara_rank: Option<i64>,
    /// Blocks streamed from pinned host memory (layer offloading), spread over the depth.
    #[arg(long, default_value_t = 0, conflicts_with = "offload_percent")]
    pub offload_blocks: usize,
    /// Share of the blocks streamed, in percent (layer_offloading_transformer_percent).
    #[arg(long)]
    pub offload_percent: Option<f64>,
    /// Streamed blocks on the GPU at once (the one computing and those fetched ahead).
    #[arg(long, default_value_t = 2)]
    pub ring_slots: usize,
    /// Caps this process's GPU memory (the caching allocator) at G GiB, e.g. 23 to stand for a
    /// 24 GB card (the CUDA context comes on top).
    #[arg(long)]
    pub max_memory_gib: Option<f64>,
    /// After the timed steps, park the expert in host memory and load it back (low_vram), timing
    /// both moves.
    #[arg(long)]
    pub park: bool,
    /// Run the LoRA down-projection in the frozen weight's GEMM (as WANLORA_FUSED_LORA=1 does):
    /// dense block weights get `rank` spare rows; fp8 and 4-bit ones keep the two-pass LoRA.
    #[arg(long)]
    pub fused_lora: bool,
}

pub(crate) fn parse_fp8(s: &str) -> Result<Fp8Mode, String> {
    Fp8Mode::from_name(s)
        .ok_or_else(|| format!("--fp8 {s}: expected off, weights, matmul or uint4"))
}

/// Caps the CUDA caching allocator at `gib` GiB of the first GPU, before anything is allocated.
pub(crate) fn cap_memory(gib: f64) -> Result<()> {
    let gpus = wanlora_sysinfo::gpus().map_err(|e| anyhow::anyhow!("--max-memory-gib: {e}"))?;
    let Some(gpu) = gpus.first() else {
        bail!("--max-memory-gib: NVML lists no GPU");
    };
    let fraction = gib * (1u64 << 30) as f64 / gpu.memory_total_bytes as f64;
    if !(fraction > 0.0 && fraction <= 1.0) {
        bail!(
            "--max-memory-gib {gib}: the GPU has {:.1} GiB; give a positive value up to that",
            gib_u(gpu.memory_total_bytes)
        );
    }
    wanlora_torch::cuda::set_per_process_memory_fraction(fraction)?;
    eprintln!(
        "GPU memory capped at {gib:.1} GiB ({:.3} of {:.1} GiB)",
        fraction,
        gib_u(gpu.memory_total_bytes)
    );
    Ok(())
}

fn gib_u(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

/// FLOPs of one LoRA training step (wan-reference.md §9): linears 2× forward, attention 3×, LoRA.
pub struct StepFlops {
    pub linear_fwd: f64,
    pub attention_fwd: f64,
    pub lora: f64,
}

impl StepFlops {
    pub fn new(cfg: &TransformerConfig, tokens: i64, text_len: i64, rank: i64) -> StepFlops {
        let (n, d, f, l, lt) = (
            tokens as f64,
            cfg.dim() as f64,
            cfg.ffn_dim as f64,
            cfg.num_layers as f64,
            text_len as f64,
        );
        let linear_fwd = l * (2.0 * n * (6.0 * d * d + 2.0 * d * f) + 4.0 * lt * d * d);
        let attention_fwd = l * (4.0 * n * n * d + 4.0 * n * lt * d);
        // Per adapter and token: forward 2·r·(in+out), backward twice that.
        let lora = 6.0 * rank as f64 * l * n * (8.0 * 2.0 * d + 2.0 * (d + f));
        StepFlops {
            linear_fwd,
            attention_fwd,
            lora,
        }
    }

    /// The MFU numerator: 2× linears + 3× attention + LoRA.
    pub fn step(&self) -> f64 {
        2.0 * self.linear_fwd + 3.0 * self.attention_fwd + self.lora
    }
}

pub fn device_of(name: &str) -> Result<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        "cuda" => {
            if !wanlora_torch::cuda_available() {
                bail!("CUDA is not available here (run `wanlora doctor`); use --device cpu for a small check");
            }
            Ok(Device::Cuda(0))
        }
        other => bail!("--device {other}: expected cpu or cuda"),
    }
}

pub fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        let _ = wanlora_torch::cuda::synchronize(i);
    }
}

pub fn gib(bytes: i64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

pub fn run(args: StepArgs) -> Result<()> {
    // `--arch ti2v` is the same model as `--ti2v`.
    let args = StepArgs {
        ti2v: args.ti2v || args.arch.facts().one_transformer,
        ..args
    };
    let device = device_of(&args.device)?;
    let side = |px: i64| u32::try_from(px).is_ok_and(wanlora_spec::frames::is_frame_side);
    let count = u32::try_from(args.frames).is_ok_and(wanlora_spec::frames::is_frame_count);
    if !count || !side(args.height) || !side(args.width) {
        bail!("frames must be 4n+1 and height/width multiples of 16");
    }
    // Pixels per latent, and per token side (the patch is 2×2 latents).
    let vae_scale = if args.ti2v { 16 } else { 8 };
    if args.height % (2 * vae_scale) != 0 || args.width % (2 * vae_scale) != 0 {
        bail!(
            "TI2V-5B needs height and width that are multiples of {}",
            2 * vae_scale
        );
    }
    if let Some(gib) = args.max_memory_gib {
        if !device.is_cuda() {
            bail!("--max-memory-gib caps GPU memory; it needs --device cuda");
        }
        cap_memory(gib)?;
    }
    let kind = if device.is_cuda() {
        Kind::BFloat16
    } else {
        Kind::Float
    };
    let model_config = if args.ti2v {
        TransformerConfig::wan22_ti2v_5b()
    } else {
        TransformerConfig::wan22_a14b(args.arch.facts().in_channels as i64)
    };
    let cfg = TransformerConfig {
        num_layers: args.layers.unwrap_or(model_config.num_layers),
        ..model_config
    };
    let layers = cfg.num_layers as usize;
    let offload = match args.offload_percent {
        Some(p) => Some(
            BlockOffload::from_percent(p, layers, args.ring_slots)
                .map_err(|e| anyhow::anyhow!("--offload-percent: {e}"))?,
        ),
        None if args.offload_blocks > 0 => {
            if args.offload_blocks > layers {
                bail!(
                    "--offload-blocks {}: the model has {layers} blocks",
                    args.offload_blocks
                );
            }
            Some(BlockOffload {
                blocks: args.offload_blocks,
                ring_slots: args.ring_slots,
            })
        }
        None => None,
    };
    let options = LoadOptions {
        fp8: args.fp8,
        fp8_embeddings: args.fp8_embeddings,
        offload,
    };
    let t0 = Instant::now();
    let weights = RandomWeights { std: 0.02, seed: 1 };
    let mut model = match args.ara_rank {
        Some(rank) if args.fp8 == Fp8Mode::Uint4 => {
            let ara = RecoveryAdapter::random(&cfg, rank, kind, device);
            WanTransformer::load_uint4(
                &weights,
                cfg.clone(),
                kind,
                device,
                &options,
                Some(&ara),
                None,
            )?
        }
        Some(_) => bail!("--ara-rank goes with --fp8 uint4"),
        None => WanTransformer::load_with(&weights, Some(cfg.clone()), kind, device, &options)?,
    };
    let fused_linears = if args.fused_lora || wanlora_models::lora::fused_lora_enabled() {
        model.reserve_lora_rows(args.rank)?
    } else {
        0
    };
    sync(device);
    let weights = model.weight_bytes();
    let streamed = (0..layers).filter(|&i| model.is_streamed(i)).count();
    let mode = format!(
        "fp8={}{}{} offload={streamed}/{layers} ring={}{}",
        args.fp8.name(),
        args.ara_rank
            .map(|r| format!("+ara{r}"))
            .unwrap_or_default(),
        if args.fp8_embeddings {
            "+embeddings"
        } else {
            ""
        },
        if streamed > 0 { model.ring_slots() } else { 0 },
        if fused_linears > 0 {
            format!(" fused_lora={fused_linears}")
        } else {
            String::new()
        }
    );
    eprintln!(
        "random {}-block expert built on {device:?} in {:.1} s ({mode}): weights {:.2} GiB on the device, {:.2} GiB in host memory",
        cfg.num_layers,
        t0.elapsed().as_secs_f64(),
        gib_u(weights.device),
        gib_u(weights.host)
    );

    let lora0 = LoraSet::new_trainable(&cfg, args.rank, args.rank as f64, device, 0);
    let flat = FlatParams::new(&lora0.parameters(), device);
    let lora = lora0.with_parameters(&flat.params);
    let mut opt = AdamW::new(
        &flat,
        AdamWConfig::new(1e-4, &wanlora_config::OptimizerParams::default()),
        false,
    );

    let (lt, lh, lw) = (
        (args.frames - 1) / 4 + 1,
        args.height / vae_scale,
        args.width / vae_scale,
    );
    let tokens = lt * (lh / 2) * (lw / 2);
    let x = Tensor::randn([1, cfg.in_channels, lt, lh, lw], (kind, device));
    let ctx = Tensor::randn([1, 512, cfg.text_dim], (kind, device));
    let target = Tensor::randn([1, cfg.out_channels, lt, lh, lw], (Kind::Float, device));
    let apply = LoraApply {
        set: &lora,
        multiplier: Multiplier::Scalar(1.0),
    };
    let policy = CheckpointPolicy {
        keep_blocks: args.keep_blocks,
        keep_attention: args.keep_attention,
        host_inputs: args.host_inputs,
    };

    // TI2V: the start frame's latent clean at timestep 0 and outside the loss (the bench's latents stand for both
    // x_t and x0).
    let ti2v_input = |t: Tensor| training_input(&x, &x, &t, args.ti2v);
    if args.sample_step {
        let t = ti2v_input(Tensor::full([1], 500.0, (Kind::Float, device)))?.timestep;
        return sample_step(&model, &x, &t, &ctx, &args, tokens);
    }
    let mut step = || -> Result<f64> {
        let input = ti2v_input(Tensor::rand([1], (Kind::Float, device)) * 1000.0)?;
        let loss = forward_backward(
            &model,
            &input.input,
            &input.timestep,
            &ctx,
            &apply,
            policy,
            |pred| {
                Ok(masked(&(pred - &target).square(), input.loss_mask.as_ref())?.mean(Kind::Float))
            },
        )?;
        let mut g = flat.flat_grad();
        clip_grad_norm(&mut g, 1.0);
        opt.update(&flat, &g, 1e-4);
        flat.zero_grad();
        Ok(loss.double_value(&[]))
    };
    for _ in 0..2 {
        step()?;
    }
    sync(device);
    if let Device::Cuda(i) = device {
        wanlora_torch::cuda::reset_peak_memory(i)?;
    }
    let t0 = Instant::now();
    let mut last = 0.0;
    for _ in 0..args.steps {
        last = step()?;
    }
    sync(device);
    let secs = t0.elapsed().as_secs_f64() / args.steps as f64;
    let peak = match device {
        Device::Cuda(i) => gib(wanlora_torch::cuda::memory_stats(i)?.peak_allocated),
        _ => 0.0,
    };
    let flops = StepFlops::new(&cfg, tokens, 512, args.rank);
    let mfu = flops.step() / (secs * 800e12);
    let streamed_per_step = match model.stream_stats() {
        Some(s) => format!(
            ", streamed {:.2} GB/step in {} copies",
            s.bytes as f64 / 1e9,
            s.fetches
        ),
        None => String::new(),
    };
    println!(
        "wanlora step: {}frames={} {}x{} tokens={tokens} rank={} keep_blocks={}{} {mode}: {secs:.3} s/step, peak {peak:.1} GiB, MFU {:.1}% ({:.3e} FLOP/step), loss {last:.4}{streamed_per_step}",
        // I2V lines keep their earlier form (docs/BENCHMARKS.md quotes them).
        model_label(&args),
        args.frames,
        args.height,
        args.width,
        args.rank,
        args.keep_blocks,
        match (args.keep_attention, args.host_inputs) {
            (0, false) => String::new(),
            (0, true) => " host_inputs".to_string(),
            (n, false) => format!(" keep_attention={n}"),
            (n, true) => format!(" keep_attention={n} host_inputs"),
        },
        100.0 * mfu,
        flops.step()
    );
    if args.breakdown {
        breakdown(&model, &lora, &x, &ctx, device)?;
    }
    if args.park {
        let parked = model.offload()?;
        let loaded = model.load_to(device)?;
        println!("wanlora park: to host memory {parked}; back to {device:?} {loaded}");
    }
    Ok(())
}

/// The model in report lines: "" for I2V A14B (the earlier form), "t2v " or "ti2v ".
fn model_label(args: &StepArgs) -> &'static str {
    match (args.ti2v, args.arch) {
        (true, _) => "ti2v ",
        (false, wanlora_config::ModelArch::Wan22_14bI2v) => "",
        (false, wanlora_config::ModelArch::Wan22_14b) => "t2v ",
        (false, wanlora_config::ModelArch::Wan22_5b) => "ti2v ",
    }
}

/// One guided sampling step: the conditional and unconditional forwards without a graph, as CFG
/// runs them (the scheduler's update is negligible beside them).
fn sample_step(
    model: &WanTransformer,
    x: &Tensor,
    t: &Tensor,
    ctx: &Tensor,
    args: &StepArgs,
    tokens: i64,
) -> Result<()> {
    let device = model.device();
    let guided = || -> Result<()> {
        tch::no_grad(|| -> Result<()> {
            let cond = model.forward(x, t, ctx, None)?;
            let uncond = model.forward(x, t, ctx, None)?;
            let _ = cond - uncond;
            Ok(())
        })
    };
    guided()?;
    sync(device);
    if let Device::Cuda(i) = device {
        wanlora_torch::cuda::reset_peak_memory(i)?;
    }
    let t0 = Instant::now();
    for _ in 0..args.steps {
        guided()?;
    }
    sync(device);
    let secs = t0.elapsed().as_secs_f64() / args.steps as f64;
    let peak = match device {
        Device::Cuda(i) => gib(wanlora_torch::cuda::memory_stats(i)?.peak_allocated),
        _ => 0.0,
    };
    println!(
        "wanlora sample_step_cfg {}frames={} {}x{} tokens={tokens}: {secs:.3} s, peak {peak:.1} GiB",
        model_label(args),
        args.frames,
        args.height,
        args.width
    );
    Ok(())
}

/// Times the parts of one block at these shapes: forward without a graph, forward + backward with a
/// graph, and inside them the linears, attention and LoRA, by running each alone.
fn breakdown(
    model: &WanTransformer,
    lora: &LoraSet,
    x: &Tensor,
    ctx: &Tensor,
    device: Device,
) -> Result<()> {
    let reps = 5;
    let time = |f: &mut dyn FnMut()| -> f64 {
        f();
        sync(device);
        let t0 = Instant::now();
        for _ in 0..reps {
            f();
        }
        sync(device);
        1000.0 * t0.elapsed().as_secs_f64() / reps as f64
    };
    let grid = model.grid(x)?;
    let t = Tensor::from_slice(&[500.0f32]).to_device(device);
    let cond = tch::no_grad(|| model.conditions(&t, ctx, grid));
    let h = tch::no_grad(|| model.patchify(x, grid));
    let apply = LoraApply {
        set: lora,
        multiplier: Multiplier::Scalar(1.0),
    };
    let block = model.fetch_block(0)?;
    let fwd_nograd = time(&mut || {
        tch::no_grad(|| {
            let _ = model.block(0, &h, &cond, Some(&apply));
        })
    });
    let fwd_bwd = time(&mut || {
        let inp = h.detach().set_requires_grad(true);
        let y = model.block(0, &inp, &cond, Some(&apply));
        y.sum(Kind::Float).backward();
    });
    // Each linear as the model runs it (with its fp8 dequantisation or fp8 matmul).
    let lin = |x: &Tensor, l: &wanlora_models::transformer::Linear| l.forward(x);
    let linears_fwd = time(&mut || {
        tch::no_grad(|| {
            for l in [
                &block.self_attn.q,
                &block.self_attn.k,
                &block.self_attn.v,
                &block.self_attn.o,
                &block.cross_attn.q,
                &block.cross_attn.o,
            ] {
                let _ = lin(&h, l);
            }
            let _ = lin(&cond.context, &block.cross_attn.k);
            let _ = lin(&cond.context, &block.cross_attn.v);
            let f = lin(&h, &block.ffn0);
            let _ = lin(&f, &block.ffn2);
        })
    });
    let heads = model.config.num_attention_heads;
    let n = grid.tokens();
    let q = Tensor::randn(
        [1, heads, n, model.config.attention_head_dim],
        (model.kind(), device),
    );
    let kc = Tensor::randn(
        [1, heads, 512, model.config.attention_head_dim],
        (model.kind(), device),
    );
    let attn = |q: &Tensor, k: &Tensor| {
        Tensor::scaled_dot_product_attention(q, k, k, None::<Tensor>, 0.0, false, None, false)
    };
    let attention_fwd = time(&mut || {
        tch::no_grad(|| {
            let _ = attn(&q, &q);
            let _ = attn(&q, &kc);
        })
    });
    let attention_fwd_bwd = time(&mut || {
        let qg = q.detach().set_requires_grad(true);
        (attn(&qg, &qg).sum(Kind::Float) + attn(&qg, &kc).sum(Kind::Float)).backward();
    });
    let ffn_hidden = Tensor::randn([1, n, model.config.ffn_dim], (model.kind(), device));
    let lora_fwd = time(&mut || {
        tch::no_grad(|| {
            for t in wanlora_models::lora::LoraTarget::ALL {
                if let Some(a) = lora.get(0, t) {
                    let input = if t == wanlora_models::lora::LoraTarget::Ffn2 {
                        ffn_hidden.shallow_clone()
                    } else if matches!(
                        t,
                        wanlora_models::lora::LoraTarget::CrossK
                            | wanlora_models::lora::LoraTarget::CrossV
                    ) {
                        cond.context.shallow_clone()
                    } else {
                        h.shallow_clone()
                    };
                    let _ = a.delta(&input, &Multiplier::Scalar(1.0));
                }
            }
        })
    });
    let blocks = model.config.num_layers as f64;
    println!("breakdown per block (ms): forward without graph {fwd_nograd:.2}, forward+backward with graph {fwd_bwd:.2}");
    println!(
        "  forward parts: linears {linears_fwd:.2}, attention {attention_fwd:.2}, LoRA {lora_fwd:.2}, norms/rope/elementwise {:.2}",
        fwd_nograd - linears_fwd - attention_fwd - lora_fwd
    );
    println!("  attention forward+backward {attention_fwd_bwd:.2}");
    println!(
        "  step estimate: {blocks} × (recompute-free forward {fwd_nograd:.2} + forward+backward {fwd_bwd:.2}) = {:.3} s",
        blocks * (fwd_nograd + fwd_bwd) / 1000.0
    );
    Ok(())
}
