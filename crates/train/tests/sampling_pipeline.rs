//! The I2V pipeline against diffusers 0.42.1's `WanImageToVideoPipeline` on a tiny random model
//! (fixtures/sampler, from scripts/fixtures/gen_sampler.py): the same start frame, prompt embeddings and seed give
//! the same final latents within 1e-4 relative error in float32, for flow-matching Euler and for UniPC, with and
//! without per-expert LoRAs; the guidance passes batched equal two passes; the phases run in order; sampling draws
//! nothing from libtorch's generator; a run handed off between its phases (an expert-parallel job's previews) ends
//! as one run, bit for bit. Text-to-video: `WanPipeline` with two 16-channel-style experts (z = 4 here)
//! at the T2V recipe (boundary 0.875, shift 12, guidance 4.0 / 3.0), Euler and UniPC, from the prompt alone.

use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor};
use wanlora_config::{CtrlImgResize, SampleFormat};
use wanlora_models::conditioning::first_frame_condition;
use wanlora_models::lora::{LoraKeyFormat, LoraSet};
use wanlora_models::tokenizer::Tokenizer;
use wanlora_models::transformer::WanTransformer;
use wanlora_models::umt5::Umt5Encoder;
use wanlora_models::vae::Vae;
use wanlora_train::experts::Expert;
use wanlora_train::sampling::start_image::{image_tensor, load_start_image};
use wanlora_train::sampling::{
    generate, CfgBatching, Conditioning, LoadedExpert, SampleRequest, SampleRun, SamplerKind,
    SamplingError, ScheduleKind, StepInfo,
};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sampler")
}

fn reference(name: &str) -> Tensor {
    reference_in("reference.safetensors", name)
}

fn reference_in(file: &str, name: &str) -> Tensor {
    let path = fixtures().join(file);
    Tensor::read_safetensors(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("{name} missing from {file}"))
        .1
}

