//! The building blocks of the Wan VAEs (wan-reference.md §6): causal 3-D convolutions with a temporal cache,
//! RMS norms over channels, residual blocks, the single-head attention of the middle block, the resamplers and
//! the Wan 2.2 VAE's parameter-free stage shortcuts.
//!
//! Every layer works on one *chunk* of frames `[B, C, T, H, W]`. A causal convolution sees the last frames of its
//! input from the previous chunk (its *context*) in front of the chunk — zeros before the first chunk, which is
//! exactly the causal zero padding. The context and the new frames are laid out in one buffer that the producer
//! of the new frames (a norm + SiLU, or a copy) writes straight into, so the cache costs one small copy of the
//! context frames instead of a concatenation and a padding of the whole chunk. Spatial zero padding is left to
//! the convolution itself.

use super::layout::{Exec, VaeLayout};
use tch::{Kind, TchError, Tensor};
use wanlora_torch::weights::Loader;

/// The last input frames of one causal convolution, kept from one chunk to the next (`None` before the first).
pub(crate) type TemporalCache = Option<Tensor>;

/// The temporal caches of a run of layers, handed out in call order (one slot per causal convolution and per
/// temporal resampler), like the reference's `feat_cache` list. `rewind` before each chunk.
#[derive(Default)]
pub(crate) struct CacheSlots {
    slots: Vec<TemporalCache>,
    next: usize,
}

impl CacheSlots {
    pub fn rewind(&mut self) {
        self.next = 0;
    }

    pub fn take(&mut self) -> &mut TemporalCache {
        if self.next == self.slots.len() {
            self.slots.push(None);
        }
        self.next += 1;
        &mut self.slots[self.next - 1]
    }
}

/// Size of a 5-D tensor as an array.
pub(crate) fn dims5(x: &Tensor) -> Result<[i64; 5], TchError> {
    let s = x.size();
    <[i64; 5]>::try_from(s.as_slice())
        .map_err(|_| TchError::Shape(format!("expected a 5-D tensor, got shape {s:?}")))
}

/// A 3-D convolution that is causal in time (weight `[out, in, kt, kh, kw]`).
pub(crate) struct CausalConv3d {
    weight: Tensor,
    bias: Tensor,
    /// Frames of the previous chunk prepended to the input (2 for a temporal kernel of 3, 0 for 1).
    context: i64,
    stride: [i64; 3],
    /// Zero padding of H and W, applied by the convolution.
    pad_hw: i64,
}

impl CausalConv3d {
    /// A convolution with kernel `[kt, k, k]`, "same" spatial padding and `context = kt − 1` causal frames.
    pub fn load(
        l: &Loader,
        name: &str,
        cin: i64,
        cout: i64,
        kernel: [i64; 3],
        exec: &Exec,
    ) -> Self {
        Self::load_strided(l, name, cin, cout, kernel, kernel[0] - 1, [1, 1, 1], exec)
    }

    /// The general form: an explicit temporal context (the stride-2 `time_conv` of the encoder keeps one
    /// frame) and stride. A kernel with `kh = 3` and spatial stride 1 pads H and W by 1; strided spatial
    /// convolutions get no padding (the caller pads).
    #[allow(clippy::too_many_arguments)]
    pub fn load_strided(
        l: &Loader,
        name: &str,
        cin: i64,
        cout: i64,
        kernel: [i64; 3],
        context: i64,
        stride: [i64; 3],
        exec: &Exec,
    ) -> Self {
        let weight = l.get(
            &format!("{name}.weight"),
            &[cout, cin, kernel[0], kernel[1], kernel[2]],
        );
        let bias = l.get(&format!("{name}.bias"), &[cout]);
        let pad_hw = if stride[1] == 1 { kernel[1] / 2 } else { 0 };
        CausalConv3d {
            weight: exec.weight_layout(weight),
            bias,
            context,
            stride,
            pad_hw,
        }
    }

    /// A per-frame 2-D convolution stored as `[out, in, k, k]`, run as a 3-D one with a temporal kernel of 1.
    pub fn load_2d(l: &Loader, name: &str, cin: i64, cout: i64, stride: i64, exec: &Exec) -> Self {
        let weight = l.get(&format!("{name}.weight"), &[cout, cin, 3, 3]);
        let bias = l.get(&format!("{name}.bias"), &[cout]);
        let weight = if weight.numel() == 0 {
            weight // a reported load problem; never run
        } else {
            weight.unsqueeze(2)
        };
        CausalConv3d {
            weight: exec.weight_layout(weight),
            bias,
            context: 0,
            stride: [1, stride, stride],
            pad_hw: if stride == 1 { 1 } else { 0 },
        }
    }

