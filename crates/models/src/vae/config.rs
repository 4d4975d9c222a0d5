//! The Wan 2.1 VAE's configuration: from a diffusers `vae/config.json`, inferred from the weights' shapes, or the
//! defaults of the real model (wan-reference.md §6).

use crate::ModelError;
use serde::Deserialize;
use std::path::Path;
use wanlora_torch::weights::WeightSource;

/// Per-channel statistics of the real model's latents (`z_norm = (μ − mean) / std`).
pub const WAN21_LATENTS_MEAN: [f64; 16] = [
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508, 0.4134, -0.0715, 0.5517,
    -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
];
pub const WAN21_LATENTS_STD: [f64; 16] = [
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743, 3.2687, 2.1526, 2.8652, 1.5579,
    1.6382, 1.1253, 2.8251, 1.9160,
];

/// The fields of diffusers' `AutoencoderKLWan` config that shape the Wan 2.1 VAE. Unknown keys are ignored.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct VaeConfig {
    /// Channels of the encoder's first stage (96).
    pub base_dim: i64,
    /// Channels of the decoder's last stage; `None` means `base_dim`.
    pub decoder_base_dim: Option<i64>,
    /// Latent channels (16).
    pub z_dim: i64,
    /// Channel multiplier of each stage ([1, 2, 4, 4]).
    pub dim_mult: Vec<i64>,
    /// Residual blocks per encoder stage (the decoder has one more).
    pub num_res_blocks: i64,
    /// Scales with attention inside the stages; the Wan 2.1 VAE has none.
    pub attn_scales: Vec<f64>,
    /// Which encoder downsamplings also halve time ([false, true, true]); the decoder mirrors it.
    pub temperal_downsample: Vec<bool>,
    pub latents_mean: Vec<f64>,
    pub latents_std: Vec<f64>,
    /// True for the Wan 2.2 VAE (residual down/up blocks), which this crate does not implement.
    pub is_residual: bool,
    pub in_channels: i64,
    pub out_channels: i64,
    /// Pixel patchification (Wan 2.2 VAE only).
    pub patch_size: Option<i64>,
}

impl Default for VaeConfig {
    fn default() -> Self {
        VaeConfig {
            base_dim: 96,
            decoder_base_dim: None,
            z_dim: 16,
            dim_mult: vec![1, 2, 4, 4],
            num_res_blocks: 2,
            attn_scales: Vec::new(),
            temperal_downsample: vec![false, true, true],
            latents_mean: WAN21_LATENTS_MEAN.to_vec(),
            latents_std: WAN21_LATENTS_STD.to_vec(),
            is_residual: false,
            in_channels: 3,
            out_channels: 3,
            patch_size: None,
        }
    }
}

