//! Weight names. The model is written against the original Wan names (which ComfyUI files and LoRA
//! keys use); diffusers folders are read through a renaming view (wan-reference.md §2.1).

use wanlora_torch::weights::{Renamed, WeightError, WeightSet, WeightSource};

pub use wanlora_spec::naming::{from_diffusers, to_diffusers, Naming};
use wanlora_spec::naming::{
    is_adapter_key, transformer_naming, TransformerShape, WRAPPER_PREFIXES,
};

/// A transformer checkpoint read in original names, whatever its stored naming.
pub type TransformerWeights = Renamed<WeightSet>;

/// Reads `set` in original names: detects its naming (and a wrapper prefix such as ComfyUI's
/// `diffusion_model.`).
pub fn transformer_weights(set: WeightSet) -> Result<TransformerWeights, WeightError> {
    let raw = set.raw_names();
    let found = std::iter::once("")
        .chain(WRAPPER_PREFIXES)
        .find_map(|prefix| {
            let has = |p: &str| {
                let full = format!("{prefix}{p}");
                raw.iter().any(|n| n.starts_with(&full))
            };
            has("patch_embedding.weight").then(|| (prefix, transformer_naming(has)))
        });
    match found {
        Some((prefix, Naming::Original)) => Ok(Renamed::new(set.with_prefix(prefix), str::to_string)),
        Some((prefix, Naming::Diffusers)) => Ok(Renamed::new(set.with_prefix(prefix), |name| {
            to_diffusers(name).unwrap_or_else(|| name.to_string())
        })
        .listing(from_diffusers)),
        None => Err(WeightError::Many {
            source_desc: set.description().to_string(),
            problems: vec!["no patch_embedding.weight (original names) and no condition_embedder.* (diffusers names)".into()],
            hint: Some(describe_foreign(&raw)),
        }),
    }
}

/// What a file that is not a Wan 2.2 I2V A14B transformer probably is, from its names and shapes.
pub fn describe_foreign(names: &[&str]) -> String {
    let any = |pat: &str| names.iter().any(|n| n.contains(pat));
    if names.iter().any(|n| is_adapter_key(n)) {
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

/// A hint for shape problems: which Wan model the patch embedding and head point to.
pub fn shape_hint(source: &dyn WeightSource) -> Option<String> {
    let patch = source.shape_of("patch_embedding.weight")?;
    let (dim, in_channels) = (*patch.first()?, *patch.get(1)?);
    let patch_volume: i64 = patch.iter().skip(2).product();
    let out_channels = source
        .shape_of("head.head.weight")
        .and_then(|h| h.first().copied())
        .map(|rows| (rows / patch_volume.max(1)) as u64);
    let variant = TransformerShape {
        dim: dim as u64,
        in_channels: in_channels as u64,
        out_channels,
        image_branch: false,
        vace: false,
    }
    .variant();
    Some(format!(
        "the file is a {variant} (patch embedding [{dim}, {in_channels}, …]); check that it is the model the job names"
    ))
}