    fn conv(&self, x: &Tensor) -> Result<Tensor, TchError> {
        x.f_conv3d(
            &self.weight,
            Some(&self.bias),
            self.stride,
            [0, self.pad_hw, self.pad_hw],
            [1, 1, 1],
            1,
        )
    }

    /// A convolution without temporal context (kernel `1×k×k`): no cache involved.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, TchError> {
        debug_assert_eq!(self.context, 0);
        self.conv(x)
    }

    /// The convolution over `[context ; new frames]`, where the new frames (`body` = their shape) are written by
    /// `fill` into the input buffer. The context comes from `cache` (zeros on the first chunk: the causal
    /// padding); afterwards `cache` holds the last `context` frames of this input.
    pub fn forward_cached(
        &self,
        cache: &mut TemporalCache,
        body: [i64; 5],
        exec: &Exec,
        fill: impl FnOnce(&mut Tensor) -> Result<(), TchError>,
    ) -> Result<Tensor, TchError> {
        let [b, c, t, h, w] = body;
        let ctx = self.context;
        let buffer = exec.empty([b, c, ctx + t, h, w])?;
        if ctx > 0 {
            let mut head = buffer.f_narrow(2, 0, ctx)?;
            match cache.as_ref() {
                Some(previous) => head.f_copy_(previous)?,
                None => head.f_zero_().map(drop)?,
            }
        }
        let mut frames = buffer.f_narrow(2, ctx, t)?;
        fill(&mut frames)?;
        let out = self.conv(&buffer)?;
        if ctx > 0 {
            // The last `ctx` frames of [context ; body]: with a one-frame body this keeps the previous
            // context's last frame, as the reference does.
            let last = buffer.f_narrow(2, t, ctx)?;
            let mut kept = exec.empty([b, c, ctx, h, w])?;
            kept.f_copy_(&last)?;
            *cache = Some(kept);
        }
        Ok(out)
    }

    /// The convolution over `[context ; x]`, `x` copied into the buffer.
    pub fn forward_copy(
        &self,
        cache: &mut TemporalCache,
        x: &Tensor,
        exec: &Exec,
    ) -> Result<Tensor, TchError> {
        self.forward_cached(cache, dims5(x)?, exec, |dst| dst.f_copy_(x))
    }
}

/// `x / ‖x‖₂ · √C · γ` over the channel dimension (the reference's `F.normalize(x, dim=1) · scale · γ`), with the
/// norm accumulated in float32 whatever the compute type.
///
/// In the channels-last layout the channels are the innermost dimension in memory, so this is exactly libtorch's
/// `rms_norm` over the last dimension of the physical `[B, T, H, W, C]` view — one fused pass on CUDA — since
/// `x · rsqrt(‖x‖²/C + ε) · γ = x / ‖x‖ · √C · γ`. In NCDHW it is computed as written (norm, divide, scale).
pub(crate) struct RmsNorm {
    /// γ, `[C]`.
    gamma: Tensor,
    /// `γ · √C`, shaped `[C, 1, 1, 1]`.
    scale: Tensor,
    channels: i64,
    layout: VaeLayout,
}

impl RmsNorm {
    /// `gamma_shape` is `[C, 1, 1, 1]` for 3-D norms and `[C, 1, 1]` in the attention block.
    pub fn load(l: &Loader, name: &str, gamma_shape: &[i64], exec: &Exec) -> Self {
        let gamma = l.get(name, gamma_shape);
        let channels = gamma_shape[0];
        let (gamma, scale) = if gamma.numel() == 0 {
            (gamma.shallow_clone(), gamma) // a reported load problem; never run
        } else {
            let scale =
                (gamma.reshape([channels, 1, 1, 1]) * (channels as f64).sqrt()).to_kind(l.kind);
            (gamma.reshape([channels]), scale)
        };
        RmsNorm {
            gamma,
            scale,
            channels,
            layout: exec.layout,
        }
    }

