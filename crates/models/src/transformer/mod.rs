//! One Wan 2.2 transformer (wan-reference.md §1): an A14B expert (I2V or T2V) or the TI2V-5B model —
//! patch embedding, time and text embeddings, the blocks, and the modulated head.
//!
//! The timestep is one per sample (`[B]`), or, for TI2V-5B, one per latent frame (`[B, F]`, or diffusers'
//! per-token `[B, N]` that is constant within each frame): the clean start frame gets 0. Per-frame
//! modulation is applied to the tokens viewed as `[B, F, H·W, D]`, so it costs `[B, F, 6, D]`, never a
//! per-token table.

mod block;
pub mod checkpoint;
mod config;
pub mod naming;
mod rope;
pub mod stream;

pub use block::{
    layer_norm_f32, AttentionMemo, BlockLora, Linear, LoadLinear, TensorMap, WanBlock,
};
pub use config::TransformerConfig;
pub use naming::{transformer_weights, TransformerWeights};
pub use rope::{Grid, Rope};
pub use stream::{BlockOffload, BlockStreamer, HostArena, StreamStats};

use std::cell::Cell;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{Device, Kind, TchError, Tensor};

use crate::error::ModelError;
use crate::lora::LoraApply;
use crate::quant::{check_fp8_matmul, tensor_bytes, Fp8Mode, RecoveredWeight, Weight};
use crate::recovery::RecoveryAdapter;
use crate::uint4::Uint4Weight;
use wanlora_torch::weights::{Loader, WeightSet, WeightSource};

/// How the expert's weights are stored and where they live (README-quant.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadOptions {
    /// Storage of the ten linears of every block (and how they multiply).
    pub fp8: Fp8Mode,
    /// Also store the text embedding and the time projection (≈ 204 M weights of A14B) in fp8.
    pub fp8_embeddings: bool,
    /// Blocks streamed from host memory; `None` keeps every block on the device.
    pub offload: Option<BlockOffload>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            fp8: Fp8Mode::Off,
            fp8_embeddings: false,
            offload: None,
        }
    }
}

/// Bytes of an expert's weights by where they are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WeightBytes {
    /// On the compute device (zero while parked).
    pub device: u64,
    /// In host memory: streamed blocks, and everything while parked.
    pub host: u64,
}

/// One move of an expert between host and device memory.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TransferReport {
    pub bytes: u64,
    pub seconds: f64,
}

impl fmt::Display for TransferReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let gb = self.bytes as f64 / 1e9;
        write!(
            f,
            "{gb:.2} GB in {:.2} s ({:.1} GB/s)",
            self.seconds,
            gb / self.seconds.max(1e-9)
        )
    }
}

/// The weights outside the blocks: the embeddings and the head. They stay on the compute device
/// while the expert is loaded.
struct OuterWeights {
    /// Patch embedding as a dense layer on flattened patches `[D, C·pt·ph·pw]` (a stride-equal Conv3d).
    patch_embedding: Linear,
    text_embedding: (Linear, Linear),
    /// Kept in fp32, as diffusers keeps `time_embedder`.
    time_embedding: (Linear, Linear),
    time_projection: Linear,
    /// `[1, 2, D]` fp32: shift and scale of the head.
    head_modulation: Tensor,
    head: Linear,
}

impl OuterWeights {
    fn map(&self, f: &mut TensorMap) -> Result<OuterWeights, TchError> {
        Ok(OuterWeights {
            patch_embedding: self.patch_embedding.map(f)?,
            text_embedding: (self.text_embedding.0.map(f)?, self.text_embedding.1.map(f)?),
            time_embedding: (self.time_embedding.0.map(f)?, self.time_embedding.1.map(f)?),
            time_projection: self.time_projection.map(f)?,
            head_modulation: f(&self.head_modulation)?,
            head: self.head.map(f)?,
        })
    }

    fn tensors(&self) -> Vec<&Tensor> {
        let mut t: Vec<&Tensor> = [
            &self.patch_embedding,
            &self.text_embedding.0,
            &self.text_embedding.1,
            &self.time_embedding.0,
            &self.time_embedding.1,
            &self.time_projection,
            &self.head,
        ]
        .into_iter()
        .flat_map(Linear::tensors)
        .collect();
        t.push(&self.head_modulation);
        t
    }
}

