//! `model`: which Wan 2.2 A14B weights to load, from where, and how (AI Toolkit's `ModelConfig`,
//! plus wanlora's expert boundary and per-component file paths).

pub use crate::arch::ModelArch;
use crate::choice::{choice_serde, Choice};
use crate::reader::{ai, ours, Ctx, Neutral, Section, Unused, UnusedKey};
use crate::schema::KeyKind;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// How the frozen weights are quantised. `qfloat8` and `float8` both mean fp8 (e4m3) weights with
/// per-channel scales (`qfloat8` is AI Toolkit's default name, optimum-quanto; `float8` its torchao
/// name); `uint4` is AI Toolkit's 4-bit scheme (torchao's UIntX), normally with an accuracy
/// recovery adapter (`"uint4|<adapter>"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QType {
    #[default]
    Qfloat8,
    Float8,
    Uint4,
}

impl Choice for QType {
    const SPELLINGS: &'static [(&'static str, Self)] = &[
        ("qfloat8", QType::Qfloat8),
        ("float8", QType::Float8),
        ("uint4", QType::Uint4),
    ];
    const REFUSED: &'static [(&'static str, &'static str)] = &[
        ("uint2", "2-bit weights are not implemented; use uint4 (with its accuracy recovery adapter) or float8"),
        ("uint3", "3-bit weights are not implemented; use uint4 (with its accuracy recovery adapter) or float8"),
        ("uint5", "5-bit weights are not implemented; use uint4 (with its accuracy recovery adapter) or float8"),
        ("uint6", "6-bit weights are not implemented; use uint4 (with its accuracy recovery adapter) or float8"),
        ("uint7", "7-bit weights are not implemented; use uint4 (with its accuracy recovery adapter) or float8"),
        ("uint8", "AI Toolkit's uint8 quantises nothing (torchao refuses 8-bit packing); use float8"),
        ("int8", "int8 weights are not implemented"),
        ("qint8", "int8 weights are not implemented"),
        ("qint4", "4-bit weights are not implemented"),
        ("convrot8", "convrot quantisation is not implemented"),
        ("convrot4", "convrot quantisation is not implemented"),
        ("convrotint7", "convrot quantisation is not implemented"),
        ("convrotint6", "convrot quantisation is not implemented"),
        ("convrotint5", "convrot quantisation is not implemented"),
        ("convrotint4", "convrot quantisation is not implemented"),
        ("convrotint3", "convrot quantisation is not implemented"),
        ("convrotint2", "convrot quantisation is not implemented"),
        ("convrotbitnet", "convrot quantisation is not implemented"),
        ("nvfp4", "NVFP4 weights are not implemented"),
        ("", "an empty qtype means no quantisation; set quantize: false for that"),
    ];
}
choice_serde!(QType);

/// `model_kwargs`: which experts are trained, and VAE tiling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ModelKwargs {
    /// Train a LoRA on the high-noise expert (`transformer`, t ≥ boundary). Default true.
    pub train_high_noise: bool,
    /// Train a LoRA on the low-noise expert (`transformer_2`, t < boundary). Default true.
    pub train_low_noise: bool,
    /// Decode sample videos tile by tile (less memory, slower). Default false.
    pub vae_tiling: bool,
}

