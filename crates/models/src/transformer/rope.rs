//! 3-D rotary position embedding (wan-reference.md §1.2 step 4): the head dimension is split into
//! time, height and width parts (44/42/42 at 128); pair j = dims (2j, 2j+1) rotates by position·ω_j.

use tch::{Device, Kind, Tensor};

/// Token grid after patching: latent frames, height and width in patches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grid {
    pub frames: i64,
    pub height: i64,
    pub width: i64,
}

impl Grid {
    pub fn tokens(&self) -> i64 {
        self.frames * self.height * self.width
    }
}

/// cos/sin tables for one grid, broadcastable over batch and heads: `[1, N, 1, head_dim]`, fp32,
/// each angle repeated for its pair; `sin` carries the sign of the rotation (−sin on even dims).
pub struct Rope {
    pub cos: Tensor,
    pub sin_signed: Tensor,
    /// Rotate bf16 CUDA tensors with the one-pass fused kernel (when NVRTC compiled it and
    /// `WANLORA_FUSED` is not `0`).
    pub fused: bool,
}

/// Whether the fused kernels can serve tensors on `device` (compiled once per process by the
/// helper). `WANLORA_FUSED=0` turns them off, to compare or to rule them out.
fn fused_kernels_for(device: Device) -> bool {
    let Device::Cuda(i) = device else {
        return false;
    };
    if std::env::var("WANLORA_FUSED").is_ok_and(|v| v == "0") {
        return false;
    }
    match wanlora_torch::cuda::fused_kernels(i as i64) {
        Ok(()) => true,
        Err(e) => {
            // Once per process: the tables are made for every forward pass.
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                tracing::warn!("fused kernels unavailable, using libtorch's ops: {e}")
            });
            false
        }
    }
}

/// Angles `pos · θ^(−2j/dim)` for one axis, `[len, dim/2]`, computed in float64 like the reference.
fn axis_angles(len: i64, dim: i64, theta: f64, device: Device) -> Tensor {
    let exps = Tensor::arange_start_step(0, dim, 2, (Kind::Double, device)) / dim as f64;
    let freqs = Tensor::from(theta)
        .to_device(device)
        .pow(&exps)
        .reciprocal();
    let pos = Tensor::arange(len, (Kind::Double, device));
    pos.outer(&freqs)
}

impl Rope {
    pub fn new(grid: Grid, head_dim: i64, axes: [i64; 3], device: Device) -> Rope {
        let theta = 10000.0;
        let [dt, dh, dw] = axes;
        debug_assert_eq!(dt + dh + dw, head_dim);
        let (f, h, w) = (grid.frames, grid.height, grid.width);
        let at = axis_angles(f, dt, theta, device)
            .view([f, 1, 1, dt / 2])
            .expand([f, h, w, dt / 2], true);
        let ah = axis_angles(h, dh, theta, device)
            .view([1, h, 1, dh / 2])
            .expand([f, h, w, dh / 2], true);
        let aw = axis_angles(w, dw, theta, device)
            .view([1, 1, w, dw / 2])
            .expand([f, h, w, dw / 2], true);
        let angles = Tensor::cat(&[at, ah, aw], -1).reshape([f * h * w, head_dim / 2]);
        // Interleave: each angle serves the pair (2j, 2j+1).
        let cos = angles.cos().repeat_interleave_self_int(2, -1, None);
        let sin = angles.sin();
        let sin_signed = Tensor::stack(&[-&sin, sin], -1).reshape([f * h * w, head_dim]);
        Rope {
            cos: cos.to_kind(Kind::Float).view([1, f * h * w, 1, head_dim]),
            sin_signed: sin_signed
                .to_kind(Kind::Float)
                .view([1, f * h * w, 1, head_dim]),
            fused: fused_kernels_for(device),
        }
    }

    /// Rotates `x` `[B, N, H, head_dim]` pairwise, `(x₀, x₁) → (x₀cos − x₁sin, x₁cos + x₀sin)`, as
    /// `x·cos + swap(x)·sin±` in `x`'s dtype (the tables are made in that dtype by [`Rope::in_kind`]):
    /// three memory-bound passes, the arithmetic of each in fp32 registers.
    pub fn apply(&self, x: &Tensor) -> Tensor {
        if self.fused && x.kind() == Kind::BFloat16 && self.cos.kind() == Kind::BFloat16 {
            return wanlora_torch::cuda::fused_rope(x, &self.cos, &self.sin_signed)
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let size = x.size();
        let mut pairs = size.clone();
        let d = pairs.pop().expect("rank ≥ 1");
        pairs.extend([d / 2, 2]);
        let swapped = x.view(pairs.as_slice()).flip([-1]).view(size.as_slice());
        let mut out = x * &self.cos;
        let _ = out.addcmul_(&swapped, &self.sin_signed);
        out
    }

    /// The tables in `kind` (the angles are computed in float64 and rounded once). In bf16 the
    /// rotation coefficients carry bf16's 2⁻⁹ relative rounding, the same as the rotated values
    /// themselves; diffusers keeps fp32 tables and rounds after the product.
    pub fn in_kind(self, kind: Kind) -> Rope {
        Rope {
            cos: self.cos.to_kind(kind),
            sin_signed: self.sin_signed.to_kind(kind),
            fused: self.fused,
        }
    }
}
