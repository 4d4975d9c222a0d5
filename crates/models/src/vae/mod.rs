//! The Wan VAEs (diffusers `AutoencoderKLWan`; wan-reference.md §6): causal 3-D convolutions with RMS norms,
//! 4× in time, latents normalised per channel.
//!
//! * The Wan 2.1 VAE (both Wan 2.2 A14B experts): 8× in space, 16 latent channels.
//! * The Wan 2.2 VAE (TI2V-5B): frames folded into 2×2 pixel patches (12 channels) around the network, stages
//!   with parameter-free shortcuts (`is_residual`), 16× in space, 48 latent channels.
//!
//! One type runs both; the configuration (read or inferred from the weights' shapes) says which.
//!
//! * [`Vae::encode`] — video `[B, 3, F, H, W]` in [−1, 1] (F = 4n + 1) → normalised μ `[B, z, (F−1)/4 + 1, H/s, W/s]`
//!   (what the transformer consumes; s = [`VaeConfig::spatial_compression`]); [`Vae::encode_raw`] returns μ
//!   before normalisation.
//! * [`Vae::decode`] — normalised latents → video in [−1, 1].
//! * [`crate::conditioning::first_frame_condition`] builds the I2V condition with a cheaper encoder pass.
//!
//! Modules: `config` (the configuration), `names` (diffusers/original weight names), `layout` (kind, device,
//! memory layout), `layers` (the building blocks), `encoder`, `decoder`, `tiling`.

mod config;
mod decoder;
mod encoder;
mod layers;
mod layout;
mod names;
mod tiling;

pub use config::{
    VaeConfig, WAN21_LATENTS_MEAN, WAN21_LATENTS_STD, WAN22_LATENTS_MEAN, WAN22_LATENTS_STD,
};
pub use layout::VaeLayout;
pub use names::{original_name, original_name_wan22, VaeNaming};
pub use tiling::{Tiling, TilingMode};

pub(crate) use encoder::VideoSource;

use crate::ModelError;
use decoder::Decoder;
use encoder::{unpatchify, Encoder, Region};
use layout::Exec;
use names::{vae_hint, VaeNames};
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};
use tiling::TileGrid;
use wanlora_torch::weights::{Loader, WeightSet, WeightSource};

/// A Wan VAE (2.1 or 2.2) on one device in one compute kind (float32, bfloat16 or float16).
pub struct Vae {
    config: VaeConfig,
    encoder: Encoder,
    decoder: Decoder,
    /// Per-channel latent statistics, float32 `[1, z, 1, 1, 1]` on the device.
    latents_mean: Tensor,
    latents_std: Tensor,
    exec: Exec,
    tiling: Tiling,
    naming: VaeNaming,
}

impl Vae {
    /// Builds the VAE from `source` (diffusers or original names, any key prefix). Without `cfg` the configuration
    /// is inferred from the tensors' shapes, with the real model's latent statistics.
    pub fn load(
        source: &dyn WeightSource,
        cfg: Option<VaeConfig>,
        kind: Kind,
        device: Device,
    ) -> Result<Vae, ModelError> {
        Self::load_with_layout(source, cfg, kind, device, VaeLayout::for_device(device))
    }

    /// [`Vae::load`] with an explicit memory layout (benchmarks compare both; tests cover both on the CPU).
    pub fn load_with_layout(
        source: &dyn WeightSource,
        cfg: Option<VaeConfig>,
        kind: Kind,
        device: Device,
        layout: VaeLayout,
    ) -> Result<Vae, ModelError> {
        let not_a_vae = |reason: String| ModelError::Config {
            path: PathBuf::from(source.describe()),
            reason,
        };
        let names = VaeNames::detect(source, VaeConfig::default().num_res_blocks).ok_or_else(|| {
            let hint = vae_hint(source).map(|h| format!(": {h}")).unwrap_or_default();
            not_a_vae(format!(
                "no Wan VAE tensors here (neither encoder.conv_in.weight nor encoder.conv1.weight){hint}"
            ))
        })?;
        let config = match cfg {
            Some(c) => c,
            None => VaeConfig::infer(&names.view(source)).ok_or_else(|| {
                let hint = vae_hint(source).map(|h| format!(" ({h})")).unwrap_or_default();
                not_a_vae(format!(
                    "cannot infer the VAE configuration from these tensors{hint}; with a Wan VAE of another \
                     configuration, pass its diffusers config.json"
                ))
            })?,
        };
        config.validate().map_err(not_a_vae)?;
        let names = names.for_config(&config);
        let named = names.view(source);
        let exec = Exec {
            kind,
            device,
            layout,
        };
        let loader = Loader::new(&named, kind, device);
        let encoder = Encoder::load(&loader, &config, &exec);
        let decoder = Decoder::load(&loader, &config, &exec);
        loader.finish(vae_hint)?;
        let stats = |values: &[f64]| -> Result<Tensor, ModelError> {
            Ok(Tensor::f_from_slice(values)?
                .f_to_kind(Kind::Float)?
                .f_reshape([1, config.z_dim, 1, 1, 1])?
                .f_to_device(device)?)
        };
        Ok(Vae {
            latents_mean: stats(&config.latents_mean)?,
            latents_std: stats(&config.latents_std)?,
            encoder,
            decoder,
            exec,
            tiling: Tiling::default(),
            naming: names.naming(),
            config,
        })
    }

