//! Adafactor (Shazeer & Stern, "Adafactor: Adaptive Learning Rates with Sublinear Memory Cost"), as
//! in transformers' `Adafactor` and AI Toolkit's copy of it (which only adds stochastic rounding for
//! low-precision parameters; ours are fp32). AI Toolkit's defaults: the given `lr`, no relative step,
//! no parameter scaling, no warmup init.
//!
//! The second moment of a matrix is factored into its row and column means, so it needs each LoRA
//! matrix's own 2-D shape: the update works on per-tensor views of the flat buffers.

use tch::{Kind, Tensor};

use super::FlatParams;

/// `optimizer_params` of Adafactor (transformers' names and defaults; AI Toolkit's choices for
/// `scale_parameter`, `relative_step` and `warmup_init`, which are off).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdafactorConfig {
    /// Regularisation of the squared gradient, and the floor of the parameter scale.
    pub eps: [f64; 2],
    /// The most RMS an update may have before it is scaled down.
    pub clip_threshold: f64,
    /// The second-moment decay is `1 − t^decay_rate`.
    pub decay_rate: f64,
    /// First-moment decay; `None`: no first moment.
    pub beta1: Option<f64>,
    pub weight_decay: f64,
    /// Multiplies the step by the parameter's RMS.
    pub scale_parameter: bool,
}

impl Default for AdafactorConfig {
    fn default() -> Self {
        AdafactorConfig {
            eps: [1e-30, 1e-3],
            clip_threshold: 1.0,
            decay_rate: -0.8,
            beta1: None,
            weight_decay: 0.0,
            scale_parameter: false,
        }
    }
}

/// The second-moment statistics of one parameter tensor: factored (row and column means of a
/// matrix) or full (a vector).
enum Moment {
    Factored { row: Tensor, col: Tensor },
    Full(Tensor),
}

/// Adafactor's state. Every statistic is a view into one of three flat buffers (`rows`, `cols`,
/// `full`) so that the resumable state is a few whole tensors.
pub struct Adafactor {
    pub config: AdafactorConfig,
    pub rows: Tensor,
    pub cols: Tensor,
    pub full: Tensor,
    /// First moment over the whole flat buffer (empty without `beta1`).
    pub exp_avg: Tensor,
    moments: Vec<Moment>,
    pub step: i64,
}

impl Adafactor {
    pub fn new(params: &FlatParams, config: AdafactorConfig) -> Adafactor {
        let device = params.flat.device();
        let shapes: Vec<Vec<i64>> = params.params.iter().map(|p| p.size()).collect();
        // Row statistics have the shape without the last axis, column ones without the second last.
        let row_len = |s: &[i64]| s[..s.len() - 1].iter().product::<i64>();
        let col_len = |s: &[i64]| s[..s.len() - 2].iter().product::<i64>() * s[s.len() - 1];
        let factored = |s: &[i64]| s.len() >= 2;
        let (mut n_rows, mut n_cols, mut n_full) = (0, 0, 0);
        for s in &shapes {
            if factored(s) {
                n_rows += row_len(s);
                n_cols += col_len(s);
            } else {
                n_full += s.iter().product::<i64>();
            }
        }
        let zeros = |n: i64| Tensor::zeros([n], (Kind::Float, device));
        let (rows, cols, full) = (zeros(n_rows), zeros(n_cols), zeros(n_full));
        let (mut r, mut c, mut f) = (0, 0, 0);
        let moments = shapes
            .iter()
            .map(|s| {
                if factored(s) {
                    let (nr, nc) = (row_len(s), col_len(s));
                    let mut col_shape = s[..s.len() - 2].to_vec();
                    col_shape.push(s[s.len() - 1]);
                    let m = Moment::Factored {
                        row: rows.narrow(0, r, nr).view(&s[..s.len() - 1]),
                        col: cols.narrow(0, c, nc).view(col_shape.as_slice()),
                    };
                    (r, c) = (r + nr, c + nc);
                    m
                } else {
                    let n = s.iter().product::<i64>();
                    let m = Moment::Full(full.narrow(0, f, n).view(s.as_slice()));
                    f += n;
                    m
                }
            })
            .collect();
        let exp_avg = if config.beta1.is_some() {
            params.flat.zeros_like()
        } else {
            zeros(0)
        };
        Adafactor {
            config,
            rows,
            cols,
            full,
            exp_avg,
            moments,
            step: 0,
        }
    }

