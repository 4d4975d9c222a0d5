//! One transformer block (wan-reference.md §1.2, "One block"): modulated self-attention with 3-D
//! RoPE and q/k RMSNorm across heads, cross-attention to the text, and a modulated GELU MLP.
//!
//! Precision follows diffusers: norms, modulation and residual adds are computed in fp32 and rounded
//! once to the compute dtype; linears and attention run in the compute dtype. Each of those steps is
//! one fused libtorch kernel on compute-dtype tensors (a LayerNorm whose fp32 affine parameters are
//! the modulation, `addcmul` for gated residuals) instead of a chain of fp32 copies: the block is
//! memory-bound outside its matmuls.

use tch::{Kind, TchError, Tensor};

use super::rope::Rope;
use super::TransformerConfig;
use crate::lora::{LoraApply, LoraTarget, Multiplier};
use crate::quant::{load_weight, Fp8Mode, Weight};
use wanlora_torch::cuda::{attention_record, attention_replay, RecordedAttention};
use wanlora_torch::weights::Loader;

/// What self-attention does with its softmax. Checkpointed training records it in the forward
/// without a graph and replays it in the recompute, which then skips attention's forward.
pub enum AttentionMemo<'a> {
    Compute,
    /// Compute and keep the output and softmax statistics here (`None` when libtorch's kernel for
    /// these inputs has no usable backward: the replay then computes).
    Record(&'a mut Option<RecordedAttention>),
    Replay(&'a RecordedAttention),
}

/// A function that makes a tensor's copy elsewhere (host or device memory).
pub type TensorMap<'a> = dyn FnMut(&Tensor) -> Result<Tensor, TchError> + 'a;

/// Builds one block linear from the loader: (loader, weight name stem, which linear, in, out).
pub type LoadLinear<'a> = dyn Fn(&Loader, &str, LoraTarget, i64, i64) -> Linear + 'a;

/// A dense layer `y = x Wᵀ + b`; the weight in the compute dtype or in fp8 (crate::quant).
pub struct Linear {
    pub weight: Weight,
    pub bias: Tensor,
    /// `[out + r, in]` in the weight's dtype when rows are reserved for a rank-r LoRA
    /// down-projection ([`Linear::reserve_lora_rows`]): the dense `weight` is a view of its first
    /// `out` rows, and the LoRA forward copies A into the last `r` (crate::lora, fused LoRA).
    pub lora_rows: Option<Tensor>,
}

impl Linear {
    /// The weight and bias in the loader's kind.
    pub fn load(w: &Loader, name: &str, inp: i64, out: i64) -> Linear {
        Linear::load_as(w, name, inp, out, Fp8Mode::Off)
    }

    /// The weight stored as `mode` says ([`load_weight`]); the bias in the loader's kind.
    pub fn load_as(w: &Loader, name: &str, inp: i64, out: i64, mode: Fp8Mode) -> Linear {
        Linear {
            weight: load_weight(w, &format!("{name}.weight"), [out, inp], mode),
            bias: w.get(&format!("{name}.bias"), &[out]),
            lora_rows: None,
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.weight
            .linear(x, Some(&self.bias))
            .unwrap_or_else(|e| panic!("linear layer: {e}"))
    }

    /// The same layer with every tensor passed through `f` (reserved LoRA rows stay one buffer
    /// with the weight).
    pub fn map(&self, f: &mut TensorMap) -> Result<Linear, TchError> {
        let (weight, lora_rows) = match &self.lora_rows {
            Some(rows) => {
                let rows = f(rows)?;
                let out = self.weight.size()[0];
                (Weight::Dense(rows.f_narrow(0, 0, out)?), Some(rows))
            }
            None => (self.weight.map(f)?, None),
        };
        Ok(Linear {
            weight,
            bias: f(&self.bias)?,
            lora_rows,
        })
    }

    /// Re-stores the weight as `mode` (dequantising to `kind` for [`Fp8Mode::Off`]). Reserved
    /// LoRA rows stay only while the weight stays dense in their dtype.
    pub fn set_mode(&mut self, mode: Fp8Mode, kind: Kind) -> Result<(), TchError> {
        self.weight = self.weight.to_mode(mode, kind)?;
        if mode != Fp8Mode::Off || self.lora_rows.as_ref().is_some_and(|r| r.kind() != kind) {
            self.lora_rows = None;
        }
        Ok(())
    }

    /// Stores a dense weight `[out, in]` as the first rows of a buffer `[out + rank, in]`, so
    /// that a rank-`rank` LoRA's down-projection runs in the same GEMM
    /// ([`crate::lora::fused_lora_enabled`]).
    /// fp8 and 4-bit weights are left as they are (false): their GEMM would need A rounded to
    /// fp8 or 4 bits, and they keep the two-pass LoRA. The copy is made on the weight's device
    /// and replaces it, so the layer holds `rank` rows more than before, not a second weight.
    pub fn reserve_lora_rows(&mut self, rank: i64) -> Result<bool, TchError> {
        let Weight::Dense(w) = &self.weight else {
            return Ok(false);
        };
        let [out, inp] = self.weight.size();
        if out == 0 || !matches!(w.kind(), Kind::BFloat16 | Kind::Half | Kind::Float) {
            return Ok(false);
        }
        if self
            .lora_rows
            .as_ref()
            .is_some_and(|r| r.size()[0] == out + rank)
        {
            return Ok(true);
        }
        let _no_grad = tch::no_grad_guard();
        let rows = Tensor::f_zeros([out + rank, inp], (w.kind(), w.device()))?;
        rows.f_narrow(0, 0, out)?.f_copy_(w)?;
        self.weight = Weight::Dense(rows.f_narrow(0, 0, out)?);
        self.lora_rows = Some(rows);
        Ok(true)
    }

    pub fn tensors(&self) -> Vec<&Tensor> {
        let mut t = match &self.lora_rows {
            Some(rows) => vec![rows],
            None => self.weight.tensors(),
        };
        t.push(&self.bias);
        t
    }
}

/// The per-block LoRA view: which block, and the adapters to apply (if any).
#[derive(Clone, Copy)]
pub struct BlockLora<'a> {
    pub block: usize,
    pub apply: Option<&'a LoraApply<'a>>,
}

impl BlockLora<'_> {
    /// `linear(x)` plus the LoRA delta of `target` when one is active. The delta is added in the
    /// epilogue of its second matmul (`addmm`), so it costs no extra pass over the output. Where
    /// the layer reserved rows for this adapter's rank ([`Linear::reserve_lora_rows`]) and the
    /// strength is one value, the down-projection runs in the frozen weight's GEMM instead
    /// (`wanlora_torch::cuda::fused_lora_linear`); per-sample strengths keep the two passes.
    pub fn linear(&self, target: LoraTarget, layer: &Linear, x: &Tensor) -> Tensor {
        let Some(apply) = self.apply else {
            return layer.forward(x);
        };
        let Some(adapter) = apply.adapter(self.block, target) else {
            return layer.forward(x);
        };
        if let (Some(rows), Multiplier::Scalar(m)) = (&layer.lora_rows, &apply.multiplier) {
            let kind = x.kind();
            if rows.kind() == kind && rows.size()[0] == layer.weight.size()[0] + adapter.rank() {
                return wanlora_torch::cuda::fused_lora_linear(
                    x,
                    rows,
                    &adapter.down.to_kind(kind),
                    &adapter.up.to_kind(kind),
                    Some(&layer.bias),
                    m * adapter.scale(),
                )
                .unwrap_or_else(|e| panic!("LoRA linear: {e}"));
            }
        }
        let y = layer.forward(x);
        let size = y.size();
        let out = *size.last().expect("rank ≥ 1");
        let down = adapter.down_scaled(x, &apply.multiplier);
        let rank = adapter.rank();
        y.reshape([-1, out])
            .addmm(
                &down.reshape([-1, rank]),
                &adapter.up.to_kind(x.kind()).tr(),
            )
            .view(size.as_slice())
    }
}

