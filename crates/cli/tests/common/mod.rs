//! Helpers shared by the CLI's tests that run the `wanlora` binary on the demo job.

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
