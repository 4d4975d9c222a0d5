//! Telling from tensor names and shapes alone what model a set of safetensors files holds: a Wan
//! transformer (and which one), umT5 or T5, a Wan video VAE (and its latent width), a LoRA, …
//!
//! The rules use the key maps of the Wan reference (original/ComfyUI and diffusers names) and the
//! shapes that set the architecture: `patch_embedding.weight` is `[dim, in_channels, 1, 2, 2]`,
//! the head is `[4·out_channels, dim]`, the VAE's post-quant conv is `[z_dim, z_dim, 1, 1, 1]`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::safetensors_header::{is_auxiliary_tensor, SafetensorsHeader, TensorInfo};

pub use wanlora_spec::naming::Naming;
use wanlora_spec::naming::{
    is_adapter_key, to_diffusers, transformer_naming, TransformerShape, WRAPPER_PREFIXES,
};

/// All tensors of one component (one file or all shards), keyed by name without wrapper prefix.
#[derive(Debug, Clone, Default)]
pub struct TensorSet {
    pub tensors: BTreeMap<String, TensorInfo>,
}

impl TensorSet {
    pub fn from_headers<'a>(headers: impl IntoIterator<Item = &'a SafetensorsHeader>) -> TensorSet {
        let mut tensors = BTreeMap::new();
        for h in headers {
            for (name, info) in &h.tensors {
                if is_auxiliary_tensor(name) {
                    continue;
                }
                let bare = WRAPPER_PREFIXES
                    .iter()
                    .find_map(|p| name.strip_prefix(p))
                    .unwrap_or(name);
                tensors.insert(bare.to_string(), info.clone());
            }
        }
        TensorSet { tensors }
    }

    /// Builds a set from `(name, shape)` pairs (dtype bf16), for callers that know shapes only.
    pub fn from_shapes<'a>(shapes: impl IntoIterator<Item = (&'a str, Vec<u64>)>) -> TensorSet {
        let tensors = shapes
            .into_iter()
            .map(|(n, shape)| {
                (
                    n.to_string(),
                    TensorInfo {
                        dtype: crate::safetensors_header::Dtype::BF16,
                        shape,
                        begin: 0,
                        end: 0,
                    },
                )
            })
            .collect();
        TensorSet { tensors }
    }

    fn shape(&self, name: &str) -> Option<&[u64]> {
        self.tensors.get(name).map(|t| t.shape.as_slice())
    }

    fn has_prefix(&self, prefix: &str) -> bool {
        self.tensors
            .range(prefix.to_string()..)
            .next()
            .is_some_and(|(k, _)| k.starts_with(prefix))
    }

    fn any_key(&self, pred: impl Fn(&str) -> bool) -> Option<&str> {
        self.tensors.keys().map(String::as_str).find(|k| pred(k))
    }

    /// Distinct `N` in keys `<prefix>N.…`.
    fn numbered(&self, prefix: &str) -> BTreeSet<u64> {
        self.tensors
            .keys()
            .filter_map(|k| k.strip_prefix(prefix))
            .filter_map(|rest| rest.split('.').next()?.parse().ok())
            .collect()
    }
}

/// The architecture numbers of a Wan transformer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WanTransformerShape {
    pub dim: u64,
    pub in_channels: u64,
    pub out_channels: Option<u64>,
    pub layers: u64,
    pub ffn_dim: Option<u64>,
    pub text_dim: Option<u64>,
    /// Wan 2.1 I2V/FLF2V's CLIP image branch (`img_emb`, `k_img`/`v_img`).
    pub image_branch: bool,
    pub vace: bool,
    pub naming: Naming,
}

/// The architecture numbers of a T5-family encoder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextEncoderShape {
    pub d_model: u64,
    pub vocab: u64,
    pub layers: u64,
    /// Layers that carry their own relative-position bias (umT5: all; T5: only the first).
    pub layers_with_position_bias: u64,
    pub has_decoder: bool,
    pub naming: Naming,
}

/// The architecture numbers of a Wan video VAE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaeShape {
    pub z_dim: u64,
    pub base_dim: u64,
    /// Channels entering the encoder (3 for RGB; 12 for the Wan 2.2 VAE's 2×2 patchified input).
    pub in_channels: u64,
    pub naming: Naming,
}

