//! The Wan 2.2 A14B denoising loop (diffusers' `WanImageToVideoPipeline.__call__` and `WanPipeline.__call__`, Wan's
//! `image2video.generate` and `text2video.generate`):
//!
//! ```text
//! x ← noise(seed)                                   [1, z, T, h, w] float32
//! for each step i:  expert = high if t_i ≥ boundary·1000 else low
//!     input = cat(x, y)  (I2V)                      y = the first-frame condition, [1, 4 + z, T, h, w]
//!     input = x          (T2V)
//!     v_c, v_u = expert(input, t_i, prompt), expert(input, t_i, negative prompt)   (LoRA unmerged, strength m)
//!     v = v_u + g_expert·(v_c − v_u)                g_high = guidance_scale, g_low = guidance_scale_2
//!     x ← sampler.step(v, x)
//! ```
//!
//! TI2V-5B ([`Conditioning::Ti2v`]) is one model: it runs as the only phase (boundary 0, the high-noise slot) on the
//! Wan 2.2 VAE's 16× grid; with a start frame, its clean latent replaces latent frame 0 of the model's input at
//! every step, those tokens get timestep 0, and the final latents take it too (diffusers' `expand_timesteps`).
//!
//! Timesteps decrease, so routing is monotonic: all high-noise steps come first, then all low-noise steps. A
//! [`SampleRun`] therefore runs in two phases, and the caller hands over each expert when its phase starts
//! ([`SampleRun::denoise_phase`]): the trainer keeps only the expert(s) it trains and loads the other one just for
//! its phase, and a small GPU never holds both. The conditional and unconditional passes run as one batch of 2
//! (one forward pass with one timestep for both, so the modulation is shared and goes into the LayerNorm kernels)
//! when memory allows ([`CfgBatching`]).
//!
//! Randomness: the only random numbers are the initial noise, drawn by [`super::noise`] from the request's seed
//! without touching libtorch's generators. Sampling in the middle of training therefore leaves the training run's
//! random stream exactly as it was (tch offers no way to save and restore the global generator, so sampling never
//! uses it).

use std::panic::AssertUnwindSafe;
use std::time::Instant;

use tch::{Device, Kind, Tensor};
use wanlora_models::conditioning::{first_frame_condition, MASK_CHANNELS};
use wanlora_models::lora::{LoraApply, LoraSet, Multiplier};
use wanlora_models::transformer::WanTransformer;
use wanlora_models::vae::Vae;

use super::noise::torch_randn;
use super::request::{CfgBatching, SampleRequest};
use super::schedule::Schedule;
use super::scheduler::{SamplingState, Scheduler};
use super::start_image::{image_tensor, load_start_image};
use super::SamplingError;
use crate::experts::Expert;

/// What the progress callback hears after every step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepInfo {
    /// 0-based index of the step just taken.
    pub step: usize,
    pub steps: usize,
    pub expert: Expert,
    /// The timestep the expert saw.
    pub timestep: f64,
    /// Wall-clock seconds of the step (the GPU synchronised at its end).
    pub seconds: f64,
    /// Whether the two guidance passes ran as one batch.
    pub batched: bool,
}

/// A sample being denoised.
pub struct SampleRun {
    schedule: Schedule,
    scheduler: Scheduler,
    /// x, float32 `[1, z, T, h, w]`.
    latents: Tensor,
    /// y = cat(mask, image latent), float32 `[1, 4 + z, T, h, w]` (image-to-video); none for text-to-video.
    condition: Option<Tensor>,
    /// TI2V's clean start-frame latent, float32 `[1, z, 1, h, w]`.
    start_latent: Option<Tensor>,
    /// `[1, L, D]` each.
    text_cond: Tensor,
    text_uncond: Tensor,
    guidance_high: f64,
    guidance_low: f64,
    boundary_ratio: f64,
    lora_multiplier_high: f64,
    lora_multiplier_low: f64,
    cfg_batching: CfgBatching,
    /// Set after an out-of-memory error in a batched pass: two passes from then on.
    batch_failed: bool,
    step: usize,
    device: Device,
    /// [`Conditioning::name`] of what the run was built with (for [`SampleRun::hand_off`]).
    conditioning: &'static str,
}

