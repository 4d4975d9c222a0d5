//! Where the models come from: files the hub crate resolved (local folders, the Hugging Face cache,
//! downloads, ComfyUI single files), or random weights made in place on the device
//! (`name_or_path: wanlora:random-a14b`), so benchmarks need no downloaded model and write nothing.

use std::path::{Path, PathBuf};
use tch::{Device, Kind};

use crate::experts::Expert;
use crate::TrainError;
use wanlora_config::ModelArch;
use wanlora_hub::{CheckOptions, Component, HubConfig, ModelSpec, ResolvedModel, Stage};
use wanlora_models::tokenizer::Tokenizer;
use wanlora_models::transformer::{
    LoadOptions, TransformerConfig, TransformerWeights, WanTransformer,
};
use wanlora_models::umt5::{Umt5Config, Umt5Encoder};
use wanlora_models::vae::{Vae, VaeConfig};
use wanlora_torch::weights::{RandomWeights, WeightSet};

/// Model files resolved (and fetched) by the hub crate.
pub struct FileSource {
    pub spec: ModelSpec,
    pub hub: HubConfig,
    pub resolved: ResolvedModel,
    /// The header checks: the job's arch, and the real A14B sizes unless the model is the demo's.
    pub checks: CheckOptions,
}

/// `model.name_or_path` that selects random A14B-shaped weights made on the device.
pub const RANDOM_A14B: &str = "wanlora:random-a14b";

pub enum ModelSource {
    Files(Box<FileSource>),
    /// Random weights shaped like `arch`'s experts.
    Random {
        seed: i64,
        tokenizer: PathBuf,
        arch: ModelArch,
    },
}

impl ModelSource {
    /// Resolves and (when needed) downloads what training needs, checking that the experts are
    /// `arch`'s and (except for the demo's tiny model) have the real A14B dimensions.
    pub fn for_training(
        spec: ModelSpec,
        arch: ModelArch,
        hub: HubConfig,
        work_dir: &Path,
    ) -> Result<ModelSource, TrainError> {
        if spec.name_or_path.as_deref() == Some(RANDOM_A14B) {
            let tokenizer = work_dir.join("random-tokenizer.json");
            wanlora_torch::weights::write_atomic(
                &tokenizer,
                crate::tiny::tokenizer_json(&[]).as_bytes(),
            )?;
            return Ok(ModelSource::Random {
                seed: 1,
                tokenizer,
                arch,
            });
        }
        let checks = CheckOptions {
            exact_sizes: !is_tiny(&spec, &hub),
            arch,
        };
        let resolved = wanlora_hub::fetch(&spec, &hub, Stage::Training, &checks)?;
        let reports = wanlora_hub::check_model(&resolved, Stage::Training, &checks)?;
        tracing::debug!("model checks: {reports:?}");
        Ok(ModelSource::Files(Box::new(FileSource {
            spec,
            hub,
            resolved,
            checks,
        })))
    }

    /// Makes sure the untrained expert is on disk (fetched only when previews first need it).
    pub fn prepare_samples(&mut self) -> Result<(), TrainError> {
        if let ModelSource::Files(f) = self {
            f.resolved = wanlora_hub::fetch(&f.spec, &f.hub, Stage::Samples, &f.checks)?;
        }
        Ok(())
    }

    fn path(&self, component: Component) -> Result<PathBuf, TrainError> {
        match self {
            ModelSource::Files(f) => f
                .resolved
                .component(component)
                .and_then(|c| c.weights_path())
                .ok_or_else(|| {
                    TrainError::Setup(format!(
                        "{component:?}: no weights on disk (run `wanlora models JOB.yaml`)"
                    ))
                }),
            ModelSource::Random { .. } => {
                Err(TrainError::Setup("random source has no files".into()))
            }
        }
    }

    fn config_file(&self, component: Component) -> Option<PathBuf> {
        match self {
            ModelSource::Files(f) => f
                .resolved
                .component(component)
                .and_then(|c| c.config_file()),
            ModelSource::Random { .. } => None,
        }
    }

    pub fn transformer(
        &self,
        expert: Expert,
        kind: Kind,
        device: Device,
        options: &LoadOptions,
    ) -> Result<WanTransformer, TrainError> {
        match self {
            ModelSource::Random { seed, arch, .. } => Ok(WanTransformer::load_with(
                &RandomWeights {
                    std: 0.02,
                    seed: *seed + expert as i64,
                },
                Some(TransformerConfig::wan22_a14b(
                    arch.facts().in_channels as i64,
                )),
                kind,
                device,
                options,
            )?),
            ModelSource::Files(_) => {
                let component = match expert {
                    Expert::High => Component::HighNoiseExpert,
                    Expert::Low => Component::LowNoiseExpert,
                };
                let path = self.path(component)?;
                // A diffusers folder has its config.json; a single file may have one beside it.
                let beside = path
                    .parent()
                    .map(|d| d.join("config.json"))
                    .filter(|c| path.is_file() && c.exists());
                let cfg = match self.config_file(component).or(beside) {
                    Some(c) => Some(TransformerConfig::from_json_file(&c)?),
                    None => None,
                };
                let weights = TransformerWeights::new(WeightSet::open(&path)?)?;
                Ok(WanTransformer::load_with(
                    &weights, cfg, kind, device, options,
                )?)
            }
        }
    }

