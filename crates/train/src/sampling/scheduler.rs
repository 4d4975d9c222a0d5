//! The samplers: state machines that take the sample `x_i` at noise level σ_i and the model's velocity
//! `v_i = ε − x0` there, and return `x_{i+1}` at σ_{i+1}.
//!
//! * [`FlowEuler`]: `x_{i+1} = x_i + (σ_{i+1} − σ_i)·v_i` — first order (what AI Toolkit previews with).
//! * [`FlowUniPc`]: UniPC (Zhao et al. 2023) for flow matching as Wan's `FlowUniPCMultistepScheduler` runs it:
//!   B(h) = e^h − 1 ("bh2"), order 2, predicting x0 (`predict_x0`), lowering the order on the last step
//!   (`lower_order_final`), with the UniC corrector after every model evaluation but the first.
//!
//! UniPC works in λ(σ) = log α − log σ with α = 1 − σ, on the data prediction `m_i = x_i − σ_i·v_i`. At step i it
//! first corrects `x_i` with the new `m_i` (UniC, of the order the last predictor used), stores `m_i`, then
//! predicts `x_{i+1}` (UniP, order `min(2, steps − i, steps done + 1)`). With `h = λ_{i+1} − λ_i` and `hh = −h`:
//!
//! ```text
//! predictor   x_{i+1} = (σ_{i+1}/σ_i)·x_i − α_{i+1}·(e^{hh} − 1)·m_i
//!                       − α_{i+1}·B(h)·½·D₁                        (order 2)
//!             D₁ = (m_{i−1} − m_i)/r₁,   r₁ = (λ_{i−1} − λ_i)/h
//! corrector   x_i ← (σ_i/σ_{i−1})·x_{i−1} − α_i·(e^{hh} − 1)·m_{i−1} − α_i·B(h)·(ρ₀·D₁ + ρ₁·(m_i − m_{i−1}))
//!             (h, D₁ over σ_{i−2}, σ_{i−1}, σ_i; order 1: D₁ absent, ρ₁ = ½;
//!              order 2: ρ solves [[1, 1], [r₁, 1]]·ρ = [φ₂/B(h), 2·φ₃/B(h)],
//!              φ₂ = (e^{hh} − 1)/hh − 1, φ₃ = φ₂/hh − ½)
//! ```
//!
//! The last step goes to σ = 0, where λ = +∞: the order is 1 there and the update is the limit
//! `e^{−∞} − 1 = −1`, `σ_{i+1}/σ_i = 0`, `α = 1`, i.e. `x = m_i`. It is taken explicitly instead of through
//! infinities. The scalar coefficients are computed in double precision; the tensors keep their kind (float32).

use std::collections::BTreeMap;

use tch::{Device, Tensor};

use super::SamplingError;

/// Which sampler a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SamplerKind {
    /// First-order flow-matching Euler.
    Euler,
    /// UniPC bh2, order 2, with the corrector: Wan's official sampler.
    UniPc,
}

impl SamplerKind {
    pub fn name(self) -> &'static str {
        match self {
            SamplerKind::Euler => "euler",
            SamplerKind::UniPc => "unipc",
        }
    }
}

impl From<wanlora_config::Sampler> for SamplerKind {
    fn from(sampler: wanlora_config::Sampler) -> Self {
        match sampler {
            wanlora_config::Sampler::Flowmatch => SamplerKind::Euler,
            wanlora_config::Sampler::Unipc => SamplerKind::UniPc,
        }
    }
}

/// A sampler in the middle of a run.
pub enum Scheduler {
    Euler(FlowEuler),
    UniPc(FlowUniPc),
}

impl Scheduler {
    /// A sampler of `kind` over the noise levels `sigmas` (decreasing, the last 0).
    pub fn new(kind: SamplerKind, sigmas: &[f64]) -> Result<Scheduler, SamplingError> {
        Ok(match kind {
            SamplerKind::Euler => Scheduler::Euler(FlowEuler::new(sigmas)),
            SamplerKind::UniPc => Scheduler::UniPc(FlowUniPc::new(sigmas)?),
        })
    }

