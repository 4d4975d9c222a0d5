//! TI2V-5B sampling against diffusers 0.42.1 (fixtures/sampler_ti2v, from scripts/fixtures/gen_sampler_ti2v.py): the
//! tiny TI2V model (crates/models' transformer fixture with its 48-channel patch embedding and head), one model
//! (boundary 0: every step in the one phase), UniPC at shift 5, guidance 5, from the same seed:
//! `WanImageToVideoPipeline(expand_timesteps=True)` — the start frame's clean latent in latent frame 0 of every
//! model input with timestep 0 there, and in the result — and `WanPipeline(expand_timesteps=True)` from the prompt
//! alone, within 1e-4 relative error in float32.

use std::collections::BTreeMap;
use std::path::PathBuf;

use tch::{Device, Kind, Tensor};
use wanlora_config::{CtrlImgResize, SampleFormat};
use wanlora_models::transformer::{transformer_weights, TransformerConfig, WanTransformer};
use wanlora_torch::weights::WeightSet;
use wanlora_train::experts::Expert;
use wanlora_train::sampling::{
    CfgBatching, Conditioning, SampleRequest, SampleRun, SamplerKind, ScheduleKind,
};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sampler_ti2v")
}

fn model_fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/tests/fixtures/transformer")
}

fn reference(name: &str) -> Tensor {
    Tensor::read_safetensors(fixtures().join("reference.safetensors"))
        .unwrap()
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("{name} missing"))
        .1
}

fn case(key: &str) -> f64 {
    let text = std::fs::read_to_string(fixtures().join("case.json")).unwrap();
    let case: serde_json::Value = serde_json::from_str(&text).unwrap();
    case[key]
        .as_f64()
        .unwrap_or_else(|| panic!("case.json: {key}"))
}

/// The TI2V model in ComfyUI's single-file form, as gen_transformer.py makes it.
fn ti2v_model(dir: &std::path::Path) -> WanTransformer {
    let mut tensors: BTreeMap<String, Tensor> =
        Tensor::read_safetensors(model_fixtures().join("comfy.safetensors"))
            .unwrap()
            .into_iter()
            .collect();
    tensors
        .extend(Tensor::read_safetensors(model_fixtures().join("ti2v_extra.safetensors")).unwrap());
    let file = dir.join("wan2.2_ti2v_5B_fp32.safetensors");
    Tensor::write_safetensors(&tensors.into_iter().collect::<Vec<_>>(), &file).unwrap();
    let base =
        TransformerConfig::from_json_file(&model_fixtures().join("diffusers/config.json")).unwrap();
    let config = TransformerConfig {
        in_channels: 48,
        out_channels: 48,
        ..base
    };
    let weights = transformer_weights(WeightSet::open(&file).unwrap()).unwrap();
    WanTransformer::load(&weights, Some(config), Kind::Float, Device::Cpu).unwrap()
}

fn request() -> SampleRequest {
    SampleRequest {
        prompt: "a prompt".into(),
        negative_prompt: String::new(),
        start_image: None,
        resize: CtrlImgResize::Crop,
        width: case("width") as u32,
        height: case("height") as u32,
        num_frames: case("num_frames") as u32,
        fps: 24,
        seed: case("seed") as u64,
        steps: case("steps") as u32,
        shift: case("shift"),
        sampler: SamplerKind::UniPc,
        schedule: ScheduleKind::Diffusers,
        guidance_high: case("guidance_scale"),
        guidance_low: case("guidance_scale"),
        boundary_ratio: 0.0,
        lora_multiplier_high: 1.0,
        lora_multiplier_low: 1.0,
        cfg_batching: CfgBatching::Auto,
        format: SampleFormat::Mp4,
    }
}

fn relative_error(ours: &Tensor, theirs: &Tensor) -> f64 {
    assert_eq!(ours.size(), theirs.size());
    (ours - theirs).norm().double_value(&[]) / theirs.norm().double_value(&[])
}

/// One run of the TI2V model; returns the final latents and the timesteps it took.
fn sample(
    model: &WanTransformer,
    start: Option<Tensor>,
    batching: CfgBatching,
) -> (Tensor, Vec<f64>) {
    let conditioning = Conditioning::Ti2v {
        latent_channels: 48,
        start,
    };
    let r = SampleRequest {
        cfg_batching: batching,
        ..request()
    };
    let mut run = SampleRun::new(
        &r,
        &reference("prompt_embeds"),
        &reference("negative_prompt_embeds"),
        &conditioning,
        Device::Cpu,
    )
    .unwrap();
    assert_eq!(
        run.remaining(Expert::Low),
        0,
        "one model: every step in the one phase"
    );
    let mut timesteps = Vec::new();
    run.denoise_phase(Expert::High, model, None, &mut |s| {
        timesteps.push(s.timestep)
    })
    .unwrap();
    assert!(run.is_done());
    (run.latents().shallow_clone(), timesteps)
}

#[test]
fn ti2v_image_and_text_to_video_match_diffusers_expand_timesteps() {
    let dir = tempfile::tempdir().unwrap();
    let model = ti2v_model(dir.path());
    let start = reference("start_latent");

    let (latents, timesteps) = sample(&model, Some(start.shallow_clone()), CfgBatching::Separate);
    let theirs = Vec::<f32>::try_from(&reference("timesteps")).unwrap();
    assert_eq!(timesteps.len(), theirs.len());
    for (a, b) in timesteps.iter().zip(&theirs) {
        assert!(
            (a - *b as f64).abs() < 1e-3,
            "timesteps {timesteps:?} vs {theirs:?}"
        );
    }
    let err = relative_error(&latents, &reference("latents_i2v"));
    eprintln!("TI2V I2V vs diffusers: relative error {err:.2e}");
    assert!(err < 1e-4, "TI2V I2V: relative error {err}");
    assert!(
        latents.narrow(2, 0, 1).equal(&start),
        "the result keeps the start frame"
    );
    // The two guidance passes as one batch (one per-frame timestep row for both) give the same latents.
    let (batched, _) = sample(&model, Some(start.shallow_clone()), CfgBatching::Batched);
    assert!(relative_error(&batched, &latents) < 1e-5);

    let (t2v, _) = sample(&model, None, CfgBatching::Auto);
    let err = relative_error(&t2v, &reference("latents_t2v"));
    eprintln!("TI2V T2V vs diffusers: relative error {err:.2e}");
    assert!(err < 1e-4, "TI2V T2V: relative error {err}");
    assert!(
        relative_error(&t2v, &latents) > 1e-2,
        "the start frame made no difference"
    );

    // A start latent of the wrong grid is refused with the expected shape.
    let wrong = Conditioning::Ti2v {
        latent_channels: 48,
        start: Some(start.narrow(3, 0, 2)),
    };
    let err = SampleRun::new(
        &request(),
        &reference("prompt_embeds"),
        &reference("negative_prompt_embeds"),
        &wrong,
        Device::Cpu,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("[1, 48, 1, 6, 4]"), "{err}");
}
