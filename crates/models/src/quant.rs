//! fp8 storage of frozen linear weights, and fp8 matmuls (README-quant.md).
//!
//! A weight `W [out, in]` is kept as float8 e4m3fn codes `q` with one fp32 scale per output
//! channel, `W ≈ q · s` with `s_o = max_i |W_oi| / 448` (448 is e4m3fn's largest value). ComfyUI
//! "fp8_scaled" files are kept as stored: their single per-tensor scale becomes the same value for
//! every channel. How such a weight is multiplied is its [`Weight`] variant:
//!
//! * [`Weight::Fp8`] (weight-only): `x · dequant(W)ᵀ` in the compute dtype, the dequantised copy
//!   made just in time for this one layer — autograd exactly as for a dense weight;
//! * [`Weight::Fp8Matmul`]: the input is quantised per token the same way and the codes are
//!   multiplied by a scaled matmul (`_scaled_mm`), with a backward `dX = dY · dequant(W)` in the
//!   compute dtype from the C++ helper;
//! * [`Weight::Uint4`]: AI Toolkit's 4-bit scheme (crate::uint4), dequantised per layer like fp8;
//! * [`Weight::Recovered`]: a frozen base weight plus its accuracy recovery adapter (README-uint4.md).

use crate::uint4::Uint4Weight;
use tch::{Device, Kind, TchError, Tensor};
use wanlora_torch::cuda as helper;
use wanlora_torch::weights::{Fp8Stored, Loader, WeightError};

/// The largest finite float8 e4m3fn value.
pub const E4M3_MAX: f64 = 448.0;

/// How the frozen linear weights of a model are stored and multiplied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fp8Mode {
    /// Weights in the compute dtype.
    #[default]
    Off,
    /// fp8 weights, dequantised per layer for a compute-dtype matmul: half the memory of bf16,
    /// the numerics of a bf16 model whose weights are the fp8 values.
    WeightOnly,
    /// fp8 weights and fp8 matmuls against per-token quantised inputs: the fast path on GPUs with
    /// fp8 tensor cores (sm89 and newer).
    Matmul,
    /// AI Toolkit's `uint4` (4-bit codes, groups of 64 inputs, bf16 scales, uint8 zero points),
    /// dequantised per layer for a compute-dtype matmul. Linears whose inputs do not split into
    /// groups of 64 stay in the compute dtype.
    Uint4,
}

impl Fp8Mode {
    /// `off`, `weights` or `matmul` (the command-line spelling).
    pub fn from_name(name: &str) -> Option<Fp8Mode> {
        match name {
            "off" => Some(Fp8Mode::Off),
            "weights" => Some(Fp8Mode::WeightOnly),
            "matmul" => Some(Fp8Mode::Matmul),
            "uint4" => Some(Fp8Mode::Uint4),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Fp8Mode::Off => "off",
            Fp8Mode::WeightOnly => "weights",
            Fp8Mode::Matmul => "matmul",
            Fp8Mode::Uint4 => "uint4",
        }
    }

    /// Whether weights are stored as fp8.
    pub fn stores_fp8(self) -> bool {
        matches!(self, Fp8Mode::WeightOnly | Fp8Mode::Matmul)
    }
}

/// A frozen weight `[out, in]` as e4m3fn codes and one fp32 scale per output channel `[out, 1]`.
#[derive(Debug)]
pub struct Fp8Weight {
    pub codes: Tensor,
    pub scale: Tensor,
}

impl Fp8Weight {
    /// Quantises `weight` (any float dtype) per output channel: `s = amax/448`, `q = round(W/s)`.
    pub fn quantize(weight: &Tensor) -> Result<Fp8Weight, TchError> {
        let (codes, scale) = helper::fp8_quantize_rows(weight).map_err(torch_error)?;
        Ok(Fp8Weight { codes, scale })
    }

    /// A weight kept as a file stores it: codes `[out, in]` and a scale that is one value for the
    /// tensor (ComfyUI's `scale_weight`) or one per output channel.
    pub fn from_stored(stored: Fp8Stored) -> Result<Fp8Weight, TchError> {
        let Fp8Stored { codes, scale } = stored;
        let out = codes.size()[0];
        let scale = scale.f_to_kind(Kind::Float)?;
        let scale = match scale.numel() {
            1 => scale.f_reshape([1, 1])?.f_expand([out, 1], false)?,
            n if n as i64 == out => scale.f_reshape([out, 1])?,
            n => {
                return Err(TchError::Shape(format!(
                    "fp8 weight of {out} output channels has {n} scale values (expected 1 or {out})"
                )))
            }
        };
        Ok(Fp8Weight {
            codes,
            scale: scale.f_contiguous()?,
        })
    }

