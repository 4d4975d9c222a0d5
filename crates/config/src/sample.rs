//! `sample`: the preview videos made during training (AI Toolkit's `SampleConfig` / `SampleItem`,
//! plus wanlora's second guidance scale, shift, start-frame resizing and output format).

use crate::checks::{check_frames, check_size};
use crate::choice::{choice_serde, Choice};
use crate::finding::Finding;
use crate::reader::{ai, ours, Ctx, Neutral, Section, Unused, UnusedKey, Written};
use crate::schema::KeyKind;
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sampler {
    /// First-order flow-matching Euler (what AI Toolkit always uses for Wan, whatever `sampler` says;
    /// so its default `ddpm` and the name `euler` mean this too).
    #[default]
    Flowmatch,
    /// UniPC (bh2, order 2), the official Wan 2.2 sampler.
    Unipc,
}

impl Choice for Sampler {
    const SPELLINGS: &'static [(&'static str, Self)] = &[
        ("flowmatch", Sampler::Flowmatch),
        ("euler", Sampler::Flowmatch),
        ("ddpm", Sampler::Flowmatch),
        ("unipc", Sampler::Unipc),
    ];
    const REFUSED: &'static [(&'static str, &'static str)] = &[
        ("euler_a", "ancestral Euler is not implemented for Wan"),
        ("ddim", "DDIM is not implemented for Wan"),
        ("dpmsolver", "DPM-Solver is not implemented for Wan"),
        ("dpm++", "DPM++ is not implemented for Wan"),
        ("lms", "LMS is not implemented for Wan"),
        ("pndm", "PNDM is not implemented for Wan"),
        ("heun", "Heun is not implemented for Wan"),
        ("lcm", "LCM is not implemented for Wan"),
    ];
    const IGNORE_CASE: bool = true;
}
choice_serde!(Sampler);

/// The sample file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleFormat {
    /// H.264 MP4 (plays in browsers); the default for videos.
    Mp4,
    /// Animated WebP (what AI Toolkit writes for videos).
    Webp,
    /// A still image; the default for one-frame samples.
    Jpg,
    Png,
}

impl Choice for SampleFormat {
    const SPELLINGS: &'static [(&'static str, Self)] = &[
        ("mp4", SampleFormat::Mp4),
        ("webp", SampleFormat::Webp),
        ("jpg", SampleFormat::Jpg),
        ("jpeg", SampleFormat::Jpg),
        ("png", SampleFormat::Png),
    ];
    const IGNORE_CASE: bool = true;
}
choice_serde!(SampleFormat);

/// How the start frame is fitted to the sample size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CtrlImgResize {
    /// Scale to cover, then crop the centre (keeps the aspect ratio).
    #[default]
    Crop,
    /// Stretch to width × height (AI Toolkit's behaviour).
    Stretch,
}

impl Choice for CtrlImgResize {
    const SPELLINGS: &'static [(&'static str, Self)] = &[
        ("crop", CtrlImgResize::Crop),
        ("stretch", CtrlImgResize::Stretch),
    ];
}
choice_serde!(CtrlImgResize);

/// One preview: a prompt and its start frame; unset fields take the `sample` section's values.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SampleItem {
    /// The prompt, with AI Toolkit's inline flags (`--n`, `--seed`, …) already moved into the fields.
    pub prompt: String,
    /// `ctrl_img` (alias `ctrl_img_1`): the start frame (required for I2V). Relative to the job file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ctrl_img: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub neg: Option<String>,
    /// A fixed seed for this sample (otherwise the section's seed, plus the index with `walk_seed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guidance_scale: Option<f64>,
    /// (wanlora) guidance of the low-noise expert for this sample.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guidance_scale_2: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample_steps: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fps: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_frames: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_multiplier: Option<f64>,
}

