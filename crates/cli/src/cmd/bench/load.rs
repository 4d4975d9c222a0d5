//! `wanlora bench load`: time to load one expert from disk onto the GPU (memory-mapped, tensor by
//! tensor, no second copy in host memory), with the bytes read and the rate.

use anyhow::Result;
use std::path::PathBuf;
use std::time::Instant;
use tch::Kind;
use wanlora_models::quant::Fp8Mode;
use wanlora_models::transformer::{
    config_file_for, transformer_weights, LoadOptions, TransformerConfig, WanTransformer,
};
use wanlora_torch::weights::{save_safetensors, WeightSet};

#[derive(clap::Args)]
pub struct LoadArgs {
    /// A diffusers transformer folder or a single original/ComfyUI safetensors file.
    #[arg(long)]
    pub weights: PathBuf,
    /// Store the block weights as fp8 while loading.
    #[arg(long)]
    pub fp8: bool,
    /// 4-bit weights (AI Toolkit's uint4): a first load quantises and writes the quantised-weights
    /// cache (as `wanlora train` does on a first start), a second load reads it (a later start).
    #[arg(long, conflicts_with = "fp8")]
    pub uint4: bool,
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
    if args.uint4 {
        return uint4(&args, device, bytes);
    }
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

/// The 4-bit expert loaded twice: quantised from the file (and its cache written), then from the
/// cache alone, as `wanlora train`'s first and later starts do.
fn uint4(args: &LoadArgs, device: tch::Device, bytes: u64) -> Result<()> {
    let weights = transformer_weights(WeightSet::open(&args.weights)?)?;
    let config = match config_file_for(&args.weights).filter(|c| c.is_file()) {
        Some(c) => TransformerConfig::from_json_file(&c)?,
        None => TransformerConfig::infer(&weights, None).map_err(anyhow::Error::msg)?,
    };
    let cache_path = args.weights.with_extension("uint4-cache.safetensors");
    let load = |cache: Option<&WeightSet>| {
        WanTransformer::load_uint4(
            &weights,
            config.clone(),
            Kind::BFloat16,
            device,
            &LoadOptions::default(),
            None,
            cache,
        )
    };
    let t0 = Instant::now();
    let model = load(None)?;
    super::step::sync(device);
    let quantised = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    save_safetensors(
        &cache_path,
        &model.uint4_cache_entries(),
        &Default::default(),
    )?;
    let written = t1.elapsed().as_secs_f64();
    drop(model);
    let cache = WeightSet::open(&cache_path)?;
    let cache_bytes = std::fs::metadata(&cache_path)?.len();
    let t2 = Instant::now();
    let model = load(Some(&cache))?;
    super::step::sync(device);
    let from_cache = t2.elapsed().as_secs_f64();
    println!(
        "wanlora load uint4: {} ({:.1} GB bf16, {} blocks): first start {quantised:.1} s (read and quantise) + {written:.1} s (write the {:.1} GB cache); later start {from_cache:.1} s (from the cache)",
        args.weights.display(),
        bytes as f64 / 1e9,
        model.config.num_layers,
        cache_bytes as f64 / 1e9
    );
    let _ = std::fs::remove_file(&cache_path);
    Ok(())
}
