//! LoRA on the ten linears of every transformer block (wan-reference.md §8): y = W x + b +
//! m · (α/r) · B(A x), with A `[r, in]` Kaiming-uniform and B `[out, r]` zeros, kept in fp32 and
//! applied in the compute dtype. Saved with ComfyUI's keys `diffusion_model.blocks.N.<module>.lora_A.weight`.

use std::collections::BTreeMap;
use std::path::Path;
use tch::{Device, Kind, Tensor};

use crate::error::ModelError;
use crate::transformer::TransformerConfig;
use wanlora_torch::rng;
use wanlora_torch::weights::{save_safetensors, WeightSet};

/// What loading a LoRA file found besides the adapters it applied.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraLoadReport {
    pub format: LoraKeyFormat,
    /// Tensors of the file that match no layer of the model, sorted (e.g. blocks beyond the
    /// model's depth, or layers wanlora does not adapt).
    pub unused_keys: Vec<String>,
}

impl LoraLoadReport {
    /// The warning for keys that were not applied, naming up to five of them; None when all were.
    pub fn unused_warning(&self, path: &Path) -> Option<String> {
        if self.unused_keys.is_empty() {
            return None;
        }
        let shown: Vec<&str> = self
            .unused_keys
            .iter()
            .take(5)
            .map(String::as_str)
            .collect();
        let more = self.unused_keys.len().saturating_sub(shown.len());
        Some(format!(
            "{}: {} tensor(s) match no layer of this model and are not applied: {}{}",
            path.display(),
            self.unused_keys.len(),
            shown.join(", "),
            if more > 0 {
                format!(" … and {more} more")
            } else {
                String::new()
            }
        ))
    }
}

/// The ten linears of a block that carry adapters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LoraTarget {
    SelfQ,
    SelfK,
    SelfV,
    SelfO,
    CrossQ,
    CrossK,
    CrossV,
    CrossO,
    Ffn0,
    Ffn2,
}

impl LoraTarget {
    pub const ALL: [LoraTarget; 10] = [
        LoraTarget::SelfQ,
        LoraTarget::SelfK,
        LoraTarget::SelfV,
        LoraTarget::SelfO,
        LoraTarget::CrossQ,
        LoraTarget::CrossK,
        LoraTarget::CrossV,
        LoraTarget::CrossO,
        LoraTarget::Ffn0,
        LoraTarget::Ffn2,
    ];

