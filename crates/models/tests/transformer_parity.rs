//! The transformer against diffusers' WanTransformer3DModel (fixtures from scripts/fixtures/gen_transformer.py).

use std::collections::BTreeMap;
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};
use wanlora_models::lora::{LoraApply, LoraSet, Multiplier};
use wanlora_models::transformer::checkpoint::{forward_backward, CheckpointPolicy};
use wanlora_models::transformer::{transformer_weights, TransformerConfig, WanTransformer};
use wanlora_torch::weights::WeightSet;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/transformer")
}

fn tensor(file: &str, name: &str) -> Tensor {
    WeightSet::open(&fixtures().join(file))
        .unwrap()
        .load(name, Kind::Float, Device::Cpu)
        .unwrap()
}

fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).norm().double_value(&[]) / b.norm().double_value(&[])
}

fn config() -> TransformerConfig {
    TransformerConfig::from_json_file(&fixtures().join("diffusers/config.json")).unwrap()
}

fn inputs() -> (Tensor, Tensor, Tensor) {
    (
        tensor("inputs.safetensors", "hidden_states"),
        tensor("inputs.safetensors", "timestep"),
        tensor("inputs.safetensors", "encoder_hidden_states"),
    )
}

/// The fixture's inputs on the first GPU; `None` (saying so) without CUDA, where the GPU variants of
/// the tests are left to scripts/gpu/step.sh.
fn cuda_inputs() -> Option<(Device, Tensor, Tensor, Tensor)> {
    wanlora_torch::init();
    if !tch::Cuda::is_available() {
        eprintln!("no CUDA device: the GPU variant is checked by scripts/gpu/step.sh");
        return None;
    }
    let dev = Device::Cuda(0);
    let (x, t, c) = inputs();
    Some((dev, x.to_device(dev), t.to_device(dev), c.to_device(dev)))
}

/// The fixture's ComfyUI-format LoRA, for a model of `config`.
fn fixture_lora(config: &TransformerConfig) -> LoraSet {
    LoraSet::load(
        &fixtures().join("lora_comfy.safetensors"),
        config,
        Device::Cpu,
        false,
    )
    .unwrap()
    .0
}

fn diffusers_model() -> WanTransformer {
    WanTransformer::from_path(&fixtures().join("diffusers"), Kind::Float, Device::Cpu).unwrap()
}

#[test]
fn diffusers_folder_matches_reference() {
    let model = diffusers_model();
    let (x, t, c) = inputs();
    let out = tch::no_grad(|| model.forward(&x, &t, &c, None)).unwrap();
    let err = rel_err(&out, &tensor("reference.safetensors", "output"));
    assert!(err < 1e-5, "relative error {err}");
}

#[test]
fn comfyui_single_file_matches_reference() {
    let set = WeightSet::open(&fixtures().join("comfy.safetensors")).unwrap();
    let weights = transformer_weights(set).unwrap();
    let model = WanTransformer::load(&weights, Some(config()), Kind::Float, Device::Cpu).unwrap();
    let (x, t, c) = inputs();
    let out = tch::no_grad(|| model.forward(&x, &t, &c, None)).unwrap();
    let err = rel_err(&out, &tensor("reference.safetensors", "output"));
    assert!(err < 1e-5, "relative error {err}");
}

#[test]
fn comfyui_lora_matches_merged_reference_at_two_strengths() {
    let model = diffusers_model();
    let lora = fixture_lora(&model.config);
    let (x, t, c) = inputs();
    for (strength, reference) in [(1.0, "output_lora"), (0.5, "output_lora_half")] {
        let apply = LoraApply {
            set: &lora,
            multiplier: Multiplier::Scalar(strength),
        };
        let out = tch::no_grad(|| model.forward(&x, &t, &c, Some(&apply))).unwrap();
        let err = rel_err(&out, &tensor("reference.safetensors", reference));
        assert!(err < 1e-5, "strength {strength}: relative error {err}");
    }
    // Without the LoRA the base output comes back (the on/off switch).
    let out = tch::no_grad(|| model.forward(&x, &t, &c, None)).unwrap();
    assert!(rel_err(&out, &tensor("reference.safetensors", "output")) < 1e-5);
}

