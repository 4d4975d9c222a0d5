//! The umT5-XXL text encoder of Wan (transformers `UMT5EncoderModel`; wan-reference.md §7):
//!
//! ```text
//! x = Embed(ids)
//! 24 × { x += Attn(RMS(x)),  x += FFN(RMS(x)) };  out = RMS(x)
//! Attn:  softmax(q·kᵀ + bias_l(k − q) + mask) · v     no 1/√d scaling; a relative-position table per layer
//! FFN:   wo( GELU_tanh(wi_0 x) ⊙ wi_1 x )
//! RMS:   x · rsqrt(mean(x²) + ε) · w
//! ```
//!
//! Wan keeps each prompt's real tokens (EOS included) and zeroes the rest of the 512 positions; so does
//! [`Umt5Encoder::encode`]. Because padded keys are masked and the position bias depends only on distances, the
//! real tokens' outputs do not depend on the padding: the encoder runs only up to the longest prompt of the batch.
//!
//! Precision: the residual stream stays in float32 (transformers keeps `wo` in float32 for the same reason, and
//! ComfyUI runs T5 with float32 activations); matrix products and attention run in the compute kind, softmax
//! accumulates in float32 inside SDPA. Output is float32.
//!
//! `quantize_te` ([`Umt5Encoder::load_with`]): the matrices and the token embedding are stored as fp8 with one
//! scale per output channel (per token for the embedding) and dequantised layer by layer (crate::quant).

use crate::error::foreign_model_hint;
use crate::quant::{load_weight, Fp8Mode, Weight};
use crate::ModelError;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, TchError, Tensor};
use wanlora_torch::weights::{Loader, Renamed, WeightError, WeightSet, WeightSource};

/// Text positions Wan's transformer cross-attends to.
pub const WAN_TEXT_LEN: i64 = 512;

/// The fields of a transformers `UMT5Config` that shape the encoder; unknown keys are ignored.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct Umt5Config {
    pub vocab_size: i64,
    pub d_model: i64,
    /// Width of one attention head.
    pub d_kv: i64,
    pub d_ff: i64,
    pub num_layers: i64,
    pub num_heads: i64,
    pub relative_attention_num_buckets: i64,
    pub relative_attention_max_distance: i64,
    pub layer_norm_epsilon: f64,
    /// "gated-gelu" for umT5.
    pub feed_forward_proj: String,
    /// "gelu_new" (tanh approximation) for umT5.
    pub dense_act_fn: Option<String>,
}

impl Default for Umt5Config {
    /// `google/umt5-xxl`, as Wan uses it.
    fn default() -> Self {
        Umt5Config {
            vocab_size: 256_384,
            d_model: 4096,
            d_kv: 64,
            d_ff: 10240,
            num_layers: 24,
            num_heads: 64,
            relative_attention_num_buckets: 32,
            relative_attention_max_distance: 128,
            layer_norm_epsilon: 1e-6,
            feed_forward_proj: "gated-gelu".into(),
            dense_act_fn: Some("gelu_new".into()),
        }
    }
}

impl Umt5Config {
    pub fn from_json_file(path: &Path) -> Result<Self, ModelError> {
        let config_error = |reason: String| ModelError::Config {
            path: path.to_path_buf(),
            reason,
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| config_error(format!("cannot read the text encoder config: {e}")))?;
        let cfg: Umt5Config = serde_json::from_str(&text)
            .map_err(|e| config_error(format!("not a valid transformers UMT5 config: {e}")))?;
        cfg.validate().map_err(config_error)?;
        Ok(cfg)
    }

