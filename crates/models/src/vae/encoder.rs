//! The encoder: video `[B, 3, F, H, W]` → posterior mean μ `[B, z, 1 + (F−1)/4, H/s, W/s]` (s = 8, or 16 for the
//! Wan 2.2 VAE, whose network sees the frames folded into 2×2 pixel patches: `[B, 12, F, H/2, W/2]`).
//!
//! Frames go through in chunks as in the reference — frame 0 alone, then 4 frames at a time — with each causal
//! layer keeping its temporal cache between chunks, so memory is bounded by one chunk whatever the clip length.
//!
//! The layers are grouped in *segments*, one per stage (the first also holds `conv_in`, the last the middle
//! block, the head and `quant_conv`). When the caller knows that every input frame from some index on is the same
//! (the I2V condition video: the start image, then zeros), each segment's output is also the same from a frame
//! that follows from the layers' temporal reach (each causal 3-tap convolution looks 2 frames back, a temporal
//! downsampling maps output m to inputs 2m−2 … 2m). Once a chunk lies wholly in that constant part, the segment
//! is not run again: its output is the constant frame it already produced, repeated. This is exact — the skipped
//! computation would produce the same values — and for 81 frames it leaves out most of the full-resolution work.

use super::layers::{
    dims5, CacheSlots, CausalConv3d, Downsample, Head, MidBlock, ResidualBlock, ShortcutDown,
};
use super::layout::Exec;
use super::VaeConfig;
use crate::ModelError;
use tch::{Kind, TchError, Tensor};
use wanlora_torch::weights::Loader;

/// A rectangle of the frame in the network's pixels (after the patchify): the whole frame, or one tile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Region {
    pub top: i64,
    pub left: i64,
    pub height: i64,
    pub width: i64,
}

/// The frames the encoder reads.
pub(crate) enum VideoSource<'a> {
    /// A clip `[B, 3, F, H, W]` in [−1, 1] on any device.
    Clip(&'a Tensor),
    /// The I2V condition video: `image` `[B, 3, H, W]`, then `frames − 1` zero frames (never materialised).
    FirstFrame { image: &'a Tensor, frames: i64 },
}

impl VideoSource<'_> {
    /// (batch, frames, height, width).
    pub fn dims(&self) -> Result<(i64, i64, i64, i64), TchError> {
        Ok(match self {
            VideoSource::Clip(video) => {
                let [b, _, f, h, w] = dims5(video)?;
                (b, f, h, w)
            }
            VideoSource::FirstFrame { image, frames } => {
                let s = image.size();
                (s[0], *frames, s[2], s[3])
            }
        })
    }

    /// The first frame from which every input frame is the same, when known.
    fn constant_from(&self) -> Option<i64> {
        match self {
            VideoSource::Clip(_) => None,
            VideoSource::FirstFrame { .. } => Some(1),
        }
    }

    /// Writes frames `first .. first + dst.T` of `region` into `dst` (converting kind and device), folded into
    /// `patch × patch` pixel patches when `patch > 1` (`region` is in patches then).
    fn write(
        &self,
        first: i64,
        region: Region,
        patch: i64,
        dst: &mut Tensor,
    ) -> Result<(), TchError> {
        let crop = |t: Tensor| -> Result<Tensor, TchError> {
            let cropped = t
                .f_narrow(3, patch * region.top, patch * region.height)?
                .f_narrow(4, patch * region.left, patch * region.width)?;
            patchify(&cropped, patch)
        };
        match self {
            VideoSource::Clip(video) => {
                let count = dst.size()[2];
                dst.f_copy_(&crop(video.f_narrow(2, first, count)?)?)
            }
            VideoSource::FirstFrame { image, .. } if first == 0 => {
                dst.f_copy_(&crop(image.f_unsqueeze(2)?)?)
            }
            VideoSource::FirstFrame { .. } => dst.f_zero_().map(drop),
        }
    }
}

/// What a segment consumes: the video itself (the first segment) or the previous segment's output.
enum SegmentInput<'a> {
    Video {
        source: &'a VideoSource<'a>,
        first: i64,
        count: i64,
        region: Region,
        patch: i64,
    },
    Frames(Tensor),
}

/// `conv_in` + the last stage's middle block, head and `quant_conv`, around one stage's residual blocks and
/// downsampling (plus, in the Wan 2.2 VAE, the shortcut around the stage).
struct Segment {
    conv_in: Option<CausalConv3d>,
    resnets: Vec<ResidualBlock>,
    downsample: Option<Downsample>,
    shortcut: Option<ShortcutDown>,
    tail: Option<(MidBlock, Head, CausalConv3d)>,
    /// Pixel frames per output frame after this segment (1, 2 or 4).
    time_stride: i64,
}

