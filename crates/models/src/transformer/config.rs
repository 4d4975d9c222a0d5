//! The transformer's configuration: from a diffusers `config.json`, or inferred from weight shapes
//! so that small test models and real files both load.

use serde::Deserialize;
use std::path::Path;

use crate::error::ModelError;
use wanlora_torch::weights::WeightSource;

/// One Wan 2.2 expert. Defaults are the I2V A14B values (wan-reference.md §1.1).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct TransformerConfig {
    pub patch_size: [i64; 3],
    pub num_attention_heads: i64,
    pub attention_head_dim: i64,
    pub in_channels: i64,
    pub out_channels: i64,
    pub text_dim: i64,
    pub freq_dim: i64,
    pub ffn_dim: i64,
    pub num_layers: i64,
    pub cross_attn_norm: bool,
    pub qk_norm: Option<String>,
    pub eps: f64,
    pub image_dim: Option<i64>,
    pub added_kv_proj_dim: Option<i64>,
    pub rope_max_seq_len: i64,
}

impl Default for TransformerConfig {
    fn default() -> Self {
        TransformerConfig {
            patch_size: [1, 2, 2],
            num_attention_heads: 40,
            attention_head_dim: 128,
            in_channels: 36,
            out_channels: 16,
            text_dim: 4096,
            freq_dim: 256,
            ffn_dim: 13824,
            num_layers: 40,
            cross_attn_norm: true,
            qk_norm: Some("rms_norm_across_heads".into()),
            eps: 1e-6,
            image_dim: None,
            added_kv_proj_dim: None,
            rope_max_seq_len: 1024,
        }
    }
}

impl TransformerConfig {
    /// The Wan 2.2 I2V A14B expert.
    pub fn wan22_i2v_a14b() -> Self {
        Self::default()
    }

    /// A Wan 2.2 A14B expert taking `in_channels` (36 for I2V, 16 for T2V; the rest is identical).
    pub fn wan22_a14b(in_channels: i64) -> Self {
        TransformerConfig {
            in_channels,
            ..Self::default()
        }
    }

    /// The Wan 2.2 TI2V-5B model (Wan2.2 `wan_ti2v_5B.py`): 3072 wide (24 heads of 128), 30 blocks, FFN
    /// 14336, the Wan 2.2 VAE's 48 latent channels in and out; the start image enters as a clean latent frame,
    /// not as extra channels.
    pub fn wan22_ti2v_5b() -> Self {
        TransformerConfig {
            num_attention_heads: 24,
            in_channels: 48,
            out_channels: 48,
            ffn_dim: 14336,
            num_layers: 30,
            ..Self::default()
        }
    }

    /// Hidden width: heads × head dim (5120 for A14B).
    pub fn dim(&self) -> i64 {
        self.num_attention_heads * self.attention_head_dim
    }

    /// Values per patch going in: channels × pt × ph × pw.
    pub fn patch_in(&self) -> i64 {
        self.in_channels * self.patch_size.iter().product::<i64>()
    }

    /// Values per patch coming out: out channels × pt × ph × pw.
    pub fn patch_out(&self) -> i64 {
        self.out_channels * self.patch_size.iter().product::<i64>()
    }

    /// Reads a diffusers `config.json` (`WanTransformer3DModel`).
    pub fn from_json_file(path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::Config {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let cfg: TransformerConfig =
            serde_json::from_str(&text).map_err(|e| ModelError::Config {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        cfg.check().map_err(|reason| ModelError::Config {
            path: path.to_path_buf(),
            reason,
        })?;
        Ok(cfg)
    }

    /// Infers the configuration from tensor shapes in original (ComfyUI) naming. The head dimension
    /// cannot be read from shapes; it is 128 for every Wan model, and for small test models it is
    /// taken from `head_dim_hint`.
    pub fn infer(source: &dyn WeightSource, head_dim_hint: Option<i64>) -> Result<Self, String> {
        let shape = |n: &str| {
            source
                .shape_of(n)
                .ok_or_else(|| format!("{} has no tensor {n}", source.describe()))
        };
        let patch = shape("patch_embedding.weight")?; // [dim, in, pt, ph, pw]
        if patch.len() != 5 {
            return Err(format!(
                "patch_embedding.weight has shape {patch:?}, expected 5 dimensions"
            ));
        }
        let text = shape("text_embedding.0.weight")?; // [dim, text_dim]
        let freq = shape("time_embedding.0.weight")?; // [dim, freq_dim]
        let ffn = shape("blocks.0.ffn.0.weight")?; // [ffn_dim, dim]
        let head = shape("head.head.weight")?; // [out·p, dim]
        let names = source.names();
        let num_layers = (0..)
            .take_while(|i| names.iter().any(|n| n.starts_with(&format!("blocks.{i}."))))
            .count() as i64;
        let dim = patch[0];
        let head_dim = head_dim_hint.unwrap_or(128);
        if dim % head_dim != 0 {
            return Err(format!(
                "hidden width {dim} is not a multiple of the head dimension {head_dim}"
            ));
        }
        let patch_size = [patch[2], patch[3], patch[4]];
        let p: i64 = patch_size.iter().product();
        let cfg = TransformerConfig {
            patch_size,
            num_attention_heads: dim / head_dim,
            attention_head_dim: head_dim,
            in_channels: patch[1],
            out_channels: head[0] / p,
            text_dim: text[1],
            freq_dim: freq[1],
            ffn_dim: ffn[0],
            num_layers,
            cross_attn_norm: names.iter().any(|n| n == "blocks.0.norm3.weight"),
            image_dim: source.shape_of("img_emb.proj.0.weight").map(|s| s[0]),
            ..TransformerConfig::default()
        };
        cfg.check()?;
        Ok(cfg)
    }

    /// Consistency of the numbers; the reason names the offending field.
    pub fn check(&self) -> Result<(), String> {
        if self.attention_head_dim % 2 != 0 {
            return Err(format!(
                "attention_head_dim {} must be even (RoPE pairs)",
                self.attention_head_dim
            ));
        }
        if self.num_layers <= 0 {
            return Err("num_layers must be positive".into());
        }
        if self
            .qk_norm
            .as_deref()
            .is_some_and(|q| q != "rms_norm_across_heads")
        {
            return Err(format!(
                "qk_norm {:?} is not supported (Wan uses rms_norm_across_heads)",
                self.qk_norm
            ));
        }
        if self.image_dim.is_some() || self.added_kv_proj_dim.is_some() {
            return Err("this is a Wan 2.1 I2V model (CLIP image branch); wanlora trains Wan 2.2 I2V A14B, which has none".into());
        }
        Ok(())
    }

    /// Split of the head dimension between the time, height and width RoPE axes (44/42/42 at 128).
    pub fn rope_axes(&self) -> [i64; 3] {
        let hw = 2 * (self.attention_head_dim / 6);
        [self.attention_head_dim - 2 * hw, hw, hw]
    }
}