/// Everything that does not change from block to block in one forward pass.
pub struct Conditions {
    /// Time embedding `e` `[B, D]`, or `[B, F, D]` per latent frame (compute dtype): the head's
    /// modulation input.
    pub temb: Tensor,
    /// Block modulation input `e0 = time_projection(SiLU(e))` as `[B, 6, D]`, or `[B, F, 6, D]` per
    /// latent frame, fp32.
    pub e0: Tensor,
    /// Embedded text `[B, L, D]` (compute dtype).
    pub context: Tensor,
    pub rope: Rope,
    pub grid: Grid,
}

pub struct WanTransformer {
    pub config: TransformerConfig,
    outer: OuterWeights,
    /// The blocks; streamed ones hold their weights in host memory.
    pub blocks: Vec<WanBlock>,
    kind: Kind,
    device: Device,
    fp8: Fp8Mode,
    fp8_embeddings: bool,
    /// Per block: whether its weights live in host memory and are streamed in.
    streamed: Vec<bool>,
    ring_slots: usize,
    /// Every weight is in host memory ([`WanTransformer::offload`]).
    parked: bool,
    last_stream: Cell<Option<StreamStats>>,
    /// Page-locked host memory for the recomputed blocks' inputs between a training forward and
    /// its backward ([`checkpoint::CheckpointPolicy::host_inputs`]), reused from step to step.
    input_stash: std::cell::RefCell<Option<HostArena>>,
}

/// The config.json that belongs to transformer weights at `path`: the one inside a diffusers folder,
/// or one beside a single file (how small and non-standard models give their head dimension).
/// Every command finds a transformer's config by this rule.
pub fn config_file_for(path: &Path) -> Option<PathBuf> {
    let candidate = if path.is_dir() {
        path.join("config.json")
    } else {
        path.parent()?.join("config.json")
    };
    candidate.is_file().then_some(candidate)
}

impl WanTransformer {
    /// Builds the expert from `source` (original names) in `kind` on `device`; `config` is inferred
    /// from the shapes when not given. Every missing or mis-shaped tensor is reported at once.
    pub fn load(
        source: &dyn WeightSource,
        config: Option<TransformerConfig>,
        kind: Kind,
        device: Device,
    ) -> Result<Self, ModelError> {
        Self::load_with(source, config, kind, device, &LoadOptions::default())
    }

    /// [`WanTransformer::load`] with fp8 storage and block streaming as `options` say. Each block
    /// is built (and quantised) on `device`, then moved to host memory if it is streamed, so
    /// loading never holds more than one extra block on the device.
    pub fn load_with(
        source: &dyn WeightSource,
        config: Option<TransformerConfig>,
        kind: Kind,
        device: Device,
        options: &LoadOptions,
    ) -> Result<Self, ModelError> {
        Self::load_blocks_with(source, config, kind, device, options, &|w, i, cfg| {
            WanBlock::load_as(w, i, cfg, options.fp8)
        })
    }