/// What the experts see besides the noisy latents.
pub enum Conditioning {
    /// Text-to-video: the noisy latents alone, of `latent_channels` (the VAE's z, 16).
    TextOnly { latent_channels: i64 },
    /// Image-to-video: y = cat(mask, image latent) `[1, 4 + z, T, H/8, W/8]` ([`first_frame_condition`]),
    /// concatenated to the latents at every step.
    FirstFrame(Tensor),
    /// TI2V-5B: latents of `latent_channels` (the Wan 2.2 VAE's 48) on its `H/16 × W/16` grid, and for
    /// image-to-video the start frame's normalised latent `[1, z, 1, H/16, W/16]`.
    Ti2v {
        latent_channels: i64,
        start: Option<Tensor>,
    },
}

impl Conditioning {
    /// What kind of conditioning this is, as a hand-off names it.
    fn name(&self) -> &'static str {
        match self {
            Conditioning::TextOnly { .. } => "text_only",
            Conditioning::FirstFrame(_) => "first_frame",
            Conditioning::Ti2v { .. } => "ti2v",
        }
    }

    /// The conditioning of a run [`SampleRun::hand_off`] handed over, on `device`: the run that
    /// takes it over is built with it, so it encodes no start frame of its own and sees exactly
    /// the other run's.
    pub fn handed_off(
        state: &SamplingState,
        device: Device,
    ) -> Result<Conditioning, SamplingError> {
        let latent_channels = state
            .tensors
            .get("latents")
            .and_then(|t| t.size().get(1).copied())
            .ok_or_else(|| SamplingError::Input("the sampling state has no latents".into()))?;
        let tensor = |name: &str| {
            state
                .tensor(name, device)?
                .ok_or_else(|| SamplingError::Input(format!("the sampling state has no {name}")))
        };
        Ok(match state.get("conditioning")? {
            "text_only" => Conditioning::TextOnly { latent_channels },
            "first_frame" => Conditioning::FirstFrame(tensor("condition")?),
            "ti2v" => Conditioning::Ti2v {
                latent_channels,
                start: state.tensor("start_latent", device)?,
            },
            other => {
                return Err(SamplingError::Input(format!(
                    "the sampling state's conditioning {other:?} is none of text_only, first_frame, ti2v"
                )))
            }
        })
    }

    /// z, the channels of the latents being denoised.
    fn latent_channels(&self) -> i64 {
        match self {
            Conditioning::TextOnly { latent_channels } => *latent_channels,
            Conditioning::FirstFrame(y) => y.size().get(1).copied().unwrap_or(0) - MASK_CHANNELS,
            Conditioning::Ti2v {
                latent_channels, ..
            } => *latent_channels,
        }
    }

    /// The latent grid `[T, h, w]` of `request`: 8× in space for the Wan 2.1 VAE, 16× for TI2V's.
    fn latent_grid(&self, request: &SampleRequest) -> [i64; 3] {
        let [t, h, w] = request.latent_grid();
        match self {
            Conditioning::Ti2v { .. } => [t, h / 2, w / 2],
            _ => [t, h, w],
        }
    }
}

