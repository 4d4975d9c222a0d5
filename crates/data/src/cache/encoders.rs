//! The encoder interfaces. The real encoders (Wan VAE, umT5) live in the model crate, which
//! links libtorch; this crate only moves their outputs.

use super::NamedTensors;
use crate::media::Frames;

/// Any error an encoder reports (e.g. an `anyhow::Error` or a libtorch error, boxed).
pub type EncoderError = Box<dyn std::error::Error + Send + Sync>;

/// Encodes an item's frames: the VAE latent of the sampled frames and the I2V first-frame
/// condition, as named tensors.
pub trait LatentEncoder {
    /// Identifies the encoder and everything that changes its output (model weights, dtype,
    /// normalisation); part of every cache key.
    fn fingerprint(&self) -> String;
    fn encode(&mut self, frames: &Frames) -> Result<NamedTensors, EncoderError>;
}

/// Encodes captions into text embeddings, one set of named tensors per caption.
pub trait TextEncoder {
    /// Identifies the encoder and its settings (weights, dtype, max length); part of every key.
    fn fingerprint(&self) -> String;
    fn encode(&mut self, captions: &[String]) -> Result<Vec<NamedTensors>, EncoderError>;
    /// How many captions to pass per call.
    fn batch_size(&self) -> usize {
        8
    }
}
