//! The held-out loss (`train.validation_config`, AI Toolkit's keys): held-out clips encoded once
//! (through the latent cache), each evaluated at fixed timesteps spread over every trained expert's
//! window with fixed noise and without gradients, so the curve is comparable across steps and runs.
//!
//! The noise of item `i` comes from a generator seeded by (job seed, i) alone and is drawn on the
//! CPU in Rust, never from libtorch's generator or the training streams: a validation pass leaves
//! training exactly as it would have been without it, and a resumed run computes the same values.

use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

use crate::encoders::{self, VaeLatentEncoder};
use crate::experts::Expert;
use crate::loss;
use crate::output;
use crate::TrainError;
use wanlora_config::{Job, ValidationConfig};
use wanlora_data::cache::{item_latents, Cache};
use wanlora_data::rng::SplitMix64;
use wanlora_data::{Catalog, DataItem, DatasetSpec, JobContext};
use wanlora_models::lora::{LoraApply, LoraSet, Multiplier};
use wanlora_models::transformer::WanTransformer;

/// Domain tag of the validation noise seeds (kept apart from every training stream's tags).
const NOISE_STREAM: u64 = 0x7A11_DA7E;

/// One held-out clip: where its frames come from and its caption.
struct HeldOut {
    catalog: usize,
    item: DataItem,
    caption: String,
}

/// Wan's text length: contexts are padded to it (as the trainer's).
const TEXT_LEN: i64 = 512;

/// One held-out clip, encoded: latents, I2V condition and text in fp32 on the training device, and
/// its noise.
struct Encoded {
    x0: Tensor,
    /// The I2V first-frame condition; `None` for text-to-video.
    condition: Option<Tensor>,
    context: Tensor,
    noise: Tensor,
}

/// One `metrics.jsonl` record of a validation pass (docs/JOB-FOLDER.md). It has no `loss` key, so
/// readers of the training loss skip it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ValidationRecord {
    pub step: u64,
    pub expert: &'static str,
    /// Mean MSE of the flow target (noise − x0) over every held-out clip and timestep.
    pub validation_loss: f64,
    /// The timesteps (0–1000) evaluated for this expert.
    pub validation_timesteps: Vec<f64>,
    pub validation_items: usize,
    pub seconds: f64,
    pub time: String,
}

/// The held-out set of a job, loaded and (after [`ValidationSet::encode`]) encoded.
pub struct ValidationSet {
    config: ValidationConfig,
    catalogs: Vec<Catalog>,
    held_out: Vec<HeldOut>,
    encoded: Vec<Encoded>,
    /// TI2V-5B: a clip's clean first latent frame is the model's condition, as in training
    /// ([`crate::ti2v`]).
    first_frame_replacement: bool,
    /// wan22_5b: `datasets[].do_i2v` (clips train image-to-video).
    clips_image_to_video: bool,
}

impl ValidationSet {
    /// Scans the job's validation items, or `None` when the job has none. Each item is read with the
    /// first dataset's frame settings at `validation_config.resolution`: a folder gives all of its
    /// clips (captions from their files, `prompt` where a clip has none), a file gives itself with
    /// `prompt` as its caption (or its caption file when `prompt` is empty).
    pub fn load(
        job: &Job,
        specs: &[DatasetSpec],
        context: &JobContext,
    ) -> Result<Option<ValidationSet>, TrainError> {
        let process = job.process();
        let config = process.train.validation_config.clone();
        if !config.enabled() {
            return Ok(None);
        }
        let base = specs.first().ok_or_else(|| {
            TrainError::Setup("validation_config needs at least one dataset".into())
        })?;
        let trigger = process.trigger_word.clone().unwrap_or_default();
        let mut catalogs = Vec::new();
        let mut held_out = Vec::new();
        for (i, v) in config.named_items() {
            let key = format!("train.validation_config.validation_items[{i}].image_path");
            let path = PathBuf::from(&v.image_path);
            let prompt = v.prompt.replace("[trigger]", &trigger);
            let (folder, single) = if path.is_dir() {
                (path.clone(), None)
            } else if path.is_file() {
                let parent = path.parent().unwrap_or(Path::new(".")).to_path_buf();
                (parent, Some(path.clone()))
            } else {
                return Err(TrainError::Setup(format!(
                    "{key}: {} is neither a file nor a folder; fix the path",
                    path.display()
                )));
            };
            // The first dataset's captions and frames; no dropout, flips, repeats or weights.
            let spec = DatasetSpec {
                folder_path: folder,
                caption_ext: base.caption_ext.clone(),
                default_caption: (!prompt.is_empty()).then(|| prompt.clone()),
                trigger_word: base.trigger_word.clone(),
                resolutions: vec![config.resolution],
                num_frames: base.num_frames,
                shrink_video_to_frames: base.shrink_video_to_frames,
                fps: base.fps,
                auto_frame_count: base.auto_frame_count,
                trim_auto_frame_count_tail: base.trim_auto_frame_count_tail,
                cache_latents: true,
                batch_size: Some(1),
                ..DatasetSpec::default()
            };
            let catalog = Catalog::load(std::slice::from_ref(&spec), context)
                .map_err(|e| TrainError::Setup(format!("{key}: {e}")))?;
            let items: Vec<DataItem> = catalog
                .usable_items()
                .filter(|it| single.as_ref().is_none_or(|f| &it.path == f))
                .cloned()
                .collect();
            if items.is_empty() {
                return Err(TrainError::Setup(format!(
                    "{key}: {} has no usable image or clip ({} problem(s)); name a readable image, clip or folder",
                    path.display(),
                    catalog.problems.len()
                )));
            }
            for item in items {
                let caption = match &single {
                    Some(_) if !prompt.is_empty() => prompt.clone(),
                    _ => item.caption.clone(),
                };
                held_out.push(HeldOut {
                    catalog: catalogs.len(),
                    item,
                    caption,
                });
            }
            catalogs.push(catalog);
        }
        Ok(Some(ValidationSet {
            config,
            catalogs,
            held_out,
            encoded: Vec::new(),
            first_frame_replacement: process.model.arch.facts().first_frame_replacement,
            clips_image_to_video: crate::job::clips_train_image_to_video(job),
        }))
    }

