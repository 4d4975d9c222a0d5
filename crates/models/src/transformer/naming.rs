//! Weight names. The model is written against the original Wan names (which ComfyUI files and LoRA
//! keys use); diffusers folders are read through a renaming view (wan-reference.md §2.1).

use tch::{Device, Kind, Tensor};
use wanlora_torch::weights::{Fp8Stored, WeightError, WeightSet, WeightSource};

/// Prefix pairs, original → diffusers, for names outside the blocks.
const TOP: &[(&str, &str)] = &[
    (
        "text_embedding.0.",
        "condition_embedder.text_embedder.linear_1.",
    ),
    (
        "text_embedding.2.",
        "condition_embedder.text_embedder.linear_2.",
    ),
    (
        "time_embedding.0.",
        "condition_embedder.time_embedder.linear_1.",
    ),
    (
        "time_embedding.2.",
        "condition_embedder.time_embedder.linear_2.",
    ),
    ("time_projection.1.", "condition_embedder.time_proj."),
    ("head.head.", "proj_out."),
    ("patch_embedding.", "patch_embedding."),
];

/// Suffix pairs inside `blocks.N.`, original → diffusers. Only the affine cross-attention norm has
/// weights: original `norm3` is diffusers `norm2`.
const BLOCK: &[(&str, &str)] = &[
    ("self_attn.q.", "attn1.to_q."),
    ("self_attn.k.", "attn1.to_k."),
    ("self_attn.v.", "attn1.to_v."),
    ("self_attn.o.", "attn1.to_out.0."),
    ("self_attn.norm_q.", "attn1.norm_q."),
    ("self_attn.norm_k.", "attn1.norm_k."),
    ("cross_attn.q.", "attn2.to_q."),
    ("cross_attn.k.", "attn2.to_k."),
    ("cross_attn.v.", "attn2.to_v."),
    ("cross_attn.o.", "attn2.to_out.0."),
    ("cross_attn.norm_q.", "attn2.norm_q."),
    ("cross_attn.norm_k.", "attn2.norm_k."),
    ("norm3.", "norm2."),
    ("ffn.0.", "ffn.net.0.proj."),
    ("ffn.2.", "ffn.net.2."),
];

fn split_block(name: &str) -> Option<(&str, &str)> {
    let rest = name.strip_prefix("blocks.")?;
    let dot = rest.find('.')?;
    Some((&name[..7 + dot + 1], &rest[dot + 1..]))
}

fn map(name: &str, forward: bool) -> Option<String> {
    let pick = |pair: &(&'static str, &'static str)| if forward { *pair } else { (pair.1, pair.0) };
    match (name, forward) {
        ("head.modulation", true) => return Some("scale_shift_table".into()),
        ("scale_shift_table", false) => return Some("head.modulation".into()),
        _ => {}
    }
    if let Some((block, rest)) = split_block(name) {
        if (forward && rest == "modulation") || (!forward && rest == "scale_shift_table") {
            let other = if forward {
                "scale_shift_table"
            } else {
                "modulation"
            };
            return Some(format!("{block}{other}"));
        }
        return BLOCK
            .iter()
            .map(pick)
            .find_map(|(a, b)| rest.strip_prefix(a).map(|tail| format!("{block}{b}{tail}")));
    }
    TOP.iter()
        .map(pick)
        .find_map(|(a, b)| name.strip_prefix(a).map(|tail| format!("{b}{tail}")))
}

/// The diffusers name of an original-named transformer tensor.
pub fn to_diffusers(original: &str) -> Option<String> {
    map(original, true)
}

/// The original name of a diffusers-named transformer tensor.
pub fn from_diffusers(diffusers: &str) -> Option<String> {
    map(diffusers, false)
}

/// How the stored names of a transformer checkpoint look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Original Wan / ComfyUI names, possibly under a prefix such as `diffusion_model.`.
    Original,
    /// diffusers `WanTransformer3DModel` names.
    Diffusers,
}

/// A transformer checkpoint read in original names, whatever its stored layout.
pub struct TransformerWeights {
    set: WeightSet,
    layout: Layout,
}

