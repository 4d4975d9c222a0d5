//! `wanlora train`: the whole job — models in, the dataset encoded (cached), both experts trained
//! in alternation, LoRA files and state saved, progress reported — resumable at every save.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

use crate::checkpoint::{self, ExpertState, RunState, STATE_FORMAT};
use crate::divergence::{self, NonFiniteCounter};
use crate::ema::Ema;
use crate::encoders::{self, Umt5TextEncoder, VaeLatentEncoder};
use crate::experts::{Expert, ExpertSchedule};
use crate::job;
use crate::jobfiles;
use crate::lock::JobLock;
use crate::loss::{self, LossType};
use crate::optim::choice::TrainOptimizer;
use crate::optim::{clip_grad_norm, FlatParams};
use crate::output::{self, Control, JobFolder, Metrics, Status};
use crate::perf::{PerfLog, Phase};
use crate::sampling::{
    sample_stem, start_condition, video_frames, write_sample, SampleFiles, SampleRequest, SampleRun,
};
use crate::schedule::LrSchedule;
use crate::sources::ModelSource;
use crate::timesteps::{self, Bias, TimestepType};
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
/// optimizer and the EMA.
struct ExpertRun {
    expert: Expert,
    model: WanTransformer,
    flat: FlatParams,
    lora: LoraSet,
    optimizer: TrainOptimizer,
    ema: Option<Ema>,
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

/// Everything one micro-batch needs, on the device.
struct MicroBatch {
    input: Tensor,
    target: Tensor,
    timestep: Tensor,
    context: Tensor,
    preservation_context: Option<Tensor>,
    weights: Tensor,
    multiplier: Multiplier,
    mean_timestep: f64,
}

fn parse_device(name: &str) -> Result<Device, TrainError> {
    let name = name.trim();
    if name == "cpu" {
        return Ok(Device::Cpu);
    }
    let index = match name {
        "cuda" | "" => 0,
        n => n
            .strip_prefix("cuda:")
            .and_then(|i| i.parse::<usize>().ok())
            .ok_or_else(|| {
                TrainError::Setup(format!("device {n:?}: expected cpu, cuda or cuda:N"))
            })?,
    };
    if !wanlora_torch::cuda_available() {
        return Err(TrainError::Setup(format!(
            "device {name}: CUDA is not available here (see `wanlora doctor`); set `device: cpu` only for the tiny demo model"
        )));
    }
    Ok(Device::Cuda(index))
}

fn save_kind(d: SaveDtype) -> Kind {
    match d {
        SaveDtype::Float16 => Kind::Half,
        SaveDtype::Bf16 => Kind::BFloat16,
        SaveDtype::Float32 => Kind::Float,
    }
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
    timestep_type: TimestepType,
    bias: Bias,
    loss_type: LossType,
    boundary: f64,
    catalog: Catalog,
    cache: Cache,
    sampler: BatchSampler,
    reg_sampler: Option<BatchSampler>,
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
    /// The job folder's lock, held while this trainer lives.
    _lock: JobLock,
    /// The held-out set of `validation_config`, encoded.
    validation: Option<ValidationSet>,
}

impl Trainer {
    /// Sets up a run: output folder, dataset scan, text and latent caching, the trained experts, and
    /// the state of an earlier run in the same folder if there is one.
    pub fn new(job: LoadedJob, opts: RunOptions) -> Result<Trainer, TrainError> {
        // First of all: a second trainer of this job stops here, having written nothing.
        let lock = JobLock::acquire(&job::output_folder(&job.job))?;
        let folder = JobFolder::create(&job::output_folder(&job.job))?;
        for stale in jobfiles::remove_stale_temp_files(&folder.root) {
            folder.log(&format!(
                "removed {} (left by a killed run)",
                stale.display()
            ));
        }
        // Ctrl+C stops cleanly from here on, also during caption encoding and the cache pass.
        output::install_sigint_handler();
        let total = job.job.process().train.steps as u64;
        let root = folder.root.clone();
        crate::error::catch_libtorch(|| Self::setup(job, opts, JobFolder { root }, lock)).map_err(
            |e| {
                // A run that cannot start still tells the UI and the user why, in the job folder.
                let stopped = matches!(e, TrainError::StoppedDuringSetup { .. });
                let status = Status {
                    state: if stopped { "stopped" } else { "failed" },
                    step: 0,
                    total_steps: total,
                    expert: None,
                    seconds_per_step: None,
                    eta_seconds: None,
                    message: if stopped {
                        e.to_string()
                    } else {
                        "Failed before training started".into()
                    },
                    pid: std::process::id(),
                    updated: output::now_rfc3339(),
                    error: (!stopped).then(|| e.to_string()),
                };
                folder.write_final_status(&status);
                folder.log(&if stopped {
                    e.to_string()
                } else {
                    format!("failed: {e}")
                });
                folder.remove_pid();
                e
            },
        )
    }

    fn setup(
        job: LoadedJob,
        opts: RunOptions,
        folder: JobFolder,
        lock: JobLock,
    ) -> Result<Trainer, TrainError> {
        let process = job.job.process().clone();
        let train = &process.train;
        folder.write_pid()?;
        if folder.repair_metrics()? > 0 {
            folder.log("metrics.jsonl: cut its last line, torn by a killed run");
        }
        wanlora_torch::weights::write_atomic(
            &folder.path("config.yaml"),
            wanlora_config::to_yaml(&job.job).as_bytes(),
        )?;
        let status = |state: &'static str, message: &str| Status {
            state,
            step: 0,
            total_steps: train.steps as u64,
            expert: None,
            seconds_per_step: None,
            eta_seconds: None,
            message: message.into(),
            pid: std::process::id(),
            updated: output::now_rfc3339(),
            error: None,
        };
        folder.write_status(&status("starting", "Loading"))?;
        folder.log(&format!(
            "wanlora {} training {}",
            env!("CARGO_PKG_VERSION"),
            job.path.display()
        ));