    /// [`WanTransformer::load_with`] with AI Toolkit's 4-bit block linears (README-uint4.md).
    /// With an `adapter` ("4 bit with ARA"), the linears it names are stored in uint4 (where their
    /// inputs split into groups of 64) with the adapter frozen beside them and every other linear
    /// stays in the compute dtype; without one, every block linear that can be is 4-bit. A linear
    /// that `cache` (a file written from [`WanTransformer::uint4_cache_entries`]) holds is taken
    /// from it instead of reading and quantising its weight.
    pub fn load_uint4(
        source: &dyn WeightSource,
        config: TransformerConfig,
        kind: Kind,
        device: Device,
        options: &LoadOptions,
        adapter: Option<&RecoveryAdapter>,
        cache: Option<&WeightSet>,
    ) -> Result<Self, ModelError> {
        let options = LoadOptions {
            fp8: Fp8Mode::Uint4,
            ..*options
        };
        Self::load_blocks_with(
            source,
            Some(config),
            kind,
            device,
            &options,
            &|w, i, cfg| {
                WanBlock::load_with_linears(w, i, cfg, &|w, name, target, inp, out| {
                    let recovery = adapter.map(|a| a.get(i, target));
                    if let Some(None) = recovery {
                        return Linear::load_as(w, name, inp, out, Fp8Mode::Off);
                    }
                    let cached =
                        cache.map(|c| Uint4Weight::from_cache(c, name, [out, inp], device));
                    let base = match cached {
                        Some(Ok(Some(q))) => Linear {
                            weight: Weight::Uint4(q),
                            bias: w.get(&format!("{name}.bias"), &[out]),
                            lora_rows: None,
                        },
                        Some(Err(e)) => {
                            w.fail(e);
                            Linear::load_as(w, name, inp, out, Fp8Mode::Off)
                        }
                        Some(Ok(None)) | None => Linear::load_as(w, name, inp, out, Fp8Mode::Uint4),
                    };
                    match recovery {
                        Some(Some((down, up))) => Linear {
                            weight: Weight::Recovered(Box::new(RecoveredWeight {
                                base: base.weight,
                                down: down.shallow_clone(),
                                up: up.shallow_clone(),
                            })),
                            bias: base.bias,
                            lora_rows: None,
                        },
                        _ => base,
                    }
                })
            },
        )
    }

    /// Every 4-bit block linear's tensors, named for a cache file that
    /// [`WanTransformer::load_uint4`] reads back.
    pub fn uint4_cache_entries(&self) -> Vec<(String, Tensor)> {
        let mut entries = Vec::new();
        for (i, block) in self.blocks.iter().enumerate() {
            for (path, linear) in block.named_linears() {
                let weight = match &linear.weight {
                    Weight::Recovered(r) => &r.base,
                    w => w,
                };
                if let Weight::Uint4(q) = weight {
                    entries.extend(q.cache_entries(&format!("blocks.{i}.{path}")));
                }
            }
        }
        entries
    }

    fn load_blocks_with(
        source: &dyn WeightSource,
        config: Option<TransformerConfig>,
        kind: Kind,
        device: Device,
        options: &LoadOptions,
        load_block: &dyn Fn(&Loader, usize, &TransformerConfig) -> WanBlock,
    ) -> Result<Self, ModelError> {
        let cfg = match config {
            Some(c) => c,
            None => {
                TransformerConfig::infer(source, None).map_err(|reason| ModelError::Config {
                    path: source.describe().into(),
                    reason: format!(
                        "{reason}; {}",
                        naming::shape_hint(source).unwrap_or_default()
                    ),
                })?
            }
        };
        if options.fp8 == Fp8Mode::Matmul {
            check_fp8_matmul(device, kind).map_err(|reason| {
                ModelError::Input(format!(
                    "fp8 matmuls do not run on {device:?} ({reason}); store the weights in fp8 \
                     without fp8 matmuls (fp8 mode `weights`) instead"
                ))
            })?;
        }
        let n = cfg.num_layers as usize;
        let (streamed, ring_slots) = match options.offload {
            Some(o) => (o.streamed(n), o.ring_slots.max(1)),
            None => (vec![false; n], 0),
        };
        let embedding_mode = if options.fp8_embeddings && options.fp8.stores_fp8() {
            options.fp8
        } else {
            Fp8Mode::Off
        };
        let w = Loader::new(source, kind, device);
        let d = cfg.dim();
        let patch_weight = w.get(
            "patch_embedding.weight",
            &[
                d,
                cfg.in_channels,
                cfg.patch_size[0],
                cfg.patch_size[1],
                cfg.patch_size[2],
            ],
        );
        let patch_bias = w.get("patch_embedding.bias", &[d]);
        let f32_linear = |name: &str, inp: i64, out: i64| Linear {
            weight: Weight::Dense(w.get_as(&format!("{name}.weight"), &[out, inp], Kind::Float)),
            bias: w.get_as(&format!("{name}.bias"), &[out], Kind::Float),
            lora_rows: None,
        };
        let time_embedding = (
            f32_linear("time_embedding.0", cfg.freq_dim, d),
            f32_linear("time_embedding.2", d, d),
        );
        let text_embedding = (
            Linear::load_as(&w, "text_embedding.0", cfg.text_dim, d, embedding_mode),
            Linear::load_as(&w, "text_embedding.2", d, d, embedding_mode),
        );
        let time_projection = Linear::load_as(&w, "time_projection.1", d, 6 * d, embedding_mode);
        let mut blocks = Vec::with_capacity(n);
        let mut host = HostArena::new(device);
        for (i, &to_host) in streamed.iter().enumerate() {
            let block = load_block(&w, i, &cfg);
            // A block that failed to load holds placeholders; the loader reports it below.
            let complete = block.tensors().iter().all(|t| t.numel() > 0);
            blocks.push(if to_host && complete {
                stream::to_host(&block, &mut host)?
            } else {
                block
            });
        }
        let head_modulation = w.get_as("head.modulation", &[1, 2, d], Kind::Float);
        let head = Linear::load(&w, "head.head", d, cfg.patch_out());
        w.finish(naming::shape_hint)?;
        // The conv weight is used as a dense layer on flattened patches.
        let patch_embedding = Linear {
            weight: Weight::Dense(patch_weight.reshape([d, -1])),
            bias: patch_bias,
            lora_rows: None,
        };
        Ok(WanTransformer {
            outer: OuterWeights {
                patch_embedding,
                text_embedding,
                time_embedding,
                time_projection,
                head_modulation,
                head,
            },
            blocks,
            config: cfg,
            kind,
            device,
            fp8: options.fp8,
            fp8_embeddings: options.fp8_embeddings,
            streamed,
            ring_slots,
            parked: false,
            last_stream: Cell::new(None),
            input_stash: std::cell::RefCell::new(None),
        })
    }

