//! Datasets (create, list, upload, captions, thumbnails, delete, inspect) and the control images
//! that sample prompts start from.

use super::AppState;
use crate::datasets;
use crate::db;
use crate::error::{ApiError, ApiResult};
use crate::jobspec;
use crate::paths;
use crate::uploads::{self, FileKind, Incoming};
use axum::extract::{Multipart, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub async fn list(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let list = datasets::list(&state.dirs.datasets)?;
    Ok(Json(json!({ "datasets": list })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewDataset {
    name: String,
}

pub async fn create(
    State(state): State<AppState>,
    Json(body): Json<NewDataset>,
) -> ApiResult<Response> {
    let name = body.name.trim();
    if state.dirs.datasets.join(name).exists() && paths::checked_name("dataset", name).is_ok() {
        return Err(ApiError::conflict(format!(
            "a dataset named {name:?} exists"
        )));
    }
    let dir = datasets::create(&state.dirs.datasets, name)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "name": name, "folder": dir.display().to_string() })),
    )
        .into_response())
}

pub async fn get_one(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let dir = datasets::dataset_dir(&state.dirs.datasets, &name)?;
    let items = datasets::items(&dir)?;
    Ok(Json(json!({
        "name": name,
        "folder": dir.display().to_string(),
        "items": items,
    })))
}

/// Names of queued or running jobs that train on dataset folder `dir`.
async fn jobs_using(state: &AppState, dir: &std::path::Path) -> ApiResult<Vec<String>> {
    let jobs = state.db.call(db::list_jobs).await?;
    let real = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    Ok(jobs
        .into_iter()
        .filter(|j| j.state.is_active() || j.state == db::JobState::Queued)
        .filter(|j| {
            let Ok(tree) = jobspec::parse_yaml(&j.config_yaml) else {
                return false;
            };
            let folders = jobspec::process(&tree)
                .and_then(|p| p.get("datasets"))
                .map(jobspec::Tree::as_list)
                .unwrap_or(&[]);
            folders.iter().any(|d| {
                d.get("folder_path")
                    .and_then(jobspec::Tree::as_str)
                    .and_then(|f| std::path::Path::new(f).canonicalize().ok())
                    .is_some_and(|f| f == real)
            })
        })
        .map(|j| j.name)
        .collect())
}

pub async fn delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let dir = datasets::dataset_dir(&state.dirs.datasets, &name)?;
    let users = jobs_using(&state, &dir).await?;
    if !users.is_empty() {
        return Err(ApiError::conflict(format!(
            "dataset {name:?} is used by queued or running job(s) {}; stop them first",
            users.join(", ")
        )));
    }
    datasets::delete(&state.dirs.datasets, &name)?;
    let _ = std::fs::remove_dir_all(state.dirs.thumbnails.join(&name));
    Ok(Json(json!({ "deleted": name })))
}

