//! A tiny Wan-architecture pipeline (random weights, a few MB) written as a diffusers folder:
//! `transformer/`, `transformer_2/`, `vae/`, `text_encoder/`, `tokenizer/` — what `wanlora demo` and
//! the CI tests train, through the same code path as a real model.

use std::collections::BTreeMap;
use std::path::Path;
use tch::{Device, Kind, Tensor};

use crate::TrainError;
use wanlora_config::ModelArch;
use wanlora_models::transformer::naming::to_diffusers;
use wanlora_models::transformer::TransformerConfig;
use wanlora_torch::weights::{save_safetensors, write_atomic, RandomWeights, WeightSource};

/// A file in the folder that marks it as the tiny demo model (relaxes the A14B size checks).
pub const MARKER: &str = "wanlora-tiny-model.txt";

/// The tiny I2V transformer: the real structure (36 → 16 channels, patch 1×2×2, RMSNorm across heads,
/// affine cross-attention norm), small widths.
pub fn transformer_config() -> TransformerConfig {
    transformer_config_for(ModelArch::Wan22_14bI2v)
}

/// The tiny transformer of `arch`: its input channels (36 I2V, 16 T2V, 48 TI2V-5B), small widths.
pub fn transformer_config_for(arch: ModelArch) -> TransformerConfig {
    let base = if arch.facts().one_transformer {
        TransformerConfig::wan22_ti2v_5b()
    } else {
        TransformerConfig::wan22_a14b(arch.facts().in_channels as i64)
    };
    TransformerConfig {
        num_attention_heads: 2,
        attention_head_dim: 24,
        text_dim: 32,
        freq_dim: 32,
        ffn_dim: 96,
        num_layers: 2,
        ..base
    }
}

/// Words the demo captions use, so the tiny tokenizer has whole-word pieces for them.
pub const DEMO_WORDS: &[&str] = &[
    "a",
    "red",
    "blue",
    "green",
    "yellow",
    "white",
    "square",
    "circle",
    "moves",
    "slides",
    "to",
    "the",
    "left",
    "right",
    "up",
    "down",
    "on",
    "black",
    "background",
    "zkw",
    "shape",
    "spins",
    "in",
    "place",
];

/// A Unigram `tokenizer.json` with umT5's layout (NFKC + lowercase, Metaspace, `$A </s>`): special
/// pieces `<pad>`=0, `</s>`=1, `<unk>`=2, whole words, and single characters so any text encodes.
pub fn tokenizer_json(words: &[&str]) -> String {
    let mut vocab: Vec<(String, f64)> = vec![
        ("<pad>".into(), 0.0),
        ("</s>".into(), 0.0),
        ("<unk>".into(), 0.0),
        ("\u{2581}".into(), -2.0),
    ];
    for w in words {
        vocab.push((format!("\u{2581}{w}"), -1.0 - 1.0 / w.len() as f64));
    }
    for c in "abcdefghijklmnopqrstuvwxyz0123456789.,;:!?'-()".chars() {
        vocab.push((c.to_string(), -8.0));
        vocab.push((format!("\u{2581}{c}"), -6.0));
    }
    let mut seen = std::collections::HashSet::new();
    vocab.retain(|(p, _)| seen.insert(p.clone()));
    let meta = serde_json::json!({"type": "Metaspace", "replacement": "\u{2581}", "prepend_scheme": "always", "split": true});
    serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "NFKC"}, {"type": "Lowercase"},
            {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "}]},
        "pre_tokenizer": meta,
        "post_processor": {"type": "TemplateProcessing",
            "single": [{"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "</s>", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "</s>", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 0}}, {"SpecialToken": {"id": "</s>", "type_id": 0}}],
            "special_tokens": {"</s>": {"id": "</s>", "ids": [1], "tokens": ["</s>"]}}},
        "decoder": meta,
        "model": {"type": "Unigram", "unk_id": 2, "vocab": vocab, "byte_fallback": false}
    })
    .to_string()
}

