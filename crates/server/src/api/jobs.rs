//! Jobs: create from YAML, edit, queue (start/resume), stop, clone, delete, control requests,
//! and reading what the trainer wrote.

use super::AppState;
use crate::db::{self, JobRecord, JobState};
use crate::error::{ApiError, ApiResult};
use crate::job_folder::{self, Control};
use crate::{devices, jobspec, paths};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// A job's record plus what its folder says right now.
fn job_view(state: &AppState, job: &JobRecord) -> Value {
    let dir = state.dirs.output.join(&job.name);
    let status = job_folder::read_status(&dir);
    json!({
        "job": job,
        "status": status,
        "output_dir": dir.display().to_string(),
    })
}

async fn load(state: &AppState, id: i64) -> ApiResult<JobRecord> {
    state
        .db
        .call(move |c| db::get_job(c, id))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("job {id} does not exist")))
}

pub async fn list(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let jobs = state.db.call(db::list_jobs).await?;
    let views: Vec<Value> = jobs.iter().map(|j| job_view(&state, j)).collect();
    Ok(Json(json!({ "jobs": views })))
}

/// Jobs grouped by GPU: the active one first, then the queue in order.
pub async fn queue(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let jobs = state.db.call(db::list_jobs).await?;
    let mut by_gpu: BTreeMap<String, Vec<&JobRecord>> = BTreeMap::new();
    for job in &jobs {
        if job.state.is_active() || job.state == JobState::Queued {
            by_gpu.entry(job.gpu.clone()).or_default().push(job);
        }
    }
    for list in by_gpu.values_mut() {
        list.sort_by_key(|j| {
            (
                !j.state.is_active(),
                j.queue_position.unwrap_or(i64::MAX),
                j.id,
            )
        });
    }
    Ok(Json(json!({ "gpus": by_gpu })))
}