        let device = parse_device(&process.device)?;
        let kind = match train.dtype {
            TrainDtype::Bf16 => Kind::BFloat16,
            TrainDtype::Fp32 => Kind::Float,
        };
        let previous = checkpoint::latest_state(&folder.root, &mut |warning| {
            eprintln!("warning: {warning}");
            folder.log(warning);
        })?;
        let seed = match (&previous, process.training_seed) {
            (Some((run, _)), _) => run.seed,
            (None, Some(s)) => s,
            (None, None) => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(42, |d| d.as_nanos() as u64),
        };

        // Data first: a broken dataset is reported before any model loads.
        let (specs, context) = job::dataset_specs(&job.job, seed);
        let mut catalog = Catalog::load(&specs, &context)?;
        if !catalog.problems.is_empty() {
            let summary = wanlora_data::summarise(&catalog.problems);
            eprintln!("{summary}");
            folder.log(&summary);
        }
        catalog.check_usable()?;
        let mut validation = ValidationSet::load(&job.job, &specs, &context)?;

        let mut sources = ModelSource::for_training(
            job::model_spec(&job),
            process.model.arch,
            opts.hub.clone(),
            &folder.root,
        )?;
        if let (Fp8Mode::Uint4, Some(reference)) = (
            transformer_load_options(&process.model)?.fp8,
            &process.model.accuracy_recovery_adapter,
        ) {
            let path = sources.fetch_recovery_adapter(reference, &opts.hub)?;
            folder.log(&format!("accuracy recovery adapter: {}", path.display()));
        }
        let cache_root = folder.root.join("cache");
        let mut cache = Cache::open(&cache_root)?;

        let samples: Vec<SampleRequest> = if process.train.disable_sampling {
            Vec::new()
        } else {
            (0..process.sample.samples.len())
                .filter_map(|i| {
                    SampleRequest::from_job(
                        &process.sample,
                        i,
                        process.model.arch,
                        process.model.boundary_ratio,
                    )
                    .transpose()
                })
                .collect::<Result<_, _>>()
                .map_err(|e| TrainError::Setup(format!("sample: {e}")))?
        };
        // Text: every caption (with dropout and DOP variants), the blank prompt and the sample
        // prompts are encoded once; then the encoder is freed.
        folder.write_status(&status("caching", "Encoding captions"))?;
        let texts = {
            let encoder = sources.text_encoder(
                if device.is_cuda() {
                    Kind::BFloat16
                } else {
                    Kind::Float
                },
                device,
                process.model.quantizes_text_encoder(),
            )?;
            let tokenizer = sources.tokenizer()?;
            let mut te = Umt5TextEncoder {
                encoder: &encoder,
                tokenizer: &tokenizer,
                fingerprint: format!("umt5 {}", sources.fingerprint(Component::TextEncoder)),
            };
            let use_cache = context.cache_text_embeddings;
            let mut wanted: Vec<String> = if train.unload_text_encoder {
                // AI Toolkit's meaning: captions are not used, only the trigger word (or nothing).
                vec![
                    process.trigger_word.clone().unwrap_or_default(),
                    String::new(),
                ]
            } else {
                catalog.caption_texts()
            };
            wanted.push(String::new());
            wanted.extend(validation.iter().flat_map(ValidationSet::captions));
            for r in &samples {
                wanted.push(r.prompt.clone());
                wanted.push(r.negative_prompt.clone());
            }
            wanted.sort();
            wanted.dedup();
            let mut out = HashMap::new();
            for text in wanted {
                if folder.stop_requested() {
                    return Err(TrainError::StoppedDuringSetup {
                        phase: "encoding captions",
                    });
                }
                let t = text_embedding(&text, use_cache.then_some(&cache), &mut te)?;
                let ctx = t.get(encoders::CONTEXT).ok_or_else(|| {
                    TrainError::Setup("text cache entry without a context tensor".into())
                })?;
                out.insert(text, encoders::from_named(ctx, Kind::Float, Device::Cpu)?);
            }
            out
        };

        // Latents: the cache pass encodes every item of the caching datasets (progress bar); items of
        // other datasets are encoded when their batch comes.
        folder.write_status(&status("caching", "Encoding latents"))?;
        let mut vae = sources.vae(
            if device.is_cuda() {
                Kind::BFloat16
            } else {
                Kind::Float
            },
            device,
        )?;
        vae.set_tiling(job::vae_tiling(&process.model))?;
        // Tiles change the encoded latents slightly (blended seams), so the cache is keyed by them.
        let vae_fingerprint = format!(
            "wan21-vae {:?} {:?} {}",
            vae.kind(),
            vae.tiling(),
            sources.fingerprint(Component::Vae)
        );
        {
            let mut enc = crate::setup_stop::StopChecked {
                inner: VaeLatentEncoder {
                    vae: &vae,
                    fingerprint: vae_fingerprint.clone(),
                    first_frame_condition: process.model.arch.facts().first_frame_condition,
                },
                folder: &folder,
            };
            let report = run_cache_pass(
                &mut catalog,
                &mut cache,
                Some(&mut enc),
                None,
                CachePassOptions {
                    progress: opts.progress,
                },
            )
            .map_err(crate::setup_stop::cache_pass_error)?;
            folder.log(&format!(
                "cache pass: {} encoded, {} reused, {} failed in {:.1} s",
                report.latents_encoded,
                report.latents_reused,
                report.failed.len(),
                report.seconds
            ));
            for problem in &report.failed {
                folder.log(&format!("cache pass: {problem}"));
            }
        }

