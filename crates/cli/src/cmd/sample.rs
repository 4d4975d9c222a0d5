//! `wanlora sample`: one sample with Wan 2.2 A14B and optional LoRAs, by Wan's official recipe of the arch
//! (81 frames 480×832, 40 UniPC steps, Wan's negative prompt; `--arch i2v` (default): an image-to-video sample from
//! `--image`, shift 5, CFG 3.5 on both experts, boundary 0.9; `--arch t2v`: text-to-video from the prompt alone,
//! shift 12, CFG 4.0 high / 3.0 low, boundary 0.875).
//!
//! The model comes from `--model` (a diffusers folder or Hugging Face repo id with transformer/, transformer_2/,
//! vae/, text_encoder/, tokenizer/) and/or per-component files (`--high`, `--low`, `--vae`, `--text-encoder`,
//! `--tokenizer`; ComfyUI's single files work), resolved and checked by wanlora-hub. The text encoder runs first
//! and is dropped; then each expert is loaded for its phase only (one resident at a time), with its LoRA.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use tch::{Device, Kind, Tensor};
use wanlora_config::{CtrlImgResize, ModelArch};
use wanlora_hub::{CheckOptions, HubConfig, ModelSpec, Stage};
use wanlora_models::lora::LoraSet;
use wanlora_models::quant::Fp8Mode;
use wanlora_models::transformer::LoadOptions;
use wanlora_train::experts::Expert;
use wanlora_train::sampling::output::format_of_path;
use wanlora_train::sampling::{
    generate, video_frames, write_media, CfgBatching, LoadedExpert, SampleRequest, SamplerKind,
    SamplingError, ScheduleKind, StepInfo, WAN_NEGATIVE_PROMPT,
};
use wanlora_train::sources::ModelSource;

use crate::cmd::debug::{DeviceArg, DtypeArg};