    pub fn vae(&self, kind: Kind, device: Device) -> Result<Vae, TrainError> {
        match self {
            ModelSource::Random { seed, .. } => Ok(Vae::load(
                &RandomWeights {
                    std: 0.02,
                    seed: *seed + 10,
                },
                Some(VaeConfig::default()),
                kind,
                device,
            )?),
            ModelSource::Files(_) => {
                let path = self.path(Component::Vae)?;
                let cfg = match self.config_file(Component::Vae) {
                    Some(c) => Some(VaeConfig::from_json_file(&c)?),
                    None => None,
                };
                Ok(Vae::load(&WeightSet::open(&path)?, cfg, kind, device)?)
            }
        }
    }

    pub fn text_encoder(
        &self,
        kind: Kind,
        device: Device,
        fp8: bool,
    ) -> Result<Umt5Encoder, TrainError> {
        match self {
            ModelSource::Random { seed, .. } => Ok(Umt5Encoder::load_with(
                &RandomWeights {
                    std: 0.02,
                    seed: *seed + 20,
                },
                Some(Umt5Config::default()),
                kind,
                device,
                fp8,
            )?),
            ModelSource::Files(_) => {
                let path = self.path(Component::TextEncoder)?;
                let cfg = match self.config_file(Component::TextEncoder) {
                    Some(c) => Some(Umt5Config::from_json_file(&c)?),
                    None => None,
                };
                Ok(Umt5Encoder::load_with(
                    &WeightSet::open(&path)?,
                    cfg,
                    kind,
                    device,
                    fp8,
                )?)
            }
        }
    }

    pub fn tokenizer(&self) -> Result<Tokenizer, TrainError> {
        let path = match self {
            ModelSource::Random { tokenizer, .. } => tokenizer.clone(),
            ModelSource::Files(f) => f
                .resolved
                .component(Component::Tokenizer)
                .and_then(|c| c.file_named("tokenizer.json"))
                .ok_or_else(|| {
                    TrainError::Setup("tokenizer.json not found (set model.tokenizer_path)".into())
                })?,
        };
        Ok(Tokenizer::from_file(&path)?)
    }

    /// What identifies a component's weights in cache keys: file paths, sizes and modification times,
    /// or the random seed.
    pub fn fingerprint(&self, component: Component) -> String {
        match self {
            ModelSource::Random { seed, .. } => format!("random-a14b seed {seed} {component:?}"),
            ModelSource::Files(f) => {
                let files = f
                    .resolved
                    .component(component)
                    .map(|c| c.weight_files())
                    .unwrap_or_default();
                let parts: Vec<String> = files
                    .iter()
                    .map(|f| {
                        let meta = std::fs::metadata(f).ok();
                        let size = meta.as_ref().map_or(0, |m| m.len());
                        let mtime = meta
                            .and_then(|m| m.modified().ok())
                            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                            .map_or(0, |d| d.as_nanos());
                        format!("{}:{size}:{mtime}", f.display())
                    })
                    .collect();
                format!("{component:?} {}", parts.join(","))
            }
        }
    }
}

/// The demo's tiny models carry a marker file at their root (or next to their single files); the hub's
/// A14B size checks are relaxed for them. Looked up where the components resolve to, so a tiny model
/// in the Hugging Face cache or as single files is recognised too.
fn is_tiny(spec: &ModelSpec, hub: &HubConfig) -> bool {
    let marked = |p: &Path| {
        p.ancestors()
            .take(3)
            .any(|a| a.join(crate::tiny::MARKER).exists())
    };
    if spec
        .name_or_path
        .as_deref()
        .map(Path::new)
        .is_some_and(marked)
    {
        return true;
    }
    let Ok(resolved) = wanlora_hub::resolve(spec, hub) else {
        return false;
    };
    let found = [Component::HighNoiseExpert, Component::LowNoiseExpert]
        .iter()
        .filter_map(|&c| resolved.component(c).and_then(|c| c.weights_path()))
        .collect::<Vec<_>>();
    !found.is_empty() && found.iter().all(|p| marked(p))
}
