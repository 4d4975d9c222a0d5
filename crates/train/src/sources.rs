//! Where the models come from: files the hub crate resolved (local folders, the Hugging Face cache,
//! downloads, ComfyUI single files), or random weights made in place on the device
//! (`name_or_path: wanlora:random-a14b`), so benchmarks need no downloaded model and write nothing.

use std::path::{Path, PathBuf};
use tch::{Device, Kind};

use crate::experts::Expert;
use crate::TrainError;
use wanlora_config::ModelArch;
use wanlora_hub::{CheckOptions, Component, HubConfig, ModelSpec, ResolvedModel, Stage};
use wanlora_models::quant::Fp8Mode;
use wanlora_models::recovery::RecoveryAdapter;
use wanlora_models::tokenizer::Tokenizer;
use wanlora_models::transformer::{
    self, transformer_weights, LoadOptions, TransformerConfig, WanTransformer,
};
use wanlora_models::umt5::{Umt5Config, Umt5Encoder};
use wanlora_models::vae::{Vae, VaeConfig};
use wanlora_torch::weights::{RandomWeights, WeightSet, WeightSource};

/// Where quantised experts are kept between starts: `wanlora-uint4/` beside the Hugging Face hub
/// cache (`~/.cache/huggingface/wanlora-uint4`), shared by every job on the machine.
fn uint4_cache_dir(hub: &HubConfig) -> PathBuf {
    hub.cache_dir
        .parent()
        .unwrap_or(&hub.cache_dir)
        .join("wanlora-uint4")
}

/// Path, size and modification time: what identifies a file's content in cache keys without
/// reading it.
fn file_fingerprint(path: &Path) -> String {
    let meta = std::fs::metadata(path).ok();
    let size = meta.as_ref().map_or(0, |m| m.len());
    let mtime = meta
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    format!("{}:{size}:{mtime}", path.display())
}