    /// Loads a diffusers `vae/` folder (its `config.json` and weights; the model's root folder works too) or a
    /// single safetensors file with either naming (configuration inferred).
    pub fn from_path(path: &Path, kind: Kind, device: Device) -> Result<Vae, ModelError> {
        Self::open(path, None, kind, device)
    }

    /// [`Vae::from_path`] with an explicit config.json (`config_file`) that replaces the folder's
    /// or, for a single file, the Wan 2.1 defaults. Every command opens a VAE by this rule.
    pub fn open(
        path: &Path,
        config_file: Option<&Path>,
        kind: Kind,
        device: Device,
    ) -> Result<Vae, ModelError> {
        let folder = if path.join("vae").is_dir() {
            path.join("vae")
        } else {
            path.to_path_buf()
        };
        let read = |c: &Path| VaeConfig::from_json_file(c);
        if folder.is_dir() {
            let config_path = folder.join("config.json");
            let config = match config_file {
                Some(c) => Some(read(c)?),
                None => config_path
                    .is_file()
                    .then(|| read(&config_path))
                    .transpose()?,
            };
            // A diffusers folder may also hold variants (…fp16.safetensors): read the main file when present.
            let main = folder.join("diffusion_pytorch_model.safetensors");
            let weights = WeightSet::open(if main.is_file() { &main } else { &folder })?;
            return Self::load(&weights, config, kind, device);
        }
        let weights = WeightSet::open(path)?;
        Self::load(&weights, config_file.map(read).transpose()?, kind, device)
    }

    pub fn config(&self) -> &VaeConfig {
        &self.config
    }

    /// The naming of the weights this VAE was loaded from.
    pub fn naming(&self) -> VaeNaming {
        self.naming
    }

    pub fn device(&self) -> Device {
        self.exec.device
    }

    pub fn kind(&self) -> Kind {
        self.exec.kind
    }

    pub fn layout(&self) -> VaeLayout {
        self.exec.layout
    }

    pub fn tiling(&self) -> Tiling {
        self.tiling
    }

    pub fn set_tiling(&mut self, tiling: Tiling) -> Result<(), ModelError> {
        tiling.validate()?;
        tiling.in_patches(self.config.patch())?;
        self.tiling = tiling;
        Ok(())
    }

    /// Normalised posterior mean of `video` `[B, 3, F, H, W]` in [−1, 1] (any device and float kind), as float32
    /// `[B, z, (F−1)/4 + 1, H/s, W/s]` on the VAE's device (s = 8, 16 for the Wan 2.2 VAE).
    pub fn encode(&self, video: &Tensor) -> Result<Tensor, ModelError> {
        let mu = self.encode_raw(video)?;
        self.normalize(&mu)
    }

    /// The posterior mean μ before normalisation (float32).
    pub fn encode_raw(&self, video: &Tensor) -> Result<Tensor, ModelError> {
        let size = video.size();
        if size.len() != 5 || size[1] != self.config.video_channels() {
            return Err(ModelError::Input(format!(
                "the VAE encodes video shaped [B, {}, F, H, W]; got {size:?}",
                self.config.video_channels()
            )));
        }
        self.encode_source(&VideoSource::Clip(video))
    }