/// What a set of tensors is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelKind {
    WanTransformer(WanTransformerShape),
    Umt5Encoder(TextEncoderShape),
    T5Encoder(TextEncoderShape),
    WanVae(VaeShape),
    /// A 2-D image VAE (SD, SDXL, Flux).
    ImageVae,
    /// LoRA/LyCORIS adapter or weight-difference file.
    Lora {
        example_key: String,
    },
    /// CLIP image encoder (Wan 2.1 I2V's `clip_vision_h`).
    ClipVision,
    /// A tokenizer file (`tokenizer.json`).
    Tokenizer {
        model_type: String,
        vocab: u64,
    },
    Unknown {
        example_keys: Vec<String>,
    },
}

impl WanTransformerShape {
    /// The Wan model this shape belongs to, in words.
    pub fn variant(&self) -> &'static str {
        TransformerShape {
            dim: self.dim,
            in_channels: self.in_channels,
            out_channels: self.out_channels,
            image_branch: self.image_branch,
            vace: self.vace,
        }
        .variant()
    }
}

impl fmt::Display for ModelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelKind::WanTransformer(s) => {
                write!(
                    f,
                    "{} (dim {}, {} blocks, {} input channels",
                    s.variant(),
                    s.dim,
                    s.layers,
                    s.in_channels
                )?;
                if let Some(o) = s.out_channels {
                    write!(f, ", {o} output channels")?;
                }
                write!(f, "; {})", s.naming)
            }
            ModelKind::Umt5Encoder(s) | ModelKind::T5Encoder(s) => {
                let name = if matches!(self, ModelKind::Umt5Encoder(_)) {
                    "umT5"
                } else {
                    "T5"
                };
                // HF transformers names are also what ComfyUI's umT5 files use.
                let naming = match s.naming {
                    Naming::Original => "Wan names",
                    Naming::Diffusers => "transformers/ComfyUI names",
                };
                let decoder = if s.has_decoder {
                    ", with a decoder"
                } else {
                    ""
                };
                write!(
                    f,
                    "{name} encoder (d_model {}, {} layers, vocabulary {}{decoder}; {naming})",
                    s.d_model, s.layers, s.vocab,
                )
            }
            ModelKind::WanVae(s) => write!(
                f,
                "Wan {} VAE (z_dim {}, base width {}; {})",
                if s.z_dim == 48 { "2.2" } else { "2.1" },
                s.z_dim,
                s.base_dim,
                s.naming
            ),
            ModelKind::ImageVae => f.write_str("image VAE (2-D convolutions, e.g. SD or Flux)"),
            ModelKind::Lora { example_key } => {
                write!(f, "LoRA/adapter file (e.g. key {example_key})")
            }
            ModelKind::ClipVision => f.write_str("CLIP image encoder"),
            ModelKind::Tokenizer { model_type, vocab } => {
                write!(f, "{model_type} tokenizer ({vocab} pieces)")
            }
            ModelKind::Unknown { example_keys } => {
                write!(
                    f,
                    "unrecognised weights (keys such as {})",
                    example_keys.join(", ")
                )
            }
        }
    }
}

/// Identifies what `set` is.
pub fn identify(set: &TensorSet) -> ModelKind {
    if let Some(k) = set.any_key(is_adapter_key) {
        return ModelKind::Lora {
            example_key: k.to_string(),
        };
    }
    if let Some(kind) = wan_transformer(set) {
        return kind;
    }
    if let Some(kind) = text_encoder(set) {
        return kind;
    }
    if let Some(kind) = vae(set) {
        return kind;
    }
    if set.has_prefix("visual.") || set.has_prefix("vision_model.") {
        return ModelKind::ClipVision;
    }
    ModelKind::Unknown {
        example_keys: set.tensors.keys().take(3).cloned().collect(),
    }
}

fn wan_transformer(set: &TensorSet) -> Option<ModelKind> {
    let patch = set.shape("patch_embedding.weight")?;
    let [dim, in_channels, pt, ph, pw] = *patch else {
        return None;
    };
    let naming = transformer_naming(|prefix| set.has_prefix(prefix));
    // A shape under its original name or its diffusers name.
    let shape = |original: &str| {
        set.shape(original)
            .or_else(|| to_diffusers(original).and_then(|d| set.shape(&d)))
    };
    let head = shape("head.head.weight");
    let out_channels = head
        .and_then(|s| s.first().copied())
        .map(|rows| rows / (pt * ph * pw).max(1));
    let ffn_dim = shape("blocks.0.ffn.0.weight").and_then(|s| s.first().copied());
    let text_dim = shape("text_embedding.0.weight").and_then(|s| s.get(1).copied());
    let image_branch = set.has_prefix("img_emb.")
        || set.has_prefix("condition_embedder.image_embedder.")
        || set
            .any_key(|k| k.contains(".cross_attn.k_img.") || k.contains(".attn2.add_k_proj."))
            .is_some();
    Some(ModelKind::WanTransformer(WanTransformerShape {
        dim,
        in_channels,
        out_channels,
        layers: set.numbered("blocks.").len() as u64,
        ffn_dim,
        text_dim,
        image_branch,
        vace: set.has_prefix("vace_blocks.") || set.has_prefix("vace_patch_embedding."),
        naming,
    }))
}