impl VaeConfig {
    /// Reads a diffusers `config.json`; missing keys take the real model's values.
    pub fn from_json_file(path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::Config {
            path: path.to_path_buf(),
            reason: format!("cannot read the VAE config: {e}"),
        })?;
        let cfg: VaeConfig = serde_json::from_str(&text).map_err(|e| ModelError::Config {
            path: path.to_path_buf(),
            reason: format!("not a valid diffusers VAE config: {e}"),
        })?;
        cfg.validate().map_err(|reason| ModelError::Config {
            path: path.to_path_buf(),
            reason,
        })?;
        Ok(cfg)
    }

    /// Infers the shape-bearing fields from tensors named as diffusers names them (latent statistics keep the
    /// real model's values, or neutral ones when z_dim differs). `None` when the source does not know shapes
    /// or lacks the tensors looked at.
    pub fn infer(source: &dyn WeightSource) -> Option<Self> {
        let shape = |n: &str| source.shape_of(n);
        let conv_in = shape("encoder.conv_in.weight")?; // [base, in, 3, 3, 3]
        let post_quant = shape("post_quant_conv.weight")?; // [z, z, 1, 1, 1]
        let dec_out = shape("decoder.conv_out.weight")?; // [out, dec_base, 3, 3, 3]
        let (base_dim, in_channels) = (conv_in[0], conv_in[1]);
        let z_dim = post_quant[0];
        // The encoder's down_blocks are stages of residual blocks, each but the last followed by a resampler.
        let mut index = 0;
        let (mut dim_mult, mut temperal_downsample) = (Vec::new(), Vec::new());
        let mut num_res_blocks = None;
        loop {
            let mut in_stage = 0;
            let mut out_channels = None;
            while let Some(s) = shape(&format!("encoder.down_blocks.{index}.conv1.weight")) {
                out_channels = Some(s[0]);
                in_stage += 1;
                index += 1;
            }
            let out_channels = out_channels?;
            dim_mult.push(out_channels / base_dim);
            num_res_blocks.get_or_insert(in_stage);
            if shape(&format!("encoder.down_blocks.{index}.resample.1.weight")).is_some() {
                let time =
                    shape(&format!("encoder.down_blocks.{index}.time_conv.weight")).is_some();
                temperal_downsample.push(time);
                index += 1;
            } else {
                break;
            }
        }
        let defaults = VaeConfig::default();
        let (latents_mean, latents_std) = if z_dim == defaults.z_dim {
            (defaults.latents_mean, defaults.latents_std)
        } else {
            (vec![0.0; z_dim as usize], vec![1.0; z_dim as usize])
        };
        Some(VaeConfig {
            base_dim,
            decoder_base_dim: (dec_out[1] != base_dim).then_some(dec_out[1]),
            z_dim,
            dim_mult,
            num_res_blocks: num_res_blocks?,
            attn_scales: Vec::new(),
            temperal_downsample,
            latents_mean,
            latents_std,
            is_residual: false,
            in_channels,
            out_channels: dec_out[0],
            patch_size: None,
        })
    }

    /// Why this configuration is not a Wan 2.1 VAE that this crate runs, if it is not.
    pub fn validate(&self) -> Result<(), String> {
        if self.is_residual || self.patch_size.is_some_and(|p| p > 1) || self.z_dim == 48 {
            return Err("this is the Wan 2.2 VAE (z_dim 48, residual blocks, patch size 2), used by the \
                        TI2V-5B model; Wan 2.2 I2V A14B uses the Wan 2.1 VAE (z_dim 16): point to that one"
                .into());
        }
        if !self.attn_scales.is_empty() {
            return Err(
                "attn_scales must be empty: the Wan 2.1 VAE has attention only in the middle block"
                    .into(),
            );
        }
        let stages = self.dim_mult.len();
        if stages == 0 || self.temperal_downsample.len() + 1 != stages {
            return Err(format!(
                "dim_mult has {stages} stages, so temperal_downsample needs {} entries, not {}",
                stages.saturating_sub(1),
                self.temperal_downsample.len()
            ));
        }
        if self.temperal_downsample.iter().filter(|&&t| t).count() != 2
            || (1u32 << (stages - 1)) != 8
        {
            return Err(format!(
                "the Wan VAE compresses time 4× and space 8× (4 stages, two temporal downsamplings); \
                 dim_mult {:?} / temperal_downsample {:?} do not",
                self.dim_mult, self.temperal_downsample
            ));
        }
        let z = self.z_dim as usize;
        if self.latents_mean.len() != z || self.latents_std.len() != z {
            return Err(format!(
                "latents_mean and latents_std need z_dim = {z} entries (found {} and {})",
                self.latents_mean.len(),
                self.latents_std.len()
            ));
        }
        if self.latents_std.iter().any(|&s| s <= 0.0) {
            return Err("latents_std must be positive".into());
        }
        if self.base_dim <= 0 || self.num_res_blocks <= 0 || self.dim_mult.iter().any(|&m| m <= 0) {
            return Err("base_dim, num_res_blocks and dim_mult must be positive".into());
        }
        Ok(())
    }

    pub fn decoder_base_dim(&self) -> i64 {
        self.decoder_base_dim.unwrap_or(self.base_dim)
    }

    /// Channels of each encoder stage: `base · [1] ++ dim_mult`.
    pub(crate) fn encoder_dims(&self) -> Vec<i64> {
        std::iter::once(1)
            .chain(self.dim_mult.iter().copied())
            .map(|m| self.base_dim * m)
            .collect()
    }

    /// Channels of each decoder stage: `dec_base · [dim_mult.last] ++ reversed(dim_mult)`.
    pub(crate) fn decoder_dims(&self) -> Vec<i64> {
        let last = *self.dim_mult.last().unwrap_or(&1);
        std::iter::once(last)
            .chain(self.dim_mult.iter().rev().copied())
            .map(|m| self.decoder_base_dim() * m)
            .collect()
    }

    /// Latent frames for `frames` pixel frames: `1 + (F − 1)/4`.
    pub fn latent_frames(frames: i64) -> i64 {
        1 + (frames - 1) / 4
    }
}