fn write_component(
    dir: &Path,
    file: &str,
    config: serde_json::Value,
    tensors: Vec<(String, Tensor)>,
) -> Result<(), TrainError> {
    std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
    write_atomic(
        &dir.join("config.json"),
        serde_json::to_string_pretty(&config)?.as_bytes(),
    )?;
    save_safetensors(&dir.join(file), &tensors, &BTreeMap::new())?;
    Ok(())
}

/// Tensors of a random tiny transformer in diffusers naming.
fn transformer_tensors(
    cfg: &TransformerConfig,
    seed: i64,
) -> Result<Vec<(String, Tensor)>, TrainError> {
    let src = RandomWeights { std: 0.15, seed };
    let d = cfg.dim();
    let mut specs: Vec<(String, Vec<i64>)> = vec![
        (
            "patch_embedding.weight".into(),
            vec![d, cfg.in_channels, 1, 2, 2],
        ),
        ("patch_embedding.bias".into(), vec![d]),
        ("text_embedding.0.weight".into(), vec![d, cfg.text_dim]),
        ("text_embedding.0.bias".into(), vec![d]),
        ("text_embedding.2.weight".into(), vec![d, d]),
        ("text_embedding.2.bias".into(), vec![d]),
        ("time_embedding.0.weight".into(), vec![d, cfg.freq_dim]),
        ("time_embedding.0.bias".into(), vec![d]),
        ("time_embedding.2.weight".into(), vec![d, d]),
        ("time_embedding.2.bias".into(), vec![d]),
        ("time_projection.1.weight".into(), vec![6 * d, d]),
        ("time_projection.1.bias".into(), vec![6 * d]),
        ("head.modulation".into(), vec![1, 2, d]),
        ("head.head.weight".into(), vec![cfg.patch_out(), d]),
        ("head.head.bias".into(), vec![cfg.patch_out()]),
    ];
    for i in 0..cfg.num_layers {
        let p = format!("blocks.{i}");
        specs.push((format!("{p}.modulation"), vec![1, 6, d]));
        for a in ["self_attn", "cross_attn"] {
            for l in ["q", "k", "v", "o"] {
                specs.push((format!("{p}.{a}.{l}.weight"), vec![d, d]));
                specs.push((format!("{p}.{a}.{l}.bias"), vec![d]));
            }
            specs.push((format!("{p}.{a}.norm_q.weight"), vec![d]));
            specs.push((format!("{p}.{a}.norm_k.weight"), vec![d]));
        }
        specs.push((format!("{p}.norm3.weight"), vec![d]));
        specs.push((format!("{p}.norm3.bias"), vec![d]));
        specs.push((format!("{p}.ffn.0.weight"), vec![cfg.ffn_dim, d]));
        specs.push((format!("{p}.ffn.0.bias"), vec![cfg.ffn_dim]));
        specs.push((format!("{p}.ffn.2.weight"), vec![d, cfg.ffn_dim]));
        specs.push((format!("{p}.ffn.2.bias"), vec![d]));
    }
    specs
        .into_iter()
        .map(|(name, shape)| {
            let t = src.load(&name, &shape, Kind::Float, Device::Cpu)?;
            let stored = to_diffusers(&name)
                .ok_or_else(|| TrainError::Setup(format!("no diffusers name for {name}")))?;
            Ok((stored, t))
        })
        .collect()
}

/// Writes the whole tiny I2V pipeline under `dir` (diffusers layout); `dir` then works as
/// `model.name_or_path`.
pub fn write_tiny_model(dir: &Path, seed: i64) -> Result<(), TrainError> {
    write_tiny_model_for(dir, seed, ModelArch::Wan22_14bI2v)
}

