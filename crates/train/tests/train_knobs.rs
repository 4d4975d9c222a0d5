//! The trainer's knobs on the demo's tiny model: DOP with EMA, 8-bit AdamW and differential guidance,
//! blank-prompt preservation, divergence handling, and both ways of naming the model (ComfyUI single
//! files, a Hugging Face repo id in the local cache).

use std::path::{Path, PathBuf};
use tch::{Device, Kind};
use wanlora_hub::HubConfig;
use wanlora_torch::weights::{save_safetensors, WeightSet};
use wanlora_train::trainer::{train, RunOptions};
use wanlora_train::TrainError;

fn hub(dir: &Path) -> HubConfig {
    HubConfig::from_vars(|k| match k {
        "HF_HUB_OFFLINE" => Some("1".into()),
        "HF_HOME" => Some(dir.join("hf").display().to_string()),
        _ => None,
    })
}

/// The demo job with `edit` applied to its text, `steps` steps.
fn job(dir: &Path, steps: u32, edit: impl Fn(String) -> String) -> PathBuf {
    let path = wanlora_train::demo::prepare(dir, steps).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, edit(text)).unwrap();
    path
}

fn opts(dir: &Path) -> RunOptions {
    RunOptions {
        progress: false,
        stop_after: None,
        hub: hub(dir),
    }
}

