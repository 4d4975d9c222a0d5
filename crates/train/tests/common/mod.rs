//! Helpers shared by the in-process demo-job tests.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use wanlora_hub::HubConfig;
use wanlora_train::trainer::{train, RunOptions, RunSummary};

/// The trainer seeds libtorch's global generator (LoRA init, noise), which the tests of one binary
/// share across their threads: a test that compares runs holds this for its whole length.
pub fn one_run_at_a_time() -> MutexGuard<'static, ()> {
    static RUNS: Mutex<()> = Mutex::new(());
    RUNS.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Offline run options with the hub cache inside `dir`; `stop_after` interrupts the run.
pub fn opts(dir: &Path, stop_after: Option<u64>) -> RunOptions {
    RunOptions {
        progress: false,
        stop_after,
        hub: HubConfig::from_vars(|k| match k {
            "HF_HUB_OFFLINE" => Some("1".into()),
            "HF_HOME" => Some(dir.join("hf").display().to_string()),
            _ => None,
        }),
    }
}

/// Training loss per step, the last line of a step winning (a resumed run repeats the steps after
/// its save); validation records (no `loss`) are skipped.
pub fn losses(folder: &Path) -> BTreeMap<u64, f64> {
    std::fs::read_to_string(folder.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v.get("loss").is_some())
        .map(|v| (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap()))
        .collect()
}

/// Runs `job_a` (in `dir_a`) to the end, and `job_b` (in `dir_b`) stopped after `stop_after` steps
/// then resumed to the end; returns the uninterrupted and the resumed run.
pub fn whole_and_resumed(
    (job_a, dir_a): (&Path, &Path),
    (job_b, dir_b): (&Path, &Path),
    stop_after: u64,
) -> (RunSummary, RunSummary) {
    tch::set_num_threads(2);
    let load = |p: &Path| wanlora_config::load_job(p).unwrap();
    let whole = train(load(job_a), opts(dir_a, None)).unwrap();
    let stopped = train(load(job_b), opts(dir_b, Some(stop_after))).unwrap();
    assert!(stopped.stopped && stopped.step == stop_after);
    let resumed = train(load(job_b), opts(dir_b, None)).unwrap();
    assert!(!resumed.stopped);
    (whole, resumed)
}
