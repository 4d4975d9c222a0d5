//! From the job file's typed config to what each crate takes: dataset specs, the model spec, and
//! the training settings the loop uses.

use std::path::Path;

use crate::experts::ExpertSchedule;
use crate::schedule::{LrSchedule, LrShape};
use wanlora_config as cfg;
use wanlora_config::{Job, LoadedJob};
use wanlora_data::{DatasetSpec, JobContext};
use wanlora_hub::ModelSpec;
use wanlora_models::vae::Tiling;

/// The job's datasets as the dataset crate's specs, and the job context (seed, trigger, DOP class).
pub fn dataset_specs(job: &Job, seed: u64) -> (Vec<DatasetSpec>, JobContext) {
    let process = job.process();
    let train = &process.train;
    let specs = process.datasets.iter().map(dataset_spec).collect();
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
        bucket_step: Some(process.model.arch.facts().bucket_step),
    };
    (specs, context)
}

/// One dataset entry as the data crate's spec. The destructuring names every field, so a key
/// added to the config but not handed on here is a compile error, not a silently ignored setting.
fn dataset_spec(d: &cfg::DatasetConfig) -> DatasetSpec {
    let cfg::DatasetConfig {
        folder_path,
        caption_ext,
        default_caption,
        trigger_word,
        caption_dropout_rate,
        resolution,
        num_frames,
        shrink_video_to_frames,
        fps,
        auto_frame_count,
        trim_auto_frame_count_tail,
        flip_x,
        flip_y,
        is_reg,
        network_weight,
        loss_multiplier,
        num_repeats,
        cache_latents: _,
        cache_latents_to_disk: _,
        // Job-wide: read by `dataset_specs` into the job context.
        cache_text_embeddings: _,
        batch_size,
        // Job-wide for wan22_5b: read by `clips_train_image_to_video`.
        do_i2v: _,
    } = d;
    DatasetSpec {
        folder_path: folder_path.into(),
        caption_ext: caption_ext.clone(),
        default_caption: default_caption.clone(),
        trigger_word: trigger_word.clone(),
        caption_dropout_rate: *caption_dropout_rate,
        resolutions: resolution.clone(),
        num_frames: *num_frames as usize,
        shrink_video_to_frames: *shrink_video_to_frames,
        fps: f64::from(*fps),
        auto_frame_count: *auto_frame_count,
        trim_auto_frame_count_tail: *trim_auto_frame_count_tail,
        flip_x: *flip_x,
        flip_y: *flip_y,
        is_reg: *is_reg,
        network_weight: *network_weight,
        loss_multiplier: *loss_multiplier,
        num_repeats: *num_repeats as usize,
        cache_latents: d.caches_latents(),
        // Validation makes it equal to train.batch_size (the job context's).
        batch_size: batch_size.map(|n| n as usize),
    }
}

/// wan22_5b: whether clips train image-to-video from their first frame (`datasets[].do_i2v`;
/// validation makes every dataset agree). Images always train text-to-video.
pub fn clips_train_image_to_video(job: &Job) -> bool {
    job.process().datasets.iter().all(|d| d.do_i2v)
}

/// `model_kwargs.vae_tiling`: true tiles every frame larger than one tile (encode and decode);
/// false keeps the default, which tiles only frames above 480×832 so that large previews fit.
pub fn vae_tiling(model: &cfg::ModelConfig) -> Tiling {
    if model.model_kwargs.vae_tiling {
        let d = Tiling::default();
        Tiling::always(d.size, d.overlap)
    } else {
        Tiling::default()
    }
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
    // TI2V-5B: its one transformer is the high-noise expert's component; there is no other.
    let spec = if model.arch.facts().one_transformer {
        ModelSpec {
            train_high_noise: true,
            train_low_noise: false,
            need_untrained_expert_for_samples: false,
            ..spec
        }
    } else {
        spec
    };
    let random = spec.name_or_path.as_deref() == Some(crate::sources::RANDOM_A14B);
    let mut spec = spec.relative_to(&loaded.base_dir);
    if random {
        // Not a path: random weights made in place (benchmarks).
        spec.name_or_path = Some(crate::sources::RANDOM_A14B.to_string());
    }
    spec
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
    if p.model.arch.facts().one_transformer {
        // TI2V-5B: one transformer, in the high-noise slot, with boundary 0 (every timestep).
        return ExpertSchedule::new(true, false, p.train.switch_boundary_every);
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use wanlora_models::vae::TilingMode;

    #[test]
    fn trim_auto_frame_count_tail_reaches_the_data_spec() {
        // It was read and reported as supported, then dropped on the way to the dataset crate.
        for trim in [true, false] {
            let d = cfg::DatasetConfig {
                auto_frame_count: true,
                trim_auto_frame_count_tail: trim,
                ..Default::default()
            };
            assert_eq!(dataset_spec(&d).trim_auto_frame_count_tail, trim);
        }
    }

    #[test]
    fn vae_tiling_forces_tiles() {
        // Read and reported as supported, but nothing used it.
        let mut model = cfg::ModelConfig::default();
        assert_eq!(vae_tiling(&model).mode, TilingMode::Auto);
        model.model_kwargs.vae_tiling = true;
        assert_eq!(vae_tiling(&model).mode, TilingMode::Always);
    }
}
