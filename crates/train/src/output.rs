//! The job folder (docs/JOB-FOLDER.md): status.json, metrics.jsonl, control/ requests, the pid file
//! and SIGINT — how the trainer talks to the UI and to users.

use serde::Serialize;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::experts::Expert;
use crate::TrainError;
use wanlora_torch::weights::write_atomic;

/// Set by the SIGINT handler; checked once per step.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Routes SIGINT (Ctrl+C, the UI's stop button) to a flag, so the step in flight finishes, the
/// checkpoint is saved and the run exits cleanly.
pub fn install_sigint_handler() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t);
    }
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

pub use wanlora_spec::job_folder::{Control, JobPhase, Metrics, Status};
use wanlora_spec::job_folder::{CONTROL, LOG, METRICS, PID, SAMPLES, STATE, STATUS};

pub use wanlora_spec::job_folder::now_rfc3339;

pub struct JobFolder {
    pub root: PathBuf,
    /// Set in a process that trains one expert of an expert-parallel job: its status and control
    /// requests are its own (`ranks/<expert>/`, which the supervising process reads and feeds),
    /// so are its states (`state/<expert>/`); its log lines name the expert, and the pid file is
    /// the supervisor's.
    pub rank: Option<Expert>,
    /// A data-parallel rank other than 0: it trains like rank 0 but leaves the job folder's
    /// status, metrics, log, pid and control requests to rank 0.
    pub quiet: bool,
}

impl JobFolder {
    pub fn create(root: &Path) -> Result<JobFolder, TrainError> {
        Self::create_for(root, None)
    }

    /// The job folder as the process training `rank`'s expert (or the whole job, `None`) sees it.
    pub fn create_for(root: &Path, rank: Option<Expert>) -> Result<JobFolder, TrainError> {
        let folder = JobFolder {
            root: root.to_path_buf(),
            rank,
            quiet: false,
        };
        for d in [
            root.to_path_buf(),
            root.join(CONTROL),
            root.join(SAMPLES),
            root.join(STATE),
            folder.control_dir(),
            folder.states(),
        ] {
            std::fs::create_dir_all(&d).map_err(|e| TrainError::io(&d, e))?;
        }
        Ok(folder)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// `ranks/<expert>/`: what the process training `expert` in an expert-parallel job shares
    /// with its supervisor.
    pub fn rank_dir(root: &Path, expert: Expert) -> PathBuf {
        root.join("ranks").join(expert.name())
    }

    fn status_path(&self) -> PathBuf {
        match self.rank {
            Some(e) => Self::rank_dir(&self.root, e).join(STATUS),
            None => self.path(STATUS),
        }
    }

    /// Where control requests are taken from.
    pub fn control_dir(&self) -> PathBuf {
        match self.rank {
            Some(e) => Self::rank_dir(&self.root, e).join(CONTROL),
            None => self.path(CONTROL),
        }
    }

    /// The folder of saved states (`state/`, or `state/<expert>/` in an expert-parallel rank).
    pub fn states(&self) -> PathBuf {
        match self.rank {
            Some(e) => self.root.join(STATE).join(e.name()),
            None => self.path(STATE),
        }
    }

    pub fn write_status(&self, status: &Status) -> Result<(), TrainError> {
        if self.quiet {
            return Ok(());
        }
        write_atomic(
            &self.status_path(),
            serde_json::to_string_pretty(status)?.as_bytes(),
        )?;
        Ok(())
    }

    /// status.json at the end of a run, also on a full disk: when the atomic write fails (no room
    /// for its temporary file) the file is rewritten in place, which reuses its own blocks.
    pub fn write_final_status(&self, status: &Status) {
        if self.write_status(status).is_err() {
            if let Ok(text) = serde_json::to_string_pretty(status) {
                let _ = std::fs::write(self.status_path(), text);
            }
        }
    }

    /// Marks the job failed with `error` from outside its trainer (a supervisor whose rank died
    /// while the trainer waits on it), keeping the step and totals of its last status.
    pub fn mark_failed(&self, error: &str) {
        let last: Status = std::fs::read_to_string(self.status_path())
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        let mut status = Status::at(JobPhase::Failed, last.step, last.total_steps, "Failed");
        status.error = Some(error.to_string());
        self.write_final_status(&status);
        self.log(&format!("failed: {error}"));
        self.remove_pid();
    }

    pub fn append_metrics(&self, m: &impl Serialize) -> Result<(), TrainError> {
        if self.quiet {
            return Ok(());
        }
        let p = self.path(METRICS);
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .map_err(|e| TrainError::io(&p, e))?;
        // One write of the record with its newline: a kill leaves the line whole or cut, never a
        // whole record without its newline that the next record would be glued to.
        let line = format!("{}\n", serde_json::to_string(m)?);
        f.write_all(line.as_bytes())
            .map_err(|e| TrainError::io(&p, e))
    }

    /// Cuts a last line without its newline (a run killed while writing it) off metrics.jsonl, so
    /// the resumed run's records start on a line of their own; the resumed run writes that step's
    /// record again. Returns the bytes removed.
    pub fn repair_metrics(&self) -> Result<u64, TrainError> {
        let p = self.path(METRICS);
        let bytes = match std::fs::read(&p) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(TrainError::io(&p, e)),
        };
        let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let torn = (bytes.len() - whole) as u64;
        if torn > 0 {
            OpenOptions::new()
                .write(true)
                .open(&p)
                .and_then(|f| f.set_len(whole as u64))
                .map_err(|e| TrainError::io(&p, e))?;
        }
        Ok(torn)
    }