fn text_encoder(set: &TensorSet) -> Option<ModelKind> {
    let (naming, embedding, layers, bias_layers) = if set.has_prefix("encoder.block.") {
        let layers = set.numbered("encoder.block.");
        let bias = layers
            .iter()
            .filter(|i| {
                set.tensors.contains_key(&format!(
                    "encoder.block.{i}.layer.0.SelfAttention.relative_attention_bias.weight"
                ))
            })
            .count();
        let embedding = set
            .shape("shared.weight")
            .or_else(|| set.shape("encoder.embed_tokens.weight"));
        (Naming::Diffusers, embedding, layers.len(), bias)
    } else if set.tensors.contains_key("token_embedding.weight") && set.has_prefix("blocks.") {
        let layers = set.numbered("blocks.");
        let bias = layers
            .iter()
            .filter(|i| {
                set.tensors
                    .contains_key(&format!("blocks.{i}.pos_embedding.embedding.weight"))
            })
            .count();
        (
            Naming::Original,
            set.shape("token_embedding.weight"),
            layers.len(),
            bias,
        )
    } else {
        return None;
    };
    let [vocab, d_model] = *embedding? else {
        return None;
    };
    let shape = TextEncoderShape {
        d_model,
        vocab,
        layers: layers as u64,
        layers_with_position_bias: bias_layers as u64,
        has_decoder: set.has_prefix("decoder."),
        naming,
    };
    // umT5 gives every layer its own relative-position bias; T5 only the first.
    Some(if layers > 1 && bias_layers <= 1 {
        ModelKind::T5Encoder(shape)
    } else {
        ModelKind::Umt5Encoder(shape)
    })
}

