//! The flow-matching loss (wan-reference.md §5): x_t = (1−σ)·x0 + σ·ε, target ε − x0, computed in
//! fp32 per sample and weighted by the dataset's `loss_multiplier` and the timestep weight.

use tch::{Kind, Tensor};

/// The job's `loss_type`, as the config parsed it (pseudo-Huber's `c` is the config's
/// [`LossType::PSEUDO_HUBER_C`]).
pub use wanlora_config::LossType;

/// The noisy latent x_t for per-sample σ `[B]`.
pub fn noisy(x0: &Tensor, noise: &Tensor, sigma: &Tensor) -> Tensor {
    let s = sigma.to_kind(Kind::Float).view([-1, 1, 1, 1, 1]);
    x0 * (1.0 - &s) + noise * s
}

/// Per-sample loss `[B]` (mean over C, T, H, W) of `pred` against `target`, in fp32.
pub fn per_sample(kind: LossType, pred: &Tensor, target: &Tensor) -> Tensor {
    mean_per_sample(&elementwise(kind, pred, target))
}

/// [`per_sample`] with TI2V-5B's loss mask `[1, 1, F, 1, 1]` (0 on the clean start frame): the mean over
/// the masked-in elements ([`crate::ti2v::masked`]).
pub fn per_sample_masked(
    kind: LossType,
    pred: &Tensor,
    target: &Tensor,
    mask: &Tensor,
) -> Result<Tensor, tch::TchError> {
    Ok(mean_per_sample(&crate::ti2v::masked(
        &elementwise(kind, pred, target),
        Some(mask),
    )?))
}

/// The element-wise loss `[B, C, T, H, W]` in fp32.
fn elementwise(kind: LossType, pred: &Tensor, target: &Tensor) -> Tensor {
    let d = pred.to_kind(Kind::Float) - target.to_kind(Kind::Float);
    match kind {
        LossType::Mse => d.square(),
        LossType::Mae => d.abs(),
        LossType::PseudoHuber => {
            let c = LossType::PSEUDO_HUBER_C;
            (d.square() + c * c).sqrt() - c
        }
    }
}

fn mean_per_sample(elementwise: &Tensor) -> Tensor {
    elementwise.flatten(1, -1).mean_dim(1, false, Kind::Float)
}

/// Differential guidance: target' = pred + s·(target − pred), with pred detached — the error term
/// amplified s times (AI Toolkit only applies it when contrastive guidance is also on; here it works
/// on its own flag).
pub fn differential_target(pred: &Tensor, target: &Tensor, scale: f64) -> Tensor {
    let p = pred.detach().to_kind(Kind::Float);
    &p + (target.to_kind(Kind::Float) - &p) * scale
}

/// The batch loss: mean over samples of `per_sample · weight`, `weights` `[B]`.
pub fn weighted_mean(per_sample: &Tensor, weights: &Tensor) -> Tensor {
    (per_sample * weights.to_kind(Kind::Float)).mean(Kind::Float)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noisy_interpolates_between_data_and_noise() {
        let x0 = Tensor::ones([2, 1, 1, 1, 1], (Kind::Float, tch::Device::Cpu));
        let n = Tensor::zeros([2, 1, 1, 1, 1], (Kind::Float, tch::Device::Cpu));
        let xt = noisy(&x0, &n, &Tensor::from_slice(&[0.25f32, 1.0]));
        assert_eq!(
            Vec::<f32>::try_from(xt.flatten(0, -1)).unwrap(),
            vec![0.75, 0.0]
        );
    }

    #[test]
    fn loss_kinds_on_a_known_error() {
        let p = Tensor::from_slice(&[1.0f32, -1.0, 3.0, 0.0]).view([1, 1, 1, 2, 2]);
        let t = Tensor::zeros([1, 1, 1, 2, 2], (Kind::Float, tch::Device::Cpu));
        assert!((per_sample(LossType::Mse, &p, &t).double_value(&[0]) - 11.0 / 4.0).abs() < 1e-6);
        assert!((per_sample(LossType::Mae, &p, &t).double_value(&[0]) - 5.0 / 4.0).abs() < 1e-6);
        let c = 0.01; // AI Toolkit's
        let h = per_sample(LossType::PseudoHuber, &p, &t).double_value(&[0]);
        let want = [1.0f64, 1.0, 3.0, 0.0]
            .iter()
            .map(|d| (d * d + c * c).sqrt() - c)
            .sum::<f64>()
            / 4.0;
        assert!((h - want).abs() < 1e-6);
    }

    #[test]
    fn differential_guidance_scales_the_gradient() {
        // d/dpred of MSE(pred, pred + s(t − pred)) with the target detached = s × the plain gradient.
        let pred = Tensor::from_slice(&[0.5f32, -0.2]).set_requires_grad(true);
        let target = Tensor::from_slice(&[1.0f32, 1.0]);
        (&pred - differential_target(&pred, &target, 3.0))
            .square()
            .sum(Kind::Float)
            .backward();
        let g_dg = pred.grad().copy();
        let pred2 = pred.detach().set_requires_grad(true);
        (&pred2 - &target).square().sum(Kind::Float).backward();
        assert!(g_dg.allclose(&(pred2.grad() * 3.0), 1e-6, 1e-6, false));
    }
}
