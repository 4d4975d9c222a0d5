//! What one sample is: prompt, start frame (image-to-video only), size, schedule, guidance, seed, LoRA strength and
//! output format, every value decided. Built from a job's `sample` section ([`SampleRequest::from_job`]) or from
//! Wan's official recipe of an arch ([`SampleRequest::official`], what `wanlora sample` starts from).

use std::path::PathBuf;
use wanlora_spec::frames;

use wanlora_config::{CtrlImgResize, ModelArch, SampleConfig, SampleFormat};

use super::schedule::ScheduleKind;
use super::scheduler::SamplerKind;
use super::SamplingError;

/// Wan's negative prompt (`sample_neg_prompt` in Wan 2.2's `wan/configs/shared_config.py`), which Wan uses when none
/// is given and ComfyUI's Wan templates fill in: garish colours, overexposure, static, blurred details, subtitles,
/// style, artwork, painting, still frame, overall greyness, worst quality, low quality, JPEG artefacts, ugly,
/// mutilated, extra fingers, badly drawn hands and faces, deformed, disfigured, malformed limbs, fused fingers,
/// motionless picture, cluttered background, three legs, crowded background, walking backwards.
pub const WAN_NEGATIVE_PROMPT: &str = "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走";

/// How the conditional and unconditional passes of classifier-free guidance run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CfgBatching {
    /// One batch of 2 when the GPU has room for it (always on the CPU); two passes otherwise, and two passes from
    /// the first out-of-memory error on.
    #[default]
    Auto,
    /// Always one batch of 2 (fastest; needs the activations of two samples at once).
    Batched,
    /// Always two passes of one (least memory; what diffusers and Wan do).
    Separate,
}

/// One sample, fully specified.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleRequest {
    pub prompt: String,
    /// The unconditional prompt of classifier-free guidance.
    pub negative_prompt: String,
    /// The start frame: image-to-video needs one, text-to-video has none.
    pub start_image: Option<PathBuf>,
    /// How the start frame is fitted to `width` × `height`.
    pub resize: CtrlImgResize,
    /// Multiples of 16.
    pub width: u32,
    pub height: u32,
    /// 4n + 1.
    pub num_frames: u32,
    pub fps: u32,
    /// Seed of the initial noise (PyTorch's CPU generator: the noise ComfyUI and diffusers draw for this seed).
    pub seed: u64,
    pub steps: u32,
    /// σ' = shift·σ / (1 + (shift − 1)·σ).
    pub shift: f64,
    pub sampler: SamplerKind,
    /// The σ grid: Wan's (always, except to reproduce diffusers' pipeline).
    pub schedule: ScheduleKind,
    /// CFG scale of the high-noise expert (`guidance_scale`).
    pub guidance_high: f64,
    /// CFG scale of the low-noise expert (`guidance_scale_2`).
    pub guidance_low: f64,
    /// The high-noise expert takes the steps with `t ≥ boundary_ratio·1000` (0: every step, one model).
    pub boundary_ratio: f64,
    /// Strength of the high-noise expert's LoRA (a job's `network_multiplier`).
    pub lora_multiplier_high: f64,
    /// Strength of the low-noise expert's LoRA (a job's `network_multiplier`).
    pub lora_multiplier_low: f64,
    pub cfg_batching: CfgBatching,
    /// The file format of the result.
    pub format: SampleFormat,
}

