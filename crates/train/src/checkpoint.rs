//! What a save writes: the LoRA files users load in ComfyUI (one per trained expert, optionally EMA),
//! their rotation, and the training state that resume continues from.
//!
//! State lives in `state/step_<N>/`, written completely before a `complete` marker file; resume picks
//! the newest complete one, so a crash during a save (even SIGKILL) never loses the previous state.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

use crate::experts::Expert;
use crate::optim::choice::TrainOptimizer;
use crate::TrainError;
use wanlora_torch::weights::{save_safetensors, write_atomic, WeightSet};

/// LoRA file name: `<name>_<step:09>_high_noise.safetensors`, or without the step for the final save.
pub fn lora_file_name(job: &str, step: Option<u64>, expert: Expert, ema: bool) -> String {
    let step = step.map(|s| format!("_{s:09}")).unwrap_or_default();
    let ema = if ema { "_ema" } else { "" };
    format!("{job}{step}_{}{ema}.safetensors", expert.name())
}

/// Keeps the newest `keep` step saves (all files of a step together); the final files are never
/// rotated. Returns the files removed.
pub fn rotate_saves(dir: &Path, job: &str, keep: u32) -> Result<Vec<PathBuf>, TrainError> {
    let mut steps: BTreeMap<u64, Vec<PathBuf>> = BTreeMap::new();
    let prefix = format!("{job}_");
    for entry in std::fs::read_dir(dir).map_err(|e| TrainError::io(dir, e))? {
        let path = entry.map_err(|e| TrainError::io(dir, e))?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(rest) = name.strip_prefix(&prefix) else {
            continue;
        };
        if !name.ends_with(".safetensors") || rest.len() < 10 || rest.as_bytes()[9] != b'_' {
            continue;
        }
        if let Ok(step) = rest[..9].parse::<u64>() {
            steps.entry(step).or_default().push(path);
        }
    }
    let mut removed = Vec::new();
    let excess = steps.len().saturating_sub(keep.max(1) as usize);
    for (_, files) in steps.into_iter().take(excess) {
        for f in files {
            std::fs::remove_file(&f).map_err(|e| TrainError::io(&f, e))?;
            removed.push(f);
        }
    }
    Ok(removed)
}

/// One expert's trainable state.
pub struct ExpertState<'a> {
    pub expert: Expert,
    pub lora_flat: &'a Tensor,
    pub optimizer: &'a TrainOptimizer,
    pub ema: Option<&'a Tensor>,
}

/// Everything else resume needs, as JSON.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct RunState {
    pub format: u32,
    /// Optimizer steps completed.
    pub step: u64,
    pub seed: u64,
    pub rank: i64,
    pub alpha: f64,
    pub experts: Vec<Expert>,
    pub sampler: wanlora_data::SamplerState,
    #[serde(default)]
    pub reg_sampler: Option<wanlora_data::SamplerState>,
}

pub const STATE_FORMAT: u32 = 1;

fn state_dir(root: &Path, step: u64) -> PathBuf {
    root.join("state").join(format!("step_{step:09}"))
}

/// Writes `state/step_<N>/` and marks it complete, then removes older complete states.
pub fn save_state(root: &Path, run: &RunState, experts: &[ExpertState]) -> Result<(), TrainError> {
    let dir = state_dir(root, run.step);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| TrainError::io(&dir, e))?;
    }
    std::fs::create_dir_all(&dir).map_err(|e| TrainError::io(&dir, e))?;
    for e in experts {
        let mut tensors = vec![(
            "lora".to_string(),
            e.lora_flat.detach().to_device(Device::Cpu),
        )];
        for (name, t) in e.optimizer.state_tensors() {
            tensors.push((name, t.to_device(Device::Cpu)));
        }
        if let Some(ema) = e.ema {
            tensors.push(("ema".into(), ema.to_device(Device::Cpu)));
        }
        let meta = e.optimizer.state_metadata();
        save_safetensors(
            &dir.join(format!("{}.safetensors", e.expert.name())),
            &tensors,
            &meta,
        )?;
    }
    write_atomic(
        &dir.join("run.json"),
        serde_json::to_string_pretty(run)?.as_bytes(),
    )?;
    write_atomic(&dir.join("complete"), b"")?;
    // Older states are removed only once this one is complete.
    let parent = root.join("state");
    for entry in std::fs::read_dir(&parent)
        .map_err(|e| TrainError::io(&parent, e))?
        .flatten()
    {
        let p = entry.path();
        if p != dir
            && p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("step_"))
        {
            let _ = std::fs::remove_dir_all(&p);
        }
    }
    Ok(())
}

