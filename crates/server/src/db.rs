//! The UI's SQLite database: jobs (with their queue order and trainer pid) and settings.
//!
//! Every function takes a `&Connection` and is synchronous; [`Db::call`] runs them on tokio's
//! blocking pool so request handlers never block the async executor on disk I/O.

use crate::devices::Reservations;
use rusqlite::{params, Connection, OptionalExtension, Row, Transaction, TransactionBehavior};
use serde::Serialize;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database {path}: {source}")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    #[error("database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("a job named {0:?} already exists; pick another name")]
    DuplicateName(String),
    #[error("the database worker stopped: {0}")]
    Worker(String),
}

/// Where a job stands, as the UI tracks it (the trainer's finer state is in status.json).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Created, never started.
    Ready,
    /// Waiting for its GPU.
    Queued,
    /// The trainer process runs.
    Running,
    /// Stop requested; the trainer is saving and exiting.
    Stopping,
    /// Stopped by request (resumable).
    Stopped,
    /// Finished all steps.
    Completed,
    /// The trainer reported an error or died.
    Failed,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Ready => "ready",
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Stopping => "stopping",
            JobState::Stopped => "stopped",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ready" => JobState::Ready,
            "queued" => JobState::Queued,
            "running" => JobState::Running,
            "stopping" => JobState::Stopping,
            "stopped" => JobState::Stopped,
            "completed" => JobState::Completed,
            "failed" => JobState::Failed,
            _ => return None,
        })
    }

    /// A trainer process exists (or is believed to) for jobs in these states.
    pub fn is_active(self) -> bool {
        matches!(self, JobState::Running | JobState::Stopping)
    }
}

/// One row of `jobs`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct JobRecord {
    pub id: i64,
    /// `config.name`: also the output folder's name.
    pub name: String,
    /// The GPU queue this job runs on (CUDA index list such as "0" or "0,1").
    pub gpu: String,
    pub config_yaml: String,
    pub state: JobState,
    pub queue_position: Option<i64>,
    pub pid: Option<i64>,
    pub step: i64,
    pub total_steps: i64,
    /// The last thing worth telling the user (the error of a failed job, with log lines).
    pub message: String,
    /// Unix seconds when stop was requested (for the force-kill timeout).
    pub stop_requested_at: Option<i64>,
    /// Unix seconds when the trainer was last started (status.json older than this is stale).
    pub started_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    name              TEXT    NOT NULL UNIQUE,
    gpu               TEXT    NOT NULL,
    config_yaml       TEXT    NOT NULL,
    state             TEXT    NOT NULL,
    queue_position    INTEGER,
    pid               INTEGER,
    step              INTEGER NOT NULL DEFAULT 0,
    total_steps       INTEGER NOT NULL DEFAULT 0,
    message           TEXT    NOT NULL DEFAULT '',
    stop_requested_at INTEGER,
    started_at        INTEGER,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
PRAGMA user_version = 1;
";

/// Opens (creating when missing) the database and its tables.
pub fn open(path: &Path) -> Result<Connection, DbError> {
    let open_err = |source| DbError::Open {
        path: path.display().to_string(),
        source,
    };
    let conn = Connection::open(path).map_err(open_err)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(open_err)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(open_err)?;
    conn.execute_batch(SCHEMA).map_err(open_err)?;
    Ok(conn)
}

const COLUMNS: &str = "id, name, gpu, config_yaml, state, queue_position, pid, step, total_steps, \
                       message, stop_requested_at, started_at, created_at, updated_at";

fn job_from_row(row: &Row) -> rusqlite::Result<JobRecord> {
    let state: String = row.get(4)?;
    Ok(JobRecord {
        id: row.get(0)?,
        name: row.get(1)?,
        gpu: row.get(2)?,
        config_yaml: row.get(3)?,
        // An unknown state can only come from a newer UI version; showing it as failed is safe.
        state: JobState::parse(&state).unwrap_or(JobState::Failed),
        queue_position: row.get(5)?,
        pid: row.get(6)?,
        step: row.get(7)?,
        total_steps: row.get(8)?,
        message: row.get(9)?,
        stop_requested_at: row.get(10)?,
        started_at: row.get(11)?,
        created_at: row.get(12)?,
        updated_at: row.get(13)?,
    })
}