/// A text-to-video (T2V A14B-style) expert in ComfyUI's single-file form, made as gen_transformer.py
/// makes it: the fixture's file with the patch embedding's first 16 input channels, loaded with the
/// fixture's config at 16 input channels (a tiny model's head width cannot be inferred from shapes).
#[test]
fn text_to_video_comfyui_file_with_16_input_channels_matches_reference() {
    let dir = tempfile::tempdir().unwrap();
    let source = fixtures().join("comfy.safetensors");
    let tensors: Vec<(String, Tensor)> = Tensor::read_safetensors(&source)
        .unwrap()
        .into_iter()
        .map(|(name, t)| {
            let t = if name == "diffusion_model.patch_embedding.weight" {
                t.narrow(1, 0, 16).contiguous()
            } else {
                t
            };
            (name, t)
        })
        .collect();
    let file = dir
        .path()
        .join("wan2.2_t2v_high_noise_14B_fp32.safetensors");
    Tensor::write_safetensors(&tensors, &file).unwrap();
    let weights = transformer_weights(WeightSet::open(&file).unwrap()).unwrap();
    let t2v_config = TransformerConfig {
        in_channels: 16,
        ..config()
    };
    let model = WanTransformer::load(&weights, Some(t2v_config), Kind::Float, Device::Cpu).unwrap();
    assert_eq!(
        (model.config.in_channels, model.config.out_channels),
        (16, 16)
    );
    let (x, t, c) = inputs();
    let x = x.narrow(1, 0, 16);
    let out = tch::no_grad(|| model.forward(&x, &t, &c, None)).unwrap();
    let err = rel_err(&out, &tensor("reference.safetensors", "output_t2v"));
    assert!(err < 1e-5, "T2V: relative error {err}");
    // The I2V model's LoRA file, in ComfyUI keys, fits the T2V expert unchanged (same blocks).
    let lora = fixture_lora(&model.config);
    let apply = LoraApply {
        set: &lora,
        multiplier: Multiplier::Scalar(1.0),
    };
    let out = tch::no_grad(|| model.forward(&x, &t, &c, Some(&apply))).unwrap();
    let err = rel_err(&out, &tensor("reference.safetensors", "output_t2v_lora"));
    assert!(err < 1e-5, "T2V with LoRA: relative error {err}");
    // 36-channel input into the 16-channel expert is refused, not broadcast.
    let (x36, _, _) = inputs();
    assert!(tch::no_grad(|| model.forward(&x36, &t, &c, None)).is_err());
}

/// The TI2V-5B form, made as gen_transformer.py makes it: the fixture's blocks with a 48-channel patch
/// embedding and head (ti2v_extra.safetensors), per-token timesteps `[B, N]` with the start frame's
/// tokens at 0, without and with the ComfyUI LoRA; the same timesteps per latent frame `[B, F]` give
/// the same output, and timesteps that vary inside a frame are refused.
#[test]
fn ti2v_per_token_timesteps_match_reference_with_and_without_lora() {
    let model = ti2v_model();
    let x = tensor("inputs.safetensors", "hidden_states_ti2v");
    let per_token = tensor("inputs.safetensors", "timestep_ti2v");
    let (_, _, c) = inputs();
    let out = tch::no_grad(|| model.forward(&x, &per_token, &c, None)).unwrap();
    let err = rel_err(&out, &tensor("reference.safetensors", "output_ti2v"));
    assert!(err < 1e-5, "TI2V: relative error {err}");

    let lora = fixture_lora(&model.config);
    let apply = LoraApply {
        set: &lora,
        multiplier: Multiplier::Scalar(1.0),
    };
    let out = tch::no_grad(|| model.forward(&x, &per_token, &c, Some(&apply))).unwrap();
    let err = rel_err(&out, &tensor("reference.safetensors", "output_ti2v_lora"));
    assert!(err < 1e-5, "TI2V with LoRA: relative error {err}");

    // [B, F]: one value per latent frame (3 frames of 2×3 tokens).
    let per_frame = per_token.view([2, 3, 6]).select(2, 0);
    let out_frames = tch::no_grad(|| model.forward(&x, &per_frame, &c, None)).unwrap();
    let err = rel_err(&out_frames, &tensor("reference.safetensors", "output_ti2v"));
    assert!(err < 1e-5, "per-frame timesteps: relative error {err}");
    // A timestep that differs from its frame's is refused rather than averaged away.
    let uneven = per_token.copy();
    let _ = uneven.get(0).get(7).fill_(5.0);
    let err = tch::no_grad(|| model.forward(&x, &uneven, &c, None))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("within each latent frame"), "{err}");
    // The start frame's timestep 0 is not the same as the sample's timestep.
    let uniform =
        tch::no_grad(|| model.forward(&x, &Tensor::from_slice(&[999.0f32, 321.5]), &c, None))
            .unwrap();
    assert!(rel_err(&uniform, &out_frames) > 1e-3);
}