/// The newest complete state, if any.
pub fn latest_state(root: &Path) -> Result<Option<(RunState, PathBuf)>, TrainError> {
    let parent = root.join("state");
    let Ok(entries) = std::fs::read_dir(&parent) else {
        return Ok(None);
    };
    let mut dirs: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("complete").exists() && p.join("run.json").exists())
        .collect();
    dirs.sort();
    let Some(dir) = dirs.pop() else {
        return Ok(None);
    };
    let text =
        std::fs::read_to_string(dir.join("run.json")).map_err(|e| TrainError::io(&dir, e))?;
    Ok(Some((serde_json::from_str(&text)?, dir)))
}

/// Restores one expert's LoRA values, optimizer moments and EMA from a state folder.
pub fn load_expert_state(
    dir: &Path,
    expert: Expert,
    lora_flat: &Tensor,
    optimizer: &mut TrainOptimizer,
    ema: Option<&mut Tensor>,
) -> Result<(), TrainError> {
    let path = dir.join(format!("{}.safetensors", expert.name()));
    let set = WeightSet::open(&path)?;
    let device = lora_flat.device();
    let get = |n: &str, kind: Kind| set.load(n, kind, device);
    let lora = get("lora", Kind::Float)?;
    if lora.size() != lora_flat.size() {
        return Err(TrainError::Setup(format!(
            "{}: the saved LoRA has {} values but this job's has {}: rank or experts changed; use a new job name \
             or delete the state/ folder to start over",
            path.display(),
            lora.numel(),
            lora_flat.numel()
        )));
    }
    tch::no_grad(|| lora_flat.shallow_clone().copy_(&lora));
    let meta: BTreeMap<String, String> = set.metadata().into_iter().collect();
    optimizer
        .restore(&meta, |name, kind, device| {
            set.load(name, kind, device).map_err(|e| e.to_string())
        })
        .map_err(|e| TrainError::Setup(format!("{}: {e}", path.display())))?;
    if let Some(ema) = ema {
        ema.copy_(&get("ema", Kind::Float)?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_ai_toolkit() {
        assert_eq!(
            lora_file_name("job", Some(250), Expert::High, false),
            "job_000000250_high_noise.safetensors"
        );
        assert_eq!(
            lora_file_name("job", None, Expert::Low, true),
            "job_low_noise_ema.safetensors"
        );
    }

    #[test]
    fn rotation_keeps_the_newest_steps_and_the_final_files() {
        let dir = tempfile::tempdir().unwrap();
        for step in [100u64, 200, 300] {
            for e in [Expert::High, Expert::Low] {
                std::fs::write(
                    dir.path().join(lora_file_name("j", Some(step), e, false)),
                    b"x",
                )
                .unwrap();
            }
        }
        std::fs::write(
            dir.path()
                .join(lora_file_name("j", None, Expert::High, false)),
            b"x",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("other_000000100_high_noise.safetensors"),
            b"x",
        )
        .unwrap();
        let removed = rotate_saves(dir.path(), "j", 2).unwrap();
        assert_eq!(removed.len(), 2);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            vec![
                "j_000000200_high_noise.safetensors",
                "j_000000200_low_noise.safetensors",
                "j_000000300_high_noise.safetensors",
                "j_000000300_low_noise.safetensors",
                "j_high_noise.safetensors",
                "other_000000100_high_noise.safetensors",
            ]
        );
    }

    #[test]
    fn an_incomplete_state_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("state/step_000000005")).unwrap();
        std::fs::write(dir.path().join("state/step_000000005/run.json"), b"{}").unwrap();
        assert!(latest_state(dir.path()).unwrap().is_none());
    }
}
