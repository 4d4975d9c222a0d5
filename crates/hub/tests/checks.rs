//! Wrong-model and damaged-file detection on small synthetic safetensors files, through the same
//! path a job takes: resolve the spec, then check before training.

mod support;

use std::fs;
use std::path::{Path, PathBuf};

use support::{as_specs, tiny_expert_original, tiny_umt5, tiny_vae_original, write_safetensors};
use wanlora_config::ModelArch;
use wanlora_hub::{
    check_components, check_model, report, resolve, CheckOptions, Component, Error, HubConfig,
    ModelKind, ModelSpec, Stage,
};

const SMALL: CheckOptions = CheckOptions {
    exact_sizes: false,
    arch: wanlora_config::ModelArch::Wan22_14bI2v,
};

/// ComfyUI-style single files for every component, all correct for the tiny architecture.
struct Files {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Files {
    fn new() -> Files {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let expert = tiny_expert_original("model.diffusion_model.", 8, 36, 2);
        write_safetensors(
            &root.join("wan2.2_i2v_high_noise_14B_fp16.safetensors"),
            &as_specs(&expert),
            1,
        );
        write_safetensors(
            &root.join("wan2.2_i2v_low_noise_14B_fp16.safetensors"),
            &as_specs(&expert),
            2,
        );
        write_safetensors(
            &root.join("umt5_xxl_fp8_e4m3fn_scaled.safetensors"),
            &as_specs(&tiny_umt5(3, true)),
            3,
        );
        write_safetensors(
            &root.join("wan_2.1_vae.safetensors"),
            &as_specs(&tiny_vae_original(16)),
            4,
        );
        fs::create_dir_all(root.join("tokenizer")).unwrap();
        fs::write(
            root.join("tokenizer/tokenizer.json"),
            support::tokenizer_json(40),
        )
        .unwrap();
        Files { _dir: dir, root }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    fn spec(&self) -> ModelSpec {
        let p = |n: &str| Some(self.path(n).display().to_string());
        ModelSpec {
            high_noise_model_path: p("wan2.2_i2v_high_noise_14B_fp16.safetensors"),
            low_noise_model_path: p("wan2.2_i2v_low_noise_14B_fp16.safetensors"),
            te_name_or_path: p("umt5_xxl_fp8_e4m3fn_scaled.safetensors"),
            vae_path: p("wan_2.1_vae.safetensors"),
            tokenizer_path: p("tokenizer"),
            train_high_noise: true,
            train_low_noise: true,
            ..ModelSpec::default()
        }
    }
}

fn offline(dir: &Path) -> HubConfig {
    let mut c = HubConfig::new("http://127.0.0.1:9", dir);
    c.offline = true;
    c
}

/// The check failure for `component`, as text; panics when the component passes.
fn failure_of(spec: &ModelSpec, component: Component) -> String {
    let cache = tempfile::tempdir().unwrap();
    let model = resolve(spec, &offline(cache.path())).unwrap();
    let results = check_components(&model, Stage::Everything, &SMALL);
    let (_, result) = results
        .iter()
        .find(|(c, _)| *c == component)
        .expect("component was not checked");
    match result {
        Err(f) => f.to_string(),
        Ok(r) => panic!("{component} passed as {}", r.kind),
    }
}

#[test]
fn correct_comfyui_files_pass_with_their_kinds_and_dtypes() {
    let files = Files::new();
    let cache = tempfile::tempdir().unwrap();
    let model = resolve(&files.spec(), &offline(cache.path())).unwrap();
    let reports = check_model(&model, Stage::Everything, &SMALL).unwrap();
    assert_eq!(reports.len(), 5);
    let kind = |c: Component| {
        reports
            .iter()
            .find(|r| r.component == c)
            .unwrap()
            .kind
            .clone()
    };
    let ModelKind::WanTransformer(s) = kind(Component::HighNoiseExpert) else {
        panic!()
    };
    assert_eq!((s.in_channels, s.out_channels, s.layers), (36, Some(16), 2));
    assert!(matches!(
        kind(Component::TextEncoder),
        ModelKind::Umt5Encoder(_)
    ));
    assert!(matches!(kind(Component::Vae), ModelKind::WanVae(_)));
    assert!(matches!(
        kind(Component::Tokenizer),
        ModelKind::Tokenizer { vocab: 40, .. }
    ));
    let high = reports
        .iter()
        .find(|r| r.component == Component::HighNoiseExpert)
        .unwrap();
    // bf16: patch 2304 + bias 16 + text 256 + head 1024 + 2 blocks × (128 + 512) = 4880 bytes;
    // fp32: head modulation 64 + 2 × 192 = 448 bytes. 92% bf16 counts as bf16.
    let dtypes = high.dtypes.as_ref().unwrap();
    assert_eq!(dtypes.bytes_by_dtype.values().sum::<u64>(), 4880 + 448);
    assert_eq!(dtypes.to_string(), "bf16");
    assert!(high.warnings.is_empty());

    // With the real sizes demanded, the tiny expert is not an A14B expert, and the reason says why.
    let err = check_model(&model, Stage::Everything, &CheckOptions::default()).unwrap_err();
    let Error::Checks(failures) = &err else {
        panic!("{err}")
    };
    let high = failures
        .iter()
        .find(|f| f.component == Component::HighNoiseExpert)
        .unwrap()
        .to_string();
    assert!(
        high.contains("not an A14B expert") && high.contains("dim 8 (A14B: 5120)"),
        "{high}"
    );
}

#[test]
fn a_text_to_video_expert_is_named() {
    let files = Files::new();
    let t2v = tiny_expert_original("", 8, 16, 2);
    write_safetensors(
        &files.path("wan2.2_t2v_high_noise_14B_fp16.safetensors"),
        &as_specs(&t2v),
        5,
    );
    let mut spec = files.spec();
    spec.high_noise_model_path = Some(
        files
            .path("wan2.2_t2v_high_noise_14B_fp16.safetensors")
            .display()
            .to_string(),
    );
    let text = failure_of(&spec, Component::HighNoiseExpert);
    assert!(
        text.contains("text-to-video") && text.contains("takes 16 input channels"),
        "{text}"
    );
    assert!(
        text.contains("wan2.2_t2v_high_noise_14B_fp16.safetensors"),
        "{text}"
    );
    assert!(text.contains("model.high_noise_model_path"), "{text}");
}

/// The same files checked for a job of `arch`.
fn failure_for(arch: ModelArch, spec: &ModelSpec, component: Component) -> Option<String> {
    let cache = tempfile::tempdir().unwrap();
    let model = resolve(spec, &offline(cache.path())).unwrap();
    let options = CheckOptions { arch, ..SMALL };
    let results = check_components(&model, Stage::Everything, &options);
    let (_, result) = results.iter().find(|(c, _)| *c == component).unwrap();
    result.as_ref().err().map(|f| f.to_string())
}

#[test]
fn text_to_video_experts_pass_for_a_t2v_job_and_i2v_experts_are_named_as_the_other_model() {
    let files = Files::new();
    for (name, seed) in [
        ("wan2.2_t2v_high_noise_14B_fp16.safetensors", 7),
        ("wan2.2_t2v_low_noise_14B_fp16.safetensors", 8),
    ] {
        write_safetensors(
            &files.path(name),
            &as_specs(&tiny_expert_original("", 8, 16, 2)),
            seed,
        );
    }
    let t2v_spec = ModelSpec {
        high_noise_model_path: Some(
            files
                .path("wan2.2_t2v_high_noise_14B_fp16.safetensors")
                .display()
                .to_string(),
        ),
        low_noise_model_path: Some(
            files
                .path("wan2.2_t2v_low_noise_14B_fp16.safetensors")
                .display()
                .to_string(),
        ),
        ..files.spec()
    };
    // A T2V job with T2V experts: every component passes, and the expert is reported as T2V.
    let cache = tempfile::tempdir().unwrap();
    let model = resolve(&t2v_spec, &offline(cache.path())).unwrap();
    let t2v = CheckOptions {
        arch: ModelArch::Wan22_14b,
        ..SMALL
    };
    let reports = check_model(&model, Stage::Everything, &t2v).unwrap();
    let high = reports
        .iter()
        .find(|r| r.component == Component::HighNoiseExpert)
        .unwrap();
    assert!(
        high.kind.to_string().contains("16 input channels"),
        "{}",
        high.kind
    );

    // The I2V experts given to a T2V job: named as image-to-video, with both ways out.
    let text = failure_for(
        ModelArch::Wan22_14b,
        &files.spec(),
        Component::LowNoiseExpert,
    )
    .expect("an I2V expert fails a T2V job");
    assert!(
        text.contains("image-to-video")
            && text.contains("takes 36 input channels")
            && text.contains("model.arch: wan22_14b")
            && text.contains("ai-toolkit/Wan2.2-T2V-A14B-Diffusers-bf16")
            && text.contains("set model.arch: wan22_14b_i2v"),
        "{text}"
    );
    assert!(
        text.contains("wan2.2_i2v_low_noise_14B_fp16.safetensors"),
        "{text}"
    );
    // And the reverse: T2V experts given to an I2V job.
    let text = failure_for(
        ModelArch::Wan22_14bI2v,
        &t2v_spec,
        Component::HighNoiseExpert,
    )
    .expect("a T2V expert fails an I2V job");
    assert!(
        text.contains("text-to-video") && text.contains("set model.arch: wan22_14b"),
        "{text}"
    );
}

#[test]
fn a_wan_21_image_to_video_model_is_named() {
    let files = Files::new();
    let mut i2v21 = tiny_expert_original("", 8, 36, 2);
    i2v21.push(("img_emb.proj.1.weight".into(), "BF16", vec![8, 8]));
    i2v21.push((
        "blocks.0.cross_attn.k_img.weight".into(),
        "BF16",
        vec![8, 8],
    ));
    write_safetensors(
        &files.path("wan2.1_i2v_480p_14B_fp16.safetensors"),
        &as_specs(&i2v21),
        6,
    );
    let mut spec = files.spec();
    spec.low_noise_model_path = Some(
        files
            .path("wan2.1_i2v_480p_14B_fp16.safetensors")
            .display()
            .to_string(),
    );
    let text = failure_of(&spec, Component::LowNoiseExpert);
    assert!(
        text.contains("Wan 2.1") && text.contains("CLIP image branch"),
        "{text}"
    );
}

#[test]
fn the_5b_model_is_named_even_without_exact_sizes() {
    let files = Files::new();
    let ti2v = vec![
        (
            "patch_embedding.weight".to_string(),
            "BF16",
            vec![3072, 48, 1, 2, 2],
        ),
        ("head.head.weight".into(), "BF16", vec![192, 3072]),
        ("blocks.0.self_attn.q.weight".into(), "BF16", vec![4, 4]),
    ];
    write_safetensors(
        &files.path("wan2.2_ti2v_5B_fp16.safetensors"),
        &as_specs(&ti2v),
        7,
    );
    let mut spec = files.spec();
    spec.high_noise_model_path = Some(
        files
            .path("wan2.2_ti2v_5B_fp16.safetensors")
            .display()
            .to_string(),
    );
    let text = failure_of(&spec, Component::HighNoiseExpert);
    assert!(text.contains("TI2V-5B"), "{text}");
}

#[test]
fn a_lora_given_as_an_expert_is_named() {
    let files = Files::new();
    let lora = vec![
        (
            "diffusion_model.blocks.0.self_attn.q.lora_A.weight".to_string(),
            "BF16",
            vec![4, 8],
        ),
        (
            "diffusion_model.blocks.0.self_attn.q.lora_B.weight".into(),
            "BF16",
            vec![8, 4],
        ),
    ];
    write_safetensors(
        &files.path("my_lora_high_noise.safetensors"),
        &as_specs(&lora),
        8,
    );
    let mut spec = files.spec();
    spec.high_noise_model_path = Some(
        files
            .path("my_lora_high_noise.safetensors")
            .display()
            .to_string(),
    );
    let text = failure_of(&spec, Component::HighNoiseExpert);
    assert!(text.contains("is a LoRA"), "{text}");
}

#[test]
fn t5_instead_of_umt5_and_a_vae_as_text_encoder_are_named() {
    let files = Files::new();
    write_safetensors(
        &files.path("t5xxl_fp16.safetensors"),
        &as_specs(&tiny_umt5(3, false)),
        9,
    );
    let mut spec = files.spec();
    spec.te_name_or_path = Some(files.path("t5xxl_fp16.safetensors").display().to_string());
    let text = failure_of(&spec, Component::TextEncoder);
    assert!(text.contains("T5 encoder, not umT5"), "{text}");

    spec.te_name_or_path = Some(files.path("wan_2.1_vae.safetensors").display().to_string());
    let text = failure_of(&spec, Component::TextEncoder);
    assert!(
        text.contains("Wan 2.1 VAE") && text.contains("not the umT5 text encoder"),
        "{text}"
    );
}

#[test]
fn the_wan_22_vae_and_an_image_vae_are_named() {
    let files = Files::new();
    write_safetensors(
        &files.path("wan2.2_vae.safetensors"),
        &as_specs(&tiny_vae_original(48)),
        10,
    );
    let mut spec = files.spec();
    spec.vae_path = Some(files.path("wan2.2_vae.safetensors").display().to_string());
    let text = failure_of(&spec, Component::Vae);
    assert!(text.contains("Wan 2.2 VAE (z_dim 48)"), "{text}");

    let sd = vec![(
        "encoder.conv_in.weight".to_string(),
        "F32",
        vec![8, 3, 3, 3],
    )];
    write_safetensors(&files.path("sdxl_vae.safetensors"), &as_specs(&sd), 11);
    spec.vae_path = Some(files.path("sdxl_vae.safetensors").display().to_string());
    let text = failure_of(&spec, Component::Vae);
    assert!(text.contains("image VAE"), "{text}");
}

#[test]
fn a_truncated_file_and_an_lfs_pointer_are_named() {
    let files = Files::new();
    let path = files.path("wan2.2_i2v_high_noise_14B_fp16.safetensors");
    let bytes = fs::read(&path).unwrap();
    fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
    let text = failure_of(&files.spec(), Component::HighNoiseExpert);
    assert!(
        text.contains("is truncated")
            && text.contains("100 missing")
            && text.contains(&path.display().to_string()),
        "{text}"
    );

    fs::write(
        &path,
        "version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 28000000000\n",
    )
    .unwrap();
    let text = failure_of(&files.spec(), Component::HighNoiseExpert);
    assert!(
        text.contains("Git LFS pointer") && text.contains("git lfs pull"),
        "{text}"
    );
}

#[test]
fn mixed_up_shards_are_named() {
    let files = Files::new();
    let folder = files.path("high_noise_model");
    let expert = tiny_expert_original("", 8, 36, 2);
    let (a, b) = expert.split_at(4);
    write_safetensors(
        &folder.join("diffusion_pytorch_model-00001-of-00002.safetensors"),
        &as_specs(a),
        1,
    );
    write_safetensors(
        &folder.join("diffusion_pytorch_model-00002-of-00002.safetensors"),
        &as_specs(b),
        2,
    );
    // The index puts one tensor in the wrong shard, as when shards of two versions are mixed.
    let mut map = serde_json::Map::new();
    for (n, _, _) in a {
        map.insert(
            n.clone(),
            "diffusion_pytorch_model-00001-of-00002.safetensors".into(),
        );
    }
    for (n, _, _) in b {
        map.insert(
            n.clone(),
            "diffusion_pytorch_model-00002-of-00002.safetensors".into(),
        );
    }
    map.insert(
        "head.head.weight".into(),
        "diffusion_pytorch_model-00002-of-00002.safetensors".into(),
    );
    fs::write(
        folder.join("diffusion_pytorch_model.safetensors.index.json"),
        serde_json::to_vec(&serde_json::json!({"metadata": {}, "weight_map": map})).unwrap(),
    )
    .unwrap();
    let mut spec = files.spec();
    spec.high_noise_model_path = Some(folder.display().to_string());
    let text = failure_of(&spec, Component::HighNoiseExpert);
    assert!(
        text.contains("head.head.weight (in diffusion_pytorch_model-00002-of-00002.safetensors)"),
        "{text}"
    );
    assert!(text.contains("different versions"), "{text}");
}

#[test]
fn one_file_for_both_experts_fails_and_a_swapped_name_warns() {
    let files = Files::new();
    let mut spec = files.spec();
    spec.low_noise_model_path = spec.high_noise_model_path.clone();
    let text = failure_of(&spec, Component::LowNoiseExpert);
    assert!(
        text.contains("same weights as the high-noise expert"),
        "{text}"
    );

    let mut spec = files.spec();
    std::mem::swap(
        &mut spec.high_noise_model_path,
        &mut spec.low_noise_model_path,
    );
    let cache = tempfile::tempdir().unwrap();
    let model = resolve(&spec, &offline(cache.path())).unwrap();
    let reports = check_model(&model, Stage::Everything, &SMALL).unwrap();
    let high = reports
        .iter()
        .find(|r| r.component == Component::HighNoiseExpert)
        .unwrap();
    assert!(
        high.warnings.iter().any(|w| w.contains("swapped")),
        "{:?}",
        high.warnings
    );
}

#[test]
fn a_vae_that_does_not_match_the_experts_latent_width_is_named() {
    let files = Files::new();
    write_safetensors(
        &files.path("odd_vae.safetensors"),
        &as_specs(&tiny_vae_original(8)),
        12,
    );
    let mut spec = files.spec();
    spec.vae_path = Some(files.path("odd_vae.safetensors").display().to_string());
    let text = failure_of(&spec, Component::Vae);
    assert!(
        text.contains("encodes to 8 latent channels but the experts expect 16"),
        "{text}"
    );
}

#[test]
fn the_models_report_shows_source_size_format_and_problems() {
    let files = Files::new();
    write_safetensors(
        &files.path("t5xxl_fp16.safetensors"),
        &as_specs(&tiny_umt5(3, false)),
        9,
    );
    let mut spec = files.spec();
    spec.vae_path = Some(files.path("missing_vae.safetensors").display().to_string());
    spec.te_name_or_path = Some(files.path("t5xxl_fp16.safetensors").display().to_string());
    spec.train_low_noise = false;
    let cache = tempfile::tempdir().unwrap();
    let model = resolve(&spec, &offline(cache.path())).unwrap();
    let text = report::render(&model, &check_components(&model, Stage::Everything, &SMALL));
    assert!(
        text.contains("high-noise expert — for training — ready"),
        "{text}"
    );
    assert!(
        text.contains("low-noise expert — not needed — not needed"),
        "{text}"
    );
    assert!(
        text.contains("single file") && text.contains("Wan image-to-video transformer"),
        "{text}"
    );
    assert!(text.contains("VAE — for training — MISSING"), "{text}");
    assert!(
        text.contains("missing_vae.safetensors") && text.contains("Correct model.vae_path"),
        "{text}"
    );
    let t5 = files.path("t5xxl_fp16.safetensors").display().to_string();
    assert!(
        text.contains(&format!("WRONG:  {t5} is a T5 encoder, not umT5")),
        "{text}"
    );
    assert!(text.contains("fix:    Use umT5-XXL"), "{text}");
    assert!(text.contains("Not ready: 1 missing, 1 wrong"), "{text}");
}

/// TI2V-5B from ComfyUI's files: `wan2.2_ti2v_5B_fp16.safetensors` (48 channels in and out) as the one
/// transformer and `wan2.2_vae.safetensors` (z 48) pass a `wan22_5b` job without a low-noise expert; the
/// Wan 2.1 VAE and an A14B expert given to it are named.
#[test]
fn ti2v_5b_comfyui_files_pass_a_5b_job_and_the_a14b_parts_are_named() {
    let files = Files::new();
    let mut ti2v = tiny_expert_original("model.diffusion_model.", 8, 48, 2);
    for (name, _, shape) in &mut ti2v {
        if name.ends_with("head.head.weight") {
            // 48 output channels × the 2×2 patch.
            *shape = vec![192, 8];
        }
    }
    write_safetensors(
        &files.path("wan2.2_ti2v_5B_fp16.safetensors"),
        &as_specs(&ti2v),
        12,
    );
    write_safetensors(
        &files.path("wan2.2_vae.safetensors"),
        &as_specs(&tiny_vae_original(48)),
        13,
    );
    let spec = ModelSpec {
        high_noise_model_path: Some(
            files
                .path("wan2.2_ti2v_5B_fp16.safetensors")
                .display()
                .to_string(),
        ),
        low_noise_model_path: None,
        vae_path: Some(files.path("wan2.2_vae.safetensors").display().to_string()),
        train_low_noise: false,
        ..files.spec()
    };
    let cache = tempfile::tempdir().unwrap();
    let model = resolve(&spec, &offline(cache.path())).unwrap();
    let ti2v_job = CheckOptions {
        arch: ModelArch::Wan22_5b,
        ..SMALL
    };
    let reports = check_model(&model, Stage::Everything, &ti2v_job).unwrap();
    let transformer = reports
        .iter()
        .find(|r| r.component == Component::HighNoiseExpert)
        .unwrap();
    assert!(
        transformer.kind.to_string().contains("TI2V transformer")
            && transformer.kind.to_string().contains("48 input channels"),
        "{}",
        transformer.kind
    );
    assert!(reports
        .iter()
        .all(|r| r.component != Component::LowNoiseExpert));

    // The A14B parts given to a 5B job.
    let with_21_vae = ModelSpec {
        vae_path: files.spec().vae_path,
        ..spec.clone()
    };
    let text = failure_for(ModelArch::Wan22_5b, &with_21_vae, Component::Vae)
        .expect("the Wan 2.1 VAE fails a 5B job");
    assert!(
        text.contains("16 latent channels") && text.contains("wan2.2_vae.safetensors"),
        "{text}"
    );
    let with_a14b = ModelSpec {
        high_noise_model_path: files.spec().high_noise_model_path,
        ..spec
    };
    let text = failure_for(ModelArch::Wan22_5b, &with_a14b, Component::HighNoiseExpert)
        .expect("an A14B expert fails a 5B job");
    assert!(
        text.contains("image-to-video") && text.contains("model.arch: wan22_5b"),
        "{text}"
    );
}