/// The TI2V model of gen_transformer.py, in ComfyUI's single-file form.
fn ti2v_model() -> WanTransformer {
    let mut tensors: BTreeMap<String, Tensor> =
        Tensor::read_safetensors(fixtures().join("comfy.safetensors"))
            .unwrap()
            .into_iter()
            .collect();
    tensors.extend(Tensor::read_safetensors(fixtures().join("ti2v_extra.safetensors")).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("wan2.2_ti2v_5B_fp32.safetensors");
    Tensor::write_safetensors(&tensors.into_iter().collect::<Vec<_>>(), &file).unwrap();
    let weights = transformer_weights(WeightSet::open(&file).unwrap()).unwrap();
    let ti2v_config = TransformerConfig {
        in_channels: 48,
        out_channels: 48,
        ..config()
    };
    WanTransformer::load(&weights, Some(ti2v_config), Kind::Float, Device::Cpu).unwrap()
}

/// A TI2V-5B LoRA as wanlora writes it (`LoraSet::save`, ComfyUI keys, fp32 A/B, 0-d alpha) is, tensor
/// for tensor, the file that gen_transformer.py loaded with diffusers' `load_lora_weights` into a
/// `WanPipeline(expand_timesteps=True)`, and gives that pipeline's transformer output.
#[test]
fn ti2v_lora_as_written_matches_diffusers_load_lora_weights() {
    let model = ti2v_model();
    let dir = tempfile::tempdir().unwrap();
    let written = dir.path().join("my_lora_000000100.safetensors");
    fixture_lora(&model.config)
        .save(&written, Kind::Float, &BTreeMap::new())
        .unwrap();
    let read = |path: PathBuf| -> BTreeMap<String, Tensor> {
        Tensor::read_safetensors(path)
            .unwrap()
            .into_iter()
            .collect()
    };
    let ours = read(written.clone());
    let loaded_by_diffusers = read(fixtures().join("lora_comfy.safetensors"));
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        loaded_by_diffusers.keys().collect::<Vec<_>>()
    );
    for (key, value) in &ours {
        let theirs = &loaded_by_diffusers[key];
        assert_eq!(
            (value.kind(), value.size()),
            (theirs.kind(), theirs.size()),
            "{key}"
        );
        assert!(value.equal(theirs), "{key}");
    }
    let (lora, _) = LoraSet::load(&written, &model.config, Device::Cpu, false).unwrap();
    let apply = LoraApply {
        set: &lora,
        multiplier: Multiplier::Scalar(1.0),
    };
    let x = tensor("inputs.safetensors", "hidden_states_ti2v");
    let t = tensor("inputs.safetensors", "timestep_ti2v");
    let (_, _, c) = inputs();
    let out = tch::no_grad(|| model.forward(&x, &t, &c, Some(&apply))).unwrap();
    let err = rel_err(
        &out,
        &tensor("reference.safetensors", "output_ti2v_diffusers_lora"),
    );
    assert!(
        err < 1e-5,
        "against load_lora_weights: relative error {err}"
    );
}

/// TI2V-5B's sizes (Wan2.2 wan_ti2v_5B.py).
#[test]
fn ti2v_5b_config_has_the_real_sizes() {
    let c = TransformerConfig::wan22_ti2v_5b();
    assert_eq!(
        (
            c.dim(),
            c.num_layers,
            c.num_attention_heads,
            c.ffn_dim,
            c.in_channels,
            c.out_channels
        ),
        (3072, 30, 24, 14336, 48, 48)
    );
    c.check().unwrap();
}