fn map_unique(name: &str, e: rusqlite::Error) -> DbError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            DbError::DuplicateName(name.to_string())
        }
        _ => DbError::Sql(e),
    }
}

pub fn insert_job(
    conn: &Connection,
    name: &str,
    gpu: &str,
    config_yaml: &str,
    total_steps: i64,
) -> Result<JobRecord, DbError> {
    let now = now_unix();
    conn.execute(
        "INSERT INTO jobs (name, gpu, config_yaml, state, total_steps, created_at, updated_at)
         VALUES (?1, ?2, ?3, 'ready', ?4, ?5, ?5)",
        params![name, gpu, config_yaml, total_steps, now],
    )
    .map_err(|e| map_unique(name, e))?;
    let id = conn.last_insert_rowid();
    get_job(conn, id)?.ok_or(DbError::Sql(rusqlite::Error::QueryReturnedNoRows))
}

pub fn get_job(conn: &Connection, id: i64) -> Result<Option<JobRecord>, DbError> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM jobs WHERE id = ?1"),
            [id],
            job_from_row,
        )
        .optional()?)
}

pub fn list_jobs(conn: &Connection) -> Result<Vec<JobRecord>, DbError> {
    let mut stmt = conn.prepare(&format!("SELECT {COLUMNS} FROM jobs ORDER BY id"))?;
    let rows = stmt.query_map([], job_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Replaces a job's name, GPU and YAML (only for jobs that are not active; checked by the caller).
pub fn update_job_config(
    conn: &Connection,
    id: i64,
    name: &str,
    gpu: &str,
    config_yaml: &str,
    total_steps: i64,
) -> Result<(), DbError> {
    conn.execute(
        "UPDATE jobs SET name = ?2, gpu = ?3, config_yaml = ?4, total_steps = ?5, updated_at = ?6
         WHERE id = ?1",
        params![id, name, gpu, config_yaml, total_steps, now_unix()],
    )
    .map_err(|e| map_unique(name, e))?;
    Ok(())
}

pub fn delete_job(conn: &Connection, id: i64) -> Result<(), DbError> {
    conn.execute("DELETE FROM jobs WHERE id = ?1", [id])?;
    Ok(())
}

/// Puts a job at the end of its GPU's queue.
pub fn enqueue(conn: &Connection, id: i64) -> Result<(), DbError> {
    let last: Option<i64> = conn.query_row(
        "SELECT MAX(queue_position) FROM jobs WHERE state = 'queued'",
        [],
        |r| r.get(0),
    )?;
    conn.execute(
        "UPDATE jobs SET state = 'queued', queue_position = ?2, message = '', stop_requested_at = NULL,
         updated_at = ?3 WHERE id = ?1",
        params![id, last.unwrap_or(0) + 1, now_unix()],
    )?;
    Ok(())
}

/// How long a claimed job may stay without a trainer pid before a UI counts its trainer as gone
/// (the UI that claimed it died between the claim and the start).
pub const CLAIM_GRACE_SECS: i64 = 60;

/// True for a job claimed by a UI whose trainer has not been started yet.
pub fn is_being_started(job: &JobRecord) -> bool {
    job.state == JobState::Running
        && job.pid.is_none()
        && job
            .started_at
            .is_some_and(|at| now_unix() - at < CLAIM_GRACE_SECS)
}

/// Claims the queued jobs that may start now and marks them running (their pid still unknown).
///
/// A job may start when none of its devices is held by an active job or by a job ahead of it in
/// the queue (so "0,1" waits for "0", and a later "1" does not overtake the waiting "0,1"). It is
/// one write transaction (BEGIN IMMEDIATE): two UIs on one data folder never claim the same job.
pub fn claim_startable(conn: &Connection) -> Result<Vec<JobRecord>, DbError> {
    let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
    let jobs = list_jobs(&tx)?;
    let mut held = Reservations::default();
    for job in jobs.iter().filter(|j| j.state.is_active()) {
        held.hold(&job.gpu);
    }
    let mut queued: Vec<&JobRecord> = jobs
        .iter()
        .filter(|j| j.state == JobState::Queued)
        .collect();
    queued.sort_by_key(|j| (j.queue_position.unwrap_or(i64::MAX), j.id));
    let now = now_unix();
    let mut claimed = Vec::new();
    for job in queued {
        if held.is_free(&job.gpu) {
            tx.execute(
                "UPDATE jobs SET state = 'running', pid = NULL, queue_position = NULL, message = '',
                 stop_requested_at = NULL, started_at = ?2, updated_at = ?2
                 WHERE id = ?1 AND state = 'queued'",
                params![job.id, now],
            )?;
            claimed.extend(get_job(&tx, job.id)?);
        }
        held.hold(&job.gpu);
    }
    tx.commit()?;
    Ok(claimed)
}

pub fn set_state(
    conn: &Connection,
    id: i64,
    state: JobState,
    message: &str,
) -> Result<(), DbError> {
    let keeps_position = state == JobState::Queued;
    conn.execute(
        "UPDATE jobs SET state = ?2, message = ?3, updated_at = ?4,
         queue_position = CASE WHEN ?5 THEN queue_position ELSE NULL END,
         pid = CASE WHEN ?6 THEN pid ELSE NULL END,
         stop_requested_at = CASE WHEN ?7 THEN stop_requested_at ELSE NULL END
         WHERE id = ?1",
        params![
            id,
            state.as_str(),
            message,
            now_unix(),
            keeps_position,
            state.is_active(),
            state == JobState::Stopping
        ],
    )?;
    Ok(())
}

/// Records the trainer of a claimed job (its state stays: a stop may have come in meanwhile).
pub fn record_pid(conn: &Connection, id: i64, pid: i64) -> Result<(), DbError> {
    conn.execute(
        "UPDATE jobs SET pid = ?2, updated_at = ?3 WHERE id = ?1",
        params![id, pid, now_unix()],
    )?;
    Ok(())
}

pub fn mark_stopping(conn: &Connection, id: i64) -> Result<(), DbError> {
    let now = now_unix();
    conn.execute(
        "UPDATE jobs SET state = 'stopping', stop_requested_at = ?2, updated_at = ?2 WHERE id = ?1",
        params![id, now],
    )?;
    Ok(())
}

pub fn set_progress(
    conn: &Connection,
    id: i64,
    step: i64,
    total_steps: i64,
) -> Result<(), DbError> {
    conn.execute(
        "UPDATE jobs SET step = ?2, total_steps = ?3 WHERE id = ?1 AND (step != ?2 OR total_steps != ?3)",
        params![id, step, total_steps],
    )?;
    Ok(())
}

pub fn get_setting(conn: &Connection, key: &str) -> Result<Option<String>, DbError> {
    Ok(conn
        .query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
            r.get(0)
        })
        .optional()?)
}