    /// The captions the text encoder must encode for the held-out clips.
    pub fn captions(&self) -> Vec<String> {
        self.held_out.iter().map(|h| h.caption.clone()).collect()
    }

    /// Encodes every held-out clip (through the latent cache) and draws its fixed noise.
    pub fn encode(
        &mut self,
        cache: &mut Cache,
        enc: &mut VaeLatentEncoder,
        texts: &HashMap<String, Tensor>,
        seed: u64,
        device: Device,
    ) -> Result<(), TrainError> {
        let first_frame_condition = enc.first_frame_condition;
        let mut encoded = Vec::new();
        for (index, h) in self.held_out.iter().enumerate() {
            let tensors = item_latents(&self.catalogs[h.catalog], &h.item, Some(cache), enc)?;
            let get = |n: &str| {
                tensors.get(n).ok_or_else(|| {
                    TrainError::Setup(format!(
                        "latent cache entry of {} has no {n}",
                        h.item.path.display()
                    ))
                })
            };
            let x0 = encoders::from_named(get(encoders::LATENT)?, Kind::Float, device)?;
            let condition = if first_frame_condition {
                Some(encoders::from_named(
                    get(encoders::CONDITION)?,
                    Kind::Float,
                    device,
                )?)
            } else {
                None
            };
            let text = texts.get(&h.caption).ok_or_else(|| {
                TrainError::Setup(format!(
                    "validation caption {:?} was not encoded",
                    h.caption
                ))
            })?;
            let noise = fixed_noise(&x0.size(), seed, index as u64).to_device(device);
            encoded.push(Encoded {
                x0,
                condition,
                context: encoders::pad_context(text, TEXT_LEN).to_device(device),
                noise,
            });
        }
        self.encoded = encoded;
        Ok(())
    }

    /// Whether a pass is due after `step` optimizer steps (step 0: before training).
    pub fn due(&self, step: u64) -> bool {
        step.is_multiple_of(u64::from(self.config.validate_every_n_steps.max(1)))
    }

    /// The timesteps evaluated for `expert`: each validation sigma mapped linearly into its window.
    pub fn timesteps(&self, expert: Expert, boundary_ratio: f64) -> Vec<f64> {
        let w = expert.window(boundary_ratio);
        self.config
            .validation_sigmas
            .iter()
            .map(|s| w.low + s * (w.high - w.low))
            .collect()
    }

    /// The held-out loss of one expert with its LoRA at full strength: mean MSE over every clip and
    /// timestep, without gradients.
    pub fn evaluate(
        &self,
        step: u64,
        expert: Expert,
        model: &WanTransformer,
        lora: &LoraSet,
        boundary_ratio: f64,
        kind: Kind,
    ) -> Result<ValidationRecord, TrainError> {
        let t0 = Instant::now();
        let timesteps = self.timesteps(expert, boundary_ratio);
        let apply = LoraApply {
            set: lora,
            multiplier: Multiplier::Scalar(1.0),
        };
        let mut sum = 0.0;
        for e in &self.encoded {
            let device = e.x0.device();
            let x0 = e.x0.unsqueeze(0);
            let noise = e.noise.unsqueeze(0);
            let y = e.condition.as_ref().map(|c| c.unsqueeze(0).to_kind(kind));
            let context = e.context.to_kind(kind).unsqueeze(0);
            let target = &noise - &x0;
            for &t in &timesteps {
                let timestep = Tensor::from_slice(&[t])
                    .to_kind(Kind::Float)
                    .to_device(device);
                let xt = loss::noisy(&x0, &noise, &(&timestep / 1000.0));
                if self.first_frame_replacement {
                    // TI2V-5B: as its training steps see a clip (clean frame 0 at t = 0, out of the loss).
                    let image_to_video = x0.size()[2] > 1 && self.clips_image_to_video;
                    let ti2v = crate::ti2v::training_input(&xt, &x0, &timestep, image_to_video)?;
                    let input = ti2v.input.to_kind(kind);
                    let pred = tch::no_grad(|| {
                        model.forward(&input, &ti2v.timestep, &context, Some(&apply))
                    })?;
                    let per = match &ti2v.loss_mask {
                        Some(mask) => tch::no_grad(|| {
                            loss::per_sample_masked(loss::LossType::Mse, &pred, &target, mask)
                        })?,
                        None => {
                            tch::no_grad(|| loss::per_sample(loss::LossType::Mse, &pred, &target))
                        }
                    };
                    sum += per.mean(Kind::Float).double_value(&[]);
                    continue;
                }
                // I2V: [x_t | mask | image latent]; T2V: x_t alone.
                let input = match &y {
                    Some(y) => Tensor::cat(&[xt.to_kind(kind), y.shallow_clone()], 1),
                    None => xt.to_kind(kind),
                };
                let pred =
                    tch::no_grad(|| model.forward(&input, &timestep, &context, Some(&apply)))?;
                sum += tch::no_grad(|| {
                    (pred.to_kind(Kind::Float) - &target)
                        .square()
                        .mean(Kind::Float)
                        .double_value(&[])
                });
            }
        }
        let n = (self.encoded.len() * timesteps.len()).max(1);
        Ok(ValidationRecord {
            step,
            expert: expert.name(),
            validation_loss: sum / n as f64,
            validation_timesteps: timesteps,
            validation_items: self.encoded.len(),
            seconds: t0.elapsed().as_secs_f64(),
            time: output::now_rfc3339(),
        })
    }
}

