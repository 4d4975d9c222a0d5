//! Exact resume: a run killed with SIGKILL and started again gives the same loss at every step as a
//! run never interrupted (tiny model, f32, CPU), and its files load back.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tch::{Device, Kind};
use wanlora_torch::weights::WeightSet;

const STEPS: u32 = 240;
const SAVE_EVERY: u32 = 40;

#[allow(dead_code)] // the LoRA helpers are for the other tests
mod common;
use common::{demo_job, wanlora};

/// The demo job with more steps and a closer save interval.
fn prepare(dir: &Path) -> PathBuf {
    prepare_with(dir, STEPS, SAVE_EVERY)
}

/// The demo job with `steps` steps, saving every `save_every`.
fn prepare_with(dir: &Path, steps: u32, save_every: u32) -> PathBuf {
    let job = demo_job(dir, steps);
    let text = std::fs::read_to_string(&job).unwrap();
    let text = text.replace(
        &format!("save_every: {}", steps / 2),
        &format!("save_every: {save_every}"),
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
    assert_eq!(losses(&b.path().join("demo")).len(), STEPS as usize);
    assert_same_run(a.path(), b.path(), "SIGKILL and resume");
}

/// Run `b` (interrupted: `how`) has every step's loss of run `a` and the same final LoRA tensors
/// (their metadata names different dataset folders).
fn assert_same_run(a: &Path, b: &Path, how: &str) {
    let (reference, resumed) = (losses(&a.join("demo")), losses(&b.join("demo")));
    assert_eq!(reference.len(), resumed.len(), "{how}");
    for (step, loss) in &reference {
        let other = resumed[step];
        assert!(
            (loss - other).abs() <= 1e-6 * loss.abs(),
            "step {step}: {loss} uninterrupted, {other} after {how}"
        );
    }
    for e in ["high_noise", "low_noise"] {
        let open =
            |dir: &Path| WeightSet::open(&dir.join(format!("demo/demo_{e}.safetensors"))).unwrap();
        let (fa, fb) = (open(a), open(b));
        assert_eq!(fa.names(), fb.names());
        for n in fa.names() {
            let (x, y) = (
                fa.load(&n, Kind::Float, Device::Cpu).unwrap(),
                fb.load(&n, Kind::Float, Device::Cpu).unwrap(),
            );
            assert!(x.equal(&y), "final {e} LoRA tensor {n} differs after {how}");
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

/// The files under `dir` (recursively) whose name marks an atomic write's temporary file.
fn temp_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(temp_files(&path));
        } else if entry.file_name().to_string_lossy().contains(".tmp-") {
            found.push(path);
        }
    }
    found
}

/// A save that cannot be written (here: files larger than 100 kB refused by RLIMIT_FSIZE, as a full
/// disk refuses them) marks the job failed with the file named, writes the failure to log.txt,
/// removes the pid file and leaves no temporary file behind.
#[test]
fn a_save_that_cannot_be_written_marks_the_job_failed_and_leaves_no_temp_file() {
    let dir = tempfile::tempdir().unwrap();
    let job = prepare(dir.path());
    let folder = dir.path().join("demo");
    let mut train = wanlora();
    train
        .args(["train", "--no-progress"])
        .arg(&job)
        .stderr(Stdio::null());
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        train.pre_exec(|| {
            // Every file of the job stays below 100 kB except a saved state (about 200 kB per expert).
            let limit = libc::rlimit {
                rlim_cur: 100_000,
                rlim_max: 100_000,
            };
            libc::setrlimit(libc::RLIMIT_FSIZE, &limit);
            // A write past the limit then fails with EFBIG instead of killing the process.
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            Ok(())
        });
    }
    let exit = train.status().unwrap();
    assert!(
        !exit.success(),
        "the run succeeded despite the file size limit"
    );
    let report = run_status(&folder);
    assert_eq!(report["state"], "failed", "{report}");
    let error = report["error"].as_str().unwrap();
    assert!(error.contains("000000040"), "{error}");
    let log = std::fs::read_to_string(folder.join("log.txt")).unwrap();
    assert!(log.contains("failed: "), "{log}");
    assert!(!folder.join("pid").exists(), "the pid file was left");
    assert_eq!(temp_files(&folder), Vec::<PathBuf>::new());
    // A stale temporary file of a killed run is removed by the next start.
    let stale = folder.join("state/.high_noise.safetensors.tmp-1");
    std::fs::write(&stale, b"left by a killed run").unwrap();
    let mut child = train_until(&job, "the stale file was removed", || !stale.exists());
    child.kill().unwrap();
    child.wait().unwrap();
}