    /// `codes · scale` in `kind`: the codes are exact in bf16, f16 and f32; the product is
    /// computed in fp32 and rounded once.
    pub fn dequantize(&self, kind: Kind) -> Result<Tensor, TchError> {
        let mut w = self.codes.f_to_kind(kind)?;
        let _ = w.f_mul_(&self.scale)?;
        Ok(w)
    }

    /// Rows `ids` (int64, any shape) of the dequantised matrix in `kind`, shaped `[..ids, in]`:
    /// an embedding lookup that dequantises only the rows it reads.
    pub fn rows(&self, ids: &Tensor, kind: Kind) -> Result<Tensor, TchError> {
        let flat = ids.f_reshape([-1])?;
        // Gathering moves bytes; the uint8 view gathers them wherever float8 has no kernel.
        let codes = self
            .codes
            .f_view_dtype(Kind::Uint8)?
            .f_index_select(0, &flat)?
            .f_view_dtype(Kind::Float8e4m3fn)?;
        let rows = Fp8Weight {
            codes,
            scale: self.scale.f_index_select(0, &flat)?,
        }
        .dequantize(kind)?;
        let mut shape = ids.size();
        shape.push(self.in_features());
        rows.f_reshape(shape.as_slice())
    }

    /// Weights stacked along the output channels (e.g. q, k and v as one matrix).
    pub fn cat(parts: &[Fp8Weight]) -> Result<Fp8Weight, TchError> {
        let codes: Vec<&Tensor> = parts.iter().map(|p| &p.codes).collect();
        let scales: Vec<&Tensor> = parts.iter().map(|p| &p.scale).collect();
        Ok(Fp8Weight {
            codes: Tensor::f_cat(&codes, 0)?,
            scale: Tensor::f_cat(&scales, 0)?,
        })
    }

    /// The same weight with both tensors passed through `f` (a device or host copy).
    pub fn map(
        &self,
        f: &mut dyn FnMut(&Tensor) -> Result<Tensor, TchError>,
    ) -> Result<Fp8Weight, TchError> {
        Ok(Fp8Weight {
            codes: f(&self.codes)?,
            scale: f(&self.scale)?,
        })
    }

    pub fn out_features(&self) -> i64 {
        self.codes.size()[0]
    }

    pub fn in_features(&self) -> i64 {
        self.codes.size()[1]
    }
}

/// A frozen linear weight `[out, in]` and how it is multiplied.
#[derive(Debug)]
pub enum Weight {
    /// In the compute dtype (or fp32 where the model keeps fp32).
    Dense(Tensor),
    /// fp8, dequantised to the input's dtype for a normal matmul ([`Fp8Mode::WeightOnly`]).
    Fp8(Fp8Weight),
    /// fp8, multiplied in fp8 against the per-token quantised input ([`Fp8Mode::Matmul`]).
    Fp8Matmul(Fp8Weight),
    /// 4-bit, dequantised to the input's dtype for a normal matmul ([`Fp8Mode::Uint4`]).
    Uint4(Uint4Weight),
    /// A frozen base weight with its frozen accuracy recovery adapter beside it, never merged.
    Recovered(Box<RecoveredWeight>),
}

/// `y = x·Wᵀ + b + (x·Aᵀ)·Bᵀ`: the base weight (4-bit, or kept dense where it cannot be) and the
/// adapter that recovers what quantising it lost (AI Toolkit's ARA: rank from the file, α = r, so
/// the scale is 1).
#[derive(Debug)]
pub struct RecoveredWeight {
    pub base: Weight,
    /// A `[r, in]`, in the compute dtype, no grad.
    pub down: Tensor,
    /// B `[out, r]`, in the compute dtype, no grad.
    pub up: Tensor,
}

