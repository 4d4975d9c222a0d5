//! The I2V first-frame condition of Wan 2.2 A14B (wan-reference.md §4), used by training and sampling:
//!
//! ```text
//! video = [image, 0, 0, …, 0]             F = 4n + 1 frames in [−1, 1] (zeros are mid-grey)
//! y_lat = (VAE.encode(video).μ − mean) / std    [z, T, h, w],  T = (F − 1)/4 + 1
//! mask  = 1 on latent frame 0, 0 elsewhere, in all 4 channels (the 4 pixel frames packed in a latent frame)
//! y     = cat(mask, y_lat)                  [4 + z, T, h, w]
//! ```
//!
//! This is diffusers' `WanImageToVideoPipeline.prepare_latents` (μ via `argmax`) and ComfyUI's
//! `WanImageToVideo`. The zero frames still pass through the causal encoder, because the latents after frame 0
//! depend on the image through the temporal caches. What can be left out is what the image no longer reaches:
//! every encoder stage's output becomes the same frame over and over once its temporal reach has passed frame 0
//! (at 81 frames: after 13 frames at full resolution, 21 at half resolution, 41 at quarter resolution). The
//! encoder computes each such frame once and repeats it (see `vae::encoder`), and the zero frames themselves are
//! never materialised. The result is the same as encoding the full video.

use crate::vae::{check_frames, Vae, VideoSource};
use crate::ModelError;
use tch::{Kind, Tensor};

/// Number of mask channels: the pixel frames packed into one latent frame.
pub const MASK_CHANNELS: i64 = 4;

/// The condition `y = cat(mask, latent)` `[B, 4 + z, (F−1)/4 + 1, H/8, W/8]` (float32, on the VAE's device) for
/// start images `image` `[B, 3, H, W]` in [−1, 1] and a clip of `num_frames = 4n + 1` frames.
pub fn first_frame_condition(
    vae: &Vae,
    image: &Tensor,
    num_frames: i64,
) -> Result<Tensor, ModelError> {
    let size = image.size();
    if size.len() != 4 || size[1] != vae.config().in_channels {
        return Err(ModelError::Input(format!(
            "the start image must be [B, {}, H, W] in [-1, 1]; got {size:?}",
            vae.config().in_channels
        )));
    }
    check_frames(num_frames)?;
    let mu = vae.encode_source(&VideoSource::FirstFrame {
        image,
        frames: num_frames,
    })?;
    let latent = vae.normalize(&mu)?;
    let [b, _, t, h, w] = <[i64; 5]>::try_from(latent.size().as_slice())
        .map_err(|_| ModelError::Input("the VAE returned a latent that is not 5-D".into()))?;
    let mask = Tensor::f_zeros([b, MASK_CHANNELS, t, h, w], (Kind::Float, vae.device()))?;
    let _ = mask.f_narrow(2, 0, 1)?.f_fill_(1.0)?;
    Ok(Tensor::f_cat(&[mask, latent], 1)?)
}