impl SampleRun {
    /// A run with the request's schedule (Wan's official one unless it asks for diffusers') and seeded noise.
    /// `conditioning` is the first-frame condition for image-to-video ([`start_condition`] builds it from the request);
    /// `text_cond` and `text_uncond` are umT5 embeddings of the prompt and the negative prompt, `[1, L, D]` or `[L, D]`.
    /// Everything moves to `device`.
    pub fn new(
        request: &SampleRequest,
        text_cond: &Tensor,
        text_uncond: &Tensor,
        conditioning: &Conditioning,
        device: Device,
    ) -> Result<SampleRun, SamplingError> {
        request.validate()?;
        let schedule = Schedule::new(
            request.schedule,
            request.sampler,
            request.steps as usize,
            request.shift,
        )?;
        let [t, h, w] = conditioning.latent_grid(request);
        let z = conditioning.latent_channels().max(0);
        let noise = torch_randn(request.seed, &[1, z, t, h, w], device)?;
        Self::from_parts(
            request,
            schedule,
            noise,
            text_cond,
            text_uncond,
            conditioning,
        )
    }

    /// A run over a given schedule from given initial latents `[1, z, T, h, w]` (e.g. diffusers' grid and noise, for
    /// parity tests); the request's schedule settings and seed are not used. Runs on `noise`'s device.
    pub fn from_parts(
        request: &SampleRequest,
        schedule: Schedule,
        noise: Tensor,
        text_cond: &Tensor,
        text_uncond: &Tensor,
        conditioning: &Conditioning,
    ) -> Result<SampleRun, SamplingError> {
        request.validate()?;
        let device = noise.device();
        let [t, h, w] = conditioning.latent_grid(request);
        let size = noise.size();
        if size.len() != 5 || size[0] != 1 || size[2..] != [t, h, w] {
            return Err(SamplingError::Input(format!(
                "initial latents have shape {size:?}; a {}-frame {}×{} sample needs [1, z, {t}, {h}, {w}]",
                request.num_frames, request.width, request.height
            )));
        }
        let mut start_latent = None;
        let condition = match conditioning {
            Conditioning::TextOnly { latent_channels }
            | Conditioning::Ti2v {
                latent_channels, ..
            } => {
                if let Conditioning::Ti2v {
                    start: Some(start), ..
                } = conditioning
                {
                    let expected = [1, size[1], 1, h, w];
                    if start.size() != expected {
                        return Err(SamplingError::Input(format!(
                            "the start frame's latent has shape {:?}; expected {expected:?}",
                            start.size()
                        )));
                    }
                    start_latent = Some(start.f_to_device(device)?.f_to_kind(Kind::Float)?);
                }
                if size[1] != *latent_channels {
                    return Err(SamplingError::Input(format!(
                        "initial latents have {} channels; the text-to-video latents have {latent_channels}",
                        size[1]
                    )));
                }
                None
            }
            Conditioning::FirstFrame(y) => {
                let expected = [1, MASK_CHANNELS + size[1], t, h, w];
                if y.size() != expected {
                    return Err(SamplingError::Input(format!(
                        "the first-frame condition has shape {:?}; expected {expected:?} (mask and image latent)",
                        y.size()
                    )));
                }
                Some(y.f_to_device(device)?.f_to_kind(Kind::Float)?)
            }
        };
        let text = |embedding: &Tensor, what: &str| -> Result<Tensor, SamplingError> {
            let e = match embedding.dim() {
                2 => embedding.f_unsqueeze(0)?,
                3 if embedding.size()[0] == 1 => embedding.shallow_clone(),
                _ => {
                    return Err(SamplingError::Input(format!(
                        "the {what} embedding has shape {:?}; expected [1, L, D] or [L, D]",
                        embedding.size()
                    )))
                }
            };
            Ok(e.f_to_device(device)?)
        };
        let text_cond = text(text_cond, "prompt")?;
        let text_uncond = text(text_uncond, "negative prompt")?;
        if text_cond.size() != text_uncond.size() {
            return Err(SamplingError::Input(format!(
                "prompt and negative prompt embeddings differ in shape: {:?} and {:?}",
                text_cond.size(),
                text_uncond.size()
            )));
        }
        let scheduler = Scheduler::new(request.sampler, &schedule.sigmas)?;
        Ok(SampleRun {
            schedule,
            scheduler,
            latents: noise.f_to_kind(Kind::Float)?,
            condition,
            start_latent,
            text_cond,
            text_uncond,
            guidance_high: request.guidance_high,
            guidance_low: request.guidance_low,
            boundary_ratio: request.boundary_ratio,
            lora_multiplier_high: request.lora_multiplier_high,
            lora_multiplier_low: request.lora_multiplier_low,
            cfg_batching: request.cfg_batching,
            batch_failed: false,
            step: 0,
            device,
            conditioning: conditioning.name(),
        })
    }

    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// Steps taken so far.
    pub fn steps_done(&self) -> usize {
        self.step
    }

