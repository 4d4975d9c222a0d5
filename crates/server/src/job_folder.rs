//! Reading and poking a job's output folder, exactly as docs/JOB-FOLDER.md specifies it: the
//! trainer writes status.json, metrics.jsonl, log.txt, samples/ and checkpoints; the UI reads them
//! and asks for things through empty files in control/.

use crate::paths::{self, PathError};
use serde::Serialize;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use wanlora_spec::job_folder::{parse_sample_name, LoraFileName};
pub use wanlora_spec::job_folder::{
    Control, JobPhase, Status, CONFIG_YAML, CONTROL, JOB_YAML, LOG, LOSS_PLOT, METRICS, PID,
    SAMPLES, STATUS,
};

/// Opens a job-folder file for reading without following a symlink at its name: a link planted
/// in the job folder must not make the UI read (and show) a file from elsewhere. A symlink fails
/// with ELOOP (see [`is_symlink_refusal`]).
pub fn open_no_follow(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// True for the error [`open_no_follow`] gives for a symlink.
pub fn is_symlink_refusal(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ELOOP)
}

/// The job's status.json, or None while the trainer has not written one.
pub fn read_status(job_dir: &Path) -> Option<Status> {
    let text = std::fs::read_to_string(job_dir.join(STATUS)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Writes the empty control file for `control`.
pub fn request(job_dir: &Path, control: Control) -> io::Result<()> {
    let dir = job_dir.join(CONTROL);
    std::fs::create_dir_all(&dir)?;
    File::create(dir.join(control.file_name()))?;
    Ok(())
}

/// Removes leftover control files so that a resumed run does not stop at its first step.
pub fn clear_controls(job_dir: &Path) -> io::Result<()> {
    for control in Control::ALL {
        match std::fs::remove_file(job_dir.join(CONTROL).join(control.file_name())) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// Follows an append-only file (metrics.jsonl, log.txt) from a byte offset, handing out only
/// complete lines. A file that became shorter than the offset was replaced: reading restarts.
#[derive(Debug, Clone)]
pub struct Follower {
    offset: u64,
    /// A follower further behind than this skips ahead to the newest bytes.
    max_chunk: u64,
}

/// At most this many new bytes of a log are handed out per read; a log follower that falls
/// further behind skips ahead (the log view only needs recent lines).
pub const FOLLOW_CHUNK: u64 = 1 << 20;

impl Default for Follower {
    fn default() -> Self {
        Follower::new()
    }
}

impl Follower {
    /// From the start, skipping ahead when more than [`FOLLOW_CHUNK`] bytes are new.
    pub fn new() -> Self {
        Follower {
            offset: 0,
            max_chunk: FOLLOW_CHUNK,
        }
    }

    /// From the start, handing out every line however far behind (metrics: each step counts).
    pub fn unbounded() -> Self {
        Follower {
            offset: 0,
            max_chunk: u64::MAX,
        }
    }

    /// Starts at the last `tail` bytes of the file (at a line start).
    pub fn at_tail(path: &Path, tail: u64) -> Self {
        let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        Follower {
            offset: len.saturating_sub(tail),
            max_chunk: FOLLOW_CHUNK,
        }
    }

    /// The complete lines appended since the last call (without their newlines).
    pub fn read_lines(&mut self, path: &Path) -> io::Result<Vec<String>> {
        let mut file = match open_no_follow(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let len = file.metadata()?.len();
        if len < self.offset {
            self.offset = 0;
        }
        if len - self.offset > self.max_chunk {
            self.offset = len - self.max_chunk;
        }
        file.seek(SeekFrom::Start(self.offset))?;
        let mut buf = Vec::with_capacity((len - self.offset) as usize);
        (&mut file).take(len - self.offset).read_to_end(&mut buf)?;
        // Only complete lines: the writer may be in the middle of one.
        let Some(last_newline) = buf.iter().rposition(|&b| b == b'\n') else {
            return Ok(Vec::new());
        };
        let complete = &buf[..last_newline];
        let skip_partial_first = self.offset > 0 && !self.at_line_start(&mut file)?;
        self.offset += last_newline as u64 + 1;
        let text = String::from_utf8_lossy(complete);
        let mut lines: Vec<String> = text.split('\n').map(str::to_string).collect();
        if skip_partial_first && !lines.is_empty() {
            lines.remove(0);
        }
        Ok(lines)
    }

    fn at_line_start(&self, file: &mut File) -> io::Result<bool> {
        file.seek(SeekFrom::Start(self.offset - 1))?;
        let mut b = [0u8; 1];
        file.read_exact(&mut b)?;
        Ok(b[0] == b'\n')
    }
}

/// Parses metric lines, keeping only objects with a numeric `step` (a resumed run appends lines
/// for steps already seen; readers keep the last one of each step).
pub fn parse_metrics(lines: &[String]) -> Vec<serde_json::Value> {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l.trim()).ok())
        .filter(|v| v.get("step").and_then(|s| s.as_f64()).is_some())
        .collect()
}

/// All metric lines of a job in step order: the last training line of each step, and the last
/// validation record (`validation_loss`) of each step and expert beside it.
pub fn read_all_metrics(job_dir: &Path) -> io::Result<Vec<serde_json::Value>> {
    let mut text = String::new();
    match open_no_follow(&job_dir.join(METRICS)) {
        Ok(mut file) => file.read_to_string(&mut text)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    let mut by_step = std::collections::BTreeMap::new();
    for v in parse_metrics(&lines) {
        let step = v["step"].as_f64().unwrap_or(0.0) as i64;
        let validation = v
            .get("validation_loss")
            .map(|_| v["expert"].as_str().unwrap_or_default().to_string());
        by_step.insert((step, validation), v);
    }
    Ok(by_step.into_values().collect())
}

/// The last `n` lines of a text file (reading at most its last 256 KiB).
pub fn tail_lines(path: &Path, n: usize) -> io::Result<Vec<String>> {
    let mut file = match open_no_follow(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    let start = len.saturating_sub(256 * 1024);
    file.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::new();
    file.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let mut lines: Vec<&str> = text.lines().collect();
    if start > 0 && !lines.is_empty() {
        lines.remove(0);
    }
    let from = lines.len().saturating_sub(n);
    Ok(lines[from..].iter().map(|s| s.to_string()).collect())
}

/// One sample generated during training: `samples/<step:09>_<index>.<ext>`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Sample {
    pub step: u64,
    pub index: usize,
    /// `samples/…mp4` when present.
    pub video: Option<String>,
    /// `samples/…webp` (animated) when present.
    pub animation: Option<String>,
    /// `samples/…jpg` thumbnail when present.
    pub thumbnail: Option<String>,
}

/// The samples of a job, newest step first.
pub fn list_samples(job_dir: &Path) -> Vec<Sample> {
    let mut samples: std::collections::BTreeMap<(u64, usize), Sample> = Default::default();
    let Ok(entries) = std::fs::read_dir(job_dir.join(SAMPLES)) else {
        return Vec::new();
    };
    for entry in entries.flatten() {
        if !entry.file_type().map(|t| t.is_file()).unwrap_or(false) {
            continue;
        }
        let file = entry.file_name().to_string_lossy().to_string();
        let Some((step, index, ext)) = parse_sample_name(&file) else {
            continue;
        };
        let slot = samples.entry((step, index)).or_insert(Sample {
            step,
            index,
            video: None,
            animation: None,
            thumbnail: None,
        });
        let rel = Some(format!("{SAMPLES}/{file}"));
        match ext {
            "mp4" => slot.video = rel,
            "webp" => slot.animation = rel,
            "jpg" | "jpeg" | "png" => slot.thumbnail = rel,
            _ => {}
        }
    }
    let mut out: Vec<Sample> = samples.into_values().collect();
    out.sort_by(|a, b| (b.step, a.index).cmp(&(a.step, b.index)));
    out
}

/// A LoRA file written by the trainer.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Checkpoint {
    pub file: String,
    /// None for the final files.
    pub step: Option<u64>,
    /// `high_noise` / `low_noise`, when the name says so.
    pub expert: Option<String>,
    pub ema: bool,
    pub bytes: u64,
}

/// The job's LoRA files: `<name>[_<step:09>]_<expert>[_ema].safetensors`, newest step first,
/// final files on top.
pub fn list_checkpoints(job_dir: &Path, job_name: &str) -> Vec<Checkpoint> {
    let Ok(entries) = std::fs::read_dir(job_dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        let file = entry.file_name().to_string_lossy().to_string();
        let Some(LoraFileName { step, expert, ema }) = LoraFileName::parse(job_name, &file) else {
            continue;
        };
        out.push(Checkpoint {
            file,
            step,
            expert,
            ema,
            bytes: meta.len(),
        });
    }
    out.sort_by(|a, b| {
        let key = |c: &Checkpoint| c.step.unwrap_or(u64::MAX);
        key(b).cmp(&key(a)).then(a.file.cmp(&b.file))
    });
    out
}

/// Resolves a file of the job folder that the UI may hand out: a top-level LoRA file, a sample,
/// config.yaml, job.yaml, log.txt or loss.png. Anything else, and any symlink, is refused.
pub fn servable_file(job_dir: &Path, rel: &str) -> Result<PathBuf, PathError> {
    let refused = |why| PathError::BadName {
        what: "job file",
        name: rel.to_string(),
        why,
    };
    let path = match rel.split_once('/') {
        Some((SAMPLES, file)) => {
            let file = paths::checked_name("sample file", file)?;
            let ext = file.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
            if !["mp4", "webp", "jpg", "jpeg", "png"].contains(&ext) {
                return Err(refused("only sample videos and images are served"));
            }
            paths::confined_join(&job_dir.join(SAMPLES), "sample file", file)?
        }
        Some(_) => return Err(refused("only samples/ and top-level files are served")),
        None => {
            let file = paths::checked_name("job file", rel)?;
            let known = [JOB_YAML, CONFIG_YAML, LOG, LOSS_PLOT].contains(&file);
            if !known && !file.ends_with(".safetensors") {
                return Err(refused(
                    "only LoRA files, config.yaml, job.yaml, log.txt and loss.png are served",
                ));
            }
            paths::confined_join(job_dir, "job file", file)?
        }
    };
    paths::ensure_inside(job_dir, &path)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn follower_hands_out_complete_lines_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.jsonl");
        let mut f = File::create(&path).unwrap();
        let mut follower = Follower::new();
        assert!(follower.read_lines(&path).unwrap().is_empty());
        write!(f, "one\ntw").unwrap();
        assert_eq!(follower.read_lines(&path).unwrap(), vec!["one"]);
        assert!(follower.read_lines(&path).unwrap().is_empty());
        writeln!(f, "o").unwrap();
        assert_eq!(follower.read_lines(&path).unwrap(), vec!["two"]);
        // Replaced by a shorter file: start over.
        std::fs::write(&path, "x\n").unwrap();
        assert_eq!(follower.read_lines(&path).unwrap(), vec!["x"]);
    }

    #[test]
    fn follower_at_tail_skips_the_partial_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.txt");
        std::fs::write(&path, "aaaa\nbbbb\ncccc\n").unwrap();
        let mut follower = Follower::at_tail(&path, 7);
        assert_eq!(follower.read_lines(&path).unwrap(), vec!["cccc"]);
        let mut exact = Follower::at_tail(&path, 10);
        assert_eq!(exact.read_lines(&path).unwrap(), vec!["bbbb", "cccc"]);
    }

    #[test]
    fn metrics_keep_the_last_line_of_each_step() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(METRICS),
            "{\"step\":1,\"loss\":0.5}\n{\"step\":2,\"loss\":0.4}\nnot json\n{\"step\":2,\"loss\":0.3}\n{\"x\":1}\n",
        )
        .unwrap();
        let m = read_all_metrics(dir.path()).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[1]["loss"], 0.3);
    }

    #[test]
    fn validation_records_stand_beside_the_training_line_of_their_step() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(METRICS),
            concat!(
                "{\"step\":3,\"expert\":\"high_noise\",\"loss\":0.5}\n",
                "{\"step\":3,\"expert\":\"high_noise\",\"validation_loss\":0.7}\n",
                "{\"step\":3,\"expert\":\"low_noise\",\"validation_loss\":0.6}\n",
                "{\"step\":3,\"expert\":\"low_noise\",\"validation_loss\":0.4}\n",
            ),
        )
        .unwrap();
        let m = read_all_metrics(dir.path()).unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m[0]["loss"], 0.5);
        assert_eq!(m[1]["validation_loss"], 0.7);
        assert_eq!(m[2]["validation_loss"], 0.4);
    }

    #[test]
    fn tail_returns_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOG);
        std::fs::write(&path, "1\n2\n3\n4\n").unwrap();
        assert_eq!(tail_lines(&path, 2).unwrap(), vec!["3", "4"]);
        assert!(tail_lines(&dir.path().join("none"), 2).unwrap().is_empty());
    }

    #[test]
    fn samples_group_by_step_and_index() {
        let dir = tempfile::tempdir().unwrap();
        let s = dir.path().join(SAMPLES);
        std::fs::create_dir(&s).unwrap();
        for f in [
            "000000010_0.mp4",
            "000000010_0.jpg",
            "000000020_1.webp",
            "000000020_0.mp4",
            "readme.txt",
        ] {
            std::fs::write(s.join(f), b"x").unwrap();
        }
        let list = list_samples(dir.path());
        assert_eq!(list.len(), 3);
        assert_eq!((list[0].step, list[0].index), (20, 0));
        assert_eq!(
            list[1].animation.as_deref(),
            Some("samples/000000020_1.webp")
        );
        assert_eq!(
            list[2].thumbnail.as_deref(),
            Some("samples/000000010_0.jpg")
        );
    }

    #[test]
    fn checkpoints_parse_step_expert_and_ema() {
        let dir = tempfile::tempdir().unwrap();
        for f in [
            "job_000000250_high_noise.safetensors",
            "job_000000500_low_noise_ema.safetensors",
            "job_high_noise.safetensors",
            "other_high_noise.safetensors",
        ] {
            std::fs::write(dir.path().join(f), b"1234").unwrap();
        }
        let list = list_checkpoints(dir.path(), "job");
        assert_eq!(list.len(), 3);
        assert_eq!(list[0].step, None);
        assert_eq!(list[0].expert.as_deref(), Some("high_noise"));
        assert_eq!(list[1].step, Some(500));
        assert!(list[1].ema);
        assert_eq!(list[1].expert.as_deref(), Some("low_noise"));
        assert_eq!(list[2].bytes, 4);
    }

    #[test]
    fn only_known_files_are_servable() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(SAMPLES)).unwrap();
        std::fs::write(dir.path().join("a.safetensors"), b"").unwrap();
        std::fs::write(dir.path().join("samples/000000001_0.mp4"), b"").unwrap();
        assert!(servable_file(dir.path(), "a.safetensors").is_ok());
        assert!(servable_file(dir.path(), "samples/000000001_0.mp4").is_ok());
        for bad in [
            "state/optimizer.bin",
            "../x.safetensors",
            "samples/../a.safetensors",
            "pid",
            "/etc/passwd",
            "samples/x.sh",
        ] {
            assert!(servable_file(dir.path(), bad).is_err(), "{bad} served");
        }
        std::os::unix::fs::symlink("/etc/hostname", dir.path().join("b.safetensors")).unwrap();
        assert!(servable_file(dir.path(), "b.safetensors").is_err());
    }
}
