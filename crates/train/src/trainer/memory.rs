//! `keep_blocks` / `keep_attention: auto`: the checkpointing of each bucket from the memory plan
//! (crate::memory_plan). The budget is the device memory a step may use, measured before the first
//! step and again whenever models moved (the idle expert parked or loaded, previews); the plan of
//! each bucket is remembered and logged once; a step that still runs out of memory falls back to a
//! smaller plan for its bucket and is repeated with the same data (see `Trainer::train_step`).

use super::*;
use crate::memory_plan::{
    self, BucketShape, Fixed, ModelFacts, PlannedStep, Residency, WeightStorage,
};
use std::collections::HashSet;
use wanlora_models::transformer::TransformerConfig;

/// The byte model's facts of an expert with `config`, computing in `kind`, its block linears
/// stored as `fp8` says, training `lora_params` LoRA parameters.
pub(super) fn model_facts_for(
    config: &TransformerConfig,
    kind: Kind,
    fp8: Fp8Mode,
    lora_params: u64,
) -> ModelFacts {
    ModelFacts {
        dim: config.dim() as u64,
        ffn_dim: config.ffn_dim as u64,
        heads: config.num_attention_heads as u64,
        blocks: config.num_layers as u32,
        patch: config.patch_size.map(|p| p as u64),
        dtype_bytes: kind.elt_size_in_bytes() as u64,
        storage: match fp8 {
            Fp8Mode::Off => WeightStorage::Dense,
            Fp8Mode::Matmul => WeightStorage::Fp8Matmul,
            Fp8Mode::WeightOnly | Fp8Mode::Uint4 => WeightStorage::Dequantised,
        },
        lora_params,
    }
}

/// LoRA parameters of rank `rank` on all ten linears of every block (the most a job trains).
pub(super) fn lora_params_at_most(config: &TransformerConfig, rank: u64) -> u64 {
    let (d, f) = (config.dim() as u64, config.ffn_dim as u64);
    config.num_layers as u64 * rank * (8 * 2 * d + 2 * (d + f))
}

/// Bytes per LoRA parameter that live through the run: the fp32 parameter, two optimizer moments
/// and room for an EMA copy.
const PERSISTENT_BYTES_PER_LORA_PARAM: u64 = 16;
/// Stored bytes per weight of a 4-bit block linear: codes, bf16 scales and zero points per group
/// of 64 (7.46 GB for A14B's 14.05 B block weights), and an allowance for a recovery adapter.
const UINT4_BYTES_PER_WEIGHT: f64 = 0.531 + 0.03;

/// What stays on the device per resident expert, from its config and storage.
pub(super) fn residency_for(
    config: &TransformerConfig,
    kind: Kind,
    fp8: Fp8Mode,
    lora_params: u64,
    experts: u64,
) -> Residency {
    let (d, f) = (config.dim() as u64, config.ffn_dim as u64);
    let compute = kind.elt_size_in_bytes() as u64;
    let linear_weights = 8 * d * d + 2 * d * f;
    let linear_bytes = match fp8 {
        Fp8Mode::Off => linear_weights * compute,
        // One byte per weight; the row scales are a few kB.
        Fp8Mode::Matmul | Fp8Mode::WeightOnly => linear_weights,
        Fp8Mode::Uint4 => (linear_weights as f64 * UINT4_BYTES_PER_WEIGHT).ceil() as u64,
    };
    // Biases, norms and the modulation table, in the compute dtype.
    let small = (20 * d + f) * compute;
    let patch: u64 = config.patch_size.iter().map(|&p| p as u64).product();
    // Patch and text embeddings, the time projection and the head in the compute dtype; the time
    // embedding in fp32 (as the model loads it).
    let other_weights = config.in_channels as u64 * d * patch
        + config.text_dim as u64 * d
        + d * d
        + 6 * d * d
        + d * config.out_channels as u64 * patch;
    let time_embedding = config.freq_dim as u64 * d + d * d;
    Residency {
        block_bytes: linear_bytes + small,
        other_bytes: other_weights * compute + time_embedding * 4,
        persistent_bytes: lora_params * PERSISTENT_BYTES_PER_LORA_PARAM,
        experts,
        ring_slots: AUTO_RING_SLOTS,
    }
}

