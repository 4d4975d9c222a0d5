//! One Wan 2.2 I2V A14B expert (wan-reference.md §1): patch embedding, time and text embeddings,
//! 40 blocks, and the modulated head.

mod block;
pub mod checkpoint;
mod config;
pub mod naming;
mod rope;

pub use block::{layer_norm_f32, BlockLora, Linear, WanBlock};
pub use config::TransformerConfig;
pub use naming::TransformerWeights;
pub use rope::{Grid, Rope};

use std::path::Path;
use tch::{Device, Kind, Tensor};

use crate::error::ModelError;
use crate::lora::LoraApply;
use wanlora_torch::weights::{Loader, WeightSet, WeightSource};

/// Everything that does not change from block to block in one forward pass.
pub struct Conditions {
    /// Time embedding `e` `[B, D]` (compute dtype): the head's modulation input.
    pub temb: Tensor,
    /// Block modulation input `e0 = time_projection(SiLU(e))` as `[B, 6, D]` fp32.
    pub e0: Tensor,
    /// Embedded text `[B, L, D]` (compute dtype).
    pub context: Tensor,
    pub rope: Rope,
    pub grid: Grid,
    /// Every sample has the same timestep (one sample, or a CFG batch): the modulation is shared.
    pub shared_time: bool,
}

