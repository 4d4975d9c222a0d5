//! The decoder: latents `[B, z, T, h, w]` (de-normalised) → the network's video `[B, out, 1 + 4(T−1), 8h, 8w]`
//! (for the Wan 2.2 VAE still folded into 2×2 patches), one latent frame at a time with the temporal caches
//! carried between frames, as the reference does (latent frame 0 gives one video frame, every later one four).

use super::layers::{
    dims5, CacheSlots, CausalConv3d, Head, MidBlock, ResidualBlock, ShortcutUp, Upsample,
};
use super::layout::Exec;
use super::VaeConfig;
use crate::ModelError;
use tch::{Kind, Tensor};
use wanlora_torch::weights::Loader;

struct Stage {
    resnets: Vec<ResidualBlock>,
    upsample: Option<Upsample>,
    /// The Wan 2.2 VAE's shortcut around an upsampling stage.
    shortcut: Option<ShortcutUp>,
}

pub(crate) struct Decoder {
    post_quant_conv: CausalConv3d,
    conv_in: CausalConv3d,
    mid: MidBlock,
    stages: Vec<Stage>,
    head: Head,
    z_dim: i64,
    out_channels: i64,
}

impl Decoder {
    pub fn load(l: &Loader, cfg: &VaeConfig, exec: &Exec) -> Self {
        let dims = cfg.decoder_dims();
        let z = cfg.z_dim;
        let stages = cfg.dim_mult.len();
        // The decoder mirrors the encoder's temporal downsamplings.
        let temporal_upsample: Vec<bool> = cfg.temperal_downsample.iter().rev().copied().collect();
        let stages = (0..stages)
            .map(|i| {
                // After an upsampling the channels are halved in the Wan 2.1 VAE, kept in the 2.2 VAE.
                let halved = i > 0 && !cfg.is_residual;
                let mut cin = if halved { dims[i] / 2 } else { dims[i] };
                let cout = dims[i + 1];
                let resnets = (0..=cfg.num_res_blocks)
                    .map(|j| {
                        let prefix = format!("decoder.up_blocks.{i}.resnets.{j}");
                        let block = ResidualBlock::load(l, &prefix, cin, cout, exec);
                        cin = cout;
                        block
                    })
                    .collect();
                let up = i + 1 < stages;
                let temporal = up && temporal_upsample[i];
                let upsample = up.then(|| match cfg.is_residual {
                    false => {
                        let prefix = format!("decoder.up_blocks.{i}.upsamplers.0");
                        Upsample::load(l, &prefix, cout, cout / 2, temporal, exec)
                    }
                    true => {
                        let prefix = format!("decoder.up_blocks.{i}.upsampler");
                        Upsample::load(l, &prefix, cout, cout, temporal, exec)
                    }
                });
                let shortcut = (up && cfg.is_residual)
                    .then(|| ShortcutUp::new(cout, if temporal { 2 } else { 1 }, 2));
                Stage {
                    resnets,
                    upsample,
                    shortcut,
                }
            })
            .collect();
        Decoder {
            post_quant_conv: CausalConv3d::load(l, "post_quant_conv", z, z, [1, 1, 1], exec),
            conv_in: CausalConv3d::load(l, "decoder.conv_in", z, dims[0], [3, 3, 3], exec),
            mid: MidBlock::load(l, "decoder.mid_block", dims[0], exec),
            stages,
            head: Head::load(l, "decoder", dims[dims.len() - 1], cfg.out_channels, exec),
            z_dim: z,
            out_channels: cfg.out_channels,
        }
    }

    /// Decodes de-normalised latents, unclamped, into a float32 video on the model's device.
    pub fn decode(&self, z: &Tensor, exec: &Exec) -> Result<Tensor, ModelError> {
        let [b, _, t, h, w] = dims5(z)?;
        let frames = 1 + 4 * (t - 1);
        let video = Tensor::f_empty(
            [b, self.out_channels, frames, 8 * h, 8 * w],
            (Kind::Float, exec.device),
        )?;
        let mut caches = CacheSlots::default();
        for k in 0..t {
            caches.rewind();
            let mut latent = exec.empty([b, self.z_dim, 1, h, w])?;
            latent.f_copy_(&z.f_narrow(2, k, 1)?)?;
            let x = self.post_quant_conv.forward(&latent)?;
            let mut x = self.conv_in.forward_copy(caches.take(), &x, exec)?;
            x = self.mid.forward(x, &mut caches, exec)?;
            for stage in &self.stages {
                let stage_input = stage.shortcut.as_ref().map(|_| x.shallow_clone());
                for block in &stage.resnets {
                    x = block.forward(x, &mut caches, exec)?;
                }
                if let Some(up) = &stage.upsample {
                    x = up.forward(x, &mut caches, exec)?;
                }
                if let (Some(shortcut), Some(input)) = (&stage.shortcut, stage_input) {
                    let _ = x.f_add_(&shortcut.forward(&input, k == 0)?)?;
                }
            }
            let x = self.head.forward(x, &mut caches, exec)?;
            let (first, count) = if k == 0 { (0, 1) } else { (4 * k - 3, 4) };
            video.f_narrow(2, first, count)?.f_copy_(&x)?;
        }
        Ok(video)
    }
}