/// Streamed blocks on the device at once when the trainer chooses to stream: one computing, one
/// being fetched.
const AUTO_RING_SLOTS: u64 = 2;

/// Block streaming chosen for the user: for a job that streams nothing itself and leaves
/// `keep_blocks` to the plan, when its largest bucket (`tokens`) would not fit next to the
/// resident experts even with the smallest plan, the fewest blocks that make it fit are streamed
/// from page-locked host memory (`layer_offloading` with that share). `None` when it fits as it
/// is; with the line to log otherwise.
pub(super) fn automatic_offload(
    config: &TransformerConfig,
    kind: Kind,
    fp8: Fp8Mode,
    rank: u64,
    experts: u64,
    tokens: u64,
    free: u64,
) -> Option<(BlockOffload, String)> {
    let lora_params = lora_params_at_most(config, rank);
    let facts = model_facts_for(config, kind, fp8, lora_params);
    let residency = residency_for(config, kind, fp8, lora_params, experts);
    let (blocks, line) = match memory_plan::blocks_to_stream(&facts, &residency, tokens, free) {
        Ok(0) => return None,
        Ok(k) => (
            k,
            format!(
                "memory: the largest bucket ({tokens} tokens) does not fit next to {experts} resident expert(s) in \
                 {:.1} GiB; streaming {k} of {} blocks from host memory (layer_offloading chosen automatically; \
                 set model.layer_offloading to choose yourself)",
                memory_plan::gib(free),
                facts.blocks
            ),
        ),
        Err(needed) => (
            facts.blocks,
            format!(
                "memory: the largest bucket ({tokens} tokens) needs ≈ {:.1} GiB even with every block streamed \
                 from host memory, and {:.1} GiB are free; streaming all {} blocks anyway — expect out-of-memory \
                 errors at that bucket (smaller buckets or fewer frames, model.quantize with qtype uint4, or \
                 model.low_vram help)",
                memory_plan::gib(needed),
                memory_plan::gib(free),
                facts.blocks
            ),
        ),
    };
    Some((
        BlockOffload {
            blocks: blocks as usize,
            ring_slots: AUTO_RING_SLOTS as usize,
        },
        line,
    ))
}

/// A memory budget and simulated out-of-memory errors in place of the device's, for tests of the
/// plan and its fallback on the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemoryOverride {
    /// Bytes a step may use, instead of the measured free memory (the CPU has no limit).
    pub budget: Option<u64>,
    /// A micro-batch whose plan needs more than this many bytes fails after its backward (its
    /// gradients already accumulated) with the error CUDA's allocator raises.
    pub fail_above: Option<u64>,
}

/// The plans of one run.
#[derive(Debug, Default)]
pub(super) struct MemoryPlans {
    override_: MemoryOverride,
    /// Bytes a step may use; `None` until measured, and again after models moved.
    budget: Option<u64>,
    /// The plan of each bucket at the current budget.
    plans: HashMap<BucketShape, PlannedStep>,
    /// The most a bucket's plan may need after a plan that needed more ran out of memory.
    ceilings: HashMap<BucketShape, u64>,
    /// What the log has said already, so each bucket's plan is logged once.
    logged: HashSet<(BucketShape, memory_plan::Plan)>,
}

impl MemoryPlans {
    /// The budget changes where models moved: measure again before the next step.
    pub(super) fn models_moved(&mut self) {
        self.budget = None;
        self.plans.clear();
    }
}

/// Whether `e` is the allocator's out-of-memory error (CUDA's, or the simulated one).
pub(super) fn is_out_of_memory(e: &TrainError) -> bool {
    e.to_string().contains("out of memory")
}

/// The bucket of a micro-batch's model input `[B, C, F, H, W]`.
fn bucket_of(input: &Tensor) -> BucketShape {
    let size: Vec<u64> = input.size().iter().map(|&d| d.max(0) as u64).collect();
    BucketShape {
        batch: size[0],
        latent_frames: size[2],
        latent_height: size[3],
        latent_width: size[4],
    }
}