    /// Module path inside a block, in original (ComfyUI) naming.
    pub fn path(self) -> &'static str {
        match self {
            LoraTarget::SelfQ => "self_attn.q",
            LoraTarget::SelfK => "self_attn.k",
            LoraTarget::SelfV => "self_attn.v",
            LoraTarget::SelfO => "self_attn.o",
            LoraTarget::CrossQ => "cross_attn.q",
            LoraTarget::CrossK => "cross_attn.k",
            LoraTarget::CrossV => "cross_attn.v",
            LoraTarget::CrossO => "cross_attn.o",
            LoraTarget::Ffn0 => "ffn.0",
            LoraTarget::Ffn2 => "ffn.2",
        }
    }

    /// Module path in diffusers naming.
    pub fn diffusers_path(self) -> &'static str {
        match self {
            LoraTarget::SelfQ => "attn1.to_q",
            LoraTarget::SelfK => "attn1.to_k",
            LoraTarget::SelfV => "attn1.to_v",
            LoraTarget::SelfO => "attn1.to_out.0",
            LoraTarget::CrossQ => "attn2.to_q",
            LoraTarget::CrossK => "attn2.to_k",
            LoraTarget::CrossV => "attn2.to_v",
            LoraTarget::CrossO => "attn2.to_out.0",
            LoraTarget::Ffn0 => "ffn.net.0.proj",
            LoraTarget::Ffn2 => "ffn.net.2",
        }
    }

    /// (in, out) features of the targeted linear.
    pub fn dims(self, cfg: &TransformerConfig) -> (i64, i64) {
        let d = cfg.dim();
        match self {
            LoraTarget::Ffn0 => (d, cfg.ffn_dim),
            LoraTarget::Ffn2 => (cfg.ffn_dim, d),
            _ => (d, d),
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// Whether the LoRA down-projection runs in the frozen weight's GEMM: `WANLORA_FUSED_LORA=1`,
/// read once. Whoever builds a model for training with a LoRA of rank r then calls
/// `WanTransformer::reserve_lora_rows(r)`; the block linears use the fused path wherever rows are
/// reserved (crate::transformer::Linear::reserve_lora_rows). Off by default until measured on the
/// GPU (scripts/gpu/fused_lora.sh); it becomes the default only if that shows a faster step.
pub fn fused_lora_enabled() -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ENABLED.get_or_init(|| {
        std::env::var("WANLORA_FUSED_LORA").is_ok_and(|v| matches!(v.trim(), "1" | "true" | "on"))
    })
}

/// One adapter: `down` = A `[r, in]`, `up` = B `[out, r]`, both fp32 leaves when trainable.
pub struct LoraAdapter {
    pub down: Tensor,
    pub up: Tensor,
    pub alpha: f64,
}

impl LoraAdapter {
    pub fn rank(&self) -> i64 {
        self.down.size()[0]
    }

    /// α / r, the factor applied to B·A (ComfyUI's convention; AI Toolkit forces α = r).
    pub fn scale(&self) -> f64 {
        self.alpha / self.rank() as f64
    }

    /// `m · (α/r) · A x` in `x`'s kind: the rank-r half of the delta, with the strength folded in
    /// (cheap: r values per token).
    pub fn down_scaled(&self, x: &Tensor, multiplier: &Multiplier) -> Tensor {
        let kind = x.kind();
        let h = x.linear::<Tensor>(&self.down.to_kind(kind), None);
        match multiplier {
            Multiplier::Scalar(m) => h * (m * self.scale()),
            Multiplier::PerSample(m) => h * (m * self.scale()).to_kind(kind),
        }
    }

    /// `m · (α/r) · B(A x)` in `x`'s kind. `multiplier` is a scalar or a per-sample `[B, 1, 1]` tensor.
    pub fn delta(&self, x: &Tensor, multiplier: &Multiplier) -> Tensor {
        let kind = x.kind();
        let a = self.down.to_kind(kind);
        let b = self.up.to_kind(kind);
        let h = x.linear::<Tensor>(&a, None).linear::<Tensor>(&b, None);
        match multiplier {
            Multiplier::Scalar(m) => h * (m * self.scale()),
            Multiplier::PerSample(m) => h * (m * self.scale()).to_kind(kind),
        }
    }
}

/// LoRA strength: one value for the batch, or one per sample (a dataset's `network_weight`).
#[derive(Debug)]
pub enum Multiplier {
    Scalar(f64),
    /// `[B, 1, 1]` fp32.
    PerSample(Tensor),
}

impl Multiplier {
    pub fn per_sample(values: &[f64], device: Device) -> Multiplier {
        if values.windows(2).all(|w| w[0] == w[1]) {
            Multiplier::Scalar(values.first().copied().unwrap_or(1.0))
        } else {
            let t = Tensor::from_slice(values)
                .to_kind(Kind::Float)
                .to_device(device);
            Multiplier::PerSample(t.view([-1, 1, 1]))
        }
    }
}

/// A LoRA applied to a forward pass: the adapters and their strength.
pub struct LoraApply<'a> {
    pub set: &'a LoraSet,
    pub multiplier: Multiplier,
}

impl LoraApply<'_> {
    pub fn adapter(&self, block: usize, target: LoraTarget) -> Option<&LoraAdapter> {
        self.set.get(block, target)
    }
}

/// Every adapter of one expert, indexed by block and target.
pub struct LoraSet {
    blocks: Vec<Vec<Option<LoraAdapter>>>,
}