impl RecoveredWeight {
    fn linear(&self, x: &Tensor, bias: Option<&Tensor>) -> Result<Tensor, TchError> {
        let y = self.base.linear(x, bias)?;
        let size = y.size();
        let out = *size.last().unwrap_or(&0);
        let rank = self.down.size()[0];
        let h = x.f_linear::<Tensor>(&self.down.f_to_kind(x.kind())?, None)?;
        y.f_reshape([-1, out])?
            .f_addmm(
                &h.f_reshape([-1, rank])?,
                &self.up.f_to_kind(x.kind())?.f_tr()?,
            )?
            .f_view(size.as_slice())
    }
}

impl Weight {
    /// `x Wᵀ + bias` for `x` `[..., in]`.
    pub fn linear(&self, x: &Tensor, bias: Option<&Tensor>) -> Result<Tensor, TchError> {
        match self {
            Weight::Dense(w) => x.f_linear(w, bias),
            Weight::Fp8(w) => x.f_linear(&w.dequantize(x.kind())?, bias),
            Weight::Fp8Matmul(w) => {
                helper::fp8_linear(x, &w.codes, &w.scale, bias).map_err(torch_error)
            }
            Weight::Uint4(w) => helper::uint4_linear(x, &w.packed, &w.scale, &w.zero_point, bias)
                .map_err(torch_error),
            Weight::Recovered(r) => r.linear(x, bias),
        }
    }

    /// Rows `ids` of the matrix in `kind` (an embedding table).
    pub fn rows(&self, ids: &Tensor, kind: Kind) -> Result<Tensor, TchError> {
        match self {
            Weight::Dense(w) => {
                let mut shape = ids.size();
                shape.push(w.size()[1]);
                w.f_index_select(0, &ids.f_reshape([-1])?)?
                    .f_to_kind(kind)?
                    .f_reshape(shape.as_slice())
            }
            Weight::Fp8(w) | Weight::Fp8Matmul(w) => w.rows(ids, kind),
            Weight::Uint4(_) | Weight::Recovered(_) => Err(TchError::Kind(
                "4-bit weights are not used as embedding tables".into(),
            )),
        }
    }

    /// The mode this weight is in.
    pub fn mode(&self) -> Fp8Mode {
        match self {
            Weight::Dense(_) => Fp8Mode::Off,
            Weight::Fp8(_) => Fp8Mode::WeightOnly,
            Weight::Fp8Matmul(_) => Fp8Mode::Matmul,
            Weight::Uint4(_) => Fp8Mode::Uint4,
            Weight::Recovered(r) => r.base.mode(),
        }
    }

    /// This weight in `mode`: dense weights are quantised, fp8 weights dequantised to `kind` (for
    /// [`Fp8Mode::Off`]) or shared under the other fp8 label.
    /// 4-bit weights (and their adapters) stay as they are: they cannot be re-stored without
    /// the source weights.
    pub fn to_mode(&self, mode: Fp8Mode, kind: Kind) -> Result<Weight, TchError> {
        let shared = |w: &Fp8Weight| Fp8Weight {
            codes: w.codes.shallow_clone(),
            scale: w.scale.shallow_clone(),
        };
        Ok(match (self, mode) {
            (Weight::Uint4(_) | Weight::Recovered(_), _) => {
                self.map(&mut |t| Ok(t.shallow_clone()))?
            }
            (Weight::Dense(w), Fp8Mode::Uint4) => Weight::from_dense(w.shallow_clone(), mode)?,
            (Weight::Dense(w), Fp8Mode::Off) => Weight::Dense(w.shallow_clone()),
            (Weight::Dense(w), Fp8Mode::WeightOnly) => Weight::Fp8(Fp8Weight::quantize(w)?),
            (Weight::Dense(w), Fp8Mode::Matmul) => Weight::Fp8Matmul(Fp8Weight::quantize(w)?),
            (Weight::Fp8(w) | Weight::Fp8Matmul(w), Fp8Mode::Off) => {
                Weight::Dense(w.dequantize(kind)?)
            }
            (Weight::Fp8(w) | Weight::Fp8Matmul(w), Fp8Mode::WeightOnly) => Weight::Fp8(shared(w)),
            (Weight::Fp8(w) | Weight::Fp8Matmul(w), Fp8Mode::Matmul) => {
                Weight::Fp8Matmul(shared(w))
            }
            (Weight::Fp8(w) | Weight::Fp8Matmul(w), Fp8Mode::Uint4) => {
                Weight::from_dense(w.dequantize(kind)?, mode)?
            }
        })
    }

