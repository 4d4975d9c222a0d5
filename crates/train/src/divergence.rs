//! Divergence: non-finite steps are counted per expert, and a save refuses NaN or infinite values,
//! so a diverged run stops and the last checkpoint written stays a good one.

use std::collections::BTreeMap;
use tch::{Kind, Tensor};

use crate::checkpoint::ExpertState;
use crate::experts::Expert;

/// Non-finite steps in a row of one expert after which the run stops.
pub const NON_FINITE_LIMIT: u32 = 5;

/// Non-finite steps in a row, per expert. Each expert's count is reset only by its own finite
/// steps: with `switch_boundary_every: 1` the experts alternate, and the healthy expert's steps
/// must not hide the other's divergence.
#[derive(Debug, Default)]
pub struct NonFiniteCounter {
    in_a_row: BTreeMap<Expert, u32>,
}

impl NonFiniteCounter {
    /// Records one step of `expert`; returns its count of non-finite steps in a row once that
    /// reaches [`NON_FINITE_LIMIT`].
    pub fn record(&mut self, expert: Expert, finite: bool) -> Option<u32> {
        let count = self.in_a_row.entry(expert).or_default();
        *count = if finite { 0 } else { *count + 1 };
        (*count >= NON_FINITE_LIMIT).then_some(*count)
    }
}

fn all_finite(t: &Tensor) -> bool {
    t.isfinite().all().int64_value(&[]) != 0
}

/// The parts of a save that hold NaN or infinite values, named for the user ("high_noise LoRA",
/// "low_noise optimizer moments", "high_noise EMA"); empty when everything is finite.
pub fn non_finite_parts(experts: &[ExpertState]) -> Vec<String> {
    let mut bad = Vec::new();
    for e in experts {
        // Every optimizer's state (8-bit codes are integers and always finite; their block scales
        // carry any overflow).
        let moments: Vec<&Tensor> = e
            .optimizer
            .state_tensors()
            .into_iter()
            .map(|(_, t)| t)
            .collect();
        let checks = [
            ("LoRA", vec![e.lora_flat]),
            ("optimizer moments", moments),
            ("EMA", e.ema.into_iter().collect()),
        ];
        for (what, tensors) in checks {
            if tensors
                .iter()
                .any(|t| !all_finite(&t.detach().to_kind(Kind::Float)))
            {
                bad.push(format!("{} {what}", e.expert.name()));
            }
        }
    }
    bad
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_expert_diverging_is_caught_while_the_other_is_healthy() {
        let mut counter = NonFiniteCounter::default();
        let mut fired = None;
        // switch_boundary_every: 1 — the experts alternate; only high_noise is non-finite.
        for step in 0..20u64 {
            let expert = if step % 2 == 0 {
                Expert::High
            } else {
                Expert::Low
            };
            if let Some(n) = counter.record(expert, expert == Expert::Low) {
                fired = Some((step, n));
                break;
            }
        }
        assert_eq!(fired, Some((8, NON_FINITE_LIMIT)));
    }

    #[test]
    fn a_finite_step_of_the_same_expert_resets_its_count() {
        let mut counter = NonFiniteCounter::default();
        for _ in 0..NON_FINITE_LIMIT - 1 {
            assert_eq!(counter.record(Expert::Low, false), None);
        }
        assert_eq!(counter.record(Expert::Low, true), None);
        for _ in 0..NON_FINITE_LIMIT - 1 {
            assert_eq!(counter.record(Expert::Low, false), None);
        }
        assert_eq!(counter.record(Expert::Low, false), Some(NON_FINITE_LIMIT));
    }
}
