//! The job-folder contract of docs/JOB-FOLDER.md, written once: the trainer writes these files and
//! records, the UI reads them back. File names, the status record, the training metrics record,
//! the control requests, and the names of LoRA files, samples and states.

use serde::{Deserialize, Serialize};

/// The YAML the UI starts the trainer with.
pub const JOB_YAML: &str = "job.yaml";
/// The resolved job as the trainer read it.
pub const CONFIG_YAML: &str = "config.yaml";
pub const LOG: &str = "log.txt";
pub const STATUS: &str = "status.json";
pub const METRICS: &str = "metrics.jsonl";
pub const LOSS_PLOT: &str = "loss.png";
pub const PID: &str = "pid";
/// Folder of empty request files (see [`Control`]).
pub const CONTROL: &str = "control";
pub const SAMPLES: &str = "samples";
/// Folder of resumable training states (`state/step_<N>/`).
pub const STATE: &str = "state";
/// Folder of an expert-parallel job's preview hand-offs ([`preview_hand_off_name`]): after the
/// high-noise phase of a preview, the high-noise rank leaves its latents and sampler state here
/// for the low-noise rank, which finishes the preview and deletes the file.
pub const PREVIEW_HAND_OFFS: &str = "ranks/previews";

/// What a run is doing, as `status.json` says it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobPhase {
    #[default]
    Starting,
    Caching,
    Training,
    Sampling,
    Saving,
    Completed,
    Failed,
    Stopped,
    /// A phase this build does not know (a newer trainer wrote the file).
    #[serde(other)]
    Unknown,
}

impl JobPhase {
    /// The run has ended (the trainer process exits after writing this).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobPhase::Completed | JobPhase::Failed | JobPhase::Stopped
        )
    }
}

/// `status.json`. Reading is lenient: unknown fields are ignored and missing ones default, so a UI
/// reads the file of an older or newer trainer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Status {
    pub state: JobPhase,
    pub step: u64,
    pub total_steps: u64,
    /// `high_noise` / `low_noise` while one expert trains.
    pub expert: Option<String>,
    pub seconds_per_step: Option<f64>,
    pub eta_seconds: Option<f64>,
    pub message: String,
    pub pid: Option<u32>,
    /// RFC 3339 UTC.
    pub updated: String,
    pub error: Option<String>,
}

impl Status {
    /// The record of this process at `phase`, stamped now; the optional fields empty.
    pub fn at(phase: JobPhase, step: u64, total_steps: u64, message: &str) -> Status {
        Status {
            state: phase,
            step,
            total_steps,
            message: message.into(),
            pid: Some(std::process::id()),
            updated: now_rfc3339(),
            ..Status::default()
        }
    }
}

/// UTC time as RFC 3339, without a date crate.
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// One training record of `metrics.jsonl` (validation records have their own shape).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub step: u64,
    pub expert: String,
    pub loss: f64,
    pub loss_main: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_preservation: Option<f64>,
    pub lr: f64,
    pub grad_norm: f64,
    pub timestep: f64,
    pub seconds: f64,
    pub time: String,
}

/// A request left as an empty file in `control/`; the trainer takes it at the end of its step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Stop,
    SaveNow,
    SampleNow,
}

impl Control {
    pub const ALL: [Control; 3] = [Control::Stop, Control::SaveNow, Control::SampleNow];

    pub fn file_name(self) -> &'static str {
        match self {
            Control::Stop => "stop",
            Control::SaveNow => "save_now",
            Control::SampleNow => "sample_now",
        }
    }
}

/// A LoRA file's name: `<job>[_<step:09>]_<expert>[_ema].safetensors` (no step for the final save).
pub fn lora_file_name(job: &str, step: Option<u64>, expert: &str, ema: bool) -> String {
    let step = step.map(|s| format!("_{s:09}")).unwrap_or_default();
    let ema = if ema { "_ema" } else { "" };
    format!("{job}{step}_{expert}{ema}.safetensors")
}

/// What a LoRA file's name says, read back by [`LoraFileName::parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoraFileName {
    /// None for the final files.
    pub step: Option<u64>,
    /// `high_noise` / `low_noise` (or what else the name ends with), when the name has one.
    pub expert: Option<String>,
    pub ema: bool,
}