    /// `x_{i+1}` from the current sample `x_i` and the velocity the model predicted there.
    pub fn step(&mut self, velocity: &Tensor, sample: &Tensor) -> Result<Tensor, SamplingError> {
        match self {
            Scheduler::Euler(s) => s.step(velocity, sample),
            Scheduler::UniPc(s) => s.step(velocity, sample),
        }
    }

    /// Steps taken so far.
    pub fn step_index(&self) -> usize {
        match self {
            Scheduler::Euler(s) => s.index,
            Scheduler::UniPc(s) => s.index,
        }
    }

    fn kind(&self) -> SamplerKind {
        match self {
            Scheduler::Euler(_) => SamplerKind::Euler,
            Scheduler::UniPc(_) => SamplerKind::UniPc,
        }
    }

    fn sigmas(&self) -> &[f64] {
        match self {
            Scheduler::Euler(s) => &s.sigmas,
            Scheduler::UniPc(s) => &s.sigmas,
        }
    }

    /// Everything the sampler carries from one step to the next (UniPC: its history, the last
    /// predictor's sample and order, its warm-up; both: the step index), the tensors copied to the
    /// CPU, so that a run can go on in another process ([`Scheduler::import`]).
    pub fn export(&self) -> Result<SamplingState, SamplingError> {
        let mut state = SamplingState::default();
        state.set("sampler", self.kind().name());
        state.set("sigmas", format!("{:?}", self.sigmas()));
        state.set("scheduler_index", self.step_index());
        if let Scheduler::UniPc(s) = self {
            state.set("unipc_last_order", s.last_order);
            state.set("unipc_warmed_up", s.warmed_up);
            for (name, t) in [
                (UNIPC_HISTORY[0], &s.history[0]),
                (UNIPC_HISTORY[1], &s.history[1]),
                (UNIPC_LAST_SAMPLE, &s.last_sample),
            ] {
                if let Some(t) = t {
                    state.put_tensor(name, t)?;
                }
            }
        }
        Ok(state)
    }

    /// Continues from an exported state: the sampler must be of the same kind over the same noise
    /// levels (the same request); the tensors go to `device`.
    pub fn import(&mut self, state: &SamplingState, device: Device) -> Result<(), SamplingError> {
        let sampler = state.get("sampler")?;
        if sampler != self.kind().name() {
            return Err(SamplingError::Input(format!(
                "the sampler state is {sampler}'s; this run samples with {}",
                self.kind().name()
            )));
        }
        let sigmas = format!("{:?}", self.sigmas());
        if state.get("sigmas")? != sigmas {
            return Err(SamplingError::Input(format!(
                "the sampler state is over the noise levels {}; this run's are {sigmas}",
                state.get("sigmas")?
            )));
        }
        let index: usize = state.number("scheduler_index")?;
        if index >= self.sigmas().len() {
            return Err(SamplingError::Input(format!(
                "the sampler state is at step {index} of {}",
                self.sigmas().len() - 1
            )));
        }
        match self {
            Scheduler::Euler(s) => s.index = index,
            Scheduler::UniPc(s) => {
                let tensor = |name| state.tensor(name, device);
                *s = FlowUniPc {
                    sigmas: std::mem::take(&mut s.sigmas),
                    index,
                    history: [tensor(UNIPC_HISTORY[0])?, tensor(UNIPC_HISTORY[1])?],
                    last_sample: tensor(UNIPC_LAST_SAMPLE)?,
                    last_order: state.number("unipc_last_order")?,
                    warmed_up: state.number("unipc_warmed_up")?,
                };
            }
        }
        Ok(())
    }
}

/// The names of UniPC's tensors in a [`SamplingState`]: its data predictions (oldest first) and
/// the last predictor's sample.
const UNIPC_HISTORY: [&str; 2] = ["unipc_history_older", "unipc_history_newer"];
const UNIPC_LAST_SAMPLE: &str = "unipc_last_sample";

/// A sampling run's state between two steps, as small values and tensors: what a safetensors
/// file holds (metadata and tensors), so that the run goes on in another process (an
/// expert-parallel job's previews: the high-noise rank hands its latents to the low-noise one).
#[derive(Debug, Default)]
pub struct SamplingState {
    pub values: BTreeMap<String, String>,
    /// On the CPU.
    pub tensors: BTreeMap<String, Tensor>,
}