fn case() -> serde_json::Value {
    let path = fixtures().join("case.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("case.json is JSON")
}

/// The fixture's settings as a request (diffusers' σ grid, which is what the reference ran).
fn request(sampler: SamplerKind, lora_multiplier: f64, cfg_batching: CfgBatching) -> SampleRequest {
    let c = case();
    let num = |k: &str| c[k].as_f64().unwrap_or_else(|| panic!("case.json: {k}"));
    SampleRequest {
        prompt: c["prompt"].as_str().unwrap().to_string(),
        negative_prompt: c["negative_prompt"].as_str().unwrap().to_string(),
        start_image: Some(fixtures().join("start.png")),
        resize: CtrlImgResize::Crop,
        width: num("width") as u32,
        height: num("height") as u32,
        num_frames: num("num_frames") as u32,
        fps: 16,
        seed: num("seed") as u64,
        steps: num("steps") as u32,
        shift: num("shift"),
        sampler,
        schedule: ScheduleKind::Diffusers,
        guidance_high: num("guidance_scale"),
        guidance_low: num("guidance_scale_2"),
        boundary_ratio: num("boundary_ratio"),
        lora_multiplier_high: lora_multiplier,
        lora_multiplier_low: lora_multiplier,
        cfg_batching,
        format: SampleFormat::Mp4,
    }
}

fn vae() -> Vae {
    Vae::from_path(&fixtures().join("model/vae"), Kind::Float, Device::Cpu).expect("fixture VAE")
}

fn expert(which: Expert) -> WanTransformer {
    let folder = fixtures().join("model").join(which.diffusers_folder());
    WanTransformer::from_path(&folder, Kind::Float, Device::Cpu).expect("fixture expert")
}

fn lora(which: Expert, model: &WanTransformer) -> LoraSet {
    let (file, format) = match which {
        Expert::High => ("lora_high_comfy.safetensors", LoraKeyFormat::ComfyUi),
        Expert::Low => ("lora_low_kohya.safetensors", LoraKeyFormat::Kohya),
    };
    let (set, found) = LoraSet::load(&fixtures().join(file), &model.config, Device::Cpu, false)
        .expect("fixture LoRA");
    assert_eq!(found, format, "{file} read as {format:?}");
    set
}

/// The first-frame condition of the fixture's start frame, built by our image loading and VAE.
fn condition(vae: &Vae) -> Tensor {
    let r = request(SamplerKind::UniPc, 1.0, CfgBatching::Auto);
    let path = r.start_image.as_deref().expect("an I2V request");
    let start = load_start_image(path, r.width, r.height, r.resize).unwrap();
    let image = image_tensor(&start, Device::Cpu).unwrap();
    first_frame_condition(vae, &image, r.num_frames as i64).unwrap()
}

fn relative_error(ours: &Tensor, theirs: &Tensor) -> f64 {
    assert_eq!(ours.size(), theirs.size());
    (ours - theirs).norm().double_value(&[]) / theirs.norm().double_value(&[])
}

struct Models {
    high: WanTransformer,
    low: WanTransformer,
    condition: Conditioning,
}

fn models() -> Models {
    let vae = vae();
    Models {
        high: expert(Expert::High),
        low: expert(Expert::Low),
        condition: Conditioning::FirstFrame(condition(&vae)),
    }
}

/// Runs both phases; returns the final latents and the progress reports.
fn denoise(
    models: &Models,
    request: &SampleRequest,
    loras: Option<(&LoraSet, &LoraSet)>,
) -> (Tensor, Vec<StepInfo>) {
    let mut run = SampleRun::new(
        request,
        &reference("prompt_embeds"),
        &reference("negative_prompt_embeds"),
        &models.condition,
        Device::Cpu,
    )
    .unwrap();
    let mut steps = Vec::new();
    let mut progress = |s: &StepInfo| steps.push(*s);
    run.denoise_phase(
        Expert::High,
        &models.high,
        loras.map(|l| l.0),
        &mut progress,
    )
    .unwrap();
    run.denoise_phase(Expert::Low, &models.low, loras.map(|l| l.1), &mut progress)
        .unwrap();
    assert!(run.is_done());
    (run.latents().shallow_clone(), steps)
}

#[test]
fn start_frame_condition_equals_diffusers() {
    let ours = condition(&vae());
    let err = relative_error(&ours, &reference("condition"));
    assert!(err < 1e-5, "condition relative error {err}");
}

#[test]
fn euler_matches_diffusers() {
    let models = models();
    let r = request(SamplerKind::Euler, 1.0, CfgBatching::Auto);
    let (latents, steps) = denoise(&models, &r, None);
    let err = relative_error(&latents, &reference("latents_euler"));
    eprintln!("Euler vs diffusers: relative error {err:.2e}");
    assert!(err < 1e-4, "Euler: relative error {err}");
    // diffusers' Euler grid: t = 1000, 980.5, 957.7, 930.7 on the high-noise expert, then 8 low-noise steps.
    let experts: Vec<Expert> = steps.iter().map(|s| s.expert).collect();
    assert_eq!(experts[..4], [Expert::High; 4]);
    assert_eq!(experts[4..], [Expert::Low; 8]);
    assert!(
        steps.iter().all(|s| s.batched),
        "the CPU batches the guidance passes"
    );
}

#[test]
fn unipc_matches_diffusers() {
    let models = models();
    let r = request(SamplerKind::UniPc, 1.0, CfgBatching::Auto);
    let (latents, steps) = denoise(&models, &r, None);
    let err = relative_error(&latents, &reference("latents_unipc"));
    eprintln!("UniPC vs diffusers: relative error {err:.2e}");
    assert!(err < 1e-4, "UniPC: relative error {err}");
    assert_eq!(steps.iter().filter(|s| s.expert == Expert::High).count(), 5);
    assert_eq!(
        steps.iter().map(|s| s.timestep as i64).collect::<Vec<_>>(),
        [999, 982, 961, 937, 909, 875, 833, 781, 714, 625, 501, 315]
    );
    // And it is not Euler's result: the comparison can tell the samplers apart.
    let euler = relative_error(&latents, &reference("latents_euler"));
    assert!(euler > 1e-2, "UniPC and Euler agree suspiciously ({euler})");
}

#[test]
fn unipc_with_a_lora_per_expert_matches_merged_weights() {
    let models = models();
    let (high, low) = (
        lora(Expert::High, &models.high),
        lora(Expert::Low, &models.low),
    );
    let multiplier = case()["lora_multiplier"].as_f64().unwrap();
    let r = request(SamplerKind::UniPc, multiplier, CfgBatching::Auto);
    let (latents, _) = denoise(&models, &r, Some((&high, &low)));
    let err = relative_error(&latents, &reference("latents_unipc_lora"));
    eprintln!("UniPC with LoRAs vs diffusers (merged): relative error {err:.2e}");
    assert!(err < 1e-4, "UniPC with LoRAs: relative error {err}");
    let without = relative_error(&latents, &reference("latents_unipc"));
    assert!(without > 1e-2, "the LoRAs changed nothing ({without})");
    // Strength 0 is no LoRA; the strength of each expert is its own.
    let off = SampleRequest {
        lora_multiplier_high: 0.0,
        lora_multiplier_low: 0.0,
        ..r.clone()
    };
    let (latents_off, _) = denoise(&models, &off, Some((&high, &low)));
    assert!(relative_error(&latents_off, &reference("latents_unipc")) < 1e-4);
    let high_only = SampleRequest {
        lora_multiplier_low: 0.0,
        ..r
    };
    let (latents_high, _) = denoise(&models, &high_only, Some((&high, &low)));
    assert!(relative_error(&latents_high, &reference("latents_unipc")) > 1e-3);
    assert!(relative_error(&latents_high, &reference("latents_unipc_lora")) > 1e-3);
}

#[test]
fn batched_guidance_equals_two_passes() {
    let models = models();
    let (batched, steps_b) = denoise(
        &models,
        &request(SamplerKind::UniPc, 1.0, CfgBatching::Batched),
        None,
    );
    let (separate, steps_s) = denoise(
        &models,
        &request(SamplerKind::UniPc, 1.0, CfgBatching::Separate),
        None,
    );
    assert!(steps_b.iter().all(|s| s.batched));
    assert!(steps_s.iter().all(|s| !s.batched));
    let err = relative_error(&batched, &separate);
    eprintln!("batched vs two passes: relative difference {err:.2e}");
    assert!(err < 1e-5, "batched vs separate: {err}");
}

#[test]
fn phases_run_in_order_and_skip_what_is_done() {
    let models = models();
    let r = request(SamplerKind::Euler, 1.0, CfgBatching::Auto);
    let mut run = SampleRun::new(
        &r,
        &reference("prompt_embeds"),
        &reference("negative_prompt_embeds"),
        &models.condition,
        Device::Cpu,
    )
    .unwrap();
    assert_eq!(
        (run.remaining(Expert::High), run.remaining(Expert::Low)),
        (4, 8)
    );
    let mut count = 0;
    let err = run
        .denoise_phase(Expert::Low, &models.low, None, &mut |_| count += 1)
        .unwrap_err();
    assert!(matches!(err, SamplingError::Phase(_)), "{err}");
    assert!(err.to_string().contains("high-noise"), "{err}");
    assert_eq!(count, 0);
    run.denoise_phase(Expert::High, &models.high, None, &mut |_| count += 1)
        .unwrap();
    assert_eq!(
        (count, run.steps_done(), run.remaining(Expert::High)),
        (4, 4, 0)
    );
    run.denoise_phase(Expert::High, &models.high, None, &mut |_| count += 1)
        .unwrap();
    assert_eq!(count, 4, "a finished phase runs nothing");
    run.denoise_phase(Expert::Low, &models.low, None, &mut |_| count += 1)
        .unwrap();
    assert_eq!((count, run.remaining(Expert::Low)), (12, 0));
    assert!(run.is_done());
}

/// An expert-parallel job's previews: the high-noise phase in one run, its state handed to a
/// fresh run of the same request (another process), the low-noise phase there — the same final
/// latents as one run, bit for bit, for Euler and UniPC.
#[test]
fn a_run_handed_off_between_the_phases_ends_as_one_run() {
    let models = models();
    for sampler in [SamplerKind::Euler, SamplerKind::UniPc] {
        let r = request(sampler, 1.0, CfgBatching::Auto);
        let new_run = || {
            SampleRun::new(
                &r,
                &reference("prompt_embeds"),
                &reference("negative_prompt_embeds"),
                &models.condition,
                Device::Cpu,
            )
            .unwrap()
        };
        let (whole, _) = denoise(&models, &r, None);
        let mut high = new_run();
        high.denoise_phase(Expert::High, &models.high, None, &mut |_| {})
            .unwrap();
        let state = high.hand_off().unwrap();
        // The taking run is built with the handed-off condition, not its own encode.
        let condition = Conditioning::handed_off(&state, Device::Cpu).unwrap();
        let Conditioning::FirstFrame(y) = &condition else {
            panic!("an I2V run hands off its first-frame condition")
        };
        let Conditioning::FirstFrame(own) = &models.condition else {
            unreachable!()
        };
        assert!(y.equal(own));
        let mut low = SampleRun::new(
            &r,
            &reference("prompt_embeds"),
            &reference("negative_prompt_embeds"),
            &condition,
            Device::Cpu,
        )
        .unwrap();
        low.resume_from(&state).unwrap();
        assert!(high.steps_done() > 0 && !high.is_done(), "{sampler:?}");
        assert_eq!(
            (low.steps_done(), low.remaining(Expert::High)),
            (high.steps_done(), 0),
            "{sampler:?}"
        );
        low.denoise_phase(Expert::Low, &models.low, None, &mut |_| {})
            .unwrap();
        assert!(low.latents().equal(&whole), "{sampler:?}");
    }
}

#[test]
fn sampling_draws_nothing_from_libtorchs_generator() {
    let models = models();
    let r = SampleRequest {
        steps: 3,
        ..request(SamplerKind::UniPc, 1.0, CfgBatching::Auto)
    };
    tch::manual_seed(1234);
    let expected = Tensor::randn([16], (Kind::Float, Device::Cpu));
    tch::manual_seed(1234);
    let _ = denoise(&models, &r, None);
    let after = Tensor::randn([16], (Kind::Float, Device::Cpu));
    assert_eq!(
        Vec::<f32>::try_from(&after).unwrap(),
        Vec::<f32>::try_from(&expected).unwrap(),
        "sampling moved the global random stream"
    );
}

#[test]
fn mismatched_inputs_are_refused() {
    let models = models();
    let r = request(SamplerKind::UniPc, 1.0, CfgBatching::Auto);
    let cond = reference("prompt_embeds");
    let wrong_size = SampleRequest {
        width: 64,
        ..r.clone()
    };
    let err = SampleRun::new(&wrong_size, &cond, &cond, &models.condition, Device::Cpu)
        .err()
        .expect("a condition of another size is refused");
    assert!(err.to_string().contains("condition"), "{err}");
    let short = cond.narrow(1, 0, 77);
    assert!(SampleRun::new(&r, &cond, &short, &models.condition, Device::Cpu).is_err());
}

/// Text → umT5 → start frame → condition → both experts with their LoRA files → latents and video, as
/// `wanlora sample` runs it, against diffusers.
#[test]
fn generate_runs_the_whole_pipeline_from_files() {
    let model = fixtures().join("model");
    let r = request(
        SamplerKind::UniPc,
        case()["lora_multiplier"].as_f64().unwrap(),
        CfgBatching::Auto,
    );
    let tokenizer = Tokenizer::from_file(&model.join("tokenizer")).unwrap();
    let encoder =
        Umt5Encoder::from_path(&model.join("text_encoder"), Kind::Float, Device::Cpu).unwrap();
    let (ids, mask) = tokenizer
        .encode_batch(&[r.prompt.as_str(), r.negative_prompt.as_str()])
        .unwrap();
    let text = encoder.encode(&ids, &mask).unwrap();
    drop(encoder);
    let (cond, uncond) = (text.narrow(0, 0, 1), text.narrow(0, 1, 1));
    assert!(relative_error(&cond, &reference("prompt_embeds")) < 1e-5);
    assert!(relative_error(&uncond, &reference("negative_prompt_embeds")) < 1e-5);

    let vae = vae();
    let mut loaded = Vec::new();
    let mut load = |which: Expert| -> Result<LoadedExpert, SamplingError> {
        loaded.push(which);
        let model = expert(which);
        let lora = Some(lora(which, &model));
        Ok(LoadedExpert { model, lora })
    };
    let mut last = None;
    let out = generate(&r, &cond, &uncond, &vae, &mut load, &mut |s| {
        last = Some(*s)
    })
    .unwrap();
    assert_eq!(
        loaded,
        [Expert::High, Expert::Low],
        "each expert loaded once, in order"
    );
    assert_eq!(last.map(|s| (s.step, s.steps)), Some((11, 12)));
    let err = relative_error(&out.latents, &reference("latents_unipc_lora"));
    eprintln!("generate (text to latents) vs diffusers: relative error {err:.2e}");
    assert!(err < 1e-4, "end to end: relative error {err}");
    assert_eq!(out.video.size(), [1, 3, 9, 32, 48]);
    let range = (
        out.video.min().double_value(&[]),
        out.video.max().double_value(&[]),
    );
    assert!(
        range.0 >= -1.0 && range.1 <= 1.0 && range.1 > range.0,
        "{range:?}"
    );
}

/// `--fp8 weights|matmul`: the experts' block linears in fp8 (weight-only, or fp8 matmuls against
/// per-token scaled inputs — the CPU runs the same arithmetic) sample the same video as the fp32
/// reference up to fp8's rounding, and fp8 matmuls differ from weight-only by their input rounding.
#[test]
fn fp8_experts_sample_close_to_the_reference() {
    use wanlora_models::quant::Fp8Mode;
    let r = request(
        SamplerKind::UniPc,
        case()["lora_multiplier"].as_f64().unwrap(),
        CfgBatching::Auto,
    );
    let (cond, uncond) = (
        reference("prompt_embeds"),
        reference("negative_prompt_embeds"),
    );
    let vae = vae();
    let sample = |mode: Fp8Mode| -> Tensor {
        let mut load = |which: Expert| -> Result<LoadedExpert, SamplingError> {
            let mut model = expert(which);
            let lora = Some(lora(which, &model));
            model.set_fp8_mode(mode).expect("fp8 storage on the CPU");
            Ok(LoadedExpert { model, lora })
        };
        generate(&r, &cond, &uncond, &vae, &mut load, &mut |_| {})
            .unwrap()
            .latents
    };
    let weights = sample(Fp8Mode::WeightOnly);
    let matmul = sample(Fp8Mode::Matmul);
    let reference = reference("latents_unipc_lora");
    let (err_weights, err_matmul) = (
        relative_error(&weights, &reference),
        relative_error(&matmul, &reference),
    );
    let between = relative_error(&matmul, &weights);
    eprintln!(
        "fp8 experts vs diffusers fp32: weights {err_weights:.2e}, matmuls {err_matmul:.2e} \
         (between them {between:.2e})"
    );
    assert!(
        err_weights < 5e-2 && err_matmul < 5e-2,
        "fp8 samples drift from the reference"
    );
    assert!(
        err_weights > 1e-6 && between > 1e-6,
        "the fp8 modes did not take effect"
    );
}

fn reference_t2v(name: &str) -> Tensor {
    reference_in("reference_t2v.safetensors", name)
}

/// A text-to-video expert made from the fixture's I2V expert as gen_sampler.py makes it: the patch
/// embedding's first z input channels (the noisy latent's), written as a diffusers folder of its own
/// with `in_channels = z`, and loaded the way any expert is.
fn t2v_expert(which: Expert, dir: &Path) -> WanTransformer {
    let z = case()["vae"]["z_dim"]
        .as_i64()
        .expect("case.json: vae.z_dim");
    let source = fixtures().join("model").join(which.diffusers_folder());
    let tensors = Tensor::read_safetensors(source.join("diffusion_pytorch_model.safetensors"))
        .expect("fixture expert");
    let sliced: Vec<(String, Tensor)> = tensors
        .into_iter()
        .map(|(name, t)| {
            let t = if name == "patch_embedding.weight" {
                t.narrow(1, 0, z).contiguous()
            } else {
                t
            };
            (name, t)
        })
        .collect();
    let folder = dir.join(which.diffusers_folder());
    std::fs::create_dir_all(&folder).unwrap();
    Tensor::write_safetensors(&sliced, folder.join("diffusion_pytorch_model.safetensors")).unwrap();
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(source.join("config.json")).unwrap())
            .unwrap();
    config["in_channels"] = z.into();
    std::fs::write(folder.join("config.json"), config.to_string()).unwrap();
    let model = WanTransformer::from_path(&folder, Kind::Float, Device::Cpu).expect("T2V expert");
    assert_eq!(model.config.in_channels, z);
    model
}