impl SampleRequest {
    /// The arch's own settings (wan/configs/wan_{i2v,t2v}_A14B.py, shared_config.py): 81 frames at 16 fps,
    /// 480×832, 40 UniPC steps, Wan's negative prompt, seed 0, the start frame centre-cropped, MP4 out; I2V: shift 5,
    /// CFG 3.5 on both experts, boundary 0.9; T2V: shift 12, CFG 4.0 high / 3.0 low, boundary 0.875. TI2V-5B
    /// (wan_ti2v_5B.py): 121 frames at 24 fps, 704×1280, 50 steps, shift 5, CFG 5, boundary 0 (one model).
    pub fn official(arch: ModelArch, prompt: &str, start_image: Option<PathBuf>) -> SampleRequest {
        let facts = arch.facts();
        // TI2V-5B (wan_ti2v_5B.py): 121 frames at 704×1280.
        let (width, height, num_frames) = if facts.one_transformer {
            (1280, 704, 121)
        } else {
            (832, 480, 81)
        };
        SampleRequest {
            prompt: prompt.to_string(),
            negative_prompt: WAN_NEGATIVE_PROMPT.to_string(),
            start_image,
            resize: CtrlImgResize::Crop,
            width,
            height,
            num_frames,
            fps: facts.fps,
            seed: 0,
            steps: facts.sample_steps,
            shift: facts.sample_shift,
            sampler: SamplerKind::UniPc,
            schedule: ScheduleKind::Official,
            guidance_high: facts.guidance_high,
            guidance_low: facts.guidance_low,
            boundary_ratio: facts.boundary_ratio,
            lora_multiplier_high: 1.0,
            lora_multiplier_low: 1.0,
            cfg_batching: CfgBatching::Auto,
            format: SampleFormat::Mp4,
        }
    }

    /// Sample `index` of a job's `sample` section (`None` past the end), with the section's values where the item
    /// has none (`SampleConfig::resolve`) and the job's arch and expert boundary. An empty negative prompt becomes
    /// Wan's ([`WAN_NEGATIVE_PROMPT`]), as in Wan's own sampler; AI Toolkit samples with an empty one. `ctrl_img`
    /// should be absolute (`wanlora_config::load_job` makes it so); an image-to-video sample needs it, a
    /// text-to-video sample ignores it.
    pub fn from_job(
        sample: &SampleConfig,
        index: usize,
        arch: ModelArch,
        boundary_ratio: f64,
    ) -> Result<Option<SampleRequest>, SamplingError> {
        let Some(resolved) = sample.resolve(index) else {
            return Ok(None);
        };
        let start_image = if arch.facts().first_frame_replacement {
            // TI2V-5B: image-to-video with a start frame, text-to-video without.
            resolved.ctrl_img.clone()
        } else if arch.facts().first_frame_condition {
            Some(resolved.ctrl_img.clone().ok_or_else(|| {
                SamplingError::setting(
                    format!("sample.samples[{index}].ctrl_img"),
                    "an image-to-video sample needs a start frame; add `ctrl_img: path/to/image.jpg` to the sample",
                )
            })?)
        } else {
            None
        };
        let negative_prompt = if resolved.neg.trim().is_empty() {
            WAN_NEGATIVE_PROMPT.to_string()
        } else {
            resolved.neg.clone()
        };
        let request = SampleRequest {
            prompt: resolved.prompt.clone(),
            negative_prompt,
            start_image: start_image.map(PathBuf::from),
            resize: sample.ctrl_img_resize,
            width: resolved.width,
            height: resolved.height,
            num_frames: resolved.num_frames,
            fps: resolved.fps,
            seed: resolved.seed,
            steps: resolved.sample_steps,
            shift: sample.shift,
            sampler: sample.sampler.into(),
            schedule: ScheduleKind::Official,
            guidance_high: resolved.guidance_scale,
            guidance_low: resolved.guidance_scale_2,
            boundary_ratio,
            lora_multiplier_high: resolved.network_multiplier,
            lora_multiplier_low: resolved.network_multiplier,
            cfg_batching: CfgBatching::Auto,
            format: resolved.format,
        };
        request.validate()?;
        Ok(Some(request))
    }

