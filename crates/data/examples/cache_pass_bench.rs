//! Times the data side of a cache pass: probe, decode (ffmpeg) and store, with the pooling test
//! encoder standing in for the VAE. The GPU number for issue 6 comes from the same pass with the
//! real VAE; this one says how fast the data side can feed it.
//!
//! cargo run --release -p wanlora-data --example cache_pass_bench -- \
//!     [--clips 20] [--seconds 5] [--frames 41] [--resolution 512] [--size 1280x720] [--fps 30] [--dir D]
//!
//! Clips (testsrc2, H.264) are made in D (default: a temporary folder) unless already there.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;
use wanlora_data::cache::testing::PoolingLatentEncoder;
use wanlora_data::{run_cache_pass, Cache, CachePassOptions, Catalog, DatasetSpec, JobContext};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut clips = 20usize;
    let mut seconds = 5u32;
    let mut frames = 41usize;
    let mut resolution = 512u32;
    let mut size = "1280x720".to_string();
    let mut fps = 30u32;
    let mut dir: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--clips" => clips = value.parse()?,
            "--seconds" => seconds = value.parse()?,
            "--frames" => frames = value.parse()?,
            "--resolution" => resolution = value.parse()?,
            "--size" => size = value,
            "--fps" => fps = value.parse()?,
            "--dir" => dir = Some(value.into()),
            other => return Err(format!("unknown option {other}").into()),
        }
    }
    let temp = tempfile::tempdir()?;
    let root = dir.unwrap_or_else(|| temp.path().to_path_buf());
    let data = root.join("clips");
    std::fs::create_dir_all(&data)?;
    let made = Instant::now();
    for i in 0..clips {
        let path = data.join(format!("clip{i:03}.mp4"));
        if path.exists() {
            continue;
        }
        // A different hue per clip: identical bytes would share one cache entry.
        let source = format!("testsrc2=s={size}:r={fps}:d={seconds},hue=h={}", i * 17);
        let status = Command::new("ffmpeg")
            .args([
                "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", &source,
            ])
            .args([
                "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
            ])
            .arg(&path)
            .status()?;
        if !status.success() {
            return Err(format!("ffmpeg failed making {}", path.display()).into());
        }
        std::fs::write(
            path.with_extension("txt"),
            format!("test pattern number {i}"),
        )?;
    }
    eprintln!("clips ready in {:.1} s", made.elapsed().as_secs_f64());

    let spec = DatasetSpec {
        folder_path: data,
        resolutions: vec![resolution],
        num_frames: frames,
        cache_latents: true,
        ..DatasetSpec::default()
    };
    let job = JobContext {
        name: "bench".into(),
        seed: 1,
        batch_size: 1,
        ..JobContext::default()
    };
    let started = Instant::now();
    let mut catalog = Catalog::load(&[spec], &job)?;
    let scan_s = started.elapsed().as_secs_f64();
    let cache_dir = root.join(format!("cache-{}", std::process::id()));
    let mut cache = Cache::open(&cache_dir)?;
    let mut encoder = PoolingLatentEncoder::new(8);
    let started = Instant::now();
    let report = run_cache_pass(
        &mut catalog,
        &mut cache,
        Some(&mut encoder),
        None,
        CachePassOptions { progress: true },
    )?;
    let pass_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let again = run_cache_pass(
        &mut catalog,
        &mut cache,
        Some(&mut encoder),
        None,
        CachePassOptions { progress: false },
    )?;
    let warm_s = started.elapsed().as_secs_f64();
    let bucket = catalog.items[0].bucket;
    println!(
        "{clips} clips of {seconds} s {size}@{fps} → {bucket}: scan+probe {scan_s:.2} s ({:.1} clips/s); \
         decode+encode+store {pass_s:.2} s ({:.2} clips/s, {} encoded); warm re-run {warm_s:.3} s ({} reused)",
        clips as f64 / scan_s,
        report.latents_encoded as f64 / pass_s,
        report.latents_encoded,
        again.latents_reused
    );
    std::fs::remove_dir_all(&cache_dir)?;
    Ok(())
}
