//! Expert-parallel training on the CPU: `wanlora train JOB --gpus 0,1` with the tiny model trains
//! each expert in a process of its own, and gives the same LoRA files (every save), the same loss
//! at every step and one job's status as the alternating run of the same job in one process; a
//! rank killed mid-run fails the job (the other rank saves), and running it again resumes both to
//! the alternating run's files. Its previews (the high-noise phase in one rank, handed to the
//! other) equal the alternating run's. With four devices both modes combine: each expert trains on
//! a data-parallel group of two, and the files equal the alternating run's with the same batches.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const STEPS: u32 = 6;

mod common;
use common::{demo_job, lora_tensors as tensors, run_ok, wanlora};

/// The demo job named `name`: 6 steps, experts switching every 2, a save every 2, no previews.
fn prepare(dir: &Path, name: &str) -> PathBuf {
    prepare_with(dir, name, STEPS)
}

/// [`prepare`] with previews: a UniPC preview after step 3 (high-noise expert 2 steps in, the
/// low-noise one 1) and at the end.
fn prepare_with_previews(dir: &Path, name: &str) -> PathBuf {
    let job = prepare(dir, name);
    let text = std::fs::read_to_string(&job)
        .unwrap()
        .replace(
            "        disable_sampling: true\n",
            "        skip_first_sample: true\n",
        )
        .replace(
            &format!("sample_every: {STEPS}\n"),
            "sample_every: 3\n        sampler: unipc\n",
        );
    assert!(text.contains("sample_every: 3") && !text.contains("disable_sampling"));
    std::fs::write(&job, text).unwrap();
    job
}

/// [`prepare`] with `steps` steps.
fn prepare_with(dir: &Path, name: &str, steps: u32) -> PathBuf {
    let demo = demo_job(dir, steps);
    let text = std::fs::read_to_string(&demo)
        .unwrap()
        .replace("  name: demo\n", &format!("  name: {name}\n"))
        .replace(&format!("save_every: {}", steps / 2), "save_every: 2")
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
    run_ok(
        wanlora()
            .args(["train", "--no-progress"])
            .arg(job)
            .args(extra),
    );
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

/// Every LoRA file of `a` (job `na`) equals the one of `b` (job `nb`) at the same save.
fn assert_same_saves(a: &Path, na: &str, b: &Path, nb: &str, saves: &[&str]) {
    for e in ["high_noise", "low_noise"] {
        for step in saves {
            let (x, y) = (
                tensors(&a.join(format!("{na}{step}_{e}.safetensors"))),
                tensors(&b.join(format!("{nb}{step}_{e}.safetensors"))),
            );
            assert_eq!(x.len(), y.len());
            for (n, t) in &x {
                assert!(t.equal(&y[n]), "{e}{step}: {n} differs");
            }
        }
    }
}

fn status(folder: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(folder.join("status.json")).unwrap()).unwrap()
}

