//! `wanlora bench text`: the umT5-XXL encoder on one prompt of real tokens.

use super::{measure, report, BenchOptions};
use anyhow::Result;
use tch::{Device, Kind, Tensor};
use wanlora_models::umt5::{Umt5Config, Umt5Encoder};
use wanlora_torch::weights::RandomWeights;

#[derive(clap::Args)]
pub struct TextBenchArgs {
    #[command(flatten)]
    pub common: BenchOptions,
    /// Real tokens in the prompt (all attended to, as transformers' benchmark feeds 512 of them).
    #[arg(long, default_value_t = 512)]
    pub tokens: i64,
    /// Prompts per batch.
    #[arg(long, default_value_t = 1)]
    pub batch: i64,
    /// Fewer layers than umT5-XXL's 24 (to try the command on a CPU).
    #[arg(long)]
    pub layers: Option<i64>,
    /// A smaller vocabulary than umT5's 256384 (to try the command on a CPU).
    #[arg(long)]
    pub vocab_size: Option<i64>,
}

pub fn run(args: TextBenchArgs) -> Result<()> {
    let o = &args.common;
    let device = o.device.device()?;
    let defaults = Umt5Config::default();
    let config = Umt5Config {
        num_layers: args.layers.unwrap_or(defaults.num_layers),
        vocab_size: args.vocab_size.unwrap_or(defaults.vocab_size),
        ..defaults
    };
    let weights = RandomWeights {
        std: 0.02,
        seed: o.seed,
    };
    let encoder = Umt5Encoder::load(
        &weights,
        Some(config.clone()),
        crate::cmd::debug::kind_of(o.dtype),
        device,
    )?;
    tch::manual_seed(o.seed + 1);
    // Token ids and mask stay on the CPU, where the tokenizer makes them.
    let ids = Tensor::randint(
        config.vocab_size,
        [args.batch, args.tokens],
        (Kind::Int64, Device::Cpu),
    );
    let mask = ids.ones_like();
    let m = measure(device, o.warmup, o.repeats, || {
        Ok(encoder.encode(&ids, &mask)?)
    })?;
    let mut detail = format!("tokens={} batch={}", args.tokens, args.batch);
    if config.num_layers != defaults.num_layers || config.vocab_size != defaults.vocab_size {
        detail.push_str(&format!(
            " layers={} vocab={}",
            config.num_layers, config.vocab_size
        ));
    }
    report("umt5_encode", &detail, &m);
    Ok(())
}
