//! The umT5 encoder against transformers 5.17's `UMT5EncoderModel` on a small random model (fixtures from
//! scripts/fixtures/gen_vae_umt5.py): within 1e-5 relative error in float32 for the sharded HF folder, ComfyUI's
//! fp16 single file, Wan's own names and ComfyUI's fp8_e4m3fn_scaled file, zeros after each prompt's tokens.

use std::path::PathBuf;
use tch::{Device, Kind, Tensor};
use wanlora_models::umt5::{relative_position_buckets, Umt5Config, Umt5Encoder, Umt5Naming};
use wanlora_torch::weights::WeightSet;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/umt5")
}

/// One intra-op thread: the tensors are tiny, cargo already runs tests in parallel, and libtorch's spinning
/// worker threads make a loaded 2-core machine ten times slower.
fn single_threaded() {
    tch::set_num_threads(1);
}

fn case(name: &str, kind: Kind) -> Tensor {
    let cases = WeightSet::open(&fixtures().join("cases.safetensors")).expect("umt5 cases fixture");
    cases.load(name, kind, Device::Cpu).expect(name)
}

fn rel_err(out: &Tensor, reference: &Tensor) -> f64 {
    assert_eq!(out.size(), reference.size(), "shape");
    let diff = (out.to_kind(Kind::Double) - reference.to_kind(Kind::Double)).norm();
    f64::try_from(diff).unwrap() / f64::try_from(reference.to_kind(Kind::Double).norm()).unwrap()
}

/// Checks a `[2, 512, d]` context against the reference's 160 positions and the zeros after each prompt.
fn check_context(what: &str, context: &Tensor, reference: &Tensor, tolerance: f64) {
    assert_eq!(context.size(), [2, 512, 32], "{what}");
    let err = rel_err(&context.narrow(1, 0, 160), reference);
    assert!(err < tolerance, "{what}: relative error {err:e}");
    // Prompt 2 has 37 real tokens (EOS included): everything after is exactly zero, as Wan pads.
    let lengths = [160, 37];
    for (b, &len) in lengths.iter().enumerate() {
        let tail = context.get(b as i64).narrow(0, len, 512 - len);
        assert_eq!(
            f64::try_from(tail.abs().sum(Kind::Double)).unwrap(),
            0.0,
            "{what}: padding of prompt {b}"
        );
        let real = context.get(b as i64).narrow(0, 0, len);
        assert!(
            f64::try_from(real.abs().min()).unwrap() > 0.0,
            "{what}: real tokens are kept"
        );
    }
}

fn encode(encoder: &Umt5Encoder) -> Tensor {
    encoder
        .encode(
            &case("input_ids", Kind::Int64),
            &case("attention_mask", Kind::Int64),
        )
        .unwrap()
}

#[test]
fn sharded_hf_folder_matches_transformers() {
    single_threaded();
    let encoder = Umt5Encoder::from_path(&fixtures().join("hf"), Kind::Float, Device::Cpu).unwrap();
    assert_eq!(encoder.naming(), Umt5Naming::HuggingFace);
    check_context(
        "hf folder",
        &encode(&encoder),
        &case("context", Kind::Float),
        1e-5,
    );
}

#[test]
fn comfy_fp16_single_file_matches_transformers() {
    single_threaded();
    let file = fixtures().join("umt5_comfy_fp16.safetensors");
    let encoder = Umt5Encoder::from_path(&file, Kind::Float, Device::Cpu).unwrap();
    check_context(
        "comfy fp16",
        &encode(&encoder),
        &case("context", Kind::Float),
        1e-5,
    );
}

#[test]
fn wan_native_names_match_transformers() {
    single_threaded();
    let file = fixtures().join("umt5_wan_native.safetensors");
    let encoder = Umt5Encoder::from_path(&file, Kind::Float, Device::Cpu).unwrap();
    assert_eq!(encoder.naming(), Umt5Naming::Wan);
    check_context(
        "wan names",
        &encode(&encoder),
        &case("context", Kind::Float),
        1e-5,
    );
}

