//! The Wan VAE's configuration: from a diffusers `vae/config.json`, inferred from the weights' shapes, or the
//! defaults of the real model (wan-reference.md §6). One configuration covers both VAEs: the Wan 2.1 VAE (16
//! latent channels, 8× in space) and the Wan 2.2 VAE of TI2V-5B (`is_residual`, a 2×2 patchify around the
//! network, 48 latent channels, 16× in space).

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

/// Per-channel statistics of the Wan 2.2 VAE's latents (Wan2.2 `vae2_2.py`, diffusers' TI2V-5B `vae/config.json`).
pub const WAN22_LATENTS_MEAN: [f64; 48] = [
    -0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557, -0.1382, 0.0542, 0.2813,
    0.0891, 0.1570, -0.0098, 0.0375, -0.1825, -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108,
    -0.2158, 0.2502, -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230, -0.0313,
    -0.1649, 0.0117, 0.0723, -0.2839, -0.2083, -0.0520, 0.3748, 0.0152, 0.1957, 0.1433, -0.2944,
    0.3573, -0.0548, -0.1681, -0.0667,
];
pub const WAN22_LATENTS_STD: [f64; 48] = [
    0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013, 0.8158, 1.0344, 0.5894, 1.0901,
    0.6885, 0.6165, 0.8454, 0.4978, 0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
    0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093, 0.5709, 0.6065, 0.6415, 0.4944,
    0.5726, 1.2042, 0.5458, 1.6887, 0.3971, 1.0600, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744,
];