    /// Every setting in range; the error names the setting and the accepted values.
    pub fn validate(&self) -> Result<(), SamplingError> {
        let bad = |setting: &str, message: String| Err(SamplingError::setting(setting, message));
        for (setting, value) in [("width", self.width), ("height", self.height)] {
            if !frames::is_frame_side(value) {
                return bad(
                    setting,
                    format!("{value} is not a positive multiple of 16 (Wan's latents are 1/8 of the frame, in 2×2 patches)"),
                );
            }
        }
        if !frames::is_frame_count(self.num_frames) {
            return bad(
                "num_frames",
                format!(
                    "{} is not 4n + 1; {}",
                    self.num_frames,
                    frames::frame_count_hint(self.num_frames)
                ),
            );
        }
        if self.fps == 0 {
            return bad("fps", "must be at least 1 (Wan: 16)".into());
        }
        if self.steps == 0 {
            return bad("sample_steps", "must be at least 1 (Wan: 40)".into());
        }
        if !(self.shift.is_finite() && self.shift > 0.0) {
            return bad(
                "shift",
                format!("{} is not a positive number (Wan: 5.0)", self.shift),
            );
        }
        for (setting, value) in [
            ("guidance_scale", self.guidance_high),
            ("guidance_scale_2", self.guidance_low),
        ] {
            if !(value.is_finite() && value > 0.0) {
                return bad(
                    setting,
                    format!("{value} is not a positive number (Wan: 3.5)"),
                );
            }
        }
        // 0 sends every step to the one model of TI2V-5B (the high-noise slot).
        if !(self.boundary_ratio >= 0.0 && self.boundary_ratio < 1.0) {
            return bad(
                "boundary_ratio",
                format!(
                    "{} is not in [0, 1) (Wan 2.2 I2V: 0.9; 0 for the one model of TI2V-5B)",
                    self.boundary_ratio
                ),
            );
        }
        for value in [self.lora_multiplier_high, self.lora_multiplier_low] {
            if !value.is_finite() {
                return bad("network_multiplier", format!("{value} is not a number"));
            }
        }
        if self.num_frames > 1 && matches!(self.format, SampleFormat::Jpg | SampleFormat::Png) {
            return bad(
                "format",
                format!(
                    "a {}-frame video cannot be a still image; use mp4 or webp",
                    self.num_frames
                ),
            );
        }
        Ok(())
    }

