//! Sanity ranges for numbers that size the run, the job's name as a folder name, and the CUDA
//! device index. A value past these bounds is a typo or a probe (`gradient_accumulation:
//! 2147483648`, `resolution: [1000000000]`) that would otherwise surface as an allocation failure
//! or an endless run; each finding names the key and the allowed range.

use crate::finding::Finding;
use crate::job::Job;
use crate::names::name_problem;
use crate::reader::Ctx;

/// Largest accepted side of a training bucket or sample, in pixels (Wan 2.2 is trained at up to
/// 1280×720; 4096 leaves room for upscaled runs without letting a typo allocate terabytes).
pub const MAX_SIDE: u32 = 4096;
/// Largest accepted frame count (81 frames is Wan's 5 s clip; 1025 is over a minute at 16 fps).
pub const MAX_FRAMES: u32 = 1025;
/// Highest CUDA device index `device: cuda:N` may name when the GPU count is not known.
pub const MAX_DEVICE_INDEX: u32 = 1023;

/// One integer key and its accepted range.
struct Bound {
    key: String,
    value: u64,
    min: u64,
    max: u64,
    /// Why the bound is where it is, for the hint.
    why: &'static str,
}

/// Checks the job's sizes and counts against their ranges, and `config.name` as a folder name.
pub(crate) fn check_limits(job: &Job, ctx: &mut Ctx) {
    check_job_name(&job.config.name, ctx);
    let p = "config.process[0]";
    let process = job.process();
    let train = &process.train;
    let sample = &process.sample;
    let mut bounds = vec![
        bound(
            format!("{p}.train.steps"),
            train.steps,
            1,
            10_000_000,
            "a LoRA converges in thousands of steps",
        ),
        bound(
            format!("{p}.train.batch_size"),
            train.batch_size,
            1,
            64,
            "one 24-80 GB GPU holds a few clips per step",
        ),
        bound(
            format!("{p}.train.gradient_accumulation"),
            train.gradient_accumulation,
            1,
            1024,
            "each step runs this many forward/backward passes",
        ),
        bound(
            format!("{p}.network.linear"),
            process.network.linear,
            1,
            5120,
            "Wan's layers are 5120 wide; a higher rank adds nothing",
        ),
        bound(
            format!("{p}.sample.width"),
            sample.width,
            16,
            MAX_SIDE,
            "samples are rendered at this size",
        ),
        bound(
            format!("{p}.sample.height"),
            sample.height,
            16,
            MAX_SIDE,
            "samples are rendered at this size",
        ),
        bound(
            format!("{p}.sample.num_frames"),
            sample.num_frames,
            1,
            MAX_FRAMES,
            "Wan generates 81 frames (5 s at 16 fps)",
        ),
        bound(
            format!("{p}.sample.sample_steps"),
            sample.sample_steps,
            1,
            1000,
            "25-50 denoising steps are usual",
        ),
        bound(
            format!("{p}.sample.fps"),
            sample.fps,
            1,
            240,
            "Wan's frame rate is 16",
        ),
    ];
    for (i, dataset) in process.datasets.iter().enumerate() {
        let at = format!("{p}.datasets[{i}]");
        for (j, &side) in dataset.resolution.iter().enumerate() {
            let key = if dataset.resolution.len() == 1 {
                format!("{at}.resolution")
            } else {
                format!("{at}.resolution[{j}]")
            };
            bounds.push(bound(
                key,
                side,
                16,
                MAX_SIDE,
                "a bucket of this size is decoded and encoded for every clip",
            ));
        }
        bounds.push(bound(
            format!("{at}.num_frames"),
            dataset.num_frames,
            1,
            MAX_FRAMES,
            "every clip is decoded to this many frames",
        ));
        bounds.push(bound(
            format!("{at}.num_repeats"),
            dataset.num_repeats,
            1,
            10_000,
            "repeats weigh datasets against each other",
        ));
        bounds.push(bound(
            format!("{at}.fps"),
            dataset.fps,
            1,
            240,
            "Wan's frame rate is 16",
        ));
    }
    for (i, item) in sample.samples.iter().enumerate() {
        let at = format!("{p}.sample.samples[{i}]");
        let optional = [
            ("width", item.width, 16, MAX_SIDE),
            ("height", item.height, 16, MAX_SIDE),
            ("num_frames", item.num_frames, 1, MAX_FRAMES),
            ("sample_steps", item.sample_steps, 1, 1000),
            ("fps", item.fps, 1, 240),
        ];
        for (key, value, min, max) in optional {
            if let Some(value) = value {
                bounds.push(bound(
                    format!("{at}.{key}"),
                    value,
                    min,
                    max,
                    "this sample's own setting",
                ));
            }
        }
    }
    for b in bounds {
        // Zero and other values below the minimum are reported by the checks of each key.
        if b.value > b.max {
            let (key, _) = ctx.locate(&b.key);
            let name = key.rsplit('.').next().unwrap_or(&key).to_string();
            ctx.error_at(
                &b.key,
                format!(
                    "{name} {} is out of range: allowed {} to {}",
                    b.value, b.min, b.max
                ),
                format!("use a value from {} to {} ({})", b.min, b.max, b.why),
            );
        }
    }
    check_device_syntax(&process.device, &format!("{p}.device"), ctx);
}

