//! fp8 weights and fp8 matmuls (README-quant.md) on the CPU: quantisation error, exactness of the
//! weight-only path against the dequantised dense model (forward and LoRA gradients), ComfyUI
//! "fp8_scaled" files kept as stored, the fp8 matmul and its custom backward against their
//! references, and the umT5 encoder with fp8 matrices.

mod tiny_support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use tch::{Device, Kind, Tensor};
use wanlora_models::lora::{LoraApply, LoraSet, Multiplier};
use wanlora_models::quant::{check_fp8_matmul, Fp8Mode, Fp8Weight, Weight, E4M3_MAX};
use wanlora_models::transformer::checkpoint::{forward_backward, CheckpointPolicy};
use wanlora_models::transformer::{
    transformer_weights, LoadOptions, TransformerConfig, WanTransformer,
};
use wanlora_models::umt5::Umt5Encoder;
use wanlora_torch::cuda::fp8_quantize_rows;
use wanlora_torch::weights::{save_safetensors, WeightSet};

/// Tiny tensors: one intra-op thread keeps parallel tests fast on two cores.
fn single_threaded() {
    tch::set_num_threads(1);
}

/// libtorch has one random generator per process and tests run in parallel: whatever must come out
/// the same twice (random weights, inputs) is drawn while holding this lock.
static RNG: Mutex<()> = Mutex::new(());

fn seeded<T>(seed: i64, f: impl FnOnce() -> T) -> T {
    let _guard = RNG.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    tch::manual_seed(seed);
    f()
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    let a = a.to_kind(Kind::Double);
    let b = b.to_kind(Kind::Double);
    (&a - &b).norm().double_value(&[]) / b.norm().double_value(&[])
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a.to_kind(Kind::Double) - b.to_kind(Kind::Double))
        .abs()
        .max()
        .double_value(&[])
}

fn tiny_config() -> TransformerConfig {
    tiny_support::tiny_config(3)
}

fn random_model(mode: Fp8Mode) -> WanTransformer {
    random_model_with(mode, false)
}

/// The tiny model with its block linears (and, with `fp8_embeddings`, the text embedding and time
/// projection) stored as `mode` says.
fn random_model_with(mode: Fp8Mode, fp8_embeddings: bool) -> WanTransformer {
    // The random weights come from libtorch's generator, seeded per tensor.
    seeded(0, || {
        tiny_support::tiny_model(
            tiny_config(),
            7,
            &LoadOptions {
                fp8: mode,
                fp8_embeddings,
                offload: None,
            },
        )
    })
}

/// Two samples at different timesteps: `[2, 36, 3, 4, 4]` latents (12 tokens), 7 text tokens,
/// and a target velocity.
struct Inputs {
    x: Tensor,
    t: Tensor,
    c: Tensor,
    target: Tensor,
}

fn inputs(cfg: &TransformerConfig) -> Inputs {
    seeded(11, || Inputs {
        x: Tensor::randn([2, cfg.in_channels, 3, 4, 4], (Kind::Float, Device::Cpu)),
        t: Tensor::from_slice(&[850.0f32, 120.0]),
        c: Tensor::randn([2, 7, cfg.text_dim], (Kind::Float, Device::Cpu)),
        target: Tensor::randn([2, 16, 3, 4, 4], (Kind::Float, Device::Cpu)),
    })
}

/// Trainable adapters with non-zero B, so that every gradient is non-zero.
fn lora(cfg: &TransformerConfig) -> LoraSet {
    seeded(5, || {
        let set = LoraSet::new_trainable(cfg, 4, 4.0, Device::Cpu, 5);
        tch::no_grad(|| {
            for p in set.parameters() {
                let _ = p.shallow_clone().uniform_(-0.3, 0.3);
            }
        });
        set
    })
}

