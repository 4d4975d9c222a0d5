//! The HTTP routes. Pages are static assets; everything else is JSON under `/api/`.

mod config;
mod datasets;
mod events;
mod jobs;
mod system;

use crate::auth::{self, Access};
use crate::db::Db;
use crate::paths::DataDirs;
use crate::supervisor::Supervisor;
use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderValue};
use axum::routing::{get, post, put};
use axum::Router;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// What every handler shares.
pub struct Shared {
    pub dirs: DataDirs,
    pub db: Db,
    pub supervisor: Arc<Supervisor>,
    pub max_upload_bytes: u64,
    /// How often live views look at a job folder.
    pub poll_interval: Duration,
    /// Becomes true when the server shuts down, so that event streams end (a graceful shutdown
    /// waits for open connections, and an event stream would otherwise never close).
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// Small JSON bodies (jobs, captions, settings) never need more than this.
const JSON_BODY_LIMIT: usize = 4 << 20;

/// Serves a file with Range support (video seeking) and the right content type.
async fn serve_file(
    path: &Path,
    request_headers: &axum::http::HeaderMap,
    download_name: Option<&str>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    use tower::ServiceExt;
    let mut req = axum::http::Request::new(axum::body::Body::empty());
    if let Some(range) = request_headers.get(header::RANGE) {
        req.headers_mut().insert(header::RANGE, range.clone());
    }
    let mut response = match tower_http::services::ServeFile::new(path)
        .oneshot(req)
        .await
    {
        Ok(r) => r.into_response(),
        Err(e) => return crate::error::ApiError::internal(e.to_string()).into_response(),
    };
    if let Some(name) = download_name {
        // The name passed the name rules (no quotes or separators), so it is safe in the header.
        if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
            response
                .headers_mut()
                .insert(header::CONTENT_DISPOSITION, v);
        }
    }
    response
}

/// Every route of the UI.
pub fn router(state: AppState, access: Access) -> Router {
    let upload_limit = usize::try_from(state.max_upload_bytes)
        .unwrap_or(usize::MAX)
        .saturating_add(1 << 20);
    let api = Router::new()
        .route("/api/auth", get(system::auth_status))
        .route("/api/login", post(system::login))
        .route("/api/logout", post(system::logout))
        .route("/api/system", get(system::system))
        .route(
            "/api/settings",
            get(system::get_settings).put(system::put_settings),
        )
        .route("/api/presets", get(config::presets))
        .route("/api/schema", get(config::schema))
        .route("/api/config/parse", post(config::parse))
        .route("/api/config/render", post(config::render))
        .route("/api/jobs", get(jobs::list).post(jobs::create))
        .route("/api/queue", get(jobs::queue))
        .route(
            "/api/jobs/{id}",
            get(jobs::get_one).put(jobs::update).delete(jobs::delete),
        )
        .route("/api/jobs/{id}/start", post(jobs::start))
        .route("/api/jobs/{id}/stop", post(jobs::stop))
        .route("/api/jobs/{id}/clone", post(jobs::clone_job))
        .route("/api/jobs/{id}/save-now", post(jobs::save_now))
        .route("/api/jobs/{id}/sample-now", post(jobs::sample_now))
        .route("/api/jobs/{id}/metrics", get(jobs::metrics))
        .route("/api/jobs/{id}/log", get(jobs::log))
        .route("/api/jobs/{id}/files/{*path}", get(jobs::file))
        .route("/api/jobs/{id}/events", get(events::job_events))
        .route("/api/datasets", get(datasets::list).post(datasets::create))
        .route(
            "/api/datasets/{name}",
            get(datasets::get_one).delete(datasets::delete),
        )
        .route("/api/datasets/{name}/inspect", get(datasets::inspect))
        .route(
            "/api/datasets/{name}/files/{file}",
            get(datasets::file).delete(datasets::delete_file),
        )
        .route(
            "/api/datasets/{name}/thumbnails/{file}",
            get(datasets::thumbnail),
        )
        .route(
            "/api/datasets/{name}/captions/{file}",
            put(datasets::put_caption),
        )
        .layer(DefaultBodyLimit::max(JSON_BODY_LIMIT));
    let uploads = Router::new()
        .route("/api/datasets/{name}/upload", post(datasets::upload))
        .route("/api/uploads", post(datasets::upload_control_image))
        .route("/api/uploads/{file}", get(datasets::control_image))
        .layer(DefaultBodyLimit::max(upload_limit));
    Router::new()
        .merge(api)
        .merge(uploads)
        .merge(crate::assets::routes())
        .fallback(|| async { crate::error::ApiError::not_found("no such page or API route") })
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(
            access.clone(),
            auth::guard,
        ))
        .layer(axum::Extension(access))
        .layer(axum::middleware::map_response(security_headers))
}

/// Headers that keep pages from being framed, sniffed or loading anything from elsewhere.
async fn security_headers(mut response: axum::response::Response) -> axum::response::Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; \
             style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'; \
             base-uri 'none'; form-action 'self'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}
