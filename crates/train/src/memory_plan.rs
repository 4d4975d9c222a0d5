//! The memory plan of a training step: how many blocks keep their activations (`keep_blocks`) and
//! how many of the recomputed ones keep their self-attention output (`keep_attention`), chosen per
//! bucket shape from the device memory a step may use. No libtorch here: the trainer measures the
//! budget and hands in the model's facts; this module only counts bytes and picks.
//!
//! The byte model counts, in units of one activation `u = tokens · dim · dtype bytes` (one block
//! input), what a step allocates beyond the loaded weights and the persistent LoRA and optimizer
//! state (those are allocated before the budget is measured):
//!
//! ```text
//! step bytes = LoRA gradients + their flat copy              8 bytes per LoRA parameter
//!            + u · (W                                         the recomputed block's graph, the head
//!                   + (L − K)                                 saved inputs of the recomputed blocks
//!                   + K · G                                   graphs of the kept blocks
//!                   + A)                                      kept self-attention outputs
//!            + A · heads · tokens · 4                         their log-sum-exp (fp32)
//!            [+ (K + 1) · one block's compute-dtype weights   dequantised weights (fp8 weights, uint4)]
//! ```
//!
//! W and G were fitted to the peaks measured on the H100 and the H200 (docs/BENCHMARKS.md; the test
//! `byte_model_matches_the_gpu_measurements` holds the table): every recorded point is within 1 %.
//! A plan also needs a margin for the caching allocator's rounding and fragmentation.
//!
//! Keeping is faster: a kept block skips its whole recompute, a kept attention skips the
//! self-attention forward of its recompute. Self-attention costs one activation of memory and, at
//! long sequences, most of a block's forward; a kept block costs about twenty. The planner scores
//! plans by the forward FLOPs their keeping saves and keeps the plans no cheaper plan beats (the
//! frontier); the plan of a budget is the fastest on the frontier that fits.

use std::fmt;

/// Bytes in a GiB.
pub const GIB: u64 = 1 << 30;

/// Activations per token of the recomputed block's graph, the head and the conditions (fitted).
const WORKING_SET_UNITS: f64 = 27.92;
/// Activations a kept block's graph holds, compute-dtype weights (fitted, bf16 on the GPU).
const KEPT_BLOCK_UNITS_DENSE: f64 = 19.48;
/// The same with fp8 matmuls, which also keep each linear's quantised input (fitted).
const KEPT_BLOCK_UNITS_FP8: f64 = 20.03;
/// LoRA gradients (fp32) and the flat fp32 copy clipping and the optimizer read.
const LORA_STEP_BYTES_PER_PARAM: u64 = 8;
/// The part of a plan's step bytes added as margin, and a fixed margin on top.
const MARGIN_SHARE: f64 = 0.04;
const MARGIN_FIXED: u64 = 512 << 20;
/// How much smaller than a failed plan the fallback must be (of its step bytes).
const FALLBACK_SHARE: f64 = 0.9;
/// Text tokens of cross-attention (Wan's umT5 length), for the FLOP score.
const TEXT_TOKENS: f64 = 512.0;
/// fp8 matmuls run the linears about this much faster than bf16 (H100/H200: 1483 vs 784 TFLOP/s).
const FP8_MATMUL_SPEEDUP: f64 = 1.8;

/// How the frozen linears are stored, which decides what a step keeps for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightStorage {
    /// In the compute dtype.
    Dense,
    /// fp8 codes multiplied by fp8 matmuls.
    Fp8Matmul,
    /// fp8 or uint4 codes dequantised per linear into the compute dtype (the dequantised weight
    /// lives in a kept block's graph and in the recomputed block's).
    Dequantised,
}