#[derive(clap::Args)]
pub struct SampleArgs {
    /// The model variant: i2v (Wan 2.2 I2V A14B, needs --image), t2v (Wan 2.2 T2V A14B, the prompt alone) or
    /// ti2v (Wan 2.2 TI2V-5B: one transformer, given as --model or --high, with or without --image).
    /// It sets the defaults of --shift, --guidance, --guidance-2 and --boundary.
    #[arg(long, default_value = "i2v", value_parser = parse_arch)]
    pub arch: ModelArch,
    /// The model: a diffusers folder or Hugging Face repo id (`org/name[@revision]`) with transformer/ (high
    /// noise), transformer_2/ (low noise), vae/, text_encoder/, tokenizer/. Per-component options override it.
    #[arg(long, value_name = "DIR_OR_REPO")]
    pub model: Option<String>,
    /// The high-noise expert (e.g. ComfyUI's wan2.2_i2v_high_noise_14B_fp16.safetensors, or a folder).
    #[arg(long, value_name = "FILE")]
    pub high: Option<String>,
    /// The low-noise expert.
    #[arg(long, value_name = "FILE")]
    pub low: Option<String>,
    /// The Wan 2.1 VAE (e.g. wan_2.1_vae.safetensors).
    #[arg(long, value_name = "FILE")]
    pub vae: Option<String>,
    /// The umT5-XXL text encoder (e.g. umt5_xxl_fp8_e4m3fn_scaled.safetensors).
    #[arg(long, value_name = "FILE")]
    pub text_encoder: Option<String>,
    /// A folder holding tokenizer.json, or the file (ComfyUI ships none: take a diffusers repo's tokenizer/).
    #[arg(long, value_name = "DIR")]
    pub tokenizer: Option<String>,
    /// LoRA for the high-noise expert (ComfyUI, kohya `lora_unet_…` or diffusers keys).
    #[arg(long, value_name = "FILE")]
    pub lora_high: Option<PathBuf>,
    /// LoRA for the low-noise expert.
    #[arg(long, value_name = "FILE")]
    pub lora_low: Option<PathBuf>,
    /// Strength of both LoRAs.
    #[arg(long, default_value_t = 1.0)]
    pub lora_strength: f64,
    /// Strength of the high-noise LoRA (overrides --lora-strength).
    #[arg(long)]
    pub lora_high_strength: Option<f64>,
    /// Strength of the low-noise LoRA (overrides --lora-strength).
    #[arg(long)]
    pub lora_low_strength: Option<f64>,
    /// The start frame (image-to-video only).
    #[arg(long, value_name = "FILE")]
    pub image: Option<PathBuf>,
    #[arg(long)]
    pub prompt: String,
    /// Defaults to Wan's own negative prompt.
    #[arg(long)]
    pub negative_prompt: Option<String>,
    /// Frames, 4n + 1.
    #[arg(long, default_value_t = 81)]
    pub frames: u32,
    /// A multiple of 16.
    #[arg(long, default_value_t = 832)]
    pub width: u32,
    /// A multiple of 16.
    #[arg(long, default_value_t = 480)]
    pub height: u32,
    /// Fit the start frame by centre crop (keeps its aspect ratio) or stretch it.
    #[arg(long, value_enum, default_value = "crop")]
    pub resize: ResizeArg,
    #[arg(long, default_value_t = 40)]
    pub steps: u32,
    /// CFG scale of the high-noise expert (default: the arch's, I2V 3.5, T2V 4.0).
    #[arg(long)]
    pub guidance: Option<f64>,
    /// CFG scale of the low-noise expert (default: the arch's, I2V 3.5, T2V 3.0).
    #[arg(long = "guidance-2")]
    pub guidance_2: Option<f64>,
    /// Schedule shift (default: the arch's, I2V 5.0 (3.0 is recommended for 480p), T2V 12.0).
    #[arg(long)]
    pub shift: Option<f64>,
    /// The high-noise expert takes the steps with t ≥ boundary·1000 (default: I2V 0.9, T2V 0.875).
    #[arg(long)]
    pub boundary: Option<f64>,
    /// Seed of the initial noise (the same noise ComfyUI and diffusers draw on the CPU for this seed).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, value_enum, default_value = "unipc")]
    pub sampler: SamplerArg,
    /// The σ grid: Wan's own, or diffusers' (to reproduce WanImageToVideoPipeline's output).
    #[arg(long, value_enum, default_value = "official")]
    pub schedule: ScheduleArg,
    /// Guidance passes as one batch of 2 (fast), two passes (less memory), or batched when it fits.
    #[arg(long, value_enum, default_value = "auto")]
    pub cfg_batch: CfgBatchArg,
    /// Frame rate of the file (default: the arch's, 16 for A14B, 24 for TI2V-5B).
    #[arg(long)]
    pub fps: Option<u32>,
    /// Output file: .mp4 or .webp (a video), .jpg or .png (one frame).
    #[arg(long, default_value = "sample.mp4")]
    pub out: PathBuf,
    /// Also write the final latents (`latents`, [1, 16, T, H/8, W/8] float32) to this safetensors file.
    #[arg(long, value_name = "FILE")]
    pub save_latents: Option<PathBuf>,
    /// Block linears of both experts: off (the compute dtype), weights (stored in fp8 — half the
    /// memory — and multiplied in the compute dtype) or matmul (fp8 storage and fp8 matmuls with
    /// per-token input scales: faster on sm89+ GPUs, a lower precision than the reference).
    #[arg(long, default_value = "off", value_parser = crate::cmd::bench::step::parse_fp8)]
    pub fp8: Fp8Mode,
    /// Compute precision (default: bf16 on CUDA, f32 on the CPU).
    #[arg(long, value_enum)]
    pub dtype: Option<DtypeArg>,
    /// Default: the first GPU when there is one.
    #[arg(long, value_enum)]
    pub device: Option<DeviceArg>,
    /// Accept model widths other than A14B (tiny test models).
    #[arg(long)]
    pub any_size: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum SamplerArg {
    Euler,
    Unipc,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum ScheduleArg {
    Official,
    Diffusers,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum ResizeArg {
    Crop,
    Stretch,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum CfgBatchArg {
    Auto,
    Batched,
    Separate,
}

fn request(args: &SampleArgs) -> Result<SampleRequest> {
    build_request(args).map_err(|e| match e {
        SamplingError::Setting { setting, message } => {
            anyhow::anyhow!("--{}: {message}", option_name(&setting))
        }
        other => other.into(),
    })
}

/// `--arch`: i2v, t2v, or AI Toolkit's names.
pub fn parse_arch(value: &str) -> Result<ModelArch, String> {
    ModelArch::from_cli(value).ok_or_else(|| {
        format!("{value:?} is not a model variant; use i2v (Wan 2.2 I2V A14B), t2v (Wan 2.2 T2V A14B) or ti2v (Wan 2.2 TI2V-5B)")
    })
}

fn build_request(args: &SampleArgs) -> Result<SampleRequest, SamplingError> {
    let official = SampleRequest::official(args.arch, &args.prompt, args.image.clone());
    let request = SampleRequest {
        prompt: args.prompt.clone(),
        negative_prompt: args
            .negative_prompt
            .clone()
            .unwrap_or_else(|| WAN_NEGATIVE_PROMPT.to_string()),
        start_image: args.image.clone(),
        resize: match args.resize {
            ResizeArg::Crop => CtrlImgResize::Crop,
            ResizeArg::Stretch => CtrlImgResize::Stretch,
        },
        width: args.width,
        height: args.height,
        num_frames: args.frames,
        fps: args.fps.unwrap_or(official.fps),
        seed: args.seed,
        steps: args.steps,
        shift: args.shift.unwrap_or(official.shift),
        sampler: match args.sampler {
            SamplerArg::Euler => SamplerKind::Euler,
            SamplerArg::Unipc => SamplerKind::UniPc,
        },
        schedule: match args.schedule {
            ScheduleArg::Official => ScheduleKind::Official,
            ScheduleArg::Diffusers => ScheduleKind::Diffusers,
        },
        guidance_high: args.guidance.unwrap_or(official.guidance_high),
        guidance_low: args.guidance_2.unwrap_or(official.guidance_low),
        boundary_ratio: args.boundary.unwrap_or(official.boundary_ratio),
        lora_multiplier_high: args.lora_high_strength.unwrap_or(args.lora_strength),
        lora_multiplier_low: args.lora_low_strength.unwrap_or(args.lora_strength),
        cfg_batching: match args.cfg_batch {
            CfgBatchArg::Auto => CfgBatching::Auto,
            CfgBatchArg::Batched => CfgBatching::Batched,
            CfgBatchArg::Separate => CfgBatching::Separate,
        },
        format: format_of_path(&args.out)?,
    };
    request.validate()?;
    Ok(request)
}

/// The command-line option of a request setting.
fn option_name(setting: &str) -> &str {
    match setting {
        "num_frames" => "frames",
        "sample_steps" => "steps",
        "guidance_scale" => "guidance",
        "guidance_scale_2" => "guidance-2",
        "boundary_ratio" => "boundary",
        "network_multiplier" => "lora-strength",
        "format" | "output" => "out",
        other => other,
    }
}

/// The job keys the hub's messages name, and the options that set them here.
const KEY_OPTIONS: [(&str, &str); 6] = [
    ("model.high_noise_model_path", "--high"),
    ("model.low_noise_model_path", "--low"),
    ("model.te_name_or_path", "--text-encoder"),
    ("model.tokenizer_path", "--tokenizer"),
    ("model.vae_path", "--vae"),
    ("model.name_or_path", "--model"),
];

/// A hub error in this command's terms: options instead of job keys.
fn in_option_terms(error: wanlora_hub::Error) -> anyhow::Error {
    let mut text = error
        .to_string()
        .replace("the job's model files", "the model files");
    for (key, option) in KEY_OPTIONS {
        text = text.replace(key, option);
    }
    anyhow::anyhow!(text)
}

fn model_spec(args: &SampleArgs) -> Result<ModelSpec> {
    let given = [
        &args.model,
        &args.high,
        &args.low,
        &args.vae,
        &args.text_encoder,
        &args.tokenizer,
    ];
    if given.iter().all(|v| v.is_none()) {
        bail!(
            "no model given: use --model (a {} diffusers folder or repo id such as {}), or --high, --low, \
             --vae, --text-encoder and --tokenizer",
            args.arch.facts().label,
            args.arch.facts().diffusers_repo
        );
    }
    let cwd = std::env::current_dir().context("cannot read the current folder")?;
    let spec = ModelSpec {
        name_or_path: args.model.clone(),
        extras_name_or_path: None,
        te_name_or_path: args.text_encoder.clone(),
        vae_path: args.vae.clone(),
        tokenizer_path: args.tokenizer.clone(),
        high_noise_model_path: args.high.clone(),
        low_noise_model_path: args.low.clone(),
        train_high_noise: true,
        // TI2V-5B: one transformer, in the high-noise slot.
        train_low_noise: !args.arch.facts().one_transformer,
        need_untrained_expert_for_samples: !args.arch.facts().one_transformer,
    }
    .relative_to(&cwd);
    if let Err(reason) = spec.validate() {
        bail!("{reason}; give --model, or --high, --low, --vae, --text-encoder and --tokenizer");
    }
    Ok(spec)
}

fn label(expert: Expert) -> &'static str {
    match expert {
        Expert::High => "high-noise expert",
        Expert::Low => "low-noise expert",
    }
}

/// One expert with its LoRA, loaded the way `wanlora train` loads it.
fn load_expert(
    source: &ModelSource,
    expert: Expert,
    lora: Option<&Path>,
    kind: Kind,
    device: Device,
    fp8: Fp8Mode,
) -> Result<LoadedExpert> {
    let started = Instant::now();
    let options = LoadOptions {
        fp8,
        ..LoadOptions::default()
    };
    let transformer = source
        .transformer(expert, kind, device, &options)
        .with_context(|| format!("cannot load the {}", label(expert)))?;
    let lora = lora
        .map(|path| {
            LoraSet::load(path, &transformer.config, device, false).with_context(|| {
                format!(
                    "cannot load the {}'s LoRA {}",
                    label(expert),
                    path.display()
                )
            })
        })
        .transpose()?;
    if let Some((_, format)) = &lora {
        tracing::info!("{}: LoRA in {format:?} format", label(expert));
    }
    tracing::info!(
        "{} loaded in {:.1} s",
        label(expert),
        started.elapsed().as_secs_f64()
    );
    Ok(LoadedExpert {
        model: transformer,
        lora: lora.map(|(set, _)| set),
    })
}

/// The umT5 embeddings of the prompt and the negative prompt, `[1, 512, D]` each, float32 on `device`.
fn encode_text(
    source: &ModelSource,
    request: &SampleRequest,
    kind: Kind,
    device: Device,
) -> Result<(Tensor, Tensor)> {
    let tokenizer = source.tokenizer().context(
        "give --tokenizer (a diffusers repo's tokenizer/ folder) when the model has none",
    )?;
    let encoder = source
        .text_encoder(kind, device, false)
        .context("cannot load the text encoder")?;
    let (ids, mask) =
        tokenizer.encode_batch(&[request.prompt.as_str(), request.negative_prompt.as_str()])?;
    let text = encoder.encode(&ids.to_device(device), &mask.to_device(device))?;
    Ok((text.narrow(0, 0, 1), text.narrow(0, 1, 1)))
}

pub fn run(args: SampleArgs) -> Result<()> {
    let request = request(&args)?;
    // TI2V-5B takes a start frame or none; the A14B variants one each way.
    let needs_image = args.arch.facts().first_frame_condition;
    match (&args.image, needs_image) {
        (Some(image), _) if args.arch.facts().first_frame_replacement && !image.is_file() => {
            bail!("--image {}: no such file", image.display())
        }
        (_, false) if args.arch.facts().first_frame_replacement => {}
        (None, true) => bail!(
            "--image is missing: an image-to-video sample starts from a start frame (or use --arch t2v for \
             text-to-video)"
        ),
        (Some(image), false) => bail!(
            "--image {}: a text-to-video sample (--arch t2v) takes no start frame; remove --image, or use --arch i2v",
            image.display()
        ),
        (Some(image), true) if !image.is_file() => {
            bail!("--image {}: no such file", image.display())
        }
        _ => {}
    }
    for lora in [&args.lora_high, &args.lora_low].into_iter().flatten() {
        if !lora.is_file() {
            bail!("LoRA file {} does not exist", lora.display());
        }
    }
    let device = match args.device {
        Some(d) => d.device()?,
        None => wanlora_torch::default_device(),
    };
    let kind = match (args.dtype, device) {
        (Some(DtypeArg::F32), _) | (None, Device::Cpu) => Kind::Float,
        (Some(DtypeArg::Bf16), _) | (None, _) => Kind::BFloat16,
    };
    let spec = model_spec(&args)?;
    let options = CheckOptions {
        exact_sizes: !args.any_size,
        arch: args.arch,
    };
    let hub = HubConfig::from_env();
    let model =
        wanlora_hub::fetch(&spec, &hub, Stage::Everything, &options).map_err(in_option_terms)?;
    wanlora_hub::check_model(&model, Stage::Everything, &options).map_err(in_option_terms)?;
    let source = ModelSource::from_resolved(spec, hub, model, options);

    let started = Instant::now();
    let (text_cond, text_uncond) = encode_text(&source, &request, kind, device)?;
    tracing::info!("text encoded in {:.1} s", started.elapsed().as_secs_f64());
    let vae = source.vae(kind, device).context("cannot load the VAE")?;

    let bar = ProgressBar::new(request.steps as u64);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} steps {msg} (ETA {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix("denoising");
    let mut progress = |s: &StepInfo| {
        bar.set_message(format!(
            "{} t={:.0} {:.2} s/step",
            s.expert.name(),
            s.timestep,
            s.seconds
        ));
        bar.inc(1);
    };
    let mut experts = |expert: Expert| -> Result<LoadedExpert, SamplingError> {
        let lora = match expert {
            Expert::High => args.lora_high.as_deref(),
            Expert::Low => args.lora_low.as_deref(),
        };
        bar.suspend(|| load_expert(&source, expert, lora, kind, device, args.fp8))
            .map_err(|e| SamplingError::ExpertLoad(format!("{e:#}")))
    };
    let denoise_started = Instant::now();
    let generated = generate(
        &request,
        &text_cond,
        &text_uncond,
        &vae,
        &mut experts,
        &mut progress,
    )?;
    bar.finish();
    tracing::info!(
        "sampled in {:.1} s (denoising, loading and decoding)",
        denoise_started.elapsed().as_secs_f64()
    );
    if let Some(path) = &args.save_latents {
        Tensor::write_safetensors(&[("latents", &generated.latents)], path)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let frames = video_frames(&generated.video)?;
    if let Some(parent) = args.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    write_media(&frames, request.fps, &args.out, request.format)?;
    println!(
        "wrote {} ({} frames {}x{}, {} fps)",
        args.out.display(),
        frames.frames,
        frames.width,
        frames.height,
        request.fps
    );
    Ok(())
}