impl LoraFileName {
    /// Reads `file` as a LoRA file of job `job`; None for other files.
    pub fn parse(job: &str, file: &str) -> Option<LoraFileName> {
        let rest = file.strip_suffix(".safetensors")?.strip_prefix(job)?;
        let (rest, ema) = match rest.strip_suffix("_ema") {
            Some(r) => (r, true),
            None => (rest, false),
        };
        let rest = rest.trim_start_matches('_');
        let (first, tail) = match rest.split_once('_') {
            Some((a, b)) => (a, Some(b)),
            None => (rest, None),
        };
        let named = |s: &str| (!s.is_empty()).then(|| s.to_string());
        if first.len() == 9 && first.bytes().all(|b| b.is_ascii_digit()) {
            Some(LoraFileName {
                step: first.parse().ok(),
                expert: tail.and_then(named),
                ema,
            })
        } else {
            Some(LoraFileName {
                step: None,
                expert: named(rest),
                ema,
            })
        }
    }
}

/// `<step:09>_<index>`, the stem of a sample's files in `samples/`.
pub fn sample_stem(step: u64, index: usize) -> String {
    format!("{step:09}_{index}")
}

/// `<step:09>_<index>.safetensors`: the hand-off of a preview in [`PREVIEW_HAND_OFFS`].
pub fn preview_hand_off_name(step: u64, index: usize) -> String {
    format!("{}.safetensors", sample_stem(step, index))
}

/// A hand-off file name read back: (step, index); None for other files.
pub fn parse_preview_hand_off_name(file: &str) -> Option<(u64, usize)> {
    match parse_sample_name(file)? {
        (step, index, "safetensors") => Some((step, index)),
        _ => None,
    }
}

/// A sample file name read back: (step, index, extension); None for other files.
pub fn parse_sample_name(file: &str) -> Option<(u64, usize, &str)> {
    let (stem, ext) = file.rsplit_once('.')?;
    let (step, index) = stem.split_once('_')?;
    if step.is_empty() || !step.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((step.parse().ok()?, index.parse().ok()?, ext))
}

/// The folder of the state saved at `step`, inside `state/` (or `state/<expert>/` for one rank of
/// an expert-parallel job).
pub fn state_step_name(step: u64) -> String {
    format!("step_{step:09}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lora_names_round_trip() {
        for (step, expert, ema) in [
            (Some(250), "high_noise", false),
            (None, "low_noise", true),
            (Some(3000), "low_noise", true),
            (None, "high_noise", false),
        ] {
            let name = lora_file_name("my_job", step, expert, ema);
            let parsed = LoraFileName::parse("my_job", &name).unwrap();
            assert_eq!(
                parsed,
                LoraFileName {
                    step,
                    expert: Some(expert.into()),
                    ema
                },
                "{name}"
            );
        }
        assert_eq!(
            lora_file_name("j", Some(7), "high_noise", false),
            "j_000000007_high_noise.safetensors"
        );
        assert_eq!(
            LoraFileName::parse("other", "j_high_noise.safetensors"),
            None
        );
        assert_eq!(LoraFileName::parse("j", "j_high_noise.json"), None);
    }

    #[test]
    fn sample_names_round_trip() {
        let file = format!("{}.mp4", sample_stem(42, 1));
        assert_eq!(file, "000000042_1.mp4");
        assert_eq!(parse_sample_name(&file), Some((42, 1, "mp4")));
        assert_eq!(parse_sample_name("notes.txt"), None);
        assert_eq!(parse_sample_name("_1.mp4"), None);
        let hand_off = preview_hand_off_name(42, 1);
        assert_eq!(hand_off, "000000042_1.safetensors");
        assert_eq!(parse_preview_hand_off_name(&hand_off), Some((42, 1)));
        assert_eq!(parse_preview_hand_off_name(&file), None);
        assert_eq!(
            parse_preview_hand_off_name(".000000042_1.safetensors.tmp-77-0"),
            None
        );
    }

    #[test]
    fn rfc3339_has_the_shape() {
        let s = now_rfc3339();
        assert_eq!(s.len(), 20);
        assert!(s.starts_with("20") && s.ends_with('Z') && s.as_bytes()[10] == b'T');
    }

    #[test]
    fn status_reads_leniently_and_knows_the_phases() {
        let s: Status = serde_json::from_str(r#"{"state":"training","step":3,"new_field":1}"#)
            .expect("unknown fields are ignored");
        assert_eq!(s.state, JobPhase::Training);
        assert_eq!(s.step, 3);
        assert_eq!(s.message, "");
        let s: Status = serde_json::from_str(r#"{"state":"rebooting"}"#).unwrap();
        assert_eq!(s.state, JobPhase::Unknown);
        let written = serde_json::to_string(&Status {
            state: JobPhase::Completed,
            ..Status::default()
        })
        .unwrap();
        assert!(written.contains(r#""state":"completed""#), "{written}");
        assert!(JobPhase::Stopped.is_final() && !JobPhase::Saving.is_final());
    }
}