/// Where a LoRA file's keys come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoraKeyFormat {
    /// `diffusion_model.blocks.N.self_attn.q.lora_A.weight` (+ `.alpha`) — what wanlora writes.
    ComfyUi,
    /// `…lora_down.weight` / `lora_up.weight` with original names.
    DownUp,
    /// kohya: `lora_unet_blocks_0_self_attn_q.lora_down.weight` (+ `.alpha`).
    Kohya,
    /// diffusers: `transformer.blocks.0.attn1.to_q.lora_A.weight`.
    Diffusers,
}

impl LoraSet {
    /// Fresh trainable adapters: A Kaiming-uniform (a = √5, bound 1/√in), B zeros, fp32 leaves.
    /// Each A is drawn from its own stream (from `seed`, the block and the target), never from
    /// libtorch's global generator, so the start of a run depends on `seed` alone.
    pub fn new_trainable(
        cfg: &TransformerConfig,
        rank: i64,
        alpha: f64,
        device: Device,
        seed: u64,
    ) -> LoraSet {
        let blocks = (0..cfg.num_layers)
            .map(|block| {
                LoraTarget::ALL
                    .iter()
                    .enumerate()
                    .map(|(target, t)| {
                        let (inp, out) = t.dims(cfg);
                        let bound = 1.0 / (inp as f32).sqrt();
                        let stream = seed
                            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                            .wrapping_add(((block as u64) << 8) | target as u64);
                        let down = rng::uniform(stream, &[rank, inp], -bound, bound, device)
                            .expect("a LoRA matrix fits in memory")
                            .set_requires_grad(true);
                        let up = Tensor::zeros([out, rank], (Kind::Float, device))
                            .set_requires_grad(true);
                        Some(LoraAdapter { down, up, alpha })
                    })
                    .collect()
            })
            .collect();
        LoraSet { blocks }
    }

    pub fn num_blocks(&self) -> usize {
        self.blocks.len()
    }

    pub fn get(&self, block: usize, target: LoraTarget) -> Option<&LoraAdapter> {
        self.blocks
            .get(block)
            .and_then(|b| b[target.index()].as_ref())
    }

    /// Every (key stem, adapter), the stem being `blocks.N.<module>`.
    pub fn adapters(&self) -> impl Iterator<Item = (String, &LoraAdapter)> {
        self.blocks.iter().enumerate().flat_map(|(i, b)| {
            LoraTarget::ALL.iter().filter_map(move |t| {
                b[t.index()]
                    .as_ref()
                    .map(|a| (format!("blocks.{i}.{}", t.path()), a))
            })
        })
    }

    /// The trainable tensors, A then B for each adapter in a fixed order.
    pub fn parameters(&self) -> Vec<Tensor> {
        self.adapters()
            .flat_map(|(_, a)| [a.down.shallow_clone(), a.up.shallow_clone()])
            .collect()
    }

    /// The same adapters with their tensors replaced by `params` (in [`LoraSet::parameters`] order),
    /// e.g. by views of an optimizer's flat buffer.
    pub fn with_parameters(&self, params: &[Tensor]) -> LoraSet {
        let mut it = params.iter();
        let blocks = self
            .blocks
            .iter()
            .map(|b| {
                b.iter()
                    .map(|a| {
                        a.as_ref().map(|a| LoraAdapter {
                            down: it.next().expect("one tensor per A").shallow_clone(),
                            up: it.next().expect("one tensor per B").shallow_clone(),
                            alpha: a.alpha,
                        })
                    })
                    .collect()
            })
            .collect();
        assert!(it.next().is_none(), "more tensors than LoRA parameters");
        LoraSet { blocks }
    }

    /// Number of trainable values.
    pub fn numel(&self) -> i64 {
        self.adapters()
            .map(|(_, a)| (a.down.numel() + a.up.numel()) as i64)
            .sum()
    }

