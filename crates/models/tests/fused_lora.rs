//! The LoRA down-projection fused into the frozen weight's GEMM (`Linear::reserve_lora_rows`,
//! `wanlora_torch::cuda::fused_lora_linear`) on the CPU: a LoRA'd linear gives the two-pass path's
//! output and its gradients for x, A and B (f32 tightly, bf16 within rounding), fresh adapters
//! (B = 0) included; per-sample strengths fall back to the two passes; rewriting the A rows before
//! the backward is refused; and one training step of the tiny transformer gives the same loss and
//! LoRA gradients with the rows reserved as without.

mod tiny_support;

use tch::{Device, Kind, Tensor};
use wanlora_models::lora::{LoraApply, LoraSet, LoraTarget, Multiplier};
use wanlora_models::quant::{Fp8Mode, Weight};
use wanlora_models::transformer::checkpoint::{forward_backward, CheckpointPolicy};
use wanlora_models::transformer::{
    BlockLora, BlockOffload, Linear, LoadOptions, TransformerConfig, WanTransformer,
};
use wanlora_torch::rng;

fn config() -> TransformerConfig {
    tiny_support::tiny_config(2)
}

const RANK: i64 = 4;

/// `‖a − b‖ / ‖b‖` in f64 (0 when both are zero).
fn relative_error(a: &Tensor, b: &Tensor) -> f64 {
    let (a, b) = (a.to_kind(Kind::Double), b.to_kind(Kind::Double));
    let norm = b.norm().double_value(&[]);
    let diff = (&a - &b).norm().double_value(&[]);
    if norm == 0.0 {
        diff
    } else {
        diff / norm
    }
}

fn uniform(seed: u64, shape: &[i64], bound: f32) -> Tensor {
    rng::uniform(seed, shape, -bound, bound, Device::Cpu).unwrap()
}

/// Adapters of rank 4 (α = 2) for the tiny config with A and B random (or B zero, as a fresh
/// LoRA starts), as trainable fp32 leaves.
fn lora(zero_up: bool) -> LoraSet {
    lora_on(zero_up, Device::Cpu)
}

fn lora_on(zero_up: bool, device: Device) -> LoraSet {
    let set = LoraSet::new_trainable(&config(), RANK, 2.0, device, 5);
    tch::no_grad(|| {
        for (i, p) in set.parameters().into_iter().enumerate() {
            let is_up = i % 2 == 1;
            if is_up && zero_up {
                continue;
            }
            p.shallow_clone()
                .copy_(&uniform(100 + i as u64, &p.size(), 0.3).to_device(device));
        }
    });
    set
}

/// A dense linear `[out, in]` in `kind`, and the same weights with LoRA rows reserved.
fn linear_pair(inp: i64, out: i64, kind: Kind) -> (Linear, Linear) {
    linear_pair_on(inp, out, kind, Device::Cpu)
}

fn linear_pair_on(inp: i64, out: i64, kind: Kind, device: Device) -> (Linear, Linear) {
    let make = || Linear {
        weight: Weight::Dense(uniform(7, &[out, inp], 0.2).to_device(device).to_kind(kind)),
        bias: uniform(8, &[out], 0.1).to_device(device).to_kind(kind),
        lora_rows: None,
    };
    let mut fused = make();
    assert!(fused.reserve_lora_rows(RANK).unwrap());
    (make(), fused)
}

/// Output and the gradients of x, A and B of one LoRA'd linear through `BlockLora::linear`, with
/// the loss `Σ y·g` for a fixed random `g`.
fn linear_step(
    layer: &Linear,
    set: &LoraSet,
    target: LoraTarget,
    multiplier: Multiplier,
    x: &Tensor,
) -> (Tensor, Tensor, Tensor, Tensor) {
    let lora = set.trainable_copy();
    let adapter = lora.get(0, target).unwrap();
    let (a, b) = (&adapter.down, &adapter.up);
    let x = x.detach().set_requires_grad(true);
    let apply = LoraApply {
        set: &lora,
        multiplier,
    };
    let y = BlockLora {
        block: 0,
        apply: Some(&apply),
    }
    .linear(target, layer, &x);
    let g = uniform(9, &y.size(), 1.0)
        .to_device(y.device())
        .to_kind(y.kind());
    (&y * &g).sum(Kind::Float).backward();
    (y.detach(), x.grad(), a.grad(), b.grad())
}