    /// Shapes from the tensors (HF names); the relative-attention distance and ε keep umT5's values.
    pub fn infer(source: &dyn WeightSource) -> Option<Self> {
        let embed = source.shape_of("shared.weight")?;
        let q = source.shape_of("encoder.block.0.layer.0.SelfAttention.q.weight")?;
        let table = source
            .shape_of("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight")?;
        let wi = source.shape_of("encoder.block.0.layer.1.DenseReluDense.wi_0.weight")?;
        let num_layers = (0..)
            .take_while(|i| {
                source
                    .shape_of(&format!("encoder.block.{i}.layer.0.SelfAttention.q.weight"))
                    .is_some()
            })
            .count() as i64;
        let num_heads = table[1];
        Some(Umt5Config {
            vocab_size: embed[0],
            d_model: embed[1],
            d_kv: q[0] / num_heads,
            d_ff: wi[0],
            num_layers,
            num_heads,
            relative_attention_num_buckets: table[0],
            ..Umt5Config::default()
        })
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.feed_forward_proj != "gated-gelu" {
            return Err(format!(
                "feed_forward_proj is {:?}; umT5 uses \"gated-gelu\" (this encoder implements only that)",
                self.feed_forward_proj
            ));
        }
        self.gelu_approximation()?;
        if [
            self.vocab_size,
            self.d_model,
            self.d_kv,
            self.d_ff,
            self.num_layers,
            self.num_heads,
        ]
        .iter()
        .any(|&v| v <= 0)
        {
            return Err(
                "vocab_size, d_model, d_kv, d_ff, num_layers and num_heads must be positive".into(),
            );
        }
        if self.relative_attention_num_buckets < 4 || self.relative_attention_max_distance < 2 {
            return Err("relative_attention_num_buckets must be ≥ 4 and max_distance ≥ 2".into());
        }
        Ok(())
    }

    /// libtorch's GELU approximation for `dense_act_fn`.
    fn gelu_approximation(&self) -> Result<&'static str, String> {
        match self.dense_act_fn.as_deref() {
            None | Some("gelu_new") | Some("gelu_pytorch_tanh") => Ok("tanh"),
            Some("gelu") => Ok("none"),
            Some(other) => Err(format!(
                "dense_act_fn {other:?} is not supported (umT5 uses \"gelu_new\")"
            )),
        }
    }

    fn inner_dim(&self) -> i64 {
        self.num_heads * self.d_kv
    }
}

/// Which names a text encoder file uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Umt5Naming {
    /// transformers / diffusers `text_encoder/`, and ComfyUI's single files (`umt5_xxl_fp16.safetensors`, …).
    HuggingFace,
    /// Wan's own `models_t5_umt5-xxl-enc-bf16.pth` names (`token_embedding`, `blocks.i.attn.q`, …).
    Wan,
}

/// A umT5 checkpoint read in HF names, whatever its stored naming.
type Umt5Weights<'a> = Renamed<&'a dyn WeightSource>;

/// Reads `inner` in HF names: strips a key prefix, finds the embedding under either of its HF
/// names, and renames Wan's keys. `None` when no encoder tensor is there; sources that list no
/// names (random weights) are taken as HF-named.
fn umt5_weights(inner: &dyn WeightSource) -> Option<(Umt5Weights<'_>, Umt5Naming)> {
    let names = inner.names();
    let find = |suffix: &str| {
        names.iter().find_map(|n| {
            let prefix = n.strip_suffix(suffix)?;
            (prefix.is_empty() || prefix.ends_with('.')).then(|| prefix.to_string())
        })
    };
    let has = |n: &str| names.iter().any(|m| m == n);
    let (naming, prefix, embedding) = if names.is_empty() {
        (
            Umt5Naming::HuggingFace,
            String::new(),
            "shared.weight".to_string(),
        )
    } else if let Some(prefix) = find("encoder.block.0.layer.0.SelfAttention.q.weight") {
        let embedding = ["shared.weight", "encoder.embed_tokens.weight"]
            .iter()
            .map(|n| format!("{prefix}{n}"))
            .find(|n| has(n))
            .unwrap_or_else(|| format!("{prefix}shared.weight"));
        (Umt5Naming::HuggingFace, prefix, embedding)
    } else {
        let prefix = find("blocks.0.attn.q.weight")?;
        let embedding = format!("{prefix}token_embedding.weight");
        (Umt5Naming::Wan, prefix, embedding)
    };
    let stored = move |name: &str| {
        if name == "shared.weight" {
            return embedding.clone();
        }
        match naming {
            Umt5Naming::HuggingFace => format!("{prefix}{name}"),
            Umt5Naming::Wan => format!("{prefix}{}", wan_name(name).unwrap_or_else(|| name.into())),
        }
    };
    Some((Renamed::new(inner, stored), naming))
}