impl TransformerWeights {
    /// Detects the layout (and ComfyUI's `diffusion_model.` / `model.diffusion_model.` prefix).
    pub fn new(set: WeightSet) -> Result<Self, WeightError> {
        let raw = set.raw_names();
        let has = |n: &str| raw.contains(&n);
        if has("condition_embedder.time_embedder.linear_1.weight") {
            return Ok(TransformerWeights {
                set,
                layout: Layout::Diffusers,
            });
        }
        for prefix in ["", "diffusion_model.", "model.diffusion_model."] {
            if has(&format!("{prefix}patch_embedding.weight")) {
                return Ok(TransformerWeights {
                    set: set.with_prefix(prefix),
                    layout: Layout::Original,
                });
            }
        }
        Err(WeightError::Many {
            source_desc: set.description().to_string(),
            problems: vec!["no patch_embedding.weight (original names) and no condition_embedder.* (diffusers names)".into()],
            hint: Some(describe_foreign(&raw)),
        })
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    pub fn set(&self) -> &WeightSet {
        &self.set
    }

    fn stored(&self, name: &str) -> String {
        match self.layout {
            Layout::Original => name.to_string(),
            Layout::Diffusers => to_diffusers(name).unwrap_or_else(|| name.to_string()),
        }
    }
}

impl WeightSource for TransformerWeights {
    fn load(
        &self,
        name: &str,
        shape: &[i64],
        kind: Kind,
        device: Device,
    ) -> Result<Tensor, WeightError> {
        let stored = self.stored(name);
        WeightSource::load(&self.set, &stored, shape, kind, device).map_err(|e| match e {
            WeightError::Missing { source_desc, .. } => WeightError::Missing {
                name: name.to_string(),
                source_desc,
            },
            WeightError::Shape {
                source_desc,
                found,
                expected,
                ..
            } => WeightError::Shape {
                name: name.to_string(),
                source_desc,
                found,
                expected,
            },
            other => other,
        })
    }
    fn shape_of(&self, name: &str) -> Option<Vec<i64>> {
        self.set.info(&self.stored(name)).map(|i| i.shape.clone())
    }
    fn names(&self) -> Vec<String> {
        let names = self.set.names();
        match self.layout {
            Layout::Original => names,
            Layout::Diffusers => names.iter().filter_map(|n| from_diffusers(n)).collect(),
        }
    }
    fn describe(&self) -> String {
        self.set.description().to_string()
    }
    fn load_fp8(
        &self,
        name: &str,
        shape: &[i64],
        device: Device,
    ) -> Result<Option<Fp8Stored>, WeightError> {
        WeightSource::load_fp8(&self.set, &self.stored(name), shape, device)
    }
}

/// What a file that is not a Wan 2.2 I2V A14B transformer probably is, from its names and shapes.
pub fn describe_foreign(names: &[&str]) -> String {
    let any = |pat: &str| names.iter().any(|n| n.contains(pat));
    if any("lora_A") || any("lora_down") || any("lora_up") || any("lora_B") {
        "this is a LoRA file, not a base model: pass it as a LoRA (--lora / lora path), and the expert weights as the model".into()
    } else if any("img_emb") || any("k_img") || any("add_k_proj") {
        "this looks like a Wan 2.1 I2V model (it has the CLIP image branch); wanlora needs the Wan 2.2 I2V A14B experts".into()
    } else if any("encoder.block.") || any("shared.weight") || any("token_embedding") {
        "this looks like the umT5 text encoder, not a transformer".into()
    } else if any("decoder.") && any("encoder.") {
        "this looks like a VAE, not a transformer".into()
    } else {
        "this does not look like a Wan transformer; expected a diffusers transformer/ folder or a ComfyUI wan2.2_i2v_*_14B file".into()
    }
}

/// A hint for shape problems: which Wan model the patch embedding and width point to.
pub fn shape_hint(source: &dyn WeightSource) -> Option<String> {
    let patch = source.shape_of("patch_embedding.weight")?;
    let (dim, cin) = (patch[0], patch[1]);
    Some(match (dim, cin) {
        (5120, 16) => "this is a Wan text-to-video (T2V) 14B expert (16 input channels); the I2V A14B expert has 36".into(),
        (3072, 48) => "this is the Wan 2.2 TI2V-5B model (arch wan22_5b), not an A14B expert".into(),
        (1536, _) => "this is a Wan 1.3B model; wanlora trains the Wan 2.2 I2V A14B experts".into(),
        (5120, 36) => "the file is an I2V A14B expert but some tensors differ: it may be truncated or mixed".into(),
        _ => format!("patch embedding [{dim}, {cin}, …] does not match the configuration"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_both_ways() {
        let pairs = [
            ("patch_embedding.weight", "patch_embedding.weight"),
            (
                "text_embedding.2.bias",
                "condition_embedder.text_embedder.linear_2.bias",
            ),
            (
                "time_projection.1.weight",
                "condition_embedder.time_proj.weight",
            ),
            ("head.modulation", "scale_shift_table"),
            ("head.head.weight", "proj_out.weight"),
            ("blocks.7.modulation", "blocks.7.scale_shift_table"),
            (
                "blocks.12.self_attn.o.weight",
                "blocks.12.attn1.to_out.0.weight",
            ),
            (
                "blocks.0.cross_attn.norm_k.weight",
                "blocks.0.attn2.norm_k.weight",
            ),
            ("blocks.3.norm3.bias", "blocks.3.norm2.bias"),
            ("blocks.39.ffn.0.weight", "blocks.39.ffn.net.0.proj.weight"),
            ("blocks.39.ffn.2.bias", "blocks.39.ffn.net.2.bias"),
        ];
        for (orig, diff) in pairs {
            assert_eq!(to_diffusers(orig).as_deref(), Some(diff), "{orig}");
            assert_eq!(from_diffusers(diff).as_deref(), Some(orig), "{diff}");
        }
        assert_eq!(to_diffusers("blocks.0.unknown.weight"), None);
    }
}
