//! Expert-parallel training on the CPU: `wanlora train JOB --gpus 0,1` with the tiny model trains
//! each expert in a process of its own, and gives the same LoRA files (every save), the same loss
//! at every step and one job's status as the alternating run of the same job in one process.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::{Device, Kind};
use wanlora_torch::weights::WeightSet;

const STEPS: u32 = 6;

mod common;
use common::{demo_job, wanlora};

/// The demo job named `name`: 6 steps, experts switching every 2, a save every 2, no previews.
fn prepare(dir: &Path, name: &str) -> PathBuf {
    let demo = demo_job(dir, STEPS);
    let text = std::fs::read_to_string(&demo)
        .unwrap()
        .replace("  name: demo\n", &format!("  name: {name}\n"))
        .replace("save_every: 3", "save_every: 2")
        .replace("switch_boundary_every: 5", "switch_boundary_every: 2")
        .replace(
            "        skip_first_sample: true\n",
            "        disable_sampling: true\n",
        );
    assert!(text.contains("save_every: 2") && text.contains("switch_boundary_every: 2"));
    let job = dir.join(format!("{name}.yaml"));
    std::fs::write(&job, text).unwrap();
    job
}

fn train(job: &Path, extra: &[&str]) {
    let out = wanlora()
        .args(["train", "--no-progress"])
        .arg(job)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "wanlora train {extra:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn tensors(path: &Path) -> BTreeMap<String, tch::Tensor> {
    let set = WeightSet::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    set.names()
        .into_iter()
        .map(|n| {
            let t = set.load(&n, Kind::Float, Device::Cpu).unwrap();
            (n, t)
        })
        .collect()
}

/// (step, expert) → loss of the training records of metrics.jsonl.
fn losses(folder: &Path) -> BTreeMap<u64, (String, f64)> {
    std::fs::read_to_string(folder.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v.get("loss").is_some())
        .map(|v| {
            (
                v["step"].as_u64().unwrap(),
                (
                    v["expert"].as_str().unwrap().to_string(),
                    v["loss"].as_f64().unwrap(),
                ),
            )
        })
        .collect()
}

#[test]
fn expert_parallel_equals_the_alternating_run() {
    let dir = tempfile::tempdir().unwrap();
    let (alt, par) = (prepare(dir.path(), "alt"), prepare(dir.path(), "par"));
    train(&alt, &[]);
    train(&par, &["--gpus", "0,1"]);
    let (alt_out, par_out) = (dir.path().join("alt"), dir.path().join("par"));

    for e in ["high_noise", "low_noise"] {
        for step in ["_000000002", "_000000004", ""] {
            let (a, p) = (
                tensors(&alt_out.join(format!("alt{step}_{e}.safetensors"))),
                tensors(&par_out.join(format!("par{step}_{e}.safetensors"))),
            );
            assert_eq!(a.len(), p.len());
            for (n, t) in &a {
                assert!(t.equal(&p[n]), "{e}{step}: {n} differs");
            }
        }
        // Each rank kept its own states.
        assert!(par_out.join("state").join(e).is_dir());
    }
    // One metrics stream, every step once, the expert named, the losses of the alternating run.
    let (a, p) = (losses(&alt_out), losses(&par_out));
    assert_eq!(a.len(), STEPS as usize);
    assert_eq!(a, p);
    let experts: Vec<&str> = p.values().map(|(e, _)| e.as_str()).collect();
    assert_eq!(
        experts,
        [
            "high_noise",
            "high_noise",
            "low_noise",
            "low_noise",
            "high_noise",
            "high_noise"
        ]
    );
    // One job: one status, at the job's step.
    let status: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(par_out.join("status.json")).unwrap())
            .unwrap();
    assert_eq!(status["state"], "completed");
    assert_eq!(status["step"], STEPS);
    assert!(!par_out.join("pid").exists());
    assert!(par_out.join("loss.png").exists());
}

#[test]
fn bad_gpu_lists_are_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let job = prepare(dir.path(), "bad");
    for (gpus, says) in [
        ("0,x", "\"x\" is not a GPU index"),
        ("0,1,2", "3 GPUs; expert-parallel training uses two"),
    ] {
        let out = wanlora()
            .args(["train", "--no-progress"])
            .arg(&job)
            .args(["--gpus", gpus])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "--gpus {gpus}: {err}");
    }
    // The same in the job file, with the key named.
    let text = std::fs::read_to_string(&job).unwrap().replace(
        "        batch_size: 1\n",
        "        batch_size: 1\n        gpus: [0, 1, 2]\n",
    );
    std::fs::write(&job, text).unwrap();
    let out = wanlora()
        .args(["train", "--no-progress"])
        .arg(&job)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("train.gpus"), "{err}");
}