/// Attention with q/k RMSNorm over all heads jointly (`rms_norm_across_heads`).
pub struct Attention {
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub o: Linear,
    pub norm_q: Tensor,
    pub norm_k: Tensor,
    heads: i64,
    eps: f64,
}

impl Attention {
    fn load(
        w: &Loader,
        prefix: &str,
        cfg: &TransformerConfig,
        targets: [LoraTarget; 4],
        linear: &LoadLinear,
    ) -> Attention {
        let d = cfg.dim();
        Attention {
            q: linear(w, &format!("{prefix}.q"), targets[0], d, d),
            k: linear(w, &format!("{prefix}.k"), targets[1], d, d),
            v: linear(w, &format!("{prefix}.v"), targets[2], d, d),
            o: linear(w, &format!("{prefix}.o"), targets[3], d, d),
            norm_q: w.get(&format!("{prefix}.norm_q.weight"), &[d]),
            norm_k: w.get(&format!("{prefix}.norm_k.weight"), &[d]),
            heads: cfg.num_attention_heads,
            eps: cfg.eps,
        }
    }

    fn linears_mut(&mut self) -> [&mut Linear; 4] {
        [&mut self.q, &mut self.k, &mut self.v, &mut self.o]
    }

    fn map(&self, f: &mut TensorMap) -> Result<Attention, TchError> {
        Ok(Attention {
            q: self.q.map(f)?,
            k: self.k.map(f)?,
            v: self.v.map(f)?,
            o: self.o.map(f)?,
            norm_q: f(&self.norm_q)?,
            norm_k: f(&self.norm_k)?,
            heads: self.heads,
            eps: self.eps,
        })
    }