impl Default for ModelKwargs {
    fn default() -> Self {
        ModelKwargs {
            train_high_noise: true,
            train_low_noise: true,
            vae_tiling: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ModelConfig {
    /// `name_or_path`: a Hugging Face repo id (`ai-toolkit/Wan2.2-I2V-A14B-Diffusers-bf16`) or a
    /// local diffusers folder. Required unless every component has its own path below.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name_or_path: Option<String>,
    /// `arch`: `wan22_14b_i2v` (image-to-video) or `wan22_14b` (text-to-video); AI Toolkit's UI may
    /// append `:tag`, which is dropped. See [`crate::arch`] for what differs.
    pub arch: ModelArch,
    /// `extras_name_or_path`: where the VAE, text encoder and tokenizer come from when they are not
    /// in `name_or_path` (AI Toolkit's key; default: `name_or_path`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extras_name_or_path: Option<String>,
    /// `te_name_or_path`: the umT5-XXL text encoder (folder, repo id or single file such as ComfyUI's
    /// `umt5_xxl_fp8_e4m3fn_scaled.safetensors`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub te_name_or_path: Option<String>,
    /// `vae_path`: the Wan 2.1 VAE (folder, repo id or single file such as `wan_2.1_vae.safetensors`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vae_path: Option<String>,
    /// `tokenizer_path` (wanlora): the umT5 tokenizer (`tokenizer.json`, or a folder with it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokenizer_path: Option<String>,
    /// `high_noise_model_path` (wanlora): the high-noise expert as a single file or a folder,
    /// e.g. ComfyUI's `wan2.2_i2v_high_noise_14B_fp16.safetensors`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub high_noise_model_path: Option<String>,
    /// `low_noise_model_path` (wanlora): the low-noise expert, e.g.
    /// `wan2.2_i2v_low_noise_14B_fp16.safetensors`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub low_noise_model_path: Option<String>,
    /// `boundary_ratio` (wanlora): the expert switch as a fraction of the 1000 training timesteps;
    /// the high-noise expert handles t ≥ ratio·1000. Default: the arch's official value, 0.9 for I2V and
    /// 0.875 for T2V (AI Toolkit uses the text-to-video value 0.875 for I2V too).
    pub boundary_ratio: f64,
    /// `quantize`: store the frozen transformer weights as `qtype`. Default false.
    pub quantize: bool,
    /// `qtype`: fp8 (`qfloat8` or `float8`) or AI Toolkit's 4-bit `uint4`, written
    /// `"uint4|<adapter>"` with an accuracy recovery adapter.
    pub qtype: QType,
    /// `accuracy_recovery_adapter` (or the part of `qtype` after `|`): the LoRA that recovers
    /// what uint4 loses, as a local file or `owner/repo/file.safetensors` on the Hugging Face hub.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy_recovery_adapter: Option<String>,
    /// `quantize_te`: quantise the text encoder too; absent means the same as `quantize`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quantize_te: Option<bool>,
    /// `qtype_te`: the text encoder's quantisation (wanlora uses it; AI Toolkit's Wan loader ignores it).
    pub qtype_te: QType,
    /// `low_vram`: keep the idle expert in pinned host memory instead of on the GPU. Default false.
    pub low_vram: bool,
    /// `layer_offloading` (alias `auto_memory`): stream the transformer blocks' weights from pinned
    /// host memory, a block or two ahead of use, instead of keeping them on the GPU. Default false.
    pub layer_offloading: bool,
    /// `layer_offloading_transformer_percent`: the share of blocks streamed (0–1); the rest stay on
    /// the GPU. Default 1.
    pub layer_offloading_transformer_percent: f64,
    /// `fp8_matmul` (wanlora): with fp8 weights (`quantize: true`), also multiply in fp8 (activations
    /// quantised per token; about twice the matmul speed on Hopper and Ada GPUs, slightly less exact).
    /// Default false: fp8 storage, bf16 arithmetic.
    pub fp8_matmul: bool,
    pub model_kwargs: ModelKwargs,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            name_or_path: None,
            arch: ModelArch::Wan22_14bI2v,
            extras_name_or_path: None,
            te_name_or_path: None,
            vae_path: None,
            tokenizer_path: None,
            high_noise_model_path: None,
            low_noise_model_path: None,
            boundary_ratio: 0.9,
            quantize: false,
            qtype: QType::Qfloat8,
            accuracy_recovery_adapter: None,
            quantize_te: None,
            qtype_te: QType::Qfloat8,
            low_vram: false,
            layer_offloading: false,
            layer_offloading_transformer_percent: 1.0,
            fp8_matmul: false,
            model_kwargs: ModelKwargs::default(),
        }
    }
}

impl ModelConfig {
    /// Whether the text encoder is quantised (`quantize_te`, defaulting to `quantize`).
    pub fn quantizes_text_encoder(&self) -> bool {
        self.quantize_te.unwrap_or(self.quantize)
    }