        if let Some(v) = &mut validation {
            v.encode(
                &mut cache,
                &vae,
                &vae_fingerprint,
                &texts,
                seed,
                process.model.arch.facts().first_frame_condition,
                device,
            )?;
        }
        let sampler = BatchSampler::new(&catalog, |i| !i.is_reg)?;
        let reg_sampler = if catalog.usable_items().any(|i| i.is_reg) {
            Some(BatchSampler::new(&catalog, |i| i.is_reg)?)
        } else {
            None
        };

        // The trained experts with fresh adapters; resume overwrites them below.
        let schedule = job::expert_schedule(&job.job);
        let rank = process.network.linear as i64;
        let alpha = process.network.alpha();
        let load = transformer_load_options(&process.model)?;
        let mut experts = Vec::new();
        for &expert in &schedule.trained {
            folder.write_status(&status(
                "starting",
                &format!("Loading the {} expert", expert.name()),
            ))?;
            let t0 = Instant::now();
            let mut model = sources.transformer(expert, kind, device, &load)?;
            folder.log(&format!(
                "{} expert loaded in {:.1} s",
                expert.name(),
                t0.elapsed().as_secs_f64()
            ));
            if process.model.low_vram && expert != schedule.expert_at(0) {
                // Loaded one at a time: the idle expert waits in pinned host memory.
                let report = model.offload()?;
                folder.log(&format!(
                    "{} expert parked in host memory ({report})",
                    expert.name()
                ));
            }
            tch::manual_seed(derive_seed(&[seed, 0xA0 + expert as u64]) as i64);
            let fresh = LoraSet::new_trainable(&model.config, rank, alpha, device);
            let flat = FlatParams::new(&fresh.parameters(), device);
            let lora = fresh.with_parameters(&flat.params);
            let optimizer = TrainOptimizer::new(&flat, train);
            let ema = train
                .ema_config
                .use_ema
                .then(|| Ema::new(&flat.flat, train.ema_config.ema_decay));
            experts.push(ExpertRun {
                expert,
                model,
                flat,
                lora,
                optimizer,
                ema,
            });
        }

        let mut trainer = Trainer {
            schedule,
            lr: job::lr_schedule(train),
            timestep_type: job::timestep_type(train.timestep_type),
            bias: job::bias(train.content_or_style),
            loss_type: job::loss_type(train.loss_type),
            boundary: process.model.boundary_ratio,
            text_len: 512,
            job,
            opts,
            folder,
            device,
            kind,
            seed,
            catalog,
            cache,
            sampler,
            reg_sampler,
            texts,
            vae,
            vae_fingerprint,
            experts,
            step: 0,
            sources,
            load,
            samples,
            untrained: None,
            _lock: lock,
            validation,
        };
        if let Some((run, dir)) = previous {
            trainer.resume(&run, &dir)?;
        }
        Ok(trainer)
    }

    fn resume(&mut self, run: &RunState, dir: &std::path::Path) -> Result<(), TrainError> {
        let p = self.job.job.process();
        let experts: Vec<Expert> = self.experts.iter().map(|e| e.expert).collect();
        if run.format != STATE_FORMAT
            || run.experts != experts
            || run.rank != p.network.linear as i64
        {
            return Err(TrainError::Setup(format!(
                "{}: the saved state is for experts {:?} at rank {}, this job trains {:?} at rank {}; use a new \
                 `config.name` or delete the state/ folder to start over",
                dir.display(),
                run.experts,
                run.rank,
                experts,
                p.network.linear
            )));
        }
        for e in &mut self.experts {
            checkpoint::load_expert_state(
                dir,
                e.expert,
                &e.flat.flat,
                &mut e.optimizer,
                e.ema.as_mut().map(|m| &mut m.shadow),
            )?;
        }
        self.sampler.restore(&run.sampler)?;
        if let (Some(s), Some(state)) = (&mut self.reg_sampler, &run.reg_sampler) {
            s.restore(state)?;
        }
        self.step = run.step;
        let msg = format!("resuming at step {} from {}", run.step, dir.display());
        eprintln!("{msg}");
        self.folder.log(&msg);
        Ok(())
    }

    pub fn step(&self) -> u64 {
        self.step
    }

    fn status(
        &self,
        state: &'static str,
        message: &str,
        expert: Option<Expert>,
        sps: Option<f64>,
    ) -> Status {
        let total = self.job.job.process().train.steps as u64;
        Status {
            state,
            step: self.step,
            total_steps: total,
            expert: expert.map(Expert::name),
            seconds_per_step: sps,
            eta_seconds: sps.map(|s| s * total.saturating_sub(self.step) as f64),
            message: message.into(),
            pid: std::process::id(),
            updated: output::now_rfc3339(),
            error: None,
        }
    }

    /// The text embedding of `caption`, padded to the model's text length.
    fn context(&self, caption: &str) -> Result<Tensor, TrainError> {
        let real = self
            .texts
            .get(caption)
            .ok_or_else(|| TrainError::Setup(format!("caption {caption:?} was not encoded")))?;
        Ok(encoders::pad_context(real, self.text_len))
    }

