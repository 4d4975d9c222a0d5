//! The optimizer a job chose (`train.optimizer`), behind one interface for the trainer and the
//! resumable state.

use std::collections::BTreeMap;
use tch::{Device, Kind, Tensor};
use wanlora_config::{Optimizer, TrainConfig};

use super::adafactor::{Adafactor, AdafactorConfig};
use super::prodigy::{Prodigy, ProdigyConfig};
use super::{AdamState, AdamW, AdamWConfig, FlatParams};

/// One expert's optimizer.
pub enum TrainOptimizer {
    AdamW(AdamW),
    Prodigy(Prodigy),
    Adafactor(Adafactor),
}

impl TrainOptimizer {
    /// The optimizer `train.optimizer` names, with its `optimizer_params`, over `params`.
    pub fn new(params: &FlatParams, train: &TrainConfig) -> TrainOptimizer {
        let o = &train.optimizer_params;
        match train.optimizer {
            Optimizer::AdamW | Optimizer::AdamW8bit => TrainOptimizer::AdamW(AdamW::new(
                params,
                AdamWConfig::new(train.lr, o),
                train.optimizer == Optimizer::AdamW8bit,
            )),
            Optimizer::Prodigy => {
                let config = ProdigyConfig {
                    beta1: o.betas[0],
                    beta2: o.betas[1],
                    beta3: o.beta3,
                    eps: o.eps,
                    weight_decay: o.weight_decay,
                    decouple: o.decouple,
                    use_bias_correction: o.use_bias_correction,
                    safeguard_warmup: o.safeguard_warmup,
                    d0: o.d0,
                    d_coef: o.d_coef,
                    growth_rate: o.growth_rate.unwrap_or(f64::INFINITY),
                };
                TrainOptimizer::Prodigy(Prodigy::new(params, config))
            }
            Optimizer::Adafactor => {
                let config = AdafactorConfig {
                    eps: o.adafactor_eps,
                    clip_threshold: o.clip_threshold,
                    decay_rate: o.decay_rate,
                    beta1: o.beta1,
                    weight_decay: o.weight_decay,
                    scale_parameter: o.scale_parameter,
                };
                TrainOptimizer::Adafactor(Adafactor::new(params, config))
            }
        }
    }

    /// The name written into the resumable state, so that a resume with another optimizer fails
    /// clearly instead of reading the wrong moments.
    pub fn name(&self) -> &'static str {
        match self {
            TrainOptimizer::AdamW(a) => match a.state {
                AdamState::Full { .. } => "adamw",
                AdamState::EightBit { .. } => "adamw8bit",
            },
            TrainOptimizer::Prodigy(_) => "prodigy",
            TrainOptimizer::Adafactor(_) => "adafactor",
        }
    }

    /// One update of `params.flat` from the flat gradient `grad` with the scheduled rate `lr`.
    pub fn update(&mut self, params: &FlatParams, grad: &Tensor, lr: f64) {
        match self {
            TrainOptimizer::AdamW(o) => o.update(params, grad, lr),
            TrainOptimizer::Prodigy(o) => o.update(params, grad, lr),
            TrainOptimizer::Adafactor(o) => o.update(params, grad, lr),
        }
    }

    /// The step size the last update used for rate `lr`: Prodigy's `d·lr`, else `lr`.
    pub fn effective_lr(&self, lr: f64) -> f64 {
        match self {
            TrainOptimizer::Prodigy(o) => o.effective_lr(lr),
            _ => lr,
        }
    }

    /// Updates done so far.
    pub fn step(&self) -> i64 {
        match self {
            TrainOptimizer::AdamW(o) => o.step,
            TrainOptimizer::Prodigy(o) => o.step,
            TrainOptimizer::Adafactor(o) => o.step,
        }
    }

    fn set_step(&mut self, step: i64) {
        match self {
            TrainOptimizer::AdamW(o) => o.step = step,
            TrainOptimizer::Prodigy(o) => o.step = step,
            TrainOptimizer::Adafactor(o) => o.step = step,
        }
    }

    /// The state tensors by name (AdamW keeps the names of the first state format: `m`, `v`, …).
    pub fn state_tensors(&self) -> Vec<(String, &Tensor)> {
        let named: Vec<(&str, &Tensor)> = match self {
            TrainOptimizer::AdamW(a) => match &a.state {
                AdamState::Full { m, v } => vec![("m", m), ("v", v)],
                AdamState::EightBit { m, v } => vec![
                    ("m.codes", &m.codes),
                    ("m.absmax", &m.absmax),
                    ("v.codes", &v.codes),
                    ("v.absmax", &v.absmax),
                ],
            },
            TrainOptimizer::Prodigy(o) => o.tensors(),
            TrainOptimizer::Adafactor(o) => o.tensors(),
        };
        named
            .into_iter()
            .filter(|(_, t)| t.numel() > 0)
            .map(|(n, t)| (n.to_string(), t))
            .collect()
    }

    /// The state's scalars as exact strings: the step, the optimizer's name, Prodigy's estimates.
    pub fn state_metadata(&self) -> BTreeMap<String, String> {
        let mut meta = BTreeMap::from([
            ("optimizer_step".to_string(), self.step().to_string()),
            ("optimizer".to_string(), self.name().to_string()),
        ]);
        if let TrainOptimizer::Prodigy(o) = self {
            meta.extend(o.scalars());
        }
        meta
    }

    /// Restores the state saved from [`TrainOptimizer::state_tensors`] and
    /// [`TrainOptimizer::state_metadata`]; `load` reads a named tensor of the given kind. An error
    /// says what is missing or mismatched.
    pub fn restore(
        &mut self,
        meta: &BTreeMap<String, String>,
        load: impl Fn(&str, Kind, Device) -> Result<Tensor, String>,
    ) -> Result<(), String> {
        // States written before the optimizer was recorded are AdamW's (fp32 or 8-bit moments).
        let saved = meta.get("optimizer").map(String::as_str);
        let legacy_adamw = saved.is_none() && matches!(self, TrainOptimizer::AdamW(_));
        if saved != Some(self.name()) && !legacy_adamw {
            return Err(format!(
                "the state was saved by the {} optimizer, this job uses {}: set train.optimizer back, or use a new \
                 job name (or delete the state/ folder) to start over",
                saved.unwrap_or("adamw"),
                self.name()
            ));
        }
        match self {
            TrainOptimizer::AdamW(a) => match &mut a.state {
                AdamState::Full { m, v } => {
                    m.copy_(&load("m", Kind::Float, m.device())?);
                    v.copy_(&load("v", Kind::Float, v.device())?);
                }
                AdamState::EightBit { m, v } => {
                    m.codes = load("m.codes", m.codes.kind(), m.codes.device())?;
                    m.absmax = load("m.absmax", Kind::Float, m.absmax.device())?;
                    v.codes = load("v.codes", v.codes.kind(), v.codes.device())?;
                    v.absmax = load("v.absmax", Kind::Float, v.absmax.device())?;
                }
            },
            TrainOptimizer::Prodigy(o) => {
                o.restore_scalars(meta)?;
                copy_all(o.tensors_mut(), &load)?;
            }
            TrainOptimizer::Adafactor(o) => copy_all(o.tensors_mut(), &load)?,
        }
        let step = meta
            .get("optimizer_step")
            .and_then(|s| s.parse().ok())
            .ok_or("no optimizer_step in its metadata")?;
        self.set_step(step);
        Ok(())
    }
}