pub async fn file(
    State(state): State<AppState>,
    Path((name, file)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let dir = datasets::dataset_dir(&state.dirs.datasets, &name)?;
    let path = datasets::media_path(&dir, &file)?;
    Ok(super::serve_file(&path, &headers, None).await)
}

pub async fn delete_file(
    State(state): State<AppState>,
    Path((name, file)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let dir = datasets::dataset_dir(&state.dirs.datasets, &name)?;
    if !jobs_using(&state, &dir).await?.is_empty() {
        return Err(ApiError::conflict(format!(
            "dataset {name:?} is in use by a queued or running job; stop it before removing files"
        )));
    }
    datasets::delete_file(&dir, &file)?;
    Ok(Json(json!({ "deleted": file })))
}

/// A small JPEG of a video's first frame; images are their own thumbnail.
pub async fn thumbnail(
    State(state): State<AppState>,
    Path((name, file)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let dir = datasets::dataset_dir(&state.dirs.datasets, &name)?;
    let path = datasets::media_path(&dir, &file)?;
    match uploads::kind_of(&file) {
        Some(FileKind::Image) => Ok(super::serve_file(&path, &headers, None).await),
        Some(FileKind::Video) => {
            let cache = state.dirs.thumbnails.join(&name);
            let thumb = tokio::task::spawn_blocking(move || {
                crate::thumbnails::video_thumbnail(&path, &cache)
            })
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?
            .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
            Ok(super::serve_file(&thumb, &headers, None).await)
        }
        _ => Err(ApiError::bad_request(format!(
            "{file}: only videos and images have thumbnails"
        ))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InspectQuery {
    /// Frames per clip, as a job would take them (default 41, the presets' value).
    num_frames: Option<usize>,
    /// Training resolution (default 512).
    resolution: Option<u32>,
    /// Caption for files without one.
    default_caption: Option<String>,
    trigger_word: Option<String>,
}

/// The `dataset inspect` report (wanlora-data) for a dataset as a job with the given frame count
/// and resolution would see it: items per bucket, resolved captions, problems.
pub async fn inspect(
    State(state): State<AppState>,
    Path(name): Path<String>,
    axum::extract::Query(q): axum::extract::Query<InspectQuery>,
) -> ApiResult<Json<Value>> {
    let dir = datasets::dataset_dir(&state.dirs.datasets, &name)?;
    let spec = wanlora_data::DatasetSpec {
        folder_path: dir,
        num_frames: q.num_frames.unwrap_or(41),
        resolutions: vec![q.resolution.unwrap_or(512)],
        default_caption: q.default_caption.filter(|c| !c.is_empty()),
        ..wanlora_data::DatasetSpec::default()
    };
    let job = wanlora_data::JobContext {
        name: name.clone(),
        trigger_word: q.trigger_word.filter(|t| !t.is_empty()),
        seed: 42,
        batch_size: 1,
        ..wanlora_data::JobContext::default()
    };
    let report = tokio::task::spawn_blocking(move || {
        wanlora_data::Catalog::load(&[spec], &job).map(|c| wanlora_data::inspect(&c, 50))
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
    .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
    Ok(Json(
        json!({ "text": report.to_string(), "report": report }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptionBody {
    caption: String,
}

pub async fn put_caption(
    State(state): State<AppState>,
    Path((name, file)): Path<(String, String)>,
    Json(body): Json<CaptionBody>,
) -> ApiResult<Json<Value>> {
    if body.caption.len() as u64 > uploads::MAX_CAPTION_BYTES || body.caption.contains('\0') {
        return Err(ApiError::bad_request(
            "a caption is text of at most 1 MiB without NUL characters",
        ));
    }
    let dir = datasets::dataset_dir(&state.dirs.datasets, &name)?;
    datasets::set_caption(&dir, &file, &body.caption)?;
    Ok(Json(json!({ "file": file, "caption": body.caption })))
}

fn multipart_error(e: axum::extract::multipart::MultipartError) -> ApiError {
    ApiError::new(e.status(), format!("upload interrupted: {}", e.body_text()))
}

/// Receives one multipart field into `incoming`.
async fn receive(
    field: &mut axum::extract::multipart::Field<'_>,
    incoming: &mut Incoming,
) -> ApiResult<()> {
    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
        incoming.write(&chunk)?;
    }
    Ok(())
}

/// Videos, images, captions and zip archives of them, dropped onto a dataset.
pub async fn upload(
    State(state): State<AppState>,
    Path(name): Path<String>,
    mut multipart: Multipart,
) -> ApiResult<Json<Value>> {
    let dir = datasets::dataset_dir(&state.dirs.datasets, &name)?;
    let mut saved = Vec::new();
    while let Some(mut field) = multipart.next_field().await.map_err(multipart_error)? {
        let Some(file_name) = field.file_name().map(str::to_string) else {
            continue;
        };
        let mut incoming = Incoming::begin(
            &dir,
            &file_name,
            &[
                FileKind::Video,
                FileKind::Image,
                FileKind::Caption,
                FileKind::Archive,
            ],
            "videos (mp4, mov, webm, mkv, avi), images (jpg, png, webp), .txt captions, .zip",
            state.max_upload_bytes,
        )?;
        receive(&mut field, &mut incoming).await?;
        if incoming.kind() == FileKind::Archive {
            // The archive stays hidden in its temporary file while it is unpacked, then goes.
            let ext_ok = {
                let mut head = Vec::new();
                use std::io::Read;
                std::fs::File::open(incoming.temp_path())
                    .and_then(|f| f.take(4).read_to_end(&mut head))
                    .map_err(|e| ApiError::internal(e.to_string()))?;
                uploads::magic_matches("zip", &head)
            };
            if !ext_ok {
                return Err(uploads::UploadError::Content {
                    name: file_name,
                    kind: FileKind::Archive,
                    ext: "zip".into(),
                }
                .into());
            }
            let temp = incoming.temp_path().to_path_buf();
            let (dir2, limit) = (dir.clone(), state.max_upload_bytes);
            let names = tokio::task::spawn_blocking(move || {
                uploads::unpack_zip(&temp, &file_name, &dir2, limit)
            })
            .await
            .map_err(|e| ApiError::internal(e.to_string()))??;
            drop(incoming);
            saved.extend(names);
        } else {
            incoming.finish(None)?;
            saved.push(file_name);
        }
    }
    if saved.is_empty() {
        return Err(ApiError::bad_request(
            "no file in the upload: send multipart form data with file fields",
        ));
    }
    Ok(Json(json!({ "saved": saved })))
}

/// A start frame for a sample prompt. Stored under a name made from its content, so the same
/// image uploaded twice is one file; the answer carries the absolute path for `ctrl_img`.
pub async fn upload_control_image(
    State(state): State<AppState>,
    mut multipart: Multipart,
) -> ApiResult<Json<Value>> {
    while let Some(mut field) = multipart.next_field().await.map_err(multipart_error)? {
        let Some(file_name) = field.file_name().map(str::to_string) else {
            continue;
        };
        let mut incoming = Incoming::begin(
            &state.dirs.uploads,
            &file_name,
            &[FileKind::Image],
            "images (jpg, png, webp)",
            state.max_upload_bytes,
        )?;
        let mut hasher = Sha256::new();
        while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
            hasher.update(&chunk);
            incoming.write(&chunk)?;
        }
        let ext = file_name
            .rsplit_once('.')
            .map(|(_, e)| e.to_ascii_lowercase())
            .unwrap_or_default();
        let stored = format!("{}.{ext}", &hex::encode(hasher.finalize())[..20]);
        let path = incoming.finish(Some(&stored))?;
        return Ok(Json(json!({
            "name": stored,
            "path": path.display().to_string(),
            "original": file_name,
        })));
    }
    Err(ApiError::bad_request(
        "no image in the upload: send multipart form data with one file field",
    ))
}

pub async fn control_image(
    State(state): State<AppState>,
    Path(file): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let path = paths::confined_join(&state.dirs.uploads, "upload", &file)?;
    paths::ensure_inside(&state.dirs.uploads, &path)?;
    Ok(super::serve_file(&path, &headers, None).await)
}
