//! AI Toolkit's `train.validation_config` (held-out loss): its keys, defaults and checks.

use std::path::Path;
use wanlora_config::{parse_job_with_env, Format, Severity, SourceInfo, Validated};

fn parse_with_train(train: &str) -> Validated {
    let yaml = format!(
        "
job: extension
config:
  name: val_job
  process:
    - type: diffusion_trainer
      network: {{type: lora, linear: 16}}
      datasets:
        - folder_path: data/motion
          num_frames: 41
      train:
        steps: 100
{train}
      model:
        name_or_path: ai-toolkit/Wan2.2-I2V-A14B-Diffusers-bf16
        arch: wan22_14b_i2v
"
    );
    let source = SourceInfo {
        name: "val-job".into(),
        format: Format::Yaml,
        base_dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples"),
    };
    parse_job_with_env(&yaml, &source, &|_| None)
}

fn errors_at(v: &Validated, key_end: &str) -> usize {
    v.findings
        .iter()
        .filter(|f| f.severity == Severity::Error && f.key.ends_with(key_end))
        .count()
}

#[test]
fn ai_toolkits_validation_keys_are_read() {
    let v = parse_with_train(
        "        validation_config:
          validation_items:
            - image_path: data/character/wave_01.mp4
              prompt: a person waves
            - image_path: data/character
          resolution: 256
          validate_every_n_steps: 25
          validation_sigmas: [0.9, 0.5, 0.1]",
    );
    assert!(v.is_valid(), "{:#?}", v.findings);
    let job = v.job.unwrap();
    let val = &job.process().train.validation_config;
    assert!(val.enabled());
    assert_eq!(val.validation_items.len(), 2);
    assert_eq!(val.validation_items[0].prompt, "a person waves");
    assert!(val.validation_items[1].prompt.is_empty());
    assert_eq!(val.resolution, 256);
    assert_eq!(val.validate_every_n_steps, 25);
    assert_eq!(val.validation_sigmas, vec![0.9, 0.5, 0.1]);
}

#[test]
fn ai_toolkits_defaults_apply_and_no_items_means_no_validation() {
    let v = parse_with_train(
        "        validation_config:
          validation_items:
            - image_path: data/start_frames/motion.png
              prompt: an orbit",
    );
    assert!(v.is_valid(), "{:#?}", v.findings);
    let job = v.job.unwrap();
    let val = &job.process().train.validation_config;
    assert_eq!(val.resolution, 512);
    assert_eq!(val.validate_every_n_steps, 10);
    assert_eq!(val.validation_sigmas, vec![1.0, 0.75, 0.5, 0.25]);

    let none = parse_with_train("        validation_config: {validate_every_n_steps: 5}");
    assert!(none.is_valid(), "{:#?}", none.findings);
    assert!(!none
        .job
        .unwrap()
        .process()
        .train
        .validation_config
        .enabled());
}

#[test]
fn ai_toolkits_ui_card_as_first_enabled_validates_and_does_nothing() {
    // What AI Toolkit's UI writes when its Validation card is switched on.
    let v = parse_with_train(
        "        validation_config:
          validation_items:
            - image_path: ''
              prompt: ''
          resolution: 1024
          validate_every_n_steps: 1
          validation_sigmas: [0.5]",
    );
    assert!(v.is_valid(), "{:#?}", v.findings);
    let warned: Vec<_> = v
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Warning)
        .map(|f| f.key.as_str())
        .collect();
    assert!(
        warned
            .iter()
            .any(|k| k.ends_with("validation_items[0].image_path")),
        "{warned:?}"
    );
    assert!(!v.job.unwrap().process().train.validation_config.enabled());
}

#[test]
fn bad_validation_values_are_errors_at_their_keys() {
    let v = parse_with_train(
        "        validation_config:
          validation_items:
            - image_path: data/no_such_clip.mp4
            - prompt: no path
          resolution: 500
          validate_every_n_steps: 0
          validation_sigmas: [1.5, 0.5]",
    );
    assert!(!v.is_valid());
    assert_eq!(errors_at(&v, "validation_items[0].image_path"), 1);
    // An item without image_path is skipped with a warning, as AI Toolkit does.
    assert_eq!(errors_at(&v, "validation_items[1].image_path"), 0);
    assert_eq!(errors_at(&v, "validation_config.resolution"), 1);
    assert_eq!(errors_at(&v, "validate_every_n_steps"), 1);
    assert_eq!(errors_at(&v, "validation_sigmas[0]"), 1);
    assert_eq!(errors_at(&v, "validation_sigmas[1]"), 0);

    let not_numbers =
        parse_with_train("        validation_config: {validation_sigmas: [high, low]}");
    assert_eq!(errors_at(&not_numbers, "validation_sigmas"), 1);
}
