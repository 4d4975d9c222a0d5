//! Weight names, written once: the two key conventions of Wan transformer files (Wan's own names,
//! which ComfyUI files and LoRA keys use, and diffusers' names; wan-reference.md §2.1), the prefixes
//! single-file checkpoints wrap them in, the marks of adapter files, and which Wan model a
//! transformer's shapes belong to. The hub crate identifies files with these; the models crate
//! reads weights through them.

use std::fmt;

/// Prefixes that wrap a model's own names in single-file checkpoints (ComfyUI and others).
pub const WRAPPER_PREFIXES: [&str; 3] = [
    "model.diffusion_model.",
    "diffusion_model.",
    "first_stage_model.",
];

/// Which key convention a file uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Naming {
    /// Wan's own names, also used by ComfyUI files (`blocks.0.self_attn.q`, `head.head`).
    Original,
    /// diffusers names (`blocks.0.attn1.to_q`, `proj_out`).
    Diffusers,
}

impl fmt::Display for Naming {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Naming::Original => "Wan/ComfyUI names",
            Naming::Diffusers => "diffusers names",
        })
    }
}

/// Prefix pairs, original → diffusers, for transformer names outside the blocks.
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

/// The key convention of a transformer's tensor names (without wrapper prefix), from what
/// `has_prefix` says: diffusers files have `condition_embedder.*` and `proj_out.*`, which the
/// original names never use.
pub fn transformer_naming(has_prefix: impl Fn(&str) -> bool) -> Naming {
    if has_prefix("condition_embedder.") || has_prefix("proj_out.") {
        Naming::Diffusers
    } else {
        Naming::Original
    }
}

/// Whether a key belongs to an adapter (LoRA, LyCORIS) or weight-difference file rather than to a
/// base model.
pub fn is_adapter_key(key: &str) -> bool {
    const MARKS: [&str; 8] = [
        ".lora_A.",
        ".lora_B.",
        ".lora_down.",
        ".lora_up.",
        "lora_unet_",
        ".lokr_",
        ".hada_",
        ".lora.",
    ];
    MARKS.iter().any(|m| key.contains(m)) || key.ends_with(".diff") || key.ends_with(".diff_b")
}

/// What a Wan transformer's shapes say about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransformerShape {
    /// Hidden width (`patch_embedding.weight` dim 0).
    pub dim: u64,
    /// Input channels (`patch_embedding.weight` dim 1).
    pub in_channels: u64,
    /// Output channels (the head's rows over the patch volume), when known.
    pub out_channels: Option<u64>,
    /// Wan 2.1 I2V/FLF2V's CLIP image branch (`img_emb`, `k_img`/`v_img`).
    pub image_branch: bool,
    pub vace: bool,
}

impl TransformerShape {
    /// The Wan model this shape belongs to, in words.
    pub fn variant(&self) -> &'static str {
        if self.image_branch {
            "Wan 2.1 image-to-video transformer (it has a CLIP image branch)"
        } else if self.vace {
            "Wan VACE transformer"
        } else if self.dim == 3072 && self.in_channels == 48 {
            "Wan 2.2 TI2V-5B transformer"
        } else if self.in_channels == 48 && self.out_channels == Some(48) {
            // Only TI2V works in the Wan 2.2 VAE's 48 latent channels.
            "Wan TI2V transformer (48 latent channels, of another width than 5B)"
        } else if Some(self.in_channels) == self.out_channels {
            if self.dim == 5120 {
                // Wan 2.1 T2V 14B has the same shapes; the names cannot tell them apart.
                "Wan T2V 14B expert (Wan 2.2 T2V A14B or Wan 2.1 T2V 14B)"
            } else {
                "Wan text-to-video transformer"
            }
        } else if self
            .out_channels
            .is_some_and(|o| self.in_channels == 2 * o + 4)
        {
            if self.dim == 5120 {
                "Wan 2.2 I2V A14B expert"
            } else {
                "Wan image-to-video transformer"
            }
        } else {
            "Wan transformer of an unknown variant"
        }
    }
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

    #[test]
    fn naming_and_adapter_marks() {
        fn has(keys: &'static [&'static str]) -> impl Fn(&str) -> bool {
            move |p: &str| keys.iter().any(|k| k.starts_with(p))
        }
        let diffusers = &["condition_embedder.time_proj.weight", "proj_out.weight"];
        assert_eq!(transformer_naming(has(diffusers)), Naming::Diffusers);
        assert_eq!(
            transformer_naming(has(&["head.head.weight", "patch_embedding.weight"])),
            Naming::Original
        );
        assert!(is_adapter_key(
            "diffusion_model.blocks.0.self_attn.q.lora_A.weight"
        ));
        assert!(is_adapter_key("blocks.0.ffn.0.diff_b"));
        assert!(!is_adapter_key("blocks.0.self_attn.q.weight"));
    }

    #[test]
    fn variants_from_shapes() {
        let shape = |dim, in_channels, out_channels| TransformerShape {
            dim,
            in_channels,
            out_channels,
            image_branch: false,
            vace: false,
        };
        assert_eq!(
            shape(5120, 36, Some(16)).variant(),
            "Wan 2.2 I2V A14B expert"
        );
        assert!(shape(5120, 16, Some(16)).variant().contains("T2V 14B"));
        assert_eq!(
            shape(3072, 48, Some(48)).variant(),
            "Wan 2.2 TI2V-5B transformer"
        );
        assert!(shape(64, 48, Some(48)).variant().starts_with("Wan TI2V"));
        assert_eq!(
            shape(64, 36, Some(16)).variant(),
            "Wan image-to-video transformer"
        );
        assert_eq!(
            shape(64, 20, Some(16)).variant(),
            "Wan transformer of an unknown variant"
        );
    }
}
