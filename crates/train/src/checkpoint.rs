//! What a save writes: the LoRA files users load in ComfyUI (one per trained expert, optionally EMA),
//! their rotation, and the training state that resume continues from.
//!
//! State lives in `state/step_<N>/`, written completely before a `complete` marker file that holds
//! the SHA-256 of each of its files; resume picks the newest complete state whose files match, so a
//! crash during a save (even SIGKILL) never loses the previous state, and a state damaged later
//! (flipped bytes, an edited run.json) is passed over for the previous one, which is kept for that.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

use crate::experts::Expert;
use crate::optim::choice::TrainOptimizer;
use crate::TrainError;
use wanlora_spec::job_folder;
use wanlora_torch::weights::{save_safetensors, write_atomic, WeightError, WeightSet};

/// LoRA file name: `<name>_<step:09>_high_noise.safetensors`, or without the step for the final save.
pub fn lora_file_name(job: &str, step: Option<u64>, expert: Expert, ema: bool) -> String {
    job_folder::lora_file_name(job, step, expert.name(), ema)
}

/// Keeps the newest `keep` step saves (all files of a step together); the final files are never
/// rotated. Returns the files removed.
pub fn rotate_saves(dir: &Path, job: &str, keep: u32) -> Result<Vec<PathBuf>, TrainError> {
    rotate_saves_of(dir, job, keep, None)
}

/// [`rotate_saves`] of one expert's files only (`Some`): an expert-parallel rank rotates its own
/// files and never removes the other rank's.
pub fn rotate_saves_of(
    dir: &Path,
    job: &str,
    keep: u32,
    only: Option<Expert>,
) -> Result<Vec<PathBuf>, TrainError> {
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
        if only.is_some_and(|e| !rest[10..].starts_with(e.name())) {
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
    /// Each trained expert's data order (format 2: every expert draws its own batches).
    #[serde(default)]
    pub samplers: Vec<ExpertSamplers>,
}

/// Where one expert's data order stands.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct ExpertSamplers {
    pub expert: Expert,
    pub sampler: wanlora_data::SamplerState,
    #[serde(default)]
    pub reg_sampler: Option<wanlora_data::SamplerState>,
}

/// 2: per-expert data order, timesteps and noise (format 1 shared one stream between the experts).
pub const STATE_FORMAT: u32 = 2;

fn state_dir(states: &Path, step: u64) -> PathBuf {
    states.join(job_folder::state_step_name(step))
}

/// Writes `state/step_<N>/`, marks it complete with the checksums of its files, reads it back to
/// verify them, and only then removes older states — all but the newest earlier complete one,
/// which stays as the fallback for a newest state damaged later.
pub fn save_state(root: &Path, run: &RunState, experts: &[ExpertState]) -> Result<(), TrainError> {
    save_state_in(&root.join("state"), run, experts)
}

/// [`save_state`] into the folder of states `states` (an expert-parallel rank keeps its own,
/// `state/<expert>/`).
pub fn save_state_in(
    states: &Path,
    run: &RunState,
    experts: &[ExpertState],
) -> Result<(), TrainError> {
    let dir = state_dir(states, run.step);
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
    seal_state(&dir)?;
    if let Err(reason) = verify_state(&dir) {
        let _ = std::fs::remove_dir_all(&dir);
        return Err(TrainError::Setup(format!(
            "{}: the state just saved does not read back as written ({reason}); the previous state is kept. \
             Check the disk, then run the job again to resume",
            dir.display()
        )));
    }
    // Older states go only now that this one is verified; the newest earlier one stays.
    let previous = complete_states(states).into_iter().rfind(|p| *p < dir);
    for entry in std::fs::read_dir(states)
        .map_err(|e| TrainError::io(states, e))?
        .flatten()
    {
        let p = entry.path();
        if p != dir
            && Some(&p) != previous.as_ref()
            && p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("step_"))
        {
            let _ = std::fs::remove_dir_all(&p);
        }
    }
    Ok(())
}

/// The `complete` marker's content: the SHA-256 of every other file of the state.
#[derive(serde::Serialize, serde::Deserialize)]
struct StateChecksums {
    sha256: BTreeMap<String, String>,
}

const COMPLETE: &str = "complete";

fn sha256_of(path: &Path) -> Result<String, std::io::Error> {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    let mut file = std::fs::File::open(path)?;
    std::io::copy(&mut file, &mut hasher)?;
    Ok(hex::encode(hasher.finalize()))
}

