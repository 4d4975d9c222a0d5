//! The held-out loss (`validation_config`): a demo job trained with Prodigy and a validation set logs one record per
//! trained expert every N steps, at fixed timesteps in each expert's window, and a run stopped and
//! resumed gives the same training losses and the same validation values as one run without a stop.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

mod common;
use common::{losses, one_run_at_a_time, whole_and_resumed};

const STEPS: u32 = 12;
const SAVE_EVERY: u32 = 4;
const VALIDATE_EVERY: u64 = 3;
/// Stops one step after the second save, on a validation step, so the resumed run repeats it.
const STOP_AFTER: u64 = 9;

/// The demo job with two held-out items: a folder of clips (captions from their files) and one clip
/// with its `prompt`.
fn job(dir: &Path) -> PathBuf {
    let path = wanlora_train::demo::prepare(dir, STEPS).unwrap();
    let (folder, single) = (dir.join("held_out"), dir.join("held_out_single"));
    for d in [&folder, &single] {
        std::fs::create_dir_all(d).unwrap();
    }
    let data = dir.join("dataset");
    std::fs::copy(data.join("clip_07.mp4"), folder.join("a.mp4")).unwrap();
    std::fs::write(folder.join("a.txt"), "a yellow circle moves down").unwrap();
    std::fs::copy(data.join("clip_02.mp4"), single.join("b.mp4")).unwrap();
    let validation = format!(
        "        validation_config:
          validation_items:
            - image_path: {folder}
            - image_path: {single}
              prompt: \"[trigger] a shape slides\"
          resolution: 256
          validate_every_n_steps: {VALIDATE_EVERY}
          validation_sigmas: [1.0, 0.5, 0.1]
",
        folder = folder.display(),
        single = single.join("b.mp4").display(),
    );
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace(
            &format!("save_every: {}", STEPS / 2),
            &format!("save_every: {SAVE_EVERY}"),
        )
        .replace(
            "        skip_first_sample: true\n",
            &format!("        disable_sampling: true\n{validation}"),
        )
        // Issue 23's job: Prodigy (at AI Toolkit's lr 1) with a validation set.
        .replace("        optimizer: adamw\n", "        optimizer: prodigy\n")
        .replace("        lr: 0.003\n", "        lr: 1.0\n");
    assert!(text.contains("validation_config") && text.contains("optimizer: prodigy"));
    std::fs::write(&path, text).unwrap();
    path
}

fn records(folder: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(folder.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Validation loss per (step, expert), the last record winning.
fn validation(folder: &Path) -> BTreeMap<(u64, String), f64> {
    records(folder)
        .iter()
        .filter(|v| v.get("validation_loss").is_some())
        .map(|v| {
            (
                (
                    v["step"].as_u64().unwrap(),
                    v["expert"].as_str().unwrap().to_string(),
                ),
                v["validation_loss"].as_f64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn validation_is_logged_per_expert_and_resumes_exactly() {
    let _serial = one_run_at_a_time();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (job_a, job_b) = (job(a.path()), job(b.path()));
    let (whole, resumed) = whole_and_resumed((&job_a, a.path()), (&job_b, b.path()), STOP_AFTER);
    assert_eq!(resumed.step, STEPS as u64);

    // One record per trained expert before training and every VALIDATE_EVERY steps.
    let reference = validation(&whole.output);
    let expected: Vec<(u64, String)> = (0..=STEPS as u64)
        .filter(|s| s % VALIDATE_EVERY == 0)
        .flat_map(|s| ["high_noise", "low_noise"].map(|e| (s, e.to_string())))
        .collect();
    assert_eq!(reference.keys().cloned().collect::<Vec<_>>(), expected);
    assert!(reference.values().all(|v| v.is_finite() && *v > 0.0));
    // Training moves the held-out loss of both experts (the LoRA is applied).
    for e in ["high_noise", "low_noise"] {
        let (first, last) = (
            reference[&(0, e.to_string())],
            reference[&(STEPS as u64, e.to_string())],
        );
        assert_ne!(first, last, "{e}: the validation loss did not change");
    }

    // Fixed timesteps: the sigmas mapped into each expert's window (I2V boundary 0.9), two items.
    let first_records = records(&whole.output);
    let timesteps = |expert: &str| {
        let r = first_records
            .iter()
            .find(|v| v.get("validation_loss").is_some() && v["expert"] == expert)
            .unwrap();
        assert_eq!(r["validation_items"], 2);
        r["validation_timesteps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_f64().unwrap())
            .collect::<Vec<_>>()
    };
    let close = |a: &[f64], b: &[f64]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-9);
    assert!(close(&timesteps("high_noise"), &[1000.0, 950.0, 910.0]));
    assert!(close(&timesteps("low_noise"), &[900.0, 450.0, 90.0]));

    // Exact resume: training losses and validation values as in the run without a stop.
    assert_eq!(losses(&whole.output), losses(&resumed.output));
    assert_eq!(reference, validation(&resumed.output));
    assert!(resumed.output.join("loss.png").exists());
}
