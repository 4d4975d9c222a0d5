//! The Wan 2.2 variants wanlora trains, and every fact that differs between them, in one place
//! (the official values of Wan-Video/Wan2.2 `wan/configs/wan_{i2v,t2v}_A14B.py`, `wan_ti2v_5B.py`,
//! shared_config.py, and diffusers' model_index.json; wan-reference.md §3 and §11). The A14B variants are
//! the same 40-block DiT with two experts; they differ in what enters the patch embedding and in their
//! sampling recipe. TI2V-5B is one 30-block transformer on the Wan 2.2 VAE's 48-channel latents: it is the
//! trainer's one "high-noise" expert with boundary 0 (its window is every timestep).
//!
//! Code asks `arch.facts()` instead of testing for a variant, so a third variant is one more table row.

use crate::choice::{choice_serde, Choice};

/// The model family (`model.arch`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum ModelArch {
    /// Wan 2.2 image-to-video A14B (`wan22_14b_i2v`): the first frame conditions every step.
    #[default]
    Wan22_14bI2v,
    /// Wan 2.2 text-to-video A14B (`wan22_14b`): the prompt alone.
    Wan22_14b,
    /// Wan 2.2 TI2V-5B (`wan22_5b`): one transformer; text-to-video, or image-to-video with the start
    /// frame's clean latent in latent frame 0.
    Wan22_5b,
}

/// What one variant is made of and how it samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ArchFacts {
    /// AI Toolkit's `arch` value.
    pub name: &'static str,
    /// Short name for command lines (`--arch t2v`).
    pub short: &'static str,
    /// In words, for messages.
    pub label: &'static str,
    /// Channels of the patch embedding's input: the noisy latent (16), plus for I2V 4 mask channels and
    /// the 16-channel latent of the first frame.
    pub in_channels: u64,
    /// Whether `[mask | VAE(first frame, zeros…)]` is concatenated to the noisy latent (and samples need
    /// a start frame, `ctrl_img`).
    pub first_frame_condition: bool,
    /// Whether the start frame's clean latent replaces latent frame 0 (at timestep 0, out of the loss):
    /// TI2V-5B's image-to-video, without extra channels.
    pub first_frame_replacement: bool,
    /// Whether the model is one transformer (TI2V-5B) instead of two experts: the trainer's high-noise
    /// expert, with boundary 0, covers every timestep.
    pub one_transformer: bool,
    /// The high-noise expert takes t ≥ ratio·1000.
    pub boundary_ratio: f64,
    /// Official sampling shift.
    pub sample_shift: f64,
    /// Official CFG scale of the high-noise expert (`guidance_scale`).
    pub guidance_high: f64,
    /// Official CFG scale of the low-noise expert (`guidance_scale_2`).
    pub guidance_low: f64,
    /// Official sampling steps (UniPC).
    pub sample_steps: u32,
    /// Frame rate of the model's videos.
    pub fps: u32,
    /// AI Toolkit's bf16 diffusers copy.
    pub diffusers_repo: &'static str,
    /// Wan-AI's own diffusers repository.
    pub official_repo: &'static str,
    /// Pixels per transformer token side (VAE compression × 2×2 patch): bucket sizes are multiples.
    pub bucket_step: u32,
    /// ComfyUI's file names start with this: `<prefix>_high_noise_14B_fp16.safetensors`.
    pub comfy_prefix: &'static str,
    /// `ss_base_model_version` written into LoRA files.
    pub base_model_version: &'static str,
}

const I2V: ArchFacts = ArchFacts {
    name: "wan22_14b_i2v",
    short: "i2v",
    label: "Wan 2.2 I2V A14B (image-to-video)",
    in_channels: 36,
    first_frame_condition: true,
    first_frame_replacement: false,
    one_transformer: false,
    boundary_ratio: 0.9,
    sample_shift: 5.0,
    guidance_high: 3.5,
    guidance_low: 3.5,
    sample_steps: 40,
    fps: 16,
    diffusers_repo: "ai-toolkit/Wan2.2-I2V-A14B-Diffusers-bf16",
    official_repo: "Wan-AI/Wan2.2-I2V-A14B-Diffusers",
    bucket_step: 16,
    comfy_prefix: "wan2.2_i2v",
    base_model_version: "wan_2.2_14b_i2v",
};

const T2V: ArchFacts = ArchFacts {
    name: "wan22_14b",
    short: "t2v",
    label: "Wan 2.2 T2V A14B (text-to-video)",
    in_channels: 16,
    first_frame_condition: false,
    first_frame_replacement: false,
    one_transformer: false,
    boundary_ratio: 0.875,
    sample_shift: 12.0,
    guidance_high: 4.0,
    guidance_low: 3.0,
    sample_steps: 40,
    fps: 16,
    diffusers_repo: "ai-toolkit/Wan2.2-T2V-A14B-Diffusers-bf16",
    official_repo: "Wan-AI/Wan2.2-T2V-A14B-Diffusers",
    bucket_step: 16,
    comfy_prefix: "wan2.2_t2v",
    base_model_version: "wan_2.2_14b",
};