    /// F.normalize clamps ‖x‖ at 1e-12; as rms_norm's ε that is 1e-24/C (the same for every norm above 1e-12,
    /// and 0 for a zero vector either way).
    fn epsilon(&self) -> f64 {
        1e-24 / self.channels as f64
    }

    /// The normalised `x` as a new activation.
    pub fn normalize(&self, x: &Tensor) -> Result<Tensor, TchError> {
        match self.layout {
            VaeLayout::ChannelsLast => x
                .f_permute([0, 2, 3, 4, 1])?
                .f_rms_norm([self.channels], Some(&self.gamma), self.epsilon())?
                .f_permute([0, 4, 1, 2, 3]),
            VaeLayout::Contiguous => {
                let mut out = x.f_empty_like()?;
                self.normalize_ncdhw_into(x, &mut out)?;
                Ok(out)
            }
        }
    }

    /// The NCDHW form: ‖x‖ over channels in float32 (the reference upcasts half-precision input for this),
    /// clamped like F.normalize; the division computes in float32 and writes `out`'s kind.
    fn normalize_ncdhw_into(&self, x: &Tensor, out: &mut Tensor) -> Result<(), TchError> {
        let norm = x
            .f_norm_scalaropt_dim_dtype(2, [1], true, Kind::Float)?
            .f_clamp_min(1e-12)?;
        x.f_div_out(out, &norm)?.f_mul_(&self.scale).map(drop)
    }

    /// `SiLU(norm(x))` written into `out` (same shape, usually a view into a convolution's input buffer): what
    /// every residual branch and the head feed their convolution.
    pub fn normalize_silu_into(&self, x: &Tensor, out: &mut Tensor) -> Result<(), TchError> {
        match self.layout {
            VaeLayout::ChannelsLast => self.normalize(x)?.f_silu_out(out).map(drop),
            VaeLayout::Contiguous => {
                self.normalize_ncdhw_into(x, out)?;
                out.f_silu_().map(drop)
            }
        }
    }
}

/// `x + conv2(SiLU(RMS(conv1(SiLU(RMS(x))))))`, with a 1×1×1 convolution on the shortcut when the channel count
/// changes. (Dropout is 0 in every Wan VAE.)
pub(crate) struct ResidualBlock {
    norm1: RmsNorm,
    conv1: CausalConv3d,
    norm2: RmsNorm,
    conv2: CausalConv3d,
    shortcut: Option<CausalConv3d>,
    cin: i64,
    cout: i64,
}

impl ResidualBlock {
    pub fn load(l: &Loader, prefix: &str, cin: i64, cout: i64, exec: &Exec) -> Self {
        ResidualBlock {
            norm1: RmsNorm::load(l, &format!("{prefix}.norm1.gamma"), &[cin, 1, 1, 1], exec),
            conv1: CausalConv3d::load(l, &format!("{prefix}.conv1"), cin, cout, [3, 3, 3], exec),
            norm2: RmsNorm::load(l, &format!("{prefix}.norm2.gamma"), &[cout, 1, 1, 1], exec),
            conv2: CausalConv3d::load(l, &format!("{prefix}.conv2"), cout, cout, [3, 3, 3], exec),
            shortcut: (cin != cout).then(|| {
                CausalConv3d::load(
                    l,
                    &format!("{prefix}.conv_shortcut"),
                    cin,
                    cout,
                    [1, 1, 1],
                    exec,
                )
            }),
            cin,
            cout,
        }
    }

    pub fn forward(
        &self,
        x: Tensor,
        caches: &mut CacheSlots,
        exec: &Exec,
    ) -> Result<Tensor, TchError> {
        let [b, _, t, h, w] = dims5(&x)?;
        let hidden =
            self.conv1
                .forward_cached(caches.take(), [b, self.cin, t, h, w], exec, |dst| {
                    self.norm1.normalize_silu_into(&x, dst)
                })?;
        let residual = match &self.shortcut {
            Some(conv) => conv.forward(&x)?,
            None => x,
        };
        // The closure owns `hidden`, so it is freed once written into the buffer, before the convolution
        // allocates its output (one activation less at the peak).
        let mut out = self.conv2.forward_cached(
            caches.take(),
            [b, self.cout, t, h, w],
            exec,
            move |dst| self.norm2.normalize_silu_into(&hidden, dst),
        )?;
        out.f_add_(&residual)
    }

