//! The uint4 quantizer against torchao (fixtures from scripts/fixtures/gen_uint4.py): codes, scales,
//! zero points and the dequantised weight, bit for bit, on a Gaussian layer with outliers and on
//! hand-made edge groups (constant, all-zero, tiny, huge outliers, rounding ties).

use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};
use wanlora_models::uint4::{pack, unpack, Uint4Weight, EPS, GROUP_SIZE};
use wanlora_torch::weights::WeightSet;

fn fixture() -> WeightSet {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/uint4/uint4.safetensors");
    WeightSet::open(&path).expect("run scripts/fixtures/gen_uint4.py")
}

fn load(set: &WeightSet, name: &str, kind: Kind) -> Tensor {
    set.load(name, kind, Device::Cpu).unwrap()
}

/// Positions where two tensors differ (after a lossless cast to f64), for a helpful failure.
fn mismatches(ours: &Tensor, reference: &Tensor) -> i64 {
    assert_eq!(ours.size(), reference.size());
    ours.to_kind(Kind::Double)
        .ne_tensor(&reference.to_kind(Kind::Double))
        .sum(Kind::Int64)
        .int64_value(&[])
}

fn check_against_torchao(name: &str) {
    let set = fixture();
    let weight = load(&set, &format!("{name}.weight"), Kind::BFloat16);
    let q = Uint4Weight::quantize(&weight).unwrap();
    let [out, inp] = weight.size()[..] else {
        panic!("matrix")
    };
    assert_eq!(q.packed.size(), [out, inp / 2], "two codes per byte");
    assert_eq!(q.packed.kind(), Kind::Uint8);
    assert_eq!(q.scale.kind(), Kind::BFloat16);
    assert_eq!(q.zero_point.kind(), Kind::Uint8);
    assert_eq!(q.scale.size(), [out, inp / GROUP_SIZE]);
    for (label, ours, kind) in [
        ("codes", q.codes().unwrap(), Kind::Uint8),
        ("scale", q.scale.shallow_clone(), Kind::BFloat16),
        ("zero_point", q.zero_point.shallow_clone(), Kind::Uint8),
        (
            "dequantized",
            q.dequantize(Kind::BFloat16).unwrap(),
            Kind::BFloat16,
        ),
    ] {
        let reference = load(&set, &format!("{name}.{label}"), kind);
        assert_eq!(ours.kind(), kind, "{name}.{label} dtype");
        assert_eq!(
            mismatches(&ours, &reference),
            0,
            "{name}.{label} differs from torchao"
        );
    }
}

#[test]
fn gaussian_layer_with_outliers_matches_torchao_bit_for_bit() {
    check_against_torchao("random");
}

#[test]
fn edge_groups_match_torchao_bit_for_bit() {
    check_against_torchao("edges");
}

#[test]
fn edge_groups_behave_as_the_scheme_says() {
    let set = fixture();
    let weight = load(&set, "edges.weight", Kind::BFloat16);
    let q = Uint4Weight::quantize(&weight).unwrap();
    let scale = |row: i64| q.scale.double_value(&[row, 0]);
    let zp = |row: i64| q.zero_point.int64_value(&[row, 0]);
    let deq = q.dequantize(Kind::Float).unwrap();
    // Row 2 is all zeros: the scale is clamped to eps and zero comes back exactly.
    assert_eq!(scale(2), EPS);
    assert_eq!(
        deq.get(2).narrow(0, 0, 64).abs().max().double_value(&[]),
        0.0
    );
    // Row 0 is a constant positive group: zero is kept representable (lo = 0), so zp = 0 and the
    // constant maps to the top code.
    assert_eq!(zp(0), 0);
    assert_eq!(
        q.codes()
            .unwrap()
            .get(0)
            .narrow(0, 0, 64)
            .min()
            .int64_value(&[]),
        15
    );
    // Row 1 is constant negative: zp = 15, every code 0.
    assert_eq!(zp(1), 15);
    assert_eq!(
        q.codes()
            .unwrap()
            .get(1)
            .narrow(0, 0, 64)
            .max()
            .int64_value(&[]),
        0
    );
    // Row 7 has one outlier of 40: the scale is 40/15 and the small values collapse to zero.
    assert!((scale(7) - 40.0 / 15.0).abs() < 0.01);
    let row7 = deq.get(7).narrow(0, 0, 64);
    assert_eq!(row7.ne(0.0).sum(Kind::Int64).int64_value(&[]), 1);
}

