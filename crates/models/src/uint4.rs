//! 4-bit weights: AI Toolkit's `uint4` (torchao 0.10 `UIntXWeightOnlyConfig(torch.uint4)`), bit for
//! bit (README-uint4.md).
//!
//! A weight `W [out, in]` in bf16 is cut into groups of 64 consecutive inputs. Per group, with
//! `lo = min(min W, 0)` and `hi = max(max W, 0)` (zero stays representable):
//!
//! ```text
//! scale = max((hi − lo) / 15, ε)          ε = 2⁻²³ (float32's eps)
//! zp    = clamp(−round(lo / scale), 0, 15)
//! q     = clamp(round(W · (1/scale)) + zp, 0, 15)
//! W'    = (q − zp) · scale
//! ```
//!
//! Every step is one bf16 operation (computed in fp32 registers, rounded to bf16), in torchao's
//! order: the codes an ARA was trained against come out only that way. The one place where
//! libtorch's own kernels differ between devices is `(hi − lo) / 15` (the CUDA kernel multiplies by
//! the fp32 reciprocal of a scalar divisor, the CPU kernel divides): it is computed here as the CPU
//! does, a true fp32 division of two tensors, on every device. The codes are stored two per byte
//! (even input in the low nibble).

use tch::{Device, Kind, TchError, Tensor};
use wanlora_torch::weights::{WeightError, WeightSet, WeightSource};

/// Inputs per group.
pub const GROUP_SIZE: i64 = 64;
/// The largest code.
pub const QMAX: i64 = 15;
/// torchao's `eps` for this scheme: `torch.finfo(torch.float32).eps`.
pub const EPS: f64 = f32::EPSILON as f64;

/// A frozen weight `[out, in]` as 4-bit codes with per-group bf16 scales and uint8 zero points.
#[derive(Debug)]
pub struct Uint4Weight {
    /// uint8 `[out, in/2]`: code of input `2j` in the low nibble, `2j+1` in the high nibble.
    pub packed: Tensor,
    /// bf16 `[out, in/64]`.
    pub scale: Tensor,
    /// uint8 `[out, in/64]`, values in 0..=15.
    pub zero_point: Tensor,
}

impl Uint4Weight {
    /// Whether a weight of `in_features` inputs can be stored so (AI Toolkit leaves the others in
    /// bf16).
    pub fn supports(in_features: i64) -> bool {
        in_features > 0 && in_features % GROUP_SIZE == 0
    }

    /// Quantises `weight` `[out, in]` (rounded to bf16 first, as AI Toolkit casts the layer to the
    /// model's bf16 before quantising) on its device.
    pub fn quantize(weight: &Tensor) -> Result<Uint4Weight, TchError> {
        let _no_grad = tch::no_grad_guard();
        let (out, inp) = dims(weight)?;
        if !Self::supports(inp) {
            return Err(TchError::Shape(format!(
                "uint4 needs in_features divisible by {GROUP_SIZE}, got [{out}, {inp}]"
            )));
        }
        let groups = inp / GROUP_SIZE;
        let w = weight
            .f_to_kind(Kind::BFloat16)?
            .f_contiguous()?
            .f_view([out, groups, GROUP_SIZE])?;
        let lo = w.f_amin([2].as_slice(), false)?.f_clamp_max(0.0)?;
        let hi = w.f_amax([2].as_slice(), false)?.f_clamp_min(0.0)?;
        let range = hi.f_sub(&lo)?;
        let fifteen = Tensor::f_full([1], QMAX as f64, (Kind::Float, w.device()))?;
        let scale = range
            .f_to_kind(Kind::Float)?
            .f_div(&fifteen)?
            .f_to_kind(Kind::BFloat16)?
            .f_clamp_min(EPS)?;
        let zero_point = lo
            .f_div(&scale)?
            .f_round()?
            .f_neg()?
            .f_clamp(0.0, QMAX as f64)?;
        let codes = w
            .f_mul(&scale.f_reciprocal()?.f_unsqueeze(2)?)?
            .f_round()?
            .f_add(&zero_point.f_unsqueeze(2)?)?
            .f_clamp(0.0, QMAX as f64)?
            .f_to_kind(Kind::Uint8)?
            .f_view([out, inp])?;
        Ok(Uint4Weight {
            packed: pack(&codes)?,
            scale,
            zero_point: zero_point.f_to_kind(Kind::Uint8)?,
        })
    }

