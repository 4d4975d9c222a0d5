//! Weight names of the Wan VAEs. The model asks for diffusers names (`AutoencoderKLWan`); files with the
//! original names (`Wan2.1_VAE.pth`, ComfyUI's `wan_2.1_vae.safetensors`; `Wan2.2_VAE.pth`, ComfyUI's
//! `wan2.2_vae.safetensors`) are read through a renaming view.
//!
//! | diffusers | original |
//! |---|---|
//! | `quant_conv.*`, `post_quant_conv.*` | `conv1.*`, `conv2.*` |
//! | `{enc,dec}oder.conv_in.*` | `{enc,dec}oder.conv1.*` |
//! | `{enc,dec}oder.norm_out.gamma`, `.conv_out.*` | `{enc,dec}oder.head.0.gamma`, `.head.2.*` |
//! | `{enc,dec}oder.mid_block.resnets.{i}.<rb>` | `{enc,dec}oder.middle.{2i}.<rb'>` |
//! | `{enc,dec}oder.mid_block.attentions.0.*` | `{enc,dec}oder.middle.1.*` |
//! | `encoder.down_blocks.{k}.<rb>` / `.resample.1.*` / `.time_conv.*` | `encoder.downsamples.{k}.<rb'>` / same |
//! | `decoder.up_blocks.{s}.resnets.{j}.<rb>` | `decoder.upsamples.{s(R+2)+j}.<rb'>` |
//! | `decoder.up_blocks.{s}.upsamplers.0.*` | `decoder.upsamples.{s(R+2)+R+1}.*` |
//!
//! where a residual block's `<rb>` → `<rb'>` is `norm1.gamma` → `residual.0.gamma`, `conv1` → `residual.2`,
//! `norm2.gamma` → `residual.3.gamma`, `conv2` → `residual.6`, `conv_shortcut` → `shortcut`, and R is the number of
//! residual blocks per encoder stage (the decoder's stages have R + 1, then their upsampler).
//!
//! The Wan 2.2 VAE nests its stages ([`original_name_wan22`]): `encoder.down_blocks.{i}.resnets.{j}.<rb>` /
//! `.downsampler.*` are `encoder.downsamples.{i}.downsamples.{j}.<rb'>` / `.downsamples.{R}.*`, and
//! `decoder.up_blocks.{i}.resnets.{j}.<rb>` / `.upsampler.*` are `decoder.upsamples.{i}.upsamples.{j}.<rb'>` /
//! `.upsamples.{R+1}.*`; the rest is named as in the Wan 2.1 VAE.

use crate::error::foreign_model_hint;
use wanlora_torch::weights::{Renamed, WeightSource};

/// Which names a file uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VaeNaming {
    Diffusers,
    Original,
}

/// How a VAE file names its tensors: a key prefix and a naming. The model asks for diffusers names
/// (`AutoencoderKLWan`); [`VaeNames::view`] reads a file through them.
#[derive(Debug, Clone)]
pub(crate) struct VaeNames {
    prefix: String,
    naming: VaeNaming,
    num_res_blocks: i64,
    /// The Wan 2.2 layout (nested stages).
    residual: bool,
}

impl VaeNames {
    /// Recognises the naming and key prefix of `inner`; sources that list no names (random weights) are taken
    /// as diffusers-named. `None` when no VAE tensor is there.
    pub fn detect(inner: &dyn WeightSource, num_res_blocks: i64) -> Option<Self> {
        let names = inner.names();
        if names.is_empty() {
            return Some(VaeNames {
                prefix: String::new(),
                naming: VaeNaming::Diffusers,
                num_res_blocks,
                residual: false,
            });
        }
        let find = |suffix: &str| {
            names.iter().find_map(|n| {
                let prefix = n.strip_suffix(suffix)?;
                (prefix.is_empty() || prefix.ends_with('.')).then(|| prefix.to_string())
            })
        };
        let (naming, prefix) = if let Some(p) = find("encoder.conv_in.weight") {
            (VaeNaming::Diffusers, p)
        } else if let Some(p) = find("encoder.conv1.weight") {
            (VaeNaming::Original, p)
        } else {
            return None;
        };
        let residual = names.iter().any(|n| {
            n.contains("encoder.down_blocks.0.resnets.")
                || n.contains("encoder.downsamples.0.downsamples.")
        });
        Some(VaeNames {
            prefix,
            naming,
            num_res_blocks,
            residual,
        })
    }

    pub fn naming(&self) -> VaeNaming {
        self.naming
    }

    /// The names for `config`'s layout (a source without names learns it here).
    pub fn for_config(self, config: &super::VaeConfig) -> Self {
        VaeNames {
            num_res_blocks: config.num_res_blocks,
            residual: config.is_residual,
            ..self
        }
    }

    /// The name in the file of the tensor diffusers calls `name`.
    pub fn stored_name(&self, name: &str) -> String {
        match self.naming {
            VaeNaming::Diffusers => format!("{}{name}", self.prefix),
            VaeNaming::Original => {
                let original = if self.residual {
                    original_name_wan22(name, self.num_res_blocks)
                } else {
                    original_name(name, self.num_res_blocks)
                };
                format!("{}{}", self.prefix, original.as_deref().unwrap_or(name))
            }
        }
    }