/// A sample with every setting decided.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResolvedSample {
    pub prompt: String,
    pub ctrl_img: Option<String>,
    pub width: u32,
    pub height: u32,
    pub neg: String,
    pub seed: u64,
    pub guidance_scale: f64,
    pub guidance_scale_2: f64,
    pub sample_steps: u32,
    pub fps: u32,
    pub num_frames: u32,
    pub network_multiplier: f64,
    pub format: SampleFormat,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SampleConfig {
    /// `sampler`: `flowmatch` (alias `euler`; AI Toolkit's `ddpm` means this for Wan) or `unipc`.
    pub sampler: Sampler,
    /// `sample_every`: sample every N steps. Default 100.
    pub sample_every: u32,
    /// `sample_start_step`: no samples before this step. Default 0.
    pub sample_start_step: u32,
    /// Default 512; a multiple of 16.
    pub width: u32,
    /// Default 512; a multiple of 16.
    pub height: u32,
    /// Negative prompt. Default ''.
    pub neg: String,
    /// Default 0.
    pub seed: u64,
    /// `walk_seed`: sample i uses seed + i.
    pub walk_seed: bool,
    /// `guidance_scale`: CFG scale of the high-noise expert. AI Toolkit's default 7 (its UI: 4; the
    /// official I2V value 3.5).
    pub guidance_scale: f64,
    /// `guidance_scale_2`: CFG scale of the low-noise expert. Absent: `guidance_scale`, as AI
    /// Toolkit's Wan 2.2 pipeline does (the official I2V recipe uses 3.5 for both).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guidance_scale_2: Option<f64>,
    /// `sample_steps`: denoising steps. Default 20.
    pub sample_steps: u32,
    /// `network_multiplier`: LoRA strength in previews. Default 1.
    pub network_multiplier: f64,
    /// `format` (wanlora's values): mp4 (default for videos) or webp; jpg (default) or png for one frame.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<SampleFormat>,
    /// `num_frames`: 4n+1. Default 1 (AI Toolkit's Wan UI: 41).
    pub num_frames: u32,
    /// Default 16, Wan's native rate.
    pub fps: u32,
    /// `shift` (wanlora): the sampling schedule's shift, σ' = shift·σ / (1 + (shift − 1)·σ). Default: the
    /// arch's official value, 5 for I2V, 12 for T2V.
    pub shift: f64,
    /// `ctrl_img_resize` (wanlora): `crop` (default) or `stretch` (AI Toolkit's behaviour).
    pub ctrl_img_resize: CtrlImgResize,
    /// `samples`; AI Toolkit's legacy `prompts` list of strings is read into this.
    pub samples: Vec<SampleItem>,
}

impl Default for SampleConfig {
    fn default() -> Self {
        SampleConfig {
            sampler: Sampler::Flowmatch,
            sample_every: 100,
            sample_start_step: 0,
            width: 512,
            height: 512,
            neg: String::new(),
            seed: 0,
            walk_seed: false,
            guidance_scale: 7.0,
            guidance_scale_2: None,
            sample_steps: 20,
            network_multiplier: 1.0,
            format: None,
            num_frames: 1,
            fps: 16,
            shift: 5.0,
            ctrl_img_resize: CtrlImgResize::Crop,
            samples: Vec::new(),
        }
    }
}

impl SampleConfig {
    /// The settings of sample `index`, with the section's values where the item has none.
    /// Seeds: the item's own, else `seed` (+ index with `walk_seed`). Returns None past the end.
    pub fn resolve(&self, index: usize) -> Option<ResolvedSample> {
        let item = self.samples.get(index)?;
        let num_frames = item.num_frames.unwrap_or(self.num_frames);
        let walked = if self.walk_seed { index as u64 } else { 0 };
        let guidance_scale = item.guidance_scale.unwrap_or(self.guidance_scale);
        Some(ResolvedSample {
            prompt: item.prompt.clone(),
            ctrl_img: item.ctrl_img.clone(),
            width: item.width.unwrap_or(self.width),
            height: item.height.unwrap_or(self.height),
            neg: item.neg.clone().unwrap_or_else(|| self.neg.clone()),
            seed: item.seed.unwrap_or(self.seed.wrapping_add(walked)),
            guidance_scale,
            guidance_scale_2: item
                .guidance_scale_2
                .or(self.guidance_scale_2)
                .unwrap_or(guidance_scale),
            sample_steps: item.sample_steps.unwrap_or(self.sample_steps),
            fps: item.fps.unwrap_or(self.fps),
            num_frames,
            network_multiplier: item.network_multiplier.unwrap_or(self.network_multiplier),
            format: self.format_for(num_frames),
        })
    }