fn metrics(out: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn dop_with_ema_adamw8bit_and_differential_guidance() {
    tch::set_num_threads(2);
    let dir = tempfile::tempdir().unwrap();
    let path = job(dir.path(), 6, |t| {
        t.replace("        optimizer: adamw\n", "        optimizer: adamw8bit\n").replace(
            "        skip_first_sample: true\n",
            "        disable_sampling: true\n        diff_output_preservation: true\n        diff_output_preservation_class: shape\n        do_differential_guidance: true\n        differential_guidance_scale: 2.0\n        ema_config:\n          use_ema: true\n          ema_decay: 0.5\n",
        )
    });
    let summary = train(wanlora_config::load_job(&path).unwrap(), opts(dir.path())).unwrap();
    let m = metrics(&summary.output);
    assert_eq!(m.len(), 6);
    for line in &m {
        let pres = line["loss_preservation"]
            .as_f64()
            .expect("preservation loss logged");
        assert!(pres.is_finite() && pres >= 0.0);
        let total = line["loss"].as_f64().unwrap();
        assert!((total - line["loss_main"].as_f64().unwrap() - pres).abs() < 1e-9);
    }
    // The first step's preservation loss is exactly zero: the LoRA starts with B = 0, so the model
    // with LoRA equals the base model on the class caption.
    assert_eq!(m[0]["loss_preservation"].as_f64().unwrap(), 0.0);
    for e in ["high_noise", "low_noise"] {
        let (lora, ema) = (
            WeightSet::open(&summary.output.join(format!("demo_{e}.safetensors"))).unwrap(),
            WeightSet::open(&summary.output.join(format!("demo_{e}_ema.safetensors"))).unwrap(),
        );
        let n = "diffusion_model.blocks.0.self_attn.q.lora_B.weight";
        let (a, b) = (
            lora.load(n, Kind::Float, Device::Cpu).unwrap(),
            ema.load(n, Kind::Float, Device::Cpu).unwrap(),
        );
        assert!(!a.equal(&b), "{e}: the EMA file equals the LoRA");
        assert!(
            b.abs().sum(Kind::Float).double_value(&[]) > 0.0,
            "{e}: the EMA did not move"
        );
    }
}

#[test]
fn blank_prompt_preservation_logs_its_loss() {
    tch::set_num_threads(2);
    let dir = tempfile::tempdir().unwrap();
    let path = job(dir.path(), 3, |t| {
        t.replace(
            "        skip_first_sample: true\n",
            "        disable_sampling: true\n        blank_prompt_preservation: true\n",
        )
    });
    let summary = train(wanlora_config::load_job(&path).unwrap(), opts(dir.path())).unwrap();
    assert!(metrics(&summary.output)
        .iter()
        .all(|m| m["loss_preservation"].as_f64().is_some()));
}

#[test]
fn a_diverging_run_stops_after_five_bad_steps_and_says_why() {
    tch::set_num_threads(2);
    let dir = tempfile::tempdir().unwrap();
    // A learning rate that makes the weights overflow after the first update; no save in reach
    // (a save would refuse the non-finite values first).
    let path = job(dir.path(), 20, |t| {
        t.replace("        lr: 0.003\n", "        lr: 1.0e38\n")
            .replace("save_every: 10\n", "save_every: 100\n")
            .replace(
                "        max_grad_norm: 1.0\n",
                "        max_grad_norm: 0.0\n",
            )
    });
    let err = train(wanlora_config::load_job(&path).unwrap(), opts(dir.path())).unwrap_err();
    assert!(
        matches!(err, TrainError::Diverged { count: 5, .. }),
        "{err}"
    );
    let status: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("demo/status.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(status["state"], "failed");
    assert!(status["error"].as_str().unwrap().contains("non-finite"));
}

/// The tiny model's experts as ComfyUI single files (original names under `diffusion_model.`), its
/// text encoder and VAE as single files, and its tokenizer folder.
#[test]
fn a_job_of_comfyui_single_files_trains() {
    tch::set_num_threads(2);
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    wanlora_train::demo::prepare(dir.path(), 2).unwrap();
    let files = dir.path().join("comfy");
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(files.join(wanlora_train::tiny::MARKER), b"tiny").unwrap();
    // Single files carry no configuration; the tiny model's head width (24) cannot be inferred from
    // shapes, so its config.json sits next to the files (real Wan files need none: their heads are 128 wide).
    std::fs::copy(
        model.join("transformer/config.json"),
        files.join("config.json"),
    )
    .unwrap();
    for (folder, name) in [("transformer", "high"), ("transformer_2", "low")] {
        let set = WeightSet::open(&model.join(folder)).unwrap();
        let tensors: Vec<_> = set
            .names()
            .into_iter()
            .map(|n| {
                let original = wanlora_models::transformer::naming::from_diffusers(&n).unwrap();
                (
                    format!("diffusion_model.{original}"),
                    set.load(&n, Kind::Half, Device::Cpu).unwrap(),
                )
            })
            .collect();
        save_safetensors(
            &files.join(format!("wan2.2_i2v_{name}_noise_14B_fp16.safetensors")),
            &tensors,
            &Default::default(),
        )
        .unwrap();
    }
    let path = dir.path().join("job.yaml");
    let text = std::fs::read_to_string(&path).unwrap().replace(
        &format!("        name_or_path: \"{}\"\n", model.display()),
        &format!(
            "        high_noise_model_path: {}\n        low_noise_model_path: {}\n        te_name_or_path: {}\n        vae_path: {}\n        tokenizer_path: {}\n",
            files.join("wan2.2_i2v_high_noise_14B_fp16.safetensors").display(),
            files.join("wan2.2_i2v_low_noise_14B_fp16.safetensors").display(),
            model.join("text_encoder/model.safetensors").display(),
            model.join("vae/diffusion_pytorch_model.safetensors").display(),
            model.join("tokenizer").display(),
        ),
    );
    assert!(
        text.contains("high_noise_model_path"),
        "the job's model key was not replaced"
    );
    std::fs::write(&path, text).unwrap();
    let summary = train(wanlora_config::load_job(&path).unwrap(), opts(dir.path())).unwrap();
    assert_eq!(summary.step, 2);
    assert!(summary.output.join("demo_high_noise.safetensors").exists());
}

/// The tiny model as a Hugging Face repo id, found in the local cache (standard layout) offline.
#[test]
fn a_job_naming_a_repo_id_in_the_cache_trains() {
    tch::set_num_threads(2);
    let dir = tempfile::tempdir().unwrap();
    wanlora_train::demo::prepare(dir.path(), 2).unwrap();
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let repo = dir.path().join("hf/hub/models--wanlora--tiny-wan");
    let snapshot = repo.join("snapshots").join(commit);
    copy_dir(&dir.path().join("model"), &snapshot);
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), commit).unwrap();
    let path = dir.path().join("job.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let model_line = text
        .lines()
        .find(|l| l.trim_start().starts_with("name_or_path:"))
        .unwrap()
        .to_string();
    std::fs::write(
        &path,
        text.replace(&model_line, "        name_or_path: wanlora/tiny-wan"),
    )
    .unwrap();
    let summary = train(wanlora_config::load_job(&path).unwrap(), opts(dir.path())).unwrap();
    assert_eq!(summary.step, 2);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

/// The job file's `save_every` set to `every`.
fn set_save_every(path: &Path, every: u32) {
    let text = std::fs::read_to_string(path).unwrap();
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("save_every:"))
        .unwrap()
        .to_string();
    std::fs::write(
        path,
        text.replace(&line, &format!("        save_every: {every}")),
    )
    .unwrap();
}

fn all_finite(path: &Path) -> bool {
    let set = WeightSet::open(path).unwrap();
    set.names().iter().all(|n| {
        let t = set.load(n, Kind::Float, Device::Cpu).unwrap();
        t.isfinite().all().int64_value(&[]) != 0
    })
}

/// With `switch_boundary_every: 1` the experts alternate; one expert whose LoRA went non-finite
/// (here: its saved state poisoned with NaN) must still stop the run although the other expert's
/// steps are finite, and no save may write its NaN values or rotate away the clean state.
#[test]
fn one_diverging_expert_stops_the_run_and_nothing_non_finite_is_saved() {
    tch::set_num_threads(2);
    let dir = tempfile::tempdir().unwrap();
    let path = job(dir.path(), 40, |t| {
        t.replace("switch_boundary_every: 5", "switch_boundary_every: 1")
    });
    let out = dir.path().join("demo");
    set_save_every(&path, 2);
    let first = RunOptions {
        stop_after: Some(2),
        ..opts(dir.path())
    };
    train(wanlora_config::load_job(&path).unwrap(), first).unwrap();
    let state = out.join("state/step_000000002");
    assert!(state.join("complete").exists());

    // The high-noise expert's LoRA values become NaN; the state stays consistent (checksums too).
    let file = state.join("high_noise.safetensors");
    let set = WeightSet::open(&file).unwrap();
    let tensors: Vec<(String, tch::Tensor)> = set
        .names()
        .into_iter()
        .map(|n| {
            let t = set.load(&n, Kind::Float, Device::Cpu).unwrap();
            let t = if n == "lora" { t.fill(f64::NAN) } else { t };
            (n, t)
        })
        .collect();
    let meta = set.metadata().clone();
    drop(set);
    save_safetensors(&file, &tensors, &meta.into_iter().collect()).unwrap();
    wanlora_train::checkpoint::seal_state(&state).unwrap();

    // A save due at step 3 refuses the NaN values and keeps the clean state and files.
    set_save_every(&path, 3);
    let err = train(wanlora_config::load_job(&path).unwrap(), opts(dir.path())).unwrap_err();
    assert!(
        matches!(&err, TrainError::NonFiniteValues { step: 3, parts } if parts == "high_noise LoRA"),
        "{err}"
    );
    assert!(err.to_string().contains("the last good checkpoint is kept"));
    assert!(
        state.join("complete").exists(),
        "the clean state was removed"
    );
    assert!(!out.join("state/step_000000003").exists());
    for e in ["high_noise", "low_noise"] {
        assert!(!out.join(format!("demo_000000003_{e}.safetensors")).exists());
        assert!(all_finite(
            &out.join(format!("demo_000000002_{e}.safetensors"))
        ));
    }
    let status: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("status.json")).unwrap()).unwrap();
    assert_eq!(status["state"], "failed");

    // Without a save in reach, the high-noise expert's five non-finite steps in a row stop the run
    // although every low-noise step between them was finite.
    set_save_every(&path, 1000);
    let err = train(wanlora_config::load_job(&path).unwrap(), opts(dir.path())).unwrap_err();
    assert!(
        matches!(
            err,
            TrainError::Diverged {
                count: 5,
                expert: "high_noise",
                ..
            }
        ),
        "{err}"
    );
    let low_steps = metrics(&out)
        .iter()
        .filter(|m| m["expert"] == "low_noise" && m["step"].as_u64().unwrap() > 2)
        .count();
    assert!(low_steps >= 4, "{low_steps} finite low-noise steps");
    assert!(state.join("complete").exists());
    assert!(!out.join("demo_high_noise.safetensors").exists());
}

