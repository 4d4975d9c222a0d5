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
//!
//! With `host_inputs`, the recomputed blocks' inputs (one activation per block, ≈ 18 GB at 1024² ×
//! 41 frames) wait in page-locked host memory: each is copied out on a side stream as the forward
//! makes it, and fetched back one block ahead of the backward, so the copies overlap compute.

use std::cell::RefMut;
use tch::{Device, Tensor};

use super::stream::helper_error;
use super::{AttentionMemo, BlockStreamer, HostArena, WanTransformer};
use crate::error::ModelError;
use crate::lora::LoraApply;
use wanlora_torch::cuda::{Event, Stream};

/// How many blocks keep their activations instead of being recomputed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckpointPolicy {
    pub keep_blocks: usize,
    /// How many of the recomputed blocks keep their self-attention output (each costs `B·N·D`
    /// compute-dtype elements): the last ones before the kept blocks, whose recompute comes first.
    pub keep_attention: usize,
    /// Keep the recomputed blocks' inputs in page-locked host memory instead of on the device.
    pub host_inputs: bool,
}

/// The CUDA streams of host-stashed inputs: copies run on their own stream, compute waits for them.
struct Copies {
    device: Device,
    copy: Stream,
    compute: Stream,
}

/// The recomputed blocks' inputs between the forward and the backward, in order of the blocks.
enum SavedInputs<'m> {
    Device(Vec<Tensor>),
    Host {
        arena: RefMut<'m, HostArena>,
        host: Vec<Tensor>,
        /// `None` on the CPU, where the copies are plain copies.
        cuda: Option<Copies>,
        /// An input fetched ahead: (block, device tensor, its copy's completion).
        ahead: Option<(usize, Tensor, Option<Event>)>,
    },
}

impl<'m> SavedInputs<'m> {
    fn new(model: &'m WanTransformer, on_host: bool, capacity: usize) -> Result<Self, ModelError> {
        if !on_host {
            return Ok(SavedInputs::Device(Vec::with_capacity(capacity)));
        }
        let device = model.device();
        let cuda = match device {
            Device::Cuda(i) => Some(Copies {
                device,
                copy: Stream::from_pool(i, false).map_err(helper_error)?,
                compute: Stream::current(i).map_err(helper_error)?,
            }),
            _ => None,
        };
        let mut slot = model.input_stash.borrow_mut();
        slot.get_or_insert_with(|| HostArena::new(device)).reuse();
        let arena = RefMut::map(slot, |a| a.as_mut().expect("made just above"));
        Ok(SavedInputs::Host {
            arena,
            host: Vec::with_capacity(capacity),
            cuda,
            ahead: None,
        })
    }

    /// Keeps block `len()`'s input.
    fn push(&mut self, x: Tensor) -> Result<(), ModelError> {
        match self {
            SavedInputs::Device(saved) => saved.push(x),
            SavedInputs::Host {
                arena, host, cuda, ..
            } => match cuda {
                Some(c) => {
                    // The copy stream starts once the compute stream has made `x`; the allocator
                    // keeps `x`'s memory until the copy stream is done with it.
                    let made = Event::new().map_err(helper_error)?;
                    made.record(&c.compute).map_err(helper_error)?;
                    made.block(&c.copy).map_err(helper_error)?;
                    let on_host = c
                        .copy
                        .scope(|| arena.copy(&x, true))
                        .map_err(helper_error)??;
                    c.copy.record_tensor(&x).map_err(helper_error)?;
                    host.push(on_host);
                }
                None => host.push(arena.copy(&x, false)?),
            },
        }
        Ok(())
    }

    /// The last kept input on the device (removed from the store), with the one before it
    /// already on its way.
    fn pop(&mut self) -> Result<Option<Tensor>, ModelError> {
        match self {
            SavedInputs::Device(saved) => Ok(saved.pop()),
            SavedInputs::Host {
                host, cuda, ahead, ..
            } => {
                let Some(i) = host.len().checked_sub(1) else {
                    return Ok(None);
                };
                let (tensor, ready) = match ahead.take() {
                    Some((b, t, ready)) if b == i => (t, ready),
                    _ => Self::fetch(&host[i], cuda.as_ref())?,
                };
                host.pop();
                if let Some(before) = host.len().checked_sub(1) {
                    let (t, r) = Self::fetch(&host[before], cuda.as_ref())?;
                    *ahead = Some((before, t, r));
                }
                if let (Some(ready), Some(c)) = (&ready, cuda.as_ref()) {
                    ready.block(&c.compute).map_err(helper_error)?;
                }
                Ok(Some(tensor))
            }
        }
    }

    /// A device copy of a host-stashed input, queued on the copy stream.
    fn fetch(host: &Tensor, cuda: Option<&Copies>) -> Result<(Tensor, Option<Event>), ModelError> {
        match cuda {
            Some(c) => {
                let t = c
                    .copy
                    .scope(|| host.f_to_device_(c.device, host.kind(), true, false))
                    .map_err(helper_error)??;
                c.compute.record_tensor(&t).map_err(helper_error)?;
                let ready = Event::new().map_err(helper_error)?;
                ready.record(&c.copy).map_err(helper_error)?;
                Ok((t, Some(ready)))
            }
            None => Ok((
                host.f_to_device_(Device::Cpu, host.kind(), false, true)?,
                None,
            )),
        }
    }
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
    let mut saved = SavedInputs::new(model, policy.host_inputs, first_kept)?;
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
            saved.push(std::mem::replace(&mut x, next))?;
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
    for i in (0..first_kept).rev() {
        let input = saved
            .pop()?
            .ok_or_else(|| ModelError::Input(format!("block {i}: its saved input is missing")))?;
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