    /// Latents, condition, text and weights of one batch, with noise and timesteps drawn from the
    /// step's own seed (so resuming reproduces them exactly).
    fn micro_batch(
        &mut self,
        step: u64,
        micro: u64,
        expert: Expert,
    ) -> Result<MicroBatch, TrainError> {
        let use_reg = self.reg_sampler.is_some() && step % 2 == 1;
        let (batch, epoch) = match (&mut self.reg_sampler, use_reg) {
            (Some(s), true) => (s.next_batch(), s.state().epoch),
            _ => (self.sampler.next_batch(), self.sampler.state().epoch),
        };
        let train = self.job.job.process().train.clone();
        let trigger = self
            .job
            .job
            .process()
            .trigger_word
            .clone()
            .unwrap_or_default();
        let mut x0s = Vec::new();
        let mut ys = Vec::new();
        let mut ctxs = Vec::new();
        let mut pres = Vec::new();
        let mut weights = Vec::new();
        let mut mults = Vec::new();
        let mut ts = Vec::new();
        let mut rng = SplitMix64::for_parts(&[self.seed, step, micro, 0x7157]);
        for entry in &batch.entries {
            let item: DataItem = self.catalog.items[entry.item].clone();
            let first_frame_condition = self
                .job
                .job
                .process()
                .model
                .arch
                .facts()
                .first_frame_condition;
            let mut enc = VaeLatentEncoder {
                vae: &self.vae,
                fingerprint: self.vae_fingerprint.clone(),
                first_frame_condition,
            };
            let tensors = item_latents(&self.catalog, &item, Some(&mut self.cache), &mut enc)?;
            let get = |n: &str| {
                tensors.get(n).ok_or_else(|| {
                    TrainError::Setup(format!(
                        "latent cache entry of {} has no {n}",
                        item.path.display()
                    ))
                })
            };
            x0s.push(encoders::from_named(
                get(encoders::LATENT)?,
                Kind::Float,
                self.device,
            )?);
            if first_frame_condition {
                ys.push(encoders::from_named(
                    get(encoders::CONDITION)?,
                    Kind::Float,
                    self.device,
                )?);
            }
            let caption = if train.unload_text_encoder {
                trigger.clone()
            } else {
                self.catalog
                    .caption_for(&item, epoch, entry.repeat)
                    .to_string()
            };
            ctxs.push(self.context(&caption)?);
            if train.diff_output_preservation {
                let c = item
                    .preservation_caption
                    .clone()
                    .unwrap_or_else(|| caption.clone());
                pres.push(self.context(&c)?);
            } else if train.blank_prompt_preservation {
                pres.push(self.context("")?);
            }
            let t = timesteps::draw(
                self.timestep_type,
                self.bias,
                expert.window(self.boundary),
                &mut rng,
            );
            ts.push(t);
            weights.push(item.loss_multiplier * timesteps::loss_weight(self.timestep_type, t));
            mults.push(item.network_weight);
        }
        let x0 = Tensor::stack(&x0s, 0);
        tch::manual_seed(derive_seed(&[self.seed, step, micro, 0x4015]) as i64);
        let noise = Tensor::randn(x0.size(), (Kind::Float, Device::Cpu)).to_device(self.device);
        let sigma = Tensor::from_slice(&ts)
            .to_kind(Kind::Float)
            .to_device(self.device)
            / 1000.0;
        let xt = loss::noisy(&x0, &noise, &sigma);
        let target = &noise - &x0;
        // I2V: [x_t | mask | image latent] (36 channels); T2V: x_t alone (16).
        let input = if ys.is_empty() {
            xt
        } else {
            Tensor::cat(&[xt, Tensor::stack(&ys, 0)], 1)
        }
        .to_kind(self.kind);
        let mean_timestep = ts.iter().sum::<f64>() / ts.len() as f64;
        Ok(MicroBatch {
            input,
            target,
            timestep: Tensor::from_slice(&ts)
                .to_kind(Kind::Float)
                .to_device(self.device),
            context: Tensor::stack(&ctxs, 0)
                .to_device(self.device)
                .to_kind(self.kind),
            preservation_context: (!pres.is_empty()).then(|| {
                Tensor::stack(&pres, 0)
                    .to_device(self.device)
                    .to_kind(self.kind)
            }),
            weights: Tensor::from_slice(&weights)
                .to_kind(Kind::Float)
                .to_device(self.device),
            multiplier: Multiplier::per_sample(&mults, self.device),
            mean_timestep,
        })
    }