/// Marks a state folder complete: writes `complete` with the checksum of each of its files.
pub fn seal_state(dir: &Path) -> Result<(), TrainError> {
    let mut sha256 = BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(|e| TrainError::io(dir, e))? {
        let path = entry.map_err(|e| TrainError::io(dir, e))?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name == COMPLETE || name.starts_with('.') || !path.is_file() {
            continue;
        }
        sha256.insert(
            name,
            sha256_of(&path).map_err(|e| TrainError::io(&path, e))?,
        );
    }
    write_atomic(
        &dir.join(COMPLETE),
        serde_json::to_string_pretty(&StateChecksums { sha256 })?.as_bytes(),
    )?;
    Ok(())
}

/// Checks every file of a complete state against the checksums in its `complete` marker; the
/// reason names the file that differs. A marker without checksums (states saved before they
/// existed) is accepted.
pub fn verify_state(dir: &Path) -> Result<(), String> {
    let marker = dir.join(COMPLETE);
    let text = std::fs::read_to_string(&marker).map_err(|e| format!("{COMPLETE}: {e}"))?;
    if text.trim().is_empty() {
        return Ok(());
    }
    let sums: StateChecksums = serde_json::from_str(&text)
        .map_err(|e| format!("{COMPLETE}: not a list of checksums ({e})"))?;
    for (name, want) in &sums.sha256 {
        let got = sha256_of(&dir.join(name)).map_err(|e| format!("{name}: {e}"))?;
        if &got != want {
            return Err(format!(
                "{name}: its checksum differs from the one saved with it (the file changed after it was saved)"
            ));
        }
    }
    Ok(())
}

/// The complete state folders, oldest first.
fn complete_states(states: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(states) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("step_"))
                && p.join(COMPLETE).exists()
        })
        .collect();
    dirs.sort();
    dirs
}

fn read_run_state(dir: &Path) -> Result<RunState, String> {
    let path = dir.join("run.json");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("run.json: {e}"))?;
    serde_json::from_str(&text).map_err(|e| format!("run.json: {e}"))
}

/// The newest complete state whose files match their checksums. A damaged newer state is passed
/// over for the previous one, and `warn` is told which and why; when every complete state is
/// damaged the error lists them.
pub fn latest_state(
    root: &Path,
    warn: &mut dyn FnMut(&str),
) -> Result<Option<(RunState, PathBuf)>, TrainError> {
    latest_state_in(&root.join("state"), warn)
}

/// [`latest_state`] in the folder of states `states`.
pub fn latest_state_in(
    states: &Path,
    warn: &mut dyn FnMut(&str),
) -> Result<Option<(RunState, PathBuf)>, TrainError> {
    let mut damaged = Vec::new();
    for dir in complete_states(states).into_iter().rev() {
        match verify_state(&dir).and_then(|()| read_run_state(&dir)) {
            Ok(run) => {
                if !damaged.is_empty() {
                    warn(&format!(
                        "the newest saved state is damaged ({}); resuming from the previous one, {}",
                        damaged.join("; "),
                        dir.display()
                    ));
                }
                return Ok(Some((run, dir)));
            }
            Err(reason) => damaged.push(format!("{}: {reason}", dir.display())),
        }
    }
    if damaged.is_empty() {
        return Ok(None);
    }
    Err(TrainError::Setup(format!(
        "every saved training state is damaged ({}); delete the folder {} to start this job over",
        damaged.join("; "),
        states.display()
    )))
}

