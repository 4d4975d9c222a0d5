//! Block streaming (layer offloading): the weights of some blocks live in host memory (pinned on
//! CUDA) and are copied to the compute device just before use, on a side stream, while the blocks
//! before them compute.
//!
//! A pass declares the order in which it visits blocks (its schedule): `0..n` for a forward,
//! `0..n` then `k-1..0` for the checkpointed training step, which recomputes the first `k` blocks
//! backwards. Knowing the schedule, the streamer keeps at most `ring_slots` streamed blocks on the
//! device: the one in use and the next ones in the schedule, fetched ahead. When a slot is needed it
//! gives up the block whose next use is farthest away, so a block used again soon (the last blocks
//! of the forward, which the backward starts with) is not copied twice.
//!
//! Safety with the caching allocator: a fetched block's tensors are allocated on the copy stream
//! and used on the compute stream; `record_stream` on the compute stream keeps their memory from
//! being reused before the compute stream has finished with them, and an event recorded after the
//! copies makes the compute stream wait for the data (on the device, not the host). Autograd graphs
//! that hold a fetched tensor keep it alive by reference; the ring only bounds what the streamer
//! itself holds.

use std::time::Instant;
use tch::{Device, TchError, Tensor};

use super::block::WanBlock;
use super::WanTransformer;
use crate::error::ModelError;
use wanlora_torch::cuda::{Event, HelperError, Stream};

/// Which blocks are streamed from host memory and how many the device holds at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockOffload {
    /// Blocks whose weights live in host memory, spread evenly over the depth.
    pub blocks: usize,
    /// Streamed blocks on the device at once: the one computing and those fetched ahead (≥ 1;
    /// 2 overlaps each copy with one block of compute).
    pub ring_slots: usize,
}

impl BlockOffload {
    /// Streams `percent` (0–100) of `num_blocks`, AI Toolkit's
    /// `layer_offloading_transformer_percent`: the rest stay resident.
    pub fn from_percent(
        percent: f64,
        num_blocks: usize,
        ring_slots: usize,
    ) -> Result<BlockOffload, String> {
        if !(0.0..=100.0).contains(&percent) {
            return Err(format!(
                "the offloaded share of blocks is {percent}%; give a value from 0 to 100"
            ));
        }
        Ok(BlockOffload {
            blocks: (percent / 100.0 * num_blocks as f64).round() as usize,
            ring_slots,
        })
    }

    /// For each of `num_blocks` blocks, whether it is streamed: `blocks` of them spread evenly, so
    /// that resident blocks give the copies time to catch up all along the pass.
    pub fn streamed(&self, num_blocks: usize) -> Vec<bool> {
        let n = num_blocks.max(1);
        let s = self.blocks.min(num_blocks);
        // Block i is streamed when ⌊(i+1)·s/n⌋ steps past ⌊i·s/n⌋: s of n, evenly spaced.
        (0..num_blocks)
            .map(|i| (i + 1) * s / n > i * s / n)
            .collect()
    }
}

/// What one pass moved.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StreamStats {
    /// Blocks copied from host memory.
    pub fetches: usize,
    pub bytes: u64,
    /// The most streamed blocks held at once (never more than `slots`).
    pub max_held: usize,
    pub slots: usize,
    /// Host seconds spent issuing copies (on CUDA the copies themselves run asynchronously).
    pub issue_seconds: f64,
}

/// How blocks get to the compute device.
enum Copier {
    /// Side-stream copies from pinned memory, ordered by events.
    Cuda {
        device: usize,
        copy: Stream,
        compute: Stream,
    },
    /// A plain synchronous copy (the CPU as both host and device, in tests).
    Synchronous { device: Device },
}

impl Copier {
    fn new(device: Device) -> Result<Copier, HelperError> {
        Ok(match device {
            Device::Cuda(i) => Copier::Cuda {
                device: i,
                copy: Stream::from_pool(i, false)?,
                compute: Stream::current(i)?,
            },
            other => Copier::Synchronous { device: other },
        })
    }

    /// A device copy of `host`, and the event that marks its data ready (CUDA).
    fn fetch(&self, host: &WanBlock) -> Result<(WanBlock, Option<Event>), ModelError> {
        match self {
            Copier::Cuda {
                device,
                copy,
                compute,
            } => {
                let target = Device::Cuda(*device);
                let block = copy
                    .scope(|| {
                        host.map_tensors(&mut |t| t.f_to_device_(target, t.kind(), true, false))
                    })
                    .map_err(helper_error)??;
                for t in block.tensors() {
                    compute.record_tensor(t).map_err(helper_error)?;
                }
                let ready = Event::new().map_err(helper_error)?;
                ready.record(copy).map_err(helper_error)?;
                Ok((block, Some(ready)))
            }
            Copier::Synchronous { device } => {
                let block =
                    host.map_tensors(&mut |t| t.f_to_device_(*device, t.kind(), false, true))?;
                Ok((block, None))
            }
        }
    }

