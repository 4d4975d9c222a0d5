//! Optimizers over the LoRA parameters: AdamW with fp32 state, and AdamW with block-wise 8-bit
//! state (AI Toolkit's `adamw8bit`). The parameters live as views of one flat fp32 buffer, so an
//! update is a handful of whole-buffer operations instead of hundreds of small kernels. Prodigy and
//! Adafactor live in their own modules; [`choice::TrainOptimizer`] is the one the trainer holds.

pub mod adafactor;
pub mod choice;
pub mod prodigy;

use tch::{Device, Kind, Tensor};

/// AdamW hyper-parameters (decoupled weight decay, Loshchilov & Hutter).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl AdamWConfig {
    /// The job's `lr` and `optimizer_params` (whose defaults are AI Toolkit's and live only in the
    /// config crate).
    pub fn new(lr: f64, params: &wanlora_config::OptimizerParams) -> AdamWConfig {
        AdamWConfig {
            lr,
            beta1: params.betas[0],
            beta2: params.betas[1],
            eps: params.eps,
            weight_decay: params.weight_decay,
        }
    }
}

/// A set of trainable tensors backed by one flat fp32 buffer.
pub struct FlatParams {
    /// The storage every parameter is a view of (does not itself require grad).
    pub flat: Tensor,
    /// The parameters: leaves requiring grad, each a view into `flat`.
    pub params: Vec<Tensor>,
    offsets: Vec<(i64, i64)>,
}

impl FlatParams {
    /// Moves `tensors` (any float kind) into one flat fp32 buffer on `device`; returns the new leaf
    /// views in the same order. Callers replace their tensors with these.
    pub fn new(tensors: &[Tensor], device: Device) -> FlatParams {
        let total: i64 = tensors.iter().map(|t| t.numel() as i64).sum();
        let flat = Tensor::zeros([total], (Kind::Float, device));
        let mut offsets = Vec::with_capacity(tensors.len());
        let mut params = Vec::with_capacity(tensors.len());
        let mut off = 0;
        tch::no_grad(|| {
            for t in tensors {
                let n = t.numel() as i64;
                let view = flat.narrow(0, off, n).view(t.size().as_slice());
                view.shallow_clone().copy_(&t.detach().to_kind(Kind::Float));
                params.push(view.set_requires_grad(true));
                offsets.push((off, n));
                off += n;
            }
        });
        FlatParams {
            flat,
            params,
            offsets,
        }
    }

    pub fn numel(&self) -> i64 {
        self.flat.numel() as i64
    }

    /// All gradients as one flat fp32 tensor (zeros where a parameter got none this step).
    pub fn flat_grad(&self) -> Tensor {
        let parts: Vec<Tensor> = self
            .params
            .iter()
            .map(|p| {
                let g = p.grad();
                if g.defined() {
                    g.reshape([-1]).to_kind(Kind::Float)
                } else {
                    Tensor::zeros([p.numel() as i64], (Kind::Float, p.device()))
                }
            })
            .collect();
        Tensor::cat(&parts, 0)
    }

    /// True when at least one parameter received a gradient.
    pub fn has_grad(&self) -> bool {
        self.params.iter().any(|p| p.grad().defined())
    }

    pub fn zero_grad(&self) {
        for p in &self.params {
            let mut p = p.shallow_clone();
            p.zero_grad();
        }
    }

    /// The (offset, length) of parameter `i` in the flat buffer.
    pub fn span(&self, i: usize) -> (i64, i64) {
        self.offsets[i]
    }
}

/// Clips the flat gradient to `max_norm` in place; returns the norm before clipping.
pub fn clip_grad_norm(grad: &mut Tensor, max_norm: f64) -> f64 {
    let norm = grad.norm().double_value(&[]);
    if max_norm > 0.0 && norm.is_finite() && norm > max_norm {
        let _ = grad.g_mul_scalar_(max_norm / (norm + 1e-6));
    }
    norm
}

/// The optimizer state, in one of two representations.
pub enum AdamState {
    /// First and second moments in fp32.
    Full { m: Tensor, v: Tensor },
    /// Block-wise 8-bit moments (see [`Quantized8`]).
    EightBit { m: Quantized8, v: Quantized8 },
}

/// AdamW over a [`FlatParams`].
pub struct AdamW {
    pub config: AdamWConfig,
    pub state: AdamState,
    pub step: i64,
}