    fn tensors(&self) -> Vec<&Tensor> {
        let mut t: Vec<&Tensor> = [&self.q, &self.k, &self.v, &self.o]
            .into_iter()
            .flat_map(Linear::tensors)
            .collect();
        t.extend([&self.norm_q, &self.norm_k]);
        t
    }

    /// `[B, L, H·d]` → `[B, L, H, d]`.
    fn split_heads(&self, x: &Tensor) -> Tensor {
        let s = x.size();
        x.view([s[0], s[1], self.heads, s[2] / self.heads])
    }

    /// softmax(q kᵀ/√d) v per head, on `[B, L, H, d]` inputs, returning `[B, Lq, H·d]`.
    fn sdpa(q: &Tensor, k: &Tensor, v: &Tensor, memo: AttentionMemo) -> Tensor {
        let (q, k, v) = (q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2));
        let out = match memo {
            AttentionMemo::Compute => Tensor::scaled_dot_product_attention(
                &q,
                &k,
                &v,
                None::<Tensor>,
                0.0,
                false,
                None,
                false,
            ),
            AttentionMemo::Record(slot) => {
                let (out, record) = attention_record(&q, &k, &v).unwrap_or_else(|e| panic!("{e}"));
                *slot = record;
                out
            }
            AttentionMemo::Replay(record) => {
                attention_replay(record, &q, &k, &v).unwrap_or_else(|e| panic!("{e}"))
            }
        };
        let s = out.size();
        out.transpose(1, 2).reshape([s[0], s[2], s[1] * s[3]])
    }

    fn rms(&self, x: &Tensor, weight: &Tensor) -> Tensor {
        let d = *x.size().last().expect("rank ≥ 1");
        x.rms_norm([d], Some(weight), Some(self.eps))
    }

    /// `rope(rms(x)·weight)` split into heads `[B, N, H, d]`: one fused pass when the fused kernels
    /// are on and nothing needs a graph, else RMSNorm then RoPE.
    fn rms_rope(&self, x: &Tensor, weight: &Tensor, rope: &Rope) -> Tensor {
        let bf16 = |t: &Tensor| t.kind() == Kind::BFloat16;
        let width_ok = x.size().last().is_some_and(|d| d % 8 == 0 && *d <= 8192);
        if rope.fused
            && bf16(x)
            && bf16(weight)
            && bf16(&rope.cos)
            && width_ok
            && !x.requires_grad()
            && !weight.requires_grad()
        {
            let y = wanlora_torch::cuda::fused_rms_rope(
                x,
                weight,
                &rope.cos,
                &rope.sin_signed,
                self.eps,
            )
            .unwrap_or_else(|e| panic!("{e}"));
            return self.split_heads(&y);
        }
        rope.apply(&self.split_heads(&self.rms(x, weight)))
    }

    /// Self-attention on `x` with RoPE.
    fn forward_self(
        &self,
        x: &Tensor,
        rope: &Rope,
        lora: BlockLora,
        targets: [LoraTarget; 4],
        memo: AttentionMemo,
    ) -> Tensor {
        let q = self.rms_rope(&lora.linear(targets[0], &self.q, x), &self.norm_q, rope);
        let k = self.rms_rope(&lora.linear(targets[1], &self.k, x), &self.norm_k, rope);
        let v = lora.linear(targets[2], &self.v, x);
        let a = Self::sdpa(&q, &k, &self.split_heads(&v), memo);
        lora.linear(targets[3], &self.o, &a)
    }

    /// Cross-attention from `x` to the text `context` (no RoPE, no mask: all 512 slots are attended).
    fn forward_cross(
        &self,
        x: &Tensor,
        context: &Tensor,
        lora: BlockLora,
        targets: [LoraTarget; 4],
    ) -> Tensor {
        let q = self.rms(&lora.linear(targets[0], &self.q, x), &self.norm_q);
        let k = self.rms(&lora.linear(targets[1], &self.k, context), &self.norm_k);
        let v = lora.linear(targets[2], &self.v, context);
        let a = Self::sdpa(
            &self.split_heads(&q),
            &self.split_heads(&k),
            &self.split_heads(&v),
            AttentionMemo::Compute,
        );
        lora.linear(targets[3], &self.o, &a)
    }
}

