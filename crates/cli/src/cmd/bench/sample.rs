//! `wanlora bench sample`: one image-to-video (`--arch i2v`) or text-to-video (`--arch t2v`) sample at the real
//! A14B sizes with random weights (never zeros), both
//! experts resident: seconds per denoising step with classifier-free guidance, the whole denoising, the VAE decode,
//! and peak GPU memory. diffusers' pipeline runs a guided step as two transformer calls
//! (../shared/peers/diffusers_wan_components.py); this one runs them as one batch of 2 unless `--cfg-batch separate`.

use anyhow::{bail, Result};
use std::time::Instant;
use tch::{Device, Kind, Tensor};
use wanlora_config::{ModelArch, SampleFormat};
use wanlora_models::conditioning::first_frame_condition;
use wanlora_models::lora::LoraSet;
use wanlora_models::quant::Fp8Mode;
use wanlora_models::transformer::{LoadOptions, TransformerConfig, WanTransformer};
use wanlora_models::vae::{Vae, VaeConfig};
use wanlora_torch::weights::RandomWeights;
use wanlora_train::experts::Expert;
use wanlora_train::sampling::{
    CfgBatching, Conditioning, SampleRequest, SampleRun, SamplerKind, StepInfo,
};

use super::step::{device_of, gib, sync};

#[derive(clap::Args)]
pub struct SampleBenchArgs {
    /// i2v (36 input channels, a start frame's condition) or t2v (16, the prompt alone); also sets the
    /// official shift, guidance and boundary.
    #[arg(long, default_value = "i2v", value_parser = crate::cmd::sample::parse_arch)]
    pub arch: ModelArch,
    #[arg(long, default_value_t = 81)]
    pub frames: u32,
    #[arg(long, default_value_t = 480)]
    pub height: u32,
    #[arg(long, default_value_t = 832)]
    pub width: u32,
    /// Denoising steps timed (Wan: 40; fewer to save GPU time: the per-step figure stays comparable).
    #[arg(long, default_value_t = 40)]
    pub steps: u32,
    /// Transformer blocks per expert (40 for A14B; fewer for quick CPU checks).
    #[arg(long, default_value_t = 40)]
    pub layers: i64,
    #[arg(long, value_enum, default_value = "unipc")]
    pub sampler: crate::cmd::sample::SamplerArg,
    /// Guidance passes as one batch of 2, two passes (as diffusers), or batched when memory allows.
    #[arg(long, value_enum, default_value = "batched")]
    pub cfg_batch: crate::cmd::sample::CfgBatchArg,
    /// Rank of a LoRA applied (unmerged) to both experts; 0 for none (as the diffusers reference).
    #[arg(long, default_value_t = 0)]
    pub lora_rank: i64,
    /// Block linears of both experts: off (bf16, as the diffusers reference), weights (fp8
    /// storage, bf16 matmuls) or matmul (fp8 storage and fp8 matmuls against per-token scaled
    /// inputs: a different precision from the reference).
    #[arg(long, default_value = "off", value_parser = super::step::parse_fp8)]
    pub fp8: Fp8Mode,
    /// Skip the VAE (condition and decode).
    #[arg(long)]
    pub no_vae: bool,
    /// cuda or cpu.
    #[arg(long, default_value = "cuda")]
    pub device: String,
}

fn peak(device: Device) -> Result<String> {
    Ok(match device {
        Device::Cuda(i) => format!(
            "{:.1} GiB",
            gib(wanlora_torch::cuda::memory_stats(i)?.peak_allocated)
        ),
        _ => "n/a (cpu)".into(),
    })
}

fn reset_peak(device: Device) -> Result<()> {
    sync(device);
    if let Device::Cuda(i) = device {
        wanlora_torch::cuda::reset_peak_memory(i)?;
    }
    Ok(())
}

