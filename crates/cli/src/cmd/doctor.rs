//! `wanlora doctor`: everything a run depends on, each missing piece with how to get it.

use anyhow::Result;
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};
use wanlora_sysinfo::human_bytes;
use wanlora_torch::bootstrap::CudaLoad;

#[derive(clap::Args)]
pub struct DoctorArgs {
    /// Folder whose free disk space is reported (where outputs and caches go).
    #[arg(long, default_value = ".")]
    pub path: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// One line of the report: what was checked, what was found, and how to fix it when missing.
#[derive(Debug, serde::Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub found: String,
    pub fix: Option<String>,
}

impl Check {
    fn ok(name: &'static str, found: impl Into<String>) -> Self {
        Check {
            name,
            ok: true,
            found: found.into(),
            fix: None,
        }
    }
    fn missing(name: &'static str, found: impl Into<String>, fix: impl Into<String>) -> Self {
        Check {
            name,
            ok: false,
            found: found.into(),
            fix: Some(fix.into()),
        }
    }
}

/// The path of the libtorch_cpu.so this process loaded, read from /proc/self/maps.
fn loaded_libtorch() -> Option<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.ends_with("/libtorch_cpu.so"))
        .map(str::to_string)
}

pub fn checks(args: &DoctorArgs) -> Vec<Check> {
    let mut out = Vec::new();
    out.push(Check::ok("wanlora", env!("CARGO_PKG_VERSION")));

    let lib = loaded_libtorch().unwrap_or_else(|| "libtorch_cpu.so (path unknown)".into());
    out.push(Check::ok(
        "libtorch",
        format!("built for 2.11.0; loaded {lib}"),
    ));

    let cuda = match wanlora_torch::init() {
        CudaLoad::Loaded if tch::Cuda::is_available() => {
            Check::ok("CUDA", format!("available, {} device(s)", tch::Cuda::device_count()))
        }
        CudaLoad::Loaded => Check::missing(
            "CUDA",
            "libtorch_cuda.so loaded but no usable device",
            "check `nvidia-smi`: the driver must see a GPU",
        ),
        CudaLoad::Unavailable(why) => Check::missing(
            "CUDA",
            format!("not available: {why}"),
            "on a GPU machine run with LD_LIBRARY_PATH=$(python3 -c 'import torch,os;print(os.path.dirname(torch.__file__))')/lib \
             (PyTorch 2.11 with CUDA); training on CPU works only for the tiny demo model",
        ),
    };
    let has_cuda = cuda.ok;
    out.push(cuda);

    match wanlora_sysinfo::gpus() {
        Ok(gpus) if !gpus.is_empty() => {
            for g in gpus {
                out.push(Check::ok(
                    "GPU",
                    format!(
                        "#{} {}: {} total, {} in use, driver {}",
                        g.index,
                        g.name,
                        human_bytes(g.memory_total_bytes),
                        human_bytes(g.memory_used_bytes),
                        g.driver_version.unwrap_or_default()
                    ),
                ));
            }
        }
        Ok(_) => out.push(Check::missing(
            "GPU",
            "NVML lists no GPU",
            "install the NVIDIA driver",
        )),
        Err(e) => out.push(Check::missing(
            "GPU",
            e,
            "install the NVIDIA driver (a GPU is needed for real models)",
        )),
    }
    if has_cuda {
        if let Ok((free, total)) = wanlora_torch::cuda::memory_info(0) {
            out.push(Check::ok(
                "GPU memory (CUDA)",
                format!(
                    "{} free of {}",
                    human_bytes(free as u64),
                    human_bytes(total as u64)
                ),
            ));
        }
        if tch::Cuda::cudnn_is_available() {
            out.push(Check::ok(
                "cuDNN",
                format!("available, version {}", tch::utils::version_cudnn()),
            ));
        } else {
            out.push(Check::missing(
                "cuDNN",
                "not available",
                "install PyTorch's nvidia-cudnn-cu13 wheel",
            ));
        }
        out.push(sdpa_check(Device::Cuda(0)));
    } else {
        out.push(Check::missing(
            "cuDNN",
            "not checked (no CUDA)",
            "see the CUDA line",
        ));
        out.push(sdpa_check(Device::Cpu));
    }

    for tool in ["ffmpeg", "ffprobe"] {
        out.push(match wanlora_sysinfo::tool_version(tool) {
            Ok(v) => Check::ok(
                if tool == "ffmpeg" {
                    "ffmpeg"
                } else {
                    "ffprobe"
                },
                v,
            ),
            Err(e) => Check::missing(
                if tool == "ffmpeg" {
                    "ffmpeg"
                } else {
                    "ffprobe"
                },
                e,
                "apt-get install ffmpeg (or run scripts/setup.sh)",
            ),
        });
    }

    out.push(match wanlora_sysinfo::disk_space(&args.path) {
        Ok((free, total)) if free < 100 * (1 << 30) => Check::missing(
            "disk",
            format!("{} free of {} at {}", human_bytes(free), human_bytes(total), args.path.display()),
            "a full job needs ~120 GB for the bf16 model plus caches; free space or point --path elsewhere",
        ),
        Ok((free, total)) => Check::ok(
            "disk",
            format!("{} free of {} at {}", human_bytes(free), human_bytes(total), args.path.display()),
        ),
        Err(e) => Check::missing("disk", e, "pass an existing folder with --path"),
    });
    out
}