    /// One optimizer step of the expert whose turn it is. Returns (expert, loss, main, preservation,
    /// grad norm, mean timestep), or `None` for the loss when the step was skipped as non-finite.
    fn train_step(&mut self) -> Result<StepOutcome, TrainError> {
        let step = self.step;
        let expert = self.schedule.expert_at(step);
        self.activate(expert)?;
        let train = self.job.job.process().train.clone();
        let accum = train.gradient_accumulation.max(1) as u64;
        let policy = CheckpointPolicy {
            keep_blocks: train.keep_blocks as usize,
            keep_attention: train.keep_attention as usize,
        };
        let (mut main_sum, mut pres_sum, mut t_sum) = (0.0, 0.0, 0.0);
        let has_pres = train.diff_output_preservation || train.blank_prompt_preservation;
        let pres_mult = if train.diff_output_preservation {
            train.diff_output_preservation_multiplier
        } else {
            train.blank_prompt_preservation_multiplier
        };
        for micro in 0..accum {
            let mb = self.micro_batch(step, micro, expert)?;
            let er = self
                .experts
                .iter()
                .find(|e| e.expert == expert)
                .expect("trained expert");
            // DOP / blank-prompt preservation: what the base model says for the class (or blank) prompt.
            let prior = match &mb.preservation_context {
                Some(ctx) if has_pres => Some(tch::no_grad(|| {
                    er.model.forward(&mb.input, &mb.timestep, ctx, None)
                })?),
                _ => None,
            };
            let apply = LoraApply {
                set: &er.lora,
                multiplier: mb.multiplier,
            };
            let (loss_type, dg) = (
                self.loss_type,
                train
                    .do_differential_guidance
                    .then_some(train.differential_guidance_scale),
            );
            let main = forward_backward(
                &er.model,
                &mb.input,
                &mb.timestep,
                &mb.context,
                &apply,
                policy,
                |pred| {
                    let target = match dg {
                        Some(s) => loss::differential_target(pred, &mb.target, s),
                        None => mb.target.shallow_clone(),
                    };
                    let per = loss::per_sample(loss_type, pred, &target);
                    Ok(loss::weighted_mean(&per, &mb.weights) / accum as f64)
                },
            )?;
            main_sum += main.double_value(&[]);
            if let (Some(prior), Some(ctx)) = (&prior, &mb.preservation_context) {
                let pres = forward_backward(
                    &er.model,
                    &mb.input,
                    &mb.timestep,
                    ctx,
                    &apply,
                    policy,
                    |pred| {
                        Ok((pred - prior).square().mean(Kind::Float) * (pres_mult / accum as f64))
                    },
                )?;
                pres_sum += pres.double_value(&[]);
            }
            t_sum += mb.mean_timestep;
        }
        let loss = main_sum + pres_sum;
        let er = self
            .experts
            .iter_mut()
            .find(|e| e.expert == expert)
            .expect("trained expert");
        let mut grad = er.flat.flat_grad();
        let norm = clip_grad_norm(&mut grad, train.max_grad_norm);
        er.flat.zero_grad();
        let pres = has_pres.then_some(pres_sum);
        if !loss.is_finite() || !norm.is_finite() {
            return Ok(StepOutcome {
                expert,
                loss: None,
                loss_main: main_sum,
                loss_preservation: pres,
                grad_norm: norm,
                timestep: t_sum / accum as f64,
                lr: 0.0,
            });
        }
        let scheduled = self.lr.at(step);
        // Prodigy's step is d·lr: the rate reported is the one applied.
        let lr = er.optimizer.effective_lr(scheduled);
        er.optimizer.update(&er.flat, &grad, scheduled);
        if let Some(ema) = &mut er.ema {
            ema.update(&er.flat.flat);
        }
        Ok(StepOutcome {
            expert,
            loss: Some(loss),
            loss_main: main_sum,
            loss_preservation: pres,
            grad_norm: norm,
            timestep: t_sum / accum as f64,
            lr,
        })
    }

    /// Makes every preview of the job at `step` (files `samples/<step:09>_<i>.*`). A failed preview is
    /// reported and skipped: previews never stop a run.
    fn sample_all(&mut self, step: u64) -> Result<(), TrainError> {
        let n = self.samples.len();
        for i in 0..n {
            let msg = format!("Generating sample {}/{n}", i + 1);
            self.folder
                .write_status(&self.status("sampling", &msg, None, None))?;
            match crate::error::catch_libtorch(|| self.sample_one(step, i)) {
                Ok(files) => self.folder.log(&format!(
                    "sample {i} at step {step}: {}",
                    files.media[0].display()
                )),
                Err(e) => {
                    let msg = format!("sample {i} at step {step} failed and was skipped: {e}");
                    eprintln!("warning: {msg}");
                    self.folder.log(&msg);
                }
            }
        }
        // The trained expert of the next step goes back to the GPU in `train_step`.
        if self.job.job.process().model.low_vram {
            if let Some((_, m)) = &mut self.untrained {
                if !m.is_parked() {
                    m.offload()?;
                }
            }
        }
        Ok(())
    }

    /// One preview: the start frame's condition, both experts' phases (the untrained expert is loaded
    /// the first time it is needed), decoding, and the files.
    fn sample_one(&mut self, step: u64, index: usize) -> Result<SampleFiles, TrainError> {
        let request = self.samples[index].clone();
        let condition = tch::no_grad(|| start_condition(&request, &self.vae))?;
        let cond = self
            .context(&request.prompt)?
            .to_kind(self.kind)
            .unsqueeze(0);
        let uncond = self
            .context(&request.negative_prompt)?
            .to_kind(self.kind)
            .unsqueeze(0);
        let mut run = SampleRun::new(&request, &cond, &uncond, &condition, self.device)?;
        for expert in [Expert::High, Expert::Low] {
            if run.remaining(expert) == 0 {
                continue;
            }
            if self.experts.iter().any(|e| e.expert == expert) {
                self.activate(expert)?;
                let er = self
                    .experts
                    .iter()
                    .find(|e| e.expert == expert)
                    .expect("trained expert");
                tch::no_grad(|| run.denoise_phase(expert, &er.model, Some(&er.lora), &mut |_| {}))?;
            } else {
                self.prepare_untrained(expert)?;
                let (_, model) = self.untrained.as_ref().expect("loaded above");
                tch::no_grad(|| run.denoise_phase(expert, model, None, &mut |_| {}))?;
            }
        }
        let video = tch::no_grad(|| self.vae.decode(run.latents()))?;
        let frames = video_frames(&video)?;
        write_sample(
            &frames,
            request.fps,
            &[request.format],
            &self.folder.path("samples"),
            &sample_stem(step, index),
        )
        .map_err(TrainError::from)
    }

