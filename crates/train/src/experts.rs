//! Which expert trains at each step. Wan 2.2 I2V has two: the high-noise expert for t ≥ boundary·1000
//! (0.9 for I2V; AI Toolkit wrongly uses the T2V 0.875) and the low-noise one below. Training
//! alternates between the trained experts every `switch_boundary_every` steps, starting with the
//! high-noise one. The schedule is a pure function of the step, so resume needs no extra state.

pub use wanlora_spec::expert::Expert;

/// The alternation between the trained experts.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpertSchedule {
    pub trained: Vec<Expert>,
    pub switch_every: u32,
}

impl ExpertSchedule {
    pub fn new(train_high: bool, train_low: bool, switch_every: u32) -> ExpertSchedule {
        let mut trained = Vec::new();
        if train_high {
            trained.push(Expert::High);
        }
        if train_low {
            trained.push(Expert::Low);
        }
        ExpertSchedule {
            trained,
            switch_every: switch_every.max(1),
        }
    }

    /// The expert trained at 0-based `step`.
    pub fn expert_at(&self, step: u64) -> Expert {
        let phase = step / self.switch_every as u64;
        self.trained[(phase % self.trained.len() as u64) as usize]
    }

    /// Steps before `step` that trained `expert`: that expert's own step count, which alone
    /// decides its data order, timesteps and noise (so the alternation, or an expert-parallel run,
    /// does not change what an expert sees).
    pub fn steps_of(&self, expert: Expert, step: u64) -> u64 {
        let Some(index) = self.trained.iter().position(|&e| e == expert) else {
            return 0;
        };
        let every = self.switch_every as u64;
        let cycle = every * self.trained.len() as u64;
        let into_cycle = (step % cycle)
            .saturating_sub(index as u64 * every)
            .min(every);
        step / cycle * every + into_cycle
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timesteps::Window;

    #[test]
    fn alternates_every_n_steps_starting_high() {
        let s = ExpertSchedule::new(true, true, 3);
        let seq: Vec<Expert> = (0..8).map(|i| s.expert_at(i)).collect();
        use Expert::*;
        assert_eq!(seq, vec![High, High, High, Low, Low, Low, High, High]);
        assert_eq!(s.steps_of(Low, 8), 3);
    }

    #[test]
    fn steps_of_counts_the_expert_own_steps() {
        use Expert::*;
        for (high, low, every) in [
            (true, true, 1),
            (true, true, 3),
            (false, true, 2),
            (true, false, 5),
        ] {
            let s = ExpertSchedule::new(high, low, every);
            for e in [High, Low] {
                for step in 0..40 {
                    let counted = (0..step)
                        .filter(|&i| s.trained.contains(&e) && s.expert_at(i) == e)
                        .count();
                    assert_eq!(
                        s.steps_of(e, step),
                        counted as u64,
                        "{e:?} at {step}, every {every}"
                    );
                }
            }
        }
    }

    #[test]
    fn one_expert_trains_every_step() {
        let s = ExpertSchedule::new(false, true, 10);
        assert!((0..25).all(|i| s.expert_at(i) == Expert::Low));
    }

    #[test]
    fn windows_split_at_the_i2v_boundary() {
        assert_eq!(
            Expert::High.window(0.9),
            Window {
                low: 900.0,
                high: 1000.0
            }
        );
        assert_eq!(
            Expert::Low.window(0.9),
            Window {
                low: 0.0,
                high: 900.0
            }
        );
        assert!(Expert::High.window(0.9).contains(1000.0));
        assert!(!Expert::Low.window(0.9).contains(900.0));
    }
}
