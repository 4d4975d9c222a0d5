//! `wanlora demo`: the README's first command. A tiny random Wan-architecture model and a synthetic
//! dataset of captioned moving-shape clips, trained on the CPU through the same code path as a real
//! job; the LoRA files, the loss plot and the job folder land in ./wanlora-demo/.

use anyhow::{Context, Result};
use std::io::IsTerminal;
use std::path::PathBuf;
use wanlora_hub::HubConfig;
use wanlora_train::experts::Expert;
use wanlora_train::trainer::{train, RunOptions};

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Where the model, dataset, job file and outputs go.
    #[arg(long, default_value = "wanlora-demo")]
    pub dir: PathBuf,
    /// Optimizer steps (both experts together).
    #[arg(long, default_value_t = 100)]
    pub steps: u32,
    /// Only write the tiny model, the dataset and the job file into DIR, then print the job file's path.
    #[arg(long, value_name = "DIR")]
    pub prepare: Option<PathBuf>,
    /// i2v (image-to-video, previews from a start frame), t2v (text-to-video, previews from the
    /// prompt alone) or ti2v (TI2V-5B: one transformer, the Wan 2.2 VAE, previews from a start frame).
    #[arg(long, default_value = "i2v", value_parser = crate::cmd::sample::parse_arch)]
    pub arch: wanlora_config::ModelArch,
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

pub fn run(args: DemoArgs) -> Result<()> {
    if let Some(dir) = &args.prepare {
        let dir = std::path::absolute(dir)?;
        let job = wanlora_train::demo::prepare_for(&dir, args.steps, args.arch)?;
        println!("{}", job.display());
        return Ok(());
    }
    let dir = std::path::absolute(&args.dir)?;
    eprintln!(
        "wanlora demo: preparing a tiny model and a synthetic dataset in {}",
        dir.display()
    );
    let job_path = wanlora_train::demo::prepare_for(&dir, args.steps, args.arch)?;
    let job = wanlora_config::load_job(&job_path)
        .with_context(|| format!("the demo job {} is invalid", job_path.display()))?;
    // The demo is deterministic and repeatable: a previous run's state is not resumed.
    let out = wanlora_train::job::output_folder(&job.job);
    if out.exists() {
        std::fs::remove_dir_all(&out).with_context(|| format!("cannot clear {}", out.display()))?;
    }
    let opts = RunOptions {
        progress: std::io::stderr().is_terminal(),
        stop_after: None,
        hub: HubConfig::from_env(),
    };
    let summary = train(job, opts)?;
    println!("trained {} steps on the CPU; losses:", summary.step);
    for expert in [Expert::High, Expert::Low] {
        let l: Vec<f64> = summary
            .losses
            .iter()
            .filter(|(_, e, _)| *e == expert)
            .map(|(_, _, l)| *l)
            .collect();
        if l.is_empty() {
            // TI2V-5B trains one transformer (the high-noise slot).
            continue;
        }
        let n = (l.len() / 5).max(1);
        println!(
            "  {:<10} first {n} steps {:.4} → last {n} steps {:.4}",
            expert.name(),
            mean(&l[..n.min(l.len())]),
            mean(&l[l.len().saturating_sub(n)..])
        );
    }
    println!("outputs in {}:", summary.output.display());
    for f in &summary.files {
        println!("  {}", f.display());
    }
    println!("  {}", summary.output.join("loss.png").display());
    let samples = summary.output.join("samples");
    if let Ok(entries) = std::fs::read_dir(&samples) {
        let mut previews: Vec<_> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "mp4" || x == "webp"))
            .collect();
        previews.sort();
        for p in previews {
            println!("  {} (preview sample)", p.display());
        }
    }
    Ok(())
}
