//! Training timesteps: where in 0…1000 each sample is noised, by `timestep_type` and
//! `content_or_style`, inside the active expert's window.
//!
//! As in AI Toolkit, each draw builds a table of 1000 timesteps in descending order from the type's
//! distribution, keeps the entries inside the expert's window, and picks one index: uniformly
//! (`balanced`), biased to the start of the window — high noise — with u³ (`content`), or to its end
//! with 1 − u³ (`style`). The model sees t; the noise level is σ = t/1000.

use wanlora_data::rng::SplitMix64;

// The job's `timestep_type` and `content_or_style` as the config parsed them: no copy of either.
pub use wanlora_config::{ContentOrStyle, TimestepType};
pub use wanlora_spec::expert::Window;

pub const TABLE_LEN: usize = 1000;
const SHIFT: f64 = 5.0;

/// A standard normal value (Box–Muller).
fn gaussian(rng: &mut SplitMix64) -> f64 {
    let u1 = rng.next_f64().max(f64::MIN_POSITIVE);
    let u2 = rng.next_f64();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// The descending table of 1000 timesteps for `kind`.
pub fn table(kind: TimestepType, rng: &mut SplitMix64) -> Vec<f64> {
    let linear = |n: usize| -> Vec<f64> {
        (0..n)
            .map(|i| 1000.0 - 999.0 * i as f64 / (n - 1) as f64)
            .collect()
    };
    let mut t = match kind {
        TimestepType::Linear | TimestepType::Weighted => linear(TABLE_LEN),
        TimestepType::Sigmoid => (0..TABLE_LEN)
            .map(|_| 1000.0 * (1.0 - 1.0 / (1.0 + (-gaussian(rng)).exp())))
            .collect(),
        TimestepType::Shift => linear(TABLE_LEN)
            .into_iter()
            .map(|t| {
                let s = t / 1000.0;
                1000.0 * SHIFT * s / (1.0 + (SHIFT - 1.0) * s)
            })
            .collect(),
        TimestepType::LognormBlend => {
            let n_log = TABLE_LEN * 3 / 4;
            let logn: Vec<f64> = (0..n_log).map(|_| (gaussian(rng) / 3.0).exp()).collect();
            let max = logn.iter().cloned().fold(f64::MIN, f64::max);
            let mut v: Vec<f64> = logn.iter().map(|x| 1000.0 * x / max).collect();
            v.extend(linear(TABLE_LEN - n_log));
            v
        }
    };
    t.sort_by(|a, b| b.partial_cmp(a).expect("finite timesteps"));
    t
}

/// Draws one timestep in `window`. Falls back to a uniform draw over the window when the table has
/// no entry inside it (possible for narrow windows with random tables).
pub fn draw(kind: TimestepType, bias: ContentOrStyle, window: Window, rng: &mut SplitMix64) -> f64 {
    let t = table(kind, rng);
    let inside: Vec<f64> = t.into_iter().filter(|&x| window.contains(x)).collect();
    let u = rng.next_f64();
    if inside.is_empty() {
        return window.low + u * (window.high.min(1000.0) - window.low);
    }
    let n = inside.len();
    let pos = match bias {
        ContentOrStyle::Balanced => u,
        ContentOrStyle::Content => u * u * u,
        ContentOrStyle::Style => 1.0 - u * u * u,
    };
    let idx = ((pos * n as f64) as usize).min(n - 1);
    inside[idx]
}

/// Loss weight for `weighted`: a bell over t, exp(−2((t − 500)/1000)²), normalised to mean 1 over
/// 0…1000. (AI Toolkit uses a measured table; wanlora uses this closed form.)
pub fn loss_weight(kind: TimestepType, t: f64) -> f64 {
    if kind != TimestepType::Weighted {
        return 1.0;
    }
    let bell = |t: f64| (-2.0 * ((t - 500.0) / 1000.0).powi(2)).exp();
    let mean = (0..=1000).map(|t| bell(t as f64)).sum::<f64>() / 1001.0;
    bell(t) / mean
}

#[cfg(test)]
mod tests {
    use super::*;

    const HIGH: Window = Window {
        low: 900.0,
        high: 1000.0,
    };
    const LOW: Window = Window {
        low: 0.0,
        high: 900.0,
    };

    fn draws(kind: TimestepType, bias: ContentOrStyle, w: Window, n: usize) -> Vec<f64> {
        let mut rng = SplitMix64::new(42);
        (0..n).map(|_| draw(kind, bias, w, &mut rng)).collect()
    }

    fn mean(v: &[f64]) -> f64 {
        v.iter().sum::<f64>() / v.len() as f64
    }

    /// Share of draws below `x`.
    fn cdf(v: &[f64], x: f64) -> f64 {
        v.iter().filter(|&&t| t < x).count() as f64 / v.len() as f64
    }

    #[test]
    fn every_draw_lies_in_the_expert_window() {
        for kind in [
            TimestepType::Linear,
            TimestepType::Sigmoid,
            TimestepType::Shift,
            TimestepType::Weighted,
            TimestepType::LognormBlend,
        ] {
            for bias in [
                ContentOrStyle::Balanced,
                ContentOrStyle::Content,
                ContentOrStyle::Style,
            ] {
                for w in [HIGH, LOW] {
                    for t in draws(kind, bias, w, 300) {
                        assert!(w.contains(t), "{kind:?} {bias:?}: {t} outside {w:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn linear_balanced_is_uniform_in_the_window() {
        let v = draws(TimestepType::Linear, ContentOrStyle::Balanced, LOW, 20_000);
        for q in [0.1, 0.25, 0.5, 0.75, 0.9] {
            let x = LOW.low + q * (LOW.high - LOW.low);
            assert!(
                (cdf(&v, x) - q).abs() < 0.015,
                "quantile {q}: {}",
                cdf(&v, x)
            );
        }
    }

    #[test]
    fn content_and_style_follow_the_cubic_bias() {
        // Over n table entries sorted high→low, content picks position u³: P(position < p) = p^(1/3).
        let v = draws(TimestepType::Linear, ContentOrStyle::Content, HIGH, 20_000);
        // position p corresponds to t = 1000 − p·100 (uniform table in the window).
        for p in [0.1, 0.3, 0.6] {
            let t = 1000.0 - p * 100.0;
            let share_above = 1.0 - cdf(&v, t);
            assert!(
                (share_above - f64::powf(p, 1.0 / 3.0)).abs() < 0.02,
                "p {p}: {share_above}"
            );
        }
        let s = draws(TimestepType::Linear, ContentOrStyle::Style, HIGH, 20_000);
        assert!(
            mean(&s) < 935.0 && mean(&v) > 965.0,
            "{} {}",
            mean(&s),
            mean(&v)
        );
    }

    #[test]
    fn sigmoid_is_logit_normal_restricted_to_the_window() {
        // t = 1000(1 − σ(z)): P(t < x) = P(z > logit(1 − x/1000)) for the unrestricted law.
        let v = draws(TimestepType::Sigmoid, ContentOrStyle::Balanced, LOW, 20_000);
        let phi = |z: f64| 0.5 * (1.0 + erf(z / std::f64::consts::SQRT_2));
        let cdf_t = |x: f64| 1.0 - phi(((1.0 - x / 1000.0) / (x / 1000.0)).ln());
        for x in [200.0, 450.0, 700.0] {
            let want = cdf_t(x) / cdf_t(900.0);
            assert!(
                (cdf(&v, x) - want).abs() < 0.02,
                "x {x}: {} vs {want}",
                cdf(&v, x)
            );
        }
    }

    #[test]
    fn shift_matches_the_shifted_uniform_law() {
        // σ' = 5s/(1+4s) with s uniform: P(σ' < y) = s(y) = y / (5 − 4y).
        let v = draws(TimestepType::Shift, ContentOrStyle::Balanced, LOW, 20_000);
        let s_of = |t: f64| {
            let y = t / 1000.0;
            y / (SHIFT - (SHIFT - 1.0) * y)
        };
        for x in [300.0, 600.0, 850.0] {
            let want = (s_of(x) - s_of(1.0)) / (s_of(900.0) - s_of(1.0));
            assert!(
                (cdf(&v, x) - want).abs() < 0.02,
                "x {x}: {} vs {want}",
                cdf(&v, x)
            );
        }
        // With shift most of the table is high noise: the high window holds ~36 % of it, not 10 %.
        let mut rng = SplitMix64::new(1);
        let t = table(TimestepType::Shift, &mut rng);
        let share = t.iter().filter(|&&x| x >= 900.0).count() as f64 / 1000.0;
        assert!((share - (1.0 - s_of(900.0))).abs() < 0.01, "{share}");
    }

    #[test]
    fn weighted_weights_have_mean_one_and_peak_mid_range() {
        let m = (0..=1000)
            .map(|t| loss_weight(TimestepType::Weighted, t as f64))
            .sum::<f64>()
            / 1001.0;
        assert!((m - 1.0).abs() < 1e-9);
        assert!(
            loss_weight(TimestepType::Weighted, 500.0) > loss_weight(TimestepType::Weighted, 950.0)
        );
        assert_eq!(loss_weight(TimestepType::Linear, 950.0), 1.0);
    }

    /// Abramowitz–Stegun 7.1.26 (|error| < 1.5e-7), enough for a test's reference CDF.
    fn erf(x: f64) -> f64 {
        let s = x.signum();
        let x = x.abs();
        let t = 1.0 / (1.0 + 0.3275911 * x);
        let y = 1.0
            - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t
                + 0.254829592)
                * t
                * (-x * x).exp();
        s * y
    }
}
