//! What real AI Toolkit UI job files carry: hidden defaults that are notes, not warnings; a per-dataset
//! batch size; a single guidance scale for both experts.

use std::path::Path;
use wanlora_config::{parse_job_with_env, Format, Severity, SourceInfo, Validated};

fn parse(yaml: &str) -> Validated {
    let source = SourceInfo {
        name: "ui-job".into(),
        format: Format::Yaml,
        base_dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples"),
    };
    parse_job_with_env(yaml, &source, &|_| None)
}

/// A job as AI Toolkit's UI writes it, with `{network}`, `{save}`, `{dataset}`, `{train}` and
/// `{sample}` lines inserted into those sections.
fn ui_job(network: &str, save: &str, dataset: &str, train: &str, sample: &str) -> String {
    format!(
        "
job: extension
config:
  name: ui_job
  process:
    - type: diffusion_trainer
      network:
        type: lora
        linear: 32
        linear_alpha: 32
        {network}
      save:
        dtype: bf16
        save_every: 250
        {save}
      datasets:
        - folder_path: data/motion
          num_frames: 41
          {dataset}
      train:
        steps: 100
        {train}
      model:
        name_or_path: ai-toolkit/Wan2.2-I2V-A14B-Diffusers-bf16
        arch: wan22_14b_i2v
      sample:
        sample_every: 250
        num_frames: 41
        {sample}
        samples:
          - prompt: a fox runs
            ctrl_img: data/start_frames/style.png
"
    )
}

fn severity_at(v: &Validated, key_end: &str) -> Vec<Severity> {
    v.findings
        .iter()
        .filter(|f| f.key.ends_with(key_end))
        .map(|f| f.severity)
        .collect()
}

#[test]
fn the_uis_hidden_defaults_are_notes() {
    let v = parse(&ui_job(
        "conv: 16\n        conv_alpha: 16",
        "save_format: diffusers",
        "",
        "",
        "",
    ));
    assert!(v.is_valid(), "{:#?}", v.findings);
    assert_eq!(severity_at(&v, "network.conv"), [Severity::Note]);
    assert_eq!(severity_at(&v, "save.save_format"), [Severity::Note]);
    assert_eq!(v.warnings().count(), 0, "{:#?}", v.findings);
    // A conv the user chose is still a warning.
    let v = parse(&ui_job("conv: 8", "", "", "", ""));
    assert_eq!(severity_at(&v, "network.conv"), [Severity::Warning]);
}

#[test]
fn a_dataset_batch_size_equal_to_the_jobs_is_accepted() {
    let v = parse(&ui_job("", "", "batch_size: 2", "batch_size: 2", ""));
    assert!(v.is_valid(), "{:#?}", v.findings);
    assert_eq!(v.job.unwrap().process().train.batch_size, 2);
    // The only dataset's batch size is the job's when train sets none.
    let v = parse(&ui_job("", "", "batch_size: 3", "", ""));
    assert!(v.is_valid(), "{:#?}", v.findings);
    assert_eq!(v.job.unwrap().process().train.batch_size, 3);
    // Disagreeing values are an error naming the dataset's key.
    let v = parse(&ui_job("", "", "batch_size: 2", "batch_size: 4", ""));
    assert!(!v.is_valid());
    let err = v.errors().next().unwrap();
    assert!(err.key.ends_with("datasets[0].batch_size"), "{err}");
    assert!(err.message.contains("train.batch_size (4)"), "{err}");
}

#[test]
fn without_guidance_scale_2_both_experts_use_guidance_scale() {
    let v = parse(&ui_job("", "", "", "", "guidance_scale: 5"));
    assert!(v.is_valid(), "{:#?}", v.findings);
    let job = v.job.unwrap();
    let s = job.process().sample.resolve(0).unwrap();
    assert_eq!((s.guidance_scale, s.guidance_scale_2), (5.0, 5.0));
    let v = parse(&ui_job(
        "",
        "",
        "",
        "",
        "guidance_scale: 5\n        guidance_scale_2: 3",
    ));
    let s = v.job.unwrap().process().sample.resolve(0).unwrap();
    assert_eq!((s.guidance_scale, s.guidance_scale_2), (5.0, 3.0));
}