#[test]
fn packing_round_trips_and_puts_the_even_input_in_the_low_nibble() {
    let codes = Tensor::from_slice(&[1u8, 2, 15, 0, 7, 9, 3, 12]).view([2, 4]);
    let packed = pack(&codes).unwrap();
    assert_eq!(packed.size(), [2, 2]);
    assert_eq!(packed.int64_value(&[0, 0]), 1 | (2 << 4));
    assert_eq!(packed.int64_value(&[0, 1]), 15);
    assert!(unpack(&packed).unwrap().equal(&codes));
}

#[test]
fn weights_that_cannot_be_grouped_are_refused() {
    assert!(Uint4Weight::supports(128));
    assert!(!Uint4Weight::supports(96));
    let err = Uint4Weight::quantize(&Tensor::zeros([4, 96], (Kind::BFloat16, Device::Cpu)))
        .unwrap_err()
        .to_string();
    assert!(err.contains("divisible by 64"), "{err}");
}

#[test]
fn a_float32_weight_is_rounded_to_bf16_first() {
    let w = wanlora_torch::rng::torch_randn(31, &[8, 128], Device::Cpu).unwrap();
    let from_f32 = Uint4Weight::quantize(&w).unwrap();
    let from_bf16 = Uint4Weight::quantize(&w.to_kind(Kind::BFloat16)).unwrap();
    assert!(from_f32.packed.equal(&from_bf16.packed));
    assert!(from_f32.scale.equal(&from_bf16.scale));
    // 4 bits per weight: a Gaussian layer keeps ≈ 90 % of its norm exactly.
    let err = (from_f32.dequantize(Kind::Float).unwrap() - &w)
        .norm()
        .double_value(&[])
        / w.norm().double_value(&[]);
    assert!(err > 0.02 && err < 0.2, "relative error {err}");
}

#[test]
fn the_4bit_linear_backpropagates_through_a_weight_it_dequantises_again() {
    use wanlora_torch::rng::torch_randn;
    let w = torch_randn(41, &[96, 128], Device::Cpu).unwrap() * 0.05;
    let bias = torch_randn(42, &[96], Device::Cpu).unwrap() * 0.1;
    let q = Uint4Weight::quantize(&w).unwrap();
    let dense = q.dequantize(Kind::Float).unwrap();
    let x = torch_randn(43, &[3, 5, 128], Device::Cpu).unwrap();
    let grad = torch_randn(44, &[3, 5, 96], Device::Cpu).unwrap();

    let x4 = x.detach().set_requires_grad(true);
    let y4 = quant_weight(q).linear(&x4, Some(&bias)).unwrap();
    let xd = x.detach().set_requires_grad(true);
    let yd = xd.linear(&dense, Some(&bias));
    assert!(
        y4.equal(&yd),
        "the forward is the dense linear of the dequantised weight"
    );
    (&y4 * &grad).sum(Kind::Float).backward();
    (&yd * &grad).sum(Kind::Float).backward();
    let (g4, gd) = (x4.grad(), xd.grad());
    let diff = (&g4 - &gd).abs().max().double_value(&[]);
    assert!(diff < 1e-6, "input gradients differ by {diff}");
    assert!(g4.abs().sum(Kind::Float).double_value(&[]) > 0.0);
    // Without a graph the same function gives the same output.
    let y_no_grad = tch::no_grad(|| {
        quant_weight(Uint4Weight::quantize(&w).unwrap())
            .linear(&x, Some(&bias))
            .unwrap()
    });
    assert!(y_no_grad.equal(&yd));
}