    pub fn is_done(&self) -> bool {
        self.step >= self.schedule.steps()
    }

    /// The steps of `expert`'s phase (high noise: the first ones).
    pub fn phase(&self, expert: Expert) -> std::ops::Range<usize> {
        let high = self.schedule.high_noise_steps(self.boundary_ratio);
        match expert {
            Expert::High => 0..high,
            Expert::Low => high..self.schedule.steps(),
        }
    }

    /// Steps `expert` still has to take: 0 means its phase needs no model (skip loading it).
    pub fn remaining(&self, expert: Expert) -> usize {
        let phase = self.phase(expert);
        phase.end.saturating_sub(self.step.max(phase.start))
    }

    /// The current latents x (float32 `[1, z, T, h, w]`); the final ones once [`SampleRun::is_done`].
    pub fn latents(&self) -> &Tensor {
        &self.latents
    }

    /// The run's state between two steps — the latents, the step, the sampler's own state
    /// ([`super::scheduler::Scheduler::export`]), whether guidance had to fall back to two
    /// passes, and the conditioning ([`Conditioning::handed_off`]) — for
    /// [`SampleRun::resume_from`] in another process.
    pub fn hand_off(&self) -> Result<SamplingState, SamplingError> {
        let mut state = self.scheduler.export()?;
        state.set("step", self.step);
        state.set("batch_failed", self.batch_failed);
        state.set("conditioning", self.conditioning);
        state.put_tensor("latents", &self.latents)?;
        if let Some(y) = &self.condition {
            state.put_tensor("condition", y)?;
        }
        if let Some(start) = &self.start_latent {
            state.put_tensor("start_latent", start)?;
        }
        Ok(state)
    }

    /// Goes on from a state [`SampleRun::hand_off`] took from a run of the same request (this
    /// run built with the same texts and [`Conditioning::handed_off`]): its latents, step and
    /// sampler state replace this run's, so that the remaining steps give what the other run's
    /// would have.
    pub fn resume_from(&mut self, state: &SamplingState) -> Result<(), SamplingError> {
        let step: usize = state.number("step")?;
        let latents = state
            .tensor("latents", self.device)?
            .ok_or_else(|| SamplingError::Input("the sampling state has no latents".into()))?;
        if latents.size() != self.latents.size() {
            return Err(SamplingError::Input(format!(
                "the handed-off latents have shape {:?}; this run's are {:?}",
                latents.size(),
                self.latents.size()
            )));
        }
        self.scheduler.import(state, self.device)?;
        if self.scheduler.step_index() != step || step > self.schedule.steps() {
            return Err(SamplingError::Input(format!(
                "the sampling state is at step {step} but its sampler at step {} (of {})",
                self.scheduler.step_index(),
                self.schedule.steps()
            )));
        }
        self.latents = latents.f_to_kind(Kind::Float)?;
        self.batch_failed = state.number("batch_failed")?;
        self.step = step;
        Ok(())
    }

