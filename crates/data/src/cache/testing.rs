//! Small deterministic encoders that stand in for the real ones in tests and demos without a
//! model: their outputs are simple functions of the input, so tests can check what was encoded.

use super::{EncoderError, LatentEncoder, NamedTensor, NamedTensors, TextEncoder};
use crate::media::Frames;

/// Average-pools each frame over `factor × factor` blocks: `latent` is `[3, F, H/f, W/f]` f32 of
/// the pooled pixels in [−1, 1]; `first_frame` is the pooled first frame, `[3, 1, H/f, W/f]`.
#[derive(Debug, Clone)]
pub struct PoolingLatentEncoder {
    pub factor: usize,
    /// Number of `encode` calls so far.
    pub calls: usize,
    /// Fail (as a crashing model would) on this call number (1-based), if set.
    pub fail_on_call: Option<usize>,
}

impl PoolingLatentEncoder {
    pub fn new(factor: usize) -> Self {
        Self {
            factor: factor.max(1),
            calls: 0,
            fail_on_call: None,
        }
    }
}

impl LatentEncoder for PoolingLatentEncoder {
    fn fingerprint(&self) -> String {
        format!("test-pooling-{}", self.factor)
    }

    fn encode(&mut self, frames: &Frames) -> Result<NamedTensors, EncoderError> {
        self.calls += 1;
        if self.fail_on_call == Some(self.calls) {
            return Err(format!("simulated encoder failure on call {}", self.calls).into());
        }
        let f = self.factor;
        let (h, w) = (frames.height / f, frames.width / f);
        let mut latent = vec![0f32; 3 * frames.frames * h * w];
        let plane = frames.frames * h * w;
        for t in 0..frames.frames {
            for y in 0..h {
                for x in 0..w {
                    let mut sum = [0u32; 3];
                    for dy in 0..f {
                        for dx in 0..f {
                            let px = frames.pixel(t, y * f + dy, x * f + dx);
                            for c in 0..3 {
                                sum[c] += px[c] as u32;
                            }
                        }
                    }
                    for c in 0..3 {
                        let mean = sum[c] as f32 / (f * f) as f32;
                        latent[c * plane + (t * h + y) * w + x] = mean / 127.5 - 1.0;
                    }
                }
            }
        }
        let mut first = Vec::with_capacity(3 * h * w);
        for c in 0..3 {
            first.extend_from_slice(&latent[c * plane..c * plane + h * w]);
        }
        Ok(NamedTensors::new(vec![
            NamedTensor::from_f32("latent", vec![3, frames.frames, h, w], &latent)?,
            NamedTensor::from_f32("first_frame", vec![3, 1, h, w], &first)?,
        ]))
    }
}

/// Embeds a caption as `dim` f32 values derived from its bytes (a byte histogram folded into
/// `dim` bins, scaled by the length), as tensor `embedding` of shape `[dim]`.
#[derive(Debug, Clone)]
pub struct HashingTextEncoder {
    pub dim: usize,
    /// Every caption passed to `encode`, in order.
    pub seen: Vec<String>,
}

impl HashingTextEncoder {
    pub fn new(dim: usize) -> Self {
        Self {
            dim: dim.max(1),
            seen: Vec::new(),
        }
    }

    /// The embedding this encoder gives `text`.
    pub fn embed(&self, text: &str) -> Vec<f32> {
        let mut out = vec![0f32; self.dim];
        for (i, byte) in text.bytes().enumerate() {
            out[(byte as usize + i) % self.dim] += 1.0;
        }
        let scale = 1.0 / (text.len() as f32 + 1.0);
        out.iter_mut().for_each(|v| *v *= scale);
        out
    }
}

impl TextEncoder for HashingTextEncoder {
    fn fingerprint(&self) -> String {
        format!("test-hashing-{}", self.dim)
    }

    fn encode(&mut self, captions: &[String]) -> Result<Vec<NamedTensors>, EncoderError> {
        self.seen.extend(captions.iter().cloned());
        captions
            .iter()
            .map(|c| {
                Ok(NamedTensors::new(vec![NamedTensor::from_f32(
                    "embedding",
                    vec![self.dim],
                    &self.embed(c),
                )?]))
            })
            .collect()
    }
}