impl SamplingState {
    pub(crate) fn set(&mut self, key: &str, value: impl ToString) {
        self.values.insert(key.to_string(), value.to_string());
    }

    pub(crate) fn put_tensor(&mut self, name: &str, t: &Tensor) -> Result<(), SamplingError> {
        // A copy (a CPU tensor's `to` is itself), so that the run going on cannot change it.
        let copy = t.f_to_device(Device::Cpu)?.f_detach_copy()?;
        self.tensors.insert(name.to_string(), copy);
        Ok(())
    }

    pub(crate) fn get(&self, key: &str) -> Result<&str, SamplingError> {
        self.values
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| SamplingError::Input(format!("the sampling state has no {key}")))
    }

    pub(crate) fn number<T: std::str::FromStr>(&self, key: &str) -> Result<T, SamplingError> {
        let text = self.get(key)?;
        text.parse().map_err(|_| {
            SamplingError::Input(format!(
                "the sampling state's {key} is {text:?}, not a number"
            ))
        })
    }

    /// A tensor on `device`, or none when the state has none of that name.
    pub(crate) fn tensor(
        &self,
        name: &str,
        device: Device,
    ) -> Result<Option<Tensor>, SamplingError> {
        self.tensors
            .get(name)
            .map(|t| Ok(t.f_to_device(device)?.f_detach_copy()?))
            .transpose()
    }
}

fn past_the_end(steps: usize) -> SamplingError {
    SamplingError::Phase(format!("the sampler has already taken all {steps} steps"))
}

/// Flow-matching Euler.
pub struct FlowEuler {
    sigmas: Vec<f64>,
    index: usize,
}

impl FlowEuler {
    pub fn new(sigmas: &[f64]) -> FlowEuler {
        FlowEuler {
            sigmas: sigmas.to_vec(),
            index: 0,
        }
    }

    pub fn step(&mut self, velocity: &Tensor, sample: &Tensor) -> Result<Tensor, SamplingError> {
        let i = self.index;
        if i + 1 >= self.sigmas.len() {
            return Err(past_the_end(self.sigmas.len() - 1));
        }
        let dt = self.sigmas[i + 1] - self.sigmas[i];
        let next = sample.f_add(&velocity.f_mul_scalar(dt)?)?;
        self.index += 1;
        Ok(next)
    }
}

/// λ(σ) = log(1 − σ) − log σ, the log signal-to-noise ratio of a flow-matching level.
fn lambda(sigma: f64) -> f64 {
    (1.0 - sigma).ln() - sigma.ln()
}

/// UniPC bh2, order 2, predicting x0, with the corrector (see the module documentation).
pub struct FlowUniPc {
    sigmas: Vec<f64>,
    index: usize,
    /// Data predictions `m` of the last two model evaluations, oldest first.
    history: [Option<Tensor>; 2],
    /// The sample the last predictor started from (after its own correction).
    last_sample: Option<Tensor>,
    /// The order the last predictor used, which the next corrector uses.
    last_order: usize,
    /// Model evaluations so far, capped at the solver order (the multistep warm-up).
    warmed_up: usize,
}

impl FlowUniPc {
    const ORDER: usize = 2;

    pub fn new(sigmas: &[f64]) -> Result<FlowUniPc, SamplingError> {
        if sigmas.first().is_some_and(|&s| s >= 1.0) {
            return Err(SamplingError::Input(
                "UniPC needs a first noise level below 1 (λ = log(1 − σ) − log σ is −∞ at σ = 1)"
                    .into(),
            ));
        }
        Ok(FlowUniPc {
            sigmas: sigmas.to_vec(),
            index: 0,
            history: [None, None],
            last_sample: None,
            last_order: 0,
            warmed_up: 0,
        })
    }