/// What the byte model needs to know about the trained expert.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelFacts {
    pub dim: u64,
    pub ffn_dim: u64,
    pub heads: u64,
    pub blocks: u32,
    /// Patch size (frames, height, width) of the latent.
    pub patch: [u64; 3],
    /// Bytes of one element of the compute dtype (2 for bf16, 4 for fp32).
    pub dtype_bytes: u64,
    pub storage: WeightStorage,
    /// Trainable LoRA parameters of this expert.
    pub lora_params: u64,
}

impl ModelFacts {
    /// Tokens of a bucket: batch × the patched latent grid.
    pub fn tokens(&self, shape: &BucketShape) -> u64 {
        let [pt, ph, pw] = self.patch.map(|p| p.max(1));
        shape.batch
            * shape.latent_frames.div_ceil(pt)
            * (shape.latent_height / ph)
            * (shape.latent_width / pw)
    }

    /// Compute-dtype bytes of one block's ten linears (self- and cross-attention, FFN).
    pub fn block_weight_bytes(&self) -> u64 {
        (8 * self.dim * self.dim + 2 * self.dim * self.ffn_dim) * self.dtype_bytes
    }

    fn kept_block_units(&self) -> f64 {
        match self.storage {
            WeightStorage::Fp8Matmul => KEPT_BLOCK_UNITS_FP8,
            WeightStorage::Dense | WeightStorage::Dequantised => KEPT_BLOCK_UNITS_DENSE,
        }
    }
}

/// The latent shape of one micro-batch: one bucket of the dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BucketShape {
    pub batch: u64,
    pub latent_frames: u64,
    pub latent_height: u64,
    pub latent_width: u64,
}

impl fmt::Display for BucketShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}×{} latent frames × {}×{}",
            self.batch, self.latent_frames, self.latent_height, self.latent_width
        )
    }
}

/// A checkpointing policy: `keep_attention` counts recomputed blocks, so it is at most
/// `blocks − keep_blocks`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Plan {
    pub keep_blocks: u32,
    pub keep_attention: u32,
    /// The recomputed blocks' inputs wait in page-locked host memory (two on the device at a
    /// time): the last resort when even recomputing everything does not fit.
    pub host_inputs: bool,
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "keep_blocks {}, keep_attention {}",
            self.keep_blocks, self.keep_attention
        )?;
        if self.host_inputs {
            f.write_str(", block inputs in host memory")?;
        }
        Ok(())
    }
}

/// A plan with what it needs and what it saves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlannedStep {
    pub plan: Plan,
    /// Bytes the step allocates beyond the weights and persistent state (the byte model).
    pub step_bytes: u64,
    /// `step_bytes` plus the margin: what must be free for this plan.
    pub needs: u64,
    /// Forward FLOPs of the recompute this plan skips (higher is faster).
    pub saved_flops: f64,
}

/// Bytes a step with `plan` allocates at `tokens` beyond the loaded weights and the persistent
/// LoRA and optimizer state.
pub fn step_bytes(model: &ModelFacts, tokens: u64, plan: Plan) -> u64 {
    let unit = (tokens * model.dim * model.dtype_bytes) as f64;
    let (blocks, kept) = (f64::from(model.blocks), f64::from(plan.keep_blocks));
    let attention = f64::from(plan.keep_attention);
    // Host-stashed inputs: the one in use and the one fetched ahead.
    let saved_inputs = if plan.host_inputs {
        2.0_f64.min(blocks - kept)
    } else {
        blocks - kept
    };
    let activations =
        unit * (WORKING_SET_UNITS + saved_inputs + kept * model.kept_block_units() + attention);
    let log_sum_exp = u64::from(plan.keep_attention) * model.heads * tokens * 4;
    let dequantised = match model.storage {
        WeightStorage::Dequantised => {
            (u64::from(plan.keep_blocks) + 1) * model.block_weight_bytes()
        }
        WeightStorage::Dense | WeightStorage::Fp8Matmul => 0,
    };
    activations.ceil() as u64
        + log_sum_exp
        + dequantised
        + model.lora_params * LORA_STEP_BYTES_PER_PARAM
}

