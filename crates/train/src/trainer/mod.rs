//! `wanlora train`: the whole job — models in, the dataset encoded (cached), both experts trained
//! in alternation, LoRA files and state saved, progress reported — resumable at every save.
//!
//! The trainer's parts: `setup` (models, caches, resume), `step` (one optimizer step), `save`
//! (LoRA files, state, resume), `previews` (samples during training) and `run` (the loop).

mod memory;
mod preview_hand_off;
mod previews;
mod run;
pub(crate) mod save;
mod setup;
mod step;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

use crate::checkpoint::{self, ExpertSamplers, ExpertState, RunState, STATE_FORMAT};
use crate::divergence::{self, NonFiniteCounter};
use crate::ema::Ema;
use crate::encoders::{self, Umt5TextEncoder, VaeLatentEncoder};
pub use crate::expert_parallel::JobPart;
use crate::experts::{Expert, ExpertSchedule};
use crate::job;
use crate::jobfiles;
use crate::lock::JobLock;
use crate::loss;
use crate::optim::choice::TrainOptimizer;
use crate::optim::{clip_grad_norm, FlatParams};
use crate::output::{self, Control, JobFolder, JobPhase, Metrics, Status};
use crate::perf::{PerfLog, Phase};
use crate::sampling::{
    sample_stem, start_condition, video_frames, write_sample, Conditioning, SampleFiles,
    SampleRequest, SampleRun,
};
use crate::schedule::LrSchedule;
use crate::sources::ModelSource;
use crate::timesteps;
use crate::validation::ValidationSet;
use crate::TrainError;
use wanlora_config::{LoadedJob, SaveDtype, TrainDtype};
use wanlora_data::cache::{item_latents, run_cache_pass, text_embedding, Cache, CachePassOptions};
use wanlora_data::rng::{derive_seed, SplitMix64};
use wanlora_data::{BatchSampler, Catalog, DataItem};
use wanlora_hub::{Component, HubConfig};
use wanlora_models::lora::{LoraApply, LoraSet, Multiplier};
use wanlora_models::quant::Fp8Mode;
use wanlora_models::transformer::checkpoint::{forward_backward, CheckpointPolicy};
use wanlora_models::transformer::{BlockOffload, LoadOptions, WanTransformer};
use wanlora_models::vae::Vae;
use wanlora_spec::job_folder;

pub use memory::MemoryOverride;

/// How a run is driven (the CLI and tests set these).
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Show an indicatif progress bar (off in tests and when the output is not a terminal).
    pub progress: bool,
    /// Stop after this many steps of this run (tests use it to interrupt a run), without a final save.
    pub stop_after: Option<u64>,
    /// Where the hub crate looks for and downloads models.
    pub hub: HubConfig,
}

/// What a finished (or stopped) run did.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSummary {
    pub output: PathBuf,
    /// The optimizer steps done so far in total.
    pub step: u64,
    /// Losses of the steps this run did, by step.
    pub losses: Vec<(u64, Expert, f64)>,
    pub stopped: bool,
    pub files: Vec<PathBuf>,
}

/// One trained expert: the frozen model, its adapters (views of the optimizer's flat buffer), the
/// optimizer, the EMA, and its own data order (regularisation batches on its odd steps).
struct ExpertRun {
    expert: Expert,
    model: WanTransformer,
    flat: FlatParams,
    lora: LoraSet,
    optimizer: TrainOptimizer,
    ema: Option<Ema>,
    sampler: BatchSampler,
    reg_sampler: Option<BatchSampler>,
}

/// What one optimizer step did; `loss` is `None` when it was skipped as non-finite.
#[derive(Debug, Clone, PartialEq)]
pub struct StepOutcome {
    pub expert: Expert,
    pub loss: Option<f64>,
    pub loss_main: f64,
    pub loss_preservation: Option<f64>,
    pub grad_norm: f64,
    pub timestep: f64,
    pub lr: f64,
}

pub struct Trainer {
    job: LoadedJob,
    opts: RunOptions,
    folder: JobFolder,
    device: Device,
    kind: Kind,
    seed: u64,
    schedule: ExpertSchedule,
    lr: LrSchedule,
    boundary: f64,
    catalog: Catalog,
    cache: Cache,
    texts: HashMap<String, Tensor>,
    text_len: i64,
    vae: Vae,
    vae_fingerprint: String,
    experts: Vec<ExpertRun>,
    step: u64,
    sources: ModelSource,
    /// How the experts are stored (also for the untrained one that previews load).
    load: LoadOptions,
    /// The job's previews, resolved once.
    samples: Vec<SampleRequest>,
    /// The expert that is not trained, loaded only when previews first need it.
    untrained: Option<(Expert, WanTransformer)>,
    /// The job folder's lock, held while this trainer lives (by the supervisor instead, for the
    /// parts of an expert-parallel job).
    _lock: Option<JobLock>,
    /// What of the job this process runs.
    part: JobPart,
    /// The process group of a data-parallel run.
    data: Option<crate::data_parallel::DataRank>,
    /// The held-out set of `validation_config`, encoded.
    validation: Option<ValidationSet>,
    /// `keep_blocks` / `keep_attention: auto`: the budget and each bucket's plan.
    memory: memory::MemoryPlans,
}