pub fn set_setting(conn: &Connection, key: &str, value: &str) -> Result<(), DbError> {
    conn.execute(
        "INSERT INTO settings (key, value) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        params![key, value],
    )?;
    Ok(())
}

/// The shared connection. SQLite serialises writers anyway; one connection behind a mutex keeps
/// the code simple and is far from a bottleneck for a local UI.
#[derive(Clone)]
pub struct Db {
    conn: Arc<Mutex<Connection>>,
}

impl Db {
    pub fn new(conn: Connection) -> Self {
        Db {
            conn: Arc::new(Mutex::new(conn)),
        }
    }

    /// Runs `f` with the connection on the blocking thread pool.
    pub async fn call<R, F>(&self, f: F) -> Result<R, DbError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, DbError> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock leaves the connection itself usable.
            let guard = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&guard)
        })
        .await
        .map_err(|e| DbError::Worker(e.to_string()))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        conn
    }

    #[test]
    fn names_are_unique() {
        let conn = memory();
        insert_job(&conn, "a", "0", "x", 10).unwrap();
        assert!(matches!(
            insert_job(&conn, "a", "1", "y", 10),
            Err(DbError::DuplicateName(n)) if n == "a"
        ));
    }

    fn names(jobs: &[JobRecord]) -> Vec<&str> {
        jobs.iter().map(|j| j.name.as_str()).collect()
    }

    #[test]
    fn queue_is_per_device_and_in_order() {
        let conn = memory();
        let a = insert_job(&conn, "a", "0", "", 1).unwrap();
        let b = insert_job(&conn, "b", "0", "", 1).unwrap();
        let c = insert_job(&conn, "c", "1", "", 1).unwrap();
        enqueue(&conn, b.id).unwrap();
        enqueue(&conn, a.id).unwrap();
        enqueue(&conn, c.id).unwrap();
        // b is first on GPU 0; GPU 1 is independent.
        assert_eq!(names(&claim_startable(&conn).unwrap()), ["b", "c"]);
        let claimed = get_job(&conn, b.id).unwrap().unwrap();
        assert_eq!(
            (claimed.state, claimed.pid, claimed.queue_position),
            (JobState::Running, None, None)
        );
        assert!(is_being_started(&claimed));
        record_pid(&conn, b.id, 99).unwrap();
        assert!(!is_being_started(&get_job(&conn, b.id).unwrap().unwrap()));
        // GPU 0 is busy until b ends.
        assert!(claim_startable(&conn).unwrap().is_empty());
        set_state(&conn, b.id, JobState::Completed, "").unwrap();
        assert_eq!(names(&claim_startable(&conn).unwrap()), ["a"]);
        let b = get_job(&conn, b.id).unwrap().unwrap();
        assert_eq!(
            (b.state, b.pid, b.queue_position),
            (JobState::Completed, None, None)
        );
    }

    #[test]
    fn jobs_sharing_a_device_never_run_at_once() {
        let conn = memory();
        let pair = insert_job(&conn, "pair", "0,1", "", 1).unwrap();
        let zero = insert_job(&conn, "zero", "0", "", 1).unwrap();
        let one = insert_job(&conn, "one", "1", "", 1).unwrap();
        let two = insert_job(&conn, "two", "2", "", 1).unwrap();
        for job in [&pair, &zero, &one, &two] {
            enqueue(&conn, job.id).unwrap();
        }
        // "0" and "1" share devices with the running "0,1"; "2" does not.
        assert_eq!(names(&claim_startable(&conn).unwrap()), ["pair", "two"]);
        set_state(&conn, pair.id, JobState::Completed, "").unwrap();
        assert_eq!(names(&claim_startable(&conn).unwrap()), ["zero", "one"]);
    }

    #[test]
    fn a_waiting_job_is_not_overtaken_on_its_devices() {
        let conn = memory();
        let zero = insert_job(&conn, "zero", "0", "", 1).unwrap();
        let pair = insert_job(&conn, "pair", "0,1", "", 1).unwrap();
        let one = insert_job(&conn, "one", "1", "", 1).unwrap();
        enqueue(&conn, zero.id).unwrap();
        assert_eq!(names(&claim_startable(&conn).unwrap()), ["zero"]);
        enqueue(&conn, pair.id).unwrap();
        enqueue(&conn, one.id).unwrap();
        // "pair" waits for device 0; "one" would take device 1 from it.
        assert!(claim_startable(&conn).unwrap().is_empty());
        set_state(&conn, zero.id, JobState::Stopped, "").unwrap();
        assert_eq!(names(&claim_startable(&conn).unwrap()), ["pair"]);
    }

    #[test]
    fn two_connections_to_one_database_claim_a_job_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wanlora.db");
        let first = open(&path).unwrap();
        let job = insert_job(&first, "only_once", "0", "", 1).unwrap();
        enqueue(&first, job.id).unwrap();
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
        let claims: Vec<usize> = (0..8)
            .map(|_| {
                let (path, barrier) = (path.clone(), barrier.clone());
                std::thread::spawn(move || {
                    let conn = open(&path).unwrap();
                    barrier.wait();
                    claim_startable(&conn).unwrap().len()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        assert_eq!(claims.iter().sum::<usize>(), 1, "{claims:?}");
    }

    #[test]
    fn stopping_keeps_pid_and_records_time() {
        let conn = memory();
        let a = insert_job(&conn, "a", "0", "", 1).unwrap();
        enqueue(&conn, a.id).unwrap();
        claim_startable(&conn).unwrap();
        record_pid(&conn, a.id, 1234).unwrap();
        mark_stopping(&conn, a.id).unwrap();
        let a = get_job(&conn, a.id).unwrap().unwrap();
        assert_eq!(a.state, JobState::Stopping);
        assert_eq!(a.pid, Some(1234));
        assert!(a.stop_requested_at.is_some());
    }

    #[test]
    fn settings_upsert() {
        let conn = memory();
        assert_eq!(get_setting(&conn, "k").unwrap(), None);
        set_setting(&conn, "k", "1").unwrap();
        set_setting(&conn, "k", "2").unwrap();
        assert_eq!(get_setting(&conn, "k").unwrap().as_deref(), Some("2"));
    }
}