    /// The codes, uint8 `[out, in]`.
    pub fn codes(&self) -> Result<Tensor, TchError> {
        unpack(&self.packed)
    }

    /// `(q − zp) · scale` in bf16 (exactly AI Toolkit's weight), then cast to `kind`: the
    /// helper's dequantisation, the one the 4-bit linear computes (one kernel on CUDA).
    pub fn dequantize(&self, kind: Kind) -> Result<Tensor, TchError> {
        wanlora_torch::cuda::uint4_dequantize(&self.packed, &self.scale, &self.zero_point)
            .map_err(|e| TchError::Torch(e.to_string()))?
            .f_to_kind(kind)
    }

    /// The same weight with every tensor passed through `f` (a device or host copy).
    pub fn map(
        &self,
        f: &mut dyn FnMut(&Tensor) -> Result<Tensor, TchError>,
    ) -> Result<Uint4Weight, TchError> {
        Ok(Uint4Weight {
            packed: f(&self.packed)?,
            scale: f(&self.scale)?,
            zero_point: f(&self.zero_point)?,
        })
    }

    pub fn tensors(&self) -> Vec<&Tensor> {
        vec![&self.packed, &self.scale, &self.zero_point]
    }

    pub fn out_features(&self) -> i64 {
        self.packed.size()[0]
    }

    pub fn in_features(&self) -> i64 {
        self.packed.size().get(1).map_or(0, |half| 2 * half)
    }

    pub fn device(&self) -> Device {
        self.packed.device()
    }
}

/// The scheme's name in cache keys: a change to the quantizer or the storage changes it.
pub const SCHEME: &str = "uint4-g64-bf16scale-u8zp-lowfirst-v1";

impl Uint4Weight {
    /// The tensors under `name` (a linear's stem, e.g. `blocks.0.ffn.2`) in a cache file.
    pub fn cache_entries(&self, name: &str) -> Vec<(String, Tensor)> {
        vec![
            (format!("{name}.uint4_packed"), self.packed.shallow_clone()),
            (format!("{name}.uint4_scale"), self.scale.shallow_clone()),
            (
                format!("{name}.uint4_zero_point"),
                self.zero_point.shallow_clone(),
            ),
        ]
    }

    /// The weight `name` `[out, in]` from a cache file written with [`Uint4Weight::cache_entries`],
    /// on `device`; `None` when the file does not hold it.
    pub fn from_cache(
        cache: &WeightSet,
        name: &str,
        [out, inp]: [i64; 2],
        device: Device,
    ) -> Result<Option<Uint4Weight>, WeightError> {
        let key = |part: &str| format!("{name}.uint4_{part}");
        if cache.info(&key("packed")).is_none() {
            return Ok(None);
        }
        let groups = inp / GROUP_SIZE;
        let load = |part: &str, kind: Kind, shape: [i64; 2]| {
            WeightSource::load(cache, &key(part), &shape, kind, device)
        };
        Ok(Some(Uint4Weight {
            packed: load("packed", Kind::Uint8, [out, inp / 2])?,
            scale: load("scale", Kind::BFloat16, [out, groups])?,
            zero_point: load("zero_point", Kind::Uint8, [out, groups])?,
        }))
    }
}

/// Codes `[out, in]` (values < 16) → bytes `[out, in/2]`, `lo | hi << 4`.
pub fn pack(codes: &Tensor) -> Result<Tensor, TchError> {
    let (out, inp) = dims(codes)?;
    let pairs = codes.f_view([out, inp / 2, 2])?;
    let low = pairs.f_select(2, 0)?;
    let high = pairs.f_select(2, 1)?;
    high.f_bitwise_left_shift_tensor_scalar(4)?
        .f_bitwise_or_tensor(&low)
}

/// Inverse of [`pack`].
pub fn unpack(packed: &Tensor) -> Result<Tensor, TchError> {
    let (out, half) = dims(packed)?;
    let low = packed.f_bitwise_and(0x0f)?;
    let high = packed.f_bitwise_right_shift_tensor_scalar(4)?;
    Tensor::f_stack(&[low, high], 2)?.f_view([out, 2 * half])
}

fn dims(t: &Tensor) -> Result<(i64, i64), TchError> {
    match t.size()[..] {
        [a, b] => Ok((a, b)),
        ref s => Err(TchError::Shape(format!(
            "expected a matrix, got shape {s:?}"
        ))),
    }
}
