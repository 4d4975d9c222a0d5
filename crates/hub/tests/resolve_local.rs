//! Resolution of local folders and files, and of the key fallbacks, without a network.

mod support;

use std::fs;
use std::path::{Path, PathBuf};

use support::{as_specs, tiny_expert_original, tiny_umt5, tiny_vae_diffusers, write_safetensors};
use wanlora_hub::{
    resolve, Component, Error, HubConfig, Layout, ModelSpec, Need, Origin, Stage, State,
};

fn offline(dir: &Path) -> HubConfig {
    let mut c = HubConfig::new("http://127.0.0.1:9", dir);
    c.offline = true;
    c
}

/// A local diffusers pipeline folder with sharded experts.
fn diffusers_folder(root: &Path) {
    fs::write(
        root.join("model_index.json"),
        br#"{"_class_name":"WanImageToVideoPipeline"}"#,
    )
    .unwrap();
    let expert = tiny_expert_original("", 8, 36, 2);
    let (a, b) = expert.split_at(3);
    for folder in ["transformer", "transformer_2"] {
        let dir = root.join(folder);
        write_safetensors(
            &dir.join("diffusion_pytorch_model-00001-of-00002.safetensors"),
            &as_specs(a),
            1,
        );
        write_safetensors(
            &dir.join("diffusion_pytorch_model-00002-of-00002.safetensors"),
            &as_specs(b),
            2,
        );
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
        fs::write(
            dir.join("diffusion_pytorch_model.safetensors.index.json"),
            serde_json::to_vec(&serde_json::json!({"metadata": {}, "weight_map": map})).unwrap(),
        )
        .unwrap();
        fs::write(dir.join("config.json"), b"{}").unwrap();
    }
    write_safetensors(
        &root.join("text_encoder/model.safetensors"),
        &as_specs(&tiny_umt5(2, true)),
        3,
    );
    fs::write(root.join("text_encoder/config.json"), b"{}").unwrap();
    fs::create_dir_all(root.join("tokenizer")).unwrap();
    fs::write(
        root.join("tokenizer/tokenizer.json"),
        support::tokenizer_json(10),
    )
    .unwrap();
    fs::write(root.join("tokenizer/spiece.model"), b"sp").unwrap();
    write_safetensors(
        &root.join("vae/diffusion_pytorch_model.safetensors"),
        &as_specs(&tiny_vae_diffusers()),
        4,
    );
    fs::write(root.join("vae/config.json"), b"{}").unwrap();
}

fn spec_for(root: &Path) -> ModelSpec {
    ModelSpec {
        name_or_path: Some(root.display().to_string()),
        train_high_noise: false,
        train_low_noise: true,
        ..ModelSpec::default()
    }
}