    /// First frame index from which the output is constant in time, given that the input is from `from`:
    /// each causal convolution looks 2 frames back.
    pub fn constant_from(&self, from: i64) -> i64 {
        from + self.conv1.context + self.conv2.context
    }
}

/// Single-head self-attention over the H·W positions of each frame (head dimension C, scale 1/√C), with a
/// 1×1 projection to q, k, v in front and a 1×1 output projection, added to its input.
pub(crate) struct AttentionBlock {
    norm: RmsNorm,
    to_qkv_weight: Tensor,
    to_qkv_bias: Tensor,
    proj_weight: Tensor,
    proj_bias: Tensor,
    channels: i64,
}

impl AttentionBlock {
    pub fn load(l: &Loader, prefix: &str, channels: i64, exec: &Exec) -> Self {
        let c = channels;
        let matrix = |t: Tensor, rows: i64| {
            if t.numel() == 0 {
                t
            } else {
                t.reshape([rows, c])
            }
        };
        AttentionBlock {
            norm: RmsNorm::load(l, &format!("{prefix}.norm.gamma"), &[c, 1, 1], exec),
            to_qkv_weight: matrix(
                l.get(&format!("{prefix}.to_qkv.weight"), &[3 * c, c, 1, 1]),
                3 * c,
            ),
            to_qkv_bias: l.get(&format!("{prefix}.to_qkv.bias"), &[3 * c]),
            proj_weight: matrix(l.get(&format!("{prefix}.proj.weight"), &[c, c, 1, 1]), c),
            proj_bias: l.get(&format!("{prefix}.proj.bias"), &[c]),
            channels,
        }
    }

    pub fn forward(&self, x: Tensor) -> Result<Tensor, TchError> {
        let [b, c, t, h, w] = dims5(&x)?;
        let normed = self.norm.normalize(&x)?;
        // Frames fold into the batch; positions become tokens with the channels as features.
        let tokens = normed
            .f_permute([0, 2, 3, 4, 1])?
            .f_reshape([b * t, h * w, c])?;
        drop(normed);
        let qkv = tokens.f_linear(&self.to_qkv_weight, Some(&self.to_qkv_bias))?;
        let head = |i: i64| {
            qkv.f_narrow(2, i * self.channels, self.channels)?
                .f_unsqueeze(1)
        };
        let attended = Tensor::f_scaled_dot_product_attention(
            &head(0)?,
            &head(1)?,
            &head(2)?,
            None::<Tensor>,
            0.0,
            false,
            None,
            false,
        )?;
        drop(qkv);
        let projected = attended
            .f_squeeze_dim(1)?
            .f_linear(&self.proj_weight, Some(&self.proj_bias))?;
        let mut out = projected
            .f_reshape([b, t, h, w, c])?
            .f_permute([0, 4, 1, 2, 3])?;
        out.f_add_(&x)
    }
}

/// The middle block: residual block, attention, residual block, at the lowest resolution.
pub(crate) struct MidBlock {
    first: ResidualBlock,
    attention: AttentionBlock,
    second: ResidualBlock,
}

impl MidBlock {
    pub fn load(l: &Loader, prefix: &str, channels: i64, exec: &Exec) -> Self {
        MidBlock {
            first: ResidualBlock::load(l, &format!("{prefix}.resnets.0"), channels, channels, exec),
            attention: AttentionBlock::load(l, &format!("{prefix}.attentions.0"), channels, exec),
            second: ResidualBlock::load(
                l,
                &format!("{prefix}.resnets.1"),
                channels,
                channels,
                exec,
            ),
        }
    }

    pub fn forward(
        &self,
        x: Tensor,
        caches: &mut CacheSlots,
        exec: &Exec,
    ) -> Result<Tensor, TchError> {
        let x = self.first.forward(x, caches, exec)?;
        let x = self.attention.forward(x)?;
        self.second.forward(x, caches, exec)
    }

    pub fn constant_from(&self, from: i64) -> i64 {
        self.second.constant_from(self.first.constant_from(from))
    }
}

/// The last layers of the encoder and decoder: RMS norm, SiLU, causal 3×3×3 convolution.
pub(crate) struct Head {
    norm: RmsNorm,
    conv: CausalConv3d,
    cin: i64,
}