#[test]
fn per_sample_multiplier_equals_separate_runs() {
    let model = diffusers_model();
    let lora = fixture_lora(&model.config);
    let (x, t, c) = inputs();
    let both = LoraApply {
        set: &lora,
        multiplier: Multiplier::per_sample(&[1.0, 0.5], Device::Cpu),
    };
    let out = tch::no_grad(|| model.forward(&x, &t, &c, Some(&both))).unwrap();
    let full = tensor("reference.safetensors", "output_lora").narrow(0, 0, 1);
    let half = tensor("reference.safetensors", "output_lora_half").narrow(0, 1, 1);
    assert!(rel_err(&out.narrow(0, 0, 1), &full) < 1e-5);
    assert!(rel_err(&out.narrow(0, 1, 1), &half) < 1e-5);
}

#[test]
fn missing_tensors_are_listed_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let set = WeightSet::open(&fixtures().join("lora_comfy.safetensors")).unwrap();
    let err = transformer_weights(set).err().unwrap().to_string();
    assert!(err.contains("LoRA file"), "{err}");
    // A checkpoint with one block's FFN removed names exactly those tensors.
    let set = WeightSet::open(&fixtures().join("comfy.safetensors"))
        .unwrap()
        .with_prefix("diffusion_model.");
    let kept: Vec<(String, Tensor)> = set
        .names()
        .into_iter()
        .filter(|n| !n.starts_with("blocks.1.ffn.2"))
        .map(|n| {
            let t = set.load(&n, Kind::Float, Device::Cpu).unwrap();
            (format!("diffusion_model.{n}"), t)
        })
        .collect();
    let path = dir.path().join("cut.safetensors");
    wanlora_torch::weights::save_safetensors(&path, &kept, &Default::default()).unwrap();
    let weights = transformer_weights(WeightSet::open(&path).unwrap()).unwrap();
    let err = WanTransformer::load(&weights, Some(config()), Kind::Float, Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("missing blocks.1.ffn.2.weight")
            && err.contains("missing blocks.1.ffn.2.bias"),
        "{err}"
    );
}

/// The hand-written checkpointed backward gives the LoRA gradients of plain autograd, for full
/// recomputation and with some blocks keeping their activations.
#[test]
fn checkpointed_backward_equals_plain_autograd() {
    let model = diffusers_model();
    let (x, t, c) = inputs();
    let target = Tensor::randn([2, 16, 3, 4, 6], (Kind::Float, Device::Cpu));
    tch::manual_seed(3);
    let reference = LoraSet::new_trainable(&model.config, 4, 8.0, Device::Cpu, 3);
    // B starts at zero; give it values so that A's gradient is non-zero too.
    tch::no_grad(|| {
        for p in reference.parameters() {
            let _ = p.shallow_clone().uniform_(-0.2, 0.2);
        }
    });
    let mult = [1.0, 0.7];
    let plain_grads = {
        let apply = LoraApply {
            set: &reference,
            multiplier: Multiplier::per_sample(&mult, Device::Cpu),
        };
        let out = model.forward(&x, &t, &c, Some(&apply)).unwrap();
        (out - &target).square().mean(Kind::Float).backward();
        reference
            .parameters()
            .iter()
            .map(|p| p.grad().copy())
            .collect::<Vec<_>>()
    };
    // Every policy: all blocks recomputed, some kept, the recorded self-attention replayed, and
    // the recomputed blocks' inputs waiting in host memory.
    for (keep, keep_attention, host_inputs) in [
        (0, 0, false),
        (1, 0, false),
        (2, 0, false),
        (0, 2, false),
        (0, 1, false),
        (1, 1, false),
        (0, 0, true),
        (0, 1, true),
        (1, 0, true),
    ] {
        let lora = reference.detached_copy();
        let params: Vec<Tensor> = lora
            .parameters()
            .into_iter()
            .map(|p| p.set_requires_grad(true))
            .collect();
        let lora_set = lora;
        let apply = LoraApply {
            set: &lora_set,
            multiplier: Multiplier::per_sample(&mult, Device::Cpu),
        };
        let loss = forward_backward(
            &model,
            &x,
            &t,
            &c,
            &apply,
            CheckpointPolicy {
                keep_blocks: keep,
                keep_attention,
                host_inputs,
            },
            |pred| Ok((pred - &target).square().mean(Kind::Float)),
        )
        .unwrap();
        assert!(loss.double_value(&[]) > 0.0);
        for (i, (p, g)) in params.iter().zip(&plain_grads).enumerate() {
            let err = rel_err(&p.grad(), g);
            assert!(
                err < 1e-5,
                "keep_blocks {keep}, keep_attention {keep_attention}, host_inputs {host_inputs}, parameter {i}: relative error {err}"
            );
        }
    }
}