/// The validation curves in `metrics.jsonl` text, for loss.png: one series per expert, named
/// `<expert> validation`, the last record of a step winning (a resumed run repeats steps).
pub fn plot_series(metrics: &str) -> Vec<(String, Vec<(f64, f64)>)> {
    let mut by_expert: std::collections::BTreeMap<String, std::collections::BTreeMap<u64, f64>> =
        std::collections::BTreeMap::new();
    for line in metrics.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if let (Some(step), Some(expert), Some(value)) = (
            v["step"].as_u64(),
            v["expert"].as_str(),
            v["validation_loss"].as_f64(),
        ) {
            by_expert
                .entry(expert.to_string())
                .or_default()
                .insert(step, value);
        }
    }
    by_expert
        .into_iter()
        .map(|(expert, points)| {
            (
                format!("{expert} validation"),
                points.into_iter().map(|(s, l)| (s as f64, l)).collect(),
            )
        })
        .collect()
}

/// Standard normal noise of `shape` for held-out item `item`, from (job seed, item) alone
/// (Box–Muller on SplitMix64), so it is the same in every pass, run and resume.
fn fixed_noise(shape: &[i64], seed: u64, item: u64) -> Tensor {
    let n: i64 = shape.iter().product();
    let mut rng = SplitMix64::for_parts(&[seed, NOISE_STREAM, item]);
    let mut values = Vec::with_capacity(n as usize);
    while (values.len() as i64) < n {
        // 1 − u lies in (0, 1], so the logarithm is finite.
        let (u1, u2) = (1.0 - rng.next_f64(), rng.next_f64());
        let radius = (-2.0 * u1.ln()).sqrt();
        let angle = std::f64::consts::TAU * u2;
        values.push((radius * angle.cos()) as f32);
        values.push((radius * angle.sin()) as f32);
    }
    values.truncate(n as usize);
    Tensor::from_slice(&values).view(shape)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plot_series_keep_the_last_record_of_each_step_per_expert() {
        let metrics = [
            r#"{"step": 0, "expert": "high_noise", "validation_loss": 0.5}"#,
            r#"{"step": 0, "expert": "low_noise", "validation_loss": 0.4}"#,
            r#"{"step": 1, "expert": "high_noise", "loss": 9.0}"#,
            r#"{"step": 2, "expert": "high_noise", "validation_loss": 0.3}"#,
            r#"{"step": 2, "expert": "high_noise", "validation_loss": 0.2}"#,
            "torn line",
        ]
        .join("\n");
        assert_eq!(
            plot_series(&metrics),
            vec![
                (
                    "high_noise validation".to_string(),
                    vec![(0.0, 0.5), (2.0, 0.2)]
                ),
                ("low_noise validation".to_string(), vec![(0.0, 0.4)]),
            ]
        );
    }

    #[test]
    fn fixed_noise_depends_only_on_seed_and_item_and_is_standard_normal() {
        let a = fixed_noise(&[4, 8, 16, 16], 7, 0);
        let again = fixed_noise(&[4, 8, 16, 16], 7, 0);
        let other_item = fixed_noise(&[4, 8, 16, 16], 7, 1);
        let other_seed = fixed_noise(&[4, 8, 16, 16], 8, 0);
        assert!(a.equal(&again));
        assert!(!a.equal(&other_item));
        assert!(!a.equal(&other_seed));
        let mean = a.mean(Kind::Float).double_value(&[]);
        let std = a.std(true).double_value(&[]);
        assert!(mean.abs() < 0.05, "mean {mean}");
        assert!((std - 1.0).abs() < 0.05, "std {std}");
    }
}
