//! Prodigy (Mishchenko & Defazio, "Prodigy: An Expeditiously Adaptive Parameter-Free Learner"), the
//! algorithm of the `prodigyopt` package AI Toolkit calls for `optimizer: prodigy`, over one flat
//! parameter buffer (one parameter group, so the distance estimate `d` is global, as with
//! `prodigyopt` and one group).
//!
//! Adam's moments are scaled by the estimate `d` of the distance to the solution, which grows from
//! `d0` as `d̂ = d_coef · Σ⟨g_k, x_0 − x_k⟩·λ_k / ‖s‖₁`; the step is `d·lr`, so `lr` stays near 1.

use std::collections::BTreeMap;
use tch::{Kind, Tensor};

use super::FlatParams;

/// `optimizer_params` of Prodigy, with `prodigyopt`'s defaults (AI Toolkit passes `eps = 1e-6`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProdigyConfig {
    pub beta1: f64,
    pub beta2: f64,
    /// EMA of the numerator and of `s`; `None`: √β2.
    pub beta3: Option<f64>,
    pub eps: f64,
    pub weight_decay: f64,
    /// Weight decay applied to the parameters (AdamW style) instead of added to the gradient.
    pub decouple: bool,
    pub use_bias_correction: bool,
    /// Leaves the learning rate out of `s` (for runs with a warmup).
    pub safeguard_warmup: bool,
    pub d0: f64,
    pub d_coef: f64,
    /// The most `d` may grow per step (a factor); infinite by default.
    pub growth_rate: f64,
}

impl Default for ProdigyConfig {
    fn default() -> Self {
        ProdigyConfig {
            beta1: 0.9,
            beta2: 0.999,
            beta3: None,
            eps: 1e-6,
            weight_decay: 0.0,
            decouple: true,
            use_bias_correction: false,
            safeguard_warmup: false,
            d0: 1e-6,
            d_coef: 1.0,
            growth_rate: f64::INFINITY,
        }
    }
}

/// Prodigy's state: Adam's moments (already scaled by `d`), the weighted gradient sum `s`, the
/// starting point `p0`, and the scalars of the distance estimate.
pub struct Prodigy {
    pub config: ProdigyConfig,
    pub exp_avg: Tensor,
    pub exp_avg_sq: Tensor,
    pub s: Tensor,
    pub p0: Tensor,
    pub d: f64,
    pub d_max: f64,
    pub d_numerator: f64,
    /// Steps taken (`prodigyopt`'s `k`).
    pub step: i64,
}

impl Prodigy {
    pub fn new(params: &FlatParams, config: ProdigyConfig) -> Prodigy {
        let zeros = || params.flat.zeros_like();
        Prodigy {
            config,
            exp_avg: zeros(),
            exp_avg_sq: zeros(),
            s: zeros(),
            p0: params.flat.detach().copy(),
            d: config.d0,
            d_max: config.d0,
            d_numerator: 0.0,
            step: 0,
        }
    }

    fn beta3(&self) -> f64 {
        self.config.beta3.unwrap_or(self.config.beta2.sqrt())
    }

    /// The step size of the next update for learning rate `lr` (what AI Toolkit logs as the rate).
    pub fn effective_lr(&self, lr: f64) -> f64 {
        self.d * lr * self.bias_correction()
    }

    fn bias_correction(&self) -> f64 {
        let c = &self.config;
        if c.use_bias_correction {
            let k = (self.step + 1) as i32;
            (1.0 - c.beta2.powi(k)).sqrt() / (1.0 - c.beta1.powi(k))
        } else {
            1.0
        }
    }