/// The shared-modulation path (one sample, or one timestep for the batch) gives the same result as
/// the per-sample path.
#[test]
fn shared_timestep_path_matches_reference() {
    let model = diffusers_model();
    let (x, t, c) = inputs();
    let reference = tensor("reference.safetensors", "output");
    for i in 0..2 {
        let out = tch::no_grad(|| {
            model.forward(
                &x.narrow(0, i, 1),
                &t.narrow(0, i, 1),
                &c.narrow(0, i, 1),
                None,
            )
        })
        .unwrap();
        let err = rel_err(&out, &reference.narrow(0, i, 1));
        assert!(err < 1e-5, "sample {i} alone: relative error {err}");
    }
    // Two samples at the same timestep: equal to each run alone.
    let t_same = Tensor::from_slice(&[321.5f32, 321.5]);
    let both = tch::no_grad(|| model.forward(&x, &t_same, &c, None)).unwrap();
    for i in 0..2 {
        let alone = tch::no_grad(|| {
            model.forward(
                &x.narrow(0, i, 1),
                &t_same.narrow(0, i, 1),
                &c.narrow(0, i, 1),
                None,
            )
        })
        .unwrap();
        assert!(rel_err(&both.narrow(0, i, 1), &alone) < 1e-6);
    }
    // One timestep for the whole batch (what CFG sampling passes) is broadcast to every sample.
    let one = tch::no_grad(|| model.forward(&x, &t_same.narrow(0, 0, 1), &c, None)).unwrap();
    assert_eq!(one.size(), both.size());
    assert!(rel_err(&one, &both) < 1e-6);
}

/// The bf16 path (what the GPU runs) stays within bf16 rounding of the f32 reference.
#[test]
fn bf16_forward_is_close_to_the_reference() {
    let model =
        WanTransformer::from_path(&fixtures().join("diffusers"), Kind::BFloat16, Device::Cpu)
            .unwrap();
    let (x, t, c) = inputs();
    let lora = fixture_lora(&model.config);
    let apply = LoraApply {
        set: &lora,
        multiplier: Multiplier::Scalar(1.0),
    };
    let out = tch::no_grad(|| {
        model.forward(
            &x.to_kind(Kind::BFloat16),
            &t,
            &c.to_kind(Kind::BFloat16),
            Some(&apply),
        )
    })
    .unwrap();
    assert_eq!(out.kind(), Kind::Float);
    let err = rel_err(&out, &tensor("reference.safetensors", "output_lora"));
    assert!(err < 3e-2, "bf16 relative error {err}");
}