impl Segment {
    fn forward(
        &self,
        input: SegmentInput,
        caches: &mut CacheSlots,
        exec: &Exec,
    ) -> Result<Tensor, TchError> {
        let mut x = match (input, &self.conv_in) {
            (
                SegmentInput::Video {
                    source,
                    first,
                    count,
                    region,
                    patch,
                },
                Some(conv_in),
            ) => {
                let batch = source.dims()?.0;
                let channels = 3 * patch * patch;
                let body = [batch, channels, count, region.height, region.width];
                conv_in.forward_cached(caches.take(), body, exec, |dst| {
                    source.write(first, region, patch, dst)
                })?
            }
            (SegmentInput::Frames(x), None) => x,
            _ => return Err(TchError::Kind("encoder segment fed the wrong input".into())),
        };
        // No layer writes into its input, so the stage's input can be kept for the shortcut without a copy.
        let stage_input = self.shortcut.as_ref().map(|_| x.shallow_clone());
        for block in &self.resnets {
            x = block.forward(x, caches, exec)?;
        }
        if let Some(down) = &self.downsample {
            x = down.forward(x, caches, exec)?;
        }
        if let (Some(shortcut), Some(input)) = (&self.shortcut, stage_input) {
            let _ = x.f_add_(&shortcut.forward(&input)?)?;
        }
        if let Some((mid, head, quant_conv)) = &self.tail {
            x = mid.forward(x, caches, exec)?;
            x = head.forward(x, caches, exec)?;
            x = quant_conv.forward(&x)?;
        }
        Ok(x)
    }

    /// First output frame that is constant in time when the input is constant from frame `from`.
    fn constant_from(&self, mut from: i64) -> i64 {
        if self.conv_in.is_some() {
            from += 2;
        }
        for block in &self.resnets {
            from = block.constant_from(from);
        }
        if let Some(down) = &self.downsample {
            from = down.constant_from(from);
        }
        if let Some((mid, head, _)) = &self.tail {
            from = head.constant_from(mid.constant_from(from));
        }
        from
    }

    /// The output frame indices (first, last) of chunk `k` (chunk 0 is frame 0, chunk k ≥ 1 frames 4k−3 … 4k).
    fn output_frames(&self, k: i64) -> (i64, i64) {
        if k == 0 {
            return (0, 0);
        }
        let per_chunk = 4 / self.time_stride;
        (per_chunk * (k - 1) + 1, per_chunk * k)
    }
}

pub(crate) struct Encoder {
    segments: Vec<Segment>,
    z_dim: i64,
    patch: i64,
}

impl Encoder {
    pub fn load(l: &Loader, cfg: &VaeConfig, exec: &Exec) -> Self {
        let dims = cfg.encoder_dims();
        let stages = cfg.dim_mult.len();
        let mut segments = Vec::with_capacity(stages);
        let mut index = 0; // flat index of `encoder.down_blocks`
        let mut time_stride = 1;
        for stage in 0..stages {
            let conv_in = (stage == 0).then(|| {
                CausalConv3d::load(
                    l,
                    "encoder.conv_in",
                    cfg.in_channels,
                    dims[0],
                    [3, 3, 3],
                    exec,
                )
            });
            let mut resnets = Vec::new();
            let mut cin = dims[stage];
            // Wan 2.1: one flat list of blocks and resamplers; Wan 2.2: one entry per stage.
            let name = |index: i64, j: i64| match cfg.is_residual {
                false => format!("encoder.down_blocks.{index}"),
                true => format!("encoder.down_blocks.{stage}.resnets.{j}"),
            };
            for j in 0..cfg.num_res_blocks {
                resnets.push(ResidualBlock::load(
                    l,
                    &name(index, j),
                    cin,
                    dims[stage + 1],
                    exec,
                ));
                cin = dims[stage + 1];
                index += 1;
            }
            let down = stage + 1 < stages;
            let temporal = down && cfg.temperal_downsample[stage];
            let downsample = down.then(|| {
                let prefix = match cfg.is_residual {
                    false => format!("encoder.down_blocks.{index}"),
                    true => format!("encoder.down_blocks.{stage}.downsampler"),
                };
                index += 1;
                if temporal {
                    time_stride *= 2;
                }
                Downsample::load(l, &prefix, cin, temporal, exec)
            });
            let shortcut = cfg.is_residual.then(|| {
                ShortcutDown::new(
                    dims[stage + 1],
                    if temporal { 2 } else { 1 },
                    if down { 2 } else { 1 },
                )
            });
            let tail = (stage + 1 == stages).then(|| {
                let z2 = 2 * cfg.z_dim;
                (
                    MidBlock::load(l, "encoder.mid_block", cin, exec),
                    Head::load(l, "encoder", cin, z2, exec),
                    CausalConv3d::load(l, "quant_conv", z2, z2, [1, 1, 1], exec),
                )
            });
            segments.push(Segment {
                conv_in,
                resnets,
                downsample,
                shortcut,
                tail,
                time_stride,
            });
        }
        Encoder {
            segments,
            z_dim: cfg.z_dim,
            patch: cfg.patch(),
        }
    }