/// The number that sets an expert's own random streams (data order, timesteps, noise) apart.
fn expert_stream(expert: Expert) -> u64 {
    0xE0 + expert as u64
}

impl Trainer {
    /// The trained expert `expert`, if this job trains it: the one lookup every part uses.
    fn trained(&self, expert: Expert) -> Option<&ExpertRun> {
        self.experts.iter().find(|e| e.expert == expert)
    }

    fn trained_mut(&mut self, expert: Expert) -> Option<&mut ExpertRun> {
        self.experts.iter_mut().find(|e| e.expert == expert)
    }

    /// Sets up a run: output folder, dataset scan, text and latent caching, the trained experts, and
    /// the state of an earlier run in the same folder if there is one.
    pub fn new(job: LoadedJob, opts: RunOptions) -> Result<Trainer, TrainError> {
        Self::new_part(job, opts, JobPart::Whole)
    }

    /// [`Trainer::new`] for one part of a job: the whole job, or (under an expert-parallel
    /// supervisor that holds the job's lock) its caches or one expert.
    pub fn new_part(
        job: LoadedJob,
        opts: RunOptions,
        part: JobPart,
    ) -> Result<Trainer, TrainError> {
        // First of all: a second trainer of this job stops here, having written nothing.
        let lock = match &part {
            JobPart::Whole => Some(JobLock::acquire(&job::output_folder(&job.job))?),
            JobPart::Data { place, .. } if place.rank == 0 => {
                Some(JobLock::acquire(&job::output_folder(&job.job))?)
            }
            _ => None,
        };
        let mut folder = JobFolder::create_for(&job::output_folder(&job.job), part.rank())?;
        folder.quiet = part.is_quiet();
        if part.rank().is_none() && !folder.quiet {
            for stale in jobfiles::remove_stale_temp_files(&folder.root) {
                folder.log(&format!(
                    "removed {} (left by a killed run)",
                    stale.display()
                ));
            }
        }
        // Ctrl+C stops cleanly from here on, also during caption encoding and the cache pass.
        output::install_sigint_handler();
        let total = job.job.process().train.steps as u64;
        let view = JobFolder {
            root: folder.root.clone(),
            rank: folder.rank,
            quiet: folder.quiet,
        };
        crate::error::catch_libtorch(|| Self::setup(job, opts, view, lock, part)).map_err(|e| {
            // A run that cannot start still tells the UI and the user why, in the job folder.
            let stopped = matches!(e, TrainError::StoppedDuringSetup { .. });
            let status = if stopped {
                Status::at(JobPhase::Stopped, 0, total, &e.to_string())
            } else {
                Status {
                    error: Some(e.to_string()),
                    ..Status::at(JobPhase::Failed, 0, total, "Failed before training started")
                }
            };
            folder.write_final_status(&status);
            folder.log(&if stopped {
                e.to_string()
            } else {
                format!("failed: {e}")
            });
            folder.remove_pid();
            e
        })
    }

    pub fn step(&self) -> u64 {
        self.step
    }

    /// The status record of the run at its current step (the one builder of it besides
    /// `Status::at` for the set-up phases).
    fn status(
        &self,
        phase: JobPhase,
        message: &str,
        expert: Option<Expert>,
        sps: Option<f64>,
    ) -> Status {
        let total = self.job.job.process().train.steps as u64;
        Status {
            expert: expert.map(|e| e.name().to_string()),
            seconds_per_step: sps,
            eta_seconds: sps.map(|s| s * total.saturating_sub(self.step) as f64),
            ..Status::at(phase, self.step, total, message)
        }
    }

    /// Records a failure in status.json and the log, and hands the error back.
    fn fail(&self, e: TrainError) -> TrainError {
        let mut s = self.status(JobPhase::Failed, "Failed", None, None);
        s.error = Some(e.to_string());
        self.folder.write_final_status(&s);
        self.folder.log(&format!("failed: {e}"));
        self.folder.remove_pid();
        e
    }
}

/// Runs a whole job: `wanlora train JOB.yaml`.
pub fn train(job: LoadedJob, opts: RunOptions) -> Result<RunSummary, TrainError> {
    train_part(job, opts, JobPart::Whole)
}

/// Runs one part of a job ([`JobPart`]): the whole job, or one expert of an expert-parallel job.
pub fn train_part(
    job: LoadedJob,
    opts: RunOptions,
    part: JobPart,
) -> Result<RunSummary, TrainError> {
    let output = job::output_folder(&job.job);
    match Trainer::new_part(job, opts, part) {
        Ok(trainer) => trainer.run(),
        Err(TrainError::StoppedDuringSetup { .. }) => Ok(RunSummary {
            step: checkpoint::latest_state(&output, &mut |_| {})
                .ok()
                .flatten()
                .map_or(0, |(run, _)| run.step),
            output,
            losses: Vec::new(),
            stopped: true,
            files: Vec::new(),
        }),
        Err(e) => Err(e),
    }
}
