//! The job queue and the trainer processes it runs.
//!
//! One queue, shared by the CUDA devices: a queued job starts when none of its devices is used by
//! a running or stopping job or by a job ahead of it in the queue (see [`db::claim_startable`];
//! the claim is one SQLite transaction, so two UIs on one data folder never start a job twice). A started trainer is watched in two ways: the child's exit (when this UI
//! started it) and, for trainers adopted from an earlier UI run, its pid checked on every tick.
//! When a trainer is gone, status.json (if written by this run) says how it ended; otherwise the
//! job failed and its last log lines say why.

use crate::db::{self, Db, DbError, JobRecord, JobState};
use crate::job_folder::{self, Control, JobPhase};
use crate::paths::DataDirs;
use crate::process::{self, Launch, TrainerCommand};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::Notify;

/// How many log lines a failed job's message carries.
pub const FAILURE_LOG_LINES: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("job {0} does not exist")]
    NoSuchJob(i64),
    #[error("job {name:?} is {state}; {what}")]
    WrongState {
        name: String,
        state: &'static str,
        what: &'static str,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub struct Supervisor {
    db: Db,
    dirs: DataDirs,
    trainer: TrainerCommand,
    /// After a stop request, how long the trainer gets to save before its group is killed.
    stop_timeout: Duration,
    /// Jobs whose trainer is this process's child (their exit arrives through `wait`).
    children: Mutex<HashSet<i64>>,
    wake: Notify,
    /// Lets the task that waits for a child reach the supervisor without keeping it alive.
    this: Weak<Supervisor>,
}

impl Supervisor {
    pub fn new(
        db: Db,
        dirs: DataDirs,
        trainer: TrainerCommand,
        stop_timeout: Duration,
    ) -> Arc<Self> {
        Arc::new_cyclic(|this| Supervisor {
            db,
            dirs,
            trainer,
            stop_timeout,
            children: Mutex::new(HashSet::new()),
            wake: Notify::new(),
            this: this.clone(),
        })
    }

    pub fn job_dir(&self, job: &JobRecord) -> PathBuf {
        self.dirs.output.join(&job.name)
    }

    fn yaml_path(&self, job: &JobRecord) -> PathBuf {
        self.job_dir(job).join(job_folder::JOB_YAML)
    }