    /// Loads the expert that is not trained (fetching its files if needed) or brings it back from host
    /// memory; with `low_vram` the trained experts are parked first.
    fn prepare_untrained(&mut self, expert: Expert) -> Result<(), TrainError> {
        let low_vram = self.job.job.process().model.low_vram;
        if low_vram {
            for e in self.experts.iter_mut().filter(|e| !e.model.is_parked()) {
                e.model.offload()?;
            }
        }
        match &mut self.untrained {
            Some((_, m)) if m.is_parked() => {
                m.load_to(self.device)?;
            }
            Some(_) => {}
            None => {
                self.sources.prepare_samples()?;
                let t0 = Instant::now();
                let model = self
                    .sources
                    .transformer(expert, self.kind, self.device, &self.load)?;
                self.folder.log(&format!(
                    "{} expert (not trained) loaded for previews in {:.1} s",
                    expert.name(),
                    t0.elapsed().as_secs_f64()
                ));
                self.untrained = Some((expert, model));
            }
        }
        Ok(())
    }

    /// With `low_vram`, parks every other expert in pinned host memory and brings `expert` to the GPU.
    fn activate(&mut self, expert: Expert) -> Result<(), TrainError> {
        if !self.job.job.process().model.low_vram {
            return Ok(());
        }
        for e in self
            .experts
            .iter_mut()
            .filter(|e| e.expert != expert && !e.model.is_parked())
        {
            let report = e.model.offload()?;
            self.folder.log(&format!(
                "{} expert parked in host memory ({report})",
                e.expert.name()
            ));
        }
        if let Some(e) = self
            .experts
            .iter_mut()
            .find(|e| e.expert == expert && e.model.is_parked())
        {
            let report = e.model.load_to(self.device)?;
            self.folder.log(&format!(
                "{} expert back on {:?} ({report})",
                expert.name(),
                self.device
            ));
        }
        Ok(())
    }

    /// When a pass is due, the held-out loss of every trained expert, one metrics record each.
    fn validate_if_due(&mut self) -> Result<(), TrainError> {
        let step = self.step;
        let Some(set) = self.validation.take_if(|v| v.due(step)) else {
            return Ok(());
        };
        let result = crate::error::catch_libtorch(|| self.validate_experts(&set));
        self.validation = Some(set);
        result
    }

    fn validate_experts(&mut self, set: &ValidationSet) -> Result<(), TrainError> {
        for i in 0..self.experts.len() {
            let expert = self.experts[i].expert;
            self.activate(expert)?;
            let e = &self.experts[i];
            let record = set.evaluate(
                self.step,
                expert,
                &e.model,
                &e.lora,
                self.boundary,
                self.kind,
            )?;
            self.folder.append_metrics(&record)?;
        }
        Ok(())
    }

    /// Trains one optimizer step (the expert whose turn it is) and moves the step counter on.
    pub fn advance(&mut self) -> Result<StepOutcome, TrainError> {
        let step = self.step;
        let outcome = crate::error::catch_libtorch(|| self.train_step())
            .map_err(|e| crate::error::classify_torch_error(e, step))?;
        self.step += 1;
        Ok(outcome)
    }

    /// A copy of one trained expert's LoRA values (the flat fp32 buffer).
    pub fn lora_values(&self, expert: Expert) -> Option<Tensor> {
        self.experts
            .iter()
            .find(|e| e.expert == expert)
            .map(|e| e.flat.flat.detach().copy())
    }

    /// Saves now (step files, rotation, state), as `save_every` does.
    pub fn save_checkpoint(&mut self) -> Result<Vec<PathBuf>, TrainError> {
        self.save(false)
    }

    /// Writes the LoRA files of every trained expert (and EMA variants), rotates step saves, and
    /// saves the training state.
    fn save(&mut self, final_save: bool) -> Result<Vec<PathBuf>, TrainError> {
        let p = self.job.job.process().clone();
        let name = &self.job.job.config.name;
        let kind = save_kind(p.save.dtype);
        self.check_before_save(kind)?;
        let mut files = Vec::new();
        for e in &self.experts {
            let meta = self.metadata(e.expert);
            let step = (!final_save).then_some(self.step);
            let path = self
                .folder
                .path(&checkpoint::lora_file_name(name, step, e.expert, false));
            e.lora.save(&path, kind, &meta)?;
            files.push(path);
            if let Some(ema) = &e.ema {
                let params: Vec<Tensor> = (0..e.flat.params.len())
                    .map(|i| {
                        let (off, n) = e.flat.span(i);
                        ema.shadow
                            .narrow(0, off, n)
                            .view(e.flat.params[i].size().as_slice())
                    })
                    .collect();
                let ema_set = e.lora.with_parameters(&params);
                let path = self
                    .folder
                    .path(&checkpoint::lora_file_name(name, step, e.expert, true));
                ema_set.save(&path, kind, &meta)?;
                files.push(path);
            }
        }
        if !final_save {
            checkpoint::rotate_saves(&self.folder.root, name, p.save.max_step_saves_to_keep)?;
        }
        let run = RunState {
            format: STATE_FORMAT,
            step: self.step,
            seed: self.seed,
            rank: p.network.linear as i64,
            alpha: p.network.alpha(),
            experts: self.experts.iter().map(|e| e.expert).collect(),
            sampler: self.sampler.state(),
            reg_sampler: self.reg_sampler.as_ref().map(|s| s.state()),
        };
        let states = self.expert_states();
        checkpoint::save_state(&self.folder.root, &run, &states)?;
        self.folder
            .log(&format!("saved step {}: {}", self.step, files.len()));
        Ok(files)
    }