    /// Encodes a video source with tiling when the settings ask for it; returns raw μ in float32.
    pub(crate) fn encode_source(&self, source: &VideoSource) -> Result<Tensor, ModelError> {
        let (batch, frames, height, width) = source.dims()?;
        check_frames(frames)?;
        check_spatial(height, width, self.config.spatial_compression())?;
        let _no_grad = tch::no_grad_guard();
        // The network sees patches: regions and tiles are counted in them.
        let patch = self.config.patch();
        let (height, width, tiled) = (
            height / patch,
            width / patch,
            self.tiling.applies(height, width),
        );
        let whole = Region {
            top: 0,
            left: 0,
            height,
            width,
        };
        if !tiled {
            return self.encoder.encode(source, whole, &self.exec);
        }
        let shape = [
            batch,
            self.config.z_dim,
            VaeConfig::latent_frames(frames),
            height / 8,
            width / 8,
        ];
        let mut mu = Tensor::f_empty(shape, (Kind::Float, self.exec.device))?;
        let grid = TileGrid::for_encode(&self.tiling.in_patches(patch)?);
        grid.run(height, width, &mut mu, |region| {
            self.encoder.encode(source, region, &self.exec)
        })?;
        Ok(mu)
    }

    /// Video `[B, 3, 1 + 4(T−1), s·h, s·w]` in [−1, 1] (float32, on the VAE's device) from normalised latents
    /// `[B, z, T, h, w]` (any device and float kind).
    pub fn decode(&self, latent: &Tensor) -> Result<Tensor, ModelError> {
        let size = latent.size();
        if size.len() != 5 || size[1] != self.config.z_dim {
            return Err(ModelError::Input(format!(
                "the VAE decodes latents shaped [B, {}, T, h, w]; got {size:?}",
                self.config.z_dim
            )));
        }
        let _no_grad = tch::no_grad_guard();
        let z = self.denormalize(latent)?;
        let patch = self.config.patch();
        let compression = self.config.spatial_compression();
        let video = if self
            .tiling
            .applies(compression * size[3], compression * size[4])
        {
            let frames = 1 + 4 * (size[2] - 1);
            let (height, width) = (8 * size[3], 8 * size[4]);
            let shape = [size[0], self.config.out_channels, frames, height, width];
            let mut video = Tensor::f_empty(shape, (Kind::Float, self.exec.device))?;
            let grid = TileGrid::for_decode(&self.tiling.in_patches(patch)?);
            grid.run(size[3], size[4], &mut video, |r| {
                let tile = z
                    .f_narrow(3, r.top, r.height)?
                    .f_narrow(4, r.left, r.width)?;
                self.decoder.decode(&tile, &self.exec)
            })?;
            video
        } else {
            self.decoder.decode(&z, &self.exec)?
        };
        let mut video = if patch > 1 {
            unpatchify(&video, patch)?.f_contiguous()?
        } else {
            video
        };
        Ok(video.f_clamp_(-1.0, 1.0)?)
    }

    /// `(μ − mean) / std` per channel, float32 on the VAE's device.
    pub fn normalize(&self, mu: &Tensor) -> Result<Tensor, ModelError> {
        let mu = mu.f_to_device(self.exec.device)?.f_to_kind(Kind::Float)?;
        Ok(mu.f_sub(&self.latents_mean)?.f_div(&self.latents_std)?)
    }

    /// `z · std + mean` per channel, float32 on the VAE's device.
    pub fn denormalize(&self, latent: &Tensor) -> Result<Tensor, ModelError> {
        let z = latent
            .f_to_device(self.exec.device)?
            .f_to_kind(Kind::Float)?;
        Ok(z.f_mul(&self.latents_std)?.f_add(&self.latents_mean)?)
    }
}

/// The causal VAE encodes 1 + 4n frames: frame 0 alone, then groups of four.
pub(crate) fn check_frames(frames: i64) -> Result<(), ModelError> {
    if !u32::try_from(frames).is_ok_and(wanlora_spec::frames::is_frame_count) {
        return Err(ModelError::Input(format!(
            "the Wan VAE encodes 4n + 1 frames (1, 5, 9, …, 81); got {frames}"
        )));
    }
    Ok(())
}

fn check_spatial(height: i64, width: i64, compression: i64) -> Result<(), ModelError> {
    if height <= 0 || width <= 0 || height % compression != 0 || width % compression != 0 {
        return Err(ModelError::Input(format!(
            "this Wan VAE needs a height and width that are multiples of {compression} pixels (16 for Wan); \
             got {height}×{width}"
        )));
    }
    Ok(())
}
