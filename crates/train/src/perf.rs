//! `performance_log_every`: every N steps, one line with the step-time statistics of those steps
//! and the time spent saving and previewing in between (AI Toolkit prints its timers the same way).

use std::time::Duration;

/// Collects timings between two reports.
#[derive(Debug, Default)]
pub struct PerfLog {
    every: u64,
    steps: Vec<f64>,
    saving: Duration,
    sampling: Duration,
}

/// What a timed phase besides the optimizer step was.
#[derive(Debug, Clone, Copy)]
pub enum Phase {
    Saving,
    Sampling,
}

impl PerfLog {
    /// `every` = 0 never reports.
    pub fn new(every: u32) -> PerfLog {
        PerfLog {
            every: u64::from(every),
            ..PerfLog::default()
        }
    }

    pub fn step(&mut self, seconds: f64) {
        if self.every > 0 {
            self.steps.push(seconds);
        }
    }

    pub fn phase(&mut self, phase: Phase, took: Duration) {
        match phase {
            Phase::Saving => self.saving += took,
            Phase::Sampling => self.sampling += took,
        }
    }

    /// The report due after optimizer step `step` (1-based), if one is; it starts the next period.
    pub fn report(&mut self, step: u64) -> Option<String> {
        if self.every == 0 || !step.is_multiple_of(self.every) || self.steps.is_empty() {
            return None;
        }
        let n = self.steps.len();
        let mean = self.steps.iter().sum::<f64>() / n as f64;
        let min = self.steps.iter().copied().fold(f64::INFINITY, f64::min);
        let max = self.steps.iter().copied().fold(0.0, f64::max);
        let line = format!(
            "performance, steps {}–{step}: {mean:.3} s/step (min {min:.3}, max {max:.3}); saving {:.1} s, previews {:.1} s",
            step + 1 - n as u64,
            self.saving.as_secs_f64(),
            self.sampling.as_secs_f64(),
        );
        *self = PerfLog::new(self.every as u32);
        Some(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_every_n_steps_with_the_statistics_of_those_steps() {
        let mut perf = PerfLog::new(2);
        perf.step(1.0);
        assert_eq!(perf.report(1), None);
        perf.step(3.0);
        perf.phase(Phase::Saving, Duration::from_millis(500));
        let line = perf.report(2).expect("due at step 2");
        assert!(
            line.contains("steps 1–2: 2.000 s/step (min 1.000, max 3.000)"),
            "{line}"
        );
        assert!(line.contains("saving 0.5 s, previews 0.0 s"), "{line}");
        // The next period starts empty.
        perf.step(5.0);
        let line = perf.report(4).expect("due at step 4");
        assert!(line.contains("steps 4–4: 5.000 s/step"), "{line}");
        assert!(line.contains("saving 0.0 s"), "{line}");
    }

    #[test]
    fn zero_never_reports() {
        let mut perf = PerfLog::new(0);
        perf.step(1.0);
        assert_eq!(perf.report(1), None);
    }
}
