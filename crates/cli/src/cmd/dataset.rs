//! `wanlora dataset inspect JOB.yaml`: what the job's datasets hold before a long run — items per
//! bucket and frame count, resolved captions, and every problem file with its reason.
//!
//! Exit code 1 when a dataset has no usable item (the error names the folder and each file's
//! reason), as training would refuse to start.

use anyhow::{Context, Result};
use std::path::PathBuf;
use wanlora_config::{load_job, Job};
use wanlora_data::{check_decoding, inspect, Catalog, DatasetSpec, JobContext};

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
    let (specs, context) = dataset_specs(&loaded.job);
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

/// The job's datasets as the data crate's specs, and the job facts they need.
pub fn dataset_specs(job: &Job) -> (Vec<DatasetSpec>, JobContext) {
    let process = job.process();
    let train = &process.train;
    let specs = process
        .datasets
        .iter()
        .map(|d| DatasetSpec {
            folder_path: PathBuf::from(&d.folder_path),
            caption_ext: d.caption_ext.clone(),
            default_caption: d.default_caption.clone(),
            trigger_word: d.trigger_word.clone(),
            caption_dropout_rate: d.caption_dropout_rate,
            resolutions: d.resolution.clone(),
            num_frames: d.num_frames as usize,
            shrink_video_to_frames: d.shrink_video_to_frames,
            fps: d.fps as f64,
            auto_frame_count: d.auto_frame_count,
            flip_x: d.flip_x,
            flip_y: d.flip_y,
            is_reg: d.is_reg,
            network_weight: d.network_weight,
            loss_multiplier: d.loss_multiplier,
            num_repeats: d.num_repeats as usize,
            cache_latents: d.caches_latents(),
            batch_size: None,
        })
        .collect();
    let context = JobContext {
        name: job.config.name.clone(),
        trigger_word: process.trigger_word.clone(),
        // Without `training_seed` the trainer draws one and records it; inspection shows seed 0.
        seed: process.training_seed.unwrap_or(0),
        batch_size: train.batch_size.max(1) as usize,
        preservation_class: train
            .diff_output_preservation
            .then(|| train.diff_output_preservation_class.clone()),
        cache_text_embeddings: train.cache_text_embeddings
            || process.datasets.iter().any(|d| d.cache_text_embeddings),
    };
    (specs, context)
}
