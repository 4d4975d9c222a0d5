//! What a job asks for: the `model.*` keys that name weights, and which parts of the model the job
//! needs at which moment.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::Path;

use crate::source::Source;

/// The `model.*` keys of a job that say where the weights come from. Plain data: the config crate
/// maps a parsed job onto it. Empty strings count as unset.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ModelSpec {
    /// Diffusers folder or Hugging Face repo id (`org/name[@revision]`) holding the whole pipeline.
    pub name_or_path: Option<String>,
    /// Where the text encoder, tokenizer and VAE come from when not given one by one
    /// (AI Toolkit's key; defaults to `name_or_path`).
    pub extras_name_or_path: Option<String>,
    /// umT5 text encoder: a single safetensors file, a folder, or a repo id.
    pub te_name_or_path: Option<String>,
    /// Wan 2.1 VAE: a single safetensors file, a folder, or a repo id.
    pub vae_path: Option<String>,
    /// Folder (or repo) with `tokenizer.json`, or the `tokenizer.json` file itself.
    pub tokenizer_path: Option<String>,
    /// High-noise expert: a single file (ComfyUI), a folder of shards, or a repo id.
    pub high_noise_model_path: Option<String>,
    /// Low-noise expert: a single file (ComfyUI), a folder of shards, or a repo id.
    pub low_noise_model_path: Option<String>,
    pub train_high_noise: bool,
    pub train_low_noise: bool,
    /// Sample previews run both experts, so the untrained one is needed when sampling runs.
    pub need_untrained_expert_for_samples: bool,
}

/// One separately located part of the Wan 2.2 I2V A14B pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Component {
    /// `transformer/` in diffusers layout: denoises the high-noise part of the schedule.
    HighNoiseExpert,
    /// `transformer_2/` in diffusers layout: denoises the low-noise part of the schedule.
    LowNoiseExpert,
    TextEncoder,
    Tokenizer,
    Vae,
}

impl Component {
    pub const ALL: [Component; 5] = [
        Component::HighNoiseExpert,
        Component::LowNoiseExpert,
        Component::TextEncoder,
        Component::Tokenizer,
        Component::Vae,
    ];

    /// Words for messages.
    pub fn label(self) -> &'static str {
        match self {
            Component::HighNoiseExpert => "high-noise expert",
            Component::LowNoiseExpert => "low-noise expert",
            Component::TextEncoder => "text encoder",
            Component::Tokenizer => "tokenizer",
            Component::Vae => "VAE",
        }
    }

    /// The job key that points at this component alone.
    pub fn override_key(self) -> &'static str {
        match self {
            Component::HighNoiseExpert => "model.high_noise_model_path",
            Component::LowNoiseExpert => "model.low_noise_model_path",
            Component::TextEncoder => "model.te_name_or_path",
            Component::Tokenizer => "model.tokenizer_path",
            Component::Vae => "model.vae_path",
        }
    }

    /// Sub-folders of a pipeline (diffusers first, then the official Wan layout) that hold it.
    pub fn subfolders(self) -> &'static [&'static str] {
        match self {
            Component::HighNoiseExpert => &["transformer", "high_noise_model"],
            Component::LowNoiseExpert => &["transformer_2", "low_noise_model"],
            Component::TextEncoder => &["text_encoder"],
            Component::Tokenizer => &["tokenizer", "google/umt5-xxl"],
            Component::Vae => &["vae"],
        }
    }

    pub fn is_expert(self) -> bool {
        matches!(self, Component::HighNoiseExpert | Component::LowNoiseExpert)
    }

    /// Whether the component is a set of safetensors weights (everything but the tokenizer).
    pub fn has_weights(self) -> bool {
        self != Component::Tokenizer
    }
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// When a job needs a component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Need {
    /// Before the first step: trained experts, text encoder, tokenizer, VAE.
    Training,
    /// Only when sample previews run (the expert that is not trained).
    Samples,
    /// Never: an untrained expert when previews don't need it.
    Unused,
}

impl fmt::Display for Need {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Need::Training => "for training",
            Need::Samples => "for samples only",
            Need::Unused => "not needed",
        })
    }
}

/// Which components a fetch brings in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// What training needs before its first step.
    Training,
    /// What sample previews need on top of training (the untrained expert).
    Samples,
    /// Both, e.g. `wanlora models fetch` ahead of time.
    Everything,
}

