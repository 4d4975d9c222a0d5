//! `wanlora debug vae-encode` and `wanlora debug vae-decode`.

use super::{kind_of, read_input, write_outputs, DeviceArg, DtypeArg};
use anyhow::{Context, Result};
use std::path::PathBuf;
use tch::{Device, Kind};
use wanlora_models::vae::{Tiling, TilingMode, Vae};

/// Options shared by both VAE commands.
#[derive(clap::Args)]
pub struct VaeOptions {
    /// The VAE: a diffusers `vae/` folder (or the model folder above it) or a single file such as ComfyUI's
    /// wan_2.1_vae.safetensors (A14B) or wan2.2_vae.safetensors (TI2V-5B); which one is read from its shapes.
    #[arg(long)]
    pub weights: PathBuf,
    /// A diffusers VAE config.json for a single file whose configuration (or latent statistics) differ from the
    /// real Wan 2.1 or 2.2 VAE's.
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "f32")]
    pub dtype: DtypeArg,
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: DeviceArg,
    /// Spatial tiling: auto (only above 480×832), always, never.
    #[arg(long, value_enum, default_value = "auto")]
    pub tiling: TilingArg,
    /// Tile size in pixels (a multiple of 8; of 16 for the Wan 2.2 VAE).
    #[arg(long, default_value_t = Tiling::default().size)]
    pub tile_size: i64,
    /// Pixels shared and blended by neighbouring tiles (a multiple of 8; of 16 for the Wan 2.2 VAE).
    #[arg(long, default_value_t = Tiling::default().overlap)]
    pub tile_overlap: i64,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum TilingArg {
    Auto,
    Always,
    Never,
}

impl VaeOptions {
    pub fn load(&self) -> Result<Vae> {
        let device: Device = self.device.device()?;
        let kind: Kind = kind_of(self.dtype);
        let mut vae = Vae::open(&self.weights, self.config.as_deref(), kind, device)
            .context("loading the VAE")?;
        vae.set_tiling(Tiling {
            mode: match self.tiling {
                TilingArg::Auto => TilingMode::Auto,
                TilingArg::Always => TilingMode::Always,
                TilingArg::Never => TilingMode::Never,
            },
            size: self.tile_size,
            overlap: self.tile_overlap,
            ..Tiling::default()
        })?;
        Ok(vae)
    }
}

#[derive(clap::Args)]
pub struct EncodeArgs {
    #[command(flatten)]
    pub vae: VaeOptions,
    /// Safetensors file holding `video` [B,3,F,H,W] in [-1,1] (F = 4n+1, H and W multiples of 8; of 16 for the
    /// Wan 2.2 VAE).
    #[arg(long)]
    pub inputs: PathBuf,
    /// Safetensors file to write `latent` and `latent_raw` (float32) to.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn encode(args: EncodeArgs) -> Result<()> {
    let vae = args.vae.load()?;
    let video = read_input(&args.inputs, "video", Kind::Float)?;
    let raw = vae.encode_raw(&video)?;
    let latent = vae.normalize(&raw)?;
    tracing::info!("latent {:?}", latent.size());
    write_outputs(&args.out, vec![("latent", latent), ("latent_raw", raw)])
}

#[derive(clap::Args)]
pub struct DecodeArgs {
    #[command(flatten)]
    pub vae: VaeOptions,
    /// Safetensors file holding `latent` [B,z,T,h,w] (normalised, as the transformer produces it; z = 16 for the
    /// Wan 2.1 VAE, 48 for the Wan 2.2 VAE).
    #[arg(long)]
    pub inputs: PathBuf,
    /// Safetensors file to write `video` [B,3,1+4(T-1),s·h,s·w] in [-1,1] (float32; s = 8, 16 for the Wan 2.2
    /// VAE) to.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn decode(args: DecodeArgs) -> Result<()> {
    let vae = args.vae.load()?;
    let latent = read_input(&args.inputs, "latent", Kind::Float)?;
    let video = vae.decode(&latent)?;
    tracing::info!("video {:?}", video.size());
    write_outputs(&args.out, vec![("video", video)])
}