    /// The file format of a sample with this many frames.
    pub fn format_for(&self, num_frames: u32) -> SampleFormat {
        match (self.format, num_frames > 1) {
            (Some(f @ (SampleFormat::Mp4 | SampleFormat::Webp)), true) => f,
            (_, true) => SampleFormat::Mp4,
            (Some(f @ (SampleFormat::Jpg | SampleFormat::Png)), false) => f,
            (_, false) => SampleFormat::Jpg,
        }
    }
}

/// Moves AI Toolkit's inline prompt flags (`"a cat --n blurry --seed 7"`) into the item's fields.
/// Like AI Toolkit, everything after `--` up to the next `--` belongs to that flag.
fn apply_prompt_flags(
    item: &mut SampleItem,
    key: &str,
    written: Option<&Written>,
    findings: &mut Vec<Finding>,
) {
    let mut parts = item.prompt.split("--");
    let prompt = parts.next().unwrap_or_default().trim().to_string();
    let flags: Vec<String> = parts.map(str::to_string).collect();
    if flags.is_empty() {
        return;
    }
    let (shown, pos) = written.map_or((key.to_string(), None), |w| (w.key.clone(), w.pos));
    let bad = |flag: &str, content: &str, what: &str| {
        Finding::error(
            shown.clone(),
            pos,
            format!("prompt flag `--{flag} {content}` needs {what}"),
            format!("write `--{flag}` followed by {what}, or set the field in the sample item"),
        )
    };
    for split in flags {
        let flag = split
            .split(' ')
            .next()
            .unwrap_or_default()
            .trim()
            .to_string();
        let content = split[flag.len()..].trim().to_string();
        match flag.as_str() {
            "n" => item.neg = Some(content),
            "w" => match content.parse() {
                Ok(v) => item.width = Some(v),
                Err(_) => findings.push(bad(&flag, &content, "a whole number")),
            },
            "h" => match content.parse() {
                Ok(v) => item.height = Some(v),
                Err(_) => findings.push(bad(&flag, &content, "a whole number")),
            },
            "d" | "seed" => match content.parse() {
                Ok(v) => item.seed = Some(v),
                Err(_) => findings.push(bad(&flag, &content, "a whole number")),
            },
            "l" | "cfg" => match content.parse() {
                Ok(v) => item.guidance_scale = Some(v),
                Err(_) => findings.push(bad(&flag, &content, "a number")),
            },
            "s" | "steps" => match content.parse() {
                Ok(v) => item.sample_steps = Some(v),
                Err(_) => findings.push(bad(&flag, &content, "a whole number")),
            },
            "m" | "network_multiplier" => match content.parse() {
                Ok(v) => item.network_multiplier = Some(v),
                Err(_) => findings.push(bad(&flag, &content, "a number")),
            },
            "frames" | "num_frames" => match content.parse() {
                Ok(v) => item.num_frames = Some(v),
                Err(_) => findings.push(bad(&flag, &content, "a whole number")),
            },
            "fps" => match content.parse() {
                Ok(v) => item.fps = Some(v),
                Err(_) => findings.push(bad(&flag, &content, "a whole number")),
            },
            "ctrl_img" => item.ctrl_img = Some(content),
            "ctrl_idx" => {}
            "p2" | "n2" | "gr" | "a" | "ref" | "ev" | "extra_values" => {
                findings.push(Finding::warning(
                    shown.clone(),
                    pos,
                    format!("prompt flag `--{flag}` has no effect for Wan"),
                    format!("remove `--{flag} {content}` from the prompt"),
                ))
            }
            _ => findings.push(Finding::warning(
                shown.clone(),
                pos,
                format!("unknown prompt flag `--{flag}`; it is dropped from the prompt"),
                "known flags: --n --w --h --seed --cfg --steps --m --frames --fps --ctrl_img",
            )),
        }
    }
    item.prompt = prompt;
}