pub struct WanTransformer {
    pub config: TransformerConfig,
    /// Patch embedding as a dense layer on flattened patches `[D, C·pt·ph·pw]` (a stride-equal Conv3d).
    patch_embedding: Linear,
    text_embedding: (Linear, Linear),
    /// Kept in fp32, as diffusers keeps `time_embedder`.
    time_embedding: (Linear, Linear),
    time_projection: Linear,
    pub blocks: Vec<WanBlock>,
    /// `[1, 2, D]` fp32: shift and scale of the head.
    head_modulation: Tensor,
    head: Linear,
    kind: Kind,
    device: Device,
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
        let w = Loader::new(source, kind, device);
        let d = cfg.dim();
        let pw = w.get(
            "patch_embedding.weight",
            &[
                d,
                cfg.in_channels,
                cfg.patch_size[0],
                cfg.patch_size[1],
                cfg.patch_size[2],
            ],
        );
        let patch_embedding = Linear {
            weight: pw,
            bias: w.get("patch_embedding.bias", &[d]),
        };
        let f32_linear = |name: &str, inp: i64, out: i64| Linear {
            weight: w.get_as(&format!("{name}.weight"), &[out, inp], Kind::Float),
            bias: w.get_as(&format!("{name}.bias"), &[out], Kind::Float),
        };
        let time_embedding = (
            f32_linear("time_embedding.0", cfg.freq_dim, d),
            f32_linear("time_embedding.2", d, d),
        );
        let model = WanTransformer {
            text_embedding: (
                Linear::load(&w, "text_embedding.0", cfg.text_dim, d),
                Linear::load(&w, "text_embedding.2", d, d),
            ),
            time_embedding,
            time_projection: Linear::load(&w, "time_projection.1", d, 6 * d),
            blocks: (0..cfg.num_layers as usize)
                .map(|i| WanBlock::load(&w, i, &cfg))
                .collect(),
            head_modulation: w.get_as("head.modulation", &[1, 2, d], Kind::Float),
            head: Linear::load(&w, "head.head", d, cfg.patch_out()),
            patch_embedding,
            config: cfg,
            kind,
            device,
        };
        w.finish(naming::shape_hint)?;
        // The conv weight is used as a dense layer on flattened patches.
        let patch_embedding = Linear {
            weight: model.patch_embedding.weight.reshape([d, -1]),
            bias: model.patch_embedding.bias.shallow_clone(),
        };
        Ok(WanTransformer {
            patch_embedding,
            ..model
        })
    }

    /// Opens a diffusers `transformer/` folder (config.json + shards) or a single original/ComfyUI
    /// file, and loads it.
    pub fn from_path(path: &Path, kind: Kind, device: Device) -> Result<Self, ModelError> {
        let weights = TransformerWeights::new(WeightSet::open(path)?)?;
        let config_json = path.join("config.json");
        let cfg = if path.is_dir() && config_json.exists() {
            Some(TransformerConfig::from_json_file(&config_json)?)
        } else {
            None
        };
        Self::load(&weights, cfg, kind, device)
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn device(&self) -> Device {
        self.device
    }

    /// The sinusoid of `t` (float, 0…1000) with `freq_dim` channels, `[cos | sin]`, fp32.
    pub fn timestep_sinusoid(&self, t: &Tensor) -> Tensor {
        let half = self.config.freq_dim / 2;
        let exponent =
            Tensor::arange(half, (Kind::Float, t.device())) * (-(10000f64.ln()) / half as f64);
        let args = t.to_kind(Kind::Float).unsqueeze(1) * exponent.exp().unsqueeze(0);
        Tensor::cat(&[args.cos(), args.sin()], 1)
    }

    /// Time, text and position inputs shared by every block. `timestep` `[B]` in 0…1000, `context`
    /// `[B, L, text_dim]`.
    pub fn conditions(&self, timestep: &Tensor, context: &Tensor, grid: Grid) -> Conditions {
        let (te0, te2) = &self.time_embedding;
        let s = self.timestep_sinusoid(timestep);
        let temb = te2.forward(&te0.forward(&s).silu()).to_kind(self.kind);
        let e0 = self.time_projection.forward(&temb.silu());
        let b = e0.size()[0];
        let e0 = e0.to_kind(Kind::Float).view([b, 6, self.config.dim()]);
        let (t0, t2) = &self.text_embedding;
        let context = t2.forward(&t0.forward(&context.to_kind(self.kind)).gelu("tanh"));
        let rope = Rope::new(
            grid,
            self.config.attention_head_dim,
            self.config.rope_axes(),
            self.device,
        );
        let shared_time = b == 1 || {
            let t = timestep.to_kind(Kind::Float);
            t.eq_tensor(&t.select(0, 0)).all().int64_value(&[]) == 1
        };
        Conditions {
            temb,
            e0,
            context,
            rope,
            grid,
            shared_time,
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
        self.patch_embedding.forward(&patches)
    }

    /// Modulated head and unpatchify: tokens `[B, N, D]` → velocity `[B, C_out, T, H, W]` (fp32).
    pub fn head(&self, x: &Tensor, cond: &Conditions) -> Tensor {
        let m = (&self.head_modulation + cond.temb.to_kind(Kind::Float).unsqueeze(1)).chunk(2, 1);
        let (shift, scale) = (&m[0], &m[1]);
        let h = (layer_norm_f32(x, self.config.eps) * (scale + 1.0) + shift).to_kind(self.kind);
        let out = self.head.forward(&h);
        let b = out.size()[0];
        let g = cond.grid;
        let [pt, ph, pw] = self.config.patch_size;
        let c = self.config.out_channels;
        out.view([b, g.frames, g.height, g.width, pt, ph, pw, c].as_slice())
            .permute([0, 7, 1, 4, 2, 5, 3, 6])
            .reshape([b, c, g.frames * pt, g.height * ph, g.width * pw])
            .to_kind(Kind::Float)
    }

    /// Runs block `i`.
    pub fn block(
        &self,
        i: usize,
        x: &Tensor,
        cond: &Conditions,
        lora: Option<&LoraApply>,
    ) -> Tensor {
        self.blocks[i].forward(
            x,
            &cond.e0,
            cond.shared_time,
            &cond.context,
            &cond.rope,
            BlockLora {
                block: i,
                apply: lora,
            },
        )
    }

    /// The whole forward pass: `hidden_states` `[B, 36, T, H, W]`, `timestep` `[B]` (0…1000),
    /// `context` `[B, L, text_dim]` → velocity `[B, 16, T, H, W]` in fp32. Autograd records it when
    /// grad mode is on (use [`checkpoint`] for training).
    pub fn forward(
        &self,
        hidden_states: &Tensor,
        timestep: &Tensor,
        context: &Tensor,
        lora: Option<&LoraApply>,
    ) -> Result<Tensor, ModelError> {
        let grid = self.grid(hidden_states)?;
        let cond = self.conditions(timestep, context, grid);
        let mut x = self.patchify(hidden_states, grid);
        for i in 0..self.blocks.len() {
            x = self.block(i, &x, &cond, lora);
        }
        Ok(self.head(&x, &cond))
    }
}