    /// Makes the compute stream wait for `ready`.
    fn wait(&self, ready: &Event) -> Result<(), ModelError> {
        match self {
            Copier::Cuda { compute, .. } => ready.block(compute).map_err(helper_error),
            Copier::Synchronous { .. } => Ok(()),
        }
    }
}

struct Slot {
    block: usize,
    weights: WanBlock,
    ready: Option<Event>,
}

/// Hands out the blocks of one pass in schedule order, fetching streamed ones ahead of use.
pub struct BlockStreamer<'m> {
    model: &'m WanTransformer,
    schedule: Vec<usize>,
    /// Index of the next schedule entry.
    position: usize,
    slots: usize,
    ring: Vec<Slot>,
    /// `None` when no block of the model is streamed.
    copier: Option<Copier>,
    stats: StreamStats,
}

impl<'m> BlockStreamer<'m> {
    /// A streamer for visiting `model`'s blocks in `schedule` order.
    pub fn new(model: &'m WanTransformer, schedule: Vec<usize>) -> Result<Self, ModelError> {
        let n = model.blocks.len();
        if let Some(&bad) = schedule.iter().find(|&&b| b >= n) {
            return Err(ModelError::Input(format!(
                "block schedule names block {bad}; the model has {n}"
            )));
        }
        let slots = model.ring_slots().max(1);
        let copier = if (0..n).any(|i| model.is_streamed(i)) {
            Some(Copier::new(model.device()).map_err(helper_error)?)
        } else {
            None
        };
        Ok(BlockStreamer {
            model,
            schedule,
            position: 0,
            slots,
            ring: Vec::with_capacity(slots),
            copier,
            stats: StreamStats {
                slots,
                ..StreamStats::default()
            },
        })
    }

    /// The weights of block `index`, which must be the next entry of the schedule. Resident blocks
    /// come from the model; streamed ones from the ring, ready on the compute stream.
    pub fn block(&mut self, index: usize) -> Result<&WanBlock, ModelError> {
        let expected = self.schedule.get(self.position).copied();
        if expected != Some(index) {
            return Err(ModelError::Input(format!(
                "block {index} requested at step {} of the block schedule, which expects {expected:?}",
                self.position
            )));
        }
        let now = self.position;
        self.position += 1;
        if self.model.is_streamed(index) {
            self.ensure(index, now, index)?;
        }
        self.prefetch(index)?;
        if !self.model.is_streamed(index) {
            return Ok(&self.model.blocks[index]);
        }
        let Some(slot) = self.ring.iter().find(|s| s.block == index) else {
            return Err(ModelError::Input(format!(
                "block {index} did not get a ring slot ({} slots)",
                self.slots
            )));
        };
        if let (Some(ready), Some(copier)) = (&slot.ready, &self.copier) {
            copier.wait(ready)?;
        }
        Ok(&slot.weights)
    }

    /// Streamed blocks held now.
    pub fn held(&self) -> usize {
        self.ring.len()
    }

    pub fn stats(&self) -> StreamStats {
        self.stats
    }

    /// The schedule position of `block`'s next use from the current position on.
    fn next_use(&self, block: usize) -> Option<usize> {
        self.schedule[self.position..]
            .iter()
            .position(|&b| b == block)
            .map(|p| p + self.position)
    }

    /// Puts `block` (needed at schedule position `needed_at`) in the ring unless it is there,
    /// freeing the slot used farthest in the future if that is later than `needed_at`; never the
    /// slot of `current`. Returns whether the block is in the ring.
    fn ensure(
        &mut self,
        block: usize,
        needed_at: usize,
        current: usize,
    ) -> Result<bool, ModelError> {
        if self.ring.iter().any(|s| s.block == block) {
            return Ok(true);
        }
        if self.ring.len() >= self.slots {
            let victim = self
                .ring
                .iter()
                .enumerate()
                .filter(|(_, s)| s.block != current)
                .map(|(k, s)| (k, self.next_use(s.block).unwrap_or(usize::MAX)))
                .max_by_key(|&(_, next)| next);
            match victim {
                Some((k, next)) if next > needed_at => {
                    // Dropping the tensors is safe: they were recorded on the compute stream.
                    self.ring.swap_remove(k);
                }
                _ => return Ok(false),
            }
        }
        let Some(copier) = &self.copier else {
            return Err(ModelError::Input(format!(
                "block {block} is not streamed; nothing to fetch"
            )));
        };
        let started = Instant::now();
        let host = &self.model.blocks[block];
        let (weights, ready) = copier.fetch(host)?;
        self.stats.issue_seconds += started.elapsed().as_secs_f64();
        self.stats.fetches += 1;
        self.stats.bytes += host.bytes();
        self.ring.push(Slot {
            block,
            weights,
            ready,
        });
        self.stats.max_held = self.stats.max_held.max(self.ring.len());
        Ok(true)
    }