/// `step_bytes` plus the allocator margin.
pub fn needs(model: &ModelFacts, tokens: u64, plan: Plan) -> u64 {
    let bytes = step_bytes(model, tokens, plan);
    bytes + (bytes as f64 * MARGIN_SHARE) as u64 + MARGIN_FIXED
}

/// Forward FLOPs (linears weighted by their speed) that `plan` does not recompute.
fn saved_flops(model: &ModelFacts, tokens: u64, plan: Plan) -> f64 {
    let (n, d, f) = (tokens as f64, model.dim as f64, model.ffn_dim as f64);
    let linear_speed = match model.storage {
        WeightStorage::Fp8Matmul => FP8_MATMUL_SPEEDUP,
        WeightStorage::Dense | WeightStorage::Dequantised => 1.0,
    };
    let linears =
        (2.0 * n * (6.0 * d * d + 2.0 * d * f) + 4.0 * TEXT_TOKENS * d * d) / linear_speed;
    let self_attention = 4.0 * n * n * d;
    let cross_attention = 4.0 * n * TEXT_TOKENS * d;
    let block = linears + self_attention + cross_attention;
    // The copies to and from host memory overlap compute, but they share the memory bus: a host
    // plan ranks one block's recompute below the same plan on the device, so it is chosen only
    // where memory is tighter.
    let host_cost = if plan.host_inputs { block } else { 0.0 };
    f64::from(plan.keep_blocks) * block + f64::from(plan.keep_attention) * self_attention
        - host_cost
}

fn planned(model: &ModelFacts, tokens: u64, plan: Plan) -> PlannedStep {
    PlannedStep {
        plan,
        step_bytes: step_bytes(model, tokens, plan),
        needs: needs(model, tokens, plan),
        saved_flops: saved_flops(model, tokens, plan),
    }
}

/// What the job fixes itself: a number written in `keep_blocks` or `keep_attention` holds, `auto`
/// (None) is chosen by the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Fixed {
    pub keep_blocks: Option<u32>,
    pub keep_attention: Option<u32>,
}

impl Fixed {
    /// The plans this allows for a model of `blocks` blocks (a fixed `keep_attention` is capped
    /// by the recomputed blocks, as the checkpointing does).
    fn allows(&self, blocks: u32, plan: Plan) -> bool {
        let recomputed = blocks - plan.keep_blocks;
        self.keep_blocks
            .is_none_or(|k| plan.keep_blocks == k.min(blocks))
            && self
                .keep_attention
                .is_none_or(|a| plan.keep_attention == a.min(recomputed))
    }
}

/// Every plan (allowed by `fixed`) that no plan needing as little or less memory beats, by memory
/// needed (ascending; the saved FLOPs rise strictly along it). The first is the smallest allowed
/// plan ("recompute everything" when nothing is fixed).
pub fn frontier(model: &ModelFacts, tokens: u64, fixed: Fixed) -> Vec<PlannedStep> {
    let mut all = Vec::new();
    for keep_blocks in 0..=model.blocks {
        for keep_attention in 0..=(model.blocks - keep_blocks) {
            for host_inputs in [false, true] {
                // Host-stashed inputs only where nothing is kept whole (every input is saved).
                if host_inputs && keep_blocks > 0 {
                    continue;
                }
                let plan = Plan {
                    keep_blocks,
                    keep_attention,
                    host_inputs,
                };
                if fixed.allows(model.blocks, plan) {
                    all.push(planned(model, tokens, plan));
                }
            }
        }
    }
    all.sort_by(|a, b| {
        a.needs
            .cmp(&b.needs)
            .then(b.saved_flops.total_cmp(&a.saved_flops))
    });
    let mut kept: Vec<PlannedStep> = Vec::new();
    for p in all {
        if kept
            .last()
            .is_none_or(|best| p.saved_flops > best.saved_flops)
        {
            kept.push(p);
        }
    }
    kept
}

