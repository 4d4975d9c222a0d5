//! AI Toolkit's "4 bit with ARA" jobs: the UI's I2V job with the 4-bit option, the guide's 24 GB
//! recipes (examples/*_24gb.yaml) with `qtype: "uint4|…"`, and the adapter given by its own key.

use std::path::Path;
use wanlora_config::{parse_job_with_env, QType, SourceInfo, Validated};

const ARA: &str = "ostris/accuracy_recovery_adapters/wan22_14b_i2v_torchao_uint4.safetensors";

fn validate(text: &str, path: &Path) -> Validated {
    parse_job_with_env(text, &SourceInfo::for_file(path), &|_| None)
}

fn assert_uint4_with_adapter(validated: Validated, what: &str) {
    assert!(validated.is_valid(), "{what}: {:#?}", validated.findings);
    let job = validated.job.expect("job");
    let model = &job.process().model;
    assert!(model.quantize, "{what}");
    assert_eq!(model.qtype, QType::Uint4, "{what}");
    assert_eq!(
        model.accuracy_recovery_adapter.as_deref(),
        Some(ARA),
        "{what}"
    );
}

#[test]
fn the_ai_toolkit_ui_job_with_4bit_ara_is_accepted() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/aitk/ui_wan22_i2v.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text.replacen(
        "\"qtype\": \"qfloat8\"",
        &format!("\"qtype\": \"uint4|{ARA}\""),
        1,
    );
    assert!(text.contains("uint4|"));
    let validated = validate(&text, &path);
    let warned: Vec<&str> = validated.warnings().map(|w| w.key.as_str()).collect();
    assert!(!warned.iter().any(|k| k.contains("qtype")), "{warned:?}");
    assert_uint4_with_adapter(validated, "ui json");
}

#[test]
fn the_guides_24gb_recipes_with_uint4_and_the_adapter_validate() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    for name in ["character_24gb", "motion_24gb", "style_24gb"] {
        let path = examples.join(format!("{name}.yaml"));
        let text = std::fs::read_to_string(&path).unwrap();
        let edited = text.replacen("qtype: float8", &format!("qtype: \"uint4|{ARA}\""), 1);
        assert_ne!(edited, text, "{name} names qtype: float8");
        assert_uint4_with_adapter(validate(&edited, &path), name);
    }
}

#[test]
fn the_adapter_may_have_its_own_key_and_two_different_ones_are_an_error() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/good/ai_toolkit_4bit_ara.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    assert_uint4_with_adapter(validate(&text, &path), "fixture");

    let own_key = text.replacen(
        &format!("qtype: \"uint4|{ARA}\""),
        &format!("qtype: uint4\n        accuracy_recovery_adapter: {ARA}"),
        1,
    );
    assert_uint4_with_adapter(validate(&own_key, &path), "own key");

    let both = text.replacen(
        &format!("qtype: \"uint4|{ARA}\""),
        &format!(
            "qtype: \"uint4|{ARA}\"\n        accuracy_recovery_adapter: other/repo/x.safetensors"
        ),
        1,
    );
    let validated = validate(&both, &path);
    let error = validated
        .findings
        .iter()
        .find(|f| f.key.ends_with("accuracy_recovery_adapter"))
        .expect("conflict reported");
    assert!(
        error.message.contains("other/repo/x.safetensors"),
        "{error:?}"
    );
    assert!(!validated.is_valid());
}

#[test]
fn the_text_encoder_is_not_4_bit() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/good/ai_toolkit_4bit_ara.yaml");
    let text = std::fs::read_to_string(&path).unwrap().replacen(
        "low_vram: true",
        "low_vram: true\n        qtype_te: uint4",
        1,
    );
    let validated = validate(&text, &path);
    let error = validated
        .findings
        .iter()
        .find(|f| f.key.ends_with("qtype_te"))
        .expect("qtype_te refused");
    assert!(error.hint.contains("float8"), "{error:?}");
}