/// On a CUDA machine (scripts/gpu/step.sh): in bf16 with the GPU's kernels (cuDNN attention and
/// its recorded replay, the NVRTC RoPE and gated residual), every checkpointing policy gives the
/// LoRA gradients of plain fp32 autograd within bf16's error. Without CUDA the test says so.
#[test]
fn cuda_checkpointed_backward_in_bf16_is_close_to_fp32_autograd() {
    let Some((dev, x, t, c)) = cuda_inputs() else {
        return;
    };
    let target = Tensor::randn([2, 16, 3, 4, 6], (Kind::Float, dev));
    let mult = [1.0, 0.7];
    tch::manual_seed(3);
    let grads = |kind: Kind, policy: Option<CheckpointPolicy>| -> Vec<Tensor> {
        let model = WanTransformer::from_path(&fixtures().join("diffusers"), kind, dev).unwrap();
        tch::manual_seed(11);
        let lora = LoraSet::new_trainable(&model.config, 4, 8.0, dev, 11);
        tch::no_grad(|| {
            for p in lora.parameters() {
                let _ = p.shallow_clone().uniform_(-0.2, 0.2);
            }
        });
        let apply = LoraApply {
            set: &lora,
            multiplier: Multiplier::per_sample(&mult, dev),
        };
        let loss = |pred: &Tensor| (pred - &target).square().mean(Kind::Float);
        match policy {
            None => loss(&model.forward(&x, &t, &c, Some(&apply)).unwrap()).backward(),
            Some(p) => {
                let loss = forward_backward(&model, &x, &t, &c, &apply, p, |pred| Ok(loss(pred)));
                assert!(loss.unwrap().double_value(&[]) > 0.0);
            }
        }
        lora.parameters().iter().map(|p| p.grad().copy()).collect()
    };
    let reference = grads(Kind::Float, None);
    let total_err = |g: &[Tensor]| {
        let num: f64 = g
            .iter()
            .zip(&reference)
            .map(|(a, b)| {
                (a.to_kind(Kind::Float) - b)
                    .square()
                    .sum(Kind::Double)
                    .double_value(&[])
            })
            .sum();
        let den: f64 = reference
            .iter()
            .map(|b| b.square().sum(Kind::Double).double_value(&[]))
            .sum();
        (num / den).sqrt()
    };
    let plain = total_err(&grads(Kind::BFloat16, None));
    eprintln!("bf16 plain autograd vs fp32: relative error {plain:.2e}");
    for (keep_blocks, keep_attention, host_inputs) in [
        (0, 0, false),
        (0, 2, false),
        (0, 1, false),
        (1, 0, false),
        (1, 1, false),
        (0, 1, true),
    ] {
        let policy = CheckpointPolicy {
            keep_blocks,
            keep_attention,
            host_inputs,
        };
        let err = total_err(&grads(Kind::BFloat16, Some(policy)));
        eprintln!("bf16 {policy:?} vs fp32: relative error {err:.2e}");
        assert!(
            err < 2.0 * plain + 1e-2,
            "{policy:?}: relative error {err} (plain bf16 autograd: {plain})"
        );
    }
}

/// On a CUDA machine: the bf16 forward without a graph (sampling, the checkpointed forward) runs
/// RMSNorm+RoPE as one kernel and stays as close to diffusers' fp32 output as the bf16 forward
/// that records a graph (libtorch's RMSNorm, then the RoPE kernel with its backward).
#[test]
fn cuda_bf16_forward_without_graph_is_as_close_to_the_reference() {
    let Some((dev, x, t, c)) = cuda_inputs() else {
        return;
    };
    let reference = tensor("reference.safetensors", "output").to_device(dev);
    let model =
        WanTransformer::from_path(&fixtures().join("diffusers"), Kind::BFloat16, dev).unwrap();
    let fused = tch::no_grad(|| model.forward(&x, &t, &c, None)).unwrap();
    // A latent input that asks for its gradient keeps every step on the differentiable path.
    let x_grad = x.copy().set_requires_grad(true);
    let graph = model.forward(&x_grad, &t, &c, None).unwrap().detach();
    let fused_err = rel_err(&fused.to_kind(Kind::Float), &reference);
    let graph_err = rel_err(&graph.to_kind(Kind::Float), &reference);
    let between = rel_err(&fused.to_kind(Kind::Float), &graph.to_kind(Kind::Float));
    eprintln!(
        "bf16 vs fp32 reference: relative error {fused_err:.2e} without a graph (fused), \
         {graph_err:.2e} with one; between them {between:.2e}"
    );
    assert!(graph_err < 3e-2, "bf16 forward with a graph: {graph_err}");
    // The kernels round as the separate ones do: the two paths differ by a last bit now and then
    // (a changed activation function showed up here as 7.9e-3).
    assert!(
        between < 1e-3,
        "fused vs graph path: relative error {between}"
    );
}