/// The plan for a budget: the fastest frontier plan whose needs fit, and whether any did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Choice {
    pub step: PlannedStep,
    /// False when not even recomputing every block fits: the plan is then that smallest one.
    pub fits: bool,
}

/// The fastest plan that fits `budget` bytes (free device memory for the step) at `tokens`.
pub fn choose(model: &ModelFacts, tokens: u64, fixed: Fixed, budget: u64) -> Choice {
    let frontier = frontier(model, tokens, fixed);
    match frontier.iter().rev().find(|p| p.needs <= budget) {
        Some(step) => Choice {
            step: *step,
            fits: true,
        },
        None => Choice {
            step: frontier[0],
            fits: false,
        },
    }
}

/// The plan to try after `failed` ran out of memory: the fastest frontier plan whose step needs at
/// most 90 % of the failed plan's step bytes (so a fallback frees a real amount, not one attention
/// output), or the smallest allowed plan; `None` when `failed` is already the smallest.
pub fn next_smaller(
    model: &ModelFacts,
    tokens: u64,
    fixed: Fixed,
    failed: Plan,
) -> Option<PlannedStep> {
    let frontier = frontier(model, tokens, fixed);
    if frontier[0].plan == failed {
        return None;
    }
    let limit = (step_bytes(model, tokens, failed) as f64 * FALLBACK_SHARE) as u64;
    let step = frontier
        .iter()
        .rev()
        .find(|p| p.step_bytes <= limit)
        .copied()
        .unwrap_or(frontier[0]);
    Some(step)
}

/// The smallest plan: every block recomputed, their inputs waiting in host memory.
pub const SMALLEST: Plan = Plan {
    keep_blocks: 0,
    keep_attention: 0,
    host_inputs: true,
};

/// What stays on the device for a whole run besides the steps, per resident expert.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Residency {
    /// One block's weights as stored (the blocks are alike).
    pub block_bytes: u64,
    /// The expert's weights outside its blocks (patch and condition embeddings, head).
    pub other_bytes: u64,
    /// The trainable LoRA and its optimizer state.
    pub persistent_bytes: u64,
    /// Experts on the device at once: 1 when the idle one waits in host memory (`low_vram`).
    pub experts: u64,
    /// Streamed blocks on the device at once (the ring a streamed pass cycles through).
    pub ring_slots: u64,
}

/// Device bytes a run needs with `streamed` of each resident expert's blocks in host memory: the
/// resident experts, and the step of the largest bucket (`tokens`) with the smallest plan.
pub fn run_needs(model: &ModelFacts, residency: &Residency, tokens: u64, streamed: u32) -> u64 {
    let streamed = streamed.min(model.blocks);
    let on_device =
        u64::from(model.blocks - streamed) + u64::from(streamed).min(residency.ring_slots.max(1));
    let per_expert =
        residency.other_bytes + on_device * residency.block_bytes + residency.persistent_bytes;
    residency.experts * per_expert + needs(model, tokens, SMALLEST)
}

/// The fewest blocks to stream from host memory so that the largest bucket's step fits `free`
/// bytes at all: `Ok(0)` when every block can stay on the device, `Err(bytes)` with what the run
/// needs even with every block streamed when that does not fit either. Streaming more than this
/// would only slow the passes; the per-bucket plans then use what is left.
pub fn blocks_to_stream(
    model: &ModelFacts,
    residency: &Residency,
    tokens: u64,
    free: u64,
) -> Result<u32, u64> {
    (0..=model.blocks)
        .find(|&k| run_needs(model, residency, tokens, k) <= free)
        .ok_or_else(|| run_needs(model, residency, tokens, model.blocks))
}

/// Binary gigabytes, for messages.
pub fn gib(bytes: u64) -> f64 {
    bytes as f64 / GIB as f64
}