    /// A dense weight in `mode`: kept, or quantised (for [`Fp8Mode::Uint4`] only where its inputs
    /// split into groups of 64).
    pub fn from_dense(weight: Tensor, mode: Fp8Mode) -> Result<Weight, TchError> {
        Ok(match mode {
            Fp8Mode::Off => Weight::Dense(weight),
            Fp8Mode::Uint4 => match weight.size()[..] {
                [_, inp] if Uint4Weight::supports(inp) => {
                    Weight::Uint4(Uint4Weight::quantize(&weight)?)
                }
                _ => Weight::Dense(weight),
            },
            Fp8Mode::WeightOnly => Weight::Fp8(Fp8Weight::quantize(&weight)?),
            Fp8Mode::Matmul => Weight::Fp8Matmul(Fp8Weight::quantize(&weight)?),
        })
    }

    /// A stored fp8 weight in `mode` (`Off` dequantises it to `kind`).
    pub fn from_fp8(weight: Fp8Weight, mode: Fp8Mode, kind: Kind) -> Result<Weight, TchError> {
        Ok(match mode {
            Fp8Mode::Off => Weight::Dense(weight.dequantize(kind)?),
            Fp8Mode::WeightOnly => Weight::Fp8(weight),
            Fp8Mode::Matmul => Weight::Fp8Matmul(weight),
            Fp8Mode::Uint4 => Weight::from_dense(weight.dequantize(kind)?, mode)?,
        })
    }

    /// Output channels stacked (`parts` all in one mode).
    pub fn cat(parts: Vec<Weight>) -> Result<Weight, TchError> {
        let mode = parts.first().map_or(Fp8Mode::Off, Weight::mode);
        if parts.iter().any(|p| p.mode() != mode) {
            return Err(TchError::Kind(
                "cannot stack weights stored in different modes".into(),
            ));
        }
        let mut dense = Vec::new();
        let mut fp8 = Vec::new();
        for p in parts {
            match p {
                Weight::Dense(w) => dense.push(w),
                Weight::Fp8(w) | Weight::Fp8Matmul(w) => fp8.push(w),
                Weight::Uint4(_) | Weight::Recovered(_) => {
                    return Err(TchError::Kind("4-bit weights are not stacked".into()))
                }
            }
        }
        Ok(match mode {
            Fp8Mode::Off | Fp8Mode::Uint4 => Weight::Dense(Tensor::f_cat(&dense, 0)?),
            Fp8Mode::WeightOnly => Weight::Fp8(Fp8Weight::cat(&fp8)?),
            Fp8Mode::Matmul => Weight::Fp8Matmul(Fp8Weight::cat(&fp8)?),
        })
    }

    /// The same weight with every tensor passed through `f`.
    pub fn map(
        &self,
        f: &mut dyn FnMut(&Tensor) -> Result<Tensor, TchError>,
    ) -> Result<Weight, TchError> {
        Ok(match self {
            Weight::Dense(w) => Weight::Dense(f(w)?),
            Weight::Fp8(w) => Weight::Fp8(w.map(f)?),
            Weight::Fp8Matmul(w) => Weight::Fp8Matmul(w.map(f)?),
            Weight::Uint4(w) => Weight::Uint4(w.map(f)?),
            Weight::Recovered(r) => Weight::Recovered(Box::new(RecoveredWeight {
                base: r.base.map(f)?,
                down: f(&r.down)?,
                up: f(&r.up)?,
            })),
        })
    }

    /// Every tensor the weight holds.
    pub fn tensors(&self) -> Vec<&Tensor> {
        match self {
            Weight::Dense(w) => vec![w],
            Weight::Fp8(w) | Weight::Fp8Matmul(w) => vec![&w.codes, &w.scale],
            Weight::Uint4(w) => w.tensors(),
            Weight::Recovered(r) => {
                let mut t = r.base.tensors();
                t.extend([&r.down, &r.up]);
                t
            }
        }
    }

