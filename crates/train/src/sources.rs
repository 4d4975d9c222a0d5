//! Where the models come from: files the hub crate resolved (local folders, the Hugging Face cache,
//! downloads, ComfyUI single files), or random weights made in place on the device
//! (`name_or_path: wanlora:random-a14b`), so benchmarks need no downloaded model and write nothing.

use std::path::{Path, PathBuf};
use tch::{Device, Kind};

use crate::experts::Expert;
use crate::TrainError;
use wanlora_hub::{CheckOptions, Component, HubConfig, ModelSpec, ResolvedModel, Stage};
use wanlora_models::tokenizer::Tokenizer;
use wanlora_models::transformer::{
    self, LoadOptions, TransformerConfig, TransformerWeights, WanTransformer,
};
use wanlora_models::umt5::{Umt5Config, Umt5Encoder};
use wanlora_models::vae::{Vae, VaeConfig};
use wanlora_torch::weights::{RandomWeights, WeightSet};

/// Model files resolved (and fetched) by the hub crate.
pub struct FileSource {
    pub spec: ModelSpec,
    pub hub: HubConfig,
    pub resolved: ResolvedModel,
    pub exact_sizes: bool,
}

/// `model.name_or_path` that selects random A14B-shaped weights made on the device.
pub const RANDOM_A14B: &str = "wanlora:random-a14b";

pub enum ModelSource {
    Files(Box<FileSource>),
    Random { seed: i64, tokenizer: PathBuf },
}

impl ModelSource {
    /// Resolves and (when needed) downloads what training needs. `exact_sizes` requires the real A14B
    /// dimensions in the header checks (off for the demo's tiny model).
    pub fn for_training(
        spec: ModelSpec,
        hub: HubConfig,
        work_dir: &Path,
    ) -> Result<ModelSource, TrainError> {
        if spec.name_or_path.as_deref() == Some(RANDOM_A14B) {
            let tokenizer = work_dir.join("random-tokenizer.json");
            wanlora_torch::weights::write_atomic(
                &tokenizer,
                crate::tiny::tokenizer_json(&[]).as_bytes(),
            )?;
            return Ok(ModelSource::Random { seed: 1, tokenizer });
        }
        let exact_sizes = !is_tiny(&spec, &hub);
        let resolved =
            wanlora_hub::fetch(&spec, &hub, Stage::Training, &CheckOptions { exact_sizes })?;
        let checks =
            wanlora_hub::check_model(&resolved, Stage::Training, &CheckOptions { exact_sizes })?;
        tracing::debug!("model checks: {checks:?}");
        Ok(ModelSource::Files(Box::new(FileSource {
            spec,
            hub,
            resolved,
            exact_sizes,
        })))
    }

    /// Files the caller resolved and checked itself (`wanlora sample`, which fetches everything and
    /// words errors in its option names); loading then goes through the same code as training.
    pub fn from_resolved(
        spec: ModelSpec,
        hub: HubConfig,
        resolved: ResolvedModel,
        exact_sizes: bool,
    ) -> ModelSource {
        ModelSource::Files(Box::new(FileSource {
            spec,
            hub,
            resolved,
            exact_sizes,
        }))
    }

    /// Makes sure the untrained expert is on disk (fetched only when previews first need it).
    pub fn prepare_samples(&mut self) -> Result<(), TrainError> {
        if let ModelSource::Files(f) = self {
            let options = CheckOptions {
                exact_sizes: f.exact_sizes,
            };
            f.resolved = wanlora_hub::fetch(&f.spec, &f.hub, Stage::Samples, &options)?;
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
            ModelSource::Random { seed, .. } => Ok(WanTransformer::load_with(
                &RandomWeights {
                    std: 0.02,
                    seed: *seed + expert as i64,
                },
                Some(TransformerConfig::wan22_i2v_a14b()),
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
                load_transformer(&path, self.config_file(component), kind, device, options)
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
                let config = self.config_file(Component::Vae);
                Ok(Vae::open(&path, config.as_deref(), kind, device)?)
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

/// Loads a transformer from a diffusers folder or a single file. Its config: `config_file` (the
/// resolved component's), else a `config.json` inside the folder or beside the single file, else
/// inferred from the weight shapes. Every command loads experts through here.
pub fn load_transformer(
    path: &Path,
    config_file: Option<PathBuf>,
    kind: Kind,
    device: Device,
    options: &LoadOptions,
) -> Result<WanTransformer, TrainError> {
    let cfg = match config_file.or_else(|| transformer::config_file_for(path)) {
        Some(c) => Some(TransformerConfig::from_json_file(&c)?),
        None => None,
    };
    let weights = TransformerWeights::new(WeightSet::open(path)?)?;
    Ok(WanTransformer::load_with(
        &weights, cfg, kind, device, options,
    )?)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../models/tests/fixtures/transformer")
            .join(name)
    }

    #[test]
    fn a_config_json_beside_a_single_file_is_honoured() {
        // `wanlora sample` and `debug transformer` once ignored it while `train` read it.
        let dir = tempfile::tempdir().unwrap();
        let single = dir.path().join("expert.safetensors");
        std::fs::copy(fixture("comfy.safetensors"), &single).unwrap();
        let options = LoadOptions::default();
        let load = || load_transformer(&single, None, Kind::Float, Device::Cpu, &options);
        // The tiny model's head dimension (16) cannot be inferred from shapes alone.
        assert!(load().is_err(), "loaded without its config");
        std::fs::copy(
            fixture("diffusers/config.json"),
            dir.path().join("config.json"),
        )
        .unwrap();
        let model = load().expect("config.json beside the file");
        let want = TransformerConfig::from_json_file(&fixture("diffusers/config.json")).unwrap();
        assert_eq!(model.config, want);
    }
}
