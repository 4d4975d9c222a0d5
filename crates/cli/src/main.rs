//! `wanlora`: LoRA training for Wan 2.2 image-to-video A14B.

mod cmd;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "wanlora", version, about = "LoRA training for Wan 2.2 I2V A14B", long_about = None)]
struct Cli {
    /// More log output (repeat for more).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a tiny random model on a synthetic dataset on the CPU: the whole product in minutes.
    Demo(cmd::demo::DemoArgs),
    /// Run a training job (AI Toolkit YAML/JSON); running it again resumes where it stopped.
    Train(cmd::train::TrainArgs),
    /// Check libtorch, CUDA, the GPU, cuDNN, the attention kernel, ffmpeg and disk space.
    Doctor(cmd::doctor::DoctorArgs),
    /// The web UI on http://127.0.0.1:8675: jobs and their queue, datasets, live training.
    Ui(cmd::ui::UiArgs),
    /// Look at a job's datasets before training: buckets, frame counts, captions, problem files.
    #[command(subcommand)]
    Dataset(cmd::dataset::DatasetCommand),
    /// Run one model component on tensors from a safetensors file (checks and parity tests).
    #[command(subcommand)]
    Debug(cmd::debug::DebugCommand),
    /// Measurements at the real model sizes with random weights (GPU machine).
    #[command(subcommand)]
    Bench(cmd::bench::BenchCommand),
    /// Check a job file: print the job as it will run, or every problem with its key, line and fix.
    Validate(cmd::validate::ValidateArgs),
    /// What a job's model files are, where they come from, what is missing; `models fetch` downloads them.
    Models(cmd::models::ModelsArgs),
    /// One image-to-video sample by Wan's official recipe, with optional LoRAs per expert.
    Sample(Box<cmd::sample::SampleArgs>),
}

/// `WANLORA_SDPA=flash|cudnn|efficient|math` restricts libtorch's attention to one kernel family (to
/// compare them, or to step around a kernel problem on some driver); unset, libtorch chooses.
fn restrict_attention_kernels() -> anyhow::Result<()> {
    let Ok(choice) = std::env::var("WANLORA_SDPA") else {
        return Ok(());
    };
    let (flash, efficient, math, cudnn) = match choice.as_str() {
        "" | "auto" => return Ok(()),
        "flash" => (true, false, false, false),
        "cudnn" => (false, false, false, true),
        "efficient" => (false, true, false, false),
        "math" => (false, false, true, false),
        other => anyhow::bail!(
            "WANLORA_SDPA={other:?} is not a kernel family: use flash, cudnn, efficient, math or auto"
        ),
    };
    wanlora_torch::cuda::sdp_enable(flash, efficient, math, cudnn)?;
    tracing::info!("attention kernels restricted to {choice} (WANLORA_SDPA)");
    Ok(())
}

fn main() {
    // NVLink multicast (NVLS) stays off in NCCL unless the user asks for it: set while this
    // process has one thread, before libtorch or NCCL can read the environment.
    if std::env::var_os("NCCL_NVLS_ENABLE").is_none() {
        std::env::set_var("NCCL_NVLS_ENABLE", "0");
    }
    // Before any tensor work: register libtorch's CUDA back-end when it is on the library path.
    wanlora_torch::init();
    let cli = Cli::parse();
    let filter = match cli.verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WANLORA_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter)),
        )
        .with_target(false)
        .with_writer(std::io::stderr)
        .init();
    if let Err(err) = restrict_attention_kernels() {
        eprintln!("error: {err:#}");
        std::process::exit(2);
    }
    let result = match cli.command {
        Command::Demo(args) => cmd::demo::run(args),
        Command::Train(args) => cmd::train::run(args),
        Command::Doctor(args) => cmd::doctor::run(args),
        Command::Ui(args) => cmd::ui::run(args),
        Command::Dataset(c) => cmd::dataset::run(c),
        Command::Debug(c) => cmd::debug::run(c),
        Command::Bench(c) => cmd::bench::run(c),
        Command::Validate(args) => cmd::validate::run(args),
        Command::Models(args) => cmd::models::run(args),
        Command::Sample(args) => cmd::sample::run(*args),
    };
    if let Err(err) = result {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}