pub fn run(args: SampleBenchArgs) -> Result<()> {
    if args.arch.facts().one_transformer {
        anyhow::bail!(
            "bench sample times the A14B experts; for TI2V-5B use `wanlora sample --arch ti2v` with the model, \
             or `wanlora bench step --ti2v` for its training step"
        );
    }
    let device = device_of(&args.device)?;
    let kind = if device.is_cuda() {
        Kind::BFloat16
    } else {
        Kind::Float
    };
    let cfg = TransformerConfig {
        num_layers: args.layers,
        ..TransformerConfig::wan22_a14b(args.arch.facts().in_channels as i64)
    };
    let request = SampleRequest {
        width: args.width,
        height: args.height,
        num_frames: args.frames,
        steps: args.steps,
        sampler: match args.sampler {
            crate::cmd::sample::SamplerArg::Euler => SamplerKind::Euler,
            crate::cmd::sample::SamplerArg::Unipc => SamplerKind::UniPc,
        },
        cfg_batching: match args.cfg_batch {
            crate::cmd::sample::CfgBatchArg::Auto => CfgBatching::Auto,
            crate::cmd::sample::CfgBatchArg::Batched => CfgBatching::Batched,
            crate::cmd::sample::CfgBatchArg::Separate => CfgBatching::Separate,
        },
        format: SampleFormat::Mp4,
        ..SampleRequest::official(
            args.arch,
            "benchmark",
            args.arch
                .facts()
                .first_frame_condition
                .then(|| "random.png".into()),
        )
    };
    request.validate()?;
    // I2V lines keep their earlier form (scripts/gpu and docs/BENCHMARKS.md read them).
    let sizes = format!(
        "{}frames={} {}x{}{}",
        match args.arch {
            ModelArch::Wan22_14bI2v => "",
            ModelArch::Wan22_14b => "t2v ",
            ModelArch::Wan22_5b => "ti2v ",
        },
        args.frames,
        args.height,
        args.width,
        match args.fp8 {
            Fp8Mode::Off => String::new(),
            mode => format!(" fp8={}", mode.name()),
        }
    );

    let started = Instant::now();
    let random = |seed: i64| RandomWeights { std: 0.02, seed };
    let options = LoadOptions {
        fp8: args.fp8,
        ..LoadOptions::default()
    };
    let high = WanTransformer::load_with(&random(1), Some(cfg.clone()), kind, device, &options)?;
    let low = WanTransformer::load_with(&random(2), Some(cfg.clone()), kind, device, &options)?;
    let loras = (args.lora_rank > 0).then(|| {
        let make = || {
            let set =
                LoraSet::new_trainable(&cfg, args.lora_rank, args.lora_rank as f64, device, 0);
            // Non-zero B, so the adapters change the output as a trained LoRA does.
            tch::no_grad(|| {
                for p in set.parameters() {
                    let _ = p.detach().normal_(0.0, 0.01);
                }
            });
            set
        };
        (make(), make())
    });
    let vae = if args.no_vae {
        None
    } else {
        Some(Vae::load(
            &random(3),
            Some(VaeConfig::default()),
            kind,
            device,
        )?)
    };
    sync(device);
    eprintln!(
        "two random {}-block experts{} built on {device:?} in {:.1} s",
        cfg.num_layers,
        if vae.is_some() { " and a VAE" } else { "" },
        started.elapsed().as_secs_f64()
    );

    tch::manual_seed(0);
    let text_cond = Tensor::randn([1, 512, cfg.text_dim], (Kind::Float, device)) * 0.1;
    let text_uncond = Tensor::randn([1, 512, cfg.text_dim], (Kind::Float, device)) * 0.1;
    let [t, h, w] = request.latent_grid();
    let condition = match &vae {
        _ if !args.arch.facts().first_frame_condition => Conditioning::TextOnly {
            latent_channels: cfg.out_channels,
        },
        Some(vae) => {
            let image = Tensor::rand(
                [1, 3, args.height as i64, args.width as i64],
                (Kind::Float, device),
            ) * 2.0
                - 1.0;
            // Warm-up (cuDNN autotuning), then the timed run.
            let _ = first_frame_condition(vae, &image, args.frames as i64)?;
            reset_peak(device)?;
            let started = Instant::now();
            let y = first_frame_condition(vae, &image, args.frames as i64)?;
            sync(device);
            println!(
                "wanlora sample_condition: {sizes}: {:.3} s, peak {}",
                started.elapsed().as_secs_f64(),
                peak(device)?
            );
            Conditioning::FirstFrame(y)
        }
        None => {
            let mask = Tensor::zeros([1, 4, t, h, w], (Kind::Float, device));
            let _ = mask.narrow(2, 0, 1).fill_(1.0);
            Conditioning::FirstFrame(Tensor::cat(
                &[mask, Tensor::randn([1, 16, t, h, w], (Kind::Float, device))],
                1,
            ))
        }
    };

    let lora_of = |expert: Expert| {
        loras.as_ref().map(|(high, low)| match expert {
            Expert::High => high,
            Expert::Low => low,
        })
    };
    let model_of = |expert: Expert| match expert {
        Expert::High => &high,
        Expert::Low => &low,
    };
    let denoise = |request: &SampleRequest, steps: &mut Vec<StepInfo>| -> Result<Tensor> {
        let mut run = SampleRun::new(request, &text_cond, &text_uncond, &condition, device)?;
        for expert in [Expert::High, Expert::Low] {
            run.denoise_phase(expert, model_of(expert), lora_of(expert), &mut |s| {
                steps.push(*s)
            })?;
        }
        Ok(run.latents().shallow_clone())
    };

    // Warm-up: one guided step on each expert (cuBLAS/cuDNN selection, allocator growth).
    let warmup = SampleRequest {
        steps: 2,
        ..request.clone()
    };
    let _ = denoise(&warmup, &mut Vec::new())?;

    reset_peak(device)?;
    let started = Instant::now();
    let mut steps = Vec::new();
    let latents = denoise(&request, &mut steps)?;
    sync(device);
    let total = started.elapsed().as_secs_f64();
    let denoise_peak = peak(device)?;
    if !bool::try_from(latents.isfinite().all())? {
        bail!("the benchmark produced non-finite latents; the timing would be meaningless");
    }
    let per_step = steps.iter().map(|s| s.seconds).sum::<f64>() / steps.len().max(1) as f64;
    let batched = steps.iter().all(|s| s.batched);
    let high_steps = steps.iter().filter(|s| s.expert == Expert::High).count();
    let lora = if args.lora_rank > 0 {
        format!(" lora_rank={}", args.lora_rank)
    } else {
        String::new()
    };
    println!(
        "wanlora sample_step_cfg: {sizes}{lora} ({}): {per_step:.3} s/step, peak {denoise_peak}",
        if batched { "batched" } else { "two passes" }
    );
    println!(
        "wanlora sample_denoise: {sizes} steps={} ({high_steps} high, {} low) {}: {total:.3} s, peak {denoise_peak}",
        steps.len(),
        steps.len() - high_steps,
        request.sampler.name()
    );
    if let Some(vae) = &vae {
        reset_peak(device)?;
        let started = Instant::now();
        let video = vae.decode(&latents)?;
        sync(device);
        let seconds = started.elapsed().as_secs_f64();
        if !bool::try_from(video.isfinite().all())? {
            bail!("the decode produced non-finite values");
        }
        println!(
            "wanlora sample_decode: {sizes}: {seconds:.3} s, peak {}",
            peak(device)?
        );
    }
    Ok(())
}