    /// The latent grid `[T, h, w]`: `(F − 1)/4 + 1` frames of `H/8 × W/8`.
    pub fn latent_grid(&self) -> [i64; 3] {
        [
            (self.num_frames as i64 - 1) / 4 + 1,
            self.height as i64 / 8,
            self.width as i64 / 8,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wanlora_config::SampleItem;

    #[test]
    fn job_samples_take_section_values_and_wans_negative_prompt() {
        let section = SampleConfig {
            num_frames: 41,
            sample_steps: 30,
            guidance_scale: 4.0,
            sampler: wanlora_config::Sampler::Unipc,
            ctrl_img_resize: CtrlImgResize::Stretch,
            samples: vec![
                SampleItem {
                    prompt: "a dog".into(),
                    ctrl_img: Some("/data/dog.jpg".into()),
                    ..SampleItem::default()
                },
                SampleItem {
                    prompt: "a cat".into(),
                    ctrl_img: Some("/data/cat.jpg".into()),
                    neg: Some("blurry".into()),
                    guidance_scale_2: Some(2.5),
                    ..SampleItem::default()
                },
                SampleItem {
                    prompt: "no start frame".into(),
                    ..SampleItem::default()
                },
            ],
            ..SampleConfig::default()
        };
        let i2v = ModelArch::Wan22_14bI2v;
        let first = SampleRequest::from_job(&section, 0, i2v, 0.9)
            .unwrap()
            .unwrap();
        assert_eq!(first.negative_prompt, WAN_NEGATIVE_PROMPT);
        assert_eq!(first.start_image, Some(PathBuf::from("/data/dog.jpg")));
        assert_eq!((first.num_frames, first.steps), (41, 30));
        // No guidance_scale_2: the low-noise expert follows guidance_scale, as AI Toolkit.
        assert_eq!((first.guidance_high, first.guidance_low), (4.0, 4.0));
        assert_eq!(first.sampler, SamplerKind::UniPc);
        assert_eq!(first.resize, CtrlImgResize::Stretch);
        assert_eq!(first.format, SampleFormat::Mp4);
        let second = SampleRequest::from_job(&section, 1, i2v, 0.875)
            .unwrap()
            .unwrap();
        assert_eq!(second.negative_prompt, "blurry");
        assert_eq!(second.guidance_low, 2.5);
        assert_eq!(second.boundary_ratio, 0.875);
        let err = SampleRequest::from_job(&section, 2, i2v, 0.9).unwrap_err();
        assert!(
            err.to_string().contains("sample.samples[2].ctrl_img"),
            "{err}"
        );
        assert!(SampleRequest::from_job(&section, 3, i2v, 0.9)
            .unwrap()
            .is_none());
        // Text-to-video: no start frame needed, and one given is not used.
        let t2v = ModelArch::Wan22_14b;
        let prompt_only = SampleRequest::from_job(&section, 2, t2v, 0.875)
            .unwrap()
            .unwrap();
        assert_eq!(prompt_only.start_image, None);
        assert_eq!(prompt_only.prompt, "no start frame");
        let with_image = SampleRequest::from_job(&section, 0, t2v, 0.875)
            .unwrap()
            .unwrap();
        assert_eq!(with_image.start_image, None);
    }

    #[test]
    fn official_recipes_follow_the_arch() {
        let t2v = SampleRequest::official(ModelArch::Wan22_14b, "x", None);
        assert_eq!(
            (
                t2v.shift,
                t2v.guidance_high,
                t2v.guidance_low,
                t2v.boundary_ratio
            ),
            (12.0, 4.0, 3.0, 0.875)
        );
        assert_eq!(
            (t2v.steps, t2v.fps, t2v.sampler),
            (40, 16, SamplerKind::UniPc)
        );
        let i2v = SampleRequest::official(ModelArch::Wan22_14bI2v, "x", Some("a.png".into()));
        assert_eq!(
            (
                i2v.shift,
                i2v.guidance_high,
                i2v.guidance_low,
                i2v.boundary_ratio
            ),
            (5.0, 3.5, 3.5, 0.9)
        );
        let ti2v = SampleRequest::official(ModelArch::Wan22_5b, "x", None);
        assert_eq!(
            (ti2v.shift, ti2v.guidance_high, ti2v.boundary_ratio),
            (5.0, 5.0, 0.0)
        );
        assert_eq!(
            (
                ti2v.width,
                ti2v.height,
                ti2v.num_frames,
                ti2v.fps,
                ti2v.steps
            ),
            (1280, 704, 121, 24, 50)
        );
        assert!(ti2v.validate().is_ok());
    }

    #[test]
    fn a_ti2v_sample_takes_a_start_frame_or_none() {
        let section = SampleConfig {
            samples: vec![
                SampleItem {
                    prompt: "from a frame".into(),
                    ctrl_img: Some("/a.png".into()),
                    ..SampleItem::default()
                },
                SampleItem {
                    prompt: "from the prompt".into(),
                    ..SampleItem::default()
                },
            ],
            ..SampleConfig::default()
        };
        let ti2v = ModelArch::Wan22_5b;
        let with_frame = SampleRequest::from_job(&section, 0, ti2v, 0.0)
            .unwrap()
            .unwrap();
        assert_eq!(with_frame.start_image, Some(PathBuf::from("/a.png")));
        let prompt_only = SampleRequest::from_job(&section, 1, ti2v, 0.0)
            .unwrap()
            .unwrap();
        assert_eq!(prompt_only.start_image, None);
    }

    #[test]
    fn out_of_range_settings_are_named() {
        let ok = SampleRequest::official(ModelArch::Wan22_14bI2v, "x", Some("a.png".into()));
        assert!(ok.validate().is_ok());
        assert_eq!(ok.latent_grid(), [21, 60, 104]);
        let cases: [(&str, SampleRequest); 5] = [
            (
                "width",
                SampleRequest {
                    width: 840,
                    ..ok.clone()
                },
            ),
            (
                "num_frames",
                SampleRequest {
                    num_frames: 80,
                    ..ok.clone()
                },
            ),
            (
                "shift",
                SampleRequest {
                    shift: 0.0,
                    ..ok.clone()
                },
            ),
            (
                "guidance_scale_2",
                SampleRequest {
                    guidance_low: f64::NAN,
                    ..ok.clone()
                },
            ),
            (
                "format",
                SampleRequest {
                    format: SampleFormat::Png,
                    ..ok.clone()
                },
            ),
        ];
        for (setting, request) in cases {
            let err = request.validate().unwrap_err().to_string();
            assert!(err.contains(&format!("`{setting}`")), "{setting}: {err}");
        }
        let frames = SampleRequest {
            num_frames: 80,
            ..ok
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(frames.contains("use 77 or 81"), "{frames}");
    }
}