impl Trainer {
    /// Replaces the measured budget and simulates out-of-memory errors (tests).
    pub fn set_memory_override(&mut self, memory: MemoryOverride) {
        self.memory = MemoryPlans {
            override_: memory,
            ..MemoryPlans::default()
        };
    }

    /// The plan each bucket uses now (auto only).
    pub fn memory_plans(&self) -> Vec<(BucketShape, PlannedStep)> {
        let mut plans: Vec<_> = self.memory.plans.iter().map(|(b, p)| (*b, *p)).collect();
        plans.sort_by_key(|(b, _)| *b);
        plans
    }

    /// What the job fixes: written numbers hold; streamed blocks are never kept (a kept block's
    /// graph would hold its streamed weights beyond the ring).
    fn fixed_checkpointing(&self) -> Fixed {
        let train = &self.job.job.process().train;
        Fixed {
            keep_blocks: train
                .keep_blocks
                .fixed()
                .or(self.load.offload.is_some().then_some(0)),
            keep_attention: train.keep_attention.fixed(),
        }
    }

    fn model_facts(&self, expert: Expert) -> Result<ModelFacts, TrainError> {
        let er = self
            .trained(expert)
            .ok_or_else(|| TrainError::Setup(format!("{} expert is not trained", expert.name())))?;
        Ok(model_facts_for(
            &er.model.config,
            self.kind,
            self.load.fp8,
            er.flat.numel() as u64,
        ))
    }

    /// Bytes a step may use: the override's, the device's free memory, or no limit on the CPU.
    fn measure_budget(&self) -> Result<u64, TrainError> {
        if let Some(budget) = self.memory.override_.budget {
            return Ok(budget);
        }
        match self.device {
            Device::Cuda(i) => {
                // What the allocator caches but does not use counts as free; handing it back first
                // makes the figure the driver's too.
                wanlora_torch::cuda::empty_cache().map_err(|e| TrainError::Setup(e.to_string()))?;
                wanlora_torch::cuda::available_bytes(i)
                    .map_err(|e| TrainError::Setup(e.to_string()))
            }
            _ => Ok(u64::MAX),
        }
    }

    /// The checkpointing of a micro-batch with model input `input`: the job's numbers when it
    /// writes both, otherwise the bucket's plan (made and logged the first time it is needed).
    pub(super) fn checkpoint_policy(
        &mut self,
        expert: Expert,
        input: &Tensor,
    ) -> Result<CheckpointPolicy, TrainError> {
        let train = &self.job.job.process().train;
        if let (Some(keep_blocks), Some(keep_attention)) =
            (train.keep_blocks.fixed(), train.keep_attention.fixed())
        {
            return Ok(CheckpointPolicy {
                keep_blocks: keep_blocks as usize,
                keep_attention: keep_attention as usize,
                host_inputs: false,
            });
        }
        let bucket = bucket_of(input);
        let planned = match self.memory.plans.get(&bucket) {
            Some(p) => *p,
            None => {
                let budget = match self.memory.budget {
                    Some(b) => b,
                    None => {
                        let b = self.measure_budget()?;
                        self.memory.budget = Some(b);
                        b
                    }
                };
                let facts = self.model_facts(expert)?;
                let tokens = facts.tokens(&bucket);
                let limit = self
                    .memory
                    .ceilings
                    .get(&bucket)
                    .map_or(budget, |&c| c.min(budget));
                let choice = memory_plan::choose(&facts, tokens, self.fixed_checkpointing(), limit);
                let step = choice.step;
                if self.memory.logged.insert((bucket, step.plan)) {
                    let free = if budget == u64::MAX {
                        "no device limit".to_string()
                    } else {
                        format!("{:.1} GiB free", memory_plan::gib(budget))
                    };
                    let line = if choice.fits {
                        format!(
                            "memory plan for bucket {bucket} ({tokens} tokens): {}; the step needs ≈ {:.1} GiB, {free}",
                            step.plan,
                            memory_plan::gib(step.needs)
                        )
                    } else {
                        format!(
                            "memory plan for bucket {bucket} ({tokens} tokens): {} needs ≈ {:.1} GiB and only {free}; trying it anyway (lower memory use with model.quantize, layer_offloading or smaller buckets)",
                            step.plan,
                            memory_plan::gib(step.needs)
                        )
                    };
                    self.folder.log(&line);
                }
                self.memory.plans.insert(bucket, step);
                step
            }
        };
        Ok(CheckpointPolicy {
            keep_blocks: planned.plan.keep_blocks as usize,
            keep_attention: planned.plan.keep_attention as usize,
            host_inputs: planned.plan.host_inputs,
        })
    }

