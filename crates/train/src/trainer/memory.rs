//! `keep_blocks` / `keep_attention: auto`: the checkpointing of each bucket from the memory plan
//! (crate::memory_plan). The budget is the device memory a step may use, measured before the first
//! step and again whenever models moved (the idle expert parked or loaded, previews); the plan of
//! each bucket is remembered and logged once; a step that still runs out of memory falls back to a
//! smaller plan for its bucket and is repeated with the same data (see `Trainer::train_step`).

use super::*;
use crate::memory_plan::{self, BucketShape, Fixed, ModelFacts, PlannedStep, WeightStorage};
use std::collections::HashSet;

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
        let c = &er.model.config;
        Ok(ModelFacts {
            dim: c.dim() as u64,
            ffn_dim: c.ffn_dim as u64,
            heads: c.num_attention_heads as u64,
            blocks: c.num_layers as u32,
            patch: c.patch_size.map(|p| p as u64),
            dtype_bytes: self.kind.elt_size_in_bytes() as u64,
            storage: match self.load.fp8 {
                Fp8Mode::Off => WeightStorage::Dense,
                Fp8Mode::Matmul => WeightStorage::Fp8Matmul,
                Fp8Mode::WeightOnly | Fp8Mode::Uint4 => WeightStorage::Dequantised,
            },
            lora_params: er.flat.numel() as u64,
        })
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
                    eprintln!("{line}");
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