    /// What a save writes of each trained expert.
    fn expert_states(&self) -> Vec<ExpertState<'_>> {
        self.experts
            .iter()
            .map(|e| ExpertState {
                expert: e.expert,
                lora_flat: &e.flat.flat,
                optimizer: &e.optimizer,
                ema: e.ema.as_ref().map(|m| &m.shadow),
            })
            .collect()
    }

    /// Refuses a save that would write NaN or infinite values (a clean earlier checkpoint must not
    /// be rotated away for it) or that the disk has no room for.
    fn check_before_save(&self, kind: Kind) -> Result<(), TrainError> {
        let states = self.expert_states();
        let bad = divergence::non_finite_parts(&states);
        if !bad.is_empty() {
            return Err(TrainError::NonFiniteValues {
                step: self.step,
                parts: bad.join(", "),
            });
        }
        jobfiles::check_free_space(
            &self.folder.root,
            self.step,
            checkpoint::save_bytes(&states, kind),
        )
    }

    /// safetensors metadata of a LoRA file: what it is and how it was trained (all strings).
    fn metadata(&self, expert: Expert) -> BTreeMap<String, String> {
        let job = &self.job.job;
        let p = job.process();
        let mut m = BTreeMap::new();
        for (k, v) in &job.meta {
            m.insert(
                k.clone(),
                v.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string()),
            );
        }
        let arch = p.model.arch.facts();
        m.insert(
            "ss_base_model_version".into(),
            arch.base_model_version.into(),
        );
        m.insert("wanlora_arch".into(), arch.name.into());
        m.insert("wanlora_expert".into(), expert.name().into());
        m.insert("ss_output_name".into(), job.config.name.clone());
        m.insert(
            "training_info".into(),
            serde_json::json!({"step": self.step}).to_string(),
        );
        m.insert("ss_network_dim".into(), p.network.linear.to_string());
        m.insert("ss_network_alpha".into(), p.network.alpha().to_string());
        m.insert("format".into(), "pt".into());
        if let Some(t) = &p.trigger_word {
            m.insert(
                "ss_tag_frequency".into(),
                serde_json::json!({ format!("1_{t}"): { t.clone(): 1 } }).to_string(),
            );
            m.insert("wanlora_trigger_word".into(), t.clone());
        }
        m.insert(
            "wanlora_datasets".into(),
            serde_json::json!(self
                .catalog
                .datasets
                .iter()
                .enumerate()
                .map(|(i, d)| serde_json::json!({
                    "folder": d.folder,
                    "resolution": d.resolution,
                    "is_reg": d.is_reg,
                    "items": self.catalog.usable_items().filter(|it| it.dataset == i).count()
                }))
                .collect::<Vec<_>>())
            .to_string(),
        );
        m.insert(
            "software".into(),
            serde_json::json!({"name": "wanlora", "version": env!("CARGO_PKG_VERSION")})
                .to_string(),
        );
        m
    }

    /// Runs until `train.steps`, a stop request, or an error. Saves on the way and at the end. Any
    /// error marks the job failed, with the reason, in status.json and log.txt.
    pub fn run(mut self) -> Result<RunSummary, TrainError> {
        crate::error::catch_libtorch(|| self.run_steps()).map_err(|e| self.fail(e))
    }

    fn run_steps(&mut self) -> Result<RunSummary, TrainError> {
        let p = self.job.job.process().clone();
        let total = p.train.steps as u64;
        let bar = self.opts.progress.then(|| {
            let b = indicatif::ProgressBar::new(total);
            b.set_style(
                indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            b.set_position(self.step);
            b
        });
        let mut losses = Vec::new();
        let mut smoothed: Option<f64> = None;
        let mut sps: Option<f64> = None;
        let mut non_finite = NonFiniteCounter::default();
        let mut stopped = false;
        let mut files = Vec::new();
        let mut done_this_run = 0u64;
        let mut perf = PerfLog::new(p.performance_log_every);
        let resumed = self.step > 0;
        if !self.samples.is_empty()
            && ((!resumed && !p.train.skip_first_sample) || (resumed && p.train.force_first_sample))
        {
            self.sample_all(self.step)?;
        }
        if !resumed {
            self.validate_if_due().map_err(|e| self.fail(e))?;
        }
        while self.step < total {
            let t0 = Instant::now();
            let outcome = self.advance()?;
            done_this_run += 1;
            let (expert, secs) = (outcome.expert, t0.elapsed().as_secs_f64());
            sps = Some(sps.map_or(secs, |s| 0.9 * s + 0.1 * secs));
            perf.step(secs);
            match outcome.loss {
                Some(l) => {
                    smoothed = Some(smoothed.map_or(l, |s| 0.95 * s + 0.05 * l));
                    losses.push((self.step, expert, l));
                    self.folder.append_metrics(&Metrics {
                        step: self.step,
                        expert: expert.name(),
                        loss: l,
                        loss_main: outcome.loss_main,
                        loss_preservation: outcome.loss_preservation,
                        lr: outcome.lr,
                        grad_norm: outcome.grad_norm,
                        timestep: outcome.timestep,
                        seconds: secs,
                        time: output::now_rfc3339(),
                    })?;
                }
                None => {
                    let msg = format!(
                        "step {}: non-finite loss or gradient, step skipped",
                        self.step
                    );
                    eprintln!("warning: {msg}");
                    self.folder.log(&msg);
                }
            }
            if let Some(count) = non_finite.record(expert, outcome.loss.is_some()) {
                return Err(TrainError::Diverged {
                    count,
                    expert: expert.name(),
                    step: self.step,
                });
            }
            let message = format!(
                "loss {:.4} | {:.2} s/step | {}",
                smoothed.unwrap_or(f64::NAN),
                sps.unwrap_or(0.0),
                expert.name()
            );
            if let Some(b) = &bar {
                b.set_position(self.step);
                b.set_message(message.clone());
            } else if p.logging.log_every > 0
                && self.step.is_multiple_of(p.logging.log_every as u64)
            {
                eprintln!("step {}/{total} {message}", self.step);
            }
            self.folder
                .write_status(&self.status("training", &message, Some(expert), sps))?;
            self.validate_if_due().map_err(|e| self.fail(e))?;

            let stop_requested = output::interrupted() || self.folder.take_control(Control::Stop);
            let save_due =
                p.save.save_every > 0 && self.step.is_multiple_of(p.save.save_every as u64);
            if (save_due || self.folder.take_control(Control::SaveNow) || stop_requested)
                && self.step < total
            {
                self.folder
                    .write_status(&self.status("saving", "Saving", Some(expert), sps))?;
                let t = Instant::now();
                files = self.save(false)?;
                perf.phase(Phase::Saving, t.elapsed());
            }
            let sample_due = p.sample.sample_every > 0
                && self.step >= p.sample.sample_start_step as u64
                && self.step.is_multiple_of(p.sample.sample_every as u64)
                && self.step < total;
            if !self.samples.is_empty()
                && (sample_due || self.folder.take_control(Control::SampleNow))
                && !stop_requested
            {
                let t = Instant::now();
                self.sample_all(self.step)?;
                perf.phase(Phase::Sampling, t.elapsed());
            }
            if let Some(line) = perf.report(self.step) {
                eprintln!("{line}");
                self.folder.log(&line);
            }
            if stop_requested {
                stopped = true;
                break;
            }
            if self.opts.stop_after.is_some_and(|n| done_this_run >= n) {
                stopped = true;
                break;
            }
        }
        if !stopped {
            files = self.save(true)?;
            if !self.samples.is_empty() {
                self.sample_all(self.step)?;
            }
        }
        if let Some(b) = &bar {
            b.finish();
        }
        self.write_loss_plot();
        let state = if stopped { "stopped" } else { "completed" };
        let msg = if stopped {
            "Stopped; resume by running the job again"
        } else {
            "Done"
        };
        self.folder
            .write_status(&self.status(state, msg, None, sps))?;
        self.folder.remove_pid();
        Ok(RunSummary {
            output: self.folder.root.clone(),
            step: self.step,
            losses,
            stopped,
            files,
        })
    }

    /// Records a failure in status.json and the log, and hands the error back.
    fn fail(&self, e: TrainError) -> TrainError {
        let mut s = self.status("failed", "Failed", None, None);
        s.error = Some(e.to_string());
        self.folder.write_final_status(&s);
        self.folder.log(&format!("failed: {e}"));
        self.folder.remove_pid();
        e
    }

    /// loss.png from metrics.jsonl: one series per expert.
    fn write_loss_plot(&self) {
        let Ok(text) = std::fs::read_to_string(self.folder.path("metrics.jsonl")) else {
            return;
        };
        let mut by_step: BTreeMap<u64, (String, f64)> = BTreeMap::new();
        for line in text.lines() {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
                if let (Some(s), Some(e), Some(l)) =
                    (v["step"].as_u64(), v["expert"].as_str(), v["loss"].as_f64())
                {
                    by_step.insert(s, (e.to_string(), l));
                }
            }
        }
        let mut series: Vec<(String, Vec<(f64, f64)>)> = ["high_noise", "low_noise"]
            .iter()
            .map(|e| {
                (
                    e.to_string(),
                    by_step
                        .iter()
                        .filter(|(_, (x, _))| x == e)
                        .map(|(s, (_, l))| (*s as f64, *l))
                        .collect(),
                )
            })
            .filter(|(_, v): &(String, Vec<(f64, f64)>)| !v.is_empty())
            .collect();
        series.extend(crate::validation::plot_series(&text));
        let refs: Vec<(&str, &[(f64, f64)])> = series
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_slice()))
            .collect();
        if let Err(e) = wanlora_data::write_loss_plot_png(&refs, &self.folder.path("loss.png")) {
            self.folder.log(&format!("loss plot: {e}"));
        }
    }
}