fn read_item(s: &mut Section) -> SampleItem {
    let mut item = SampleItem {
        prompt: s.text(
            "prompt",
            "",
            ai("The prompt (inline flags such as --n and --seed are understood)"),
        ),
        ctrl_img: s.opt_text(
            &["ctrl_img", "ctrl_img_1"],
            ai("Start frame image (required for I2V)"),
        ),
        width: s.opt_uint("width", ai("Width override")),
        height: s.opt_uint("height", ai("Height override")),
        neg: s.opt_text("neg", ai("Negative prompt override")),
        seed: s.opt_uint64("seed", ai("Seed of this sample")),
        guidance_scale: s.opt_float("guidance_scale", ai("High-noise expert CFG override")),
        guidance_scale_2: s.opt_float("guidance_scale_2", ours("Low-noise expert CFG override")),
        sample_steps: s.opt_uint("sample_steps", ai("Steps override")),
        fps: s.opt_uint("fps", ai("Frame rate override")),
        num_frames: s.opt_uint("num_frames", ai("Frame count override (4n+1)")),
        network_multiplier: s.opt_float("network_multiplier", ai("LoRA strength override")),
    };
    s.unused(ITEM_UNUSED);
    let key = s.key_path("prompt");
    let written = s.ctx().written.get(&key).cloned();
    let mut findings = Vec::new();
    apply_prompt_flags(&mut item, &key, written.as_ref(), &mut findings);
    s.ctx().findings.extend(findings);
    item
}

pub(crate) fn read_sample(s: &mut Section) -> SampleConfig {
    let d = SampleConfig::default();
    let mut sample = SampleConfig {
        sampler: s.choice("sampler", d.sampler, ai("flowmatch (Euler) or unipc")),
        sample_every: s.uint("sample_every", d.sample_every, ai("Sample every N steps")),
        sample_start_step: s.uint(
            "sample_start_step",
            d.sample_start_step,
            ai("No samples before this step"),
        ),
        width: s.uint("width", d.width, ai("Sample width, a multiple of 16")),
        height: s.uint("height", d.height, ai("Sample height, a multiple of 16")),
        neg: s.text("neg", &d.neg, ai("Negative prompt")),
        seed: s.uint64("seed", d.seed, ai("Seed of the first sample")),
        walk_seed: s.bool("walk_seed", d.walk_seed, ai("Sample i uses seed + i")),
        guidance_scale: s.float(
            "guidance_scale",
            d.guidance_scale,
            ai("CFG scale of the high-noise expert"),
        ),
        guidance_scale_2: s.opt_float(
            "guidance_scale_2",
            ours("CFG scale of the low-noise expert (absent: guidance_scale, as AI Toolkit)"),
        ),
        sample_steps: s.uint("sample_steps", d.sample_steps, ai("Denoising steps")),
        network_multiplier: s.float(
            "network_multiplier",
            d.network_multiplier,
            ai("LoRA strength in previews"),
        ),
        format: s.opt_choice(
            "format",
            ours("mp4 or webp for videos, jpg or png for one frame"),
        ),
        num_frames: s.uint("num_frames", d.num_frames, ai("Frames per sample, 4n+1")),
        fps: s.uint("fps", d.fps, ai("Frame rate of the sample video")),
        shift: s.float(
            "shift",
            d.shift,
            ours("Shift of the sampling schedule (default: 5 for I2V, 12 for T2V)"),
        ),
        ctrl_img_resize: s.choice(
            "ctrl_img_resize",
            d.ctrl_img_resize,
            ours("Fit the start frame by centre crop or stretch"),
        ),
        samples: s.items(
            "samples",
            ai("Previews: prompt and start frame each"),
            |item, _| read_item(item),
        ),
    };

    // AI Toolkit's legacy form: a list of prompt strings, used only when `samples` is absent.
    let prompts_path = s.key_path("prompts");
    let samples_path = s.key_path("samples");
    if let Some(node) = s.raw(
        "prompts",
        KeyKind::TextList,
        json!([]),
        ai("Legacy list of prompt strings (read into samples)"),
    ) {
        let prompts: Vec<&crate::node::Node> = match &node.value {
            crate::node::Value::Seq(items) => items.iter().collect(),
            _ => vec![node],
        };
        if !sample.samples.is_empty() {
            s.ctx().warning_at(
                &prompts_path,
                "both `prompts` and `samples` are set; `prompts` is ignored (as in AI Toolkit)",
                "move these prompts into `samples`, each with its ctrl_img",
            );
        } else {
            for (index, prompt) in prompts.into_iter().enumerate() {
                let canonical = format!("{samples_path}[{index}]");
                let written = Written {
                    key: format!("{prompts_path}[{index}]"),
                    pos: prompt.pos,
                };
                s.ctx().written.insert(canonical.clone(), written.clone());
                s.ctx()
                    .written
                    .insert(format!("{canonical}.prompt"), written.clone());
                let Some(text) = prompt.as_str() else {
                    s.invalid(
                        "prompts".into(),
                        prompt,
                        format!("expected a prompt text, found {}", prompt.show()),
                        "write each prompt as text".into(),
                    );
                    continue;
                };
                let mut item = SampleItem {
                    prompt: text.to_string(),
                    ..SampleItem::default()
                };
                let mut findings = Vec::new();
                apply_prompt_flags(&mut item, &canonical, Some(&written), &mut findings);
                s.ctx().findings.extend(findings);
                sample.samples.push(item);
            }
        }
    }

    s.unused(SAMPLE_UNUSED);
    sample
}

