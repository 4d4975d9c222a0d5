//! AI Toolkit's "4 bit with ARA" on the demo's tiny model: the job with `qtype: "uint4|<adapter>"`
//! trains with the adapter frozen beside the experts' linears (each expert its own), the saved LoRA
//! holds only the user's adapters, and an adapter that cannot be had is named in the error.

use std::path::Path;
use tch::{Device, Kind, Tensor};
use wanlora_hub::HubConfig;
use wanlora_models::lora::LoraTarget;
use wanlora_torch::weights::{save_safetensors, WeightSet};
use wanlora_train::trainer::{train, RunOptions};

fn opts(dir: &Path) -> RunOptions {
    RunOptions {
        progress: false,
        stop_after: None,
        hub: HubConfig::from_vars(|k| match k {
            "HF_HUB_OFFLINE" => Some("1".into()),
            "HF_HOME" => Some(dir.join("hf").display().to_string()),
            _ => None,
        }),
    }
}

/// An adapter for the tiny model's two experts in the key format of AI Toolkit's two-expert
/// model (`diffusion_model.transformer_1.blocks.N.<module>.lora_A.weight`), rank 4.
fn write_adapter(path: &Path) {
    let cfg = wanlora_train::tiny::transformer_config();
    tch::manual_seed(3);
    let mut tensors = Vec::new();
    for expert in ["transformer_1", "transformer_2"] {
        for block in 0..cfg.num_layers {
            for t in LoraTarget::ALL {
                let (inp, out) = t.dims(&cfg);
                let stem = format!("diffusion_model.{expert}.blocks.{block}.{}", t.path());
                let a = Tensor::randn([4, inp], (Kind::Float, Device::Cpu)) * 0.05;
                let b = Tensor::randn([out, 4], (Kind::Float, Device::Cpu)) * 0.05;
                tensors.push((format!("{stem}.lora_A.weight"), a.to_kind(Kind::BFloat16)));
                tensors.push((format!("{stem}.lora_B.weight"), b.to_kind(Kind::BFloat16)));
            }
        }
    }
    save_safetensors(path, &tensors, &Default::default()).unwrap();
}

fn uint4_job(dir: &Path, adapter: &str) -> std::path::PathBuf {
    let path = wanlora_train::demo::prepare(dir, 2).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let edited = text.replacen(
        "        arch: wan22_14b_i2v\n",
        &format!(
            "        arch: wan22_14b_i2v\n        quantize: true\n        qtype: \"uint4|{adapter}\"\n        low_vram: true\n"
        ),
        1,
    );
    assert_ne!(edited, text);
    std::fs::write(&path, edited).unwrap();
    path
}

#[test]
fn the_4bit_ara_job_trains_and_saves_only_the_users_lora() {
    tch::set_num_threads(2);
    let dir = tempfile::tempdir().unwrap();
    let adapter = dir.path().join("wan22_14b_i2v_torchao_uint4.safetensors");
    write_adapter(&adapter);
    let path = uint4_job(dir.path(), &adapter.display().to_string());
    let job = wanlora_config::load_job(&path).unwrap();
    let summary = train(job, opts(dir.path())).unwrap();
    assert_eq!(summary.step, 2);
    assert!(summary.losses.iter().all(|(_, _, l)| l.is_finite()));
    let log = std::fs::read_to_string(summary.output.join("log.txt")).unwrap();
    assert!(
        log.contains("accuracy recovery adapter") && log.contains("wan22_14b_i2v_torchao_uint4"),
        "{log}"
    );
    // Each expert's 4-bit weights are kept for the next start, beside the Hugging Face cache.
    let cached = std::fs::read_dir(dir.path().join("hf/wanlora-uint4"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "safetensors")
        })
        .count();
    assert_eq!(cached, 2);
    let cfg = wanlora_train::tiny::transformer_config();
    for e in ["high_noise", "low_noise"] {
        let lora = WeightSet::open(&summary.output.join(format!("demo_{e}.safetensors"))).unwrap();
        let names = lora.names();
        // A, B and alpha of the user's ten linears per block, nothing of the adapter.
        assert_eq!(names.len() as i64, 3 * 10 * cfg.num_layers, "{names:?}");
        assert!(
            names.iter().all(|n| !n.contains("transformer_")),
            "{names:?}"
        );
        let a = lora
            .load(
                "diffusion_model.blocks.0.self_attn.q.lora_A.weight",
                Kind::Float,
                Device::Cpu,
            )
            .unwrap();
        assert_eq!(
            a.size(),
            [8, cfg.dim()],
            "the user's rank, not the adapter's"
        );
    }
}

#[test]
fn an_adapter_not_in_the_cache_offline_is_named() {
    tch::set_num_threads(2);
    let dir = tempfile::tempdir().unwrap();
    let reference = "ostris/accuracy_recovery_adapters/wan22_14b_i2v_torchao_uint4.safetensors";
    let path = uint4_job(dir.path(), reference);
    let err = match train(wanlora_config::load_job(&path).unwrap(), opts(dir.path())) {
        Ok(_) => panic!("trained without its adapter"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains(reference) && err.contains("HF_HUB_OFFLINE"),
        "{err}"
    );
}