#[test]
fn a_local_diffusers_folder_resolves_per_component() {
    let dir = tempfile::tempdir().unwrap();
    diffusers_folder(dir.path());
    let cache = tempfile::tempdir().unwrap();
    let model = resolve(&spec_for(dir.path()), &offline(cache.path())).unwrap();
    model.require(Stage::Training).unwrap();

    let low = model.component(Component::LowNoiseExpert).unwrap();
    assert_eq!(low.need, Need::Training);
    assert_eq!(
        low.origin,
        Some(Origin::LocalFolder(dir.path().join("transformer_2")))
    );
    assert_eq!(low.layout, Some(Layout::Sharded { shards: 2 }));
    let names: Vec<PathBuf> = low.weight_files();
    assert_eq!(
        names,
        vec![
            dir.path()
                .join("transformer_2/diffusion_pytorch_model-00001-of-00002.safetensors"),
            dir.path()
                .join("transformer_2/diffusion_pytorch_model-00002-of-00002.safetensors"),
        ]
    );
    assert_eq!(low.weights_path(), Some(dir.path().join("transformer_2")));
    let vae = model.component(Component::Vae).unwrap();
    assert_eq!(
        vae.weights_path(),
        Some(dir.path().join("vae/diffusion_pytorch_model.safetensors"))
    );
    let on_disk: u64 = fs::read_dir(dir.path().join("transformer_2"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert_eq!(low.total_bytes(), on_disk);
    // The high-noise expert is neither trained nor needed for samples: not even looked up.
    let high = model.component(Component::HighNoiseExpert).unwrap();
    assert_eq!((high.need, &high.state), (Need::Unused, &State::NotNeeded));
    assert!(high.files.is_empty());
    let tok = model.component(Component::Tokenizer).unwrap();
    assert_eq!(tok.layout, Some(Layout::TokenizerFiles));
    assert_eq!(tok.files.len(), 2);
}

#[test]
fn a_missing_shard_in_a_local_folder_is_named_exactly() {
    let dir = tempfile::tempdir().unwrap();
    diffusers_folder(dir.path());
    let gone = dir
        .path()
        .join("transformer_2/diffusion_pytorch_model-00001-of-00002.safetensors");
    fs::remove_file(&gone).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let model = resolve(&spec_for(dir.path()), &offline(cache.path())).unwrap();
    let err = model.require(Stage::Training).unwrap_err();
    let Error::Missing(lines) = &err else {
        panic!("{err}")
    };
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("low-noise expert") && lines[0].contains(&gone.display().to_string()),
        "{}",
        lines[0]
    );
}

#[test]
fn a_path_that_does_not_exist_names_the_key_to_fix() {
    let dir = tempfile::tempdir().unwrap();
    diffusers_folder(dir.path());
    let mut spec = spec_for(dir.path());
    spec.vae_path = Some("./nowhere/wan_2.1_vae.safetensors".into());
    let cache = tempfile::tempdir().unwrap();
    let model = resolve(&spec, &offline(cache.path())).unwrap();
    let text = model.require(Stage::Training).unwrap_err().to_string();
    assert!(
        text.contains("model.vae_path") && text.contains("nowhere/wan_2.1_vae.safetensors"),
        "{text}"
    );
    assert!(text.contains("does not exist"), "{text}");
}

#[test]
fn the_tokenizer_comes_from_the_text_encoder_folder_when_it_has_one() {
    let pipeline = tempfile::tempdir().unwrap();
    diffusers_folder(pipeline.path());
    let te = tempfile::tempdir().unwrap();
    write_safetensors(
        &te.path().join("model.safetensors"),
        &as_specs(&tiny_umt5(2, true)),
        5,
    );
    let mut spec = spec_for(pipeline.path());
    spec.te_name_or_path = Some(te.path().display().to_string());
    let cache = tempfile::tempdir().unwrap();

    // No tokenizer next to the text encoder: the pipeline's is used.
    let model = resolve(&spec, &offline(cache.path())).unwrap();
    let tok = model.component(Component::Tokenizer).unwrap();
    assert_eq!(tok.key, Some("model.name_or_path"));
    assert_eq!(
        model.component(Component::TextEncoder).unwrap().origin,
        Some(Origin::LocalFolder(te.path().to_path_buf()))
    );

    fs::create_dir_all(te.path().join("tokenizer")).unwrap();
    fs::write(
        te.path().join("tokenizer/tokenizer.json"),
        support::tokenizer_json(5),
    )
    .unwrap();
    let model = resolve(&spec, &offline(cache.path())).unwrap();
    let tok = model.component(Component::Tokenizer).unwrap();
    assert_eq!(tok.key, Some("model.te_name_or_path"));
    assert_eq!(
        tok.file_named("tokenizer.json"),
        Some(te.path().join("tokenizer/tokenizer.json"))
    );
}

#[test]
fn extras_supply_only_what_the_per_component_keys_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let high = dir
        .path()
        .join("wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors");
    write_safetensors(&high, &as_specs(&tiny_expert_original("", 8, 36, 2)), 1);
    let vae = dir.path().join("wan_2.1_vae.safetensors");
    write_safetensors(&vae, &as_specs(&support::tiny_vae_original(16)), 2);
    let spec = ModelSpec {
        extras_name_or_path: Some("ai-toolkit/Wan2.2-I2V-A14B-Diffusers-bf16".into()),
        high_noise_model_path: Some(high.display().to_string()),
        vae_path: Some(vae.display().to_string()),
        train_high_noise: true,
        ..ModelSpec::default()
    };
    let cache = tempfile::tempdir().unwrap();
    let model = resolve(&spec, &offline(cache.path())).unwrap();
    assert_eq!(
        model.component(Component::HighNoiseExpert).unwrap().origin,
        Some(Origin::LocalFile(high.clone()))
    );
    assert_eq!(model.component(Component::Vae).unwrap().state, State::Ready);
    let err = model.require(Stage::Training).unwrap_err();
    let Error::Offline { missing, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(
        missing,
        &vec![
            "text encoder: ai-toolkit/Wan2.2-I2V-A14B-Diffusers-bf16@main: text_encoder/ (config.json and the *.safetensors weights)".to_string(),
            "tokenizer: ai-toolkit/Wan2.2-I2V-A14B-Diffusers-bf16@main: tokenizer/ (tokenizer.json)".to_string(),
        ]
    );
}

#[test]
fn the_official_wan_layout_gives_experts_and_explains_the_pickles() {
    let dir = tempfile::tempdir().unwrap();
    let expert = tiny_expert_original("", 8, 36, 2);
    write_safetensors(
        &dir.path()
            .join("high_noise_model/diffusion_pytorch_model.safetensors"),
        &as_specs(&expert),
        1,
    );
    write_safetensors(
        &dir.path()
            .join("low_noise_model/diffusion_pytorch_model.safetensors"),
        &as_specs(&expert),
        2,
    );
    fs::write(
        dir.path().join("models_t5_umt5-xxl-enc-bf16.pth"),
        b"pickle",
    )
    .unwrap();
    let spec = ModelSpec {
        name_or_path: Some(dir.path().display().to_string()),
        te_name_or_path: Some(
            dir.path()
                .join("models_t5_umt5-xxl-enc-bf16.pth")
                .display()
                .to_string(),
        ),
        train_high_noise: true,
        train_low_noise: true,
        ..ModelSpec::default()
    };
    let cache = tempfile::tempdir().unwrap();
    let model = resolve(&spec, &offline(cache.path())).unwrap();
    assert_eq!(
        model.component(Component::HighNoiseExpert).unwrap().origin,
        Some(Origin::LocalFolder(dir.path().join("high_noise_model")))
    );
    assert!(model
        .component(Component::LowNoiseExpert)
        .unwrap()
        .is_ready());
    let te = model.component(Component::TextEncoder).unwrap();
    let State::Missing { reason, .. } = &te.state else {
        panic!("{:?}", te.state)
    };
    assert!(
        reason.contains("PyTorch pickle") && reason.contains("safetensors"),
        "{reason}"
    );
}

#[test]
fn nothing_named_says_which_keys_to_set() {
    let cache = tempfile::tempdir().unwrap();
    let spec = ModelSpec {
        train_high_noise: true,
        ..ModelSpec::default()
    };
    let model = resolve(&spec, &offline(cache.path())).unwrap();
    let text = model.require(Stage::Training).unwrap_err().to_string();
    assert!(text.contains("no job key names it"), "{text}");
    assert!(
        text.contains("model.high_noise_model_path") && text.contains("model.tokenizer_path"),
        "{text}"
    );
}
