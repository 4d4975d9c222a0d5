//! `wanlora models JOB.yaml`: what the job would load, from where, its size and format, and what
//! is missing with how to get it. `wanlora models fetch JOB.yaml`: download it ahead of time.
//!
//! The Hugging Face cache, endpoint, token and offline mode come from the same environment
//! variables Python's `huggingface_hub` reads (HF_HOME, HF_HUB_CACHE, HF_ENDPOINT, HF_TOKEN,
//! HF_HUB_OFFLINE), so both share one cache.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use wanlora_config::{load_job, ModelArch};
use wanlora_hub::{
    check_components, check_components_on_hub, fetch, report, resolve, CheckOptions, HubConfig,
    ModelSpec, Stage, State,
};

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ModelsArgs {
    #[command(subcommand)]
    pub action: Option<ModelsAction>,
    /// The job file (AI Toolkit's YAML or JSON job format).
    pub job: Option<PathBuf>,
    /// Accept model widths other than A14B (the tiny demo and test models); the architecture is
    /// still checked.
    #[arg(long)]
    pub any_size: bool,
}

#[derive(clap::Subcommand)]
pub enum ModelsAction {
    /// Download what the job needs into the Hugging Face cache, ahead of time.
    Fetch {
        /// The job file.
        job: PathBuf,
        /// Only what training needs before its first step (not the untrained expert that sample
        /// previews load).
        #[arg(long)]
        training_only: bool,
        /// Accept model widths other than A14B (the tiny demo and test models).
        #[arg(long)]
        any_size: bool,
    },
}

/// The job's model keys, and the arch its experts are checked against.
fn load(job: &Path) -> Result<(ModelSpec, ModelArch)> {
    let loaded =
        load_job(job).with_context(|| format!("cannot use the job file {}", job.display()))?;
    // Relative paths are taken from the job file's folder, as dataset folders are.
    Ok((
        wanlora_train::job::model_spec(&loaded),
        loaded.job.process().model.arch,
    ))
}

pub fn run(args: ModelsArgs) -> Result<()> {
    let hub = HubConfig::from_env();
    match args.action {
        Some(ModelsAction::Fetch {
            job,
            training_only,
            any_size,
        }) => {
            let (spec, arch) = load(&job)?;
            let stage = if training_only {
                Stage::Training
            } else {
                Stage::Everything
            };
            let options = CheckOptions {
                exact_sizes: !any_size,
                arch,
            };
            // Headers of what is to come are checked before the download starts.
            let model = fetch(&spec, &hub, stage, &options)?;
            let checks = check_components(&model, stage, &options);
            print!("{}", report::render(&model, &checks));
            if checks.iter().any(|(_, r)| r.is_err()) {
                bail!(
                    "the downloaded files do not fit {}; see above",
                    arch.facts().label
                );
            }
            Ok(())
        }
        None => {
            let Some(job) = args.job else {
                bail!(
                    "give a job file: `wanlora models JOB.yaml` or `wanlora models fetch JOB.yaml`"
                );
            };
            let (spec, arch) = load(&job)?;
            spec.validate().map_err(anyhow::Error::msg)?;
            let model = resolve(&spec, &hub)?;
            let options = CheckOptions {
                exact_sizes: !args.any_size,
                arch,
            };
            // Files still on the hub are judged from their headers, read with range requests.
            let checks = check_components_on_hub(&model, &hub, Stage::Everything, &options)
                .unwrap_or_else(|e| {
                    tracing::warn!("headers on the hub could not be read: {e}");
                    check_components(&model, Stage::Everything, &options)
                });
            print!("{}", report::render(&model, &checks));
            let missing = model
                .components
                .iter()
                .any(|c| matches!(c.state, State::Missing { .. }));
            if missing || checks.iter().any(|(_, r)| r.is_err()) {
                bail!("{}: the model is not ready; see above", job.display());
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wanlora_config::LoadedJob;

    fn example(name: &str) -> LoadedJob {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples")
            .join(name);
        load_job(&path).expect("example job loads")
    }

    #[test]
    fn the_job_keys_map_onto_the_spec() {
        let loaded = example("motion_24gb.yaml");
        let spec = wanlora_train::job::model_spec(&loaded);
        let model = &loaded.job.process().model;
        assert_eq!(spec.name_or_path, model.name_or_path);
        assert_eq!(spec.train_high_noise, model.model_kwargs.train_high_noise);
        assert_eq!(spec.train_low_noise, model.model_kwargs.train_low_noise);
        // The example samples during training, so an untrained expert would be needed then.
        assert!(!loaded.job.process().sample.samples.is_empty());
        assert!(spec.need_untrained_expert_for_samples);
    }

    #[test]
    fn local_model_paths_are_relative_to_the_job_and_sampling_off_needs_no_second_expert() {
        let mut loaded = example("motion_24gb.yaml");
        let dir = tempfile::tempdir().expect("tempdir");
        loaded.base_dir = dir.path().to_path_buf();
        let process = loaded.job.process_mut();
        process.model.vae_path = Some("models/wan_2.1_vae.safetensors".into());
        process.model.extras_name_or_path =
            Some("ai-toolkit/Wan2.2-I2V-A14B-Diffusers-bf16".into());
        process.train.disable_sampling = true;
        let spec = wanlora_train::job::model_spec(&loaded);
        assert_eq!(
            spec.vae_path,
            Some(
                dir.path()
                    .join("models/wan_2.1_vae.safetensors")
                    .display()
                    .to_string()
            )
        );
        assert_eq!(
            spec.extras_name_or_path.as_deref(),
            Some("ai-toolkit/Wan2.2-I2V-A14B-Diffusers-bf16")
        );
        assert!(!spec.need_untrained_expert_for_samples);
    }
}