/// On a CUDA machine (scripts/gpu/step.sh): the NVRTC dequantisation kernel gives the CPU path's
/// bf16 weight bit for bit, and the 4-bit linear's bf16 input gradient matches the dense one.
/// Without CUDA there is nothing to check and the test says so.
#[test]
fn cuda_uint4_kernel_matches_the_cpu_dequantisation() {
    wanlora_torch::init();
    if !tch::Cuda::is_available() {
        eprintln!("no CUDA device: the GPU variant is checked by scripts/gpu/step.sh");
        return;
    }
    use wanlora_torch::rng::torch_randn;
    let dev = Device::Cuda(0);
    wanlora_torch::cuda::fused_kernels(0).expect("NVRTC compiles the fused kernels");
    let w = torch_randn(51, &[320, 512], Device::Cpu).unwrap() * 0.05;
    let q = Uint4Weight::quantize(&w).unwrap();
    let cpu = q.dequantize(Kind::BFloat16).unwrap();
    let on_gpu = q.map(&mut |t| t.f_to_device(dev)).unwrap();
    let gpu = on_gpu
        .dequantize(Kind::BFloat16)
        .unwrap()
        .to_device(Device::Cpu);
    let mismatches = cpu.ne_tensor(&gpu).sum(Kind::Int64).int64_value(&[]);
    assert_eq!(mismatches, 0, "kernel and CPU dequantisation differ");
    let x = torch_randn(52, &[2, 64, 512], dev)
        .unwrap()
        .to_kind(Kind::BFloat16);
    let x4 = x.detach().set_requires_grad(true);
    let y4 = quant_weight(on_gpu).linear(&x4, None).unwrap();
    let xd = x.detach().set_requires_grad(true);
    let yd = xd.linear::<Tensor>(&cpu.to_device(dev), None);
    assert!(
        y4.equal(&yd),
        "the forward is the dense linear of the dequantised weight"
    );
    y4.sum(Kind::Float).backward();
    yd.sum(Kind::Float).backward();
    let err = (x4.grad().to_kind(Kind::Float) - xd.grad().to_kind(Kind::Float))
        .norm()
        .double_value(&[])
        / xd.grad().to_kind(Kind::Float).norm().double_value(&[]);
    eprintln!("cuda uint4 linear dX: relative error {err:.2e}");
    assert!(err < 1e-2, "relative error {err}");
}

fn quant_weight(q: Uint4Weight) -> Weight {
    Weight::Uint4(q)
}

// ---- 4-bit experts with an accuracy recovery adapter -------------------------------------------

use std::sync::Mutex;
use wanlora_models::lora::{LoraApply, LoraSet, LoraTarget, Multiplier};
use wanlora_models::quant::{Fp8Mode, Weight};
use wanlora_models::recovery::RecoveryAdapter;
use wanlora_models::transformer::checkpoint::{forward_backward, CheckpointPolicy};
use wanlora_models::transformer::{Linear, LoadOptions, TransformerConfig, WanTransformer};
use wanlora_spec::Expert;
use wanlora_torch::weights::{save_safetensors, RandomWeights, WeightError, WeightSource};

static RNG: Mutex<()> = Mutex::new(());

fn seeded<T>(seed: i64, f: impl FnOnce() -> T) -> T {
    let _guard = RNG.lock().unwrap_or_else(|p| p.into_inner());
    tch::manual_seed(seed);
    f()
}

/// Widths that are multiples of 64 (so every block linear is 4-bit), except the text embedding.
fn config() -> TransformerConfig {
    TransformerConfig {
        num_attention_heads: 2,
        attention_head_dim: 32,
        text_dim: 32,
        freq_dim: 32,
        ffn_dim: 128,
        num_layers: 2,
        ..TransformerConfig::wan22_i2v_a14b()
    }
}

const WEIGHTS: RandomWeights = RandomWeights { std: 0.05, seed: 3 };