    /// The simulated out-of-memory error of [`MemoryOverride::fail_above`], after a micro-batch's
    /// backward.
    pub(super) fn simulated_out_of_memory(&self, input: &Tensor) -> Result<(), TrainError> {
        let (Some(limit), Some(planned)) = (
            self.memory.override_.fail_above,
            self.memory.plans.get(&bucket_of(input)),
        ) else {
            return Ok(());
        };
        if planned.needs > limit {
            return Err(TrainError::Libtorch(format!(
                "CUDA out of memory (simulated: {} needs {} bytes, the test allows {limit})",
                planned.plan, planned.needs
            )));
        }
        Ok(())
    }

    /// After micro-batch `input` of this step ran out of memory with `policy`: drops this step's
    /// gradients, hands cached memory back, and makes the next smaller plan the bucket's. False
    /// when there is none (the job wrote both numbers, or the plan already recomputes everything
    /// it may): the error then stands.
    pub(super) fn fall_back(
        &mut self,
        expert: Expert,
        input: &Tensor,
        policy: CheckpointPolicy,
        error: &TrainError,
    ) -> Result<bool, TrainError> {
        let train = &self.job.job.process().train;
        if train.keep_blocks.fixed().is_some() && train.keep_attention.fixed().is_some() {
            return Ok(false);
        }
        if let Some(er) = self.trained(expert) {
            er.flat.zero_grad();
        }
        if self.device.is_cuda() {
            wanlora_torch::cuda::empty_cache().map_err(|e| TrainError::Setup(e.to_string()))?;
        }
        let failed = memory_plan::Plan {
            keep_blocks: policy.keep_blocks as u32,
            keep_attention: policy.keep_attention as u32,
            host_inputs: policy.host_inputs,
        };
        let bucket = bucket_of(input);
        let facts = self.model_facts(expert)?;
        let tokens = facts.tokens(&bucket);
        let Some(next) =
            memory_plan::next_smaller(&facts, tokens, self.fixed_checkpointing(), failed)
        else {
            return Ok(false);
        };
        self.memory.ceilings.insert(bucket, next.needs);
        self.memory.plans.insert(bucket, next);
        self.memory.logged.insert((bucket, next.plan));
        let detail = error.to_string();
        let line = format!(
            "step {} ran out of memory with {failed} at bucket {bucket}; repeating it with {} (≈ {:.1} GiB): {}",
            self.step,
            next.plan,
            memory_plan::gib(next.needs),
            detail.lines().next().unwrap_or_default()
        );
        self.folder.log(&line);
        eprintln!("warning: {line}");
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = memory_plan::GIB;
    /// 41 frames at 1024²: 11 latent frames × 64 × 64 tokens.
    const TOKENS_1024: u64 = 11 * 64 * 64;

    fn offload(fp8: Fp8Mode, experts: u64, free: u64) -> Option<(BlockOffload, String)> {
        let a14b = TransformerConfig::wan22_i2v_a14b();
        automatic_offload(&a14b, Kind::BFloat16, fp8, 16, experts, TOKENS_1024, free)
    }

    #[test]
    fn an_a14b_expert_weighs_what_the_loaded_one_does() {
        let a14b = TransformerConfig::wan22_i2v_a14b();
        let params = lora_params_at_most(&a14b, 16);
        // Rank 16 on the ten linears of 40 blocks (README: 76.7 M).
        assert_eq!(params, 76_677_120);
        let r = residency_for(&a14b, Kind::BFloat16, Fp8Mode::Off, params, 1);
        // 28.6 GB on disk in bf16 (docs/BENCHMARKS.md, loading an expert).
        let total = 40 * r.block_bytes + r.other_bytes;
        assert!((28.4e9..28.8e9).contains(&(total as f64)), "{total}");
        // fp8: 14.05 GB of block linears; 4-bit: 7.46 GB plus the adapter allowance.
        let fp8 = residency_for(&a14b, Kind::BFloat16, Fp8Mode::Matmul, params, 1);
        assert!((14.0e9..14.3e9).contains(&(40.0 * fp8.block_bytes as f64)));
        let uint4 = residency_for(&a14b, Kind::BFloat16, Fp8Mode::Uint4, params, 1);
        assert!((7.4e9..8.1e9).contains(&(40.0 * uint4.block_bytes as f64)));
    }

    #[test]
    fn streaming_is_chosen_only_where_the_largest_bucket_would_not_fit() {
        // An H200 and a 48 GiB card hold an fp8 expert and the 1024² step: nothing streamed.
        assert!(offload(Fp8Mode::Matmul, 1, 139 * GIB).is_none());
        assert!(offload(Fp8Mode::Matmul, 1, 47 * GIB).is_none());
        // 4-bit weights fit a 24 GB card at 1024² × 41 frames (23.2 GiB measured under a 24 GiB
        // cap, docs/BENCHMARKS.md): with the plan's margin a few blocks stream (three is the least
        // that saves anything beside a ring of two); with 2 GiB more, none.
        let (uint4, _) = offload(Fp8Mode::Uint4, 1, 24 * GIB).unwrap();
        assert!(uint4.blocks <= 4, "{uint4:?}");
        assert!(offload(Fp8Mode::Uint4, 1, 26 * GIB).is_none());
        // fp8 weights do not (13.6 GiB of weights beside a ≈ 14 GiB step): some blocks stream,
        // and the fewer the more memory there is.
        let (at_24, line) = offload(Fp8Mode::Matmul, 1, 24 * GIB).unwrap();
        assert!(at_24.blocks > 0 && at_24.blocks < 40, "{at_24:?}");
        assert!(
            line.contains("streaming") && line.contains("of 40 blocks"),
            "{line}"
        );
        let (at_26, _) = offload(Fp8Mode::Matmul, 1, 26 * GIB).unwrap();
        assert!(at_26.blocks < at_24.blocks);
        // Both experts resident need more streamed than one.
        let (both, _) = offload(Fp8Mode::Matmul, 2, 40 * GIB).unwrap();
        assert!(offload(Fp8Mode::Matmul, 1, 40 * GIB).is_none() && both.blocks > 0);
    }

    #[test]
    fn the_chosen_streaming_is_the_least_that_fits() {
        let a14b = TransformerConfig::wan22_i2v_a14b();
        let params = lora_params_at_most(&a14b, 16);
        let facts = model_facts_for(&a14b, Kind::BFloat16, Fp8Mode::Matmul, params);
        let residency = residency_for(&a14b, Kind::BFloat16, Fp8Mode::Matmul, params, 1);
        for free_gib in [20, 22, 24, 28] {
            let free = free_gib * GIB;
            let (o, _) = offload(Fp8Mode::Matmul, 1, free).unwrap();
            let k = o.blocks as u32;
            assert!(memory_plan::run_needs(&facts, &residency, TOKENS_1024, k) <= free);
            assert!(memory_plan::run_needs(&facts, &residency, TOKENS_1024, k - 1) > free);
        }
        // Too little even with every block streamed: all stream, and the line says what to do.
        let (all, line) = offload(Fp8Mode::Matmul, 1, 12 * GIB).unwrap();
        assert_eq!(all.blocks, 40);
        assert!(
            line.contains("expect out-of-memory") && line.contains("uint4"),
            "{line}"
        );
    }
}