    /// Opens a diffusers `transformer/` folder (config.json + shards) or a single original/ComfyUI
    /// file (with a config.json beside it if there is one), and loads it.
    pub fn from_path(path: &Path, kind: Kind, device: Device) -> Result<Self, ModelError> {
        Self::from_path_with(path, kind, device, &LoadOptions::default())
    }

    /// [`WanTransformer::from_path`] with fp8 storage and block streaming.
    pub fn from_path_with(
        path: &Path,
        kind: Kind,
        device: Device,
        options: &LoadOptions,
    ) -> Result<Self, ModelError> {
        let weights = transformer_weights(WeightSet::open(path)?)?;
        let cfg = config_file_for(path)
            .map(|c| TransformerConfig::from_json_file(&c))
            .transpose()?;
        Self::load_with(&weights, cfg, kind, device, options)
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The compute device.
    pub fn device(&self) -> Device {
        self.device
    }

    /// How the block linears are stored and multiplied.
    pub fn fp8_mode(&self) -> Fp8Mode {
        self.fp8
    }

    /// Re-stores the block linears (and the fp8 embeddings, if loaded so) as `mode`: quantising
    /// dense weights, dequantising fp8 ones for [`Fp8Mode::Off`], or switching between weight-only
    /// and fp8 matmuls. [`Fp8Mode::Matmul`] is refused where fp8 matmuls do not run.
    pub fn set_fp8_mode(&mut self, mode: Fp8Mode) -> Result<(), ModelError> {
        self.check_loaded()?;
        if (self.fp8 == Fp8Mode::Uint4) != (mode == Fp8Mode::Uint4) {
            return Err(ModelError::Input(format!(
                "the block weights are stored as {}; they cannot be re-stored as {} (load the \
                 model again instead)",
                self.fp8.name(),
                mode.name()
            )));
        }
        if mode == Fp8Mode::Matmul {
            check_fp8_matmul(self.device, self.kind).map_err(|reason| {
                ModelError::Input(format!(
                    "fp8 matmuls do not run on {:?} ({reason}); use fp8 weights only",
                    self.device
                ))
            })?;
        }
        let mut host = HostArena::new(self.device);
        for i in 0..self.blocks.len() {
            if self.is_streamed(i) {
                // Converted on the device, then back to (page-locked) host memory.
                let mut block = self.fetch_block(i)?;
                block.set_fp8_mode(mode, self.kind)?;
                self.blocks[i] = stream::to_host(&block, &mut host)?;
            } else {
                self.blocks[i].set_fp8_mode(mode, self.kind)?;
            }
        }
        if self.fp8_embeddings {
            let outer = &mut self.outer;
            for linear in [
                &mut outer.text_embedding.0,
                &mut outer.text_embedding.1,
                &mut outer.time_projection,
            ] {
                linear.set_mode(mode, self.kind)?;
            }
        }
        self.fp8 = mode;
        Ok(())
    }

    /// Stores every dense block linear with `rank` spare rows, so that a rank-`rank` LoRA's
    /// down-projection runs in the frozen weight's GEMM (crate::lora::fused_lora_enabled says
    /// when); fp8 and 4-bit linears keep the two-pass LoRA. Streamed blocks are converted on the
    /// device and go back to host memory. Returns how many linears took the rows.
    pub fn reserve_lora_rows(&mut self, rank: i64) -> Result<usize, ModelError> {
        self.check_loaded()?;
        let mut host = HostArena::new(self.device);
        let mut reserved = 0;
        for i in 0..self.blocks.len() {
            if self.is_streamed(i) {
                let mut block = self.fetch_block(i)?;
                reserved += block.reserve_lora_rows(rank)?;
                self.blocks[i] = stream::to_host(&block, &mut host)?;
            } else {
                reserved += self.blocks[i].reserve_lora_rows(rank)?;
            }
        }
        Ok(reserved)
    }

    /// Whether block `i`'s weights live in host memory and are streamed in.
    pub fn is_streamed(&self, i: usize) -> bool {
        self.streamed.get(i).copied().unwrap_or(false)
    }

    /// Streamed blocks on the device at once.
    pub fn ring_slots(&self) -> usize {
        self.ring_slots
    }

    /// What the last pass that streamed blocks moved.
    pub fn stream_stats(&self) -> Option<StreamStats> {
        self.last_stream.get()
    }

    pub(crate) fn record_stream_stats(&self, stats: StreamStats) {
        self.last_stream.set(Some(stats));
    }

    /// Where the weights are, in bytes.
    pub fn weight_bytes(&self) -> WeightBytes {
        let mut bytes = WeightBytes::default();
        let outer: u64 = self.outer.tensors().into_iter().map(tensor_bytes).sum();
        *if self.parked {
            &mut bytes.host
        } else {
            &mut bytes.device
        } += outer;
        for (i, block) in self.blocks.iter().enumerate() {
            *if self.parked || self.is_streamed(i) {
                &mut bytes.host
            } else {
                &mut bytes.device
            } += block.bytes();
        }
        bytes
    }

    /// Whether the expert is parked in host memory ([`WanTransformer::offload`]).
    pub fn is_parked(&self) -> bool {
        self.parked
    }

    fn check_loaded(&self) -> Result<(), ModelError> {
        if self.parked {
            Err(ModelError::Input(
                "this expert is parked in host memory (low_vram): call load_to(device) before using it"
                    .into(),
            ))
        } else {
            Ok(())
        }
    }

    /// Parks the whole expert in host memory (page-locked on CUDA) so that the other expert can
    /// use the device (`low_vram`). Streamed blocks are in host memory already and stay as they
    /// are. The time it took is logged and returned.
    pub fn offload(&mut self) -> Result<TransferReport, ModelError> {
        if self.parked {
            return Ok(TransferReport::default());
        }
        let started = Instant::now();
        let compute = self.device;
        let mut bytes = 0u64;
        let mut host = HostArena::new(compute);
        // Device-to-host copies are queued without waiting, then awaited once.
        let mut to_host = |t: &Tensor| -> Result<Tensor, TchError> {
            bytes += tensor_bytes(t);
            host.copy(t, compute.is_cuda())
        };
        let outer = self.outer.map(&mut to_host)?;
        let mut blocks = Vec::with_capacity(self.blocks.len());
        for (i, block) in self.blocks.iter().enumerate() {
            blocks.push(if self.is_streamed(i) {
                block.map_tensors(&mut |t| Ok(t.shallow_clone()))?
            } else {
                block.map_tensors(&mut to_host)?
            });
        }
        synchronize(compute)?;
        self.outer = outer;
        self.blocks = blocks;
        self.parked = true;
        let report = TransferReport {
            bytes,
            seconds: started.elapsed().as_secs_f64(),
        };
        tracing::info!("expert parked in host memory: {report}");
        Ok(report)
    }

    /// Brings a parked expert back onto `device` (which becomes its compute device). The time it
    /// took is logged and returned.
    pub fn load_to(&mut self, device: Device) -> Result<TransferReport, ModelError> {
        if !self.parked {
            if device == self.device {
                return Ok(TransferReport::default());
            }
            return Err(ModelError::Input(format!(
                "the expert computes on {:?}; park it with offload() before moving it to {device:?}",
                self.device
            )));
        }
        let started = Instant::now();
        let mut bytes = 0u64;
        let mut host = HostArena::new(device);
        // From page-locked memory the host-to-device copies run asynchronously; awaited once.
        let mut to_device = |t: &Tensor| -> Result<Tensor, TchError> {
            bytes += tensor_bytes(t);
            t.f_to_device_(device, t.kind(), true, false)
        };
        let outer = self.outer.map(&mut to_device)?;
        let mut blocks = Vec::with_capacity(self.blocks.len());
        for (i, block) in self.blocks.iter().enumerate() {
            blocks.push(match (self.is_streamed(i), device == self.device) {
                (true, true) => block.map_tensors(&mut |t| Ok(t.shallow_clone()))?,
                // Streamed blocks of another device: host memory of the kind that device streams from.
                (true, false) => stream::to_host(block, &mut host)?,
                (false, _) => block.map_tensors(&mut to_device)?,
            });
        }
        synchronize(device)?;
        self.outer = outer;
        self.blocks = blocks;
        self.device = device;
        self.parked = false;
        let report = TransferReport {
            bytes,
            seconds: started.elapsed().as_secs_f64(),
        };
        tracing::info!("expert loaded onto {device:?}: {report}");
        Ok(report)
    }

    /// Block `i`'s weights on the compute device: a copy of a streamed block, or the resident block
    /// itself (shared tensors).
    pub fn fetch_block(&self, i: usize) -> Result<WanBlock, ModelError> {
        self.check_loaded()?;
        let block = self.blocks.get(i).ok_or_else(|| {
            ModelError::Input(format!("block {i}: the model has {}", self.blocks.len()))
        })?;
        let device = self.device;
        Ok(if self.is_streamed(i) {
            block.map_tensors(&mut |t| t.f_to_device_(device, t.kind(), false, true))?
        } else {
            block.map_tensors(&mut |t| Ok(t.shallow_clone()))?
        })
    }

    /// The sinusoid of `t` (float, 0…1000) with `freq_dim` channels, `[cos | sin]`, fp32.
    pub fn timestep_sinusoid(&self, t: &Tensor) -> Tensor {
        let half = self.config.freq_dim / 2;
        let exponent =
            Tensor::arange(half, (Kind::Float, t.device())) * (-(10000f64.ln()) / half as f64);
        let args = t.to_kind(Kind::Float).unsqueeze(1) * exponent.exp().unsqueeze(0);
        Tensor::cat(&[args.cos(), args.sin()], 1)
    }

    /// Whether `timestep` fits `grid`: `[B]` (or `[1]`) per sample, `[B, F]` per latent frame, or
    /// `[B, N]` per token with one value per latent frame (diffusers' TI2V form).
    pub fn check_timestep(&self, timestep: &Tensor, grid: Grid) -> Result<(), ModelError> {
        let s = timestep.size();
        match s.as_slice() {
            [_] => Ok(()),
            [_, f] if *f == grid.frames => Ok(()),
            [b, n] if *n == grid.tokens() => {
                let per_frame = timestep.f_to_kind(Kind::Float)?.f_view([
                    *b,
                    grid.frames,
                    grid.height * grid.width,
                ])?;
                let spread = f64::try_from(
                    (per_frame.f_amax([2], false)? - per_frame.f_amin([2], false)?).f_max()?,
                )?;
                if spread > 0.0 {
                    return Err(ModelError::Input(
                        "per-token timesteps must be equal within each latent frame (TI2V gives the \
                         start frame's tokens 0 and the others t)"
                            .into(),
                    ));
                }
                Ok(())
            }
            _ => Err(ModelError::Input(format!(
                "timestep has shape {s:?}; expected [B], [B, {}] (per latent frame) or [B, {}] \
                 (per token)",
                grid.frames,
                grid.tokens()
            ))),
        }
    }

    /// Time, text and position inputs shared by every block. `timestep` in 0…1000 as
    /// [`Self::check_timestep`] accepts it, `context` `[B, L, text_dim]`.
    pub fn conditions(&self, timestep: &Tensor, context: &Tensor, grid: Grid) -> Conditions {
        let (te0, te2) = &self.outer.time_embedding;
        let d = self.config.dim();
        // Per token (constant within frames) → per frame.
        let timestep = match timestep.size().as_slice() {
            [b, n] if *n == grid.tokens() && grid.height * grid.width > 1 => timestep
                .view([*b, grid.frames, grid.height * grid.width])
                .select(2, 0),
            _ => timestep.shallow_clone(),
        };
        let shape = timestep.size();
        let s = self.timestep_sinusoid(&timestep.flatten(0, -1));
        let temb = te2.forward(&te0.forward(&s).silu()).to_kind(self.kind);
        let e0 = self.outer.time_projection.forward(&temb.silu());
        let e0 = e0.to_kind(Kind::Float);
        let (temb, e0) = match shape.as_slice() {
            [b, f] => (temb.view([*b, *f, d]), e0.view([*b, *f, 6, d])),
            _ => (temb, e0.view([shape[0], 6, d])),
        };
        let (t0, t2) = &self.outer.text_embedding;
        let context = t2.forward(&t0.forward(&context.to_kind(self.kind)).gelu("tanh"));
        let rope = Rope::new(
            grid,
            self.config.attention_head_dim,
            self.config.rope_axes(),
            self.device,
        )
        .in_kind(self.kind);
        Conditions {
            temb,
            e0,
            context,
            rope,
            grid,
        }
    }

    /// The token grid for an input `[B, C, T, H, W]`, checking divisibility by the patch size.
    pub fn grid(&self, x: &Tensor) -> Result<Grid, ModelError> {
        let s = x.size();
        let [pt, ph, pw] = self.config.patch_size;
        if s.len() != 5 || s[1] != self.config.in_channels {
            return Err(ModelError::Input(format!(
                "transformer input has shape {s:?}; expected [B, {}, T, H, W]",
                self.config.in_channels
            )));
        }
        if s[2] % pt != 0 || s[3] % ph != 0 || s[4] % pw != 0 {
            return Err(ModelError::Input(format!(
                "latent size {}×{}×{} is not divisible by the patch size {pt}×{ph}×{pw}",
                s[2], s[3], s[4]
            )));
        }
        Ok(Grid {
            frames: s[2] / pt,
            height: s[3] / ph,
            width: s[4] / pw,
        })
    }

    /// `[B, C, T, H, W]` → tokens `[B, N, D]` in (f, h, w) row-major order.
    pub fn patchify(&self, x: &Tensor, grid: Grid) -> Tensor {
        let b = x.size()[0];
        let c = self.config.in_channels;
        let [pt, ph, pw] = self.config.patch_size;
        let patches = x
            .to_kind(self.kind)
            .view([b, c, grid.frames, pt, grid.height, ph, grid.width, pw].as_slice())
            .permute([0, 2, 4, 6, 1, 3, 5, 7])
            .reshape([b, grid.tokens(), c * pt * ph * pw]);
        self.outer.patch_embedding.forward(&patches)
    }

    /// Modulated head and unpatchify: tokens `[B, N, D]` → velocity `[B, C_out, T, H, W]` (fp32).
    pub fn head(&self, x: &Tensor, cond: &Conditions) -> Tensor {
        let temb = cond.temb.to_kind(Kind::Float);
        let g = cond.grid;
        let b = x.size()[0];
        let h = if temb.dim() == 3 {
            // Per latent frame: [1, 1, 2, D] + [B, F, 1, D] on the tokens as [B, F, H·W, D].
            let m = (self.outer.head_modulation.unsqueeze(0) + temb.unsqueeze(2)).chunk(2, 2);
            let (shift, scale) = (&m[0], &m[1]);
            let frames = x.view([b, g.frames, g.height * g.width, self.config.dim()]);
            (layer_norm_f32(&frames, self.config.eps) * (scale + 1.0) + shift)
                .to_kind(self.kind)
                .view([b, g.tokens(), self.config.dim()])
        } else {
            let m = (&self.outer.head_modulation + temb.unsqueeze(1)).chunk(2, 1);
            let (shift, scale) = (&m[0], &m[1]);
            (layer_norm_f32(x, self.config.eps) * (scale + 1.0) + shift).to_kind(self.kind)
        };
        let out = self.outer.head.forward(&h);
        let [pt, ph, pw] = self.config.patch_size;
        let c = self.config.out_channels;
        out.view([b, g.frames, g.height, g.width, pt, ph, pw, c].as_slice())
            .permute([0, 7, 1, 4, 2, 5, 3, 6])
            .reshape([b, c, g.frames * pt, g.height * ph, g.width * pw])
            .to_kind(Kind::Float)
    }

    /// Runs block `i` (a streamed block is copied to the device for this call; passes over many
    /// blocks use a [`BlockStreamer`] instead). Panics like a libtorch op if that copy fails.
    pub fn block(
        &self,
        i: usize,
        x: &Tensor,
        cond: &Conditions,
        lora: Option<&LoraApply>,
    ) -> Tensor {
        if self.is_streamed(i) {
            let fetched = self
                .fetch_block(i)
                .unwrap_or_else(|e| panic!("copying block {i} to the device: {e}"));
            self.block_with(&fetched, i, x, cond, lora)
        } else {
            self.block_with(&self.blocks[i], i, x, cond, lora)
        }
    }

    /// Runs block `i` with the given weights (from a [`BlockStreamer`] or [`Self::fetch_block`]).
    pub fn block_with(
        &self,
        weights: &WanBlock,
        i: usize,
        x: &Tensor,
        cond: &Conditions,
        lora: Option<&LoraApply>,
    ) -> Tensor {
        self.block_with_memo(weights, i, x, cond, lora, AttentionMemo::Compute)
    }

    /// [`Self::block_with`], recording or replaying the self-attention (checkpointed training).
    pub fn block_with_memo(
        &self,
        weights: &WanBlock,
        i: usize,
        x: &Tensor,
        cond: &Conditions,
        lora: Option<&LoraApply>,
        memo: AttentionMemo,
    ) -> Tensor {
        weights.forward(
            x,
            &cond.e0,
            &cond.context,
            &cond.rope,
            BlockLora {
                block: i,
                apply: lora,
            },
            memo,
        )
    }

    /// The whole forward pass: `hidden_states` `[B, C_in, T, H, W]`, `timestep` `[B]` or `[1]` for the
    /// whole batch (0…1000), or per latent frame ([`Self::check_timestep`]),
    /// `context` `[B, L, text_dim]` → velocity `[B, 16, T, H, W]` in fp32. Autograd records it when
    /// grad mode is on (use [`checkpoint`] for training: with streamed blocks a graph over the whole
    /// pass keeps every fetched block alive).
    pub fn forward(
        &self,
        hidden_states: &Tensor,
        timestep: &Tensor,
        context: &Tensor,
        lora: Option<&LoraApply>,
    ) -> Result<Tensor, ModelError> {
        self.check_loaded()?;
        let grid = self.grid(hidden_states)?;
        self.check_timestep(timestep, grid)?;
        let cond = self.conditions(timestep, context, grid);
        let mut x = self.patchify(hidden_states, grid);
        let n = self.blocks.len();
        let mut blocks = BlockStreamer::new(self, (0..n).collect())?;
        for i in 0..n {
            x = self.block_with(blocks.block(i)?, i, &x, &cond, lora);
        }
        Ok(self.head(&x, &cond))
    }
}

/// Waits for the device's queued work (a no-op on the CPU).
fn synchronize(device: Device) -> Result<(), ModelError> {
    if let Device::Cuda(i) = device {
        wanlora_torch::cuda::synchronize(i).map_err(|e| TchError::Torch(e.to_string()))?;
    }
    Ok(())
}