impl Head {
    pub fn load(l: &Loader, prefix: &str, cin: i64, cout: i64, exec: &Exec) -> Self {
        Head {
            norm: RmsNorm::load(
                l,
                &format!("{prefix}.norm_out.gamma"),
                &[cin, 1, 1, 1],
                exec,
            ),
            conv: CausalConv3d::load(l, &format!("{prefix}.conv_out"), cin, cout, [3, 3, 3], exec),
            cin,
        }
    }

    pub fn forward(
        &self,
        x: Tensor,
        caches: &mut CacheSlots,
        exec: &Exec,
    ) -> Result<Tensor, TchError> {
        let [b, _, t, h, w] = dims5(&x)?;
        self.conv
            .forward_cached(caches.take(), [b, self.cin, t, h, w], exec, move |dst| {
                self.norm.normalize_silu_into(&x, dst)
            })
    }

    pub fn constant_from(&self, from: i64) -> i64 {
        from + self.conv.context
    }
}

/// The encoder's resamplers between stages.
pub(crate) enum Downsample {
    /// Zero-pad right and bottom by one, 3×3 convolution with stride 2, per frame.
    Space { conv: CausalConv3d },
    /// `Space`, then a stride-2 temporal convolution over `[last frame of the previous chunk ; chunk]`; the
    /// first chunk (frame 0) passes through without it.
    SpaceTime {
        conv: CausalConv3d,
        time_conv: CausalConv3d,
    },
}

impl Downsample {
    pub fn load(l: &Loader, prefix: &str, channels: i64, temporal: bool, exec: &Exec) -> Self {
        let c = channels;
        let conv = CausalConv3d::load_2d(l, &format!("{prefix}.resample.1"), c, c, 2, exec);
        if !temporal {
            return Downsample::Space { conv };
        }
        let time_conv = CausalConv3d::load_strided(
            l,
            &format!("{prefix}.time_conv"),
            c,
            c,
            [3, 1, 1],
            1,
            [2, 1, 1],
            exec,
        );
        Downsample::SpaceTime { conv, time_conv }
    }

    pub fn forward(
        &self,
        x: Tensor,
        caches: &mut CacheSlots,
        exec: &Exec,
    ) -> Result<Tensor, TchError> {
        let spatial = |conv: &CausalConv3d| conv.forward(&x.f_constant_pad_nd([0, 1, 0, 1])?);
        match self {
            Downsample::Space { conv } => spatial(conv),
            Downsample::SpaceTime { conv, time_conv } => {
                let x = spatial(conv)?;
                let cache = caches.take();
                if cache.is_none() {
                    let [b, c, t, h, w] = dims5(&x)?;
                    let mut last = exec.empty([b, c, 1, h, w])?;
                    last.f_copy_(&x.f_narrow(2, t - 1, 1)?)?;
                    *cache = Some(last);
                    return Ok(x);
                }
                time_conv.forward_copy(cache, &x, exec)
            }
        }
    }

    /// First output frame from which the output is constant in time, given that the input is from `from`:
    /// a temporal downsampling computes output m ≥ 1 from inputs 2m−2 … 2m.
    pub fn constant_from(&self, from: i64) -> i64 {
        match self {
            Downsample::Space { .. } => from,
            Downsample::SpaceTime { .. } => (from + 1) / 2 + 1,
        }
    }
}

/// The decoder's resamplers between stages.
pub(crate) enum Upsample {
    /// Nearest-neighbour 2× in H and W, then a 3×3 convolution to half the channels, per frame.
    Space { conv: CausalConv3d },
    /// A causal temporal convolution to twice the channels whose halves become two consecutive frames, then
    /// `Space`. The first chunk (latent frame 0) is not upsampled in time; the second starts from zeros, so
    /// frame 0 never enters the temporal context (the reference's "Rep" marker).
    SpaceTime {
        time_conv: CausalConv3d,
        conv: CausalConv3d,
    },
}

impl Upsample {
    /// `out_channels` of the spatial convolution: half of `channels` in the Wan 2.1 VAE, all of them in 2.2's.
    pub fn load(
        l: &Loader,
        prefix: &str,
        channels: i64,
        out_channels: i64,
        temporal: bool,
        exec: &Exec,
    ) -> Self {
        let c = channels;
        let conv =
            CausalConv3d::load_2d(l, &format!("{prefix}.resample.1"), c, out_channels, 1, exec);
        if !temporal {
            return Upsample::Space { conv };
        }
        let time_conv =
            CausalConv3d::load(l, &format!("{prefix}.time_conv"), c, 2 * c, [3, 1, 1], exec);
        Upsample::SpaceTime { time_conv, conv }
    }