    /// Appends a line to log.txt (the UI also redirects the process output there).
    pub fn log(&self, line: &str) {
        if self.quiet {
            return;
        }
        let p = self.path(LOG);
        if let Ok(mut f) = OpenOptions::new().create(true).append(true).open(&p) {
            let _ = match self.rank {
                Some(e) => writeln!(f, "{} [{}] {line}", now_rfc3339(), e.name()),
                None => writeln!(f, "{} {line}", now_rfc3339()),
            };
        }
    }

    pub fn write_pid(&self) -> Result<(), TrainError> {
        if self.rank.is_none() && !self.quiet {
            write_atomic(&self.path(PID), std::process::id().to_string().as_bytes())?;
        }
        Ok(())
    }

    pub fn remove_pid(&self) {
        if self.rank.is_none() && !self.quiet {
            let _ = std::fs::remove_file(self.path(PID));
        }
    }

    /// Whether a stop was asked for (SIGINT, or `control/stop`, which this takes).
    pub fn stop_requested(&self) -> bool {
        interrupted() || self.take_control(Control::Stop)
    }

    /// Takes a pending request (deleting its file) if there is one.
    pub fn take_control(&self, c: Control) -> bool {
        if self.quiet {
            return false;
        }
        let p = self.control_dir().join(c.file_name());
        p.exists() && std::fs::remove_file(&p).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_requests_are_taken_once() {
        let dir = tempfile::tempdir().unwrap();
        let f = JobFolder::create(dir.path()).unwrap();
        assert!(!f.take_control(Control::SaveNow));
        std::fs::write(dir.path().join("control/save_now"), b"").unwrap();
        assert!(f.take_control(Control::SaveNow));
        assert!(!f.take_control(Control::SaveNow));
    }

    #[test]
    fn metrics_append_one_json_line_per_step() {
        let dir = tempfile::tempdir().unwrap();
        let f = JobFolder::create(dir.path()).unwrap();
        for step in 1..=2 {
            f.append_metrics(&Metrics {
                step,
                expert: "high_noise".into(),
                loss: 0.5,
                loss_main: 0.5,
                loss_preservation: None,
                lr: 1e-4,
                grad_norm: 1.0,
                timestep: 950.0,
                seconds: 0.1,
                time: now_rfc3339(),
            })
            .unwrap();
        }
        let text = std::fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1]["step"], 2);
        assert!(lines[0].get("loss_preservation").is_none());
    }

    #[test]
    fn a_torn_last_metrics_line_is_cut_and_the_step_written_again() {
        let dir = tempfile::tempdir().unwrap();
        let f = JobFolder::create(dir.path()).unwrap();
        let record = |step| Metrics {
            step,
            expert: "low_noise".into(),
            loss: 0.25,
            loss_main: 0.25,
            loss_preservation: None,
            lr: 1e-4,
            grad_norm: 1.0,
            timestep: 300.0,
            seconds: 0.1,
            time: now_rfc3339(),
        };
        f.append_metrics(&record(1)).unwrap();
        // A kill in the middle of step 2's record.
        let whole = serde_json::to_string(&record(2)).unwrap();
        let mut file = OpenOptions::new()
            .append(true)
            .open(dir.path().join("metrics.jsonl"))
            .unwrap();
        file.write_all(&whole.as_bytes()[..whole.len() / 2])
            .unwrap();
        drop(file);
        assert_eq!(f.repair_metrics().unwrap(), (whole.len() / 2) as u64);
        assert_eq!(f.repair_metrics().unwrap(), 0);
        f.append_metrics(&record(2)).unwrap();
        let text = std::fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap();
        let steps: Vec<u64> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(steps, vec![1, 2]);
    }
}