/// Writes the whole tiny pipeline of `arch` under `dir` (diffusers layout).
pub fn write_tiny_model_for(dir: &Path, seed: i64, arch: ModelArch) -> Result<(), TrainError> {
    std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
    let facts = arch.facts();
    let cfg = transformer_config_for(arch);
    let tcfg = serde_json::json!({
        "_class_name": "WanTransformer3DModel", "patch_size": cfg.patch_size,
        "num_attention_heads": cfg.num_attention_heads, "attention_head_dim": cfg.attention_head_dim,
        "in_channels": cfg.in_channels, "out_channels": cfg.out_channels, "text_dim": cfg.text_dim,
        "freq_dim": cfg.freq_dim, "ffn_dim": cfg.ffn_dim, "num_layers": cfg.num_layers, "cross_attn_norm": true,
        "qk_norm": "rms_norm_across_heads", "eps": 1e-6, "image_dim": null, "added_kv_proj_dim": null,
        "rope_max_seq_len": 1024
    });
    // TI2V-5B is one transformer (`transformer/` alone); the A14B variants have two experts.
    let folders: &[(&str, i64)] = if facts.one_transformer {
        &[("transformer", seed)]
    } else {
        &[("transformer", seed), ("transformer_2", seed + 1)]
    };
    for &(folder, s) in folders {
        write_component(
            &dir.join(folder),
            "diffusion_pytorch_model.safetensors",
            tcfg.clone(),
            transformer_tensors(&cfg, s)?,
        )?;
    }
    write_tiny_vae(&dir.join("vae"), seed + 2, facts.one_transformer)?;
    write_tiny_text_encoder(&dir.join("text_encoder"), cfg.text_dim, seed + 3)?;
    let tok = dir.join("tokenizer");
    std::fs::create_dir_all(&tok).map_err(|e| TrainError::io(&tok, e))?;
    write_atomic(
        &tok.join("tokenizer.json"),
        tokenizer_json(DEMO_WORDS).as_bytes(),
    )?;
    write_atomic(
        &dir.join("model_index.json"),
        serde_json::to_string_pretty(&if facts.one_transformer {
            // Diffusers' TI2V-5B pipeline: one transformer, per-token timesteps.
            serde_json::json!({
                "_class_name": "WanPipeline", "expand_timesteps": true,
                "transformer": ["diffusers", "WanTransformer3DModel"], "transformer_2": [null, null],
                "vae": ["diffusers", "AutoencoderKLWan"], "text_encoder": ["transformers", "UMT5EncoderModel"],
                "tokenizer": ["transformers", "T5TokenizerFast"], "scheduler": ["diffusers", "UniPCMultistepScheduler"]
            })
        } else {
            serde_json::json!({
                "_class_name": if facts.first_frame_condition { "WanImageToVideoPipeline" } else { "WanPipeline" },
                "boundary_ratio": facts.boundary_ratio, "expand_timesteps": false,
                "transformer": ["diffusers", "WanTransformer3DModel"], "transformer_2": ["diffusers", "WanTransformer3DModel"],
                "vae": ["diffusers", "AutoencoderKLWan"], "text_encoder": ["transformers", "UMT5EncoderModel"],
                "tokenizer": ["transformers", "T5TokenizerFast"], "scheduler": ["diffusers", "UniPCMultistepScheduler"]
            })
        })?
        .as_bytes(),
    )?;
    write_atomic(
        &dir.join(MARKER),
        format!(
            "A tiny random {}-architecture pipeline written by wanlora for its demo and tests.\n",
            facts.label
        )
        .as_bytes(),
    )?;
    Ok(())
}

/// Records every tensor a model asks a random source for, in the names the model asked for
/// (diffusers / transformers naming for sources without names), to write them out as files.
struct Recorder {
    random: RandomWeights,
    seen: std::cell::RefCell<Vec<(String, Tensor)>>,
}