    /// `[out, in]` (`[0, 0]` for the empty placeholder of a weight that failed to load).
    pub fn size(&self) -> [i64; 2] {
        let codes_or_weight = match self {
            Weight::Dense(w) => w,
            Weight::Fp8(w) | Weight::Fp8Matmul(w) => &w.codes,
            Weight::Uint4(w) => return [w.out_features(), w.in_features()],
            Weight::Recovered(r) => return r.base.size(),
        };
        match codes_or_weight.size()[..] {
            [out, inp] => [out, inp],
            _ => [0, 0],
        }
    }
}

/// Loads the weight `name` `[out, in]` stored as `mode` says: kept as fp8 when the source stores
/// it so (ComfyUI "fp8_scaled"), otherwise read in the loader's kind and quantised per output
/// channel on the loader's device; dense in the loader's kind for [`Fp8Mode::Off`]. Problems are
/// recorded in the loader (see [`Loader::finish`]), which then holds an empty placeholder.
///
/// Reading in the compute dtype rather than fp32 keeps the transient copy small (umT5's embedding
/// would take 4.2 GB in fp32); rounding fp32 → bf16 → e4m3 differs from rounding fp32 → e4m3 only
/// at rare ties, by one e4m3 step.
pub fn load_weight(w: &Loader, name: &str, shape: [i64; 2], mode: Fp8Mode) -> Weight {
    let weight = match mode {
        Fp8Mode::Off => Ok(Weight::Dense(w.get(name, &shape))),
        _ => match w.get_fp8(name, &shape) {
            Some(stored) => {
                Fp8Weight::from_stored(stored).and_then(|fp8| Weight::from_fp8(fp8, mode, w.kind))
            }
            None => match w.get(name, &shape) {
                // A tensor that failed to load is already reported by the loader.
                missing if missing.numel() == 0 => Ok(Weight::Dense(missing)),
                dense => Weight::from_dense(dense, mode),
            },
        },
    };
    weight.unwrap_or_else(|e| {
        w.fail(WeightError::Torch(e));
        Weight::Dense(Tensor::empty([0], (w.kind, Device::Cpu)))
    })
}

/// Bytes a tensor's elements take.
pub fn tensor_bytes(t: &Tensor) -> u64 {
    (t.numel() * t.kind().elt_size_in_bytes()) as u64
}

/// Whether fp8 matmuls run on `device` with outputs in `kind`: one small fp8 linear checked
/// against its dequantised reference. Err says why not (e.g. a GPU older than sm89), for a message
/// that suggests weight-only fp8 instead.
pub fn check_fp8_matmul(device: Device, kind: Kind) -> Result<(), String> {
    // Fixed, irregular values: the probe leaves libtorch's random generator alone.
    let values = |n: i64, step: f64| -> Result<Tensor, TchError> {
        Tensor::f_arange(n, (Kind::Float, device))?
            .f_mul_scalar(step)?
            .f_sin()
    };
    let probe = || -> Result<f64, TchError> {
        let _no_grad = tch::no_grad_guard();
        let x = values(16 * 32, 0.37)?
            .f_reshape([16, 32])?
            .f_to_kind(kind)?;
        let w = Fp8Weight::quantize(&values(32 * 32, 0.91)?.f_reshape([32, 32])?)?;
        let bias = values(32, 1.3)?.f_to_kind(kind)?;
        let (x_codes, x_scale) = helper::fp8_quantize_rows(&x).map_err(torch_error)?;
        let x_fp8 = Fp8Weight {
            codes: x_codes,
            scale: x_scale,
        };
        let reference = x_fp8.dequantize(Kind::Float)?.f_linear(
            &w.dequantize(Kind::Float)?,
            Some(&bias.f_to_kind(Kind::Float)?),
        )?;
        let y = Weight::Fp8Matmul(w).linear(&x, Some(&bias))?;
        let err = y
            .f_to_kind(Kind::Float)?
            .f_sub(&reference)?
            .f_norm()?
            .f_double_value(&[])?
            / reference.f_norm()?.f_double_value(&[])?;
        Ok(err)
    };
    match probe() {
        // Outputs are rounded to `kind` and the GPU accumulates fast: allow a few bf16 ulps.
        Ok(err) if err < 0.02 => Ok(()),
        Ok(err) => Err(format!(
            "the fp8 matmul is off by {err:.3} (relative) from its dequantised reference"
        )),
        Err(e) => Err(e.to_string()),
    }
}

fn torch_error(e: helper::HelperError) -> TchError {
    TchError::Torch(e.to_string())
}