/// How the experts are stored: fp8 weights (and fp8 matmuls) and streamed blocks, from the job.
fn transformer_load_options(
    model: &wanlora_config::ModelConfig,
) -> Result<LoadOptions, TrainError> {
    let fp8 = match (model.quantize, model.qtype, model.fp8_matmul) {
        (false, _, _) => Fp8Mode::Off,
        (true, wanlora_config::QType::Uint4, _) => Fp8Mode::Uint4,
        (true, _, false) => Fp8Mode::WeightOnly,
        (true, _, true) => Fp8Mode::Matmul,
    };
    let offload = if model.layer_offloading {
        // The share is of A14B's 40 blocks; smaller models stream at most all of theirs.
        let blocks =
            wanlora_models::transformer::TransformerConfig::wan22_i2v_a14b().num_layers as usize;
        Some(
            BlockOffload::from_percent(
                100.0 * model.layer_offloading_transformer_percent,
                blocks,
                2,
            )
            .map_err(|e| {
                TrainError::Setup(format!("model.layer_offloading_transformer_percent: {e}"))
            })?,
        )
    } else {
        None
    };
    Ok(LoadOptions {
        fp8,
        fp8_embeddings: false,
        offload,
    })
}

/// Runs a whole job: `wanlora train JOB.yaml`.
pub fn train(job: LoadedJob, opts: RunOptions) -> Result<RunSummary, TrainError> {
    let output = job::output_folder(&job.job);
    match Trainer::new(job, opts) {
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
