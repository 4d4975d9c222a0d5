//! Helpers shared by the CLI's tests that run the `wanlora` binary on the demo job.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The `wanlora` binary, offline, one thread (runs compare bit for bit).
pub fn wanlora() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_wanlora"));
    c.env("HF_HUB_OFFLINE", "1").env("OMP_NUM_THREADS", "1");
    c
}

/// `wanlora demo --steps <steps> --prepare <dir>`: the demo's tiny model, clips and job file;
/// returns the job file's path.
pub fn demo_job(dir: &Path, steps: u32) -> PathBuf {
    let out = wanlora()
        .args(["demo", "--steps", &steps.to_string(), "--prepare"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// The tensors of a LoRA file, by name, as f32.
pub fn lora_tensors(path: &Path) -> BTreeMap<String, tch::Tensor> {
    let set = wanlora_torch::weights::WeightSet::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    set.names()
        .into_iter()
        .map(|n| {
            let t = set.load(&n, tch::Kind::Float, tch::Device::Cpu).unwrap();
            (n, t)
        })
        .collect()
}

/// Runs `command` to its end, which must succeed.
pub fn run_ok(command: &mut std::process::Command) {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