/// Wan-Video/Wan2.2 `wan/configs/wan_ti2v_5B.py`: shift 5, guidance 5, 50 steps, 24 fps; AI Toolkit's
/// `wan22_5b` (`Wan225bModel`): bucket divisibility 32, base model version `wan_2.2_5b`.
const TI2V: ArchFacts = ArchFacts {
    name: "wan22_5b",
    short: "ti2v",
    label: "Wan 2.2 TI2V-5B (text- and image-to-video)",
    in_channels: 48,
    first_frame_condition: false,
    first_frame_replacement: true,
    one_transformer: true,
    boundary_ratio: 0.0,
    sample_shift: 5.0,
    guidance_high: 5.0,
    guidance_low: 5.0,
    sample_steps: 50,
    fps: 24,
    diffusers_repo: "Wan-AI/Wan2.2-TI2V-5B-Diffusers",
    official_repo: "Wan-AI/Wan2.2-TI2V-5B-Diffusers",
    bucket_step: 32,
    comfy_prefix: "wan2.2_ti2v",
    base_model_version: "wan_2.2_5b",
};

impl ModelArch {
    pub const ALL: [ModelArch; 3] = [
        ModelArch::Wan22_14bI2v,
        ModelArch::Wan22_14b,
        ModelArch::Wan22_5b,
    ];

    pub const fn facts(self) -> &'static ArchFacts {
        match self {
            ModelArch::Wan22_14bI2v => &I2V,
            ModelArch::Wan22_14b => &T2V,
            ModelArch::Wan22_5b => &TI2V,
        }
    }

    /// AI Toolkit's spelling (`wan22_14b_i2v`, `wan22_14b`).
    pub fn as_str(self) -> &'static str {
        self.facts().name
    }

    /// From a command-line value: the short name (`i2v`, `t2v`) or AI Toolkit's.
    pub fn from_cli(value: &str) -> Option<ModelArch> {
        let v = value.trim().to_ascii_lowercase();
        ModelArch::ALL
            .into_iter()
            .find(|a| a.facts().short == v || a.facts().name == v)
    }

    /// Where this variant's experts come from, for "use these instead" messages.
    pub fn expert_sources(self) -> String {
        let f = self.facts();
        if f.one_transformer {
            return format!(
                "a diffusers repo such as {}, or ComfyUI's {}_5B_*.safetensors",
                f.diffusers_repo, f.comfy_prefix
            );
        }
        format!(
            "a diffusers repo such as {} (or {}), or ComfyUI's {p}_high_noise_14B_*.safetensors / \
             {p}_low_noise_14B_*.safetensors",
            f.diffusers_repo,
            f.official_repo,
            p = f.comfy_prefix
        )
    }
}

impl Choice for ModelArch {
    const SPELLINGS: &'static [(&'static str, Self)] = &[
        ("wan22_14b_i2v", ModelArch::Wan22_14bI2v),
        ("wan22_14b", ModelArch::Wan22_14b),
        ("wan22_5b", ModelArch::Wan22_5b),
    ];
    const REFUSED: &'static [(&'static str, &'static str)] = &[
        (
            "wan21",
            "Wan 2.1 is not supported; wanlora trains Wan 2.2 (wan22_14b_i2v, wan22_14b, wan22_5b)",
        ),
        (
            "wan21_i2v",
            "Wan 2.1 is not supported; wanlora trains Wan 2.2 (wan22_14b_i2v, wan22_14b, wan22_5b)",
        ),
    ];
}
choice_serde!(ModelArch);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn official_recipes() {
        let t2v = ModelArch::Wan22_14b.facts();
        assert_eq!(
            (t2v.in_channels, t2v.boundary_ratio, t2v.sample_shift),
            (16, 0.875, 12.0)
        );
        assert_eq!((t2v.guidance_high, t2v.guidance_low), (4.0, 3.0));
        assert!(!t2v.first_frame_condition);
        let i2v = ModelArch::Wan22_14bI2v.facts();
        assert_eq!(
            (i2v.in_channels, i2v.boundary_ratio, i2v.sample_shift),
            (36, 0.9, 5.0)
        );
        assert!(i2v.first_frame_condition);
        assert_eq!(ModelArch::from_cli("T2V"), Some(ModelArch::Wan22_14b));
        assert_eq!(
            ModelArch::from_cli("wan22_14b_i2v"),
            Some(ModelArch::Wan22_14bI2v)
        );
        assert_eq!(ModelArch::from_cli("5b"), None);
        let ti2v = ModelArch::Wan22_5b.facts();
        assert_eq!(
            (ti2v.in_channels, ti2v.boundary_ratio, ti2v.sample_shift),
            (48, 0.0, 5.0)
        );
        assert!(
            ti2v.one_transformer && ti2v.first_frame_replacement && !ti2v.first_frame_condition
        );
        assert_eq!((ti2v.fps, ti2v.bucket_step), (24, 32));
        assert_eq!(ModelArch::from_cli("ti2v"), Some(ModelArch::Wan22_5b));
        for a in ModelArch::ALL {
            assert_eq!(a.name(), a.as_str(), "serde spelling is the facts' name");
        }
    }
}