/// An adapter file as AI Toolkit's two-expert model names it: `transformer_1` (high noise) and
/// `transformer_2` (low noise) adapters for a few linears, in original or diffusers naming, plus
/// a key outside the blocks and `.alpha` tensors that must not matter.
fn write_adapter(path: &Path, rank: i64) {
    let cfg = config();
    let mut tensors = Vec::new();
    seeded(11, || {
        for (expert, naming_diffusers) in [("transformer_1", false), ("transformer_2", true)] {
            for block in 0..2 {
                for t in [LoraTarget::SelfQ, LoraTarget::CrossV, LoraTarget::Ffn2] {
                    let (inp, out) = t.dims(&cfg);
                    let module = if naming_diffusers {
                        t.diffusers_path()
                    } else {
                        t.path()
                    };
                    let stem = format!("diffusion_model.{expert}.blocks.{block}.{module}");
                    let a = Tensor::randn([rank, inp], (Kind::Float, Device::Cpu)) * 0.1;
                    let b = Tensor::randn([out, rank], (Kind::Float, Device::Cpu)) * 0.1;
                    tensors.push((format!("{stem}.lora_A.weight"), a.to_kind(Kind::BFloat16)));
                    tensors.push((format!("{stem}.lora_B.weight"), b.to_kind(Kind::BFloat16)));
                    tensors.push((format!("{stem}.alpha"), Tensor::from(1.0f32)));
                }
            }
        }
    });
    tensors.push((
        "diffusion_model.transformer_1.condition_embedder.time_proj.lora_A.weight".into(),
        Tensor::zeros([rank, 64], (Kind::BFloat16, Device::Cpu)),
    ));
    save_safetensors(path, &tensors, &Default::default()).unwrap();
}

/// RandomWeights seeds libtorch's one generator per tensor: loads hold the lock so that parallel
/// tests do not draw in between.
fn load_recovered(adapter: &RecoveryAdapter) -> WanTransformer {
    seeded(0, || random_uint4(Some(adapter)))
}

fn random_uint4(adapter: Option<&RecoveryAdapter>) -> WanTransformer {
    WanTransformer::load_uint4(
        &WEIGHTS,
        config(),
        Kind::Float,
        Device::Cpu,
        &LoadOptions::default(),
        adapter,
        None,
    )
    .unwrap()
}

fn inputs(cfg: &TransformerConfig) -> (Tensor, Tensor, Tensor) {
    seeded(5, || {
        (
            Tensor::randn([1, cfg.in_channels, 2, 4, 4], (Kind::Float, Device::Cpu)),
            Tensor::from_slice(&[700.0f32]),
            Tensor::randn([1, 8, cfg.text_dim], (Kind::Float, Device::Cpu)),
        )
    })
}

#[test]
fn an_expert_gets_its_own_adapters_and_only_the_named_linears_are_4_bit() {
    tch::set_num_threads(1);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ara.safetensors");
    write_adapter(&path, 4);
    let cfg = config();
    let high = RecoveryAdapter::load(&path, Expert::High, &cfg, Kind::Float, Device::Cpu).unwrap();
    let low = RecoveryAdapter::load(&path, Expert::Low, &cfg, Kind::Float, Device::Cpu).unwrap();
    assert_eq!((high.len(), low.len(), high.rank()), (6, 6, 4));
    assert_eq!(
        high.skipped.len(),
        1,
        "the condition_embedder key is not applied"
    );
    let (a_high, _) = high.get(1, LoraTarget::Ffn2).unwrap();
    let (a_low, _) = low.get(1, LoraTarget::Ffn2).unwrap();
    assert!(!a_high.equal(a_low), "the experts' adapters are told apart");

    let model = load_recovered(&high);
    assert_eq!(model.fp8_mode(), Fp8Mode::Uint4);
    for block in &model.blocks {
        for (linear, named) in [
            (&block.self_attn.q, true),
            (&block.self_attn.k, false),
            (&block.cross_attn.v, true),
            (&block.cross_attn.o, false),
            (&block.ffn0, false),
            (&block.ffn2, true),
        ] {
            match (&linear.weight, named) {
                (Weight::Recovered(r), true) => {
                    assert!(matches!(r.base, Weight::Uint4(_)), "named linear is 4-bit");
                    assert!(!r.down.requires_grad() && !r.up.requires_grad());
                }
                (Weight::Dense(_), false) => {}
                (w, _) => panic!("unexpected storage {:?} (named: {named})", w.mode()),
            }
        }
    }
}