fn vae(set: &TensorSet) -> Option<ModelKind> {
    let (naming, encoder_in, post_quant) = if let Some(s) = set.shape("encoder.conv1.weight") {
        (Naming::Original, s, set.shape("conv2.weight"))
    } else if let Some(s) = set.shape("encoder.conv_in.weight") {
        (Naming::Diffusers, s, set.shape("post_quant_conv.weight"))
    } else {
        return None;
    };
    match encoder_in.len() {
        4 => Some(ModelKind::ImageVae),
        5 => Some(ModelKind::WanVae(VaeShape {
            z_dim: post_quant.and_then(|s| s.first().copied())?,
            base_dim: encoder_in[0],
            in_channels: encoder_in[1],
            naming,
        })),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tensors that decide an A14B expert's identity, at real sizes (shapes only).
    fn a14b_shapes() -> Vec<(String, Vec<u64>)> {
        let mut v = vec![
            (
                "patch_embedding.weight".to_string(),
                vec![5120, 36, 1, 2, 2],
            ),
            ("text_embedding.0.weight".to_string(), vec![5120, 4096]),
            ("head.head.weight".to_string(), vec![64, 5120]),
        ];
        for i in 0..40 {
            v.push((format!("blocks.{i}.self_attn.q.weight"), vec![5120, 5120]));
            v.push((format!("blocks.{i}.ffn.0.weight"), vec![13824, 5120]));
        }
        v
    }

    fn set_of(shapes: &[(String, Vec<u64>)]) -> TensorSet {
        TensorSet::from_shapes(shapes.iter().map(|(n, s)| (n.as_str(), s.clone())))
    }

    #[test]
    fn the_a14b_i2v_expert_is_recognised() {
        let kind = identify(&set_of(&a14b_shapes()));
        let ModelKind::WanTransformer(s) = &kind else {
            panic!("{kind:?}")
        };
        assert_eq!(
            (
                s.dim,
                s.in_channels,
                s.out_channels,
                s.layers,
                s.ffn_dim,
                s.text_dim
            ),
            (5120, 36, Some(16), 40, Some(13824), Some(4096))
        );
        assert_eq!(s.variant(), "Wan 2.2 I2V A14B expert");
        assert_eq!(s.naming, Naming::Original);
    }

    #[test]
    fn wan_21_i2v_t2v_and_5b_are_told_apart() {
        let mut i2v21 = a14b_shapes();
        i2v21.push(("img_emb.proj.1.weight".into(), vec![5120, 1280]));
        let ModelKind::WanTransformer(s) = identify(&set_of(&i2v21)) else {
            panic!()
        };
        assert!(s.image_branch);
        assert!(s.variant().contains("2.1"));

        let mut t2v = a14b_shapes();
        t2v[0].1 = vec![5120, 16, 1, 2, 2];
        let ModelKind::WanTransformer(s) = identify(&set_of(&t2v)) else {
            panic!()
        };
        assert_eq!(
            s.variant(),
            "Wan T2V 14B expert (Wan 2.2 T2V A14B or Wan 2.1 T2V 14B)"
        );

        let ti2v = set_of(&[
            ("patch_embedding.weight".into(), vec![3072, 48, 1, 2, 2]),
            ("proj_out.weight".into(), vec![192, 3072]),
        ]);
        let ModelKind::WanTransformer(s) = identify(&ti2v) else {
            panic!()
        };
        assert_eq!(s.variant(), "Wan 2.2 TI2V-5B transformer");
        assert_eq!(s.naming, Naming::Diffusers);
    }

    #[test]
    fn umt5_t5_lora_and_vaes() {
        let mut umt5 = vec![("shared.weight".to_string(), vec![256384, 4096])];
        let mut t5 = vec![("shared.weight".to_string(), vec![32128, 4096])];
        for i in 0..24 {
            let bias =
                format!("encoder.block.{i}.layer.0.SelfAttention.relative_attention_bias.weight");
            umt5.push((bias.clone(), vec![32, 64]));
            if i == 0 {
                t5.push((bias, vec![32, 64]));
            }
            let q = format!("encoder.block.{i}.layer.0.SelfAttention.q.weight");
            umt5.push((q.clone(), vec![4096, 4096]));
            t5.push((q, vec![4096, 4096]));
        }
        let ModelKind::Umt5Encoder(s) = identify(&set_of(&umt5)) else {
            panic!()
        };
        assert_eq!(
            (s.d_model, s.vocab, s.layers, s.layers_with_position_bias),
            (4096, 256384, 24, 24)
        );
        assert!(matches!(identify(&set_of(&t5)), ModelKind::T5Encoder(_)));

        let lora = set_of(&[
            (
                "diffusion_model.blocks.0.self_attn.q.lora_A.weight".into(),
                vec![32, 5120],
            ),
            (
                "diffusion_model.blocks.0.self_attn.q.lora_B.weight".into(),
                vec![5120, 32],
            ),
        ]);
        assert!(matches!(identify(&lora), ModelKind::Lora { .. }));

        let wan21_vae = set_of(&[
            ("encoder.conv1.weight".into(), vec![96, 3, 3, 3, 3]),
            ("conv2.weight".into(), vec![16, 16, 1, 1, 1]),
        ]);
        let ModelKind::WanVae(v) = identify(&wan21_vae) else {
            panic!()
        };
        assert_eq!((v.z_dim, v.base_dim, v.in_channels), (16, 96, 3));
        let wan22_vae = set_of(&[
            ("encoder.conv_in.weight".into(), vec![160, 12, 3, 3, 3]),
            ("post_quant_conv.weight".into(), vec![48, 48, 1, 1, 1]),
        ]);
        assert!(matches!(
            identify(&wan22_vae),
            ModelKind::WanVae(VaeShape { z_dim: 48, .. })
        ));
        let sd_vae = set_of(&[("encoder.conv_in.weight".into(), vec![128, 3, 3, 3])]);
        assert_eq!(identify(&sd_vae), ModelKind::ImageVae);
    }

    #[test]
    fn comfyui_prefixes_and_scale_tensors_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let h = SafetensorsHeader {
            path: dir.path().join("x"),
            file_len: 0,
            header_len: 0,
            tensors: [
                (
                    "model.diffusion_model.patch_embedding.weight",
                    vec![8, 36, 1, 2, 2],
                ),
                ("model.diffusion_model.head.head.weight", vec![64, 8]),
                ("model.diffusion_model.head.head.scale_weight", vec![1]),
            ]
            .into_iter()
            .map(|(n, s)| {
                (
                    n.to_string(),
                    TensorInfo {
                        dtype: crate::safetensors_header::Dtype::F8E4M3,
                        shape: s,
                        begin: 0,
                        end: 0,
                    },
                )
            })
            .collect(),
            metadata: BTreeMap::new(),
        };
        let set = TensorSet::from_headers([&h]);
        assert_eq!(set.tensors.len(), 2);
        let ModelKind::WanTransformer(s) = identify(&set) else {
            panic!()
        };
        assert_eq!(s.out_channels, Some(16));
        assert_eq!(s.variant(), "Wan image-to-video transformer");
    }
}