fn bound(key: String, value: u32, min: u64, max: u32, why: &'static str) -> Bound {
    Bound {
        key,
        value: u64::from(value),
        min,
        max: u64::from(max),
        why,
    }
}

/// `config.name` becomes the output folder `<training_folder>/<name>`: one plain folder name, by
/// the rule the web UI applies to its job names.
fn check_job_name(name: &str, ctx: &mut Ctx) {
    // Empty is reported where the name is read; `${VAR}` where the variable is missing.
    if name.trim().is_empty() || name.contains("${") {
        return;
    }
    if let Some(why) = name_problem(name) {
        ctx.error_at(
            "config.name",
            format!(
                "config.name {} cannot be the output folder's name: {why}",
                escaped(name)
            ),
            "the outputs go to <training_folder>/<name>; use a plain name such as my_lora_v1",
        );
    }
}

/// A name for a message, with control characters escaped so the message stays on one line.
fn escaped(name: &str) -> String {
    format!("{name:?}")
}

/// `cuda:N` with an index no machine has (the syntax itself is checked in `validate`).
fn check_device_syntax(device: &str, key: &str, ctx: &mut Ctx) {
    let Some(index) = device_index(device) else {
        return;
    };
    if index > u64::from(MAX_DEVICE_INDEX) {
        ctx.error_at(
            key,
            format!(
                "device `{device}`: GPU index {index} is out of range (0 to {MAX_DEVICE_INDEX})"
            ),
            "use cuda (the first visible GPU) or cuda:N with N below the number of GPUs",
        );
    }
}

/// N of `cuda:N`, when the device is written that way.
fn device_index(device: &str) -> Option<u64> {
    let digits = device.strip_prefix("cuda:")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(digits.parse().unwrap_or(u64::MAX))
}

/// How many GPUs a process started now would see: CUDA_VISIBLE_DEVICES (when set) lists them,
/// CUDA stopping at the first entry that is not a device; otherwise the `detected` count (NVML).
/// `None` when unknown.
pub fn visible_gpu_count(
    cuda_visible_devices: Option<&str>,
    detected: Option<usize>,
) -> Option<usize> {
    match cuda_visible_devices {
        Some(list) => Some(
            list.split(',')
                .map(str::trim)
                .take_while(|entry| {
                    !entry.is_empty()
                        && !entry.starts_with('-')
                        && (entry.bytes().all(|b| b.is_ascii_digit())
                            || entry.starts_with("GPU-")
                            || entry.starts_with("MIG-"))
                })
                .count(),
        ),
        None => detected,
    }
}

/// The finding for `device: cuda:N` when N is not below `gpu_count`, the number of GPUs this
/// process can see (CUDA_VISIBLE_DEVICES counted). For callers that know the count
/// (`wanlora validate`); the config crate itself does not look at the machine.
pub fn device_count_finding(job: &Job, gpu_count: usize) -> Option<Finding> {
    let device = &job.process().device;
    let index = device_index(device)?;
    if index < gpu_count as u64 {
        return None;
    }
    let visible = match gpu_count {
        0 => "no GPU is visible".to_string(),
        1 => "only GPU 0 is visible".to_string(),
        n => format!("GPUs 0 to {} are visible", n - 1),
    };
    Some(Finding::error(
        "config.process[0].device",
        None,
        format!("device `{device}`: {visible} on this machine"),
        "use cuda (the first visible GPU) or an index below the GPU count; CUDA_VISIBLE_DEVICES renumbers GPUs from 0",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job_on(device: &str) -> Job {
        let process = crate::job::Process {
            device: device.to_string(),
            ..Default::default()
        };
        Job {
            job: "extension".into(),
            config: crate::job::JobConfig {
                name: "fixture".into(),
                process: vec![process],
            },
            meta: Default::default(),
        }
    }

    #[test]
    fn a_device_index_beyond_the_visible_gpus_is_an_error() {
        let finding = device_count_finding(&job_on("cuda:99"), 2).expect("finding");
        assert_eq!(finding.key, "config.process[0].device");
        assert!(
            finding
                .message
                .contains("`cuda:99`: GPUs 0 to 1 are visible"),
            "{}",
            finding.message
        );
        assert!(finding.is_error());
        assert!(device_count_finding(&job_on("cuda:1"), 2).is_none());
        assert!(device_count_finding(&job_on("cuda"), 1).is_none());
        assert!(device_count_finding(&job_on("cpu"), 0).is_none());
        assert!(device_count_finding(&job_on("cuda:0"), 0)
            .expect("no GPU")
            .message
            .contains("no GPU is visible"));
    }

    #[test]
    fn visible_gpus_follow_cuda_visible_devices() {
        assert_eq!(visible_gpu_count(Some("0,1"), Some(8)), Some(2));
        assert_eq!(visible_gpu_count(Some(""), Some(8)), Some(0));
        assert_eq!(visible_gpu_count(Some("2,-1,3"), Some(8)), Some(1));
        assert_eq!(visible_gpu_count(Some("GPU-abc"), None), Some(1));
        assert_eq!(visible_gpu_count(None, Some(4)), Some(4));
        assert_eq!(visible_gpu_count(None, None), None);
    }
}