#[test]
fn the_recovered_forward_is_the_dequantised_model_plus_the_adapter_deltas() {
    tch::set_num_threads(1);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ara.safetensors");
    write_adapter(&path, 4);
    let cfg = config();
    let ara = RecoveryAdapter::load(&path, Expert::Low, &cfg, Kind::Float, Device::Cpu).unwrap();
    let model = load_recovered(&ara);
    // The reference: the dense model with W' = deq(W₄) + B·A merged into each named linear.
    let mut merged = seeded(0, || {
        WanTransformer::load_with(
            &WEIGHTS,
            Some(cfg.clone()),
            Kind::Float,
            Device::Cpu,
            &LoadOptions::default(),
        )
    })
    .unwrap();
    let merge = |linear: &mut Linear, block: usize, t: LoraTarget| {
        let Weight::Dense(w) = &linear.weight else {
            panic!("dense reference")
        };
        let Some((a, b)) = ara.get(block, t) else {
            return;
        };
        let deq = Uint4Weight::quantize(w)
            .unwrap()
            .dequantize(Kind::Float)
            .unwrap();
        linear.weight = Weight::Dense(deq + b.matmul(a));
    };
    for (i, block) in merged.blocks.iter_mut().enumerate() {
        merge(&mut block.self_attn.q, i, LoraTarget::SelfQ);
        merge(&mut block.cross_attn.v, i, LoraTarget::CrossV);
        merge(&mut block.ffn2, i, LoraTarget::Ffn2);
    }
    let (x, t, ctx) = inputs(&cfg);
    let y = tch::no_grad(|| model.forward(&x, &t, &ctx, None)).unwrap();
    let reference = tch::no_grad(|| merged.forward(&x, &t, &ctx, None)).unwrap();
    let err = (&y - &reference).norm().double_value(&[]) / reference.norm().double_value(&[]);
    assert!(err < 1e-5, "relative difference {err}");
    // And the adapter does something: without it the output differs.
    let plain = seeded(0, || random_uint4(None));
    let without = tch::no_grad(|| plain.forward(&x, &t, &ctx, None)).unwrap();
    assert!((&y - &without).abs().max().double_value(&[]) > 1e-4);
}

#[test]
fn the_users_lora_trains_on_top_and_the_adapter_gets_no_gradient() {
    tch::set_num_threads(1);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ara.safetensors");
    write_adapter(&path, 2);
    let cfg = config();
    let ara = RecoveryAdapter::load(&path, Expert::High, &cfg, Kind::Float, Device::Cpu).unwrap();
    let model = load_recovered(&ara);
    let lora = seeded(9, || LoraSet::new_trainable(&cfg, 4, 4.0, Device::Cpu, 9));
    // B = 0 at the start gives A no gradient; a nonzero B makes every factor matter.
    tch::no_grad(|| {
        for p in lora.parameters() {
            let _ = p.shallow_clone().fill_(0.01);
        }
    });
    let apply = LoraApply {
        set: &lora,
        multiplier: Multiplier::Scalar(1.0),
    };
    let (x, t, ctx) = inputs(&cfg);
    let loss = forward_backward(
        &model,
        &x,
        &t,
        &ctx,
        &apply,
        CheckpointPolicy::default(),
        |pred| Ok(pred.square().mean(Kind::Float)),
    )
    .unwrap();
    assert!(loss.double_value(&[]).is_finite());
    for p in lora.parameters() {
        let g = p.grad();
        assert!(g.defined() && g.abs().sum(Kind::Float).double_value(&[]) > 0.0);
    }
    let (a, b) = ara.get(0, LoraTarget::SelfQ).unwrap();
    assert!(!a.grad().defined() && !b.grad().defined());
}