/// 64-bit FNV-1a: a file name for a cache key that is stable across builds (the key itself is
/// stored in the file and compared on reading).
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Model files resolved (and fetched) by the hub crate.
pub struct FileSource {
    pub spec: ModelSpec,
    pub hub: HubConfig,
    pub resolved: ResolvedModel,
    /// The header checks: the job's arch, and the real A14B sizes unless the model is the demo's.
    pub checks: CheckOptions,
    /// The accuracy recovery adapter for uint4 weights, once fetched.
    pub recovery_adapter: Option<PathBuf>,
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
        recovery_adapter: Option<PathBuf>,
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
                recovery_adapter: None,
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
            recovery_adapter: None,
        })))
    }

    /// Files the caller resolved and checked itself (`wanlora sample`, which fetches everything and
    /// words errors in its option names); loading then goes through the same code as training.
    pub fn from_resolved(
        spec: ModelSpec,
        hub: HubConfig,
        resolved: ResolvedModel,
        checks: CheckOptions,
    ) -> ModelSource {
        ModelSource::Files(Box::new(FileSource {
            spec,
            hub,
            resolved,
            checks,
            recovery_adapter: None,
        }))
    }

    /// Finds (or downloads, with progress) the accuracy recovery adapter `reference` (a local file
    /// or `owner/repo/file.safetensors`), which every expert loaded afterwards with
    /// [`Fp8Mode::Uint4`] gets beside its 4-bit linears.
    pub fn fetch_recovery_adapter(
        &mut self,
        reference: &str,
        hub: &HubConfig,
    ) -> Result<PathBuf, TrainError> {
        let path = wanlora_hub::fetch_file(reference, hub).map_err(|e| {
            TrainError::Setup(format!(
                "model.accuracy_recovery_adapter `{reference}`: {e}"
            ))
        })?;
        match self {
            ModelSource::Files(f) => f.recovery_adapter = Some(path.clone()),
            ModelSource::Random {
                recovery_adapter, ..
            } => *recovery_adapter = Some(path.clone()),
        }
        Ok(path)
    }

    fn recovery_adapter(&self) -> Option<&Path> {
        match self {
            ModelSource::Files(f) => f.recovery_adapter.as_deref(),
            ModelSource::Random {
                recovery_adapter, ..
            } => recovery_adapter.as_deref(),
        }
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

    /// The config of `expert`'s transformer without loading it: the variant's for random
    /// weights, else the config file beside the weights, else inferred from their shapes.
    pub fn transformer_config(&self, expert: Expert) -> Result<TransformerConfig, TrainError> {
        match self {
            ModelSource::Random { arch, .. } => Ok(if arch.facts().one_transformer {
                TransformerConfig::wan22_ti2v_5b()
            } else {
                TransformerConfig::wan22_a14b(arch.facts().in_channels as i64)
            }),
            ModelSource::Files(_) => {
                let component = match expert {
                    Expert::High => Component::HighNoiseExpert,
                    Expert::Low => Component::LowNoiseExpert,
                };
                let path = self.path(component)?;
                match transformer_config(&path, self.config_file(component))? {
                    Some(c) => Ok(c),
                    None => {
                        let weights = transformer_weights(WeightSet::open(&path)?)?;
                        TransformerConfig::infer(&weights, None).map_err(|reason| {
                            TrainError::Setup(format!("{}: {reason}", weights.describe()))
                        })
                    }
                }
            }
        }
    }

    /// One expert, stored as `options` say; with 4-bit weights and a fetched accuracy recovery
    /// adapter, the linears it names are 4-bit with the adapter beside them.
    pub fn transformer(
        &self,
        expert: Expert,
        kind: Kind,
        device: Device,
        options: &LoadOptions,
    ) -> Result<WanTransformer, TrainError> {
        let load = |weights: &dyn WeightSource, cfg: Option<TransformerConfig>| {
            if options.fp8 != Fp8Mode::Uint4 {
                return Ok(WanTransformer::load_with(
                    weights, cfg, kind, device, options,
                )?);
            }
            let cfg = match cfg {
                Some(c) => c,
                None => TransformerConfig::infer(weights, None).map_err(|reason| {
                    TrainError::Setup(format!("{}: {reason}", weights.describe()))
                })?,
            };
            let ara = match self.recovery_adapter() {
                Some(path) => {
                    let ara = RecoveryAdapter::load(path, expert, &cfg, kind, device)?;
                    tracing::info!(
                        "{} expert: accuracy recovery adapter {} (rank {}, {} linears)",
                        expert.name(),
                        path.display(),
                        ara.rank(),
                        ara.len()
                    );
                    Some(ara)
                }
                None => None,
            };
            self.load_uint4_cached(expert, weights, cfg, kind, device, options, ara.as_ref())
        };
        match self {
            ModelSource::Random { seed, .. } => load(
                &RandomWeights {
                    std: 0.02,
                    seed: *seed + expert as i64,
                },
                Some(self.transformer_config(expert)?),
            ),
            ModelSource::Files(_) => {
                let component = match expert {
                    Expert::High => Component::HighNoiseExpert,
                    Expert::Low => Component::LowNoiseExpert,
                };
                let path = self.path(component)?;
                let cfg = transformer_config(&path, self.config_file(component))?;
                let weights = transformer_weights(WeightSet::open(&path)?)?;
                load(&weights, cfg)
            }
        }
    }

    /// A 4-bit expert, its quantised linears read from the on-disk cache when an earlier start
    /// left them there (keyed by the expert's files, the adapter's file and the scheme), else
    /// quantised and saved there for the next start. Random weights are not cached.
    #[allow(clippy::too_many_arguments)]
    fn load_uint4_cached(
        &self,
        expert: Expert,
        weights: &dyn WeightSource,
        cfg: TransformerConfig,
        kind: Kind,
        device: Device,
        options: &LoadOptions,
        ara: Option<&RecoveryAdapter>,
    ) -> Result<WanTransformer, TrainError> {
        let ModelSource::Files(files) = self else {
            return Ok(WanTransformer::load_uint4(
                weights, cfg, kind, device, options, ara, None,
            )?);
        };
        let component = match expert {
            Expert::High => Component::HighNoiseExpert,
            Expert::Low => Component::LowNoiseExpert,
        };
        let key = format!(
            "{} | {} | adapter {} | {kind:?}",
            wanlora_models::uint4::SCHEME,
            self.fingerprint(component),
            ara.map(|a| file_fingerprint(&a.path))
                .unwrap_or_else(|| "none".into()),
        );
        let path = uint4_cache_dir(&files.hub).join(format!("{:016x}.safetensors", fnv1a(&key)));
        let cached = WeightSet::open(&path)
            .ok()
            .filter(|c| c.metadata().get("key") == Some(&key));
        let model =
            WanTransformer::load_uint4(weights, cfg, kind, device, options, ara, cached.as_ref())?;
        if cached.is_some() {
            tracing::info!(
                "{} expert: 4-bit weights from {}",
                expert.name(),
                path.display()
            );
            return Ok(model);
        }
        let saved = std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))
            .map_err(|e| e.to_string())
            .and_then(|()| {
                let metadata = [("key".to_string(), key)].into_iter().collect();
                wanlora_torch::weights::save_safetensors(
                    &path,
                    &model.uint4_cache_entries(),
                    &metadata,
                )
                .map_err(|e| e.to_string())
            });
        match saved {
            Ok(()) => tracing::info!(
                "{} expert: 4-bit weights saved to {} for the next start",
                expert.name(),
                path.display()
            ),
            // The cache only saves time: a full disk must not stop training.
            Err(e) => tracing::warn!("4-bit weights not cached at {}: {e}", path.display()),
        }
        Ok(model)
    }

    pub fn vae(&self, kind: Kind, device: Device) -> Result<Vae, TrainError> {
        match self {
            ModelSource::Random { seed, arch, .. } => Ok(Vae::load(
                &RandomWeights {
                    std: 0.02,
                    seed: *seed + 10,
                },
                Some(if arch.facts().one_transformer {
                    VaeConfig::wan22()
                } else {
                    VaeConfig::default()
                }),
                kind,
                device,
            )?),
            ModelSource::Files(f) => {
                let path = self.path(Component::Vae)?;
                let config = self.config_file(Component::Vae);
                let vae = Vae::open(&path, config.as_deref(), kind, device)?;
                if f.checks.arch.facts().one_transformer {
                    ti2v_vae(vae, &path)
                } else {
                    a14b_vae(vae, &path)
                }
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
                let parts: Vec<String> = files.iter().map(|f| file_fingerprint(f)).collect();
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
    let cfg = transformer_config(path, config_file)?;
    let weights = transformer_weights(WeightSet::open(path)?)?;
    Ok(WanTransformer::load_with(
        &weights, cfg, kind, device, options,
    )?)
}

/// The config of transformer weights at `path`: `config_file` (the resolved component's), else a
/// config.json by `models::transformer::config_file_for`, else none (inferred from the shapes).
fn transformer_config(
    path: &Path,
    config_file: Option<PathBuf>,
) -> Result<Option<TransformerConfig>, TrainError> {
    match config_file.or_else(|| transformer::config_file_for(path)) {
        Some(c) => Ok(Some(TransformerConfig::from_json_file(&c)?)),
        None => Ok(None),
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

/// `vae` when it is the Wan 2.2 VAE, the only one whose 48-channel latents TI2V-5B reads.
fn ti2v_vae(vae: Vae, path: &Path) -> Result<Vae, TrainError> {
    if !vae.config().is_residual {
        return Err(TrainError::Setup(format!(
            "{} is the Wan 2.1 VAE (16 latent channels, the A14B models'); TI2V-5B works in the Wan 2.2 \
             VAE's 48 channels: use wan2.2_vae.safetensors or the vae/ folder of Wan-AI/Wan2.2-TI2V-5B-Diffusers",
            path.display()
        )));
    }
    Ok(vae)
}

/// `vae` when it is the Wan 2.1 VAE: the A14B models' latents are its 16 channels (TI2V-5B takes the
/// Wan 2.2 VAE instead, [`ti2v_vae`]).
fn a14b_vae(vae: Vae, path: &Path) -> Result<Vae, TrainError> {
    if vae.config().is_residual {
        return Err(TrainError::Setup(format!(
            "{} is the Wan 2.2 VAE (48 latent channels, TI2V-5B's); the A14B models work in the Wan 2.1 \
             VAE's 16 channels: use wan_2.1_vae.safetensors or the A14B repository's vae/ folder",
            path.display()
        )));
    }
    Ok(vae)
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
    fn the_wan22_vae_is_refused_for_the_a14b_models() {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tests/fixtures");
        let open = |dir: &str| {
            let path = fixtures.join(dir).join("diffusers");
            a14b_vae(
                Vae::from_path(&path, Kind::Float, Device::Cpu).unwrap(),
                &path,
            )
        };
        let err = open("vae22").err().unwrap().to_string();
        assert!(
            err.contains("Wan 2.2 VAE") && err.contains("wan_2.1_vae"),
            "{err}"
        );
        assert!(open("vae").is_ok());
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