/// A second trainer of a job that is being trained stops before it writes anything and names the
/// process that holds the job folder.
#[test]
fn a_second_trainer_of_a_running_job_is_refused() {
    tch::set_num_threads(2);
    let dir = tempfile::tempdir().unwrap();
    let path = job(dir.path(), 4, |t| t);
    let first = wanlora_train::trainer::Trainer::new(
        wanlora_config::load_job(&path).unwrap(),
        opts(dir.path()),
    )
    .unwrap();
    let out = dir.path().join("demo");
    let status_before = std::fs::read_to_string(out.join("status.json")).unwrap();
    let err = train(wanlora_config::load_job(&path).unwrap(), opts(dir.path())).unwrap_err();
    let me = std::process::id();
    assert!(
        matches!(err, TrainError::JobInUse { pid: Some(p), .. } if p == me),
        "{err}"
    );
    assert!(err.to_string().contains(&format!("process {me}")), "{err}");
    // The running trainer's status and pid file are untouched.
    assert_eq!(
        std::fs::read_to_string(out.join("status.json")).unwrap(),
        status_before
    );
    assert_eq!(
        std::fs::read_to_string(out.join("pid")).unwrap(),
        me.to_string()
    );
    let summary = first.run().unwrap();
    assert_eq!(summary.step, 4);
    // Once the first has ended, the job can be trained again.
    train(wanlora_config::load_job(&path).unwrap(), opts(dir.path())).unwrap();
}

/// `control/stop` during set-up (here: already there when caption encoding starts) ends the run
/// cleanly as `stopped`, before any step, with the pid file removed.
#[test]
fn a_stop_during_caption_encoding_ends_the_run_cleanly() {
    tch::set_num_threads(2);
    let dir = tempfile::tempdir().unwrap();
    let path = job(dir.path(), 4, |t| t);
    let out = dir.path().join("demo");
    std::fs::create_dir_all(out.join("control")).unwrap();
    std::fs::write(out.join("control/stop"), b"").unwrap();
    let summary = train(wanlora_config::load_job(&path).unwrap(), opts(dir.path())).unwrap();
    assert!(summary.stopped);
    assert_eq!(summary.step, 0);
    assert!(!out.join("metrics.jsonl").exists(), "a step was trained");
    let status: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("status.json")).unwrap()).unwrap();
    assert_eq!(status["state"], "stopped");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("encoding captions"),
        "{status}"
    );
    assert!(!out.join("pid").exists());
    assert!(!out.join("control/stop").exists());
    // Running the job again trains it.
    let summary = train(wanlora_config::load_job(&path).unwrap(), opts(dir.path())).unwrap();
    assert_eq!(summary.step, 4);
}