    /// Runs every remaining step of `expert`'s phase with `model`, applying `lora` (unmerged) at the request's
    /// strength for that expert. Calling the low-noise phase while high-noise steps remain is an error; a phase with nothing left
    /// returns at once. `progress` hears about each step.
    pub fn denoise_phase(
        &mut self,
        expert: Expert,
        model: &WanTransformer,
        lora: Option<&LoraSet>,
        progress: &mut dyn FnMut(&StepInfo),
    ) -> Result<(), SamplingError> {
        let phase = self.phase(expert);
        if expert == Expert::Low && self.step < phase.start {
            return Err(SamplingError::Phase(format!(
                "{} high-noise steps remain; run the high-noise phase before the low-noise one",
                phase.start - self.step
            )));
        }
        if model.device() != self.device {
            return Err(SamplingError::Input(format!(
                "the {expert:?} expert is on {:?} but the sample is on {:?}",
                model.device(),
                self.device
            )));
        }
        let given = self.latents.size()[1] + self.condition.as_ref().map_or(0, |y| y.size()[1]);
        if model.config.in_channels != given {
            let why = if self.condition.is_some() {
                "this is an image-to-video sample (latents + mask + start frame); a text-to-video expert takes the latents alone"
            } else {
                "this is a text-to-video sample (latents alone); an image-to-video expert also needs a start frame (ctrl_img) and arch: wan22_14b_i2v"
            };
            return Err(SamplingError::Input(format!(
                "the {expert:?} expert takes {} input channels but the sample gives {given}: {why}",
                model.config.in_channels
            )));
        }
        let (guidance, strength) = match expert {
            Expert::High => (self.guidance_high, self.lora_multiplier_high),
            Expert::Low => (self.guidance_low, self.lora_multiplier_low),
        };
        let apply = lora.filter(|_| strength != 0.0).map(|set| LoraApply {
            set,
            multiplier: Multiplier::Scalar(strength),
        });
        let _no_grad = tch::no_grad_guard();
        while self.step < phase.end {
            let start = Instant::now();
            let timestep = self.schedule.timesteps[self.step];
            let (velocity, batched) =
                self.guided_velocity(model, apply.as_ref(), timestep, guidance)?;
            self.latents = self.scheduler.step(&velocity, &self.latents)?;
            if let Device::Cuda(i) = self.device {
                wanlora_torch::cuda::synchronize(i)?;
            }
            progress(&StepInfo {
                step: self.step,
                steps: self.schedule.steps(),
                expert,
                timestep,
                seconds: start.elapsed().as_secs_f64(),
                batched,
            });
            self.step += 1;
        }
        if self.is_done() {
            if let Some(start) = &self.start_latent {
                self.latents.f_narrow(2, 0, 1)?.f_copy_(start)?;
            }
        }
        Ok(())
    }

    /// The model's input latents: with a TI2V start frame, latent frame 0 replaced by its clean latent.
    fn model_latents(&self) -> Result<Tensor, SamplingError> {
        let Some(start) = &self.start_latent else {
            return Ok(self.latents.shallow_clone());
        };
        let mut input = self.latents.f_empty_like()?;
        input.f_copy_(&self.latents)?;
        input.f_narrow(2, 0, 1)?.f_copy_(start)?;
        Ok(input)
    }

    /// The timestep tensor for every sample of a pass: `[1]`, or with a TI2V start frame one per latent frame
    /// `[1, T]` with frame 0 at 0 (its latent is clean).
    fn timestep_tensor(&self, timestep: f64) -> Result<Tensor, SamplingError> {
        let frames = self.latents.size()[2];
        let values: Vec<f32> = match self.start_latent {
            Some(_) => (0..frames)
                .map(|f| if f == 0 { 0.0 } else { timestep as f32 })
                .collect(),
            None => vec![timestep as f32],
        };
        let t = Tensor::f_from_slice(&values)?.f_to_device(self.device)?;
        Ok(match self.start_latent {
            Some(_) => t.f_view([1, frames])?,
            None => t,
        })
    }