/// LoRA gradients of one checkpointed step of `model` from a fresh copy of `reference`.
fn lora_grads(
    model: &WanTransformer,
    inputs: &Inputs,
    reference: &LoraSet,
    keep_blocks: usize,
) -> Vec<Tensor> {
    let Inputs { x, t, c, target } = inputs;
    let lora = reference.detached_copy();
    let params: Vec<Tensor> = lora
        .parameters()
        .into_iter()
        .map(|p| p.set_requires_grad(true))
        .collect();
    let apply = LoraApply {
        set: &lora,
        multiplier: Multiplier::Scalar(1.0),
    };
    let _ = forward_backward(
        model,
        x,
        t,
        c,
        &apply,
        CheckpointPolicy {
            keep_blocks,
            keep_attention: 0,
            host_inputs: false,
        },
        |pred| Ok((pred - target).square().mean(Kind::Float)),
    )
    .unwrap();
    params.iter().map(|p| p.grad().copy()).collect()
}

#[test]
fn quantisation_error_of_a_random_layer_is_within_the_e4m3_bound() {
    single_threaded();
    tch::manual_seed(1);
    // Rows of very different magnitudes: the per-channel scale must follow each one.
    let magnitudes = Tensor::logspace(-3.0, 2.0, 64, 10.0, (Kind::Float, Device::Cpu));
    let w = Tensor::randn([64, 256], (Kind::Float, Device::Cpu)) * magnitudes.unsqueeze(1);
    let q = Fp8Weight::quantize(&w).unwrap();
    assert_eq!(q.codes.kind(), Kind::Float8e4m3fn);
    assert_eq!(q.scale.size(), [64, 1]);
    // scale = amax / 448 per row, and each row's largest magnitude becomes ±448.
    let amax = w.abs().amax([1i64].as_slice(), true);
    assert!(rel_err(&q.scale, &(&amax / E4M3_MAX)) < 1e-7);
    let code_amax = q
        .codes
        .to_kind(Kind::Float)
        .abs()
        .amax([1i64].as_slice(), false);
    assert_eq!(
        max_abs_diff(&code_amax, &code_amax.full_like(E4M3_MAX)),
        0.0
    );
    // Round to nearest with 3 mantissa bits: |w − w̃| ≤ |w|·2⁻⁴ for normal codes, and at most half
    // the smallest subnormal step (2⁻⁹·s / 2) below them.
    let deq = q.dequantize(Kind::Float).unwrap();
    let err = (&deq - &w).abs();
    let bound = w.abs() / 16.0 + &q.scale * 2f64.powi(-10);
    let excess = (err - bound).max().double_value(&[]);
    assert!(
        excess <= 1e-12,
        "an element exceeds the e4m3 rounding bound by {excess}"
    );
    // A Gaussian layer loses a few percent in relative norm, never nothing.
    let relative = rel_err(&deq, &w);
    assert!(
        (0.005..0.05).contains(&relative),
        "relative error {relative}"
    );
    // Dequantising to bf16 rounds the exact fp32 product once.
    let bf16 = q.dequantize(Kind::BFloat16).unwrap();
    assert_eq!(bf16.kind(), Kind::BFloat16);
    assert_eq!(max_abs_diff(&bf16, &deq.to_kind(Kind::BFloat16)), 0.0);
    // An all-zero row gets a finite scale and zero codes.
    let zero = Fp8Weight::quantize(&Tensor::zeros([2, 32], (Kind::Float, Device::Cpu))).unwrap();
    assert_eq!(
        zero.dequantize(Kind::Float)
            .unwrap()
            .abs()
            .sum(Kind::Float)
            .double_value(&[]),
        0.0
    );
}

