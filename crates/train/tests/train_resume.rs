//! Exact resume with each optimizer's state (AdamW's is also covered through SIGKILL by the CLI's
//! resume test): the demo job stopped after a few steps and run again ends with the same loss at every
//! step and bit-identical LoRA files as the same job run without a stop.

use std::path::{Path, PathBuf};
use tch::{Device, Kind};
use wanlora_torch::weights::WeightSet;
use wanlora_train::trainer::train;

mod common;
use common::{losses, one_run_at_a_time, opts, whole_and_resumed};

const STEPS: u32 = 12;
const SAVE_EVERY: u32 = 4;
/// Stops one step after the second save, so that the resumed run repeats a step.
const STOP_AFTER: u64 = 9;

/// The demo job with `optimizer` (and its own `lr`), saving every [`SAVE_EVERY`] steps.
fn job(dir: &Path, optimizer: &str, lr: &str) -> PathBuf {
    let path = wanlora_train::demo::prepare(dir, STEPS).unwrap();
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace(
            "        optimizer: adamw\n",
            &format!("        optimizer: {optimizer}\n"),
        )
        .replace("        lr: 0.003\n", &format!("        lr: {lr}\n"))
        .replace(
            &format!("save_every: {}", STEPS / 2),
            &format!("save_every: {SAVE_EVERY}"),
        )
        .replace(
            "        skip_first_sample: true\n",
            "        disable_sampling: true\n",
        );
    assert!(text.contains(&format!("optimizer: {optimizer}\n")));
    std::fs::write(&path, text).unwrap();
    path
}

fn resumes_exactly(optimizer: &str, lr: &str) {
    let _serial = one_run_at_a_time();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (job_a, job_b) = (job(a.path(), optimizer, lr), job(b.path(), optimizer, lr));
    let (whole, resumed) = whole_and_resumed((&job_a, a.path()), (&job_b, b.path()), STOP_AFTER);
    assert_eq!(resumed.step, STEPS as u64);

    let (reference, again) = (losses(&whole.output), losses(&resumed.output));
    assert_eq!(reference.len(), STEPS as usize);
    assert_eq!(
        reference, again,
        "{optimizer}: the losses differ after the resume"
    );
    for e in ["high_noise", "low_noise"] {
        let open =
            |dir: &Path| WeightSet::open(&dir.join(format!("demo_{e}.safetensors"))).unwrap();
        let (fa, fb) = (open(&whole.output), open(&resumed.output));
        for n in fa.names() {
            let (x, y) = (
                fa.load(&n, Kind::Float, Device::Cpu).unwrap(),
                fb.load(&n, Kind::Float, Device::Cpu).unwrap(),
            );
            assert!(x.equal(&y), "{optimizer}: final {e} tensor {n} differs");
        }
    }
    // The state records the optimizer, so a resume with another one is refused.
    let state = std::fs::read_dir(resumed.output.join("state"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.join("complete").exists())
        .expect("a complete state");
    let meta = WeightSet::open(&state.join("high_noise.safetensors"))
        .unwrap()
        .metadata();
    assert_eq!(meta["optimizer"], optimizer);
    let other = if optimizer == "prodigy" {
        "adafactor"
    } else {
        "prodigy"
    };
    another_optimizer_is_refused(b.path(), &job_b, optimizer, other);
}

/// Resuming a state with another optimizer fails before training, naming both.
fn another_optimizer_is_refused(dir: &Path, job: &Path, saved: &str, other: &str) {
    let text = std::fs::read_to_string(job).unwrap().replace(
        &format!("        optimizer: {saved}\n"),
        &format!("        optimizer: {other}\n"),
    );
    std::fs::write(job, text).unwrap();
    let err = train(wanlora_config::load_job(job).unwrap(), opts(dir, None))
        .expect_err("a resume with another optimizer must fail")
        .to_string();
    assert!(
        err.contains(&format!(
            "saved by the {saved} optimizer, this job uses {other}"
        )),
        "{err}"
    );
}

#[test]
fn prodigy_resumes_exactly() {
    resumes_exactly("prodigy", "1.0");
}

#[test]
fn adafactor_resumes_exactly() {
    resumes_exactly("adafactor", "0.003");
}