    fn rms(t: &Tensor) -> Tensor {
        t.norm() / (t.numel() as f64).sqrt()
    }

    /// One update of `params.flat` from the flat gradient with learning rate `lr`.
    pub fn update(&mut self, params: &FlatParams, grad: &Tensor, lr: f64) {
        self.step += 1;
        let c = self.config;
        let beta2t = 1.0 - (self.step as f64).powf(c.decay_rate);
        tch::no_grad(|| {
            for (i, moment) in self.moments.iter_mut().enumerate() {
                let (off, n) = params.span(i);
                let shape = params.params[i].size();
                let mut p = params.flat.narrow(0, off, n).view(shape.as_slice());
                let g = grad.narrow(0, off, n).view(shape.as_slice());
                // With scale_parameter the rate is a tensor (the parameter's RMS): no host sync.
                let step_lr = if c.scale_parameter {
                    Self::rms(&p).clamp_min(c.eps[1]) * lr
                } else {
                    Tensor::from(lr).to_device(p.device())
                };
                let sq = g.square() + c.eps[0];
                let mut update = match moment {
                    Moment::Factored { row, col } => {
                        let _ = row.g_mul_scalar_(beta2t);
                        let _ = row.g_add_(&(sq.mean_dim(-1, false, Kind::Float) * (1.0 - beta2t)));
                        let _ = col.g_mul_scalar_(beta2t);
                        let _ = col.g_add_(&(sq.mean_dim(-2, false, Kind::Float) * (1.0 - beta2t)));
                        let r_factor = (&*row / row.mean_dim(-1, true, Kind::Float))
                            .rsqrt()
                            .unsqueeze(-1);
                        let c_factor = col.unsqueeze(-2).rsqrt();
                        r_factor * c_factor * &g
                    }
                    Moment::Full(v) => {
                        let _ = v.g_mul_scalar_(beta2t);
                        let _ = v.g_add_(&(sq * (1.0 - beta2t)));
                        v.rsqrt() * &g
                    }
                };
                let scale = (Self::rms(&update) / c.clip_threshold).clamp_min(1.0);
                update = update / scale * &step_lr;
                if let Some(beta1) = c.beta1 {
                    let mut m = self.exp_avg.narrow(0, off, n).view(shape.as_slice());
                    let _ = m.g_mul_scalar_(beta1);
                    let _ = m.g_add_(&(update * (1.0 - beta1)));
                    update = m.shallow_clone();
                }
                if c.weight_decay != 0.0 {
                    let _ = p.g_add_(&(&p * (-c.weight_decay) * &step_lr));
                }
                let _ = p.g_sub_(&update);
            }
        });
    }

    /// The state tensors by name, for the resumable state.
    pub fn tensors(&self) -> Vec<(&'static str, &Tensor)> {
        vec![
            ("adafactor.rows", &self.rows),
            ("adafactor.cols", &self.cols),
            ("adafactor.full", &self.full),
            ("adafactor.exp_avg", &self.exp_avg),
        ]
    }

    /// The state buffers, to be overwritten in place (the per-tensor views keep pointing at them).
    pub fn tensors_mut(&mut self) -> Vec<(&'static str, &mut Tensor)> {
        vec![
            ("adafactor.rows", &mut self.rows),
            ("adafactor.cols", &mut self.cols),
            ("adafactor.full", &mut self.full),
            ("adafactor.exp_avg", &mut self.exp_avg),
        ]
    }
}
