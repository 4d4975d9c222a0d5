//! From the job file's typed config to what each crate takes: dataset specs, the model spec, and
//! the training settings the loop uses.

use std::path::Path;

use crate::experts::ExpertSchedule;
use crate::loss::LossType;
use crate::schedule::{LrSchedule, LrShape};
use crate::timesteps::{Bias, TimestepType};
use wanlora_config as cfg;
use wanlora_config::{Job, LoadedJob};
use wanlora_data::{DatasetSpec, JobContext};
use wanlora_hub::ModelSpec;

/// The job's datasets as the dataset crate's specs, and the job context (seed, trigger, DOP class).
pub fn dataset_specs(job: &Job, seed: u64) -> (Vec<DatasetSpec>, JobContext) {
    let process = job.process();
    let train = &process.train;
    let specs = process
        .datasets
        .iter()
        .map(|d| DatasetSpec {
            folder_path: d.folder_path.clone().into(),
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
        seed,
        batch_size: train.batch_size.max(1) as usize,
        preservation_class: train
            .diff_output_preservation
            .then(|| train.diff_output_preservation_class.clone()),
        cache_text_embeddings: train.cache_text_embeddings
            || process.datasets.iter().any(|d| d.cache_text_embeddings),
    };
    (specs, context)
}

/// Whether previews will run (then the untrained expert is needed when they do).
pub fn samples_run(job: &Job) -> bool {
    let p = job.process();
    !p.train.disable_sampling && p.sample.sample_every > 0 && !p.sample.samples.is_empty()
}

/// The job's model keys as the hub crate's spec, paths relative to the job file's folder.
pub fn model_spec(loaded: &LoadedJob) -> ModelSpec {
    let model = &loaded.job.process().model;
    let spec = ModelSpec {
        name_or_path: model.name_or_path.clone(),
        extras_name_or_path: model.extras_name_or_path.clone(),
        te_name_or_path: model.te_name_or_path.clone(),
        vae_path: model.vae_path.clone(),
        tokenizer_path: model.tokenizer_path.clone(),
        high_noise_model_path: model.high_noise_model_path.clone(),
        low_noise_model_path: model.low_noise_model_path.clone(),
        train_high_noise: model.model_kwargs.train_high_noise,
        train_low_noise: model.model_kwargs.train_low_noise,
        need_untrained_expert_for_samples: samples_run(&loaded.job),
    };
    let random = spec.name_or_path.as_deref() == Some(crate::sources::RANDOM_A14B);
    let mut spec = spec.relative_to(&loaded.base_dir);
    if random {
        // Not a path: random weights made in place (benchmarks).
        spec.name_or_path = Some(crate::sources::RANDOM_A14B.to_string());
    }
    spec
}

pub fn timestep_type(t: cfg::TimestepType) -> TimestepType {
    match t {
        cfg::TimestepType::Linear => TimestepType::Linear,
        cfg::TimestepType::Sigmoid => TimestepType::Sigmoid,
        cfg::TimestepType::Shift => TimestepType::Shift,
        cfg::TimestepType::Weighted => TimestepType::Weighted,
        cfg::TimestepType::LognormBlend => TimestepType::LognormBlend,
    }
}

pub fn bias(c: cfg::ContentOrStyle) -> Bias {
    match c {
        cfg::ContentOrStyle::Balanced => Bias::Balanced,
        cfg::ContentOrStyle::Content => Bias::Content,
        cfg::ContentOrStyle::Style => Bias::Style,
    }
}

pub fn loss_type(l: cfg::LossType) -> LossType {
    match l {
        cfg::LossType::Mse => LossType::Mse,
        cfg::LossType::Mae => LossType::Mae,
        cfg::LossType::PseudoHuber => LossType::PseudoHuber,
    }
}

pub fn lr_schedule(t: &cfg::TrainConfig) -> LrSchedule {
    let total = t.schedule_steps() as u64;
    let p = &t.lr_scheduler_params;
    let shape = match t.lr_scheduler {
        cfg::LrScheduler::Constant | cfg::LrScheduler::ConstantWithWarmup => LrShape::Constant,
        cfg::LrScheduler::Cosine => LrShape::Cosine {
            eta_min: p.eta_min,
            total,
        },
        cfg::LrScheduler::Linear => LrShape::Linear {
            start_factor: p.start_factor,
            end_factor: p.end_factor,
            total,
        },
    };
    LrSchedule {
        lr: t.lr,
        shape,
        warmup: t.warmup_steps() as u64,
    }
}

pub fn expert_schedule(job: &Job) -> ExpertSchedule {
    let p = job.process();
    ExpertSchedule::new(
        p.model.model_kwargs.train_high_noise,
        p.model.model_kwargs.train_low_noise,
        p.train.switch_boundary_every,
    )
}

/// `<training_folder>/<name>`, with a relative training folder taken from the working directory
/// (as AI Toolkit does).
pub fn output_folder(job: &Job) -> std::path::PathBuf {
    let p = job.process();
    Path::new(&p.training_folder).join(&job.config.name)
}
