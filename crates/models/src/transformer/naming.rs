//! Weight names. The model is written against the original Wan names (which ComfyUI files and LoRA
//! keys use); diffusers folders are read through a renaming view (wan-reference.md §2.1).

use tch::{Device, Kind, Tensor};
use wanlora_torch::weights::{Fp8Stored, WeightError, WeightSet, WeightSource};

pub use wanlora_spec::naming::{from_diffusers, to_diffusers, Naming};
use wanlora_spec::naming::{
    is_adapter_key, transformer_naming, TransformerShape, WRAPPER_PREFIXES,
};

/// A transformer checkpoint read in original names, whatever its stored layout.
pub struct TransformerWeights {
    set: WeightSet,
    naming: Naming,
}

impl TransformerWeights {
    /// Detects the naming (and a wrapper prefix such as ComfyUI's `diffusion_model.`).
    pub fn new(set: WeightSet) -> Result<Self, WeightError> {
        let raw = set.raw_names();
        let found = std::iter::once("")
            .chain(WRAPPER_PREFIXES)
            .find_map(|prefix| {
                let has = |p: &str| raw.iter().any(|n| n.starts_with(&format!("{prefix}{p}")));
                has("patch_embedding.weight").then(|| (prefix, transformer_naming(has)))
            });
        if let Some((prefix, naming)) = found {
            return Ok(TransformerWeights {
                set: set.with_prefix(prefix),
                naming,
            });
        }
        Err(WeightError::Many {
            source_desc: set.description().to_string(),
            problems: vec!["no patch_embedding.weight (original names) and no condition_embedder.* (diffusers names)".into()],
            hint: Some(describe_foreign(&raw)),
        })
    }

    pub fn naming(&self) -> Naming {
        self.naming
    }

    pub fn set(&self) -> &WeightSet {
        &self.set
    }

    fn stored(&self, name: &str) -> String {
        match self.naming {
            Naming::Original => name.to_string(),
            Naming::Diffusers => to_diffusers(name).unwrap_or_else(|| name.to_string()),
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
        match self.naming {
            Naming::Original => names,
            Naming::Diffusers => names.iter().filter_map(|n| from_diffusers(n)).collect(),
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
