//! The decoder: latents `[B, z, T, h, w]` (de-normalised) → video `[B, 3, 1 + 4(T−1), 8h, 8w]`, one latent frame
//! at a time with the temporal caches carried between frames, as the reference does (latent frame 0 gives one
//! video frame, every later one four).

use super::layers::{dims5, CacheSlots, CausalConv3d, Head, MidBlock, ResidualBlock, Upsample};
use super::layout::Exec;
use super::VaeConfig;
use crate::ModelError;
use tch::{Kind, Tensor};
use wanlora_torch::weights::Loader;

struct Stage {
    resnets: Vec<ResidualBlock>,
    upsample: Option<Upsample>,
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
                // After an upsampling the channels are halved (Wan 2.1 VAE).
                let mut cin = if i > 0 { dims[i] / 2 } else { dims[i] };
                let cout = dims[i + 1];
                let resnets = (0..=cfg.num_res_blocks)
                    .map(|j| {
                        let prefix = format!("decoder.up_blocks.{i}.resnets.{j}");
                        let block = ResidualBlock::load(l, &prefix, cin, cout, exec);
                        cin = cout;
                        block
                    })
                    .collect();
                let upsample = (i + 1 < stages).then(|| {
                    let prefix = format!("decoder.up_blocks.{i}.upsamplers.0");
                    Upsample::load(l, &prefix, cout, temporal_upsample[i], exec)
                });
                Stage { resnets, upsample }
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
                for block in &stage.resnets {
                    x = block.forward(x, &mut caches, exec)?;
                }
                if let Some(up) = &stage.upsample {
                    x = up.forward(x, &mut caches, exec)?;
                }
            }
            let x = self.head.forward(x, &mut caches, exec)?;
            let (first, count) = if k == 0 { (0, 1) } else { (4 * k - 3, 4) };
            video.f_narrow(2, first, count)?.f_copy_(&x)?;
        }
        Ok(video)
    }
}