impl Stage {
    pub fn includes(self, need: Need) -> bool {
        match (self, need) {
            (_, Need::Unused) => false,
            (Stage::Everything, _) => true,
            (Stage::Training, Need::Training) => true,
            (Stage::Samples, Need::Samples) => true,
            _ => false,
        }
    }
}

/// One place a component may come from: the job key and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Candidate {
    pub key: &'static str,
    pub value: String,
    /// The value names the component itself (a file, or a folder/repo whose root may hold the
    /// weights); otherwise it names a pipeline and only the component's sub-folders count.
    pub names_component: bool,
    /// Skip this candidate quietly when it has no such component (the tokenizer next to a text
    /// encoder is a bonus, not a promise).
    pub optional: bool,
}

fn set(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

impl ModelSpec {
    /// When the job needs `component`.
    pub fn need(&self, component: Component) -> Need {
        let expert_need = |trained: bool| {
            if trained {
                Need::Training
            } else if self.need_untrained_expert_for_samples {
                Need::Samples
            } else {
                Need::Unused
            }
        };
        match component {
            Component::HighNoiseExpert => expert_need(self.train_high_noise),
            Component::LowNoiseExpert => expert_need(self.train_low_noise),
            Component::TextEncoder | Component::Tokenizer | Component::Vae => Need::Training,
        }
    }

    /// The places `component` may come from, most specific first. An explicit per-component key
    /// wins outright; `extras_name_or_path`, when set, replaces `name_or_path` for the text
    /// encoder, tokenizer and VAE (as in AI Toolkit).
    pub(crate) fn candidates(&self, component: Component) -> Vec<Candidate> {
        let own = |key: &'static str, value: &Option<String>| {
            set(value).map(|v| Candidate {
                key,
                value: v.to_string(),
                names_component: true,
                optional: false,
            })
        };
        let pipeline = |key: &'static str, value: &Option<String>| {
            set(value).map(|v| Candidate {
                key,
                value: v.to_string(),
                names_component: false,
                optional: false,
            })
        };
        let root = pipeline("model.name_or_path", &self.name_or_path);
        let extras = pipeline("model.extras_name_or_path", &self.extras_name_or_path);
        let extras_or_root = extras.or(root.clone());
        let first = |own: Option<Candidate>, fallback: Option<Candidate>| -> Vec<Candidate> {
            own.or(fallback).into_iter().collect()
        };
        match component {
            Component::HighNoiseExpert => first(
                own("model.high_noise_model_path", &self.high_noise_model_path),
                root,
            ),
            Component::LowNoiseExpert => first(
                own("model.low_noise_model_path", &self.low_noise_model_path),
                root,
            ),
            Component::TextEncoder => first(
                own("model.te_name_or_path", &self.te_name_or_path),
                extras_or_root,
            ),
            Component::Vae => first(own("model.vae_path", &self.vae_path), extras_or_root),
            Component::Tokenizer => {
                if let Some(c) = own("model.tokenizer_path", &self.tokenizer_path) {
                    return vec![c];
                }
                let mut out = Vec::new();
                if let Some(mut te) = own("model.te_name_or_path", &self.te_name_or_path) {
                    te.optional = true;
                    out.push(te);
                }
                out.extend(extras_or_root);
                out
            }
        }
    }

    /// The spec with relative local paths made relative to `base_dir` (the job file's folder), as
    /// dataset folders are. A value that exists under `base_dir`, or is written as a path
    /// (`./…`, `../…`, a bare file name), is local; `org/name…` values stay repo ids.
    pub fn relative_to(&self, base_dir: &Path) -> ModelSpec {
        let fix = |value: &Option<String>| -> Option<String> {
            let v = set(value)?;
            let path = Path::new(v);
            if path.is_absolute() || v.starts_with('~') {
                return Some(v.to_string());
            }
            let joined = base_dir.join(path);
            let local = joined.exists() || matches!(Source::parse(v, None), Source::Local(_));
            Some(if local {
                joined.display().to_string()
            } else {
                v.to_string()
            })
        };
        ModelSpec {
            name_or_path: fix(&self.name_or_path),
            extras_name_or_path: fix(&self.extras_name_or_path),
            te_name_or_path: fix(&self.te_name_or_path),
            vae_path: fix(&self.vae_path),
            tokenizer_path: fix(&self.tokenizer_path),
            high_noise_model_path: fix(&self.high_noise_model_path),
            low_noise_model_path: fix(&self.low_noise_model_path),
            ..self.clone()
        }
    }

    /// Problems with the spec itself, before anything is looked up.
    pub fn validate(&self) -> Result<(), String> {
        if !self.train_high_noise && !self.train_low_noise {
            return Err(
                "model: train_high_noise and train_low_noise are both false, so there is \
                        nothing to train; set at least one of them to true"
                    .to_string(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ModelSpec {
        ModelSpec {
            name_or_path: Some("org/pipeline".into()),
            train_high_noise: true,
            train_low_noise: false,
            ..ModelSpec::default()
        }
    }

    #[test]
    fn untrained_expert_is_needed_only_for_samples_when_asked() {
        let mut s = spec();
        assert_eq!(s.need(Component::HighNoiseExpert), Need::Training);
        assert_eq!(s.need(Component::LowNoiseExpert), Need::Unused);
        s.need_untrained_expert_for_samples = true;
        assert_eq!(s.need(Component::LowNoiseExpert), Need::Samples);
        assert!(Stage::Samples.includes(Need::Samples));
        assert!(!Stage::Training.includes(Need::Samples));
        assert!(Stage::Everything.includes(Need::Samples));
        assert!(!Stage::Everything.includes(Need::Unused));
    }

    #[test]
    fn per_component_keys_win_and_extras_replace_the_pipeline_for_te_and_vae() {
        let mut s = spec();
        s.extras_name_or_path = Some("org/extras".into());
        s.vae_path = Some("/m/wan_2.1_vae.safetensors".into());
        s.high_noise_model_path = Some("  ".into());
        let vae = s.candidates(Component::Vae);
        assert_eq!(vae.len(), 1);
        assert_eq!(vae[0].key, "model.vae_path");
        assert!(vae[0].names_component);
        let te = s.candidates(Component::TextEncoder);
        assert_eq!(te[0].key, "model.extras_name_or_path");
        assert!(!te[0].names_component);
        // A blank override counts as unset.
        let high = s.candidates(Component::HighNoiseExpert);
        assert_eq!(high[0].key, "model.name_or_path");
    }

    #[test]
    fn tokenizer_tries_the_text_encoder_source_first_but_optionally() {
        let mut s = spec();
        s.te_name_or_path = Some("org/umt5".into());
        let tok = s.candidates(Component::Tokenizer);
        assert_eq!(tok.len(), 2);
        assert_eq!(tok[0].key, "model.te_name_or_path");
        assert!(tok[0].optional);
        assert_eq!(tok[1].key, "model.name_or_path");
        s.tokenizer_path = Some("/tok".into());
        assert_eq!(s.candidates(Component::Tokenizer).len(), 1);
    }

    #[test]
    fn relative_paths_follow_the_job_folder_and_repo_ids_stay() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("models/wan")).unwrap();
        let s = ModelSpec {
            name_or_path: Some("models/wan".into()),
            extras_name_or_path: Some("ai-toolkit/Wan2.2-I2V-A14B-Diffusers-bf16".into()),
            vae_path: Some("wan_2.1_vae.safetensors".into()),
            te_name_or_path: Some("/abs/umt5.safetensors".into()),
            tokenizer_path: Some("../tok".into()),
            ..spec()
        }
        .relative_to(dir.path());
        let under = |p: &str| Some(dir.path().join(p).display().to_string());
        assert_eq!(s.name_or_path, under("models/wan"));
        assert_eq!(
            s.extras_name_or_path.as_deref(),
            Some("ai-toolkit/Wan2.2-I2V-A14B-Diffusers-bf16")
        );
        assert_eq!(s.vae_path, under("wan_2.1_vae.safetensors"));
        assert_eq!(s.te_name_or_path.as_deref(), Some("/abs/umt5.safetensors"));
        assert_eq!(s.tokenizer_path, under("../tok"));
        assert!(s.train_high_noise);
    }

    #[test]
    fn training_nothing_is_rejected() {
        let mut s = spec();
        assert!(s.validate().is_ok());
        s.train_high_noise = false;
        let err = s.validate().unwrap_err();
        assert!(err.contains("train_high_noise"), "{err}");
    }
}
