//! `wanlora bench load`: time to load one expert from disk onto the GPU (memory-mapped, tensor by
//! tensor, no second copy in host memory), with the bytes read and the rate.

use anyhow::Result;
use std::path::PathBuf;
use std::time::Instant;
use tch::Kind;
use wanlora_models::quant::Fp8Mode;
use wanlora_models::transformer::{LoadOptions, WanTransformer};

#[derive(clap::Args)]
pub struct LoadArgs {
    /// A diffusers transformer folder or a single original/ComfyUI safetensors file.
    #[arg(long)]
    pub weights: PathBuf,
    /// Store the block weights as fp8 while loading.
    #[arg(long)]
    pub fp8: bool,
    #[arg(long, default_value = "cuda")]
    pub device: String,
}

pub fn run(args: LoadArgs) -> Result<()> {
    let device = super::step::device_of(&args.device)?;
    let bytes: u64 = if args.weights.is_dir() {
        std::fs::read_dir(&args.weights)?
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "safetensors"))
            .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
            .sum()
    } else {
        std::fs::metadata(&args.weights)?.len()
    };
    let options = LoadOptions {
        fp8: if args.fp8 {
            Fp8Mode::WeightOnly
        } else {
            Fp8Mode::Off
        },
        ..LoadOptions::default()
    };
    let t0 = Instant::now();
    let model = WanTransformer::from_path_with(&args.weights, Kind::BFloat16, device, &options)?;
    super::step::sync(device);
    let secs = t0.elapsed().as_secs_f64();
    let peak = match device {
        tch::Device::Cuda(i) => {
            super::step::gib(wanlora_torch::cuda::memory_stats(i)?.peak_allocated)
        }
        _ => 0.0,
    };
    println!(
        "wanlora load: {} ({:.1} GB, {} blocks, fp8 {}): {secs:.1} s, {:.2} GB/s, peak {peak:.1} GiB",
        args.weights.display(),
        bytes as f64 / 1e9,
        model.config.num_layers,
        args.fp8,
        bytes as f64 / 1e9 / secs
    );
    Ok(())
}