/// The fixture's T2V case: the prompt alone, the T2V recipe's boundary, shift and guidance pair.
fn request_t2v(sampler: SamplerKind) -> SampleRequest {
    let t2v = &case()["t2v"];
    let num = |k: &str| {
        t2v[k]
            .as_f64()
            .unwrap_or_else(|| panic!("case.json: t2v.{k}"))
    };
    SampleRequest {
        start_image: None,
        shift: num("shift"),
        guidance_high: num("guidance_scale"),
        guidance_low: num("guidance_scale_2"),
        boundary_ratio: num("boundary_ratio"),
        ..request(sampler, 1.0, CfgBatching::Auto)
    }
}

/// A text-to-video run of the fixture's T2V case: the reference prompt embeddings, the latents alone.
fn t2v_run(sampler: SamplerKind) -> SampleRun {
    let z = case()["vae"]["z_dim"].as_i64().unwrap();
    let text_only = Conditioning::TextOnly { latent_channels: z };
    SampleRun::new(
        &request_t2v(sampler),
        &reference("prompt_embeds"),
        &reference("negative_prompt_embeds"),
        &text_only,
        Device::Cpu,
    )
    .unwrap()
}

/// A text-to-video run hands off no condition, and the run taking it over is text-to-video too;
/// a run of another sampler refuses the state.
#[test]
fn a_text_to_video_hand_off_names_its_conditioning() {
    let z = case()["vae"]["z_dim"].as_i64().unwrap();
    let state = t2v_run(SamplerKind::UniPc).hand_off().unwrap();
    assert!(!state.tensors.contains_key("condition"));
    let condition = Conditioning::handed_off(&state, Device::Cpu).unwrap();
    assert!(
        matches!(condition, Conditioning::TextOnly { latent_channels } if latent_channels == z)
    );
    let err = t2v_run(SamplerKind::Euler)
        .resume_from(&state)
        .unwrap_err()
        .to_string();
    assert!(err.contains("unipc"), "{err}");
}

