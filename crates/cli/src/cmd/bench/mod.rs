//! `wanlora bench …`: measurements on the GPU machine with random weights at the real sizes.
//! `vae` and `text` print one line per measurement, `wanlora <what>: <sizes>: <seconds per run> s, peak <GiB> GiB`;
//! run them in the same call as the reference script (../shared/peers/diffusers_wan_components.py) so both use
//! the same card.

pub mod load;
pub mod lora_linear;
pub mod sample;
pub mod step;
pub mod text;
pub mod vae;

use anyhow::{bail, Result};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

#[derive(clap::Subcommand)]
pub enum BenchCommand {
    /// One expert's LoRA training step: s/step, peak memory, MFU.
    Step(step::StepArgs),
    /// Wan 2.1 VAE: encode, I2V condition and decode of one clip (random weights, real shapes).
    Vae(vae::VaeBenchArgs),
    /// umT5-XXL encoder on one prompt (random weights, real shapes).
    Text(text::TextBenchArgs),
    /// An I2V sample with both experts resident: s/step with CFG, denoising, decode, peak memory.
    Sample(sample::SampleBenchArgs),
    /// Loading one expert from disk onto the GPU: seconds and GB/s.
    Load(load::LoadArgs),
    /// One LoRA'd block linear, forward and backward: the down-projection as a second pass over
    /// the input and fused into the frozen weight's GEMM (WANLORA_FUSED_LORA).
    LoraLinear(lora_linear::LoraLinearArgs),
}

pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Step(a) => step::run(a),
        BenchCommand::Vae(a) => vae::run(a),
        BenchCommand::Text(a) => text::run(a),
        BenchCommand::Sample(a) => sample::run(a),
        BenchCommand::Load(a) => load::run(a),
        BenchCommand::LoraLinear(a) => lora_linear::run(a),
    }
}

/// Options every benchmark takes.
#[derive(clap::Args, Clone)]
pub struct BenchOptions {
    /// cuda (the default) or cpu (small sizes only, to try the command).
    #[arg(long, value_enum, default_value = "cuda")]
    pub device: crate::cmd::debug::DeviceArg,
    #[arg(long, value_enum, default_value = "bf16")]
    pub dtype: crate::cmd::debug::DtypeArg,
    /// Untimed runs first (cuDNN autotuning, allocator warm-up).
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Timed runs; the time reported is their mean.
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Seed of the random weights and inputs.
    #[arg(long, default_value_t = 0)]
    pub seed: i64,
}

/// Mean seconds per run and the peak of allocated GPU memory over the timed runs (weights and inputs included,
/// like torch.cuda.max_memory_allocated), `None` on the CPU.
pub struct Measurement {
    pub seconds: f64,
    pub peak_bytes: Option<i64>,
}

/// Runs `work` `warmup` times, then `repeats` times between two device synchronisations. Each run's output is
/// checked to be finite after the timing (reading it back would synchronise inside the loop).
pub fn measure(
    device: Device,
    warmup: usize,
    repeats: usize,
    mut work: impl FnMut() -> Result<Tensor>,
) -> Result<Measurement> {
    if repeats == 0 {
        bail!("--repeats must be at least 1");
    }
    let cuda = match device {
        Device::Cuda(i) => Some(i),
        _ => None,
    };
    for _ in 0..warmup {
        check_finite(&work()?)?;
    }
    if let Some(i) = cuda {
        wanlora_torch::cuda::synchronize(i)?;
        wanlora_torch::cuda::reset_peak_memory(i)?;
    }
    let start = Instant::now();
    let mut last = None;
    for _ in 0..repeats {
        last = Some(work()?);
    }
    if let Some(i) = cuda {
        wanlora_torch::cuda::synchronize(i)?;
    }
    let seconds = start.elapsed().as_secs_f64() / repeats as f64;
    let peak_bytes = match cuda {
        Some(i) => Some(wanlora_torch::cuda::memory_stats(i)?.peak_allocated),
        None => None,
    };
    if let Some(out) = last {
        check_finite(&out)?;
    }
    Ok(Measurement {
        seconds,
        peak_bytes,
    })
}

fn check_finite(t: &Tensor) -> Result<()> {
    if !bool::try_from(t.isfinite().all())? {
        bail!("the benchmark produced non-finite values; the timing would be meaningless");
    }
    Ok(())
}

/// Prints `wanlora <what>: <detail>: 0.812 s, peak 3.1 GiB`.
pub fn report(what: &str, detail: &str, m: &Measurement) {
    let peak = match m.peak_bytes {
        Some(b) => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        None => "n/a (cpu)".into(),
    };
    println!("wanlora {what}: {detail}: {:.3} s, peak {peak}", m.seconds);
}

/// Uniform values in [-1, 1] of `shape`, made on `device` from `seed`.
pub fn uniform_pm1(shape: &[i64], kind: Kind, device: Device, seed: i64) -> Tensor {
    tch::manual_seed(seed);
    (Tensor::rand(shape, (Kind::Float, device)) * 2.0 - 1.0).to_kind(kind)
}
