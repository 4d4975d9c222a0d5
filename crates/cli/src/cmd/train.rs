//! `wanlora train JOB.yaml`: runs a whole AI Toolkit-style job; running it again on the same output
//! folder resumes where it stopped.

use anyhow::{Context, Result};
use std::io::IsTerminal;
use std::path::PathBuf;
use wanlora_hub::HubConfig;
use wanlora_train::trainer::{train, RunOptions};

#[derive(clap::Args)]
pub struct TrainArgs {
    /// The job file (AI Toolkit YAML or JSON).
    pub job: PathBuf,
    /// No progress bar (log lines every `logging.log_every` steps instead).
    #[arg(long)]
    pub no_progress: bool,
    /// Caps this process's GPU memory (the caching allocator) at G GiB, e.g. 24 to stand for a
    /// 24 GB card; `keep_blocks`/`keep_attention: auto` plan within the cap.
    #[arg(long, env = "WANLORA_MEMORY_CAP_GIB")]
    pub memory_cap_gib: Option<f64>,
}

pub fn run(args: TrainArgs) -> Result<()> {
    if let Some(gib) = args.memory_cap_gib {
        if !wanlora_torch::cuda_available() {
            anyhow::bail!(
                "--memory-cap-gib / WANLORA_MEMORY_CAP_GIB caps GPU memory, and CUDA is not available here; unset it"
            );
        }
        super::bench::step::cap_memory(gib)?;
    }
    let job = wanlora_config::load_job(&args.job)
        .with_context(|| format!("cannot use the job file {}", args.job.display()))?;
    let text = std::fs::read_to_string(&args.job).unwrap_or_default();
    for w in &job.warnings {
        eprintln!("{}", w.display_in(&text));
    }
    let opts = RunOptions {
        progress: !args.no_progress && std::io::stderr().is_terminal(),
        stop_after: None,
        hub: HubConfig::from_env(),
    };
    let summary = train(job, opts)?;
    if summary.stopped {
        eprintln!(
            "stopped at step {}; run the same command again to resume ({})",
            summary.step,
            summary.output.display()
        );
    } else {
        eprintln!(
            "done: {} steps, LoRA files in {}",
            summary.step,
            summary.output.display()
        );
        for f in &summary.files {
            eprintln!("  {}", f.display());
        }
    }
    Ok(())
}