/// Wan's name for an HF encoder parameter (`None` outside the encoder).
pub fn wan_name(name: &str) -> Option<String> {
    if name == "encoder.final_layer_norm.weight" {
        return Some("norm.weight".into());
    }
    let rest = name.strip_prefix("encoder.block.")?;
    let (block, rest) = rest.split_once('.')?;
    let leaf = match rest {
        "layer.0.layer_norm.weight" => "norm1.weight",
        "layer.0.SelfAttention.q.weight" => "attn.q.weight",
        "layer.0.SelfAttention.k.weight" => "attn.k.weight",
        "layer.0.SelfAttention.v.weight" => "attn.v.weight",
        "layer.0.SelfAttention.o.weight" => "attn.o.weight",
        "layer.0.SelfAttention.relative_attention_bias.weight" => "pos_embedding.embedding.weight",
        "layer.1.layer_norm.weight" => "norm2.weight",
        // Wan's `gate` is the GELU branch (wi_0), `fc1` the linear one (wi_1).
        "layer.1.DenseReluDense.wi_0.weight" => "ffn.gate.0.weight",
        "layer.1.DenseReluDense.wi_1.weight" => "ffn.fc1.weight",
        "layer.1.DenseReluDense.wo.weight" => "ffn.fc2.weight",
        _ => return None,
    };
    Some(format!("blocks.{block}.{leaf}"))
}

/// Why a source is not an umT5 encoder, when its tensors say so.
fn umt5_hint(source: &dyn WeightSource) -> Option<String> {
    let names = source.names();
    let has = |suffix: &str| names.iter().any(|n| n.ends_with(suffix));
    if has("encoder.block.0.layer.1.DenseReluDense.wi.weight") {
        return Some("this is an original T5 (v1.0, ungated feed-forward), not umT5-XXL".into());
    }
    let vocab = names
        .iter()
        .find(|n| n.ends_with("shared.weight") || n.ends_with("token_embedding.weight"))
        .and_then(|n| source.shape_of(n))
        .map(|s| s[0]);
    if vocab == Some(32128) {
        return Some(
            "this is T5-XXL (vocabulary 32128, the Flux / SD3 text encoder), not umT5-XXL (vocabulary 256384) \
             that Wan uses: use umt5_xxl_fp16.safetensors or the A14B repository's text_encoder/"
                .into(),
        );
    }
    if has("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight")
        && !has("encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight")
        && has("encoder.block.1.layer.0.SelfAttention.q.weight")
    {
        return Some(
            "only block 0 has a relative position table: this is T5 v1.1, not umT5 (one table per layer)".into(),
        );
    }
    if names.iter().any(|n| n.contains("decoder.block.")) {
        return Some("the file holds a T5 decoder too; only the encoder's tensors are read".into());
    }
    foreign_model_hint(&names)
        .map(|h| format!("{h}; the text encoder is umt5_xxl_*.safetensors or text_encoder/"))
}

/// One encoder layer: self-attention with its own relative-position table, then the gated feed-forward.
struct Block {
    attention_norm: Tensor,
    /// q, k and v stacked: `[3·inner, d_model]`.
    qkv: Weight,
    o: Weight,
    /// `[buckets, heads]`.
    position_table: Tensor,
    ffn_norm: Tensor,
    /// wi_0 (GELU branch) and wi_1 (linear branch) stacked: `[2·d_ff, d_model]`.
    wi: Weight,
    wo: Weight,
}

/// The umT5 encoder on one device in one compute kind.
pub struct Umt5Encoder {
    config: Umt5Config,
    /// The token embedding `[vocab, d_model]`.
    embedding: Weight,
    blocks: Vec<Block>,
    final_norm: Tensor,
    kind: Kind,
    device: Device,
    gelu: &'static str,
    naming: Umt5Naming,
}

impl Umt5Encoder {
    /// Builds the encoder from `source` (HF or Wan names, any key prefix; ComfyUI's fp8_scaled files are
    /// dequantised on the way). Without `cfg` the configuration is inferred from the tensors' shapes.
    pub fn load(
        source: &dyn WeightSource,
        cfg: Option<Umt5Config>,
        kind: Kind,
        device: Device,
    ) -> Result<Umt5Encoder, ModelError> {
        Self::load_with(source, cfg, kind, device, false)
    }

