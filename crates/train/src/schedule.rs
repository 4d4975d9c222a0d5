//! Learning-rate schedules (a pure function of the step, so resume needs no state): constant,
//! cosine annealing to `eta_min`, PyTorch's LinearLR (start_factor → end_factor), each after an
//! optional linear warmup from zero.

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LrShape {
    Constant,
    /// Cosine from lr to `eta_min` over `total` steps.
    Cosine {
        eta_min: f64,
        total: u64,
    },
    /// lr · (start + (end − start)·min(step, total)/total), as torch.optim.lr_scheduler.LinearLR.
    Linear {
        start_factor: f64,
        end_factor: f64,
        total: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrSchedule {
    pub lr: f64,
    pub shape: LrShape,
    pub warmup: u64,
}

impl LrSchedule {
    /// The learning rate for 0-based `step`.
    pub fn at(&self, step: u64) -> f64 {
        if step < self.warmup {
            return self.lr * (step + 1) as f64 / self.warmup as f64;
        }
        let s = step - self.warmup;
        match self.shape {
            LrShape::Constant => self.lr,
            LrShape::Cosine { eta_min, total } => {
                let total = total.saturating_sub(self.warmup).max(1);
                let p = (s.min(total)) as f64 / total as f64;
                eta_min + (self.lr - eta_min) * 0.5 * (1.0 + (std::f64::consts::PI * p).cos())
            }
            LrShape::Linear {
                start_factor,
                end_factor,
                total,
            } => {
                let total = total.max(1);
                let p = s.min(total) as f64 / total as f64;
                self.lr * (start_factor + (end_factor - start_factor) * p)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_constant() {
        let s = LrSchedule {
            lr: 1e-4,
            shape: LrShape::Constant,
            warmup: 4,
        };
        assert_eq!(s.at(0), 2.5e-5);
        assert_eq!(s.at(3), 1e-4);
        assert_eq!(s.at(100), 1e-4);
    }

    #[test]
    fn cosine_ends_at_eta_min() {
        let s = LrSchedule {
            lr: 1.0,
            shape: LrShape::Cosine {
                eta_min: 0.1,
                total: 100,
            },
            warmup: 0,
        };
        assert!((s.at(0) - 1.0).abs() < 1e-12);
        assert!((s.at(50) - 0.55).abs() < 1e-12);
        assert!((s.at(100) - 0.1).abs() < 1e-12);
    }

    #[test]
    fn linear_follows_torch_linear_lr() {
        let s = LrSchedule {
            lr: 3.0,
            shape: LrShape::Linear {
                start_factor: 1.0 / 3.0,
                end_factor: 1.0,
                total: 10,
            },
            warmup: 0,
        };
        assert!((s.at(0) - 1.0).abs() < 1e-12);
        assert!((s.at(5) - 2.0).abs() < 1e-12);
        assert!((s.at(20) - 3.0).abs() < 1e-12);
    }
}