#[test]
fn text_to_video_euler_and_unipc_match_diffusers_wan_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let (high, low) = (
        t2v_expert(Expert::High, dir.path()),
        t2v_expert(Expert::Low, dir.path()),
    );
    // Euler through SampleRun, the latents alone as the experts' input.
    let mut run = t2v_run(SamplerKind::Euler);
    let mut steps = Vec::new();
    for (expert, model) in [(Expert::High, &high), (Expert::Low, &low)] {
        run.denoise_phase(expert, model, None, &mut |s| steps.push(*s))
            .unwrap();
    }
    let err = relative_error(run.latents(), &reference_t2v("latents_t2v_euler"));
    eprintln!("T2V Euler vs diffusers WanPipeline: relative error {err:.2e}");
    assert!(err < 1e-4, "T2V Euler: relative error {err}");
    // Routing at the T2V boundary: the high-noise expert takes exactly diffusers' steps with t ≥ 875.
    let theirs: Vec<bool> = Vec::<f32>::try_from(&reference_t2v("timesteps_t2v_euler"))
        .unwrap()
        .iter()
        .map(|&t| t as f64 >= 875.0)
        .collect();
    let ours: Vec<bool> = steps.iter().map(|s| s.expert == Expert::High).collect();
    assert_eq!(ours, theirs);
    let high_steps = ours.iter().filter(|h| **h).count();
    assert!(
        high_steps > 0 && high_steps < ours.len(),
        "both experts must take part: {high_steps} of {} steps on the high-noise one",
        ours.len()
    );

    // UniPC through `generate`, as `wanlora sample --arch t2v` runs it: no start frame, the VAE gives z.
    let r = request_t2v(SamplerKind::UniPc);
    let (cond, uncond) = (
        reference("prompt_embeds"),
        reference("negative_prompt_embeds"),
    );
    let vae = vae();
    let mut experts = [Some(high), Some(low)];
    let mut load = |which: Expert| -> Result<LoadedExpert, SamplingError> {
        let model = experts[which as usize]
            .take()
            .expect("each expert loaded once");
        Ok(LoadedExpert { model, lora: None })
    };
    let out = generate(&r, &cond, &uncond, &vae, &mut load, &mut |_| {}).unwrap();
    let err = relative_error(&out.latents, &reference_t2v("latents_t2v_unipc"));
    eprintln!("T2V UniPC vs diffusers WanPipeline: relative error {err:.2e}");
    assert!(err < 1e-4, "T2V UniPC: relative error {err}");
    let euler = relative_error(&out.latents, &reference_t2v("latents_t2v_euler"));
    assert!(euler > 1e-2, "UniPC and Euler agree suspiciously ({euler})");
    assert_eq!(out.video.size(), [1, 3, 9, 32, 48]);
}

#[test]
fn an_expert_of_the_other_variant_is_named() {
    let dir = tempfile::tempdir().unwrap();
    // An image-to-video expert given a text-to-video sample.
    let mut run = t2v_run(SamplerKind::Euler);
    let err = run
        .denoise_phase(Expert::High, &expert(Expert::High), None, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("takes 12 input channels but the sample gives 4") && err.contains("ctrl_img"),
        "{err}"
    );
    // And a text-to-video expert given an image-to-video sample.
    let models = models();
    let r = request(SamplerKind::Euler, 1.0, CfgBatching::Auto);
    let (cond, uncond) = (
        reference("prompt_embeds"),
        reference("negative_prompt_embeds"),
    );
    let mut run = SampleRun::new(&r, &cond, &uncond, &models.condition, Device::Cpu).unwrap();
    let err = run
        .denoise_phase(
            Expert::High,
            &t2v_expert(Expert::High, dir.path()),
            None,
            &mut |_| {},
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("takes 4 input channels but the sample gives 12"),
        "{err}"
    );
}