    /// [`Umt5Encoder::load`], with the matrices and the token embedding stored as fp8 when `fp8` is set
    /// (`quantize_te`): ComfyUI's fp8_scaled weights are kept as stored, others quantised per output channel.
    pub fn load_with(
        source: &dyn WeightSource,
        cfg: Option<Umt5Config>,
        kind: Kind,
        device: Device,
        fp8: bool,
    ) -> Result<Umt5Encoder, ModelError> {
        let mode = if fp8 {
            Fp8Mode::WeightOnly
        } else {
            Fp8Mode::Off
        };
        let not_an_encoder = |reason: String| ModelError::Config {
            path: PathBuf::from(source.describe()),
            reason,
        };
        let (named, naming) = umt5_weights(source).ok_or_else(|| {
            let hint = umt5_hint(source).map(|h| format!(": {h}")).unwrap_or_default();
            not_an_encoder(format!(
                "no umT5 encoder tensors here (neither encoder.block.0.layer.0.SelfAttention.q.weight nor \
                 blocks.0.attn.q.weight){hint}"
            ))
        })?;
        let config = match cfg {
            Some(c) => c,
            None => Umt5Config::infer(&named).ok_or_else(|| {
                not_an_encoder("cannot infer the umT5 configuration from these tensors".into())
            })?,
        };
        config.validate().map_err(not_an_encoder)?;
        let gelu = config.gelu_approximation().map_err(not_an_encoder)?;
        let (d, inner, ff) = (config.d_model, config.inner_dim(), config.d_ff);
        let l = Loader::new(&named, kind, device);
        let stack = |parts: Vec<Weight>| {
            let placeholder = || Weight::Dense(Tensor::empty([0], (kind, Device::Cpu)));
            if parts
                .iter()
                .flat_map(Weight::tensors)
                .any(|t| t.numel() == 0)
            {
                placeholder() // a reported load problem; never run
            } else {
                Weight::cat(parts).unwrap_or_else(|e| {
                    l.fail(WeightError::Torch(e));
                    placeholder()
                })
            }
        };
        let blocks = (0..config.num_layers)
            .map(|i| {
                let p = format!("encoder.block.{i}.layer");
                let attention = |m: &str| {
                    load_weight(
                        &l,
                        &format!("{p}.0.SelfAttention.{m}.weight"),
                        [inner, d],
                        mode,
                    )
                };
                let dense = |m: &str| {
                    load_weight(
                        &l,
                        &format!("{p}.1.DenseReluDense.{m}.weight"),
                        [ff, d],
                        mode,
                    )
                };
                Block {
                    attention_norm: l.get_as(
                        &format!("{p}.0.layer_norm.weight"),
                        &[d],
                        Kind::Float,
                    ),
                    qkv: stack(vec![attention("q"), attention("k"), attention("v")]),
                    o: load_weight(
                        &l,
                        &format!("{p}.0.SelfAttention.o.weight"),
                        [d, inner],
                        mode,
                    ),
                    position_table: l.get(
                        &format!("{p}.0.SelfAttention.relative_attention_bias.weight"),
                        &[config.relative_attention_num_buckets, config.num_heads],
                    ),
                    ffn_norm: l.get_as(&format!("{p}.1.layer_norm.weight"), &[d], Kind::Float),
                    wi: stack(vec![dense("wi_0"), dense("wi_1")]),
                    wo: load_weight(
                        &l,
                        &format!("{p}.1.DenseReluDense.wo.weight"),
                        [d, ff],
                        mode,
                    ),
                }
            })
            .collect();
        let embedding = load_weight(&l, "shared.weight", [config.vocab_size, d], mode);
        let final_norm = l.get_as("encoder.final_layer_norm.weight", &[d], Kind::Float);
        l.finish(umt5_hint)?;
        Ok(Umt5Encoder {
            naming,
            config,
            embedding,
            blocks,
            final_norm,
            kind,
            device,
            gelu,
        })
    }

    /// Loads a transformers `text_encoder/` folder (config.json and sharded weights; the model's root folder
    /// works too) or a single file (ComfyUI's umt5_xxl_fp16 / fp8_e4m3fn_scaled, or Wan's names).
    pub fn from_path(path: &Path, kind: Kind, device: Device) -> Result<Umt5Encoder, ModelError> {
        Self::from_path_with(path, kind, device, false)
    }