/// Keys of this section that wanlora reads but does not act on, and why.
const ITEM_UNUSED: &[UnusedKey] = &[
    ("ctrl_idx", Unused::Accepted, "one start frame only"),
    (
        "ctrl_img_2",
        Unused::Refused(Neutral::Off),
        "Wan 2.2 I2V takes one start frame",
    ),
    (
        "ctrl_img_3",
        Unused::Refused(Neutral::Off),
        "Wan 2.2 I2V takes one start frame",
    ),
    (
        "do_cfg_norm",
        Unused::Refused(Neutral::Off),
        "CFG normalisation is not implemented",
    ),
];

/// Keys of this section that wanlora reads but does not act on, and why.
const SAMPLE_UNUSED: &[UnusedKey] = &[
    (
        "guidance_rescale",
        Unused::Refused(Neutral::Number(0.0)),
        "guidance rescale is not implemented for Wan",
    ),
    (
        "adapter_conditioning_scale",
        Unused::Accepted,
        "no adapters in Wan",
    ),
    ("refiner_start_at", Unused::Accepted, "Wan has no refiner"),
    ("extra_values", Unused::Accepted, "not used by Wan"),
    (
        "do_cfg_norm",
        Unused::Refused(Neutral::Off),
        "CFG normalisation is not implemented",
    ),
];

/// The sample section's own checks; `sp` is its key path, `arch` the job's model (for the
/// official values the hints name).
pub(crate) fn check_sample(
    sample: &SampleConfig,
    sp: &str,
    arch: &crate::arch::ArchFacts,
    ctx: &mut Ctx,
) {
    check_size(sample.width, &format!("{sp}.width"), ctx);
    check_size(sample.height, &format!("{sp}.height"), ctx);
    check_frames(sample.num_frames, &format!("{sp}.num_frames"), ctx);
    if sample.sample_every == 0 {
        ctx.error_at(
            &format!("{sp}.sample_every"),
            "sample_every must be at least 1",
            "use e.g. 250, or train.disable_sampling: true",
        );
    }
    if sample.sample_steps == 0 {
        ctx.error_at(
            &format!("{sp}.sample_steps"),
            "sample_steps must be at least 1",
            "use 25 (flowmatch) or 40 (unipc)",
        );
    }
    if sample.fps == 0 {
        ctx.error_at(
            &format!("{sp}.fps"),
            "fps must be at least 1",
            "use 16, Wan's frame rate",
        );
    }
    if sample.shift <= 0.0 {
        ctx.error_at(
            &format!("{sp}.shift"),
            "shift must be above 0",
            format!(
                "use {}, the official value of {}",
                arch.sample_shift, arch.label
            ),
        );
    }
    for (key, scale, official) in [
        (
            "guidance_scale",
            Some(sample.guidance_scale),
            arch.guidance_high,
        ),
        (
            "guidance_scale_2",
            sample.guidance_scale_2,
            arch.guidance_low,
        ),
    ] {
        let Some(scale) = scale else { continue };
        if scale <= 0.0 {
            ctx.error_at(
                &format!("{sp}.{key}"),
                format!("{key} {scale} must be above 0 (1 means no guidance)"),
                format!("use {official}, the official value of {}", arch.label),
            );
        }
    }
    if let Some(format) = sample.format {
        let video = sample.num_frames > 1;
        if video && matches!(format, SampleFormat::Jpg | SampleFormat::Png) {
            ctx.warning_at(
                &format!("{sp}.format"),
                "a video cannot be a still image; samples are written as mp4",
                "use format: mp4 or webp",
            );
        }
    }
}

