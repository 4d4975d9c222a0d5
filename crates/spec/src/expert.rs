//! Wan 2.2 A14B's two experts and the timesteps each one handles: the high-noise expert for
//! t ≥ boundary·1000 (motion, layout), the low-noise one below (detail, identity).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Expert {
    #[serde(rename = "high_noise")]
    High,
    #[serde(rename = "low_noise")]
    Low,
}

impl Expert {
    pub const BOTH: [Expert; 2] = [Expert::High, Expert::Low];

    /// `high_noise` / `low_noise`: file suffixes, metrics and the UI.
    pub fn name(self) -> &'static str {
        match self {
            Expert::High => "high_noise",
            Expert::Low => "low_noise",
        }
    }

    /// `high-noise` / `low-noise`, for messages.
    pub fn label(self) -> &'static str {
        match self {
            Expert::High => "high-noise",
            Expert::Low => "low-noise",
        }
    }

    /// The expert's folder in a diffusers repository.
    pub fn diffusers_folder(self) -> &'static str {
        match self {
            Expert::High => "transformer",
            Expert::Low => "transformer_2",
        }
    }

    /// AI Toolkit's number for the expert in adapter keys (`transformer_1.` / `transformer_2.`).
    pub fn aitk_index(self) -> u8 {
        match self {
            Expert::High => 1,
            Expert::Low => 2,
        }
    }

    /// The timesteps this expert handles.
    pub fn window(self, boundary_ratio: f64) -> Window {
        let b = 1000.0 * boundary_ratio;
        match self {
            Expert::High => Window {
                low: b,
                high: 1000.0,
            },
            Expert::Low => Window { low: 0.0, high: b },
        }
    }
}

/// A range of timesteps: `low ≤ t < high`, or `≤ high` when `high` is 1000.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    pub low: f64,
    pub high: f64,
}

impl Window {
    pub fn contains(&self, t: f64) -> bool {
        t >= self.low && (t < self.high || (self.high >= 1000.0 && t <= self.high))
    }
}