impl AdamW {
    pub fn new(params: &FlatParams, config: AdamWConfig, eight_bit: bool) -> AdamW {
        let n = params.numel();
        let dev = params.flat.device();
        let state = if eight_bit {
            AdamState::EightBit {
                m: Quantized8::zeros(n, true, dev),
                v: Quantized8::zeros(n, false, dev),
            }
        } else {
            AdamState::Full {
                m: Tensor::zeros([n], (Kind::Float, dev)),
                v: Tensor::zeros([n], (Kind::Float, dev)),
            }
        };
        AdamW {
            config,
            state,
            step: 0,
        }
    }

    /// One update of `params.flat` from the flat gradient `grad` with learning rate `lr`.
    pub fn update(&mut self, params: &FlatParams, grad: &Tensor, lr: f64) {
        self.step += 1;
        let c = self.config;
        let t = self.step as i32;
        let bias1 = 1.0 - c.beta1.powi(t);
        let bias2 = 1.0 - c.beta2.powi(t);
        tch::no_grad(|| {
            let (m, v) = match &self.state {
                AdamState::Full { m, v } => (m.shallow_clone(), v.shallow_clone()),
                AdamState::EightBit { m, v } => (m.dequantize(), v.dequantize()),
            };
            let mut m = m;
            let mut v = v;
            let _ = m.g_mul_scalar_(c.beta1);
            let _ = m.g_add_(&(grad * (1.0 - c.beta1)));
            let _ = v.g_mul_scalar_(c.beta2);
            let _ = v.g_add_(&(grad.square() * (1.0 - c.beta2)));
            let mut flat = params.flat.shallow_clone();
            if c.weight_decay > 0.0 {
                let _ = flat.g_mul_scalar_(1.0 - lr * c.weight_decay);
            }
            let denom = (&v / bias2).sqrt() + c.eps;
            let _ = flat.g_sub_(&(&m / &denom * (lr / bias1)));
            if let AdamState::EightBit { m: qm, v: qv } = &mut self.state {
                qm.store(&m);
                qv.store(&v);
            }
        });
    }
}

/// A block-wise 8-bit tensor: values are grouped in blocks of [`Quantized8::BLOCK`], each stored
/// as its absolute maximum (fp32) and one byte per value with square-root companding, which keeps
/// relative precision for the many small moments (like the dynamic maps of 8-bit optimizers).
pub struct Quantized8 {
    pub codes: Tensor,
    pub absmax: Tensor,
    signed: bool,
    len: i64,
}

impl Quantized8 {
    pub const BLOCK: i64 = 256;

    pub fn zeros(len: i64, signed: bool, device: Device) -> Quantized8 {
        let blocks = (len + Self::BLOCK - 1) / Self::BLOCK;
        let kind = if signed { Kind::Int8 } else { Kind::Uint8 };
        Quantized8 {
            codes: Tensor::zeros([blocks * Self::BLOCK], (kind, device)),
            absmax: Tensor::zeros([blocks, 1], (Kind::Float, device)),
            signed,
            len,
        }
    }

    fn levels(&self) -> f64 {
        if self.signed {
            127.0
        } else {
            255.0
        }
    }

    pub fn dequantize(&self) -> Tensor {
        let q = self.codes.to_kind(Kind::Float).view([-1, Self::BLOCK]) / self.levels();
        let x = q.abs().square() * q.sign() * &self.absmax;
        x.view([-1]).narrow(0, 0, self.len)
    }