/// The fields of diffusers' `AutoencoderKLWan` config that shape a Wan VAE. Unknown keys are ignored.
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
    /// True for the Wan 2.2 VAE: every stage adds a parameter-free shortcut (channel-group averages of the
    /// space/time-folded input going down, channel repeats unfolded into space/time going up), and the decoder's
    /// upsamplers keep their channels.
    pub is_residual: bool,
    /// Channels entering the encoder network: 3, or 3·p² after the patchify (12 for the Wan 2.2 VAE).
    pub in_channels: i64,
    /// Channels leaving the decoder network, before the unpatchify.
    pub out_channels: i64,
    /// Side of the pixel patches folded into channels around the network (2 for the Wan 2.2 VAE).
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
        let is_residual = shape("encoder.down_blocks.0.resnets.0.conv1.weight").is_some();
        let stages = match is_residual {
            true => Stages::of_residual(source, base_dim),
            false => Stages::of_flat(source, base_dim)?,
        };
        // 3·p² input channels: p = 2 for the Wan 2.2 VAE's 12.
        let patch = match is_residual {
            true => (1..=4).find(|p| 3 * p * p == in_channels)?,
            false => 1,
        };
        let (latents_mean, latents_std) = statistics_for(z_dim);
        Some(VaeConfig {
            base_dim,
            decoder_base_dim: (dec_out[1] != base_dim).then_some(dec_out[1]),
            z_dim,
            dim_mult: stages.dim_mult,
            num_res_blocks: stages.num_res_blocks,
            attn_scales: Vec::new(),
            temperal_downsample: stages.temperal_downsample,
            latents_mean,
            latents_std,
            is_residual,
            in_channels,
            out_channels: dec_out[0],
            patch_size: (patch > 1).then_some(patch),
        })
    }

    /// The Wan 2.2 VAE of TI2V-5B with its real sizes (diffusers' TI2V-5B `vae/config.json`).
    pub fn wan22() -> Self {
        VaeConfig {
            base_dim: 160,
            decoder_base_dim: Some(256),
            z_dim: 48,
            latents_mean: WAN22_LATENTS_MEAN.to_vec(),
            latents_std: WAN22_LATENTS_STD.to_vec(),
            is_residual: true,
            in_channels: 12,
            out_channels: 12,
            patch_size: Some(2),
            ..VaeConfig::default()
        }
    }

    /// Side of the pixel patches folded into channels (1: none).
    pub fn patch(&self) -> i64 {
        self.patch_size.unwrap_or(1).max(1)
    }

    /// Colour channels of the video: `in_channels / p²`.
    pub fn video_channels(&self) -> i64 {
        self.in_channels / (self.patch() * self.patch())
    }

    /// Pixels per latent position along H and W: 8 (Wan 2.1 VAE) or 16 (Wan 2.2 VAE).
    pub fn spatial_compression(&self) -> i64 {
        8 * self.patch()
    }

    /// Why this configuration is not a Wan VAE that this crate runs, if it is not.
    pub fn validate(&self) -> Result<(), String> {
        let patch = self.patch();
        if self.in_channels % (patch * patch) != 0 || self.out_channels % (patch * patch) != 0 {
            return Err(format!(
                "with patch_size {patch}, in_channels and out_channels must be multiples of {} (found {} and {})",
                patch * patch,
                self.in_channels,
                self.out_channels
            ));
        }
        if patch > 1 && !self.is_residual {
            return Err(
                "patch_size > 1 comes with is_residual (the Wan 2.2 VAE); this configuration has neither the \
                 Wan 2.1 nor the Wan 2.2 layout"
                    .into(),
            );
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
                "the Wan VAE compresses time 4× and space 8× in its network (4 stages, two temporal downsamplings); \
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

    /// Channels of each decoder stage: `dec_base · [dim_mult.last] ++ reversed(dim_mult)`. (In the Wan 2.1 VAE an
    /// upsampler halves its channels, so a later stage takes half of its entry here.)
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

/// The encoder's stages as the weights' shapes give them.
struct Stages {
    dim_mult: Vec<i64>,
    temperal_downsample: Vec<bool>,
    num_res_blocks: i64,
}

impl Stages {
    /// The Wan 2.1 layout: `encoder.down_blocks` is one flat list of residual blocks, each stage but the last
    /// followed by a resampler.
    fn of_flat(source: &dyn WeightSource, base_dim: i64) -> Option<Stages> {
        let shape = |n: &str| source.shape_of(n);
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
            dim_mult.push(out_channels? / base_dim);
            num_res_blocks.get_or_insert(in_stage);
            if shape(&format!("encoder.down_blocks.{index}.resample.1.weight")).is_none() {
                break;
            }
            temperal_downsample
                .push(shape(&format!("encoder.down_blocks.{index}.time_conv.weight")).is_some());
            index += 1;
        }
        Some(Stages {
            dim_mult,
            temperal_downsample,
            num_res_blocks: num_res_blocks?,
        })
    }

    /// The Wan 2.2 layout: `encoder.down_blocks.{i}` are stages (`resnets.{j}`, then a `downsampler` but in the
    /// last).
    fn of_residual(source: &dyn WeightSource, base_dim: i64) -> Stages {
        let shape = |n: &str| source.shape_of(n);
        let (mut dim_mult, mut temperal_downsample) = (Vec::new(), Vec::new());
        let mut stage = 0;
        while let Some(s) = shape(&format!(
            "encoder.down_blocks.{stage}.resnets.0.conv1.weight"
        )) {
            dim_mult.push(s[0] / base_dim);
            let down = format!("encoder.down_blocks.{stage}.downsampler");
            if shape(&format!("{down}.resample.1.weight")).is_some() {
                temperal_downsample.push(shape(&format!("{down}.time_conv.weight")).is_some());
            }
            stage += 1;
        }
        let num_res_blocks = (0..)
            .find(|j| shape(&format!("encoder.down_blocks.0.resnets.{j}.conv1.weight")).is_none())
            .unwrap_or(0);
        Stages {
            dim_mult,
            temperal_downsample,
            num_res_blocks,
        }
    }
}

/// The latent statistics of the real VAE with `z_dim` channels (16: Wan 2.1, 48: Wan 2.2), neutral ones for other
/// sizes (a file holds none).
fn statistics_for(z_dim: i64) -> (Vec<f64>, Vec<f64>) {
    match z_dim {
        16 => (WAN21_LATENTS_MEAN.to_vec(), WAN21_LATENTS_STD.to_vec()),
        48 => (WAN22_LATENTS_MEAN.to_vec(), WAN22_LATENTS_STD.to_vec()),
        _ => (vec![0.0; z_dim as usize], vec![1.0; z_dim as usize]),
    }
}