    pub fn forward(
        &self,
        x: Tensor,
        caches: &mut CacheSlots,
        exec: &Exec,
    ) -> Result<Tensor, TchError> {
        match self {
            Upsample::Space { conv } => conv.forward(&exec.upsample_nearest(&x, false)?),
            Upsample::SpaceTime { time_conv, conv } => {
                let cache = caches.take();
                let upsampled = if cache.is_none() {
                    let [b, c, _, h, w] = dims5(&x)?;
                    let mut zeros = exec.empty([b, c, 2, h, w])?;
                    let _ = zeros.f_zero_()?;
                    *cache = Some(zeros);
                    exec.upsample_nearest(&x, false)?
                } else {
                    let doubled = time_conv.forward_copy(cache, &x, exec)?;
                    exec.upsample_nearest(&doubled, true)?
                };
                conv.forward(&upsampled)
            }
        }
    }
}

/// The Wan 2.2 VAE's shortcut around an encoder stage (diffusers' `AvgDown3D`): the input, folded by `time × space
/// × space` into channels (frame pairs, then 2×2 pixel blocks), averaged over consecutive groups of channels down
/// to the stage's output channels. A chunk with an odd frame count (the first, one frame) is padded with a zero
/// frame in front, as the reference does.
pub(crate) struct ShortcutDown {
    out_channels: i64,
    time: i64,
    space: i64,
}

impl ShortcutDown {
    pub fn new(out_channels: i64, time: i64, space: i64) -> Self {
        ShortcutDown {
            out_channels,
            time,
            space,
        }
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor, TchError> {
        let (ft, fs) = (self.time, self.space);
        let [_, _, t, _, _] = dims5(x)?;
        let pad = (ft - t % ft) % ft;
        let x = if pad > 0 {
            x.f_constant_pad_nd([0, 0, 0, 0, pad, 0])?
        } else {
            x.shallow_clone()
        };
        let [b, c, t, h, w] = dims5(&x)?;
        let (t, h, w) = (t / ft, h / fs, w / fs);
        // [B, C, t, ft, h, fs, w, fs] → [B, C, ft, fs, fs, t, h, w]: channel c·F + offset, offset = (it, ih, iw).
        let group = c * ft * fs * fs / self.out_channels;
        x.f_reshape([b, c, t, ft, h, fs, w, fs])?
            .f_permute([0, 1, 3, 5, 7, 2, 4, 6])?
            .f_reshape([b, self.out_channels, group, t, h, w])?
            .f_mean_dim(2, false, None)
    }
}

/// The Wan 2.2 VAE's shortcut around a decoder stage (diffusers' `DupUp3D`): each input channel repeated, the
/// copies unfolded into `time × space × space` neighbours of the output; on the first chunk only the last of the
/// `time` frames is kept (latent frame 0 becomes one frame).
pub(crate) struct ShortcutUp {
    out_channels: i64,
    time: i64,
    space: i64,
}

impl ShortcutUp {
    pub fn new(out_channels: i64, time: i64, space: i64) -> Self {
        ShortcutUp {
            out_channels,
            time,
            space,
        }
    }

    pub fn forward(&self, x: &Tensor, first_chunk: bool) -> Result<Tensor, TchError> {
        let (ft, fs) = (self.time, self.space);
        let [b, c, t, h, w] = dims5(x)?;
        let repeats = self.out_channels * ft * fs * fs / c;
        // repeat_interleave over channels, then [B, O, ft, fs, fs, t, h, w] → [B, O, t, ft, h, fs, w, fs].
        let up = x
            .f_unsqueeze(2)?
            .f_expand([b, c, repeats, t, h, w], false)?
            .f_reshape([b, self.out_channels, ft, fs, fs, t, h, w])?
            .f_permute([0, 1, 5, 2, 6, 3, 7, 4])?
            .f_reshape([b, self.out_channels, t * ft, h * fs, w * fs])?;
        if first_chunk && ft > 1 {
            return up.f_narrow(2, ft - 1, t * ft - (ft - 1));
        }
        Ok(up)
    }
}
