//! Exact resume: a run killed with SIGKILL and started again gives the same loss at every step as a
//! run never interrupted (tiny model, f32, CPU), and its files load back.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tch::{Device, Kind};
use wanlora_torch::weights::WeightSet;

const STEPS: u32 = 240;
const SAVE_EVERY: u32 = 40;

fn wanlora() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_wanlora"));
    c.env("HF_HUB_OFFLINE", "1").env("OMP_NUM_THREADS", "1");
    c
}

/// The demo job with more steps and a closer save interval.
fn prepare(dir: &Path) -> PathBuf {
    let out = wanlora()
        .args(["demo", "--steps", &STEPS.to_string(), "--prepare"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let job = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    let text = std::fs::read_to_string(&job).unwrap();
    let text = text.replace(
        &format!("save_every: {}", STEPS / 2),
        &format!("save_every: {SAVE_EVERY}"),
    );
    std::fs::write(&job, text).unwrap();
    job
}

/// Loss per step from metrics.jsonl, the last line of a step winning (a resumed run repeats steps
/// after its last save).
fn losses(folder: &Path) -> BTreeMap<u64, f64> {
    let text = std::fs::read_to_string(folder.join("metrics.jsonl")).unwrap();
    text.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|v| (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap()))
        .collect()
}

/// `wanlora train` on `job` in the background, returned once `ready()` holds (within 5 minutes,
/// the run still going: `what` names the moment for the failure message).
fn train_until(job: &Path, what: &str, ready: impl Fn() -> bool) -> std::process::Child {
    let mut child = wanlora()
        .args(["train", "--no-progress"])
        .arg(job)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !ready() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before {what}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "not {what} after 5 minutes"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child
}

/// The run's status.json.
fn run_status(folder: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(folder.join("status.json")).unwrap()).unwrap()
}

/// `wanlora train` on `job` to the end, which must succeed; its stderr.
fn train_to_end(job: &Path) -> String {
    let out = wanlora()
        .args(["train", "--no-progress"])
        .arg(job)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    stderr
}

#[test]
fn sigkill_then_resume_reproduces_every_loss() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let (job_a, job_b) = (prepare(a.path()), prepare(b.path()));

    let status = wanlora()
        .args(["train", "--no-progress"])
        .arg(&job_a)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let reference = losses(&a.path().join("demo"));
    assert_eq!(reference.len(), STEPS as usize);

    // Kill the second run right after its first state save, in the middle of training.
    let marker = b
        .path()
        .join(format!("demo/state/step_{SAVE_EVERY:09}/complete"));
    let mut child = train_until(&job_b, "its first save", || marker.exists());
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let partial = losses(&b.path().join("demo"));
    assert!(
        partial.len() < STEPS as usize,
        "the run finished before it was killed"
    );
    assert_ne!(run_status(&b.path().join("demo"))["state"], "completed");

    assert!(train_to_end(&job_b).contains("resuming at step"));
    let resumed = losses(&b.path().join("demo"));
    assert_eq!(resumed.len(), STEPS as usize);
    for (step, loss) in &reference {
        let other = resumed[step];
        assert!(
            (loss - other).abs() <= 1e-6 * loss.abs(),
            "step {step}: {loss} uninterrupted, {other} after SIGKILL and resume"
        );
    }
    // The final LoRA files hold the same tensors (their metadata names different dataset folders).
    for e in ["high_noise", "low_noise"] {
        let open =
            |dir: &Path| WeightSet::open(&dir.join(format!("demo/demo_{e}.safetensors"))).unwrap();
        let (fa, fb) = (open(a.path()), open(b.path()));
        assert_eq!(fa.names(), fb.names());
        for n in fa.names() {
            let (x, y) = (
                fa.load(&n, Kind::Float, Device::Cpu).unwrap(),
                fb.load(&n, Kind::Float, Device::Cpu).unwrap(),
            );
            assert!(x.equal(&y), "final {e} LoRA tensor {n} differs");
        }
    }
}

/// Ctrl+C (SIGINT) finishes the step in flight, saves, reports `stopped`, exits cleanly; running the
/// job again continues from the saved step to the end.
#[test]
fn sigint_saves_and_exits_cleanly_then_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let job = prepare(dir.path());
    let folder = dir.path().join("demo");
    let mut child = train_until(&job, "three steps", || {
        folder.join("metrics.jsonl").exists() && losses(&folder).len() >= 3
    });
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "exit status after SIGINT: {exit}");
    let report = run_status(&folder);
    assert_eq!(report["state"], "stopped");
    let stopped_at = report["step"].as_u64().unwrap();
    assert!(stopped_at >= 3 && stopped_at < STEPS as u64);
    let step_file = folder.join(format!("demo_{stopped_at:09}_high_noise.safetensors"));
    assert!(
        step_file.exists(),
        "no checkpoint at the stop ({})",
        step_file.display()
    );

    assert!(train_to_end(&job).contains(&format!("resuming at step {stopped_at}")));
    assert_eq!(losses(&folder).len(), STEPS as usize);
}