    pub fn step(&mut self, velocity: &Tensor, sample: &Tensor) -> Result<Tensor, SamplingError> {
        let i = self.index;
        let steps = self.sigmas.len() - 1;
        if i >= steps {
            return Err(past_the_end(steps));
        }
        let model_x0 = sample.f_sub(&velocity.f_mul_scalar(self.sigmas[i])?)?;
        let sample = match self.last_sample.take() {
            Some(last) if i > 0 => self.correct(&model_x0, &last, self.last_order)?,
            _ => sample.shallow_clone(),
        };
        let [_, newest] = std::mem::take(&mut self.history);
        self.history = [newest, Some(model_x0)];
        let order = Self::ORDER.min(steps - i).min(self.warmed_up + 1);
        let next = self.predict(&sample, order)?;
        self.last_sample = Some(sample);
        self.last_order = order;
        self.warmed_up = (self.warmed_up + 1).min(Self::ORDER);
        self.index += 1;
        Ok(next)
    }

    fn history(&self, age: usize) -> Result<&Tensor, SamplingError> {
        self.history[1 - age]
            .as_ref()
            .ok_or_else(|| SamplingError::Input("UniPC history is shorter than its order".into()))
    }

    /// UniP from σ_i to σ_{i+1} with the data predictions m_i (and m_{i−1} at order 2).
    fn predict(&self, sample: &Tensor, order: usize) -> Result<Tensor, SamplingError> {
        let i = self.index;
        let (sigma_s0, sigma_t) = (self.sigmas[i], self.sigmas[i + 1]);
        let m0 = self.history(0)?;
        if sigma_t == 0.0 {
            // λ(0) = +∞: the first-order update's limit is the data prediction itself.
            return Ok(m0.shallow_clone());
        }
        let alpha_t = 1.0 - sigma_t;
        let h = lambda(sigma_t) - lambda(sigma_s0);
        let hh = -h;
        let h_phi_1 = hh.exp_m1();
        let b_h = hh.exp_m1();
        let mut next = sample
            .f_mul_scalar(sigma_t / sigma_s0)?
            .f_sub(&m0.f_mul_scalar(alpha_t * h_phi_1)?)?;
        if order == 2 {
            let m1 = self.history(1)?;
            let r1 = (lambda(self.sigmas[i - 1]) - lambda(sigma_s0)) / h;
            let d1 = m1.f_sub(m0)?.f_div_scalar(r1)?;
            next = next.f_sub(&d1.f_mul_scalar(alpha_t * b_h * 0.5)?)?;
        }
        Ok(next)
    }