    /// `inner` read in diffusers names (the one renaming view, [`Renamed`]).
    pub fn view<'a>(&self, inner: &'a dyn WeightSource) -> Renamed<&'a dyn WeightSource> {
        let names = self.clone();
        Renamed::new(inner, move |name| names.stored_name(name))
    }
}

/// The original name of a diffusers VAE parameter, `None` for names outside the VAE.
pub fn original_name(name: &str, num_res_blocks: i64) -> Option<String> {
    let residual = residual_leaf;
    if let Some(rest) = name.strip_prefix("quant_conv.") {
        return Some(format!("conv1.{rest}"));
    }
    if let Some(rest) = name.strip_prefix("post_quant_conv.") {
        return Some(format!("conv2.{rest}"));
    }
    let (side, rest) = name.split_once('.')?;
    if side != "encoder" && side != "decoder" {
        return None;
    }
    if let Some(leaf) = rest.strip_prefix("conv_in.") {
        return Some(format!("{side}.conv1.{leaf}"));
    }
    if rest == "norm_out.gamma" {
        return Some(format!("{side}.head.0.gamma"));
    }
    if let Some(leaf) = rest.strip_prefix("conv_out.") {
        return Some(format!("{side}.head.2.{leaf}"));
    }
    if let Some(leaf) = rest.strip_prefix("mid_block.attentions.0.") {
        return Some(format!("{side}.middle.1.{leaf}"));
    }
    if let Some(rest) = rest.strip_prefix("mid_block.resnets.") {
        let (index, leaf) = rest.split_once('.')?;
        let index: i64 = index.parse().ok()?;
        return Some(format!("{side}.middle.{}.{}", 2 * index, residual(leaf)?));
    }
    if let Some(rest) = rest.strip_prefix("down_blocks.") {
        let (index, leaf) = rest.split_once('.')?;
        let leaf = residual(leaf).unwrap_or_else(|| leaf.to_string());
        return Some(format!("{side}.downsamples.{index}.{leaf}"));
    }
    if let Some(rest) = rest.strip_prefix("up_blocks.") {
        let per_stage = num_res_blocks + 2;
        let (stage, rest) = rest.split_once('.')?;
        let stage: i64 = stage.parse().ok()?;
        if let Some(rest) = rest.strip_prefix("resnets.") {
            let (index, leaf) = rest.split_once('.')?;
            let flat = stage * per_stage + index.parse::<i64>().ok()?;
            return Some(format!("{side}.upsamples.{flat}.{}", residual(leaf)?));
        }
        let leaf = rest.strip_prefix("upsamplers.0.")?;
        let flat = stage * per_stage + per_stage - 1;
        return Some(format!("{side}.upsamples.{flat}.{leaf}"));
    }
    None
}

/// The original (Wan2.2 `vae2_2.py`) name of a diffusers parameter of the Wan 2.2 VAE, `None` for names outside
/// the VAE. `num_res_blocks` is R, the residual blocks per encoder stage.
pub fn original_name_wan22(name: &str, num_res_blocks: i64) -> Option<String> {
    let stage_name = |rest: &str, outer: &str, blocks: &str, sampler: &str, resnets: i64| {
        let rest = rest.strip_prefix(blocks)?;
        let (stage, rest) = rest.split_once('.')?;
        let stage: i64 = stage.parse().ok()?;
        let nested = format!("{outer}.{stage}.{outer}");
        if let Some(rest) = rest.strip_prefix("resnets.") {
            let (index, leaf) = rest.split_once('.')?;
            let index: i64 = index.parse().ok()?;
            return Some(format!("{nested}.{index}.{}", residual_leaf(leaf)?));
        }
        let leaf = rest.strip_prefix(sampler)?;
        Some(format!("{nested}.{resnets}.{leaf}"))
    };
    let (side, rest) = name.split_once('.')?;
    let staged = match side {
        "encoder" => stage_name(
            rest,
            "downsamples",
            "down_blocks.",
            "downsampler.",
            num_res_blocks,
        ),
        "decoder" => stage_name(
            rest,
            "upsamples",
            "up_blocks.",
            "upsampler.",
            num_res_blocks + 1,
        ),
        _ => None,
    };
    match staged {
        Some(original) => Some(format!("{side}.{original}")),
        None if rest.starts_with("down_blocks.") || rest.starts_with("up_blocks.") => None,
        None => original_name(name, num_res_blocks),
    }
}

/// A residual block's diffusers leaf (`norm1.gamma`, `conv1.weight`, …) under its original name.
fn residual_leaf(leaf: &str) -> Option<String> {
    let renamed = [
        ("norm1.gamma", "residual.0.gamma"),
        ("conv1.", "residual.2."),
        ("norm2.gamma", "residual.3.gamma"),
        ("conv2.", "residual.6."),
        ("conv_shortcut.", "shortcut."),
    ];
    renamed
        .iter()
        .find_map(|(from, to)| leaf.strip_prefix(from).map(|rest| format!("{to}{rest}")))
}

/// What the tensors of a source that is not a usable Wan VAE look like, to say so in the error.
pub(crate) fn vae_hint(source: &dyn WeightSource) -> Option<String> {
    foreign_model_hint(&source.names()).map(|hint| {
        format!(
            "{hint}; the VAE is wan_2.1_vae.safetensors (A14B), wan2.2_vae.safetensors (TI2V-5B) or a \
             diffusers vae/ folder"
        )
    })
}