    /// Fetches the streamed blocks of the next schedule entries into the free slots.
    fn prefetch(&mut self, current: usize) -> Result<(), ModelError> {
        let mut ahead = Vec::with_capacity(self.slots);
        for p in self.position..self.schedule.len() {
            if ahead.len() + 1 >= self.slots {
                break;
            }
            let b = self.schedule[p];
            if b == current || !self.model.is_streamed(b) || ahead.contains(&b) {
                continue;
            }
            ahead.push(b);
            if !self.ensure(b, p, current)? {
                break;
            }
        }
        Ok(())
    }
}

impl Drop for BlockStreamer<'_> {
    fn drop(&mut self) {
        if self.stats.fetches > 0 {
            self.model.record_stream_stats(self.stats);
        }
    }
}

/// Host memory for many tensors, carved out of chunks of one power-of-two size: page-locked when
/// the model computes on CUDA (so that copies to the device run asynchronously), plain memory on the
/// CPU. libtorch's pinned allocator rounds every allocation up to a power of two — a 70.8 MB fp8 FFN
/// weight would take 128 MiB, a streamed A14B expert 21 GB instead of 14 — so tensors share chunks.
/// Each tensor is a view of its chunk, which lives as long as any of its tensors.
pub struct HostArena {
    compute: Device,
    chunk_bytes: i64,
    chunks: Vec<Chunk>,
}

struct Chunk {
    bytes: Tensor,
    used: i64,
}

/// Tensors start at multiples of this many bytes within a chunk.
const ALIGNMENT: i64 = 256;

impl HostArena {
    /// 512 MiB chunks: every tensor of the A14B transformer fits in one.
    pub const CHUNK_BYTES: i64 = 512 << 20;

    pub fn new(compute: Device) -> HostArena {
        HostArena::with_chunk_bytes(compute, Self::CHUNK_BYTES)
    }

    pub fn with_chunk_bytes(compute: Device, chunk_bytes: i64) -> HostArena {
        HostArena {
            compute,
            chunk_bytes,
            chunks: Vec::new(),
        }
    }

    /// A copy of `t` in the arena. With `non_blocking` a device-to-host copy is only queued on the
    /// current stream: synchronise before reading it.
    pub fn copy(&mut self, t: &Tensor, non_blocking: bool) -> Result<Tensor, TchError> {
        let kind = t.kind();
        let bytes = (t.numel() * kind.elt_size_in_bytes()) as i64;
        let chunk = match self
            .chunks
            .iter()
            .position(|c| c.bytes.numel() as i64 - c.used >= bytes)
        {
            Some(k) => k,
            None => {
                let size = bytes.max(self.chunk_bytes);
                let memory = if self.compute.is_cuda() {
                    wanlora_torch::cuda::empty_pinned(size)
                        .map_err(|e| TchError::Torch(e.to_string()))?
                } else {
                    Tensor::f_empty([size], (tch::Kind::Uint8, Device::Cpu))?
                };
                self.chunks.push(Chunk {
                    bytes: memory,
                    used: 0,
                });
                self.chunks.len() - 1
            }
        };
        let chunk = &mut self.chunks[chunk];
        let mut view = chunk
            .bytes
            .f_narrow(0, chunk.used, bytes)?
            .f_view_dtype(kind)?
            .f_view(t.size().as_slice())?;
        chunk.used = (chunk.used + bytes + ALIGNMENT - 1) / ALIGNMENT * ALIGNMENT;
        wanlora_torch::cuda::copy_into(&mut view, t, non_blocking)
            .map_err(|e| TchError::Torch(e.to_string()))?;
        Ok(view)
    }

    /// Makes every chunk free again for new copies (the tensors handed out before must no longer
    /// be read: their memory is reused).
    pub fn reuse(&mut self) {
        for chunk in &mut self.chunks {
            chunk.used = 0;
        }
    }

    /// Bytes of all chunks.
    pub fn reserved_bytes(&self) -> i64 {
        self.chunks.iter().map(|c| c.bytes.numel() as i64).sum()
    }

    /// Chunks allocated so far.
    pub fn chunks(&self) -> usize {
        self.chunks.len()
    }
}

/// A copy of `block` in host memory from `arena` (see [`HostArena`]).
pub(crate) fn to_host(block: &WanBlock, arena: &mut HostArena) -> Result<WanBlock, ModelError> {
    Ok(block.map_tensors(&mut |t| arena.copy(t, false))?)
}

/// The helper's error as the model crate's (streams, events, copies).
pub(super) fn helper_error(e: HelperError) -> ModelError {
    ModelError::Torch(TchError::Torch(e.to_string()))
}