#[test]
fn an_adapter_that_names_no_block_linear_is_refused_with_examples() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.safetensors");
    let t = Tensor::zeros([4, 64], (Kind::BFloat16, Device::Cpu));
    save_safetensors(
        &path,
        &[
            (
                "unet.down_blocks.0.attn.to_q.lora_A.weight".into(),
                t.shallow_clone(),
            ),
            ("unet.down_blocks.0.attn.to_q.lora_B.weight".into(), t),
        ],
        &Default::default(),
    )
    .unwrap();
    let err = match RecoveryAdapter::load(&path, Expert::High, &config(), Kind::Float, Device::Cpu)
    {
        Ok(_) => panic!("accepted"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("unet.down_blocks.0.attn.to_q.lora_A.weight")
            && err.contains("other.safetensors"),
        "{err}"
    );
}

#[test]
fn an_adapter_for_another_model_size_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ara.safetensors");
    write_adapter(&path, 4);
    let wider = TransformerConfig {
        ffn_dim: 192,
        ..config()
    };
    let err = match RecoveryAdapter::load(&path, Expert::High, &wider, Kind::Float, Device::Cpu) {
        Ok(_) => panic!("accepted"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("another model"), "{err}");
}

/// The random weights without the block linears' weight matrices: a load that still succeeds
/// took them from the cache.
struct WithoutBlockWeights;

impl WeightSource for WithoutBlockWeights {
    fn load(
        &self,
        name: &str,
        shape: &[i64],
        kind: Kind,
        device: Device,
    ) -> Result<Tensor, WeightError> {
        let linear = [
            "_attn.q.", "_attn.k.", "_attn.v.", "_attn.o.", "ffn.0.", "ffn.2.",
        ];
        if name.starts_with("blocks.")
            && name.ends_with(".weight")
            && linear.iter().any(|l| name.contains(l))
        {
            return Err(WeightError::Missing {
                name: name.into(),
                source_desc: "test".into(),
            });
        }
        WEIGHTS.load(name, shape, kind, device)
    }
    fn shape_of(&self, name: &str) -> Option<Vec<i64>> {
        WEIGHTS.shape_of(name)
    }
    fn names(&self) -> Vec<String> {
        Vec::new()
    }
    fn describe(&self) -> String {
        "random weights without block linears".into()
    }
}

#[test]
fn a_second_start_reads_the_quantised_weights_from_the_cache() {
    tch::set_num_threads(1);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config();
    let load = |source: &dyn WeightSource, cache: Option<&WeightSet>| {
        seeded(0, || {
            WanTransformer::load_uint4(
                source,
                cfg.clone(),
                Kind::Float,
                Device::Cpu,
                &LoadOptions::default(),
                None,
                cache,
            )
        })
    };
    let first = load(&WEIGHTS, None).unwrap();
    let entries = first.uint4_cache_entries();
    // Three tensors for each of the ten linears of both blocks (all 4-bit without an adapter).
    assert_eq!(entries.len(), 3 * 10 * 2);
    let path = dir.path().join("cache.safetensors");
    save_safetensors(&path, &entries, &Default::default()).unwrap();
    let cache = WeightSet::open(&path).unwrap();

    assert!(
        load(&WithoutBlockWeights, None).is_err(),
        "the source lacks the weights"
    );
    let second = load(&WithoutBlockWeights, Some(&cache)).unwrap();
    let (x, t, ctx) = inputs(&cfg);
    let a = tch::no_grad(|| first.forward(&x, &t, &ctx, None)).unwrap();
    let b = tch::no_grad(|| second.forward(&x, &t, &ctx, None)).unwrap();
    assert!(a.equal(&b), "the cached expert computes exactly the same");
    // `LoadOptions { fp8: Uint4 }` (what `bench step --fp8 uint4` loads) is the same model.
    let via_options = seeded(0, || {
        WanTransformer::load_with(
            &WEIGHTS,
            Some(cfg.clone()),
            Kind::Float,
            Device::Cpu,
            &LoadOptions {
                fp8: Fp8Mode::Uint4,
                ..LoadOptions::default()
            },
        )
    })
    .unwrap();
    let c = tch::no_grad(|| via_options.forward(&x, &t, &ctx, None)).unwrap();
    assert!(a.equal(&c));
}