#[test]
fn fp8_scaled_file_matches_its_dequantised_reference() {
    single_threaded();
    let file = fixtures().join("umt5_comfy_fp8_e4m3fn_scaled.safetensors");
    let encoder = Umt5Encoder::from_path(&file, Kind::Float, Device::Cpu).unwrap();
    check_context(
        "comfy fp8 scaled",
        &encode(&encoder),
        &case("context_fp8", Kind::Float),
        1e-5,
    );
}

#[test]
fn inferred_config_equals_config_json() {
    single_threaded();
    let from_json = Umt5Config::from_json_file(&fixtures().join("hf/config.json")).unwrap();
    let weights = WeightSet::open(&fixtures().join("umt5_wan_native.safetensors")).unwrap();
    let encoder = Umt5Encoder::load(&weights, None, Kind::Float, Device::Cpu).unwrap();
    assert_eq!(encoder.config(), &from_json);
}

#[test]
fn buckets_match_transformers() {
    single_threaded();
    // Row 600 of a 1201-token sequence holds relative positions −600 … 600.
    let buckets = relative_position_buckets(1201, 32, 128, Device::Cpu)
        .unwrap()
        .get(600);
    assert!(buckets.equal(&case("buckets", Kind::Int64)));
}

#[test]
fn padding_length_does_not_change_the_result() {
    single_threaded();
    let encoder = Umt5Encoder::from_path(&fixtures().join("hf"), Kind::Float, Device::Cpu).unwrap();
    let (ids, mask) = (
        case("input_ids", Kind::Int64),
        case("attention_mask", Kind::Int64),
    );
    let padded_ids = Tensor::zeros([2, 512], (Kind::Int64, Device::Cpu));
    let padded_mask = Tensor::zeros([2, 512], (Kind::Int64, Device::Cpu));
    padded_ids.narrow(1, 0, 160).copy_(&ids);
    padded_mask.narrow(1, 0, 160).copy_(&mask);
    let short = encoder.encode(&ids, &mask).unwrap();
    let long = encoder.encode(&padded_ids, &padded_mask).unwrap();
    assert!(rel_err(&long, &short) < 1e-6);
    // The second prompt alone gives the same embedding as within the batch.
    let alone = encoder
        .encode(&ids.narrow(0, 1, 1), &mask.narrow(0, 1, 1))
        .unwrap();
    assert!(rel_err(&alone, &short.narrow(0, 1, 1)) < 1e-6);
    let empty = encoder
        .encode(&ids.narrow(0, 1, 1), &mask.narrow(0, 1, 1).zeros_like())
        .unwrap();
    assert_eq!(f64::try_from(empty.abs().sum(Kind::Double)).unwrap(), 0.0);
}

#[test]
fn bfloat16_stays_close_to_float32() {
    single_threaded();
    let encoder =
        Umt5Encoder::from_path(&fixtures().join("hf"), Kind::BFloat16, Device::Cpu).unwrap();
    check_context(
        "bf16",
        &encode(&encoder),
        &case("context", Kind::Float),
        3e-2,
    );
}

#[test]
fn wrong_inputs_and_files_are_refused() {
    single_threaded();
    let encoder = Umt5Encoder::from_path(&fixtures().join("hf"), Kind::Float, Device::Cpu).unwrap();
    let ids = Tensor::zeros([1, 600], (Kind::Int64, Device::Cpu));
    assert!(encoder
        .encode(&ids, &ids.ones_like())
        .unwrap_err()
        .to_string()
        .contains("truncate"));
    assert!(encoder.encode(&ids, &ids.narrow(1, 0, 10)).is_err());

    let vae = fixtures().join("../vae/wan_2.1_vae_comfy.safetensors");
    let err = Umt5Encoder::from_path(&vae, Kind::Float, Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("VAE"), "{err}");
}