    /// `v_u + g·(v_c − v_u)` at the current latents, and whether the passes ran as one batch. A scale of 1 needs
    /// only the conditional pass.
    fn guided_velocity(
        &mut self,
        model: &WanTransformer,
        lora: Option<&LoraApply>,
        timestep: f64,
        guidance: f64,
    ) -> Result<(Tensor, bool), SamplingError> {
        let input = match &self.condition {
            Some(y) => Tensor::f_cat(&[&self.latents, y], 1)?,
            None => self.model_latents()?,
        };
        let t1 = self.timestep_tensor(timestep)?;
        if guidance == 1.0 {
            return Ok((model.forward(&input, &t1, &self.text_cond, lora)?, false));
        }
        if self.batch_cfg(model) {
            if let Some(both) = self.batched_pass(model, lora, &input, timestep)? {
                let cond = both.f_narrow(0, 0, 1)?;
                let uncond = both.f_narrow(0, 1, 1)?;
                return Ok((guide(&cond, &uncond, guidance)?, true));
            }
        }
        let cond = model.forward(&input, &t1, &self.text_cond, lora)?;
        let uncond = model.forward(&input, &t1, &self.text_uncond, lora)?;
        Ok((guide(&cond, &uncond, guidance)?, false))
    }

    /// Both passes as one batch of 2; `None` (and two passes from now on) when the GPU runs out of memory.
    fn batched_pass(
        &mut self,
        model: &WanTransformer,
        lora: Option<&LoraApply>,
        input: &Tensor,
        timestep: f64,
    ) -> Result<Option<Tensor>, SamplingError> {
        let input2 = input.f_repeat([2, 1, 1, 1, 1])?;
        // One timestep for the batch: the transformer broadcasts it, and its modulated norms then
        // take the shared modulation inside the LayerNorm kernel (one memory pass fewer each).
        let shared_t = self.timestep_tensor(timestep)?;
        let context = Tensor::f_cat(&[&self.text_cond, &self.text_uncond], 0)?;
        // tch reports libtorch errors of its non-`f_` operations as panics; an out-of-memory one is caught here
        // (and only that one) to fall back to two passes.
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
            model.forward(&input2, &shared_t, &context, lora)
        }));
        let message = match outcome {
            Ok(Ok(both)) => return Ok(Some(both)),
            Ok(Err(e)) if is_out_of_memory(&e.to_string()) => e.to_string(),
            Ok(Err(e)) => return Err(e.into()),
            Err(panic) => match panic_text(panic.as_ref()) {
                Some(text) if is_out_of_memory(&text) => text,
                _ => std::panic::resume_unwind(panic),
            },
        };
        if self.cfg_batching == CfgBatching::Batched {
            return Err(SamplingError::OutOfMemory(format!(
                "the batched guidance pass ran out of GPU memory ({}); use two passes (CfgBatching::Separate / \
                 --cfg-batch separate) or a smaller sample",
                first_line(&message)
            )));
        }
        tracing::warn!(
            "sampling: the batched guidance pass ran out of GPU memory; running the two passes one after the other"
        );
        self.batch_failed = true;
        if self.device.is_cuda() {
            wanlora_torch::cuda::empty_cache()?;
        }
        Ok(None)
    }

    /// Whether to run the guidance passes as one batch now.
    fn batch_cfg(&self, model: &WanTransformer) -> bool {
        match self.cfg_batching {
            CfgBatching::Batched => true,
            CfgBatching::Separate => false,
            CfgBatching::Auto => !self.batch_failed && self.batch_fits(model),
        }
    }

    /// On CUDA: whether the memory free for tensors holds the activations of a second sample, estimated per
    /// token from the largest transients of a block (the feed-forward hidden layer, q/k/v/attention output, the
    /// float32 residual stream). Always true on the CPU.
    fn batch_fits(&self, model: &WanTransformer) -> bool {
        let Device::Cuda(i) = self.device else {
            return true;
        };
        let cfg = &model.config;
        let element = match model.kind() {
            Kind::Float => 4,
            _ => 2,
        };
        let size = self.latents.size();
        let patch: i64 = cfg.patch_size.iter().product();
        let tokens = size[2..].iter().product::<i64>() / patch;
        let per_token = (2 * cfg.ffn_dim + 8 * cfg.dim()) * element + 2 * cfg.dim() * 4;
        let one_sample = tokens * per_token;
        let available = match (
            wanlora_torch::cuda::memory_info(i),
            wanlora_torch::cuda::memory_stats(i),
        ) {
            (Ok((free, _)), Ok(stats)) => free + (stats.reserved - stats.allocated),
            _ => return true,
        };
        available > 2 * one_sample + (512 << 20)
    }
}