    /// Where the VAE, text encoder and tokenizer come from by default.
    pub fn extras(&self) -> Option<&str> {
        self.extras_name_or_path
            .as_deref()
            .or(self.name_or_path.as_deref())
    }
}

/// Reads a qtype, which AI Toolkit writes as `type` or `"type|accuracy recovery adapter"`, and
/// the adapter. Only checked when that quantisation is switched on; otherwise the value does not
/// matter. `transformer` says whether this is the transformer's qtype (the only one with 4 bits).
fn read_qtype(
    s: &mut Section,
    key: &'static str,
    enabled: bool,
    transformer: bool,
    doc: &'static str,
) -> (QType, Option<String>) {
    let default = QType::default();
    let Some(node) = s.raw(key, KeyKind::Choice, json!(default.name()), ai(doc)) else {
        return (default, None);
    };
    if !enabled {
        return (default, None);
    }
    let Some(text) = node.as_str() else {
        s.invalid(
            key.into(),
            node,
            format!("expected text, found {}", node.show()),
            "write qtype: float8".into(),
        );
        return (default, None);
    };
    let (base, adapter) = match text.split_once('|') {
        Some((base, adapter)) => (base, Some(adapter.trim().to_string())),
        None => (text, None),
    };
    let Some(qtype) = s.parse_choice(key.into(), node, base) else {
        return (default, None);
    };
    if qtype == QType::Uint4 && !transformer {
        s.invalid(
            key.into(),
            node,
            "the text encoder is not stored in 4 bits by wanlora".into(),
            format!("write {key}: float8 (fp8 text encoder weights)"),
        );
        return (default, None);
    }
    if adapter.is_some() && qtype != QType::Uint4 {
        s.invalid(
            key.into(),
            node,
            format!("an accuracy recovery adapter goes with uint4 weights, not with `{base}`"),
            format!("write {key}: {base} without `|…`, or uint4|<adapter>"),
        );
        return (qtype, None);
    }
    if adapter.as_deref() == Some("") {
        s.invalid(
            key.into(),
            node,
            "the accuracy recovery adapter after `|` is empty".into(),
            "write uint4|ostris/accuracy_recovery_adapters/wan22_14b_i2v_torchao_uint4.safetensors"
                .into(),
        );
        return (qtype, None);
    }
    (qtype, adapter)
}

pub(crate) fn read_model(s: &mut Section) -> ModelConfig {
    let d = ModelConfig::default();
    let name_or_path = s.opt_text(
        "name_or_path",
        ai("Hugging Face repo id or local diffusers folder of Wan2.2-I2V-A14B or -T2V-A14B"),
    );
    let arch = match s.raw(
        "arch",
        KeyKind::Choice,
        json!(d.arch.name()),
        ai("Model family: wan22_14b_i2v (image-to-video) or wan22_14b (text-to-video)"),
    ) {
        None => {
            let path = s.key_path("arch");
            s.ctx().error_at(
                &path,
                "model.arch is missing (AI Toolkit would silently pick Stable Diffusion 1.5)",
                "add `arch: wan22_14b_i2v` (image-to-video) or `arch: wan22_14b` (text-to-video) under model",
            );
            d.arch
        }
        Some(node) => match node.as_str() {
            // AI Toolkit's UI can append `:tag` to the arch; AI Toolkit drops it.
            Some(text) => {
                let base = text.split(':').next().unwrap_or(text);
                s.parse_choice("arch".into(), node, base).unwrap_or(d.arch)
            }
            None => {
                s.invalid(
                    "arch".into(),
                    node,
                    format!("expected text, found {}", node.show()),
                    "write arch: wan22_14b_i2v or arch: wan22_14b".into(),
                );
                d.arch
            }
        },
    };
    let extras_name_or_path = s.opt_text(
        "extras_name_or_path",
        ai("Where the VAE, text encoder and tokenizer come from (default: name_or_path)"),
    );
    let te_name_or_path = s.opt_text(
        "te_name_or_path",
        ai("The umT5-XXL text encoder: folder, repo id or single file"),
    );
    let vae_path = s.opt_text(
        "vae_path",
        ai("The Wan 2.1 VAE: folder, repo id or single file"),
    );
    let tokenizer_path = s.opt_text(
        "tokenizer_path",
        ours("The umT5 tokenizer: tokenizer.json or its folder"),
    );
    let high_noise_model_path = s.opt_text("high_noise_model_path", ours("The high-noise expert as a single file or folder (e.g. ComfyUI's wan2.2_i2v_high_noise_14B_fp16.safetensors)"));
    let low_noise_model_path = s.opt_text("low_noise_model_path", ours("The low-noise expert as a single file or folder (e.g. ComfyUI's wan2.2_i2v_low_noise_14B_fp16.safetensors)"));
    let boundary_ratio = s.float(
        "boundary_ratio",
        arch.facts().boundary_ratio,
        ours("Expert switch as a fraction of the timesteps; official: 0.9 for I2V, 0.875 for T2V"),
    );
    let quantize = s.bool(
        "quantize",
        d.quantize,
        ai("Store the frozen transformer weights as qtype"),
    );
    let (qtype, qtype_adapter) = read_qtype(
        s,
        "qtype",
        quantize,
        true,
        "Transformer quantisation: qfloat8 or float8 (fp8 weights), or uint4|<accuracy recovery adapter>",
    );
    let quantize_te = s.raw(
        "quantize_te",
        KeyKind::Bool,
        json!(null),
        ai("Quantise the text encoder (default: quantize)"),
    );
    let quantize_te = match quantize_te {
        None => None,
        Some(node) => match node.value {
            crate::node::Value::Bool(b) => Some(b),
            _ => {
                s.invalid(
                    "quantize_te".into(),
                    node,
                    format!("expected true or false, found {}", node.show()),
                    "write true or false".into(),
                );
                None
            }
        },
    };
    let (qtype_te, _) = read_qtype(
        s,
        "qtype_te",
        quantize_te.unwrap_or(quantize),
        false,
        "Text encoder quantisation: qfloat8 or float8",
    );
    let low_vram = s.bool(
        "low_vram",
        d.low_vram,
        ai("Keep the idle expert in host memory"),
    );
    let layer_offloading = s.bool(
        &["layer_offloading", "auto_memory"],
        d.layer_offloading,
        ai("Stream the transformer blocks from host memory"),
    );
    let layer_offloading_transformer_percent = s.float(
        "layer_offloading_transformer_percent",
        d.layer_offloading_transformer_percent,
        ai("Share of transformer blocks streamed from host memory (0-1)"),
    );
    let fp8_matmul = s.bool(
        "fp8_matmul",
        d.fp8_matmul,
        ours("With quantize: float8 weights, also multiply in fp8 (faster on Hopper/Ada)"),
    );
    let model_kwargs = s.section(
        "model_kwargs",
        ai("Which experts to train, VAE tiling"),
        |k| {
            let d = ModelKwargs::default();
            ModelKwargs {
                train_high_noise: k.bool(
                    "train_high_noise",
                    d.train_high_noise,
                    ai("Train the high-noise expert's LoRA"),
                ),
                train_low_noise: k.bool(
                    "train_low_noise",
                    d.train_low_noise,
                    ai("Train the low-noise expert's LoRA"),
                ),
                vae_tiling: k.bool(
                    "vae_tiling",
                    d.vae_tiling,
                    ai("Decode samples tile by tile"),
                ),
            }
        },
    );

    let adapter_key = s.opt_text(
        "accuracy_recovery_adapter",
        ai("The LoRA that recovers uint4's accuracy: local file or owner/repo/file.safetensors"),
    );
    let accuracy_recovery_adapter = match (qtype_adapter, adapter_key) {
        (Some(a), Some(b)) if a != b => {
            let path = s.key_path("accuracy_recovery_adapter");
            s.ctx().error_at(
                &path,
                format!("model.qtype names the accuracy recovery adapter `{a}` and model.accuracy_recovery_adapter names `{b}`"),
                "name one adapter, in one of the two places",
            );
            Some(a)
        }
        (a, b) => a.or(b),
    };
    let uint4 = quantize && qtype == QType::Uint4;
    if accuracy_recovery_adapter.is_some() && !uint4 {
        let path = s.key_path("accuracy_recovery_adapter");
        s.ctx().error_at(
            &path,
            "an accuracy recovery adapter is only used with 4-bit weights",
            "set quantize: true and qtype: uint4, or remove the adapter",
        );
    } else if uint4 && accuracy_recovery_adapter.is_none() {
        let path = s.key_path("qtype");
        s.ctx().warning_at(
            &path,
            "uint4 without an accuracy recovery adapter: the base model loses noticeably more than with float8, and your LoRA learns around that loss",
            "write qtype: uint4|ostris/accuracy_recovery_adapters/wan22_14b_i2v_torchao_uint4.safetensors, or use float8",
        );
    }
    s.unused(MODEL_UNUSED);
    s.section(
        "quantize_kwargs",
        ai("Quantisation options; only an empty exclude list"),
        |q| {
            q.refuse(
                "exclude",
                Neutral::Off,
                "excluding modules from quantisation is not implemented",
            );
        },
    );

    ModelConfig {
        name_or_path,
        arch,
        extras_name_or_path,
        te_name_or_path,
        vae_path,
        tokenizer_path,
        high_noise_model_path,
        low_noise_model_path,
        boundary_ratio,
        quantize,
        qtype,
        accuracy_recovery_adapter,
        quantize_te,
        qtype_te,
        low_vram,
        layer_offloading,
        layer_offloading_transformer_percent,
        fp8_matmul,
        model_kwargs,
    }
}

/// Keys of this section that wanlora reads but does not act on, and why.
const MODEL_UNUSED: &[UnusedKey] = &[

    ("layer_offloading_text_encoder_percent", Unused::Accepted, "only with layer_offloading"),
    ("lora_path", Unused::Refused(Neutral::Off), "extra LoRAs on the base model are not implemented (AI Toolkit refuses them for Wan 2.2 too)"),
    ("assistant_lora_path", Unused::Refused(Neutral::Off), "extra LoRAs on the base model are not implemented (AI Toolkit refuses them for Wan 2.2 too)"),
    ("inference_lora_path", Unused::Refused(Neutral::Off), "extra LoRAs on the base model are not implemented (AI Toolkit refuses them for Wan 2.2 too)"),
    ("unconditional_lora_path", Unused::Refused(Neutral::Off), "extra LoRAs on the base model are not implemented (AI Toolkit refuses them for Wan 2.2 too)"),
    ("split_model_over_gpus", Unused::Refused(Neutral::Off), "splitting one model over GPUs is not implemented (AI Toolkit refuses it for Wan 2.2 too)"),
    ("only_if_contains", Unused::Refused(Neutral::Off), "module filters are not implemented"),
    ("ignore_if_contains", Unused::Refused(Neutral::Off), "module filters are not implemented"),
    ("compile", Unused::NoEffect(Neutral::Off), "there is no torch.compile in wanlora; its kernels are chosen ahead of time"),
    ("block_compile", Unused::Accepted, "only with compile"),
    ("compile_mode", Unused::Accepted, "only with compile"),
    ("compile_fullgraph", Unused::Accepted, "only with compile"),
    ("compile_dynamic", Unused::Accepted, "only with compile"),
    ("cache_size_limit", Unused::Accepted, "only with compile"),
    ("dtype", Unused::Accepted, "train.dtype decides the computation precision"),
    ("vae_dtype", Unused::Accepted, "the VAE runs in the computation precision"),
    ("te_dtype", Unused::Accepted, "the text encoder runs in the computation precision"),
    ("model_paths", Unused::Accepted, "not used by Wan; see high_noise_model_path / low_noise_model_path"),
    ("latent_space_version", Unused::Accepted, "Wan has one latent space"),
    ("text_encoder_bits", Unused::Accepted, "PixArt only"),
    ("is_v2", Unused::NoEffect(Neutral::Off), "model.arch decides the model"),
    ("is_xl", Unused::NoEffect(Neutral::Off), "model.arch decides the model"),
    ("is_v3", Unused::NoEffect(Neutral::Off), "model.arch decides the model"),
    ("is_flux", Unused::NoEffect(Neutral::Off), "model.arch decides the model"),
    ("is_pixart", Unused::NoEffect(Neutral::Off), "model.arch decides the model"),
    ("is_pixart_sigma", Unused::NoEffect(Neutral::Off), "model.arch decides the model"),
    ("is_auraflow", Unused::NoEffect(Neutral::Off), "model.arch decides the model"),
    ("is_lumina2", Unused::NoEffect(Neutral::Off), "model.arch decides the model"),
    ("is_ssd", Unused::NoEffect(Neutral::Off), "model.arch decides the model"),
    ("is_vega", Unused::NoEffect(Neutral::Off), "model.arch decides the model"),
    ("is_v_pred", Unused::NoEffect(Neutral::Off), "model.arch decides the model"),
    ("use_flux_cfg", Unused::NoEffect(Neutral::Off), "model.arch decides the model"),
    ("experimental_xl", Unused::NoEffect(Neutral::Off), "model.arch decides the model"),
    ("attn_masking", Unused::Refused(Neutral::Off), "Flux only"),
    ("in_context", Unused::Refused(Neutral::Off), "in-context training is not implemented"),
    ("refiner_name_or_path", Unused::Refused(Neutral::Off), "Wan has no refiner"),
];

/// The model section's own checks; `m` is its key path.
pub(crate) fn check_model(model: &ModelConfig, m: &str, ctx: &mut Ctx) {
    let arch = model.arch.facts();
    if arch.one_transformer {
        if model.boundary_ratio != 0.0 {
            ctx.error_at(
                &format!("{m}.boundary_ratio"),
                format!(
                    "boundary_ratio {} has no meaning for {}: it is one transformer for every timestep",
                    model.boundary_ratio, arch.label
                ),
                "remove boundary_ratio (or set it to 0)",
            );
        }
    } else if !(model.boundary_ratio > 0.0 && model.boundary_ratio < 1.0) {
        ctx.error_at(
            &format!("{m}.boundary_ratio"),
            format!(
                "boundary_ratio {} must be between 0 and 1",
                model.boundary_ratio
            ),
            format!(
                "use {}, the official boundary of {}",
                arch.boundary_ratio, arch.label
            ),
        );
    }
    if !(0.0..=1.0).contains(&model.layer_offloading_transformer_percent) {
        ctx.error_at(
            &format!("{m}.layer_offloading_transformer_percent"),
            format!(
                "layer_offloading_transformer_percent {} must be between 0 and 1",
                model.layer_offloading_transformer_percent
            ),
            "use 1.0 to stream every block, or e.g. 0.5 to keep half of them on the GPU",
        );
    }
    if model.fp8_matmul && !(model.quantize && model.qtype != QType::Uint4) {
        ctx.error_at(
            &format!("{m}.fp8_matmul"),
            "fp8_matmul needs fp8 weights",
            "set quantize: true with qtype: float8, or remove fp8_matmul",
        );
    }
    if !arch.one_transformer
        && !model.model_kwargs.train_high_noise
        && !model.model_kwargs.train_low_noise
    {
        ctx.error_at(
            &format!("{m}.model_kwargs"),
            "train_high_noise and train_low_noise are both false, so nothing would be trained",
            "set at least one of them to true",
        );
    }
    let components_given = model.high_noise_model_path.is_some()
        && (model.low_noise_model_path.is_some() || arch.one_transformer)
        && (model.te_name_or_path.is_some() || model.extras_name_or_path.is_some())
        && (model.vae_path.is_some() || model.extras_name_or_path.is_some())
        && (model.tokenizer_path.is_some() || model.extras_name_or_path.is_some());
    if model
        .name_or_path
        .as_deref()
        .is_none_or(|n| n.trim().is_empty())
        && !components_given
    {
        ctx.error_at(
            &format!("{m}.name_or_path"),
            "model.name_or_path is missing",
            format!(
                "add name_or_path: {} (or give every component its own path)",
                arch.diffusers_repo
            ),
        );
    }
}
