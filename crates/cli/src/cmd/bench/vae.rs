//! `wanlora bench vae`: encode, decode and the I2V condition of one clip with the real Wan 2.1 VAE shapes.

use super::{measure, report, uniform_pm1, BenchOptions};
use anyhow::Result;
use tch::{Kind, Tensor};
use wanlora_models::conditioning::first_frame_condition;
use wanlora_models::vae::{Tiling, Vae, VaeConfig, VaeLayout};
use wanlora_torch::weights::RandomWeights;

#[derive(clap::Args)]
pub struct VaeBenchArgs {
    #[command(flatten)]
    pub common: BenchOptions,
    /// Clip length (4n + 1).
    #[arg(long, default_value_t = 81)]
    pub frames: i64,
    #[arg(long, default_value_t = 480)]
    pub height: i64,
    #[arg(long, default_value_t = 832)]
    pub width: i64,
    /// Also decode with spatial tiling forced on (--tile-size/--tile-overlap).
    #[arg(long)]
    pub tiled: bool,
    #[arg(long, default_value_t = Tiling::default().size)]
    pub tile_size: i64,
    #[arg(long, default_value_t = Tiling::default().overlap)]
    pub tile_overlap: i64,
    /// Activation layout: channels-last (cuDNN's fast path, the default on CUDA) or contiguous.
    #[arg(long, value_enum)]
    pub layout: Option<LayoutArg>,
    /// The Wan 2.2 VAE of TI2V-5B (48 channels, 16× in space) instead of the Wan 2.1 VAE; its lines
    /// read `vae22_…`.
    #[arg(long)]
    pub wan22: bool,
    /// Let cuDNN time its convolution algorithms during the warm-up (false: its heuristics, as PyTorch's default).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub cudnn_benchmark: bool,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum LayoutArg {
    ChannelsLast,
    Contiguous,
}

pub fn run(args: VaeBenchArgs) -> Result<()> {
    let o = &args.common;
    let device = o.device.device()?;
    let kind = crate::cmd::debug::kind_of(o.dtype);
    if device.is_cuda() {
        tch::Cuda::cudnn_set_benchmark(args.cudnn_benchmark);
    }
    let layout = match args.layout {
        Some(LayoutArg::ChannelsLast) => VaeLayout::ChannelsLast,
        Some(LayoutArg::Contiguous) => VaeLayout::Contiguous,
        None => VaeLayout::for_device(device),
    };
    let weights = RandomWeights {
        std: 0.02,
        seed: o.seed,
    };
    let config = if args.wan22 {
        VaeConfig::wan22()
    } else {
        VaeConfig::default()
    };
    let name = |n: &str| match args.wan22 {
        true => n.replacen("vae_", "vae22_", 1),
        false => n.to_string(),
    };
    let (z, scale) = (config.z_dim, config.spatial_compression());
    let mut vae = Vae::load_with_layout(&weights, Some(config), kind, device, layout)?;
    vae.set_tiling(Tiling::never())?;
    let (f, h, w) = (args.frames, args.height, args.width);
    let detail = format!("frames={f} {h}x{w}");
    let video = uniform_pm1(&[1, 3, f, h, w], kind, device, o.seed + 1);

    let m = measure(device, o.warmup, o.repeats, || Ok(vae.encode(&video)?))?;
    report(&name("vae_encode"), &detail, &m);

    // TI2V conditions on the start frame's own latent (one frame), A14B I2V on the condition video.
    let image = video.select(2, 0);
    if args.wan22 {
        let frame = image.unsqueeze(2);
        let m = measure(device, o.warmup, o.repeats, || Ok(vae.encode(&frame)?))?;
        report("vae22_encode_start_frame", &detail, &m);
    } else {
        let m = measure(device, o.warmup, o.repeats, || {
            Ok(first_frame_condition(&vae, &image, f)?)
        })?;
        report("vae_i2v_condition", &detail, &m);
    }
    drop((video, image));

    tch::manual_seed(o.seed + 2);
    let latent = Tensor::randn(
        [1, z, VaeConfig::latent_frames(f), h / scale, w / scale],
        (Kind::Float, device),
    )
    .to_kind(kind);
    let m = measure(device, o.warmup, o.repeats, || Ok(vae.decode(&latent)?))?;
    report(&name("vae_decode"), &detail, &m);

    if args.tiled {
        vae.set_tiling(Tiling::always(args.tile_size, args.tile_overlap))?;
        let tiled = format!("{detail} tiles={}/{}", args.tile_size, args.tile_overlap);
        let m = measure(device, o.warmup, o.repeats, || Ok(vae.decode(&latent)?))?;
        report(&name("vae_decode_tiled"), &tiled, &m);
        let video = uniform_pm1(&[1, 3, f, h, w], kind, device, o.seed + 1);
        let m = measure(device, o.warmup, o.repeats, || Ok(vae.encode(&video)?))?;
        report(&name("vae_encode_tiled"), &tiled, &m);
    }
    Ok(())
}
