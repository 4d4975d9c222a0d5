//! The noise levels σ and model timesteps of a sampling run, and which expert denoises each step
//! (wan-reference.md §3).
//!
//! Wan's official sampler (`FlowUniPCMultistepScheduler` in `wan/utils/fm_solvers_unipc.py`, built with shift 1 and
//! shifted in `set_timesteps`):
//!
//! ```text
//! s_i = linspace(σ_max, 0, steps + 1)[i]         i = 0 … steps−1,  σ_max = float32(0.999)
//! σ_i = shift·s_i / (1 + (shift − 1)·s_i)        (stored as float32)
//! t_i = int64(1000·σ_i)                          truncation; the value the transformer sees
//! σ_steps = 0
//! ```
//!
//! σ_max is 0.999 because the scheduler's 1000 training levels are `1 − linspace(1, 1/1000, 1000)`, whose largest
//! is 0.999, held in float32. Routing: the high-noise expert takes every step with `t ≥ boundary·1000` (0.9 for
//! I2V A14B), the low-noise expert the rest. Timesteps decrease, so the high-noise steps come first.
//!
//! diffusers' schedulers build slightly different grids; they are reproduced here value for value for the parity
//! tests against `WanImageToVideoPipeline`, and are not what previews use:
//! * `UniPCMultistepScheduler(use_flow_sigmas, flow_shift)`: `s = linspace(1, 1/1000, steps + 1)[:-1]`, shifted,
//!   the first σ lowered by 1e-6 when it is 1 (λ = log α − log σ would be −∞), `t = int64(1000·σ)`;
//! * `FlowMatchEulerDiscreteScheduler(shift)`: `t = linspace(1000, 1000·σ_min, steps)` with σ_min the shifted
//!   smallest training level (in float32), `σ = shift(t/1000)`, and float timesteps `1000·σ` (not truncated).
//!
//! Every table is computed in the order and precision of the Python code (numpy's `linspace` is `i·step + start`
//! with the end point set exactly), so that the truncated timesteps agree exactly.

use super::scheduler::SamplerKind;
use super::SamplingError;
use crate::experts::Expert;

/// The number of training noise levels; model timesteps run from 0 to this.
pub const NUM_TRAIN_TIMESTEPS: f64 = 1000.0;

/// The shift of a flow-matching noise level: `σ' = shift·σ / (1 + (shift − 1)·σ)`.
pub fn shift_sigma(sigma: f64, shift: f64) -> f64 {
    shift * sigma / (1.0 + (shift - 1.0) * sigma)
}

/// `numpy.linspace(start, stop, num)`, value for value.
fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 1 {
        return vec![start];
    }
    let step = (stop - start) / (num - 1) as f64;
    let mut values: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
    if let Some(last) = values.last_mut() {
        *last = stop;
    }
    values
}

/// Rounds to float32, as the references store their σ tables.
fn as_f32(value: f64) -> f64 {
    value as f32 as f64
}

/// Which σ grid a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ScheduleKind {
    /// Wan's own table, for every sampler: what previews and `wanlora sample` use.
    #[default]
    Official,
    /// The grid of the diffusers scheduler of the same sampler (to reproduce `WanImageToVideoPipeline`).
    Diffusers,
}

/// The σ table (`steps + 1` values, decreasing to 0) and the model timestep of each step.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    /// Noise level before each step, then the final 0; float32 values.
    pub sigmas: Vec<f64>,
    /// The timestep the transformer sees at each step (0 … 1000).
    pub timesteps: Vec<f64>,
}

impl Schedule {
    /// Wan's official table (see the module documentation).
    pub fn official(steps: usize, shift: f64) -> Result<Schedule, SamplingError> {
        check_steps_and_shift(steps, shift)?;
        let sigma_max = as_f32(1.0 - 1.0 / NUM_TRAIN_TIMESTEPS);
        let shifted: Vec<f64> = linspace(sigma_max, 0.0, steps + 1)[..steps]
            .iter()
            .map(|&s| shift_sigma(s, shift))
            .collect();
        Ok(Schedule::from_shifted(&shifted, |s| {
            (s * NUM_TRAIN_TIMESTEPS).trunc()
        }))
    }

    /// The table of `kind` for `sampler`.
    pub fn new(
        kind: ScheduleKind,
        sampler: SamplerKind,
        steps: usize,
        shift: f64,
    ) -> Result<Schedule, SamplingError> {
        match (kind, sampler) {
            (ScheduleKind::Official, _) => Schedule::official(steps, shift),
            (ScheduleKind::Diffusers, SamplerKind::UniPc) => {
                Schedule::diffusers_unipc(steps, shift)
            }
            (ScheduleKind::Diffusers, SamplerKind::Euler) => {
                Schedule::diffusers_euler(steps, shift)
            }
        }
    }