    /// ComfyUI-loadable tensors: `diffusion_model.<stem>.lora_A.weight`, `.lora_B.weight` and a 0-d
    /// fp32 `.alpha`, in `kind`.
    pub fn state_dict(&self, kind: Kind) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (stem, a) in self.adapters() {
            let k = format!("diffusion_model.{stem}");
            out.push((format!("{k}.lora_A.weight"), a.down.detach().to_kind(kind)));
            out.push((format!("{k}.lora_B.weight"), a.up.detach().to_kind(kind)));
            out.push((
                format!("{k}.alpha"),
                Tensor::from(a.alpha).to_kind(Kind::Float),
            ));
        }
        out
    }

    /// Writes the set atomically in ComfyUI's format.
    pub fn save(
        &self,
        path: &Path,
        kind: Kind,
        metadata: &BTreeMap<String, String>,
    ) -> Result<(), ModelError> {
        save_safetensors(path, &self.state_dict(kind), metadata)?;
        Ok(())
    }

    /// Loads a LoRA file in any of the supported key formats onto `device` (fp32). Files without
    /// `.alpha` get α = r, i.e. scale 1, as ComfyUI applies them. `trainable` makes the tensors leaves
    /// that require grad (resume). Keys that match no layer of this model are named in a warning
    /// (a file none of whose keys match is an error): a partly applied LoRA must not pass unnoticed.
    pub fn load(
        path: &Path,
        cfg: &TransformerConfig,
        device: Device,
        trainable: bool,
    ) -> Result<(LoraSet, LoraKeyFormat), ModelError> {
        let (set, report) = LoraSet::load_reporting(path, cfg, device, trainable)?;
        if let Some(warning) = report.unused_warning(path) {
            tracing::warn!("{warning}");
        }
        Ok((set, report.format))
    }

    /// [`LoraSet::load`], returning what was not used instead of warning about it.
    pub fn load_reporting(
        path: &Path,
        cfg: &TransformerConfig,
        device: Device,
        trainable: bool,
    ) -> Result<(LoraSet, LoraLoadReport), ModelError> {
        let set = WeightSet::open(path)?;
        let names = set.names();
        let (format, prefix) = detect_format(&names).ok_or_else(|| ModelError::Config {
            path: path.to_path_buf(),
            reason: "no LoRA keys found (expected lora_A/lora_B or lora_down/lora_up tensors for the transformer blocks)".into(),
        })?;
        let mut blocks: Vec<Vec<Option<LoraAdapter>>> = (0..cfg.num_layers)
            .map(|_| (0..10).map(|_| None).collect())
            .collect();
        let mut found = 0;
        let mut used = std::collections::HashSet::new();
        for (i, block) in blocks.iter_mut().enumerate() {
            for t in LoraTarget::ALL {
                let (down_key, up_key, alpha_key) = keys_for(format, &prefix, i, t);
                let (Some(_), Some(_)) = (set.info(&down_key), set.info(&up_key)) else {
                    continue;
                };
                used.extend([down_key.clone(), up_key.clone(), alpha_key.clone()]);
                let down = set.load(&down_key, Kind::Float, device)?;
                let up = set.load(&up_key, Kind::Float, device)?;
                let (inp, out) = t.dims(cfg);
                let rank = down.size()[0];
                if down.size() != [rank, inp] || up.size() != [out, rank] {
                    return Err(ModelError::Config {
                        path: path.to_path_buf(),
                        reason: format!(
                            "{down_key} / {up_key} have shapes {:?} / {:?}, expected [r, {inp}] / [{out}, r]: this LoRA is for another model size",
                            down.size(),
                            up.size()
                        ),
                    });
                }
                let alpha = match set.info(&alpha_key) {
                    Some(_) => set
                        .load(&alpha_key, Kind::Double, Device::Cpu)?
                        .double_value(&[]),
                    None => rank as f64,
                };
                let (down, up) = if trainable {
                    (down.set_requires_grad(true), up.set_requires_grad(true))
                } else {
                    (down, up)
                };
                block[t.index()] = Some(LoraAdapter { down, up, alpha });
                found += 1;
            }
        }
        let mut unused_keys: Vec<String> = names
            .iter()
            .filter(|n| !used.contains(n.as_str()))
            .map(|n| n.to_string())
            .collect();
        unused_keys.sort();
        if found == 0 {
            let examples: Vec<&str> = unused_keys.iter().take(3).map(String::as_str).collect();
            return Err(ModelError::Config {
                path: path.to_path_buf(),
                reason: format!(
                    "no adapter matched the {} transformer blocks of this model (keys such as {}): \
                     this LoRA is for another model or in a format wanlora does not read",
                    cfg.num_layers,
                    examples.join(", ")
                ),
            });
        }
        Ok((
            LoraSet { blocks },
            LoraLoadReport {
                format,
                unused_keys,
            },
        ))
    }

    /// Copies values from `other` (same layout) without changing leaf status: used to restore EMA or
    /// resumed weights into trainable tensors.
    pub fn copy_from(&self, other: &LoraSet) {
        tch::no_grad(|| {
            for ((_, a), (_, b)) in self.adapters().zip(other.adapters()) {
                a.down.shallow_clone().copy_(&b.down);
                a.up.shallow_clone().copy_(&b.up);
            }
        });
    }

    /// A detached copy whose tensors are fresh leaves that require grad: the same adapters
    /// trained separately (e.g. one step compared between two ways of computing it).
    pub fn trainable_copy(&self) -> LoraSet {
        let copy = self.detached_copy();
        for p in copy.parameters() {
            let _ = p.set_requires_grad(true);
        }
        copy
    }

    /// A detached copy (for EMA and snapshots).
    pub fn detached_copy(&self) -> LoraSet {
        LoraSet {
            blocks: self
                .blocks
                .iter()
                .map(|b| {
                    b.iter()
                        .map(|a| {
                            a.as_ref().map(|a| LoraAdapter {
                                down: a.down.detach().copy(),
                                up: a.up.detach().copy(),
                                alpha: a.alpha,
                            })
                        })
                        .collect()
                })
                .collect(),
        }
    }
}

