//! Accuracy recovery adapters (ARA, README-uint4.md): LoRA files that ostris trained against the
//! uint4-quantised Wan 2.2 experts, applied frozen beside each quantised block linear.
//!
//! The file names a linear as `[prefix][transformer_N.]blocks.B.<module>.lora_A.weight` (and
//! `lora_B`, or `lora_down`/`lora_up`), where the prefix is any of `diffusion_model.`,
//! `transformer.` (AI Toolkit's own), the module is in original (`self_attn.q`) or diffusers
//! (`attn1.to_q`) naming, and `transformer_1.` / `transformer_2.` select the expert in AI Toolkit's
//! two-expert model (1 = high noise, 2 = low noise); keys without it apply to every expert. The
//! rank comes from the file and α = r (AI Toolkit builds the adapter with `linear_alpha = rank`), so
//! the delta is `B·A·x` unscaled.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

use crate::error::ModelError;
use crate::lora::LoraTarget;
use crate::transformer::TransformerConfig;
use wanlora_torch::weights::WeightSet;

// AI Toolkit names the experts `transformer_1` (high noise) and `transformer_2` (low noise) in
// adapter keys (`Expert::aitk_index`).
use wanlora_spec::expert::Expert;

/// The adapter of one expert: A `[r, in]` and B `[out, r]` per (block, linear).
pub struct RecoveryAdapter {
    pub path: PathBuf,
    adapters: BTreeMap<(usize, LoraTarget), (Tensor, Tensor)>,
    /// Keys of linears outside the blocks' ten (e.g. `condition_embedder`), which stay bf16 and
    /// get no adapter.
    pub skipped: Vec<String>,
}

/// What one key names.
#[derive(Debug, PartialEq, Eq)]
struct KeyTarget {
    expert: Option<Expert>,
    block: usize,
    target: LoraTarget,
    /// `A` (down) or `B` (up).
    down: bool,
}

/// Parses a key, `None` for keys that are not a LoRA factor of a block linear.
fn parse_key(key: &str) -> Option<KeyTarget> {
    let (stem, down) = [
        (".lora_A.weight", true),
        (".lora_down.weight", true),
        (".lora_B.weight", false),
        (".lora_up.weight", false),
    ]
    .iter()
    .find_map(|(suffix, down)| key.strip_suffix(suffix).map(|s| (s, *down)))?;
    let mut rest = stem;
    let mut expert = None;
    loop {
        if let Some(r) = rest
            .strip_prefix("diffusion_model.")
            .or_else(|| rest.strip_prefix("transformer."))
            .or_else(|| rest.strip_prefix("model."))
        {
            rest = r;
        } else if let Some(r) = rest.strip_prefix("transformer_1.") {
            expert = Some(Expert::High);
            rest = r;
        } else if let Some(r) = rest.strip_prefix("transformer_2.") {
            expert = Some(Expert::Low);
            rest = r;
        } else {
            break;
        }
    }
    let rest = rest.strip_prefix("blocks.")?;
    let (block, module) = rest.split_once('.')?;
    let block = block.parse().ok()?;
    let target = LoraTarget::ALL
        .into_iter()
        .find(|t| t.path() == module || t.diffusers_path() == module)?;
    Some(KeyTarget {
        expert,
        block,
        target,
        down,
    })
}

