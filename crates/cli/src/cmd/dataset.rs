//! `wanlora dataset inspect JOB.yaml`: what the job's datasets hold before a long run — items per
//! bucket and frame count, resolved captions, and every problem file with its reason.
//!
//! Exit code 1 when a dataset has no usable item (the error names the folder and each file's
//! reason), as training would refuse to start.

use anyhow::{Context, Result};
use std::path::PathBuf;
use wanlora_config::load_job;
use wanlora_data::{check_decoding, inspect, Catalog};

#[derive(clap::Subcommand)]
pub enum DatasetCommand {
    /// Items per bucket and frame count, resolved captions, problems.
    Inspect(InspectArgs),
}

#[derive(clap::Args)]
pub struct InspectArgs {
    /// The job file (AI Toolkit's YAML or JSON job format).
    pub job: PathBuf,
    /// How many resolved captions to list.
    #[arg(long, default_value_t = 20)]
    pub captions: usize,
    /// Also decode one item of every file, to find damaged clips before training (slower).
    #[arg(long)]
    pub decode: bool,
    /// Print the report as JSON (for the web UI) instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(command: DatasetCommand) -> Result<()> {
    match command {
        DatasetCommand::Inspect(args) => run_inspect(args),
    }
}

fn run_inspect(args: InspectArgs) -> Result<()> {
    let loaded = load_job(&args.job)?;
    // Without `training_seed` the trainer draws one and records it; inspection shows seed 0.
    let seed = loaded.job.process().training_seed.unwrap_or(0);
    let (specs, context) = wanlora_train::job::dataset_specs(&loaded.job, seed);
    let mut catalog = Catalog::load(&specs, &context)
        .with_context(|| format!("datasets of {}", args.job.display()))?;
    if args.decode {
        check_decoding(&mut catalog, !args.json);
        catalog.check_usable()?;
    }
    let report = inspect(&catalog, args.captions);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    Ok(())
}