/// Classifier-free guidance: `v_u + g·(v_c − v_u)`.
fn guide(cond: &Tensor, uncond: &Tensor, guidance: f64) -> Result<Tensor, SamplingError> {
    Ok(uncond.f_add(&cond.f_sub(uncond)?.f_mul_scalar(guidance)?)?)
}

fn is_out_of_memory(message: &str) -> bool {
    message.contains("out of memory")
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> Option<String> {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or(text)
}

/// The request's conditioning: for a start image, the first-frame condition `y` `[1, 4 + z, T, H/8, W/8]` (the image
/// loaded, fitted to the sample size by crop or stretch, encoded by `vae` with the zero frames after it); without
/// one, text-to-video latents of the VAE's width.
///
/// With the Wan 2.2 VAE (2×2 pixel patches: TI2V-5B's) the conditioning is [`Conditioning::Ti2v`], the start
/// image's own latent (the causal VAE encodes frame 0 alone, so it is latent frame 0 of any clip it starts).
pub fn start_condition(request: &SampleRequest, vae: &Vae) -> Result<Conditioning, SamplingError> {
    request.validate()?;
    let latent_channels = vae.config().z_dim;
    let ti2v = vae.config().patch() > 1;
    let Some(path) = &request.start_image else {
        return Ok(if ti2v {
            Conditioning::Ti2v {
                latent_channels,
                start: None,
            }
        } else {
            Conditioning::TextOnly { latent_channels }
        });
    };
    let start = load_start_image(path, request.width, request.height, request.resize)?;
    let image = image_tensor(&start, vae.device())?;
    if ti2v {
        return Ok(Conditioning::Ti2v {
            latent_channels,
            start: Some(vae.encode(&image.f_unsqueeze(2)?)?),
        });
    }
    Ok(Conditioning::FirstFrame(first_frame_condition(
        vae,
        &image,
        request.num_frames as i64,
    )?))
}

/// An expert ready for its phase: the model and, optionally, its LoRA.
pub struct LoadedExpert {
    pub model: WanTransformer,
    pub lora: Option<LoraSet>,
}

/// A finished sample: the final latents and the decoded video.
pub struct Generated {
    /// float32 `[1, z, T, h, w]`.
    pub latents: Tensor,
    /// float32 `[1, 3, F, H, W]` in [−1, 1].
    pub video: Tensor,
}

/// The whole sample for a standalone run: start image → first-frame condition (with `vae`; none for text-to-video)
/// → both phases, each
/// expert obtained from `load_expert` when its phase starts and dropped after it (so one expert is resident at a
/// time; an expert whose phase is empty is never loaded) → decode. Runs on the VAE's device.
pub fn generate(
    request: &SampleRequest,
    text_cond: &Tensor,
    text_uncond: &Tensor,
    vae: &Vae,
    load_expert: &mut dyn FnMut(Expert) -> Result<LoadedExpert, SamplingError>,
    progress: &mut dyn FnMut(&StepInfo),
) -> Result<Generated, SamplingError> {
    let device = vae.device();
    let condition = start_condition(request, vae)?;
    let mut run = SampleRun::new(request, text_cond, text_uncond, &condition, device)?;
    for expert in [Expert::High, Expert::Low] {
        if run.remaining(expert) == 0 {
            continue;
        }
        let loaded = load_expert(expert)?;
        run.denoise_phase(expert, &loaded.model, loaded.lora.as_ref(), progress)?;
    }
    let latents = run.latents().shallow_clone();
    let video = vae.decode(&latents)?;
    Ok(Generated { latents, video })
}