/// The fused linear against the two-pass one for a square, a widening (out > in: the in-place
/// input gradient) and a narrowing (out < in: the one-GEMM input gradient) layer.
fn check_against_two_passes(kind: Kind, tolerance: f64, zero_up: bool, device: Device) {
    let cfg = config();
    let set = lora_on(zero_up, device);
    for target in [LoraTarget::SelfQ, LoraTarget::Ffn0, LoraTarget::Ffn2] {
        let (inp, out) = target.dims(&cfg);
        let (two_pass, fused) = linear_pair_on(inp, out, kind, device);
        let x = uniform(11, &[2, 6, inp], 1.0)
            .to_device(device)
            .to_kind(kind);
        let expected = linear_step(&two_pass, &set, target, Multiplier::Scalar(0.7), &x);
        let got = linear_step(&fused, &set, target, Multiplier::Scalar(0.7), &x);
        // The fused path ran: the buffer's last rows hold A in the compute dtype.
        let a = set.get(0, target).unwrap().down.to_kind(kind);
        let rows = fused.lora_rows.as_ref().unwrap();
        assert!(rows.narrow(0, out, RANK).equal(&a), "{target:?}: A rows");
        let names = ["output", "dx", "dA", "dB"];
        for (name, (e, g)) in names.iter().zip([
            (&expected.0, &got.0),
            (&expected.1, &got.1),
            (&expected.2, &got.2),
            (&expected.3, &got.3),
        ]) {
            assert_eq!(g.kind(), e.kind(), "{target:?} {name}");
            let err = relative_error(g, e);
            assert!(
                err <= tolerance,
                "{target:?} {kind:?} {name}: relative error {err:.2e} > {tolerance:.0e}"
            );
        }
        if zero_up {
            // A fresh adapter: no gradient reaches A yet, B's does not vanish.
            assert_eq!(got.2.abs().max().double_value(&[]), 0.0, "{target:?} dA");
            assert!(got.3.abs().max().double_value(&[]) > 0.0, "{target:?} dB");
        }
    }
}

#[test]
fn fused_linear_matches_two_passes_in_f32() {
    check_against_two_passes(Kind::Float, 1e-6, false, Device::Cpu);
    check_against_two_passes(Kind::Float, 1e-6, true, Device::Cpu);
}

#[test]
fn fused_linear_matches_two_passes_in_bf16() {
    // Sums of bf16 products rounded at different points: a few bf16 ulps (2⁻⁸ ≈ 4e-3) apart.
    check_against_two_passes(Kind::BFloat16, 1e-2, false, Device::Cpu);
    check_against_two_passes(Kind::BFloat16, 1e-2, true, Device::Cpu);
}

/// The same on the GPU in bf16 (cuBLAS, the fused op's strided views); run by scripts/gpu/step.sh
/// tests from the carried test binary, a no-op without CUDA.
#[test]
fn cuda_fused_linear_matches_two_passes_in_bf16() {
    wanlora_torch::init();
    if !tch::Cuda::is_available() {
        eprintln!("no CUDA device: the GPU variant is checked by scripts/gpu/step.sh tests");
        return;
    }
    check_against_two_passes(Kind::BFloat16, 1e-2, false, Device::Cuda(0));
    check_against_two_passes(Kind::BFloat16, 1e-2, true, Device::Cuda(0));
}

#[test]
fn fused_linear_without_a_graph_gives_the_same_output() {
    let set = lora(false);
    let (two_pass, fused) = linear_pair(32, 32, Kind::Float);
    let x = uniform(12, &[1, 5, 32], 1.0);
    let apply = LoraApply {
        set: &set,
        multiplier: Multiplier::Scalar(1.3),
    };
    let view = BlockLora {
        block: 1,
        apply: Some(&apply),
    };
    let (expected, got) = tch::no_grad(|| {
        (
            view.linear(LoraTarget::SelfV, &two_pass, &x),
            view.linear(LoraTarget::SelfV, &fused, &x),
        )
    });
    assert!(!got.requires_grad());
    assert!(relative_error(&got, &expected) < 1e-6);
}

#[test]
fn per_sample_strengths_take_the_two_passes() {
    let set = lora(false);
    let (two_pass, fused) = linear_pair(32, 32, Kind::Float);
    let x = uniform(13, &[2, 5, 32], 1.0);
    let per_sample = || Multiplier::per_sample(&[0.5, 1.5], Device::Cpu);
    let expected = linear_step(&two_pass, &set, LoraTarget::CrossQ, per_sample(), &x);
    let got = linear_step(&fused, &set, LoraTarget::CrossQ, per_sample(), &x);
    // The A rows were never written (they start as zeros), and the results are the two passes'.
    let rows = fused.lora_rows.as_ref().unwrap();
    assert_eq!(rows.narrow(0, 32, RANK).abs().max().double_value(&[]), 0.0);
    for (e, g) in [
        (&expected.0, &got.0),
        (&expected.1, &got.1),
        (&expected.2, &got.2),
        (&expected.3, &got.3),
    ] {
        assert_eq!(relative_error(g, e), 0.0);
    }
}