    /// diffusers' `UniPCMultistepScheduler` with `use_flow_sigmas` and `flow_shift = shift`.
    pub fn diffusers_unipc(steps: usize, shift: f64) -> Result<Schedule, SamplingError> {
        check_steps_and_shift(steps, shift)?;
        let mut shifted: Vec<f64> = linspace(1.0, 1.0 / NUM_TRAIN_TIMESTEPS, steps + 1)[..steps]
            .iter()
            .map(|&s| shift_sigma(s, shift))
            .collect();
        if (shifted[0] - 1.0).abs() < 1e-6 {
            shifted[0] -= 1e-6;
        }
        Ok(Schedule::from_shifted(&shifted, |s| {
            (s * NUM_TRAIN_TIMESTEPS).trunc()
        }))
    }

    /// diffusers' `FlowMatchEulerDiscreteScheduler(shift = shift)`.
    pub fn diffusers_euler(steps: usize, shift: f64) -> Result<Schedule, SamplingError> {
        check_steps_and_shift(steps, shift)?;
        // The smallest training level 1/1000, shifted in float32 torch arithmetic.
        let (s, k) = (1.0f32 / 1000.0f32, shift as f32);
        let sigma_min = ((k * s) / (1.0f32 + (k - 1.0f32) * s)) as f64;
        let shifted: Vec<f64> =
            linspace(NUM_TRAIN_TIMESTEPS, sigma_min * NUM_TRAIN_TIMESTEPS, steps)
                .iter()
                .map(|&t| shift_sigma(t / NUM_TRAIN_TIMESTEPS, shift))
                .collect();
        Ok(Schedule::from_shifted(&shifted, |s| {
            (s as f32 * NUM_TRAIN_TIMESTEPS as f32) as f64
        }))
    }

    /// A table given as is (σ decreasing from below 1 to 0, one timestep per step).
    pub fn from_tables(sigmas: Vec<f64>, timesteps: Vec<f64>) -> Result<Schedule, SamplingError> {
        let schedule = Schedule { sigmas, timesteps };
        schedule.check()?;
        Ok(schedule)
    }

    /// σ as float32 with the final 0 appended, and each step's timestep from its (double) σ.
    fn from_shifted(shifted: &[f64], timestep: impl Fn(f64) -> f64) -> Schedule {
        let timesteps = shifted.iter().map(|&s| timestep(s)).collect();
        let mut sigmas: Vec<f64> = shifted.iter().map(|&s| as_f32(s)).collect();
        sigmas.push(0.0);
        Schedule { sigmas, timesteps }
    }

    fn check(&self) -> Result<(), SamplingError> {
        let invalid = |message: String| Err(SamplingError::Input(format!("schedule: {message}")));
        if self.timesteps.is_empty() || self.sigmas.len() != self.timesteps.len() + 1 {
            return invalid(format!(
                "{} noise levels for {} timesteps; expected one more level than timesteps, and at least one step",
                self.sigmas.len(),
                self.timesteps.len()
            ));
        }
        if self.sigmas.last() != Some(&0.0) {
            return invalid("the last noise level must be 0".into());
        }
        let decreasing = self.sigmas.windows(2).all(|w| w[1] < w[0]);
        if !decreasing || self.sigmas[0] > 1.0 {
            return invalid("noise levels must decrease from at most 1".into());
        }
        Ok(())
    }

    /// The number of denoising steps.
    pub fn steps(&self) -> usize {
        self.timesteps.len()
    }

    /// The expert that denoises step `step`: high noise while `t ≥ boundary_ratio·1000`.
    pub fn expert_at(&self, step: usize, boundary_ratio: f64) -> Expert {
        if self.timesteps[step] >= boundary_ratio * NUM_TRAIN_TIMESTEPS {
            Expert::High
        } else {
            Expert::Low
        }
    }

    /// How many steps (all at the start) the high-noise expert takes.
    pub fn high_noise_steps(&self, boundary_ratio: f64) -> usize {
        (0..self.steps())
            .take_while(|&i| self.expert_at(i, boundary_ratio) == Expert::High)
            .count()
    }
}

fn check_steps_and_shift(steps: usize, shift: f64) -> Result<(), SamplingError> {
    if steps == 0 {
        return Err(SamplingError::setting(
            "sample_steps",
            "needs at least 1 step (Wan uses 40)",
        ));
    }
    if !(shift.is_finite() && shift > 0.0) {
        return Err(SamplingError::setting(
            "shift",
            format!("{shift} is not a positive number (Wan uses 5.0; 3.0 is recommended for 480p)"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linspace_ends_exactly() {
        let v = linspace(0.999, 0.0, 41);
        assert_eq!(v.len(), 41);
        assert_eq!(v[0], 0.999);
        assert_eq!(v[40], 0.0);
        assert_eq!(linspace(3.0, 5.0, 1), vec![3.0]);
    }

    #[test]
    fn shift_keeps_the_ends_and_raises_the_middle() {
        assert_eq!(shift_sigma(0.0, 5.0), 0.0);
        assert_eq!(shift_sigma(1.0, 5.0), 1.0);
        assert!((shift_sigma(0.5, 5.0) - 5.0 / 6.0).abs() < 1e-15);
        assert_eq!(shift_sigma(0.3, 1.0), 0.3);
    }
}