/// `n` more clips of distinct content (and captions) in the demo's dataset: a longer cache pass.
fn add_noise_clips(dir: &Path, n: usize) {
    for k in 0..n {
        let (frames, size) = (9, 64);
        let data = (0..frames * size * size * 3)
            .map(|i| ((i * (k + 3) + k * 37) % 251) as u8)
            .collect();
        let clip = wanlora_data::media::Frames {
            frames,
            height: size,
            width: size,
            data,
        };
        let path = dir.join(format!("dataset/noise_{k:02}.mp4"));
        wanlora_data::media::write_mp4(&clip, 8.0, &path).unwrap();
        std::fs::write(path.with_extension("txt"), format!("noise pattern {k}")).unwrap();
    }
}

/// Ctrl+C while the latent cache pass runs ends the run cleanly: exit 0, status `stopped`, the pid
/// file removed, no step trained; running the job again trains it.
#[test]
fn sigint_during_the_latent_cache_pass_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let job = prepare_with(dir.path(), 4, 2);
    // 48 more clips make the cache pass last long enough to be interrupted.
    add_noise_clips(dir.path(), 48);
    let folder = dir.path().join("demo");
    let child = train_until(&job, "the cache pass", || {
        folder.join("status.json").exists()
            && std::fs::read_to_string(folder.join("status.json"))
                .is_ok_and(|t| t.contains("Encoding latents"))
    });
    assert!(Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "exit status after SIGINT: {}",
        out.status
    );
    let report = run_status(&folder);
    assert_eq!(report["state"], "stopped", "{report}");
    assert!(
        report["message"]
            .as_str()
            .unwrap()
            .contains("caching latents"),
        "{report}"
    );
    assert!(!folder.join("pid").exists());
    assert!(!folder.join("metrics.jsonl").exists(), "a step was trained");
    train_to_end(&job);
    assert_eq!(losses(&folder).len(), 4);
}

/// The soak: 20 SIGKILLs at random points — in the latent cache pass, while loading, during saves,
/// between steps — each followed by a restart, then a run to the end: every step's loss and the
/// final LoRA files equal those of a run never interrupted.
#[test]
fn twenty_sigkills_then_resume_equal_an_uninterrupted_run() {
    const SOAK_STEPS: u32 = 160;
    const SOAK_SAVE_EVERY: u32 = 4;
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let job_a = prepare_with(a.path(), SOAK_STEPS, SOAK_SAVE_EVERY);
    let job_b = prepare_with(b.path(), SOAK_STEPS, SOAK_SAVE_EVERY);
    for dir in [a.path(), b.path()] {
        add_noise_clips(dir, 16);
    }
    train_to_end(&job_a);

    let folder = b.path().join("demo");
    let status_has = |text: &str| {
        std::fs::read_to_string(folder.join("status.json")).is_ok_and(|t| t.contains(text))
    };
    let steps_logged =
        || std::fs::read_to_string(folder.join("metrics.jsonl")).map_or(0, |t| t.lines().count());
    let mut rng = wanlora_data::rng::SplitMix64::new(22);
    let mut kinds = Vec::new();
    for kill in 0..20 {
        // The status of the run killed before must not count as this run's.
        let _ = std::fs::remove_file(folder.join("status.json"));
        let mut child = if kill == 0 {
            kinds.push("cache pass");
            let delay = Duration::from_millis(rng.below(300));
            let entered = std::cell::Cell::new(None::<Instant>);
            train_until(&job_b, "the cache pass", || {
                if !status_has("Encoding latents") {
                    return false;
                }
                let since = entered.get().unwrap_or_else(Instant::now);
                entered.set(Some(since));
                since.elapsed() >= delay
            })
        } else {
            match rng.below(3) {
                0 => {
                    kinds.push("save");
                    train_until(&job_b, "a save", || status_has("\"saving\""))
                }
                1 => {
                    kinds.push("steps");
                    let target = steps_logged() + 1 + rng.below(6) as usize;
                    train_until(&job_b, "more steps", || steps_logged() >= target)
                }
                _ => {
                    kinds.push("start");
                    let delay = Duration::from_millis(rng.below(1500));
                    let started = Instant::now();
                    train_until(&job_b, "the delay", || started.elapsed() >= delay)
                }
            }
        };
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    assert!(
        !folder.join("demo_high_noise.safetensors").exists(),
        "the run finished during the soak ({kinds:?})"
    );
    train_to_end(&job_b);
    assert_eq!(run_status(&folder)["state"], "completed");
    assert_eq!(temp_files(&folder), Vec::<PathBuf>::new());
    assert_same_run(a.path(), b.path(), &format!("the kills {kinds:?}"));
}