#[test]
fn rewriting_the_a_rows_before_the_backward_is_refused() {
    let set = lora(false);
    let other = lora(true);
    let (_, fused) = linear_pair(32, 32, Kind::Float);
    let x = uniform(14, &[1, 3, 32], 1.0).set_requires_grad(true);
    let view = |set: &LoraSet| {
        let apply = LoraApply {
            set,
            multiplier: Multiplier::Scalar(1.0),
        };
        BlockLora {
            block: 0,
            apply: Some(&apply),
        }
        .linear(LoraTarget::SelfO, &fused, &x)
    };
    let y = view(&set);
    // Another adapter's A goes into the same buffer before `y`'s backward.
    let _ = view(&other);
    let err = y.sum(Kind::Float).f_backward().unwrap_err().to_string();
    assert!(err.contains("inplace"), "{err}");
}

#[test]
fn fp8_weights_keep_the_two_pass_lora() {
    let mut linear = Linear {
        weight: Weight::from_dense(uniform(15, &[32, 32], 0.2), Fp8Mode::WeightOnly).unwrap(),
        bias: Tensor::zeros([32], (Kind::Float, Device::Cpu)),
        lora_rows: None,
    };
    assert!(!linear.reserve_lora_rows(RANK).unwrap());
    assert!(linear.lora_rows.is_none());
    // Reserved rows go when a dense weight is re-stored as fp8.
    let (_, mut fused) = linear_pair(32, 32, Kind::Float);
    fused.set_mode(Fp8Mode::WeightOnly, Kind::Float).unwrap();
    assert!(fused.lora_rows.is_none());
}

/// The tiny model (its random weights drawn from libtorch's generator, which no other test of
/// this file uses: the adapters and inputs come from their own streams).
fn model(offload: Option<BlockOffload>) -> WanTransformer {
    tiny_support::tiny_model(
        config(),
        3,
        &LoadOptions {
            offload,
            ..LoadOptions::default()
        },
    )
}

/// Loss and LoRA gradients of one training step (every block recomputed, or every block kept).
fn training_step(
    model: &WanTransformer,
    reference: &LoraSet,
    keep_blocks: usize,
) -> (f64, Vec<Tensor>) {
    let cfg = config();
    let x = uniform(21, &[1, cfg.in_channels, 3, 4, 4], 1.0);
    let t = Tensor::from_slice(&[430.0f32]);
    let context = uniform(22, &[1, 6, cfg.text_dim], 1.0);
    let target = uniform(23, &[1, 16, 3, 4, 4], 1.0);
    let lora = reference.trainable_copy();
    let params = lora.parameters();
    let apply = LoraApply {
        set: &lora,
        multiplier: Multiplier::Scalar(0.8),
    };
    let policy = CheckpointPolicy {
        keep_blocks,
        keep_attention: 0,
        host_inputs: false,
    };
    let loss = forward_backward(model, &x, &t, &context, &apply, policy, |pred| {
        Ok((pred - &target).square().mean(Kind::Float))
    })
    .unwrap();
    (
        loss.double_value(&[]),
        params.iter().map(|p| p.grad().copy()).collect(),
    )
}

#[test]
fn training_step_with_reserved_rows_matches_the_two_pass_step() {
    tch::set_num_threads(1);
    let reference = lora(false);
    let two_pass = model(None);
    let mut fused = model(None);
    assert_eq!(fused.reserve_lora_rows(RANK).unwrap(), 20);
    // Streamed blocks keep their rows through the host round trip.
    let mut streamed = model(Some(BlockOffload {
        blocks: 2,
        ring_slots: 1,
    }));
    assert_eq!(streamed.reserve_lora_rows(RANK).unwrap(), 20);
    for keep_blocks in [0, 2] {
        let (loss, grads) = training_step(&two_pass, &reference, keep_blocks);
        assert!(grads.iter().all(|g| g.abs().max().double_value(&[]) > 0.0));
        for (name, m) in [("resident", &fused), ("streamed", &streamed)] {
            let (fused_loss, fused_grads) = training_step(m, &reference, keep_blocks);
            assert!(
                (fused_loss - loss).abs() <= 1e-6 * loss.abs(),
                "{name} keep_blocks={keep_blocks}: loss {fused_loss} vs {loss}"
            );
            // f32 sums in another order, through attention and the norms: the cross-attention
            // query's gradients are ~10⁻⁶ in norm and come out ~2·10⁻⁵ apart, relatively.
            for (i, (g, e)) in fused_grads.iter().zip(&grads).enumerate() {
                let err = relative_error(g, e);
                assert!(
                    err <= 1e-4,
                    "{name} keep_blocks={keep_blocks}: LoRA parameter {i} gradient off by {err:.2e}"
                );
            }
        }
    }
    // The fused path ran in the resident model: block 1's FFN output rows hold its A.
    let a = reference.get(1, LoraTarget::Ffn2).unwrap().down.detach();
    let rows = fused.blocks[1].ffn2.lora_rows.as_ref().unwrap();
    assert!(rows.narrow(0, config().dim(), RANK).equal(&a));
}
