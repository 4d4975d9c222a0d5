//! The recorded attention (C++ helper): its output and the gradients of its replay equal libtorch's
//! own attention and autograd.

use tch::{Device, Kind, Tensor};
use wanlora_torch::cuda::{attention_record, attention_replay};

fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).norm().double_value(&[]) / b.norm().double_value(&[])
}

#[test]
fn replay_gives_the_output_and_gradients_of_plain_attention() {
    wanlora_torch::init();
    tch::manual_seed(7);
    // [B, H, L, d] as views of [B, L, H, d], the layout the transformer passes.
    let make = |l: i64| Tensor::randn([2, l, 3, 16], (Kind::Float, Device::Cpu)).transpose(1, 2);
    let (q, k, v) = (make(24), make(24), make(24));
    let weight = Tensor::randn([2, 3, 24, 16], (Kind::Float, Device::Cpu));

    let leaf = |t: &Tensor| t.detach().set_requires_grad(true);
    let (q1, k1, v1) = (leaf(&q), leaf(&k), leaf(&v));
    let plain = Tensor::scaled_dot_product_attention(
        &q1,
        &k1,
        &v1,
        None::<Tensor>,
        0.0,
        false,
        None,
        false,
    );
    (&plain * &weight).sum(Kind::Float).backward();

    let (recorded, record) = tch::no_grad(|| attention_record(&q, &k, &v)).unwrap();
    let record = record.expect("libtorch's CPU flash kernel is recorded");
    assert!(rel_err(&recorded, &plain) < 1e-6);

    let (q2, k2, v2) = (leaf(&q), leaf(&k), leaf(&v));
    let replayed = attention_replay(&record, &q2, &k2, &v2).unwrap();
    assert!(replayed.requires_grad());
    assert!(rel_err(&replayed, &plain) < 1e-6);
    (&replayed * &weight).sum(Kind::Float).backward();
    for (name, a, b) in [("q", &q2, &q1), ("k", &k2, &k1), ("v", &v2, &v1)] {
        let err = rel_err(&a.grad(), &b.grad());
        assert!(err < 1e-5, "d{name}: relative error {err}");
    }
}

#[test]
fn a_replay_of_another_shape_is_refused() {
    wanlora_torch::init();
    let q = Tensor::randn([1, 2, 8, 16], (Kind::Float, Device::Cpu));
    let (_, record) = tch::no_grad(|| attention_record(&q, &q, &q)).unwrap();
    let other = Tensor::randn([1, 2, 9, 16], (Kind::Float, Device::Cpu));
    let err = attention_replay(&record.unwrap(), &other, &other, &other).unwrap_err();
    assert!(err.to_string().contains("does not match"), "{err}");
}

/// On a CUDA machine (scripts/gpu): the recorded attention through libtorch's GPU kernel (cuDNN or
/// flash, bf16) replays to the same gradients as autograd through scaled_dot_product_attention.
/// Without CUDA there is nothing to check and the test says so.
#[test]
fn cuda_replay_matches_autograd_in_bf16() {
    wanlora_torch::init();
    if !tch::Cuda::is_available() {
        eprintln!("no CUDA device: the GPU variant is checked by scripts/gpu/step.sh");
        return;
    }
    tch::manual_seed(3);
    let dev = Device::Cuda(0);
    let (b, l, h, d) = (2, 300, 4, 128);
    let make = || Tensor::randn([b, l, h, d], (Kind::BFloat16, dev));
    let (q, k, v) = (make(), make(), make());
    // The gradient reaches the attention through the transpose that merges the heads, as in the
    // transformer (libtorch 2.11's cuDNN backward is wrong for other gradient layouts).
    let weight = Tensor::randn([b, l, h, d], (Kind::BFloat16, dev));
    let heads = |t: &Tensor| t.transpose(1, 2);
    let leaf = |t: &Tensor| t.detach().set_requires_grad(true);
    let (q1, k1, v1) = (leaf(&q), leaf(&k), leaf(&v));
    let plain = Tensor::scaled_dot_product_attention(
        &heads(&q1),
        &heads(&k1),
        &heads(&v1),
        None::<Tensor>,
        0.0,
        false,
        None,
        false,
    );
    (heads(&plain) * &weight).sum(Kind::Float).backward();
    let (recorded, record) =
        tch::no_grad(|| attention_record(&heads(&q), &heads(&k), &heads(&v))).unwrap();
    let record = record.expect("a fused CUDA kernel is recorded");
    assert!(rel_err(&recorded.to_kind(Kind::Float), &plain.to_kind(Kind::Float)) < 1e-2);
    let (q2, k2, v2) = (leaf(&q), leaf(&k), leaf(&v));
    let replayed = attention_replay(&record, &heads(&q2), &heads(&k2), &heads(&v2)).unwrap();
    (heads(&replayed) * &weight).sum(Kind::Float).backward();
    for (name, a, b) in [("q", &q2, &q1), ("k", &k2, &k1), ("v", &v2, &v1)] {
        let err = rel_err(
            &a.grad().to_kind(Kind::Float),
            &b.grad().to_kind(Kind::Float),
        );
        eprintln!("cuda d{name}: relative error {err:.2e}");
        assert!(err < 2e-2, "d{name}: relative error {err}");
    }
}