    /// [`Umt5Encoder::from_path`] with fp8 matrices when `fp8` is set ([`Umt5Encoder::load_with`]).
    pub fn from_path_with(
        path: &Path,
        kind: Kind,
        device: Device,
        fp8: bool,
    ) -> Result<Umt5Encoder, ModelError> {
        let folder = if path.join("text_encoder").is_dir() {
            path.join("text_encoder")
        } else {
            path.to_path_buf()
        };
        let config_path = folder.join("config.json");
        let config = (folder.is_dir() && config_path.is_file())
            .then(|| Umt5Config::from_json_file(&config_path))
            .transpose()?;
        let weights = WeightSet::open(&folder)?;
        Self::load_with(&weights, config, kind, device, fp8)
    }

    pub fn config(&self) -> &Umt5Config {
        &self.config
    }

    pub fn naming(&self) -> Umt5Naming {
        self.naming
    }

    pub fn device(&self) -> Device {
        self.device
    }

    /// Text embeddings `[B, 512, d_model]` (float32, on the encoder's device) for token ids `[B, L]` (L ≤ 512) and
    /// their attention mask `[B, L]` (1 = real token, 0 = padding): each prompt's real tokens, zeros after.
    pub fn encode(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
    ) -> Result<Tensor, ModelError> {
        self.encode_to(input_ids, attention_mask, WAN_TEXT_LEN)
    }

    /// [`Umt5Encoder::encode`] padded to `text_len` positions instead of 512.
    pub fn encode_to(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        text_len: i64,
    ) -> Result<Tensor, ModelError> {
        let (ids_size, mask_size) = (input_ids.size(), attention_mask.size());
        if ids_size.len() != 2 || ids_size != mask_size {
            return Err(ModelError::Input(format!(
                "input_ids and attention_mask must both be [B, L]; got {ids_size:?} and {mask_size:?}"
            )));
        }
        let (batch, length) = (ids_size[0], ids_size[1]);
        if length > text_len {
            return Err(ModelError::Input(format!(
                "{length} tokens is more than the {text_len} text positions: truncate the prompt"
            )));
        }
        let _no_grad = tch::no_grad_guard();
        // The longest prompt: positions after every sample's last real token are never needed.
        let mask_host = attention_mask.f_to_device(Device::Cpu)?.f_ne(0)?;
        let any_real = mask_host.f_any_dims([0i64].as_slice(), false)?;
        let used = Vec::<bool>::try_from(&any_real)
            .map_err(|e| ModelError::Input(format!("attention_mask: {e}")))?
            .iter()
            .rposition(|&real| real)
            .map_or(0, |last| last as i64 + 1);
        let out = Tensor::f_zeros(
            [batch, text_len, self.config.d_model],
            (Kind::Float, self.device),
        )?;
        if used == 0 {
            return Ok(out);
        }
        let ids = input_ids
            .f_narrow(1, 0, used)?
            .f_to_kind(Kind::Int64)?
            .f_to_device(self.device)?;
        let real = mask_host.f_narrow(1, 0, used)?.f_to_device(self.device)?;
        let hidden = self.forward(&ids, &real)?;
        let kept = hidden.f_mul(&real.f_unsqueeze(-1)?.f_to_kind(Kind::Float)?)?;
        out.f_narrow(1, 0, used)?.f_copy_(&kept)?;
        Ok(out)
    }