/// The key format and the prefix in front of `blocks.` (e.g. `diffusion_model.`, `transformer.`, or none).
fn detect_format(names: &[String]) -> Option<(LoraKeyFormat, String)> {
    let any = |p: &str| names.iter().any(|n| n.contains(p));
    let prefix = || {
        names
            .iter()
            .find_map(|n| n.find("blocks.").map(|i| n[..i].to_string()))
            .unwrap_or_default()
    };
    if any("lora_unet_") {
        Some((LoraKeyFormat::Kohya, String::new()))
    } else if any(".attn1.") && (any("lora_A") || any("lora_down")) {
        Some((LoraKeyFormat::Diffusers, prefix()))
    } else if any(".lora_A.") {
        Some((LoraKeyFormat::ComfyUi, prefix()))
    } else if any(".lora_down.") {
        Some((LoraKeyFormat::DownUp, prefix()))
    } else {
        None
    }
}

/// (down, up, alpha) keys of one adapter in a format, behind `prefix` (ComfyUI files may or may not
/// carry `diffusion_model.`, diffusers ones `transformer.`).
fn keys_for(
    format: LoraKeyFormat,
    prefix: &str,
    block: usize,
    t: LoraTarget,
) -> (String, String, String) {
    match format {
        LoraKeyFormat::ComfyUi => {
            let s = format!("{prefix}blocks.{block}.{}", t.path());
            (
                format!("{s}.lora_A.weight"),
                format!("{s}.lora_B.weight"),
                format!("{s}.alpha"),
            )
        }
        LoraKeyFormat::DownUp => {
            let s = format!("{prefix}blocks.{block}.{}", t.path());
            (
                format!("{s}.lora_down.weight"),
                format!("{s}.lora_up.weight"),
                format!("{s}.alpha"),
            )
        }
        LoraKeyFormat::Kohya => {
            let s = format!("lora_unet_blocks_{block}_{}", t.path().replace('.', "_"));
            (
                format!("{s}.lora_down.weight"),
                format!("{s}.lora_up.weight"),
                format!("{s}.alpha"),
            )
        }
        LoraKeyFormat::Diffusers => {
            let s = format!("{prefix}blocks.{block}.{}", t.diffusers_path());
            (
                format!("{s}.lora_A.weight"),
                format!("{s}.lora_B.weight"),
                format!("{s}.alpha"),
            )
        }
    }
}