/// On a CUDA machine: the fused RoPE kernel (NVRTC) equals the libtorch formula within one bf16
/// rounding, forward and backward.
#[test]
fn cuda_fused_rope_matches_the_formula() {
    wanlora_torch::init();
    if !tch::Cuda::is_available() {
        eprintln!("no CUDA device: the GPU variant is checked by scripts/gpu/step.sh");
        return;
    }
    wanlora_torch::cuda::fused_kernels(0).expect("NVRTC compiles the fused kernels");
    tch::manual_seed(5);
    let dev = Device::Cuda(0);
    let (b, n, h, d) = (2, 96, 3, 128);
    let angles = Tensor::rand([n, d / 2], (Kind::Float, dev)) * 6.0;
    let cos = angles.cos().repeat_interleave_self_int(2, -1, None);
    let sin = angles.sin();
    let sin_signed = Tensor::stack(&[-&sin, sin], -1).reshape([n, d]);
    let (cos, sin_signed) = (
        cos.to_kind(Kind::BFloat16),
        sin_signed.to_kind(Kind::BFloat16),
    );
    let x = Tensor::randn([b, n, h, d], (Kind::BFloat16, dev)).set_requires_grad(true);
    let formula = |x: &Tensor| {
        let c = cos.to_kind(Kind::Float).view([1, n, 1, d]);
        let s = sin_signed.to_kind(Kind::Float).view([1, n, 1, d]);
        let xf = x.to_kind(Kind::Float);
        let swapped = xf.view([b, n, h, d / 2, 2]).flip([-1]).view([b, n, h, d]);
        &xf * c + swapped * s
    };
    let fused = wanlora_torch::cuda::fused_rope(&x, &cos, &sin_signed).unwrap();
    let expected = formula(&x.detach());
    let err = rel_err(&fused.to_kind(Kind::Float), &expected);
    eprintln!("fused RoPE forward: relative error {err:.2e}");
    assert!(err < 4e-3, "forward relative error {err}");
    let weight = Tensor::randn([b, n, h, d], (Kind::BFloat16, dev));
    (&fused * &weight).sum(Kind::Float).backward();
    let xr = x.detach().to_kind(Kind::Float).set_requires_grad(true);
    (formula(&xr) * weight.to_kind(Kind::Float))
        .sum(Kind::Float)
        .backward();
    let err = rel_err(&x.grad().to_kind(Kind::Float), &xr.grad());
    eprintln!("fused RoPE backward: relative error {err:.2e}");
    assert!(err < 4e-3, "backward relative error {err}");
}

/// On a CUDA machine: the fused gated residual equals `x + y·gate` within one bf16 rounding, for a
/// shared and a per-sample gate, and its backward gives `grad` and `grad·gate`.
#[test]
fn cuda_fused_gated_add_matches_addcmul() {
    wanlora_torch::init();
    if !tch::Cuda::is_available() {
        eprintln!("no CUDA device: the GPU variant is checked by scripts/gpu/step.sh");
        return;
    }
    wanlora_torch::cuda::fused_kernels(0).expect("NVRTC compiles the fused kernels");
    tch::manual_seed(9);
    let dev = Device::Cuda(0);
    for gate_rows in [1, 2] {
        let x = Tensor::randn([2, 50, 64], (Kind::BFloat16, dev)).set_requires_grad(true);
        let y = Tensor::randn([2, 50, 64], (Kind::BFloat16, dev)).set_requires_grad(true);
        let gate = Tensor::randn([gate_rows, 1, 64], (Kind::Float, dev));
        let fused = wanlora_torch::cuda::fused_gated_add(&x, &y, &gate).unwrap();
        let g16 = gate.to_kind(Kind::BFloat16).to_kind(Kind::Float);
        let expected = x.detach().to_kind(Kind::Float) + y.detach().to_kind(Kind::Float) * &g16;
        let err = rel_err(&fused.to_kind(Kind::Float), &expected);
        assert!(
            err < 4e-3,
            "gate rows {gate_rows}: forward relative error {err}"
        );
        let w = Tensor::randn([2, 50, 64], (Kind::BFloat16, dev));
        (&fused * &w).sum(Kind::Float).backward();
        let wf = w.to_kind(Kind::Float);
        assert!(rel_err(&x.grad().to_kind(Kind::Float), &wf) < 1e-6);
        let err = rel_err(&y.grad().to_kind(Kind::Float), &(&wf * &g16));
        eprintln!("fused gated add (gate rows {gate_rows}): backward relative error {err:.2e}");
        assert!(err < 4e-3, "gate rows {gate_rows}: dy relative error {err}");
    }
}