    /// One update of `params.flat` from the flat gradient with learning rate `lr` (the scheduled
    /// multiplier of `d`). Like `prodigyopt`, a step with no signal yet (‖s‖₁ = 0, e.g. at `lr = 0`)
    /// changes nothing.
    pub fn update(&mut self, params: &FlatParams, grad: &Tensor, lr: f64) {
        let c = self.config;
        let (beta1, beta2, beta3) = (c.beta1, c.beta2, self.beta3());
        let d = self.d;
        let dlr = d * lr * self.bias_correction();
        tch::no_grad(|| {
            let mut flat = params.flat.shallow_clone();
            let grad = if c.weight_decay != 0.0 && !c.decouple {
                grad + &flat * c.weight_decay
            } else {
                grad.shallow_clone()
            };
            if lr <= 0.0 {
                return;
            }
            let dot = grad.dot(&(&self.p0 - &flat)).double_value(&[]);
            let d_numerator = self.d_numerator * beta3 + (d / c.d0) * dlr * dot;
            if beta1 > 0.0 {
                let _ = self.exp_avg.g_mul_scalar_(beta1);
                let _ = self.exp_avg.g_add_(&(&grad * (d * (1.0 - beta1))));
            }
            let _ = self.exp_avg_sq.g_mul_scalar_(beta2);
            let _ = self
                .exp_avg_sq
                .g_add_(&(grad.square() * (d * d * (1.0 - beta2))));
            let s_weight = if c.safeguard_warmup { d } else { dlr };
            let _ = self.s.g_mul_scalar_(beta3);
            let _ = self.s.g_add_(&(&grad * ((d / c.d0) * s_weight)));
            let d_denom = self.s.abs().sum(Kind::Float).double_value(&[]);
            if d_denom == 0.0 {
                return;
            }
            let d_hat = c.d_coef * d_numerator / d_denom;
            let mut d_new = d;
            if d == c.d0 {
                d_new = d_new.max(d_hat);
            }
            self.d_max = self.d_max.max(d_hat);
            d_new = self.d_max.min(d_new * c.growth_rate);
            self.d_numerator = d_numerator;
            self.d = d_new;

            let denom = self.exp_avg_sq.sqrt() + d_new * c.eps;
            if c.weight_decay != 0.0 && c.decouple {
                let _ = flat.g_mul_scalar_(1.0 - c.weight_decay * dlr);
            }
            // Without a first moment the raw gradient is scaled by `d` like the moments are.
            let step = if beta1 > 0.0 {
                &self.exp_avg / &denom * dlr
            } else {
                &grad / &denom * (dlr * d_new)
            };
            let _ = flat.g_sub_(&step);
            self.step += 1;
        });
    }

    /// The state tensors by name, for the resumable state.
    pub fn tensors(&self) -> Vec<(&'static str, &Tensor)> {
        vec![
            ("prodigy.exp_avg", &self.exp_avg),
            ("prodigy.exp_avg_sq", &self.exp_avg_sq),
            ("prodigy.s", &self.s),
            ("prodigy.p0", &self.p0),
        ]
    }

    pub fn tensors_mut(&mut self) -> Vec<(&'static str, &mut Tensor)> {
        vec![
            ("prodigy.exp_avg", &mut self.exp_avg),
            ("prodigy.exp_avg_sq", &mut self.exp_avg_sq),
            ("prodigy.s", &mut self.s),
            ("prodigy.p0", &mut self.p0),
        ]
    }

    /// The scalars, written so that they parse back to the same bits.
    pub fn scalars(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("prodigy.d".to_string(), format!("{:?}", self.d)),
            ("prodigy.d_max".to_string(), format!("{:?}", self.d_max)),
            (
                "prodigy.d_numerator".to_string(),
                format!("{:?}", self.d_numerator),
            ),
        ])
    }

    /// Restores the scalars written by [`Prodigy::scalars`]; names the missing one on failure.
    pub fn restore_scalars(&mut self, meta: &BTreeMap<String, String>) -> Result<(), String> {
        let get = |key: &str| -> Result<f64, String> {
            meta.get(key)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("no {key} in its metadata"))
        };
        self.d = get("prodigy.d")?;
        self.d_max = get("prodigy.d_max")?;
        self.d_numerator = get("prodigy.d_numerator")?;
        Ok(())
    }
}