#[test]
fn a_killed_rank_stops_the_job_which_then_resumes_to_the_same_files() {
    const LONG: u32 = 12;
    let dir = tempfile::tempdir().unwrap();
    let (alt, par) = (
        prepare_with(dir.path(), "alt", LONG),
        prepare_with(dir.path(), "par", LONG),
    );
    train(&alt, &[]);
    let par_out = dir.path().join("par");
    let mut supervisor = wanlora()
        .args(["train", "--no-progress"])
        .arg(&par)
        .args(["--gpus", "0,1"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The low-noise rank (steps 2, 3, 6, 7, 10, 11) is killed once it has passed its save at 4.
    let low = par_out.join("ranks/low_noise");
    let started = std::time::Instant::now();
    let pid = loop {
        assert!(
            supervisor.try_wait().unwrap().is_none(),
            "the job ended before the kill"
        );
        assert!(
            started.elapsed().as_secs() < 300,
            "no low-noise step 5 after 5 minutes"
        );
        if let Ok(s) = std::fs::read_to_string(low.join("status.json")) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&s) {
                if v["step"].as_u64().unwrap_or(0) >= 5 && v["state"] == "training" {
                    break v["pid"].as_u64().unwrap() as i32;
                }
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    // SAFETY: kill(2) on the rank this test's job started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let code = supervisor.wait().unwrap();
    assert!(!code.success(), "a job with a killed rank must fail");
    let failed = status(&par_out);
    assert_eq!(failed["state"], "failed");
    let error = failed["error"].as_str().unwrap();
    assert!(
        error.contains("low_noise rank was killed by signal 9"),
        "{error}"
    );
    assert!(!par_out.join("pid").exists());
    // Run again: both ranks resume from their states and end as the alternating run did.
    train(&par, &["--gpus", "0,1"]);
    assert_eq!(status(&par_out)["state"], "completed");
    assert_same_saves(
        &dir.path().join("alt"),
        "alt",
        &par_out,
        "par",
        &["_000000010", ""],
    );
    assert_eq!(losses(&dir.path().join("alt")), losses(&par_out));
}

/// The files of `folder/samples`, by name.
fn samples(folder: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(folder.join("samples"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

#[test]
fn expert_parallel_equals_the_alternating_run() {
    let dir = tempfile::tempdir().unwrap();
    let (alt, par) = (
        prepare_with_previews(dir.path(), "alt"),
        prepare_with_previews(dir.path(), "par"),
    );
    train(&alt, &[]);
    let (alt_out, par_out) = (dir.path().join("alt"), dir.path().join("par"));
    // A preview asked for from the start: the supervisor hands the request to both ranks.
    std::fs::create_dir_all(par_out.join("control")).unwrap();
    std::fs::write(par_out.join("control/sample_now"), b"").unwrap();
    train(&par, &["--gpus", "0,1"]);

    assert_same_saves(
        &alt_out,
        "alt",
        &par_out,
        "par",
        &["_000000002", "_000000004", ""],
    );
    for e in ["high_noise", "low_noise"] {
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
    let status = status(&par_out);
    assert_eq!(status["state"], "completed");
    assert_eq!(status["step"], STEPS);
    assert!(!par_out.join("pid").exists());
    assert!(par_out.join("loss.png").exists());
    // The previews: the high-noise rank's phase handed to the low-noise rank, which finished
    // them to the same frames (the same files) as the alternating run's.
    let (a, p) = (samples(&alt_out), samples(&par_out));
    let names: Vec<&str> = a.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "000000003_0.jpg",
            "000000003_0.mp4",
            "000000006_0.jpg",
            "000000006_0.mp4"
        ]
    );
    for (name, bytes) in &a {
        assert!(p.get(name) == Some(bytes), "samples/{name} differs");
    }
    // The requested one: made by both ranks at the step the high-noise rank took the request.
    let requested: Vec<&str> = p
        .keys()
        .filter(|n| !a.contains_key(*n))
        .map(String::as_str)
        .collect();
    assert_eq!(requested.len(), 2, "{requested:?}");
    let stem = requested[0].strip_suffix(".jpg").unwrap();
    assert!(stem < "000000006_0", "{requested:?}");
    assert_eq!(requested[1], format!("{stem}.mp4"));
    let log = std::fs::read_to_string(par_out.join("log.txt")).unwrap();
    assert!(
        log.contains("[high_noise] sample 0 at step 3: high-noise phase handed over"),
        "{log}"
    );
    assert!(!log.contains("skipped"), "{log}");
    assert!(!par_out.join("ranks/previews").exists(), "hand-offs left");
}

#[test]
fn four_devices_train_each_expert_on_a_data_parallel_group_of_two() {
    const STEPS4: u32 = 4;
    let dir = tempfile::tempdir().unwrap();
    // Batches of 2 (one sample per rank of a group), fp32 files, lr 3e-4 (see data_parallel.rs).
    let batched = |name: &str| {
        let job = prepare_with(dir.path(), name, STEPS4);
        let text = std::fs::read_to_string(&job)
            .unwrap()
            .replace("        batch_size: 1\n", "        batch_size: 2\n")
            .replace("        dtype: bf16\n", "        dtype: float32\n")
            .replace("        lr: 0.003\n", "        lr: 0.0003\n")
            // A preview after step 2 and the final one.
            .replace(
                "        disable_sampling: true\n",
                "        skip_first_sample: true\n",
            )
            .replace(&format!("sample_every: {STEPS4}\n"), "sample_every: 2\n");
        assert!(text.contains("batch_size: 2") && text.contains("lr: 0.0003"));
        assert!(text.contains("sample_every: 2\n"));
        std::fs::write(&job, text).unwrap();
        job
    };
    let (alt, par) = (batched("alt"), batched("par"));
    train(&alt, &[]);
    train(&par, &["--gpus", "0,1,2,3"]);
    let (alt_out, par_out) = (dir.path().join("alt"), dir.path().join("par"));
    for e in ["high_noise", "low_noise"] {
        for save in ["_000000002", ""] {
            let (a, b) = (
                tensors(&alt_out.join(format!("alt{save}_{e}.safetensors"))),
                tensors(&par_out.join(format!("par{save}_{e}.safetensors"))),
            );
            assert_eq!(a.len(), b.len());
            for (n, t) in &a {
                let diff = (t - &b[n]).abs().max().double_value(&[]);
                assert!(diff <= 1e-6, "{e}{save} {n}: max |difference| {diff:e}");
            }
        }
    }
    // One job: every step once in the metrics (each group's rank 0 writes), one status.
    let (a, p) = (losses(&alt_out), losses(&par_out));
    assert_eq!(p.len(), STEPS4 as usize);
    for (step, (expert, loss)) in &a {
        let (pe, pl) = &p[step];
        assert_eq!(expert, pe);
        assert!((loss - pl).abs() <= 1e-5, "step {step}: {loss} vs {pl}");
    }
    assert_eq!(status(&par_out)["state"], "completed");
    let log = std::fs::read_to_string(par_out.join("log.txt")).unwrap();
    assert!(log.contains("(rank 1 of 2 over gloo)"), "{log}");
    // The previews, handed from the high-noise group's rank 0 to the low-noise group's while
    // their peers wait in the next collective; made once each, as in the alternating run.
    let names = |folder: &Path| -> Vec<String> {
        let mut n: Vec<String> = std::fs::read_dir(folder.join("samples"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        n.sort();
        n
    };
    assert_eq!(names(&par_out), names(&alt_out));
    assert_eq!(
        names(&par_out),
        [
            "000000002_0.jpg",
            "000000002_0.mp4",
            "000000004_0.jpg",
            "000000004_0.mp4"
        ]
    );
    assert!(!log.contains("skipped"), "{log}");
    assert!(log.contains("high-noise phase handed over"), "{log}");
    assert!(!par_out.join("ranks/previews").exists(), "hand-offs left");
}

#[test]
fn bad_gpu_lists_and_launcher_variables_are_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let job = prepare(dir.path(), "bad");
    for (gpus, says) in [
        ("0,x", "\"x\" is not a GPU index"),
        ("0,1,2", "3 GPUs for two experts"),
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
    // Launcher variables: a bad one is named, a world of several processes is refused.
    for (vars, says) in [
        (
            [("MASTER_PORT", "http"), ("WORLD_SIZE", "1"), ("RANK", "0")],
            "MASTER_PORT=\"http\" is not a port from 1 to 65535",
        ),
        (
            [("MASTER_PORT", "29500"), ("WORLD_SIZE", "2"), ("RANK", "2")],
            "RANK=2 is not below WORLD_SIZE=2",
        ),
    ] {
        let out = wanlora()
            .args(["train", "--no-progress"])
            .arg(&job)
            .env("MASTER_ADDR", "localhost")
            .env("LOCAL_RANK", "0")
            .envs(vars)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{vars:?}: {err}");
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