    /// UniC: refines `x_i` (reached from `last_sample` at σ_{i−1}) with the new data prediction `model_x0` = m_i,
    /// before m_i enters the history (whose newest entry is still m_{i−1}).
    fn correct(
        &self,
        model_x0: &Tensor,
        last_sample: &Tensor,
        order: usize,
    ) -> Result<Tensor, SamplingError> {
        let i = self.index;
        let (sigma_s0, sigma_t) = (self.sigmas[i - 1], self.sigmas[i]);
        let m0 = self.history(0)?;
        let alpha_t = 1.0 - sigma_t;
        let h = lambda(sigma_t) - lambda(sigma_s0);
        let hh = -h;
        let h_phi_1 = hh.exp_m1();
        let b_h = hh.exp_m1();
        let phi_2 = h_phi_1 / hh - 1.0;
        let base = last_sample
            .f_mul_scalar(sigma_t / sigma_s0)?
            .f_sub(&m0.f_mul_scalar(alpha_t * h_phi_1)?)?;
        let d1_t = model_x0.f_sub(m0)?;
        let correction = if order == 1 {
            d1_t.f_mul_scalar(0.5)?
        } else {
            let m1 = self.history(1)?;
            let r1 = (lambda(self.sigmas[i - 2]) - lambda(sigma_s0)) / h;
            let d1 = m1.f_sub(m0)?.f_div_scalar(r1)?;
            let phi_3 = phi_2 / hh - 0.5;
            let (b1, b2) = (phi_2 / b_h, 2.0 * phi_3 / b_h);
            // [[1, 1], [r₁, 1]]·ρ = b
            let rho0 = (b1 - b2) / (1.0 - r1);
            let rho1 = b1 - rho0;
            d1.f_mul_scalar(rho0)?.f_add(&d1_t.f_mul_scalar(rho1)?)?
        };
        Ok(base.f_sub(&correction.f_mul_scalar(alpha_t * b_h)?)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With a model that knows the data exactly (v = (x − x0)/σ), every sampler lands on x0.
    #[test]
    fn an_exact_model_is_followed_to_its_data() {
        let sigmas = vec![0.99, 0.9, 0.7, 0.4, 0.15, 0.0];
        let x0 = Tensor::from_slice(&[0.3f32, -1.2, 2.0, 0.0]);
        for kind in [SamplerKind::Euler, SamplerKind::UniPc] {
            let mut s = Scheduler::new(kind, &sigmas).unwrap();
            let mut x = Tensor::from_slice(&[1.0f32, -0.5, 0.25, 2.0]);
            for &sigma in &sigmas[..sigmas.len() - 1] {
                let v = (&x - &x0) / sigma;
                x = s.step(&v, &x).unwrap();
            }
            let err = (&x - &x0).abs().max().double_value(&[]);
            assert!(err < 1e-5, "{kind:?}: {err}");
            assert!(s.step(&x, &x).is_err(), "a step past the end is refused");
        }
    }

    /// A velocity that depends on the sample non-linearly, so that UniPC's history matters.
    fn velocity(x: &Tensor, sigma: f64) -> Tensor {
        x.sin() * (1.0 + sigma) - x * 0.3
    }

    /// Runs the steps `from..to` of `s` from `x`.
    fn run(s: &mut Scheduler, sigmas: &[f64], mut x: Tensor, from: usize, to: usize) -> Tensor {
        for &sigma in &sigmas[from..to] {
            x = s.step(&velocity(&x, sigma), &x).unwrap();
        }
        x
    }

    /// A run exported after any step and imported into a fresh sampler ends exactly where the
    /// uninterrupted run does; the export is a copy that later steps do not change.
    #[test]
    fn a_run_exported_and_imported_midway_ends_where_the_whole_run_does() {
        let sigmas = vec![0.99, 0.93, 0.8, 0.6, 0.35, 0.1, 0.0];
        let steps = sigmas.len() - 1;
        let start = Tensor::from_slice(&[1.0f32, -0.5, 0.25, 2.0, -1.5, 0.75]);
        for kind in [SamplerKind::Euler, SamplerKind::UniPc] {
            let mut whole = Scheduler::new(kind, &sigmas).unwrap();
            let expected = run(&mut whole, &sigmas, start.copy(), 0, steps);
            for split in 0..=steps {
                let mut first = Scheduler::new(kind, &sigmas).unwrap();
                let x = run(&mut first, &sigmas, start.copy(), 0, split);
                let state = first.export().unwrap();
                // The first sampler going on must not touch the exported state.
                let _ = run(&mut first, &sigmas, x.copy(), split, steps);
                let mut second = Scheduler::new(kind, &sigmas).unwrap();
                second.import(&state, Device::Cpu).unwrap();
                assert_eq!(second.step_index(), split);
                let end = run(&mut second, &sigmas, x, split, steps);
                assert!(
                    end.equal(&expected),
                    "{kind:?} split after {split} steps: {end:?} vs {expected:?}"
                );
            }
        }
    }

    #[test]
    fn a_state_of_another_sampler_or_schedule_is_refused() {
        let sigmas = [0.9, 0.5, 0.0];
        let unipc = Scheduler::new(SamplerKind::UniPc, &sigmas).unwrap();
        let state = unipc.export().unwrap();
        let mut euler = Scheduler::new(SamplerKind::Euler, &sigmas).unwrap();
        let err = euler.import(&state, Device::Cpu).unwrap_err().to_string();
        assert!(err.contains("unipc") && err.contains("euler"), "{err}");
        let mut other = Scheduler::new(SamplerKind::UniPc, &[0.9, 0.4, 0.0]).unwrap();
        let err = other.import(&state, Device::Cpu).unwrap_err().to_string();
        assert!(err.contains("noise levels"), "{err}");
    }

    #[test]
    fn unipc_refuses_sigma_one() {
        assert!(FlowUniPc::new(&[1.0, 0.5, 0.0]).is_err());
        assert!(FlowUniPc::new(&[0.999, 0.5, 0.0]).is_ok());
    }
}