/// On a CUDA machine: RMSNorm over the whole row followed by RoPE per head, in one kernel, equals
/// libtorch's `rms_norm` followed by the RoPE kernel (the normalised value rounded to bf16 in
/// between, as both round), at a width that fills whole warps (5120, A14B) and one that does not
/// (384 = 48 threads); and it refuses inputs that need a graph.
#[test]
fn cuda_fused_rms_rope_equals_rms_norm_then_rope() {
    wanlora_torch::init();
    if !tch::Cuda::is_available() {
        eprintln!("no CUDA device: the GPU variant is checked by scripts/gpu/step.sh");
        return;
    }
    wanlora_torch::cuda::fused_kernels(0).expect("NVRTC compiles the fused kernels");
    tch::manual_seed(13);
    let dev = Device::Cuda(0);
    for (heads, d) in [(40, 128), (3, 128)] {
        let (b, n, width) = (2, 77, heads * d);
        let angles = Tensor::rand([n, d / 2], (Kind::Float, dev)) * 6.0;
        let cos = angles
            .cos()
            .repeat_interleave_self_int(2, -1, None)
            .to_kind(Kind::BFloat16);
        let sin = angles.sin();
        let sin_signed = Tensor::stack(&[-&sin, sin], -1)
            .reshape([n, d])
            .to_kind(Kind::BFloat16);
        let x = Tensor::randn([b, n, width], (Kind::BFloat16, dev)) * 3.0;
        let weight = (Tensor::rand([width], (Kind::Float, dev)) + 0.5).to_kind(Kind::BFloat16);
        let eps = 1e-6;
        let fused =
            wanlora_torch::cuda::fused_rms_rope(&x, &weight, &cos, &sin_signed, eps).unwrap();
        let normed = x.rms_norm([width], Some(&weight), Some(eps));
        let two_kernels =
            wanlora_torch::cuda::fused_rope(&normed.view([b, n, heads, d]), &cos, &sin_signed)
                .unwrap()
                .view([b, n, width]);
        let err = rel_err(
            &fused.to_kind(Kind::Float),
            &two_kernels.to_kind(Kind::Float),
        );
        let differing = fused
            .ne_tensor(&two_kernels)
            .sum(Kind::Int64)
            .int64_value(&[]);
        eprintln!(
            "fused RMSNorm+RoPE (width {width}): relative error {err:.2e}, {differing} of {} \
             values differ",
            fused.numel()
        );
        // The row's mean square may be summed in another order: a last-bit difference of the
        // normalised value now and then, nothing more.
        assert!(err < 1e-3, "width {width}: relative error {err}");
        assert!(
            (differing as f64) < 0.01 * fused.numel() as f64,
            "width {width}: {differing} values differ"
        );
    }
    let x = Tensor::randn([1, 4, 256], (Kind::BFloat16, dev)).set_requires_grad(true);
    let w = Tensor::ones([256], (Kind::BFloat16, dev));
    let tables = Tensor::ones([4, 128], (Kind::BFloat16, dev));
    assert!(wanlora_torch::cuda::fused_rms_rope(&x, &w, &tables, &tables, 1e-6).is_err());
}

/// On a CUDA machine (sm89+): the one-kernel row-wise fp8 quantisation of bf16 activations gives
/// exactly libtorch's codes and scales (amax, scale = amax / 448, codes = e4m3(x · 1/scale)), for
/// the widths of A14B's linear inputs and rows of zeros.
#[test]
fn cuda_fused_fp8_quantisation_equals_libtorch() {
    wanlora_torch::init();
    if !tch::Cuda::is_available() {
        eprintln!("no CUDA device: the GPU variant is checked by scripts/gpu/step.sh");
        return;
    }
    wanlora_torch::cuda::fused_kernels(0).expect("NVRTC compiles the fused kernels");
    tch::manual_seed(17);
    let dev = Device::Cuda(0);
    for width in [5120, 13824, 40] {
        let x = Tensor::randn([300, width], (Kind::BFloat16, dev))
            * Tensor::rand([300, 1], (Kind::Float, dev)).to_kind(Kind::BFloat16)
            * 5.0;
        let _ = x.narrow(0, 7, 2).zero_();
        let (codes, scale) = wanlora_torch::cuda::fp8_quantize_rows(&x).unwrap();
        let amax = x
            .abs()
            .amax([-1], true)
            .to_kind(Kind::Float)
            .clamp_min(1e-12);
        let expected_scale = &amax / 448.0;
        let expected_codes =
            (x.to_kind(Kind::Float) * expected_scale.reciprocal()).to_kind(Kind::Float8e4m3fn);
        let scale_diff = (&scale - &expected_scale).abs().max().double_value(&[]);
        let differing = codes
            .to_kind(Kind::Float)
            .ne_tensor(&expected_codes.to_kind(Kind::Float))
            .sum(Kind::Int64)
            .int64_value(&[]);
        eprintln!("fp8 quantisation (width {width}): scale max diff {scale_diff:e}, {differing} codes differ");
        assert_eq!(scale_diff, 0.0, "width {width}: scales differ");
        assert_eq!(differing, 0, "width {width}: codes differ");
    }
}