pub async fn get_one(State(state): State<AppState>, Path(id): Path<i64>) -> ApiResult<Json<Value>> {
    let job = load(&state, id).await?;
    let dir = state.dirs.output.join(&job.name);
    let mut view = job_view(&state, &job);
    view["checkpoints"] = json!(job_folder::list_checkpoints(&dir, &job.name));
    view["samples"] = json!(job_folder::list_samples(&dir));
    Ok(Json(view))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobBody {
    /// The job as AI Toolkit YAML (or JSON).
    pub yaml: String,
    /// The GPU queue ("0", "1", "0,1").
    pub gpu: String,
    /// Queue it right away.
    #[serde(default)]
    pub start: bool,
}

/// The job's GPU field in its stored spelling ("00" is "0"), or the finding that refuses it.
fn prepare_gpu(body: &JobBody) -> ApiResult<String> {
    devices::normalize_gpu(&body.gpu).map_err(|message| ApiError {
        findings: vec![jobspec::Finding::error("gpu", devices::GPU_FIELD_HINT)],
        ..ApiError::bad_request(message)
    })
}

/// The GPU field against the job: the trainer is given `--gpus 0..n-1` (process::gpus_arg), so
/// the field's device count meets the trainer's rule (a job training both experts splits its GPUs
/// into two equal halves).
fn check_gpu_count(gpu: &str, yaml: &str, dirs: &crate::paths::DataDirs) -> ApiResult<()> {
    if devices::normalize_gpu(gpu).is_err() {
        return Ok(());
    }
    let source = wanlora_config::SourceInfo {
        name: "job".into(),
        format: wanlora_config::Format::Yaml,
        base_dir: dirs.root.clone(),
    };
    let Some(job) = wanlora_config::parse_job_with_env(yaml, &source, &|_| None).job else {
        return Ok(());
    };
    let count = gpu.split(',').filter(|g| !g.trim().is_empty()).count() as u32;
    let renumbered: Vec<u32> = (0..count).collect();
    let Some((message, hint)) =
        wanlora_config::gpu_list_problem(&renumbered, wanlora_config::trained_experts(&job))
    else {
        return Ok(());
    };
    // The trainer's message names the renumbered list; the field's own spelling reads better.
    let reason = message
        .split_once(": ")
        .map_or(message.as_str(), |(_, r)| r);
    let message = format!("gpu {gpu:?}: {reason}");
    Err(ApiError {
        findings: vec![jobspec::Finding {
            hint,
            ..jobspec::Finding::error("gpu", message.clone())
        }],
        ..ApiError::bad_request(message)
    })
}

/// Parses, checks and confines a submitted job: (name, YAML to store, steps).
fn prepare(state: &AppState, body: &JobBody) -> ApiResult<(String, String, i64)> {
    let mut tree = jobspec::parse_yaml(&body.yaml).map_err(|f| ApiError::invalid_job(vec![f]))?;
    let findings = jobspec::validate(&tree, &body.yaml, &state.dirs);
    if jobspec::has_errors(&findings) {
        return Err(ApiError::invalid_job(findings));
    }
    jobspec::confine(&mut tree, &state.dirs);
    let name = jobspec::job_name(&tree).unwrap_or_default().to_string();
    let yaml = jobspec::to_yaml(&tree).map_err(|f| ApiError::invalid_job(vec![f]))?;
    Ok((name, yaml, jobspec::total_steps(&tree)))
}

pub async fn create(
    State(state): State<AppState>,
    Json(body): Json<JobBody>,
) -> ApiResult<Response> {
    let gpu = prepare_gpu(&body)?;
    let (name, yaml, steps) = prepare(&state, &body)?;
    check_gpu_count(&gpu, &yaml, &state.dirs)?;
    let dir = paths::confined_join(&state.dirs.output, "job name", &name)?;
    if dir.exists() {
        return Err(ApiError::conflict(format!(
            "{} already exists (left by an earlier job of that name); rename the job, or delete \
             the folder to start from scratch",
            dir.display()
        )));
    }
    let job = state
        .db
        .call(move |c| db::insert_job(c, &name, &gpu, &yaml, steps))
        .await?;
    let job = if body.start {
        state.supervisor.queue(job.id).await?
    } else {
        job
    };
    Ok((StatusCode::CREATED, Json(job_view(&state, &job))).into_response())
}

/// Edit a job that is not queued or running. Renaming is refused once the job has an output
/// folder (the folder, its checkpoints and its state belong to the old name).
pub async fn update(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    Json(body): Json<JobBody>,
) -> ApiResult<Json<Value>> {
    let job = load(&state, id).await?;
    if job.state.is_active() || job.state == JobState::Queued {
        return Err(ApiError::conflict(format!(
            "job {:?} is {}; stop it before editing",
            job.name,
            job.state.as_str()
        )));
    }
    let gpu = prepare_gpu(&body)?;
    let (name, yaml, steps) = prepare(&state, &body)?;
    check_gpu_count(&gpu, &yaml, &state.dirs)?;
    if name != job.name && state.dirs.output.join(&job.name).exists() {
        return Err(ApiError {
            findings: vec![jobspec::Finding::error(
                "config.name",
                "this job already has an output folder under its name; clone it to use another name",
            )],
            ..ApiError::conflict(format!("job {:?} cannot be renamed after it has run", job.name))
        });
    }
    state
        .db
        .call(move |c| db::update_job_config(c, id, &name, &gpu, &yaml, steps))
        .await?;
    let job = if body.start {
        state.supervisor.queue(id).await?
    } else {
        load(&state, id).await?
    };
    Ok(Json(job_view(&state, &job)))
}

#[derive(Deserialize)]
pub struct DeleteQuery {
    /// Keep the output folder (checkpoints, samples) and only forget the job.
    #[serde(default)]
    keep_files: bool,
}

pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    Query(q): Query<DeleteQuery>,
) -> ApiResult<Json<Value>> {
    let job = load(&state, id).await?;
    if job.state.is_active() {
        return Err(ApiError::conflict(format!(
            "job {:?} is {}; stop it first",
            job.name,
            job.state.as_str()
        )));
    }
    if !q.keep_files {
        let dir = paths::confined_join(&state.dirs.output, "job name", &job.name)?;
        if dir.exists() {
            paths::ensure_inside(&state.dirs.output, &dir)?;
            std::fs::remove_dir_all(&dir)
                .map_err(|e| ApiError::internal(format!("{}: {e}", dir.display())))?;
        }
    }
    state.db.call(move |c| db::delete_job(c, id)).await?;
    Ok(Json(json!({ "deleted": id })))
}

pub async fn start(State(state): State<AppState>, Path(id): Path<i64>) -> ApiResult<Json<Value>> {
    let job = state.supervisor.queue(id).await?;
    Ok(Json(job_view(&state, &job)))
}

pub async fn stop(State(state): State<AppState>, Path(id): Path<i64>) -> ApiResult<Json<Value>> {
    let job = state.supervisor.stop(id).await?;
    Ok(Json(job_view(&state, &job)))
}