/// Sample `i`'s own checks (its start frame is checked with the model's arch in validate.rs).
pub(crate) fn check_item(item: &SampleItem, i: usize, at: &str, ctx: &mut Ctx) {
    if item.prompt.trim().is_empty() {
        ctx.error_at(
            &format!("{at}.prompt"),
            format!("sample {i} has no prompt"),
            "write the prompt of this sample",
        );
    }
    if let Some(w) = item.width {
        check_size(w, &format!("{at}.width"), ctx);
    }
    if let Some(h) = item.height {
        check_size(h, &format!("{at}.height"), ctx);
    }
    if let Some(n) = item.num_frames {
        check_frames(n, &format!("{at}.num_frames"), ctx);
    }
    if item.sample_steps == Some(0) {
        ctx.error_at(
            &format!("{at}.sample_steps"),
            "sample_steps must be at least 1",
            "remove it to use the section's value",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_flags_move_into_fields() {
        let mut item = SampleItem {
            prompt: "a dog runs --n blurry, static --seed 7 --cfg 4.5 --frames 33 --w 832 --h 480"
                .into(),
            ..SampleItem::default()
        };
        let mut findings = Vec::new();
        apply_prompt_flags(&mut item, "k", None, &mut findings);
        assert!(findings.is_empty(), "{findings:?}");
        assert_eq!(item.prompt, "a dog runs");
        assert_eq!(item.neg.as_deref(), Some("blurry, static"));
        assert_eq!(item.seed, Some(7));
        assert_eq!(item.guidance_scale, Some(4.5));
        assert_eq!(item.num_frames, Some(33));
        assert_eq!((item.width, item.height), (Some(832), Some(480)));
    }

    #[test]
    fn bad_flag_values_are_errors() {
        let mut item = SampleItem {
            prompt: "x --seed seven".into(),
            ..SampleItem::default()
        };
        let mut findings = Vec::new();
        apply_prompt_flags(&mut item, "k", None, &mut findings);
        assert_eq!(findings.len(), 1);
        assert!(findings[0].is_error());
        assert!(findings[0].message.contains("--seed seven"));
    }

    #[test]
    fn resolve_takes_section_values_and_walks_seeds() {
        let sample = SampleConfig {
            seed: 42,
            walk_seed: true,
            num_frames: 41,
            samples: vec![
                SampleItem {
                    prompt: "a".into(),
                    ..SampleItem::default()
                },
                SampleItem {
                    prompt: "b".into(),
                    width: Some(832),
                    ..SampleItem::default()
                },
                SampleItem {
                    prompt: "c".into(),
                    seed: Some(5),
                    ..SampleItem::default()
                },
            ],
            ..SampleConfig::default()
        };
        let seeds: Vec<u64> = (0..3)
            .filter_map(|i| sample.resolve(i))
            .map(|r| r.seed)
            .collect();
        assert_eq!(seeds, vec![42, 43, 5]);
        let second = sample.resolve(1).expect("item 1");
        assert_eq!((second.width, second.height), (832, 512));
        // No guidance_scale_2 anywhere: the low-noise expert follows guidance_scale (AI Toolkit).
        assert_eq!(second.guidance_scale_2, second.guidance_scale);
        let mut item_gs = sample.clone();
        item_gs.samples[1].guidance_scale = Some(6.0);
        assert_eq!(item_gs.resolve(1).unwrap().guidance_scale_2, 6.0);
        item_gs.guidance_scale_2 = Some(2.5);
        assert_eq!(item_gs.resolve(1).unwrap().guidance_scale_2, 2.5);
        assert_eq!(second.format, SampleFormat::Mp4);
        assert!(sample.resolve(3).is_none());
    }
}