const SELF_TARGETS: [LoraTarget; 4] = [
    LoraTarget::SelfQ,
    LoraTarget::SelfK,
    LoraTarget::SelfV,
    LoraTarget::SelfO,
];
const CROSS_TARGETS: [LoraTarget; 4] = [
    LoraTarget::CrossQ,
    LoraTarget::CrossK,
    LoraTarget::CrossV,
    LoraTarget::CrossO,
];

/// Non-affine LayerNorm over the last dimension, in fp32.
pub fn layer_norm_f32(x: &Tensor, eps: f64) -> Tensor {
    let d = *x.size().last().expect("rank ≥ 1");
    x.to_kind(Kind::Float)
        .layer_norm([d], None::<Tensor>, None::<Tensor>, eps, true)
}

/// `LN(x)·gain + bias` for `x` `[B, N, D]` and fp32 `gain`, `bias` (`[B, 1, D]` or `[D]`), in `x`'s
/// dtype, with the LayerNorm's statistics and affine arithmetic in fp32 registers. libtorch's
/// LayerNorm takes parameters only in the input's dtype and only one set for all rows: when the
/// parameters are the same for every sample (`[D]`, or a batch of one — training, and sampling
/// where both CFG halves share the timestep) they go into the LayerNorm kernel rounded to `x`'s
/// dtype, one memory pass; per-sample parameters need a second pass (`addcmul`) that also rounds
/// the normalised value first. diffusers rounds once, after an fp32 product.
pub fn affine_norm(x: &Tensor, gain: &Tensor, bias: &Tensor, eps: f64) -> Tensor {
    let d = *x.size().last().expect("rank ≥ 1");
    let kind = x.kind();
    let shared = |p: &Tensor| p.numel() as i64 == d;
    if shared(gain) && shared(bias) {
        let gain = gain.reshape([d]).to_kind(kind);
        let bias = bias.reshape([d]).to_kind(kind);
        return x.layer_norm([d], Some(&gain), Some(&bias), eps, true);
    }
    let normalised = x.layer_norm([d], None::<Tensor>, None::<Tensor>, eps, true);
    bias.to_kind(kind).addcmul(&normalised, &gain.to_kind(kind))
}

/// `LN(x)·(1 + scale) + shift`: the modulated LayerNorm in front of attention and the MLP.
pub fn modulated_norm(x: &Tensor, scale: &Tensor, shift: &Tensor, eps: f64) -> Tensor {
    affine_norm(x, &(scale + 1.0), shift, eps)
}

/// `x + y·gate` with the product and sum in fp32 registers, rounded once (`gate` fp32 `[B, 1, D]`,
/// a constant). With `fused`, bf16 CUDA tensors take the one-pass kernel (libtorch's `addcmul`
/// with a broadcast operand runs its slower strided loop); per-frame gates (4-D) take `addcmul`.
fn gated_add(x: &Tensor, y: &Tensor, gate: &Tensor, fused: bool) -> Tensor {
    if fused && x.kind() == Kind::BFloat16 && !gate.requires_grad() && x.dim() == 3 {
        return wanlora_torch::cuda::fused_gated_add(x, y, gate).unwrap_or_else(|e| panic!("{e}"));
    }
    x.addcmul(y, &gate.to_kind(x.kind()))
}

/// One Wan block.
pub struct WanBlock {
    /// `[1, 6, D]` fp32: shift/scale/gate for attention, then for the MLP.
    pub modulation: Tensor,
    pub self_attn: Attention,
    pub cross_attn: Attention,
    /// The affine LayerNorm in front of cross-attention (fp32 weight, bias), when configured.
    pub norm3: Option<(Tensor, Tensor)>,
    pub ffn0: Linear,
    pub ffn2: Linear,
    eps: f64,
}