    /// The encoder over `ids` `[B, L]` with `real` `[B, L]` (bool) marking the keys that may be attended to.
    fn forward(&self, ids: &Tensor, real: &Tensor) -> Result<Tensor, TchError> {
        let size = ids.size();
        let (b, l) = (size[0], size[1]);
        let c = &self.config;
        let mut x = self.embedding.rows(ids, Kind::Float)?;
        let buckets = relative_position_buckets(
            l,
            c.relative_attention_num_buckets,
            c.relative_attention_max_distance,
            self.device,
        )?
        .f_reshape([-1])?;
        // Padded keys get the most negative value of the compute kind, as transformers does.
        let key_bias = Tensor::f_zeros([b, 1, 1, l], (self.kind, self.device))?.f_masked_fill(
            &real.f_logical_not()?.f_reshape([b, 1, 1, l])?,
            min_value(self.kind),
        )?;
        for block in &self.blocks {
            // Self-attention with this layer's position bias.
            let h = x
                .f_rms_norm(
                    [c.d_model],
                    Some(&block.attention_norm),
                    c.layer_norm_epsilon,
                )?
                .f_to_kind(self.kind)?;
            let qkv = block.qkv.linear(&h, None)?;
            let heads = |i: i64| -> Result<Tensor, TchError> {
                qkv.f_narrow(2, i * c.inner_dim(), c.inner_dim())?
                    .f_reshape([b, l, c.num_heads, c.d_kv])?
                    .f_transpose(1, 2)
            };
            let bias = block
                .position_table
                .f_index_select(0, &buckets)?
                .f_reshape([l, l, c.num_heads])?
                .f_permute([2, 0, 1])?
                .f_unsqueeze(0)?
                .f_add(&key_bias)?;
            let attended = Tensor::f_scaled_dot_product_attention(
                &heads(0)?,
                &heads(1)?,
                &heads(2)?,
                Some(&bias),
                0.0,
                false,
                1.0,
                false,
            )?;
            let attended = attended
                .f_transpose(1, 2)?
                .f_reshape([b, l, c.inner_dim()])?;
            let attended = block.o.linear(&attended, None)?;
            let _ = x.f_add_(&attended)?;
            // Gated feed-forward.
            let h = x
                .f_rms_norm([c.d_model], Some(&block.ffn_norm), c.layer_norm_epsilon)?
                .f_to_kind(self.kind)?;
            let both = block.wi.linear(&h, None)?;
            let gate = both.f_narrow(2, 0, c.d_ff)?.f_gelu(self.gelu)?;
            let hidden = gate.f_mul(&both.f_narrow(2, c.d_ff, c.d_ff)?)?;
            let _ = x.f_add_(&block.wo.linear(&hidden, None)?)?;
        }
        x.f_rms_norm([c.d_model], Some(&self.final_norm), c.layer_norm_epsilon)
    }
}

/// The most negative finite value of a float kind (the additive mask of padded keys).
fn min_value(kind: Kind) -> f64 {
    match kind {
        Kind::BFloat16 => -3.389_531_389_251_535_5e38,
        Kind::Half => -65504.0,
        Kind::Double => f64::MIN,
        _ => f32::MIN as f64,
    }
}

/// Bucket of each (query, key) pair `[L, L]` (int64, on `device`) for the bidirectional relative position
/// `key − query`: half the buckets per sign; distances below `buckets/4` exact, larger ones logarithmic up to
/// `max_distance`, everything beyond in the last bucket. Computed with the same float32 operations as
/// transformers, on the device the encoder runs on as transformers does, so the boundary cases (16, 32, 64 for
/// umT5) land in the same bucket; made there, it also needs no host-to-device copy (which waits for the GPU).
pub fn relative_position_buckets(
    len: i64,
    num_buckets: i64,
    max_distance: i64,
    device: Device,
) -> Result<Tensor, TchError> {
    let positions = Tensor::f_arange(len, (Kind::Int64, device))?;
    let relative = positions
        .f_unsqueeze(0)?
        .f_sub(&positions.f_unsqueeze(1)?)?;
    let per_sign = num_buckets / 2;
    let sign_offset = relative
        .f_gt(0)?
        .f_to_kind(Kind::Int64)?
        .f_mul_scalar(per_sign)?;
    let distance = relative.f_abs()?;
    let max_exact = per_sign / 2;
    // Distance 0 takes the exact branch; clamping keeps log() finite there.
    let log_ratio = distance
        .f_clamp_min(1)?
        .f_to_kind(Kind::Float)?
        .f_div_scalar(max_exact as f64)?
        .f_log()?
        .f_div_scalar((max_distance as f64 / max_exact as f64).ln())?
        .f_mul_scalar((per_sign - max_exact) as f64)?;
    let large = log_ratio
        .f_to_kind(Kind::Int64)?
        .f_add_scalar(max_exact)?
        .f_clamp_max(per_sign - 1)?;
    let bucket = distance.f_where_self(&distance.f_lt(max_exact)?, &large)?;
    sign_offset.f_add(&bucket)
}
