//! `save`: how often and in which precision the LoRA files are written (AI Toolkit's `SaveConfig`).

use crate::choice::{choice_serde, Choice};
use crate::reader::{ai, Ctx, Neutral, Section, Unused, UnusedKey};
use serde::{Deserialize, Serialize};

/// Precision of the saved LoRA weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SaveDtype {
    #[default]
    Float16,
    Bf16,
    Float32,
}

impl Choice for SaveDtype {
    const SPELLINGS: &'static [(&'static str, Self)] = &[
        ("float16", SaveDtype::Float16),
        ("fp16", SaveDtype::Float16),
        ("half", SaveDtype::Float16),
        ("bf16", SaveDtype::Bf16),
        ("bfloat16", SaveDtype::Bf16),
        ("float32", SaveDtype::Float32),
        ("fp32", SaveDtype::Float32),
        ("float", SaveDtype::Float32),
    ];
    const IGNORE_CASE: bool = true;
}
choice_serde!(SaveDtype);

/// File format of the LoRA files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SaveFormat {
    #[default]
    Safetensors,
    /// AI Toolkit's UI writes `diffusers` into every job; for a LoRA AI Toolkit still writes
    /// .safetensors (the folder format is for full fine-tunes), and so does wanlora.
    Diffusers,
}

impl Choice for SaveFormat {
    const SPELLINGS: &'static [(&'static str, Self)] = &[
        ("safetensors", SaveFormat::Safetensors),
        ("diffusers", SaveFormat::Diffusers),
    ];
}
choice_serde!(SaveFormat);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SaveConfig {
    /// `save_every`: write both LoRA files every this many steps (and at the end). Default 1000.
    pub save_every: u32,
    /// `dtype`: precision of the saved weights. AI Toolkit's code default float16 (its UI: bf16).
    pub dtype: SaveDtype,
    /// `max_step_saves_to_keep`: step checkpoints kept (each is two files). Default 5.
    pub max_step_saves_to_keep: u32,
    /// `save_format`: always .safetensors for a LoRA; `diffusers` is accepted and means the same.
    pub save_format: SaveFormat,
}

impl Default for SaveConfig {
    fn default() -> Self {
        SaveConfig {
            save_every: 1000,
            dtype: SaveDtype::Float16,
            max_step_saves_to_keep: 5,
            save_format: SaveFormat::Safetensors,
        }
    }
}

pub(crate) fn read_save(s: &mut Section) -> SaveConfig {
    let d = SaveConfig::default();
    let save = SaveConfig {
        save_every: s.uint(
            "save_every",
            d.save_every,
            ai("Save both LoRA files every N steps (and at the end)"),
        ),
        dtype: s.choice("dtype", d.dtype, ai("Precision of the saved LoRA weights")),
        max_step_saves_to_keep: s.uint(
            "max_step_saves_to_keep",
            d.max_step_saves_to_keep,
            ai("How many step checkpoints to keep (each is a high- and a low-noise file)"),
        ),
        save_format: s.choice(
            "save_format",
            d.save_format,
            ai("LoRA files are always .safetensors; diffusers means the same for a LoRA"),
        ),
    };
    s.unused(SAVE_UNUSED);
    save
}

/// Keys of this section that wanlora reads but does not act on, and why.
const SAVE_UNUSED: &[UnusedKey] = &[
    ("push_to_hub", Unused::Refused(Neutral::Off), "uploading to the Hugging Face Hub is not implemented; upload the files from the output folder yourself"),
    ("hf_repo_id", Unused::Accepted, "only used with push_to_hub"),
    ("hf_private", Unused::Accepted, "only used with push_to_hub"),
];

/// The save section's own checks; `at` is its key path.
pub(crate) fn check_save(save: &SaveConfig, at: &str, ctx: &mut Ctx) {
    if save.save_every == 0 {
        ctx.error_at(
            &format!("{at}.save_every"),
            "save_every must be at least 1",
            "use e.g. 250",
        );
    }
    if save.save_format == SaveFormat::Diffusers {
        // AI Toolkit's UI writes `save_format: diffusers` into every job; it means the same there.
        ctx.note_at(
            &format!("{at}.save_format"),
            "LoRA files are always written as .safetensors; the diffusers format only applies to full fine-tunes (AI Toolkit does the same)",
            "",
        );
    }
}
