//! AI Toolkit's only Wan 2.2 example, config/examples/train_lora_wan22_14b_24gb.yaml (ostris/ai-toolkit at
//! 27a03a91), kept byte for byte in examples/aitk_wan22_14b_24gb.yaml except its dataset path: a text-to-video
//! job on images (num_frames 1). It is read with AI Toolkit's meaning and refused only for its 4-bit weights
//! (`qtype: "uint4|<accuracy recovery adapter>"`) until those exist.

use std::path::{Path, PathBuf};
use wanlora_config::{parse_job, ModelArch, Severity, SourceInfo};

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/aitk_wan22_14b_24gb.yaml")
}

#[test]
fn the_example_is_ai_toolkits_text_except_the_dataset_path() {
    let text = std::fs::read_to_string(example()).unwrap();
    // The one change: AI Toolkit's placeholder path points at the repository's example data.
    assert!(text.contains("        - folder_path: \"data/style\"\n"));
    assert!(!text.contains("/path/to/images/or/video/folder"));
    // Verbatim otherwise, comments and stray characters included.
    for line in [
        "# this example focuses mainly for training Wan2.2 14b on images. It will work for video as well by increasing",
        "        name_or_path: \"ai-toolkit/Wan2.2-T2V-A14B-Diffusers-bf16\"",
        "        arch: 'wan22_14b'",
        "        qtype: \"uint4|ostris/accuracy_recovery_adapters/wan22_14b_t2i_torchao_uint4.safetensors\"",
        "#          - \"[trigger] holding a sign that says 'I LOVE PROMPTS!'\"\\",
        "        neg: \"\"  ",
    ] {
        assert!(text.lines().any(|l| l == line), "missing line {line:?}");
    }
    assert_eq!(text.lines().count(), 112);
}

#[test]
fn the_example_is_refused_only_for_its_4_bit_weights() {
    let text = std::fs::read_to_string(example()).unwrap();
    let source = SourceInfo::for_file(&example());
    let validated = parse_job(&text, &source);
    let errors: Vec<_> = validated
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .collect();
    assert!(
        errors
            .iter()
            .all(|e| e.key.ends_with("model.qtype") && e.message.contains("uint4")),
        "errors other than the 4-bit weights: {errors:#?}"
    );
    let job = validated.job.expect("the example parses");
    let p = job.process();
    assert_eq!(p.model.arch, ModelArch::Wan22_14b);
    // The arch's defaults where the example says nothing; its own values where it does.
    assert_eq!(p.model.boundary_ratio, 0.875);
    assert_eq!(p.sample.shift, 12.0);
    assert_eq!(p.sample.guidance_scale, 3.5);
    assert_eq!((p.sample.num_frames, p.sample.width), (1, 1024));
    assert_eq!(p.datasets[0].num_frames, 1);
    assert_eq!(p.datasets[0].resolution, [512, 768, 1024]);
    assert_eq!(p.sample.samples.len(), 10);
    assert!(p.sample.samples.iter().all(|s| s.ctrl_img.is_none()));
    assert!(p.model.model_kwargs.train_high_noise && p.model.model_kwargs.train_low_noise);

    // With fp8 weights instead, the same job is valid as it stands (no start frames needed for T2V).
    let fp8 = text.replace(
        "qtype: \"uint4|ostris/accuracy_recovery_adapters/wan22_14b_t2i_torchao_uint4.safetensors\"",
        "qtype: \"float8\"",
    );
    let validated = parse_job(&fp8, &source);
    assert!(
        validated.is_valid(),
        "{:#?}",
        validated.errors().collect::<Vec<_>>()
    );
}

#[test]
fn a_t2v_job_takes_the_arch_defaults_only_where_it_says_nothing() {
    let minimal = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/good/minimal.yaml");
    let text = std::fs::read_to_string(&minimal).unwrap();
    let source = SourceInfo::for_file(&minimal);
    let i2v = parse_job(&text, &source).job.unwrap();
    assert_eq!(i2v.process().model.boundary_ratio, 0.9);
    assert_eq!(i2v.process().sample.shift, 5.0);

    let t2v_text = text.replace("arch: wan22_14b_i2v", "arch: wan22_14b");
    let validated = parse_job(&t2v_text, &source);
    // The I2V samples' start frames are not used by a T2V job: warned about, not an error.
    assert!(validated.is_valid());
    let t2v = validated.job.unwrap();
    assert_eq!(t2v.process().model.boundary_ratio, 0.875);
    assert_eq!(t2v.process().sample.shift, 12.0);

    let explicit = t2v_text
        .replace(
            "arch: wan22_14b\n",
            "arch: wan22_14b\n        boundary_ratio: 0.8\n",
        )
        .replace("sample_every: 50\n", "sample_every: 50\n        shift: 7\n");
    let job = parse_job(&explicit, &source).job.unwrap();
    assert_eq!(job.process().model.boundary_ratio, 0.8);
    assert_eq!(job.process().sample.shift, 7.0);
    // Written back and read again, the values stay (the arch defaults are not reapplied).
    let again = parse_job(&wanlora_config::to_yaml(&t2v), &source)
        .job
        .unwrap();
    assert_eq!(again, t2v);
}
