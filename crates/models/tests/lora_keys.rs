//! A LoRA file whose keys partly match nothing is applied with a warning naming them; a file of which
//! none match is refused (fixtures from scripts/fixtures/gen_transformer.py).

use std::path::PathBuf;
use tch::{Device, Kind, Tensor};
use wanlora_models::lora::LoraSet;
use wanlora_models::transformer::TransformerConfig;
use wanlora_torch::weights::WeightSet;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/transformer")
}

fn config() -> TransformerConfig {
    TransformerConfig::from_json_file(&fixtures().join("diffusers/config.json")).unwrap()
}

/// The fixture LoRA's tensors, plus `extra`, written to a new file.
fn lora_with(dir: &std::path::Path, keep_fixture: bool, extra: &[&str]) -> PathBuf {
    let set = WeightSet::open(&fixtures().join("lora_comfy.safetensors")).unwrap();
    let mut tensors: Vec<(String, Tensor)> = Vec::new();
    if keep_fixture {
        for name in set.names() {
            let t = set.load(&name, Kind::Float, Device::Cpu).unwrap();
            tensors.push((name, t));
        }
    }
    for name in extra {
        tensors.push((
            name.to_string(),
            Tensor::zeros([4, 8], (Kind::Float, Device::Cpu)),
        ));
    }
    let path = dir.join(format!("lora_{}_{}.safetensors", keep_fixture, extra.len()));
    let refs: Vec<(&str, &Tensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    Tensor::write_safetensors(&refs, &path).unwrap();
    path
}

#[test]
fn keys_that_match_no_layer_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config();
    let extra = [
        // A block beyond the tiny model's two, and a layer wanlora does not adapt.
        "diffusion_model.blocks.7.self_attn.q.lora_A.weight",
        "diffusion_model.text_embedding.0.lora_A.weight",
    ];
    let (_, report) = LoraSet::load_reporting(
        &lora_with(dir.path(), true, &extra),
        &cfg,
        Device::Cpu,
        false,
    )
    .unwrap();
    assert_eq!(report.unused_keys, {
        let mut want: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        want.sort();
        want
    });
    let warning = report
        .unused_warning(std::path::Path::new("x.safetensors"))
        .unwrap();
    assert!(warning.contains("2 tensor(s) match no layer"), "{warning}");
    assert!(warning.contains("blocks.7.self_attn.q"), "{warning}");

    // The fixture as written: everything is used, nothing to say.
    let (_, clean) = LoraSet::load_reporting(
        &fixtures().join("lora_comfy.safetensors"),
        &cfg,
        Device::Cpu,
        false,
    )
    .unwrap();
    assert!(clean.unused_keys.is_empty(), "{:?}", clean.unused_keys);
    assert_eq!(clean.unused_warning(std::path::Path::new("x")), None);
}

#[test]
fn a_file_of_which_nothing_matches_is_refused_with_examples() {
    let dir = tempfile::tempdir().unwrap();
    let path = lora_with(
        dir.path(),
        false,
        &[
            "diffusion_model.blocks.9.self_attn.q.lora_A.weight",
            "diffusion_model.blocks.9.self_attn.q.lora_B.weight",
        ],
    );
    let err = LoraSet::load(&path, &config(), Device::Cpu, false)
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("no adapter matched"), "{err}");
    assert!(err.contains("blocks.9.self_attn.q"), "{err}");
}
