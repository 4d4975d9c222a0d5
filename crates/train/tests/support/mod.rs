//! Helpers shared by the trainer's integration tests.

use wanlora_train::experts::Expert;

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// Each expert's loss over its own steps falls: the mean of its last 6 steps is below 85 % of its
/// first 6 (timesteps and noise are random draws: the demo's high-noise expert, whose loss falls
/// slowest, ends at 83 % with the per-expert streams of seed 7).
pub fn assert_each_expert_learns(losses: &[(Expert, f64)]) {
    for expert in [Expert::High, Expert::Low] {
        let l: Vec<f64> = losses
            .iter()
            .filter(|(e, _)| *e == expert)
            .map(|(_, l)| *l)
            .collect();
        assert!(l.len() >= 12, "{expert:?}: only {} steps", l.len());
        let (first, last) = (mean(&l[..6]), mean(&l[l.len() - 6..]));
        assert!(
            last < 0.85 * first,
            "{expert:?}: loss {first:.4} → {last:.4} did not fall"
        );
    }
}