#[test]
fn weight_only_forward_equals_the_dequantised_dense_model_exactly() {
    single_threaded();
    let fp8 = random_model(Fp8Mode::WeightOnly);
    let mut dequantised = random_model(Fp8Mode::WeightOnly);
    dequantised.set_fp8_mode(Fp8Mode::Off).unwrap();
    assert_eq!(dequantised.fp8_mode(), Fp8Mode::Off);
    let dense = random_model(Fp8Mode::Off);
    // fp8 stores the block linears in a quarter of their fp32 bytes (plus one scale per channel).
    let (fp8_bytes, dense_bytes) = (fp8.blocks[0].bytes(), dense.blocks[0].bytes());
    assert!(
        (fp8_bytes as f64) < 0.35 * dense_bytes as f64,
        "{fp8_bytes} vs {dense_bytes} bytes"
    );
    let Inputs { x, t, c, .. } = inputs(&fp8.config);
    let lora_set = lora(&fp8.config);
    let apply = LoraApply {
        set: &lora_set,
        multiplier: Multiplier::Scalar(0.8),
    };
    for lora in [None, Some(&apply)] {
        let out = tch::no_grad(|| fp8.forward(&x, &t, &c, lora)).unwrap();
        let reference = tch::no_grad(|| dequantised.forward(&x, &t, &c, lora)).unwrap();
        assert_eq!(max_abs_diff(&out, &reference), 0.0, "same matmul inputs");
        // Against the unquantised weights the difference is the quantisation error: small, not nil.
        let unquantised = tch::no_grad(|| dense.forward(&x, &t, &c, lora)).unwrap();
        let err = rel_err(&out, &unquantised);
        assert!(
            err > 1e-5 && err < 0.05,
            "relative error to fp32 weights {err}"
        );
    }
    // The text embedding and time projection in fp8 too: again exactly their dequantised model,
    // and different from the model with dense embeddings.
    let fp8_all = random_model_with(Fp8Mode::WeightOnly, true);
    let mut dequantised_all = random_model_with(Fp8Mode::WeightOnly, true);
    dequantised_all.set_fp8_mode(Fp8Mode::Off).unwrap();
    let out = tch::no_grad(|| fp8_all.forward(&x, &t, &c, None)).unwrap();
    let reference = tch::no_grad(|| dequantised_all.forward(&x, &t, &c, None)).unwrap();
    assert_eq!(max_abs_diff(&out, &reference), 0.0);
    let blocks_only = tch::no_grad(|| fp8.forward(&x, &t, &c, None)).unwrap();
    assert!(max_abs_diff(&out, &blocks_only) > 0.0);
    assert!(fp8_all.weight_bytes().device < fp8.weight_bytes().device);
}

#[test]
fn lora_gradients_through_fp8_weights_equal_those_of_the_dequantised_model() {
    single_threaded();
    let fp8 = random_model(Fp8Mode::WeightOnly);
    let mut dequantised = random_model(Fp8Mode::WeightOnly);
    dequantised.set_fp8_mode(Fp8Mode::Off).unwrap();
    let reference = lora(&fp8.config);
    let inputs = inputs(&fp8.config);
    for keep in [0, 2] {
        let got = lora_grads(&fp8, &inputs, &reference, keep);
        let want = lora_grads(&dequantised, &inputs, &reference, keep);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                w.abs().sum(Kind::Float).double_value(&[]) > 0.0,
                "parameter {i}"
            );
            assert_eq!(max_abs_diff(g, w), 0.0, "keep {keep}, parameter {i}");
        }
    }
}

/// The reference of the fp8 linear: the input quantised per row, both operands dequantised, an fp32
/// matmul.
fn fp8_linear_reference(x: &Tensor, w: &Fp8Weight, bias: &Tensor) -> Tensor {
    let (codes, scale) = fp8_quantize_rows(&x.to_kind(Kind::Float)).unwrap();
    let x_deq = Fp8Weight { codes, scale }.dequantize(Kind::Float).unwrap();
    x_deq.linear(
        &w.dequantize(Kind::Float).unwrap(),
        Some(&bias.to_kind(Kind::Float)),
    )
}