impl WanBlock {
    pub fn load(w: &Loader, index: usize, cfg: &TransformerConfig) -> WanBlock {
        WanBlock::load_as(w, index, cfg, Fp8Mode::Off)
    }

    /// The block with its ten linears stored as `mode` says.
    pub fn load_as(w: &Loader, index: usize, cfg: &TransformerConfig, mode: Fp8Mode) -> WanBlock {
        WanBlock::load_with_linears(w, index, cfg, &|w, name, _, inp, out| {
            Linear::load_as(w, name, inp, out, mode)
        })
    }

    /// The block with each of its ten linears made by `linear` (e.g. 4-bit with an adapter).
    pub fn load_with_linears(
        w: &Loader,
        index: usize,
        cfg: &TransformerConfig,
        linear: &LoadLinear,
    ) -> WanBlock {
        let p = format!("blocks.{index}");
        let d = cfg.dim();
        WanBlock {
            modulation: w.get_as(&format!("{p}.modulation"), &[1, 6, d], Kind::Float),
            self_attn: Attention::load(w, &format!("{p}.self_attn"), cfg, SELF_TARGETS, linear),
            cross_attn: Attention::load(w, &format!("{p}.cross_attn"), cfg, CROSS_TARGETS, linear),
            norm3: cfg.cross_attn_norm.then(|| {
                (
                    w.get_as(&format!("{p}.norm3.weight"), &[d], Kind::Float),
                    w.get_as(&format!("{p}.norm3.bias"), &[d], Kind::Float),
                )
            }),
            ffn0: linear(w, &format!("{p}.ffn.0"), LoraTarget::Ffn0, d, cfg.ffn_dim),
            ffn2: linear(w, &format!("{p}.ffn.2"), LoraTarget::Ffn2, cfg.ffn_dim, d),
            eps: cfg.eps,
        }
    }

    /// The same block with every tensor passed through `f`: its copy in host or device memory.
    pub fn map_tensors(&self, f: &mut TensorMap) -> Result<WanBlock, TchError> {
        Ok(WanBlock {
            modulation: f(&self.modulation)?,
            self_attn: self.self_attn.map(f)?,
            cross_attn: self.cross_attn.map(f)?,
            norm3: match &self.norm3 {
                Some((w, b)) => Some((f(w)?, f(b)?)),
                None => None,
            },
            ffn0: self.ffn0.map(f)?,
            ffn2: self.ffn2.map(f)?,
            eps: self.eps,
        })
    }

