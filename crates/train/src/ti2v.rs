//! TI2V-5B's image-to-video training input, as AI Toolkit's `wan22_5b` builds it (`get_noise_prediction` with
//! `add_first_frame_conditioning_v22`, and `scale_loss`) and as diffusers' `expand_timesteps` samples:
//!
//! ```text
//! input[:, :, 0] = x0[:, :, 0]          the start frame's clean latent (the causal VAE encodes frame 0 alone, so
//!                                       the clip's first latent frame is the start frame's own encode)
//! t[b, f]        = 0 for f = 0, t_b else   one timestep per latent frame
//! loss           = mean(ℓ · m) / mean(m)    m = 0 on latent frame 0, 1 elsewhere: the mean over the noisy frames
//! ```
//!
//! A text-to-video clip keeps x_t everywhere, one timestep per sample and every frame in the loss.

use tch::{Kind, TchError, Tensor};

/// What the model sees and what the loss counts for one batch.
pub struct Ti2vInput {
    /// `[B, z, F, h, w]`: x_t, with latent frame 0 clean for image-to-video.
    pub input: Tensor,
    /// `[B]` (text-to-video) or `[B, F]` with frame 0 at 0 (image-to-video).
    pub timestep: Tensor,
    /// `[1, 1, F, 1, 1]` float32: 0 on the clean start frame; `None` for text-to-video.
    pub loss_mask: Option<Tensor>,
}

/// The model input of a batch with noisy latents `xt`, clean latents `x0` (both `[B, z, F, h, w]`) and
/// timesteps `t` `[B]` (0…1000); `image_to_video` conditions on the start frame.
pub fn training_input(
    xt: &Tensor,
    x0: &Tensor,
    t: &Tensor,
    image_to_video: bool,
) -> Result<Ti2vInput, TchError> {
    if !image_to_video {
        return Ok(Ti2vInput {
            input: xt.shallow_clone(),
            timestep: t.shallow_clone(),
            loss_mask: None,
        });
    }
    let frames = xt.size()[2];
    let mut input = xt.f_empty_like()?;
    input.f_copy_(xt)?;
    input.f_narrow(2, 0, 1)?.f_copy_(&x0.f_narrow(2, 0, 1)?)?;
    let timestep = t
        .f_to_kind(Kind::Float)?
        .f_unsqueeze(1)?
        .f_repeat([1, frames])?;
    let _ = timestep.f_narrow(1, 0, 1)?.f_zero_()?;
    let mask = Tensor::f_ones([1, 1, frames, 1, 1], (Kind::Float, xt.device()))?;
    let _ = mask.f_narrow(2, 0, 1)?.f_zero_()?;
    Ok(Ti2vInput {
        input,
        timestep,
        loss_mask: Some(mask),
    })
}

/// AI Toolkit's masked loss: the element-wise loss `[B, C, F, h, w]` times the mask, divided by the mask's mean,
/// so that the mean over all elements is the mean over the noisy frames (a loss as large as an unmasked one).
pub fn masked(elementwise: &Tensor, mask: Option<&Tensor>) -> Result<Tensor, TchError> {
    match mask {
        None => Ok(elementwise.shallow_clone()),
        Some(m) => elementwise
            .f_mul(m)?
            .f_div(&m.f_mean(Kind::Float)?.f_clamp_min(1e-8)?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn close(a: &Tensor, b: &Tensor) -> bool {
        a.allclose(b, 1e-6, 1e-6, false)
    }

    #[test]
    fn image_to_video_cleans_frame_0_and_leaves_it_out_of_the_loss() {
        let opts = (Kind::Float, Device::Cpu);
        let (x0, noise) = (
            Tensor::randn([2, 3, 4, 2, 2], opts),
            Tensor::randn([2, 3, 4, 2, 2], opts),
        );
        let t = Tensor::from_slice(&[900.0f32, 250.0]);
        let xt = crate::loss::noisy(&x0, &noise, &(&t / 1000.0));
        let out = training_input(&xt, &x0, &t, true).unwrap();
        assert!(close(&out.input.narrow(2, 0, 1), &x0.narrow(2, 0, 1)));
        assert!(close(&out.input.narrow(2, 1, 3), &xt.narrow(2, 1, 3)));
        let expected = Tensor::from_slice(&[0.0f32, 900.0, 900.0, 900.0, 0.0, 250.0, 250.0, 250.0])
            .view([2, 4]);
        assert!(close(&out.timestep, &expected));
        // The masked mean is the mean over latent frames 1…3.
        let elementwise = Tensor::rand([2, 3, 4, 2, 2], opts);
        let loss = masked(&elementwise, out.loss_mask.as_ref())
            .unwrap()
            .mean(Kind::Float);
        let noisy_frames = elementwise.narrow(2, 1, 3).mean(Kind::Float);
        assert!(close(&loss, &noisy_frames), "{loss:?} vs {noisy_frames:?}");

        let t2v = training_input(&xt, &x0, &t, false).unwrap();
        assert!(close(&t2v.input, &xt) && close(&t2v.timestep, &t) && t2v.loss_mask.is_none());
        assert!(close(&masked(&elementwise, None).unwrap(), &elementwise));
    }
}
