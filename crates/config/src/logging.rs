//! `logging`: how often progress is logged (AI Toolkit's `LoggingConfig`).

use crate::reader::{ai, Ctx, Neutral, Section, Unused, UnusedKey};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LoggingConfig {
    /// `log_every`: write a progress line every N steps (metrics.jsonl gets every step). Default 100.
    pub log_every: u32,
    /// `verbose`: more log output. Default false.
    pub verbose: bool,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            log_every: 100,
            verbose: false,
        }
    }
}

pub(crate) fn read_logging(s: &mut Section) -> LoggingConfig {
    let d = LoggingConfig::default();
    let logging = LoggingConfig {
        log_every: s.uint("log_every", d.log_every, ai("Progress line every N steps")),
        verbose: s.bool("verbose", d.verbose, ai("More log output")),
    };
    s.unused(LOGGING_UNUSED);
    logging
}

/// Keys of this section that wanlora reads but does not act on, and why.
const LOGGING_UNUSED: &[UnusedKey] = &[
    ("use_ui_logger", Unused::Accepted, "wanlora always writes metrics.jsonl, which its UI reads"),
    ("use_wandb", Unused::Refused(Neutral::Off), "Weights & Biases logging is not implemented; metrics go to metrics.jsonl in the output folder"),
    ("project_name", Unused::Accepted, "only with use_wandb"),
    ("run_name", Unused::Accepted, "only with use_wandb"),
];

/// The logging section's own checks; `at` is its key path.
pub(crate) fn check_logging(logging: &LoggingConfig, at: &str, ctx: &mut Ctx) {
    if logging.log_every == 0 {
        ctx.error_at(
            &format!("{at}.log_every"),
            "log_every must be at least 1",
            "use 1 to log every step",
        );
    }
}