#[test]
fn fp8_matmul_forward_and_custom_backward_match_their_references() {
    single_threaded();
    check_fp8_matmul(Device::Cpu, Kind::Float).expect("libtorch's CPU scaled matmul");
    tch::manual_seed(3);
    let w = Fp8Weight::quantize(&Tensor::randn([48, 32], (Kind::Float, Device::Cpu))).unwrap();
    let bias = Tensor::randn([48], (Kind::Float, Device::Cpu));
    let x = Tensor::randn([2, 5, 32], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    let reference = fp8_linear_reference(&x.detach(), &w, &bias);
    let layer = Weight::Fp8Matmul(w);
    let y = layer.linear(&x, Some(&bias)).unwrap();
    assert_eq!(y.size(), [2, 5, 48]);
    assert!(
        rel_err(&y, &reference) < 1e-6,
        "{}",
        rel_err(&y, &reference)
    );
    // Without grad mode the scaled matmul runs alone, with the same result.
    let y_nograd = tch::no_grad(|| layer.linear(&x, Some(&bias))).unwrap();
    assert!(!y_nograd.requires_grad());
    assert_eq!(max_abs_diff(&y_nograd, &y), 0.0);
    // The custom backward: dX = dY · dequant(W), nothing for the frozen weight.
    let grad = Tensor::randn([2, 5, 48], (Kind::Float, Device::Cpu));
    (&y * &grad).sum(Kind::Float).backward();
    let Weight::Fp8Matmul(w) = &layer else {
        unreachable!()
    };
    let expected = grad.matmul(&w.dequantize(Kind::Float).unwrap());
    assert!(rel_err(&x.grad(), &expected) < 1e-6);
    // Without a bias, under grad mode too.
    let x2 = x.detach().set_requires_grad(true);
    let y2 = layer.linear(&x2, None).unwrap();
    assert!(rel_err(&(&y2 + &bias), &reference) < 1e-6);
    y2.sum(Kind::Float).backward();
    let ones = Tensor::ones([2, 5, 48], (Kind::Float, Device::Cpu));
    assert!(
        rel_err(
            &x2.grad(),
            &ones.matmul(&w.dequantize(Kind::Float).unwrap())
        ) < 1e-6
    );
    // The input really is quantised: the fp8 matmul differs from the weight-only result.
    let weight_only = x
        .detach()
        .linear(&w.dequantize(Kind::Float).unwrap(), Some(&bias));
    let err = rel_err(&reference, &weight_only);
    assert!(
        err > 1e-4 && err < 0.05,
        "activation quantisation error {err}"
    );
    // bf16 activations: the output and the gradient come back in bf16.
    let xb = x.detach().to_kind(Kind::BFloat16).set_requires_grad(true);
    let yb = layer
        .linear(&xb, Some(&bias.to_kind(Kind::BFloat16)))
        .unwrap();
    assert_eq!(yb.kind(), Kind::BFloat16);
    assert!(rel_err(&yb, &fp8_linear_reference(&xb.detach(), w, &bias)) < 1e-2);
    yb.sum(Kind::Float).backward();
    assert_eq!(xb.grad().kind(), Kind::BFloat16);
}

#[test]
fn fp8_matmul_model_stays_close_to_weight_only() {
    single_threaded();
    let weight_only = random_model(Fp8Mode::WeightOnly);
    let matmul = random_model(Fp8Mode::Matmul);
    assert_eq!(matmul.fp8_mode(), Fp8Mode::Matmul);
    let inputs = inputs(&matmul.config);
    let Inputs { x, t, c, .. } = &inputs;
    let out = tch::no_grad(|| matmul.forward(x, t, c, None)).unwrap();
    let reference = tch::no_grad(|| weight_only.forward(x, t, c, None)).unwrap();
    let err = rel_err(&out, &reference);
    assert!(err > 1e-5 && err < 0.05, "forward relative error {err}");
    let reference_lora = lora(&matmul.config);
    let got = lora_grads(&matmul, &inputs, &reference_lora, 1);
    let want = lora_grads(&weight_only, &inputs, &reference_lora, 1);
    let flat =
        |g: &[Tensor]| Tensor::cat(&g.iter().map(|t| t.reshape([-1])).collect::<Vec<_>>(), 0);
    let err = rel_err(&flat(&got), &flat(&want));
    assert!(err < 0.1, "LoRA gradient relative error {err}");
    // Switching modes in place reaches the same numbers as loading in that mode.
    let mut switched = random_model(Fp8Mode::WeightOnly);
    switched.set_fp8_mode(Fp8Mode::Matmul).unwrap();
    let out_switched = tch::no_grad(|| switched.forward(x, t, c, None)).unwrap();
    assert_eq!(max_abs_diff(&out_switched, &out), 0.0);
}

/// Rewrites a safetensors file with every 2-D `.weight` that `select` picks stored as ComfyUI's
/// "fp8_scaled": F8_E4M3 codes with one fp32 `scale_weight` per tensor.
fn write_fp8_scaled(source: &Path, dest: &Path, select: impl Fn(&str) -> bool) {
    let set = WeightSet::open(source).unwrap();
    let mut tensors = Vec::new();
    for name in set.raw_names() {
        let t = set.load(name, Kind::Float, Device::Cpu).unwrap();
        if t.dim() == 2 && name.ends_with(".weight") && select(name) {
            let scale = t.abs().max() / E4M3_MAX;
            let codes = (&t / &scale).to_kind(Kind::Float8e4m3fn);
            let base = name.strip_suffix(".weight").unwrap();
            tensors.push((name.to_string(), codes));
            tensors.push((format!("{base}.scale_weight"), scale.reshape([1])));
        } else {
            tensors.push((name.to_string(), t));
        }
    }
    save_safetensors(dest, &tensors, &BTreeMap::new()).unwrap();
}

#[test]
fn comfyui_fp8_scaled_transformer_is_kept_as_stored() {
    single_threaded();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("wan_fp8_scaled.safetensors");
    write_fp8_scaled(
        &fixtures().join("transformer/comfy.safetensors"),
        &file,
        |name| name.contains("blocks."),
    );
    let cfg =
        TransformerConfig::from_json_file(&fixtures().join("transformer/diffusers/config.json"))
            .unwrap();
    let open = || transformer_weights(WeightSet::open(&file).unwrap()).unwrap();
    let load = |mode| {
        WanTransformer::load_with(
            &open(),
            Some(cfg.clone()),
            Kind::Float,
            Device::Cpu,
            &LoadOptions {
                fp8: mode,
                ..LoadOptions::default()
            },
        )
        .unwrap()
    };
    let fp8 = load(Fp8Mode::WeightOnly);
    // The codes are the file's, and the per-tensor scale became every channel's scale.
    let stored = open()
        .inner()
        .load_fp8("blocks.1.ffn.2.weight", Device::Cpu)
        .unwrap()
        .unwrap();
    let Weight::Fp8(kept) = &fp8.blocks[1].ffn2.weight else {
        panic!("ffn.2 is not an fp8 weight");
    };
    let as_bytes = |t: &Tensor| t.view_dtype(Kind::Uint8).to_kind(Kind::Int64);
    assert_eq!(
        max_abs_diff(&as_bytes(&kept.codes), &as_bytes(&stored.codes)),
        0.0
    );
    assert_eq!(
        max_abs_diff(
            &kept.scale,
            &stored.scale.expand([kept.codes.size()[0], 1], false)
        ),
        0.0
    );
    // Its output is exactly that of the loader's dequantisation (codes · scale in fp32): no
    // re-quantisation per channel happened.
    let dense = load(Fp8Mode::Off);
    let (x, t, c) = {
        let inputs = WeightSet::open(&fixtures().join("transformer/inputs.safetensors")).unwrap();
        let get = |n: &str| inputs.load(n, Kind::Float, Device::Cpu).unwrap();
        (
            get("hidden_states"),
            get("timestep"),
            get("encoder_hidden_states"),
        )
    };
    let out = tch::no_grad(|| fp8.forward(&x, &t, &c, None)).unwrap();
    let reference = tch::no_grad(|| dense.forward(&x, &t, &c, None)).unwrap();
    assert_eq!(max_abs_diff(&out, &reference), 0.0);
}

#[test]
fn umt5_with_fp8_matrices() {
    single_threaded();
    let umt5 = fixtures().join("umt5");
    let cases = WeightSet::open(&umt5.join("cases.safetensors")).unwrap();
    let case = |n: &str, kind| cases.load(n, kind, Device::Cpu).unwrap();
    let (ids, mask) = (
        case("input_ids", Kind::Int64),
        case("attention_mask", Kind::Int64),
    );
    let reference = case("context", Kind::Float);
    let encode = |e: &Umt5Encoder| e.encode(&ids, &mask).unwrap().narrow(1, 0, 160);

    // Quantised from the HF folder: close to transformers, not equal. Each matrix loses ≈ 2.5 % in
    // relative norm; this tiny random encoder amplifies that to ≈ 8 % at its output (ComfyUI's own
    // per-tensor fp8 file of the same weights gives ≈ 7 %).
    let fp8 =
        Umt5Encoder::from_path_with(&umt5.join("hf"), Kind::Float, Device::Cpu, true).unwrap();
    let err = rel_err(&encode(&fp8), &reference);
    assert!(err > 1e-3 && err < 0.15, "relative error {err}");

    // A ComfyUI fp8_scaled file (embedding included) is kept as stored: exactly the dense encoder
    // of the loader's dequantised weights.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("umt5_fp8_scaled.safetensors");
    write_fp8_scaled(&umt5.join("umt5_comfy_fp16.safetensors"), &file, |_| true);
    let kept = Umt5Encoder::from_path_with(&file, Kind::Float, Device::Cpu, true).unwrap();
    let dense = Umt5Encoder::from_path_with(&file, Kind::Float, Device::Cpu, false).unwrap();
    assert_eq!(max_abs_diff(&encode(&kept), &encode(&dense)), 0.0);
    let err = rel_err(&encode(&kept), &reference);
    assert!(err > 1e-3 && err < 0.15, "relative error {err}");
}

/// A tensor missing from the file is named in the load error in fp8 mode too (the loader's
/// placeholders are never quantised, stacked or streamed).
#[test]
fn missing_weights_are_reported_in_fp8_mode() {
    single_threaded();
    let dir = tempfile::tempdir().unwrap();
    let without = |source: &Path, dest: &Path, missing: &str| {
        let set = WeightSet::open(source).unwrap();
        let kept: Vec<(String, Tensor)> = set
            .raw_names()
            .into_iter()
            .filter(|n| !n.ends_with(missing))
            .map(|n| {
                (
                    n.to_string(),
                    set.load(n, Kind::Float, Device::Cpu).unwrap(),
                )
            })
            .collect();
        save_safetensors(dest, &kept, &BTreeMap::new()).unwrap();
    };

    let umt5 = dir.path().join("umt5.safetensors");
    let missing = "encoder.block.1.layer.0.SelfAttention.k.weight";
    without(
        &fixtures().join("umt5/umt5_comfy_fp16.safetensors"),
        &umt5,
        missing,
    );
    let err = Umt5Encoder::from_path_with(&umt5, Kind::Float, Device::Cpu, true)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains(&format!("missing {missing}")), "{err}");

    let wan = dir.path().join("wan.safetensors");
    without(
        &fixtures().join("transformer/comfy.safetensors"),
        &wan,
        "blocks.1.ffn.0.weight",
    );
    let cfg =
        TransformerConfig::from_json_file(&fixtures().join("transformer/diffusers/config.json"))
            .unwrap();
    for fp8 in [Fp8Mode::WeightOnly, Fp8Mode::Matmul] {
        let err = WanTransformer::load_with(
            &transformer_weights(WeightSet::open(&wan).unwrap()).unwrap(),
            Some(cfg.clone()),
            Kind::Float,
            Device::Cpu,
            &LoadOptions {
                fp8,
                fp8_embeddings: true,
                offload: Some(wanlora_models::transformer::BlockOffload {
                    blocks: 2,
                    ring_slots: 2,
                }),
            },
        )
        .err()
        .unwrap()
        .to_string();
        assert!(
            err.contains("missing blocks.1.ffn.0.weight"),
            "{fp8:?}: {err}"
        );
    }
}

/// `bench step --max-memory-gib` goes through this: out-of-range fractions are refused with the
/// range in the message (valid ones need CUDA, whose allocator reads the setting).
#[test]
fn memory_cap_refuses_fractions_outside_zero_to_one() {
    for bad in [0.0, -0.5, 1.5] {
        let err = wanlora_torch::cuda::set_per_process_memory_fraction(bad)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("(0, 1]"), "{bad}: {err}");
    }
}