impl RecoveryAdapter {
    /// Reads the adapters of `expert` from `path` (in `kind` on `device`) and checks them against
    /// the model's shapes. A file none of whose keys names a block linear of this expert is an
    /// error that lists some of its keys.
    pub fn load(
        path: &Path,
        expert: Expert,
        cfg: &TransformerConfig,
        kind: Kind,
        device: Device,
    ) -> Result<RecoveryAdapter, ModelError> {
        let error = |reason: String| ModelError::Config {
            path: path.to_path_buf(),
            reason,
        };
        let set = WeightSet::open(path)?;
        let names = set.names();
        let mut factors: BTreeMap<(usize, LoraTarget), (Option<String>, Option<String>)> =
            BTreeMap::new();
        let mut skipped = Vec::new();
        for name in &names {
            match parse_key(name) {
                Some(k) if k.expert.is_none_or(|e| e == expert) => {
                    let slot = factors.entry((k.block, k.target)).or_default();
                    *if k.down { &mut slot.0 } else { &mut slot.1 } = Some(name.clone());
                }
                Some(_) => {}
                None if name.contains("lora_") => skipped.push(name.clone()),
                // `.alpha` and metadata-like tensors: α = r regardless, as in AI Toolkit.
                None => {}
            }
        }
        if factors.is_empty() {
            let examples: Vec<&str> = names.iter().take(5).map(String::as_str).collect();
            return Err(error(format!(
                "no key names a transformer block linear of the {} expert (expected e.g. \
                 `diffusion_model.transformer_{}.blocks.0.self_attn.q.lora_A.weight` or \
                 `transformer.blocks.0.attn1.to_q.lora_A.weight`); the file has {} keys such as {}",
                expert.label(),
                expert.aitk_index(),
                names.len(),
                examples.join(", ")
            )));
        }
        let mut adapters = BTreeMap::new();
        for ((block, target), (down, up)) in factors {
            let (Some(down), Some(up)) = (down, up) else {
                return Err(error(format!(
                    "block {block} {}: the adapter has only one of its two factors",
                    target.path()
                )));
            };
            if block as i64 >= cfg.num_layers {
                return Err(error(format!(
                    "{down} is for block {block}, but the model has {} blocks",
                    cfg.num_layers
                )));
            }
            let a = set.load(&down, kind, device)?;
            let b = set.load(&up, kind, device)?;
            let (inp, out) = target.dims(cfg);
            let rank = a.size()[0];
            if a.size() != [rank, inp] || b.size() != [out, rank] {
                return Err(error(format!(
                    "{down} / {up} have shapes {:?} / {:?}, expected [r, {inp}] / [{out}, r]: \
                     this adapter is for another model",
                    a.size(),
                    b.size()
                )));
            }
            adapters.insert((block, target), (a, b));
        }
        if !skipped.is_empty() {
            tracing::warn!(
                "{}: {} adapter tensors outside the transformer blocks are not applied (those \
                 linears stay in bf16), e.g. {}",
                path.display(),
                skipped.len(),
                skipped[0]
            );
        }
        Ok(RecoveryAdapter {
            path: path.to_path_buf(),
            adapters,
            skipped,
        })
    }

    /// An adapter of rank `rank` with small random factors on every block linear: what a real
    /// one costs in memory and time, for benchmarks (`wanlora bench step --ara-rank`).
    pub fn random(
        cfg: &TransformerConfig,
        rank: i64,
        kind: Kind,
        device: Device,
    ) -> RecoveryAdapter {
        let mut adapters = BTreeMap::new();
        for block in 0..cfg.num_layers as usize {
            for t in LoraTarget::ALL {
                let (inp, out) = t.dims(cfg);
                let a = Tensor::randn([rank, inp], (kind, device)) * (1.0 / (inp as f64).sqrt());
                let b = Tensor::randn([out, rank], (kind, device)) * 1e-3;
                adapters.insert((block, t), (a, b));
            }
        }
        RecoveryAdapter {
            path: PathBuf::from("random"),
            adapters,
            skipped: Vec::new(),
        }
    }

    /// A (`[r, in]`) and B (`[out, r]`) of one block linear, if the file has them.
    pub fn get(&self, block: usize, target: LoraTarget) -> Option<(&Tensor, &Tensor)> {
        self.adapters.get(&(block, target)).map(|(a, b)| (a, b))
    }

    /// Number of block linears with an adapter.
    pub fn len(&self) -> usize {
        self.adapters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.adapters.is_empty()
    }

    /// The rank of the first adapter (AI Toolkit's network rank).
    pub fn rank(&self) -> i64 {
        self.adapters
            .values()
            .next()
            .map_or(0, |(a, _)| a.size()[0])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_understood_in_every_naming() {
        let parse = |k: &str| parse_key(k).map(|t| (t.expert, t.block, t.target, t.down));
        assert_eq!(
            parse("diffusion_model.transformer_1.blocks.3.self_attn.q.lora_A.weight"),
            Some((Some(Expert::High), 3, LoraTarget::SelfQ, true))
        );
        assert_eq!(
            parse("transformer.transformer_2.blocks.0.attn2.to_out.0.lora_B.weight"),
            Some((Some(Expert::Low), 0, LoraTarget::CrossO, false))
        );
        assert_eq!(
            parse("transformer.blocks.12.ffn.net.0.proj.lora_down.weight"),
            Some((None, 12, LoraTarget::Ffn0, true))
        );
        assert_eq!(
            parse("blocks.1.ffn.2.lora_up.weight"),
            Some((None, 1, LoraTarget::Ffn2, false))
        );
        assert_eq!(
            parse("diffusion_model.blocks.1.cross_attn.v.lora_A.weight"),
            Some((None, 1, LoraTarget::CrossV, true))
        );
        assert_eq!(parse("diffusion_model.blocks.1.cross_attn.v.alpha"), None);
        assert_eq!(
            parse("transformer.condition_embedder.time_proj.lora_A.weight"),
            None
        );
        assert_eq!(parse("diffusion_model.head.head.lora_A.weight"), None);
    }
}
