//! Training forward and backward with block-level gradient checkpointing written by hand
//! (rust-stack.md §1c): the forward runs without a graph and keeps only each block's input; the
//! backward recomputes one block at a time with a graph and backpropagates the incoming gradient
//! through it. The last `keep_blocks` blocks keep their graphs from the forward instead. Up to
//! `keep_attention` of the recomputed blocks also keep their self-attention output and softmax
//! statistics from the forward (one activation-sized tensor per block), so their recompute skips
//! attention's forward: the largest kernel of a block at long sequence lengths.
//!
//! Streamed blocks (layer offloading) come from a [`BlockStreamer`] that knows this order: forward
//! `0..n`, then the recomputed blocks `k-1..0`.

use tch::Tensor;

use super::{AttentionMemo, BlockStreamer, WanTransformer};
use crate::error::ModelError;
use crate::lora::LoraApply;

/// How many blocks keep their activations instead of being recomputed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckpointPolicy {
    pub keep_blocks: usize,
    /// How many of the recomputed blocks keep their self-attention output (each costs `B·N·D`
    /// compute-dtype elements): the last ones before the kept blocks, whose recompute comes first.
    pub keep_attention: usize,
}

/// One training forward and backward. `loss_fn` receives the prediction (fp32, part of the graph)
/// and returns a scalar loss; LoRA gradients accumulate into the adapters' `.grad()`. Returns the
/// detached loss.
pub fn forward_backward(
    model: &WanTransformer,
    hidden_states: &Tensor,
    timestep: &Tensor,
    context: &Tensor,
    lora: &LoraApply,
    policy: CheckpointPolicy,
    loss_fn: impl FnOnce(&Tensor) -> Result<Tensor, ModelError>,
) -> Result<Tensor, ModelError> {
    if model.is_parked() {
        return Err(ModelError::Input(
            "this expert is parked in host memory (low_vram): call load_to(device) before training it"
                .into(),
        ));
    }
    let grid = model.grid(hidden_states)?;
    model.check_timestep(timestep, grid)?;
    let n = model.blocks.len();
    let first_kept = n - policy.keep_blocks.min(n);
    let schedule = (0..n).chain((0..first_kept).rev()).collect();
    let mut blocks = BlockStreamer::new(model, schedule)?;

    // Inputs of the blocks and everything shared by them: no LoRA there, so no graph.
    let (cond, mut x) = tch::no_grad(|| {
        (
            model.conditions(timestep, context, grid),
            model.patchify(hidden_states, grid),
        )
    });
    let mut saved = Vec::with_capacity(first_kept);
    let mut attention = Vec::with_capacity(first_kept);
    let first_recorded = first_kept - policy.keep_attention.min(first_kept);
    tch::no_grad(|| -> Result<(), ModelError> {
        for i in 0..first_kept {
            let mut record = None;
            let memo = if i >= first_recorded {
                AttentionMemo::Record(&mut record)
            } else {
                AttentionMemo::Compute
            };
            let next = model.block_with_memo(blocks.block(i)?, i, &x, &cond, Some(lora), memo);
            saved.push(std::mem::replace(&mut x, next));
            attention.push(record);
        }
        Ok(())
    })?;

    // The kept blocks and the head run with a graph from a leaf at the boundary.
    let boundary = x.detach().set_requires_grad(true);
    let mut y = boundary.shallow_clone();
    for i in first_kept..n {
        y = model.block_with(blocks.block(i)?, i, &y, &cond, Some(lora));
    }
    let prediction = model.head(&y, &cond);
    drop(y);
    let loss = loss_fn(&prediction)?;
    drop(prediction);
    loss.f_backward()?;
    let mut grad = boundary.grad();
    drop(boundary);

    // Recompute each remaining block with a graph, backpropagate `grad` through it, and hand the
    // gradient of its input to the block before.
    while let Some(input) = saved.pop() {
        let i = saved.len();
        let input = input.set_requires_grad(true);
        let record = attention.pop().flatten();
        let memo = match &record {
            Some(r) => AttentionMemo::Replay(r),
            None => AttentionMemo::Compute,
        };
        let output = model.block_with_memo(blocks.block(i)?, i, &input, &cond, Some(lora), memo);
        drop(record);
        wanlora_torch::cuda::backward_with_grad(&output, &grad)
            .map_err(|e| tch::TchError::Torch(e.to_string()))?;
        grad = input.grad();
    }
    Ok(loss.detach())
}