pub async fn save_now(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> ApiResult<Json<Value>> {
    state.supervisor.request(id, Control::SaveNow).await?;
    Ok(Json(json!({ "requested": "save_now" })))
}

pub async fn sample_now(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> ApiResult<Json<Value>> {
    state.supervisor.request(id, Control::SampleNow).await?;
    Ok(Json(json!({ "requested": "sample_now" })))
}

#[derive(Deserialize, Default)]
pub struct CloneBody {
    /// The copy's name; by default `<name>_copy`, `<name>_copy2`, …
    pub name: Option<String>,
}

/// A new job with the same settings under a new name (it starts from scratch).
pub async fn clone_job(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    body: Option<Json<CloneBody>>,
) -> ApiResult<Response> {
    let job = load(&state, id).await?;
    let existing: Vec<String> = state
        .db
        .call(db::list_jobs)
        .await?
        .into_iter()
        .map(|j| j.name)
        .collect();
    let taken = |n: &str| existing.iter().any(|e| e == n) || state.dirs.output.join(n).exists();
    let name = match body.and_then(|b| b.0.name) {
        Some(n) => n,
        None => (1..)
            .map(|i| {
                if i == 1 {
                    format!("{}_copy", job.name)
                } else {
                    format!("{}_copy{i}", job.name)
                }
            })
            .find(|n| !taken(n))
            .unwrap_or_default(),
    };
    paths::checked_name("job name", &name)?;
    if taken(&name) {
        return Err(ApiError::conflict(format!(
            "a job or output folder named {name:?} exists"
        )));
    }
    let mut tree =
        jobspec::parse_yaml(&job.config_yaml).map_err(|f| ApiError::invalid_job(vec![f]))?;
    if let Some(config) = tree.get_mut("config") {
        config.insert("name", jobspec::Tree::Str(name.clone()));
    }
    let yaml = jobspec::to_yaml(&tree).map_err(|f| ApiError::invalid_job(vec![f]))?;
    let (gpu, steps) = (job.gpu.clone(), job.total_steps);
    let copy = state
        .db
        .call(move |c| db::insert_job(c, &name, &gpu, &yaml, steps))
        .await?;
    Ok((StatusCode::CREATED, Json(job_view(&state, &copy))).into_response())
}

/// A job-folder file that could not be read: a symlink is refused as the file routes refuse it.
fn read_error(path: std::path::PathBuf, e: std::io::Error) -> ApiError {
    if job_folder::is_symlink_refusal(&e) {
        paths::PathError::Symlink(path).into()
    } else {
        ApiError::internal(format!("{}: {e}", path.display()))
    }
}

/// Every metrics line, the last one of each step (validation records: of each step and expert).
pub async fn metrics(State(state): State<AppState>, Path(id): Path<i64>) -> ApiResult<Json<Value>> {
    let job = load(&state, id).await?;
    let dir = state.dirs.output.join(&job.name);
    let lines = job_folder::read_all_metrics(&dir)
        .map_err(|e| read_error(dir.join(job_folder::METRICS), e))?;
    Ok(Json(json!({ "metrics": lines })))
}

#[derive(Deserialize)]
pub struct LogQuery {
    lines: Option<usize>,
}

pub async fn log(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    Query(q): Query<LogQuery>,
) -> ApiResult<Json<Value>> {
    let job = load(&state, id).await?;
    let path = state.dirs.output.join(&job.name).join(job_folder::LOG);
    let lines = job_folder::tail_lines(&path, q.lines.unwrap_or(200).min(5000))
        .map_err(|e| read_error(path, e))?;
    Ok(Json(json!({ "lines": lines })))
}

#[derive(Deserialize)]
pub struct FileQuery {
    #[serde(default)]
    download: bool,
}

/// A checkpoint, sample or text file of the job folder (see `job_folder::servable_file`).
pub async fn file(
    State(state): State<AppState>,
    Path((id, rel)): Path<(i64, String)>,
    Query(q): Query<FileQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let job = load(&state, id).await?;
    let dir = state.dirs.output.join(&job.name);
    let path = job_folder::servable_file(&dir, &rel)?;
    let name = path.file_name().map(|n| n.to_string_lossy().to_string());
    let download = if q.download { name.as_deref() } else { None };
    Ok(super::serve_file(&path, &headers, download).await)
}