/// Which SDPA kernel libtorch picks for a Wan-shaped bf16 self-attention (41 frames at 512²), and on
/// a GPU whether the flash kernel is usable when asked for alone. On Hopper libtorch 2.11 prefers
/// cuDNN's fused attention; flash is the fallback. Both are fused kernels with a fused backward.
fn sdpa_check(device: Device) -> Check {
    let kind = if device.is_cuda() {
        Kind::BFloat16
    } else {
        Kind::Float
    };
    // 1 sample, 40 heads, 11 264 tokens (41 frames 512×512), head dim 128 on GPU; smaller on CPU.
    let tokens = if device.is_cuda() { 11_264 } else { 256 };
    let q = Tensor::randn([1, 40, tokens, 128], (kind, device));
    let picked = match wanlora_torch::cuda::sdp_choice(&q, &q, &q) {
        Ok(c) => c,
        Err(e) => {
            return Check::missing(
                "attention kernel",
                e.to_string(),
                "libtorch could not choose an SDPA kernel",
            )
        }
    };
    let mut found = format!(
        "{} for {kind:?} [1, 40, {tokens}, 128] on {device:?}",
        picked.name()
    );
    if !device.is_cuda() {
        return Check::ok("attention kernel", found);
    }
    // Ask for flash alone, then restore every back-end.
    let flash = wanlora_torch::cuda::sdp_enable(true, false, false, false)
        .ok()
        .and_then(|_| wanlora_torch::cuda::sdp_choice(&q, &q, &q).ok());
    let _ = wanlora_torch::cuda::sdp_enable(true, true, true, true);
    let flash_ok = flash == Some(wanlora_torch::cuda::SdpBackend::Flash);
    found.push_str(if flash_ok {
        "; flash available"
    } else {
        "; flash NOT available"
    });
    use wanlora_torch::cuda::SdpBackend::{Cudnn, Flash};
    if matches!(picked, Flash | Cudnn) && flash_ok {
        Check::ok("attention kernel", found)
    } else {
        Check::missing(
            "attention kernel",
            found,
            "fused attention needs an Ampere or newer GPU (Hopper expected) and PyTorch 2.11 with CUDA",
        )
    }
}

pub fn run(args: DoctorArgs) -> Result<()> {
    let report = checks(&args);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    for c in &report {
        let mark = if c.ok { "ok " } else { "-- " };
        println!("{mark} {:<18} {}", c.name, c.found);
        if let Some(fix) = &c.fix {
            println!("    {:<18} fix: {fix}", "");
        }
    }
    Ok(())
}