/// About how many bytes a save writes: each expert's LoRA file (and EMA file) in `lora_kind`, and
/// its state (LoRA, optimizer moments, EMA as stored), with room for headers and JSON.
pub fn save_bytes(experts: &[ExpertState], lora_kind: Kind) -> u64 {
    let bytes = |t: &Tensor| (t.numel() * t.kind().elt_size_in_bytes()) as u64;
    let headers = 1 << 20;
    experts
        .iter()
        .map(|e| {
            let lora_file = e.lora_flat.numel() as u64 * lora_kind.elt_size_in_bytes() as u64;
            let moments: u64 = e
                .optimizer
                .state_tensors()
                .iter()
                .map(|(_, t)| bytes(t))
                .sum();
            let ema = e.ema.map_or(0, |t| lora_file + bytes(t));
            lora_file + bytes(e.lora_flat) + moments + ema + headers
        })
        .sum()
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
    let set = WeightSet::open(&path).map_err(|e| {
        let reason = match e {
            WeightError::Format { reason, .. } => reason,
            other => other.to_string(),
        };
        TrainError::Setup(format!(
            "{}: this saved training state is damaged ({reason}); delete its folder {} to resume from \
             the previous state, or the whole state/ folder to start over",
            path.display(),
            dir.display()
        ))
    })?;
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

    /// A real two-expert state at `step` (LoRA values all `value`), saved with `save_state`.
    fn save_test_state(root: &Path, step: u64, value: f64) {
        let flat = crate::optim::FlatParams::new(
            &[Tensor::zeros([6], (Kind::Float, Device::Cpu))],
            Device::Cpu,
        );
        let _ = flat.flat.detach().fill_(value);
        let adam = crate::optim::AdamWConfig {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.99,
            eps: 1e-8,
            weight_decay: 0.0,
        };
        let optimizer = crate::optim::choice::TrainOptimizer::AdamW(crate::optim::AdamW::new(
            &flat, adam, false,
        ));
        let experts: Vec<ExpertState> = [Expert::High, Expert::Low]
            .into_iter()
            .map(|expert| ExpertState {
                expert,
                lora_flat: &flat.flat,
                optimizer: &optimizer,
                ema: None,
            })
            .collect();
        let run = RunState {
            format: STATE_FORMAT,
            step,
            seed: 7,
            rank: 4,
            alpha: 4.0,
            experts: vec![Expert::High, Expert::Low],
            samplers: vec![ExpertSamplers {
                expert: Expert::High,
                sampler: wanlora_data::SamplerState {
                    epoch: 0,
                    position: step as usize,
                    fingerprint: "test".into(),
                },
                reg_sampler: None,
            }],
        };
        save_state(root, &run, &experts).unwrap();
    }

    fn state_steps(root: &Path) -> Vec<String> {
        complete_states(&root.join("state"))
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn a_save_keeps_the_previous_complete_state_and_no_older() {
        let dir = tempfile::tempdir().unwrap();
        for step in [2, 4, 6] {
            save_test_state(dir.path(), step, step as f64);
        }
        assert_eq!(
            state_steps(dir.path()),
            vec!["step_000000004", "step_000000006"]
        );
        let (run, _) = latest_state(dir.path(), &mut |_| {}).unwrap().unwrap();
        assert_eq!(run.step, 6);
    }

    #[test]
    fn a_flipped_byte_in_the_newest_state_falls_back_to_the_previous_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        save_test_state(dir.path(), 2, 0.5);
        save_test_state(dir.path(), 4, 0.25);
        let file = dir
            .path()
            .join("state/step_000000004/low_noise.safetensors");
        let mut bytes = std::fs::read(&file).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40; // inside the tensor data, the header still valid
        std::fs::write(&file, bytes).unwrap();
        let mut warnings = Vec::new();
        let (run, used) = latest_state(dir.path(), &mut |m| warnings.push(m.to_string()))
            .unwrap()
            .unwrap();
        assert_eq!(run.step, 2);
        assert!(used.ends_with("step_000000002"));
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].contains("low_noise.safetensors") && warnings[0].contains("previous"),
            "{}",
            warnings[0]
        );
    }

    #[test]
    fn an_edited_run_json_is_damage_and_when_all_are_damaged_the_error_names_the_files() {
        let dir = tempfile::tempdir().unwrap();
        save_test_state(dir.path(), 2, 0.5);
        save_test_state(dir.path(), 4, 0.25);
        for step in ["step_000000002", "step_000000004"] {
            let p = dir.path().join("state").join(step).join("run.json");
            let text = std::fs::read_to_string(&p)
                .unwrap()
                .replace("\"seed\": 7", "\"seed\": 8");
            std::fs::write(&p, text).unwrap();
        }
        let err = latest_state(dir.path(), &mut |_| {})
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("step_000000004: run.json") && err.contains("step_000000002: run.json"),
            "{err}"
        );
        assert!(!err.contains("download"), "{err}");
    }

    #[test]
    fn a_json_error_in_a_state_names_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state/step_000000003");
        std::fs::create_dir_all(&state).unwrap();
        std::fs::write(state.join("run.json"), b"{\"format\": 1,").unwrap();
        seal_state(&state).unwrap();
        let err = latest_state(dir.path(), &mut |_| {})
            .unwrap_err()
            .to_string();
        assert!(err.contains("step_000000003: run.json: "), "{err}");
    }

    #[test]
    fn an_incomplete_state_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("state/step_000000005")).unwrap();
        std::fs::write(dir.path().join("state/step_000000005/run.json"), b"{}").unwrap();
        assert!(latest_state(dir.path(), &mut |_| {}).unwrap().is_none());
    }
}