    /// The ten linears with their paths inside the block (`self_attn.q`, …, `ffn.2`).
    pub fn named_linears(&self) -> [(&'static str, &Linear); 10] {
        let (s, c) = (&self.self_attn, &self.cross_attn);
        [
            ("self_attn.q", &s.q),
            ("self_attn.k", &s.k),
            ("self_attn.v", &s.v),
            ("self_attn.o", &s.o),
            ("cross_attn.q", &c.q),
            ("cross_attn.k", &c.k),
            ("cross_attn.v", &c.v),
            ("cross_attn.o", &c.o),
            ("ffn.0", &self.ffn0),
            ("ffn.2", &self.ffn2),
        ]
    }

    /// Every tensor of the block.
    pub fn tensors(&self) -> Vec<&Tensor> {
        let mut t = vec![&self.modulation];
        t.extend(self.self_attn.tensors());
        t.extend(self.cross_attn.tensors());
        if let Some((w, b)) = &self.norm3 {
            t.extend([w, b]);
        }
        t.extend(self.ffn0.tensors());
        t.extend(self.ffn2.tensors());
        t
    }

    /// Bytes of all the block's tensors.
    pub fn bytes(&self) -> u64 {
        self.tensors()
            .into_iter()
            .map(crate::quant::tensor_bytes)
            .sum()
    }

    /// Re-stores the ten linears as `mode` (dequantising to `kind` for [`Fp8Mode::Off`]).
    pub fn set_fp8_mode(&mut self, mode: Fp8Mode, kind: Kind) -> Result<(), TchError> {
        for linear in self.linears_mut() {
            linear.set_mode(mode, kind)?;
        }
        Ok(())
    }

    /// The ten linears, mutably.
    fn linears_mut(&mut self) -> Vec<&mut Linear> {
        let Self {
            self_attn,
            cross_attn,
            ffn0,
            ffn2,
            ..
        } = self;
        let mut linears: Vec<&mut Linear> = self_attn.linears_mut().into();
        linears.extend(cross_attn.linears_mut());
        linears.extend([ffn0, ffn2]);
        linears
    }

    /// Reserves rows for a rank-`rank` LoRA in each of the ten linears that can take them
    /// ([`Linear::reserve_lora_rows`]); the number that did.
    pub fn reserve_lora_rows(&mut self, rank: i64) -> Result<usize, TchError> {
        let mut reserved = 0;
        for linear in self.linears_mut() {
            reserved += usize::from(linear.reserve_lora_rows(rank)?);
        }
        Ok(reserved)
    }

    /// x `[B, N, D]` (compute dtype) → x `[B, N, D]`. `e0` is the block-independent time projection
    /// `[B, 6, D]`, or `[B, F, 6, D]` per latent frame (fp32), `context` is the embedded text
    /// `[B, L, D]`.
    pub fn forward(
        &self,
        x: &Tensor,
        e0: &Tensor,
        context: &Tensor,
        rope: &Rope,
        lora: BlockLora,
        memo: AttentionMemo,
    ) -> Tensor {
        let m = Modulation::new(&self.modulation, e0);
        let h = m.norm(x, Modulation::ATTENTION, self.eps);
        let a = self
            .self_attn
            .forward_self(&h, rope, lora, SELF_TARGETS, memo);
        let x = m.gated_add(x, &a, Modulation::ATTENTION, rope.fused);

        let h = match &self.norm3 {
            Some((w, b)) => affine_norm(&x, w, b, self.eps),
            None => x.shallow_clone(),
        };
        let x = &x
            + self
                .cross_attn
                .forward_cross(&h, context, lora, CROSS_TARGETS);

        let h = m.norm(&x, Modulation::MLP, self.eps);
        // Not `_addmm_activation(use_gelu)`: libtorch 2.11's CUDA bf16 matmul with that epilogue
        // returns ReLU(x Wᵀ + b) (measured on the H100; docs/BENCHMARKS.md).
        let f = lora.linear(LoraTarget::Ffn0, &self.ffn0, &h).gelu("tanh");
        let f = lora.linear(LoraTarget::Ffn2, &self.ffn2, &f);
        m.gated_add(&x, &f, Modulation::MLP, rope.fused)
    }
}

/// A block's six modulation vectors (shift, scale, gate for attention, then for the MLP), each
/// `[B, 1, D]` for one timestep per sample or `[B, F, 1, D]` per latent frame; per-frame ones apply
/// to the tokens viewed as `[B, F, H·W, D]` (tokens are frame-major).
struct Modulation {
    parts: Vec<Tensor>,
    /// Latent frames, when per frame.
    frames: Option<i64>,
}

impl Modulation {
    /// Index of the attention's (shift, scale, gate); the MLP's follow.
    const ATTENTION: usize = 0;
    const MLP: usize = 3;

    /// `table` `[1, 6, D]` + `e0` `[B, 6, D]` or `[B, F, 6, D]`.
    fn new(table: &Tensor, e0: &Tensor) -> Self {
        if e0.dim() == 4 {
            Modulation {
                parts: (table.unsqueeze(0) + e0).chunk(6, 2),
                frames: Some(e0.size()[1]),
            }
        } else {
            Modulation {
                parts: (table + e0).chunk(6, 1),
                frames: None,
            }
        }
    }

    /// `x` `[B, N, D]` as the modulation's shape needs it, and the shape to return to.
    fn framed(&self, x: &Tensor) -> (Tensor, Vec<i64>) {
        let size = x.size();
        match self.frames {
            Some(f) => (x.view([size[0], f, size[1] / f, size[2]]), size),
            None => (x.shallow_clone(), size),
        }
    }

    /// `LN(x)·(1 + scale) + shift` with the (shift, scale) at `at`.
    fn norm(&self, x: &Tensor, at: usize, eps: f64) -> Tensor {
        let (x, size) = self.framed(x);
        modulated_norm(&x, &self.parts[at + 1], &self.parts[at], eps).view(size.as_slice())
    }

    /// `x + y·gate` with the gate at `at`.
    fn gated_add(&self, x: &Tensor, y: &Tensor, at: usize, fused: bool) -> Tensor {
        let (x, size) = self.framed(x);
        let (y, _) = self.framed(y);
        gated_add(&x, &y, &self.parts[at + 2], fused).view(size.as_slice())
    }
}
