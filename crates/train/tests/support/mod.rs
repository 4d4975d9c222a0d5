//! Helpers shared by the trainer's integration tests.
// Each test binary compiles this module and uses only some of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use wanlora_hub::HubConfig;
use wanlora_train::experts::Expert;

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// Each expert's loss over its own steps falls: the mean of its last 6 steps is below 85 % of its
/// first 6 (timesteps and noise are random draws: the demo's high-noise expert, whose loss falls
/// slowest, ends at 83 % with the per-expert streams of seed 7).
pub fn assert_each_expert_learns(losses: &[(Expert, f64)]) {
    for expert in [Expert::High, Expert::Low] {
        let l: Vec<f64> = losses
            .iter()
            .filter(|(e, _)| *e == expert)
            .map(|(_, l)| *l)
            .collect();
        assert!(l.len() >= 12, "{expert:?}: only {} steps", l.len());
        let (first, last) = (mean(&l[..6]), mean(&l[l.len() - 6..]));
        assert!(
            last < 0.85 * first,
            "{expert:?}: loss {first:.4} → {last:.4} did not fall"
        );
    }
}

/// A hub that never goes online, with its cache under `dir`.
pub fn offline_hub(dir: &Path) -> HubConfig {
    HubConfig::from_vars(|k| match k {
        "HF_HUB_OFFLINE" => Some("1".into()),
        "HF_HOME" => Some(dir.join("hf").display().to_string()),
        _ => None,
    })
}

/// Every file under `dir` whose name ends with `suffix`.
pub fn files_ending(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_ending(&path, suffix));
        } else if path.to_string_lossy().ends_with(suffix) {
            out.push(path);
        }
    }
    out
}

/// The JSON header of the safetensors file at `path` (tensor entries and `__metadata__`).
pub fn safetensors_header(path: &Path) -> serde_json::Value {
    let bytes = std::fs::read(path).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    serde_json::from_slice(&bytes[8..8 + header_len]).unwrap()
}