impl WeightSource for Recorder {
    fn load(
        &self,
        name: &str,
        shape: &[i64],
        kind: Kind,
        device: Device,
    ) -> Result<Tensor, wanlora_torch::weights::WeightError> {
        let t = self.random.load(name, shape, Kind::Float, Device::Cpu)?;
        self.seen.borrow_mut().push((name.to_string(), t.copy()));
        Ok(t.to_kind(kind).to_device(device))
    }
    fn shape_of(&self, _name: &str) -> Option<Vec<i64>> {
        None
    }
    fn names(&self) -> Vec<String> {
        Vec::new()
    }
    fn describe(&self) -> String {
        self.random.describe()
    }
}

/// A tiny Wan 2.1 VAE, or with `wan22` a tiny Wan 2.2 VAE (48 latent channels, 2×2 pixel patches, 16× in space).
fn write_tiny_vae(dir: &Path, seed: i64, wan22: bool) -> Result<(), TrainError> {
    use wanlora_models::vae::{Vae, VaeConfig};
    let cfg = if wan22 {
        VaeConfig {
            base_dim: 8,
            decoder_base_dim: Some(8),
            ..VaeConfig::wan22()
        }
    } else {
        VaeConfig {
            base_dim: 8,
            ..VaeConfig::default()
        }
    };
    let rec = Recorder {
        random: RandomWeights { std: 0.2, seed },
        seen: Default::default(),
    };
    Vae::load(&rec, Some(cfg.clone()), Kind::Float, Device::Cpu)?;
    let mut config = serde_json::json!({
        "_class_name": "AutoencoderKLWan", "base_dim": cfg.base_dim, "z_dim": cfg.z_dim,
        "dim_mult": cfg.dim_mult, "num_res_blocks": cfg.num_res_blocks, "attn_scales": cfg.attn_scales,
        "temperal_downsample": cfg.temperal_downsample, "dropout": 0.0,
        "latents_mean": cfg.latents_mean, "latents_std": cfg.latents_std
    });
    if wan22 {
        for (key, value) in [
            ("decoder_base_dim", serde_json::json!(cfg.decoder_base_dim)),
            ("is_residual", serde_json::json!(cfg.is_residual)),
            ("in_channels", serde_json::json!(cfg.in_channels)),
            ("out_channels", serde_json::json!(cfg.out_channels)),
            ("patch_size", serde_json::json!(cfg.patch_size)),
        ] {
            config[key] = value;
        }
    }
    write_component(
        dir,
        "diffusion_pytorch_model.safetensors",
        config,
        rec.seen.into_inner(),
    )
}

fn write_tiny_text_encoder(dir: &Path, d_model: i64, seed: i64) -> Result<(), TrainError> {
    use wanlora_models::umt5::{Umt5Config, Umt5Encoder};
    let cfg = Umt5Config {
        vocab_size: 256,
        d_model,
        d_kv: 8,
        d_ff: 64,
        num_layers: 2,
        num_heads: 4,
        ..Umt5Config::default()
    };
    let rec = Recorder {
        random: RandomWeights { std: 0.3, seed },
        seen: Default::default(),
    };
    Umt5Encoder::load(&rec, Some(cfg.clone()), Kind::Float, Device::Cpu)?;
    let config = serde_json::json!({
        "architectures": ["UMT5EncoderModel"], "model_type": "umt5", "vocab_size": cfg.vocab_size,
        "d_model": cfg.d_model, "d_kv": cfg.d_kv, "d_ff": cfg.d_ff, "num_layers": cfg.num_layers,
        "num_heads": cfg.num_heads, "relative_attention_num_buckets": cfg.relative_attention_num_buckets,
        "relative_attention_max_distance": cfg.relative_attention_max_distance,
        "layer_norm_epsilon": cfg.layer_norm_epsilon, "feed_forward_proj": cfg.feed_forward_proj,
        "dense_act_fn": cfg.dense_act_fn
    });
    write_component(dir, "model.safetensors", config, rec.seen.into_inner())
}