/// Copies saved tensors into the state in place (views into them stay valid); empty ones were
/// not saved.
fn copy_all(
    tensors: Vec<(&'static str, &mut Tensor)>,
    load: &impl Fn(&str, Kind, Device) -> Result<Tensor, String>,
) -> Result<(), String> {
    for (name, t) in tensors {
        if t.numel() == 0 {
            continue;
        }
        let saved = load(name, Kind::Float, t.device())?;
        if saved.size() != t.size() {
            return Err(format!(
                "{name} has shape {:?}, this job's has {:?}",
                saved.size(),
                t.size()
            ));
        }
        tch::no_grad(|| t.copy_(&saved));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn params() -> FlatParams {
        FlatParams::new(
            &[Tensor::ones([3, 2], (Kind::Float, Device::Cpu))],
            Device::Cpu,
        )
    }

    fn train(optimizer: Optimizer) -> TrainConfig {
        TrainConfig {
            optimizer,
            ..TrainConfig::default()
        }
    }

    /// Saves `from`'s state and restores it into a fresh optimizer of `into`'s kind.
    fn round_trip(
        from: &TrainOptimizer,
        into: &mut TrainOptimizer,
        legacy: bool,
    ) -> Result<(), String> {
        let saved: HashMap<String, Tensor> = from
            .state_tensors()
            .into_iter()
            .map(|(n, t)| (n, t.copy()))
            .collect();
        let mut meta = from.state_metadata();
        if legacy {
            meta.remove("optimizer");
        }
        into.restore(&meta, |name, _, _| {
            saved
                .get(name)
                .map(Tensor::copy)
                .ok_or_else(|| format!("no {name}"))
        })
    }

    #[test]
    fn prodigy_state_restores_to_the_same_bits() {
        let p = params();
        let mut a = TrainOptimizer::new(&p, &train(Optimizer::Prodigy));
        for _ in 0..3 {
            a.update(&p, &Tensor::full([6], 0.3, (Kind::Float, Device::Cpu)), 1.0);
        }
        let mut b = TrainOptimizer::new(&p, &train(Optimizer::Prodigy));
        round_trip(&a, &mut b, false).unwrap();
        let (TrainOptimizer::Prodigy(x), TrainOptimizer::Prodigy(y)) = (&a, &b) else {
            unreachable!()
        };
        assert!(x.d > x.config.d0, "d did not grow: {}", x.d);
        assert_eq!(
            (
                x.d.to_bits(),
                x.d_max.to_bits(),
                x.d_numerator.to_bits(),
                x.step
            ),
            (
                y.d.to_bits(),
                y.d_max.to_bits(),
                y.d_numerator.to_bits(),
                y.step
            )
        );
        assert!(x.s.equal(&y.s) && x.exp_avg_sq.equal(&y.exp_avg_sq));
    }

    #[test]
    fn a_state_without_an_optimizer_name_is_adamws() {
        let p = params();
        let adam = TrainOptimizer::new(&p, &train(Optimizer::AdamW));
        let mut again = TrainOptimizer::new(&p, &train(Optimizer::AdamW));
        round_trip(&adam, &mut again, true).unwrap();
        let mut prodigy = TrainOptimizer::new(&p, &train(Optimizer::Prodigy));
        let err = round_trip(&adam, &mut prodigy, true).unwrap_err();
        assert!(
            err.contains("saved by the adamw optimizer, this job uses prodigy"),
            "{err}"
        );
        let mut adafactor = TrainOptimizer::new(&p, &train(Optimizer::Adafactor));
        let err = round_trip(&prodigy, &mut adafactor, false).unwrap_err();
        assert!(err.contains("saved by the prodigy optimizer"), "{err}");
    }
}