    pub fn store(&mut self, x: &Tensor) {
        let pad = self.codes.numel() as i64 - self.len;
        let x = if pad > 0 {
            x.constant_pad_nd([0, pad])
        } else {
            x.shallow_clone()
        };
        let blocks = x.view([-1, Self::BLOCK]);
        let absmax = blocks.abs().amax([1], true).clamp_min(1e-30);
        let q = (blocks.abs() / &absmax).sqrt() * blocks.sign() * self.levels();
        let kind = self.codes.kind();
        self.codes = q.round().view([-1]).to_kind(kind);
        self.absmax = absmax;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference AdamW step for one tensor, written out per element.
    fn reference(
        p: &[f32],
        g: &[f32],
        m: &mut [f64],
        v: &mut [f64],
        step: i32,
        c: AdamWConfig,
    ) -> Vec<f32> {
        p.iter()
            .zip(g)
            .enumerate()
            .map(|(i, (&p, &g))| {
                let g = g as f64;
                m[i] = c.beta1 * m[i] + (1.0 - c.beta1) * g;
                v[i] = c.beta2 * v[i] + (1.0 - c.beta2) * g * g;
                let mh = m[i] / (1.0 - c.beta1.powi(step));
                let vh = v[i] / (1.0 - c.beta2.powi(step));
                let p = p as f64 * (1.0 - c.lr * c.weight_decay);
                (p - c.lr * mh / (vh.sqrt() + c.eps)) as f32
            })
            .collect()
    }

    #[test]
    fn adamw_matches_the_formula_over_several_steps() {
        let a = Tensor::from_slice(&[0.5f32, -1.0, 2.0, 0.1]).view([2, 2]);
        let b = Tensor::from_slice(&[0.3f32, -0.7, 0.9]);
        let fp = FlatParams::new(&[a.shallow_clone(), b.shallow_clone()], Device::Cpu);
        let c = AdamWConfig {
            weight_decay: 0.1,
            ..AdamWConfig::new(0.01, &Default::default())
        };
        let mut opt = AdamW::new(&fp, c, false);
        let mut p: Vec<f32> = Vec::<f32>::try_from(fp.flat.copy()).unwrap();
        let (mut m, mut v) = (vec![0.0; 7], vec![0.0; 7]);
        for step in 1..=3 {
            let loss = (fp.params[0].square().sum(Kind::Float) * step as f64)
                + fp.params[1].sum(Kind::Float);
            loss.backward();
            let g = fp.flat_grad();
            let gv: Vec<f32> = Vec::<f32>::try_from(&g).unwrap();
            opt.update(&fp, &g, c.lr);
            fp.zero_grad();
            p = reference(&p, &gv, &mut m, &mut v, step, c);
            let got: Vec<f32> = Vec::<f32>::try_from(fp.flat.copy()).unwrap();
            for (x, y) in got.iter().zip(&p) {
                assert!((x - y).abs() < 1e-6, "step {step}: {got:?} vs {p:?}");
            }
        }
        // The parameters are views of the flat buffer: updates show through.
        let view: Vec<f32> = Vec::<f32>::try_from(fp.params[1].detach().copy()).unwrap();
        let flat: Vec<f32> = Vec::<f32>::try_from(fp.flat.copy()).unwrap();
        assert_eq!(view, flat[4..].to_vec());
    }

    #[test]
    fn eight_bit_state_round_trips_within_its_precision() {
        let x = Tensor::randn([1000], (Kind::Float, Device::Cpu)) * 1e-3;
        let mut q = Quantized8::zeros(1000, true, Device::Cpu);
        q.store(&x);
        let back = q.dequantize();
        let rel = (&back - &x).norm().double_value(&[]) / x.norm().double_value(&[]);
        assert!(rel < 0.02, "relative error {rel}");
        assert_eq!(q.codes.kind(), Kind::Int8);
        let v = x.square();
        let mut qv = Quantized8::zeros(1000, false, Device::Cpu);
        qv.store(&v);
        assert!(qv.dequantize().min().double_value(&[]) >= 0.0);
    }

    #[test]
    fn eight_bit_adamw_follows_full_adamw_closely() {
        tch::manual_seed(0);
        let init = Tensor::randn([4096], (Kind::Float, Device::Cpu));
        let target = Tensor::randn([4096], (Kind::Float, Device::Cpu));
        let run = |eight: bool| {
            let fp = FlatParams::new(&[init.shallow_clone()], Device::Cpu);
            let mut opt = AdamW::new(&fp, AdamWConfig::new(0.05, &Default::default()), eight);
            for _ in 0..50 {
                (&fp.params[0] - &target)
                    .square()
                    .sum(Kind::Float)
                    .backward();
                let g = fp.flat_grad();
                opt.update(&fp, &g, 0.05);
                fp.zero_grad();
            }
            fp.flat.copy()
        };
        let (full, eight) = (run(false), run(true));
        let start = (&init - &target).norm().double_value(&[]);
        let end_full = (&full - &target).norm().double_value(&[]);
        let end_eight = (&eight - &target).norm().double_value(&[]);
        assert!(
            end_full < 0.5 * start && end_eight < 0.5 * start,
            "{start} {end_full} {end_eight}"
        );
        let diff = (&full - &eight).norm().double_value(&[]) / full.norm().double_value(&[]);
        assert!(diff < 0.05, "8-bit and fp32 AdamW diverged: {diff}");
    }

    #[test]
    fn clipping_scales_to_the_max_norm() {
        let mut g = Tensor::from_slice(&[3.0f32, 4.0]);
        let n = clip_grad_norm(&mut g, 1.0);
        assert!((n - 5.0).abs() < 1e-6);
        assert!((g.norm().double_value(&[]) - 1.0).abs() < 1e-4);
    }
}
