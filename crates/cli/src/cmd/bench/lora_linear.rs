//! `wanlora bench lora-linear`: one LoRA'd block linear of the A14B expert at a video's token
//! count, forward without a graph and forward + backward, with the LoRA down-projection as a
//! second pass over the input (the default) and in the frozen weight's GEMM (`WANLORA_FUSED_LORA`,
//! crates/models/src/lora.rs), with the relative difference of their outputs and input gradients.

use super::{measure, uniform_pm1, BenchOptions};
use anyhow::{bail, Result};
use tch::{Kind, Tensor};
use wanlora_models::lora::{LoraApply, LoraSet, LoraTarget, Multiplier};
use wanlora_models::quant::Weight;
use wanlora_models::transformer::{BlockLora, Linear, TransformerConfig};

#[derive(clap::Args)]
pub struct LoraLinearArgs {
    #[command(flatten)]
    pub common: BenchOptions,
    /// Token counts, comma-separated (default: 41 frames at 512², 768² and 1024²).
    #[arg(long, value_delimiter = ',', default_values_t = [11264i64, 25344, 45056])]
    pub tokens: Vec<i64>,
    #[arg(long, default_value_t = 16)]
    pub rank: i64,
    /// Which linears, comma-separated: q (5120→5120, as every attention projection), ffn0
    /// (5120→13824) and ffn2 (13824→5120).
    #[arg(long, value_delimiter = ',', default_value = "q,ffn0,ffn2")]
    pub linears: Vec<String>,
}

/// Milliseconds of the two-pass and the fused linear, forward and forward + backward.
struct Row {
    label: String,
    tokens: i64,
    forward: (f64, f64),
    forward_backward: (f64, f64),
}

pub fn run(args: LoraLinearArgs) -> Result<()> {
    let o = &args.common;
    let device = o.device.device()?;
    let kind = crate::cmd::debug::kind_of(o.dtype);
    let cfg = TransformerConfig {
        num_layers: 1,
        ..TransformerConfig::wan22_a14b(36)
    };
    let lora = LoraSet::new_trainable(&cfg, args.rank, args.rank as f64, device, o.seed as u64);
    // B starts at zero in training; random here so that the fused and two-pass results differ
    // from the frozen layer's and their comparison means something.
    tch::no_grad(|| {
        for (i, (_, adapter)) in lora.adapters().enumerate() {
            let bound = 1.0 / (args.rank as f32).sqrt();
            let seed = (o.seed as u64).wrapping_mul(1000).wrapping_add(i as u64);
            let up = wanlora_torch::rng::uniform(seed, &adapter.up.size(), -bound, bound, device)?;
            adapter.up.shallow_clone().copy_(&up);
        }
        Ok::<_, anyhow::Error>(())
    })?;
    let apply = LoraApply {
        set: &lora,
        multiplier: Multiplier::Scalar(1.0),
    };
    let view = BlockLora {
        block: 0,
        apply: Some(&apply),
    };
    let mut rows = Vec::new();
    for name in &args.linears {
        let target = match name.as_str() {
            "q" => LoraTarget::SelfQ,
            "ffn0" => LoraTarget::Ffn0,
            "ffn2" => LoraTarget::Ffn2,
            other => bail!("--linears {other}: expected q, ffn0 or ffn2"),
        };
        let (inp, out) = target.dims(&cfg);
        let weight = uniform_pm1(&[out, inp], kind, device, o.seed) * 0.02;
        let bias = uniform_pm1(&[out], kind, device, o.seed + 1) * 0.02;
        let two_pass = Linear {
            weight: Weight::Dense(weight.shallow_clone()),
            bias: bias.shallow_clone(),
            lora_rows: None,
        };
        let mut fused = Linear {
            weight: Weight::Dense(weight.copy()),
            bias,
            lora_rows: None,
        };
        if !fused.reserve_lora_rows(args.rank)? {
            bail!("--dtype: the fused LoRA linear takes bf16 or f32 weights");
        }
        for &n in &args.tokens {
            let label = format!("{name} {inp}→{out}");
            let x = uniform_pm1(&[1, n, inp], kind, device, o.seed + 2);
            let dy = uniform_pm1(&[1, n, out], kind, device, o.seed + 3);
            let run_forward = |layer: &Linear| -> Result<f64> {
                let m = measure(device, o.warmup, o.repeats, || {
                    Ok(tch::no_grad(|| view.linear(target, layer, &x)))
                })?;
                Ok(1000.0 * m.seconds)
            };
            let run_backward = |layer: &Linear| -> Result<f64> {
                let m = measure(device, o.warmup, o.repeats, || {
                    let (_, dx) = forward_backward(&view, target, layer, &x, &dy)?;
                    Ok(dx)
                })?;
                Ok(1000.0 * m.seconds)
            };
            let (y0, dx0) = forward_backward(&view, target, &two_pass, &x, &dy)?;
            let (y1, dx1) = forward_backward(&view, target, &fused, &x, &dy)?;
            let row = Row {
                label,
                tokens: n,
                forward: (run_forward(&two_pass)?, run_forward(&fused)?),
                forward_backward: (run_backward(&two_pass)?, run_backward(&fused)?),
            };
            println!(
                "wanlora lora_linear: {} tokens={n} rank={}: forward {:.3} → {:.3} ms fused ({:.2}×), forward+backward {:.3} → {:.3} ms fused ({:.2}×); fused vs two-pass: output {:.1e}, dx {:.1e} relative",
                row.label,
                args.rank,
                row.forward.0,
                row.forward.1,
                row.forward.0 / row.forward.1,
                row.forward_backward.0,
                row.forward_backward.1,
                row.forward_backward.0 / row.forward_backward.1,
                relative_difference(&y1, &y0),
                relative_difference(&dx1, &dx0),
            );
            rows.push(row);
        }
    }
    println!("| linear | tokens | forward ms (two-pass → fused) | forward+backward ms (two-pass → fused) |");
    println!("|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {:.3} → {:.3} ({:.2}×) | {:.3} → {:.3} ({:.2}×) |",
            r.label,
            r.tokens,
            r.forward.0,
            r.forward.1,
            r.forward.0 / r.forward.1,
            r.forward_backward.0,
            r.forward_backward.1,
            r.forward_backward.0 / r.forward_backward.1
        );
    }
    Ok(())
}

/// The output and input gradient of one forward + backward with output gradient `dy`.
fn forward_backward(
    view: &BlockLora,
    target: LoraTarget,
    layer: &Linear,
    x: &Tensor,
    dy: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let x = x.detach().set_requires_grad(true);
    let y = view.linear(target, layer, &x);
    wanlora_torch::cuda::backward_with_grad(&y, dy)?;
    Ok((y.detach(), x.grad()))
}

/// `‖a − b‖ / ‖b‖`, computed in fp32 on the device.
fn relative_difference(a: &Tensor, b: &Tensor) -> f64 {
    let (a, b) = (a.to_kind(Kind::Float), b.to_kind(Kind::Float));
    let norm = b.norm().double_value(&[]);
    let diff = (a - &b).norm().double_value(&[]);
    if norm > 0.0 {
        diff / norm
    } else {
        diff
    }
}