    fn is_child(&self, id: i64) -> bool {
        self.children
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&id)
    }

    /// Runs the queue until the process ends: a tick every `period`, or sooner when woken.
    pub async fn run(self: Arc<Self>, period: Duration) {
        loop {
            if let Err(e) = self.tick().await {
                tracing::warn!("job queue: {e}");
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(period) => {}
            }
        }
    }

    /// Makes the queue loop look again now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// On start-up: trainers still running are adopted; jobs whose trainer vanished are closed.
    pub async fn recover(&self) -> Result<(), SupervisorError> {
        let jobs = self.db.call(db::list_jobs).await?;
        for job in jobs.into_iter().filter(|j| j.state.is_active()) {
            let alive = job
                .pid
                .is_some_and(|pid| process::runs_job(pid, &self.yaml_path(&job)));
            if db::is_being_started(&job) {
                tracing::info!("job {:?}: another UI is starting its trainer", job.name);
            } else if alive {
                tracing::info!(
                    "job {:?}: trainer pid {:?} still runs, adopted",
                    job.name,
                    job.pid
                );
            } else {
                self.finish(job.id, None).await?;
            }
        }
        Ok(())
    }

    /// One pass: progress of running jobs, stop time-outs, vanished trainers, queued starts.
    pub async fn tick(&self) -> Result<(), SupervisorError> {
        let jobs = self.db.call(db::list_jobs).await?;
        for job in jobs.iter().filter(|j| j.state.is_active()) {
            let dir = self.job_dir(job);
            if let Some(status) = self.fresh_status(job) {
                let (id, step, total) = (job.id, status.step as i64, status.total_steps as i64);
                self.db
                    .call(move |c| db::set_progress(c, id, step, total))
                    .await?;
            }
            let alive = job
                .pid
                .is_some_and(|pid| process::runs_job(pid, &dir.join(job_folder::JOB_YAML)));
            if !alive && !self.is_child(job.id) && !db::is_being_started(job) {
                self.finish(job.id, None).await?;
                continue;
            }
            if let (JobState::Stopping, Some(at), Some(pid)) =
                (job.state, job.stop_requested_at, job.pid)
            {
                if alive && db::now_unix() - at >= self.stop_timeout.as_secs() as i64 {
                    tracing::warn!(
                        "job {:?}: trainer did not stop within {:?}, killing it",
                        job.name,
                        self.stop_timeout
                    );
                    if let Err(e) = process::kill_group(pid) {
                        tracing::warn!("job {:?}: kill {pid}: {e}", job.name);
                    }
                }
            }
        }
        for job in self.db.call(db::claim_startable).await? {
            self.start(job).await?;
        }
        Ok(())
    }

    /// status.json when it was written by the current run (not left over from an earlier one).
    fn fresh_status(&self, job: &JobRecord) -> Option<job_folder::Status> {
        let path = self.job_dir(job).join(job_folder::STATUS);
        let modified = std::fs::metadata(&path).ok()?.modified().ok()?;
        let modified = modified
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_secs() as i64;
        if modified < job.started_at.unwrap_or(0) {
            return None;
        }
        job_folder::read_status(&self.job_dir(job))
    }

    async fn start(&self, job: JobRecord) -> Result<(), SupervisorError> {
        let dir = self.job_dir(&job);
        let yaml = self.yaml_path(&job);
        let io = |path: &PathBuf| {
            let path = path.clone();
            move |source| SupervisorError::Io { path, source }
        };
        let prepared = std::fs::create_dir_all(&dir)
            .map_err(io(&dir))
            .and_then(|()| std::fs::write(&yaml, &job.config_yaml).map_err(io(&yaml)))
            .and_then(|()| job_folder::clear_controls(&dir).map_err(io(&dir)));
        if let Err(e) = prepared {
            // The job is claimed: left as it is, it would look like a trainer being started.
            let (id, message) = (job.id, format!("could not prepare the job folder: {e}"));
            self.db
                .call(move |c| db::set_state(c, id, JobState::Failed, &message))
                .await?;
            return Err(e);
        }
        let hf_token = self
            .db
            .call(|c| db::get_setting(c, crate::settings::HF_TOKEN))
            .await?;
        let launch = Launch {
            job_id: job.id,
            job_dir: &dir,
            yaml_path: &yaml,
            gpu: &job.gpu,
            env: hf_token
                .filter(|t| !t.is_empty())
                .map(|t| vec![("HF_TOKEN".to_string(), t)])
                .unwrap_or_default(),
        };
        let id = job.id;
        let mut child = match process::spawn(&self.trainer, &launch) {
            Ok(child) => child,
            Err(e) => {
                let message = format!("could not start {}: {e}", self.trainer.program.display());
                self.db
                    .call(move |c| db::set_state(c, id, JobState::Failed, &message))
                    .await?;
                return Ok(());
            }
        };
        let pid = child.id().map(i64::from).unwrap_or(0);
        self.db.call(move |c| db::record_pid(c, id, pid)).await?;
        let pid_file = dir.join(job_folder::PID);
        if let Err(e) = std::fs::write(&pid_file, format!("{pid}\n")) {
            tracing::warn!("{}: {e}", pid_file.display());
        }
        self.children
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id);
        tracing::info!("job {:?} started, pid {pid}", job.name);
        let this = self.self_ref();
        tokio::spawn(async move {
            let status = child.wait().await.ok();
            if let Some(sup) = this {
                sup.children
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id);
                let code = status.map(|s| {
                    s.code()
                        .map(|c| format!("exit code {c}"))
                        .unwrap_or_else(|| format!("{s}"))
                });
                if let Err(e) = sup.finish(id, code).await {
                    tracing::warn!("job {id}: {e}");
                }
                sup.wake();
            }
        });
        Ok(())
    }

    /// Records how a job's trainer ended. `exit` describes the exit status when known.
    pub async fn finish(&self, id: i64, exit: Option<String>) -> Result<(), SupervisorError> {
        let Some(job) = self.db.call(move |c| db::get_job(c, id)).await? else {
            return Ok(());
        };
        if !job.state.is_active() {
            return Ok(());
        }
        let dir = self.job_dir(&job);
        let status = self.fresh_status(&job);
        let how = exit.unwrap_or_else(|| "the trainer process is gone".to_string());
        let last_lines = || {
            job_folder::tail_lines(&dir.join(job_folder::LOG), FAILURE_LOG_LINES)
                .unwrap_or_default()
                .join("\n")
        };
        let (state, message) = match status.as_ref().map(|s| s.state) {
            Some(JobPhase::Completed) => (JobState::Completed, String::new()),
            Some(JobPhase::Stopped) => (JobState::Stopped, String::new()),
            Some(JobPhase::Failed) => {
                let error = status
                    .as_ref()
                    .and_then(|s| s.error.clone())
                    .unwrap_or_else(|| "the trainer reported a failure".to_string());
                (
                    JobState::Failed,
                    format!("{error}\n--- last log lines ---\n{}", last_lines()),
                )
            }
            _ if job.state == JobState::Stopping => (
                JobState::Stopped,
                format!("stopped ({how}) before the trainer reported it"),
            ),
            _ => (
                JobState::Failed,
                format!(
                    "{how} without reporting an end\n--- last log lines ---\n{}",
                    last_lines()
                ),
            ),
        };
        if let Some(pid) = job.pid {
            let pid_file = dir.join(job_folder::PID);
            let stale = std::fs::read_to_string(&pid_file)
                .map(|t| t.trim() == pid.to_string())
                .unwrap_or(false);
            if stale {
                let _ = std::fs::remove_file(&pid_file);
            }
        }
        if let Some(s) = &status {
            let (step, total) = (s.step as i64, s.total_steps as i64);
            self.db
                .call(move |c| db::set_progress(c, id, step, total))
                .await?;
        }
        tracing::info!("job {:?} ended: {}", job.name, state.as_str());
        self.db
            .call(move |c| db::set_state(c, id, state, &message))
            .await?;
        Ok(())
    }

    async fn job(&self, id: i64) -> Result<JobRecord, SupervisorError> {
        self.db
            .call(move |c| db::get_job(c, id))
            .await?
            .ok_or(SupervisorError::NoSuchJob(id))
    }

    /// Start or resume: the job joins its GPU's queue (resume = the same folder, trainer continues).
    pub async fn queue(&self, id: i64) -> Result<JobRecord, SupervisorError> {
        let job = self.job(id).await?;
        if job.state.is_active() || job.state == JobState::Queued {
            return Err(SupervisorError::WrongState {
                name: job.name,
                state: job.state.as_str(),
                what: "it is already queued or running",
            });
        }
        self.db.call(move |c| db::enqueue(c, id)).await?;
        self.wake();
        self.job(id).await
    }

    /// Stop: a queued job leaves the queue; a running one gets control/stop and SIGINT.
    pub async fn stop(&self, id: i64) -> Result<JobRecord, SupervisorError> {
        let job = self.job(id).await?;
        match job.state {
            JobState::Queued => {
                self.db
                    .call(move |c| {
                        db::set_state(c, id, JobState::Stopped, "removed from the queue")
                    })
                    .await?;
            }
            JobState::Running => {
                let dir = self.job_dir(&job);
                job_folder::request(&dir, Control::Stop).map_err(|source| SupervisorError::Io {
                    path: dir.clone(),
                    source,
                })?;
                if let Some(pid) = job.pid {
                    if process::runs_job(pid, &self.yaml_path(&job)) {
                        if let Err(e) = process::interrupt(pid) {
                            tracing::warn!("job {:?}: SIGINT to {pid}: {e}", job.name);
                        }
                    }
                }
                self.db.call(move |c| db::mark_stopping(c, id)).await?;
            }
            other => {
                return Err(SupervisorError::WrongState {
                    name: job.name,
                    state: other.as_str(),
                    what: "only queued or running jobs can be stopped",
                })
            }
        }
        self.wake();
        self.job(id).await
    }

    /// "Save now" / "sample now": a control file the running trainer picks up.
    pub async fn request(&self, id: i64, control: Control) -> Result<(), SupervisorError> {
        let job = self.job(id).await?;
        if job.state != JobState::Running {
            return Err(SupervisorError::WrongState {
                name: job.name,
                state: job.state.as_str(),
                what: "save now and sample now need a running job",
            });
        }
        let dir = self.job_dir(&job);
        job_folder::request(&dir, control)
            .map_err(|source| SupervisorError::Io { path: dir, source })
    }

    fn self_ref(&self) -> Option<Arc<Supervisor>> {
        self.this.upgrade()
    }
}