    /// The posterior mean μ of `region` (in patches) of the source, `[B, z, T_lat, region.h/8, region.w/8]` in
    /// float32.
    pub fn encode(
        &self,
        source: &VideoSource,
        region: Region,
        exec: &Exec,
    ) -> Result<Tensor, ModelError> {
        let (batch, frames, _, _) = source.dims()?;
        let chunks = 1 + (frames - 1) / 4;
        let (h, w) = (region.height / 8, region.width / 8);
        let mu = Tensor::f_empty(
            [batch, self.z_dim, chunks, h, w],
            (Kind::Float, exec.device),
        )?;
        let mut caches: Vec<CacheSlots> = self
            .segments
            .iter()
            .map(|_| CacheSlots::default())
            .collect();
        // Where each segment's output becomes constant in time, and the constant frame once seen.
        let constant_from: Option<Vec<i64>> = source.constant_from().map(|mut from| {
            self.segments
                .iter()
                .map(|s| {
                    from = s.constant_from(from);
                    from
                })
                .collect()
        });
        let mut constant_frame: Vec<Option<Tensor>> = self.segments.iter().map(|_| None).collect();

        for k in 0..chunks {
            let (first, count) = if k == 0 { (0, 1) } else { (4 * k - 3, 4) };
            let mut x: Option<Tensor> = None;
            for (s, segment) in self.segments.iter().enumerate() {
                let (lo, hi) = segment.output_frames(k);
                let threshold = constant_from.as_ref().map(|c| c[s]);
                if let (Some(threshold), Some(frame)) = (threshold, &constant_frame[s]) {
                    if lo >= threshold {
                        x = Some(repeat_frame(frame, hi - lo + 1, exec)?);
                        continue;
                    }
                }
                let input = match x.take() {
                    Some(frames) => SegmentInput::Frames(frames),
                    None => SegmentInput::Video {
                        source,
                        first,
                        count,
                        region,
                        patch: self.patch,
                    },
                };
                caches[s].rewind();
                let y = segment.forward(input, &mut caches[s], exec)?;
                if threshold.is_some_and(|t| hi >= t) && constant_frame[s].is_none() {
                    let [b, c, t, fh, fw] = dims5(&y)?;
                    let mut frame = exec.empty([b, c, 1, fh, fw])?;
                    frame.f_copy_(&y.f_narrow(2, t - 1, 1)?)?;
                    constant_frame[s] = Some(frame);
                }
                x = Some(y);
            }
            let moments = x.ok_or_else(|| TchError::Kind("the encoder has no stages".into()))?;
            mu.f_narrow(2, k, 1)?
                .f_copy_(&moments.f_narrow(1, 0, self.z_dim)?)?;
        }
        Ok(mu)
    }
}

/// `frame` `[B, C, 1, H, W]` repeated `count` times in time, as a fresh activation.
fn repeat_frame(frame: &Tensor, count: i64, exec: &Exec) -> Result<Tensor, TchError> {
    let [b, c, _, h, w] = dims5(frame)?;
    let mut out = exec.empty([b, c, count, h, w])?;
    out.f_copy_(&frame.f_expand([b, c, count, h, w], false)?)?;
    Ok(out)
}

/// `[B, C, F, H, W]` → `[B, C·p², F, H/p, W/p]`, channel `c·p² + p·j + i` holding pixel `(p·y + i, p·x + j)` of
/// patch `(y, x)` (diffusers' `patchify`, the Wan 2.2 VAE's input).
pub(crate) fn patchify(x: &Tensor, p: i64) -> Result<Tensor, TchError> {
    if p == 1 {
        return Ok(x.shallow_clone());
    }
    let [b, c, f, h, w] = dims5(x)?;
    x.f_reshape([b, c, f, h / p, p, w / p, p])?
        .f_permute([0, 1, 6, 4, 2, 3, 5])?
        .f_reshape([b, c * p * p, f, h / p, w / p])
}

/// The inverse of [`patchify`]: `[B, C·p², F, H, W]` → `[B, C, F, H·p, W·p]`.
pub(crate) fn unpatchify(x: &Tensor, p: i64) -> Result<Tensor, TchError> {
    if p == 1 {
        return Ok(x.shallow_clone());
    }
    let [b, cp, f, h, w] = dims5(x)?;
    let c = cp / (p * p);
    x.f_reshape([b, c, p, p, f, h, w])?
        .f_permute([0, 1, 4, 5, 3, 6, 2])?
        .f_reshape([b, c, f, h * p, w * p])
}
