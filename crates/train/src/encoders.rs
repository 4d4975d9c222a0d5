//! The model encoders behind the dataset crate's encoder traits: the Wan VAE gives each clip's
//! latent (and, for image-to-video, its first-frame condition), umT5 gives each caption's embedding.

use tch::{Device, Kind, Tensor};
use wanlora_data::cache::{
    EncoderError, LatentEncoder, NamedTensor, NamedTensors, TensorDtype, TextEncoder,
};
use wanlora_data::media::Frames;
use wanlora_models::conditioning::first_frame_condition;
use wanlora_models::tokenizer::Tokenizer;
use wanlora_models::umt5::Umt5Encoder;
use wanlora_models::vae::Vae;

/// Names of the tensors a latent cache entry holds.
pub const LATENT: &str = "latent";
pub const CONDITION: &str = "condition";
/// Name of the tensor a text cache entry holds: the real tokens' embeddings `[L, D]`.
pub const CONTEXT: &str = "context";

/// A tensor into the dataset crate's byte form (f32 or bf16, on the CPU).
pub fn to_named(name: &str, t: &Tensor) -> Result<NamedTensor, EncoderError> {
    let t = t.detach().to_device(Device::Cpu).contiguous();
    let (dtype, t) = match t.kind() {
        Kind::BFloat16 => (TensorDtype::BF16, t),
        Kind::Half => (TensorDtype::F16, t),
        _ => (TensorDtype::F32, t.to_kind(Kind::Float)),
    };
    let data = wanlora_torch::weights::tensor_bytes(&t)?;
    let shape = t.size().iter().map(|&d| d as usize).collect();
    Ok(NamedTensor::new(name, dtype, shape, data)?)
}

/// A named tensor back into a libtorch tensor of `kind` on `device`.
pub fn from_named(t: &NamedTensor, kind: Kind, device: Device) -> Result<Tensor, tch::TchError> {
    let shape: Vec<i64> = t.shape.iter().map(|&d| d as i64).collect();
    let stored = match t.dtype {
        TensorDtype::F32 => Kind::Float,
        TensorDtype::BF16 => Kind::BFloat16,
        TensorDtype::F16 => Kind::Half,
    };
    Tensor::f_from_data_size(&t.data, &shape, stored)?
        .f_to_device(device)?
        .f_to_kind(kind)
}

/// Frames (F×H×W×3 bytes) as the VAE's input `[1, 3, F, H, W]` in [−1, 1].
pub fn frames_to_video(frames: &Frames, device: Device) -> Tensor {
    let values = frames.to_vae_input();
    Tensor::from_slice(&values)
        .view([
            1,
            3,
            frames.frames as i64,
            frames.height as i64,
            frames.width as i64,
        ])
        .to_device(device)
}

/// The VAE as the cache's latent encoder: `latent` `[16, T, h, w]` and, for image-to-video,
/// `condition` `[20, T, h, w]`, both normalised, stored in fp32.
pub struct VaeLatentEncoder<'a> {
    pub vae: &'a Vae,
    /// Identifies the VAE.
    pub fingerprint: String,
    /// Whether to store the I2V first-frame condition too (the arch's `first_frame_condition`).
    pub first_frame_condition: bool,
}

impl LatentEncoder for VaeLatentEncoder<'_> {
    fn fingerprint(&self) -> String {
        // Text-to-video entries hold no condition: an image-to-video job must not take them.
        if self.first_frame_condition {
            self.fingerprint.clone()
        } else {
            format!("{} latent-only", self.fingerprint)
        }
    }

    fn encode(&mut self, frames: &Frames) -> Result<NamedTensors, EncoderError> {
        let tensors = tch::no_grad(|| -> Result<_, EncoderError> {
            let video = frames_to_video(frames, self.vae.device());
            let latent = self.vae.encode(&video)?;
            let mut tensors = vec![to_named(LATENT, &latent.squeeze_dim(0))?];
            if self.first_frame_condition {
                let first = video.select(2, 0);
                let condition = first_frame_condition(self.vae, &first, frames.frames as i64)?;
                tensors.push(to_named(CONDITION, &condition.squeeze_dim(0))?);
            }
            Ok(tensors)
        })?;
        Ok(NamedTensors::new(tensors))
    }
}

/// umT5 as the cache's text encoder: each caption's real-token embeddings `[L, D]` (the zeros
/// after them are restored when a batch is built), stored in bf16 to halve the cache.
pub struct Umt5TextEncoder<'a> {
    pub encoder: &'a Umt5Encoder,
    pub tokenizer: &'a Tokenizer,
    pub fingerprint: String,
}

impl TextEncoder for Umt5TextEncoder<'_> {
    fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }

    fn encode(&mut self, captions: &[String]) -> Result<Vec<NamedTensors>, EncoderError> {
        let refs: Vec<&str> = captions.iter().map(String::as_str).collect();
        let (ids, mask) = self.tokenizer.encode_batch(&refs)?;
        let device = self.encoder.device();
        let context = tch::no_grad(|| {
            self.encoder
                .encode(&ids.to_device(device), &mask.to_device(device))
        })?;
        let lens: Vec<i64> = Vec::<i64>::try_from(mask.sum_dim_intlist(1, false, Kind::Int64))?;
        lens.iter()
            .enumerate()
            .map(|(i, &len)| {
                let real = context
                    .get(i as i64)
                    .narrow(0, 0, len)
                    .to_kind(Kind::BFloat16);
                Ok(NamedTensors::new(vec![to_named(CONTEXT, &real)?]))
            })
            .collect()
    }

    fn batch_size(&self) -> usize {
        8
    }
}

/// `[L, D]` real-token embeddings padded with zeros to `[text_len, D]`.
pub fn pad_context(real: &Tensor, text_len: i64) -> Tensor {
    let len = real.size()[0];
    if len >= text_len {
        return real.narrow(0, 0, text_len);
    }
    real.constant_pad_nd([0, 0, 0, text_len - len])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_tensors_round_trip_f32_and_bf16() {
        let t = Tensor::from_slice(&[1.5f32, -2.0, 0.25, 8.0]).view([2, 2]);
        let back = from_named(&to_named("x", &t).unwrap(), Kind::Float, Device::Cpu).unwrap();
        assert!(back.equal(&t));
        let b = to_named("y", &t.to_kind(Kind::BFloat16)).unwrap();
        assert_eq!(b.dtype, TensorDtype::BF16);
        assert!(from_named(&b, Kind::Float, Device::Cpu).unwrap().equal(&t));
    }

    #[test]
    fn context_is_padded_with_zeros() {
        let real = Tensor::ones([3, 4], (Kind::Float, Device::Cpu));
        let p = pad_context(&real, 6);
        assert_eq!(p.size(), vec![6, 4]);
        assert_eq!(p.sum(Kind::Float).double_value(&[]), 12.0);
    }
}
