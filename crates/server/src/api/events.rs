//! Live job page: server-sent events built by watching the job folder.
//!
//! Event names: `metrics` (new metric lines), `log` (new log lines), `samples` and `checkpoints`
//! (the full lists, when they change), then `job` (record + status.json, when either changes).
//! The first batch carries everything so far; later batches only what changed.

use super::AppState;
use crate::db;
use crate::error::{ApiError, ApiResult};
use crate::job_folder::{self, Follower};
use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream, StreamExt};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::path::PathBuf;
use std::time::Duration;

/// Lines of log sent when a page connects.
const INITIAL_LOG_BYTES: u64 = 64 * 1024;

struct Watch {
    state: AppState,
    id: i64,
    name: String,
    dir: PathBuf,
    metrics: Follower,
    log: Follower,
    last_job: Option<Value>,
    last_samples: Option<Value>,
    last_checkpoints: Option<Value>,
    first: bool,
}

impl Watch {
    /// What changed since the last look; None when the job was deleted (ends the stream).
    async fn changes(&mut self) -> Option<Vec<Event>> {
        let id = self.id;
        let job = self
            .state
            .db
            .call(move |c| db::get_job(c, id))
            .await
            .ok()??;
        let mut events = Vec::new();
        let metric_lines = self
            .metrics
            .read_lines(&self.dir.join(job_folder::METRICS))
            .unwrap_or_default();
        let metrics = job_folder::parse_metrics(&metric_lines);
        if !metrics.is_empty() || self.first {
            events.push(event("metrics", &json!(metrics)));
        }
        let log = self
            .log
            .read_lines(&self.dir.join(job_folder::LOG))
            .unwrap_or_default();
        if !log.is_empty() || self.first {
            events.push(event("log", &json!({ "lines": log, "reset": self.first })));
        }
        let samples = json!(job_folder::list_samples(&self.dir));
        if self.last_samples.as_ref() != Some(&samples) {
            events.push(event("samples", &samples));
            self.last_samples = Some(samples);
        }
        let checkpoints = json!(job_folder::list_checkpoints(&self.dir, &self.name));
        if self.last_checkpoints.as_ref() != Some(&checkpoints) {
            events.push(event("checkpoints", &checkpoints));
            self.last_checkpoints = Some(checkpoints);
        }
        // The job's state goes last, so a page that sees "completed" already has the final data.
        let status = job_folder::read_status(&self.dir);
        let job_value = json!({ "job": job, "status": status });
        if self.last_job.as_ref() != Some(&job_value) {
            events.push(event("job", &job_value));
            self.last_job = Some(job_value);
        }
        self.first = false;
        Some(events)
    }
}

fn event(name: &str, data: &Value) -> Event {
    Event::default().event(name).data(data.to_string())
}

pub async fn job_events(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let job = state
        .db
        .call(move |c| db::get_job(c, id))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("job {id} does not exist")))?;
    let dir = state.dirs.output.join(&job.name);
    let interval = state.poll_interval;
    let watch = Watch {
        log: Follower::at_tail(&dir.join(job_folder::LOG), INITIAL_LOG_BYTES),
        metrics: Follower::unbounded(),
        state,
        id,
        name: job.name,
        dir,
        last_job: None,
        last_samples: None,
        last_checkpoints: None,
        first: true,
    };
    let batches = stream::unfold(watch, move |mut watch| async move {
        if !watch.first {
            let mut shutdown = watch.state.shutdown.clone();
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.wait_for(|down| *down) => return None,
            }
        }
        if *watch.state.shutdown.borrow() {
            return None;
        }
        let events = watch.changes().await?;
        Some((events, watch))
    });
    let events = batches.flat_map(|batch| stream::iter(batch.into_iter().map(Ok)));
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
