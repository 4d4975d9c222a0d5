//! `logging`: how often progress is logged (AI Toolkit's `LoggingConfig`).

use crate::reader::{ai, Neutral, Section};
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
    s.accept(
        "use_ui_logger",
        "wanlora always writes metrics.jsonl, which its UI reads",
    );
    s.refuse("use_wandb", Neutral::Off, "Weights & Biases logging is not implemented; metrics go to metrics.jsonl in the output folder");
    s.accept("project_name", "only with use_wandb");
    s.accept("run_name", "only with use_wandb");
    logging
}
