//! Dashboard facts, settings, and the login that sets the token cookie.

use super::AppState;
use crate::auth::{self, Access};
use crate::devices;
use crate::error::{ApiError, ApiResult};
use crate::settings::{self, SettingsUpdate};
use axum::extract::{ConnectInfo, State};
use axum::http::{header, Extensions, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::Instant;

/// Whether the page must ask for a token, and whether this request already has it.
pub async fn auth_status(Extension(access): Extension<Access>, headers: HeaderMap) -> Json<Value> {
    Json(json!({
        "required": access.token_required(),
        "authorized": access.authorized(&headers),
    }))
}

#[derive(Deserialize)]
pub struct Login {
    token: String,
}

/// Checks the token and sets it as an HttpOnly, same-site cookie for media and event streams.
/// Wrong tokens are limited per client address (see `login_limit`): 429 with Retry-After.
pub async fn login(
    Extension(access): Extension<Access>,
    extensions: Extensions,
    Json(body): Json<Login>,
) -> Response {
    if !access.token_required() {
        return Json(json!({ "authorized": true })).into_response();
    }
    let client = extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip());
    let now = Instant::now();
    if let Err(wait) = access.login_limit.check(client, now) {
        let message =
            format!("too many wrong access tokens from this address; try again in {wait} s");
        return (
            [(header::RETRY_AFTER, wait.to_string())],
            ApiError::new(StatusCode::TOO_MANY_REQUESTS, message),
        )
            .into_response();
    }
    if !access.token_matches(&body.token) {
        access.login_limit.record_failure(client, now);
        return ApiError::new(StatusCode::UNAUTHORIZED, "wrong access token").into_response();
    }
    access.login_limit.record_success(client);
    // The token passed the comparison, so it is exactly the configured one; keep it out of
    // anything but the cookie header.
    let cookie = format!(
        "{}={}; HttpOnly; SameSite=Strict; Path=/",
        auth::COOKIE,
        body.token
    );
    match axum::http::HeaderValue::from_str(&cookie) {
        Ok(v) => (
            [(header::SET_COOKIE, v)],
            Json(json!({ "authorized": true })),
        )
            .into_response(),
        Err(_) => ApiError::bad_request(
            "the access token has characters a cookie cannot hold; send it as a Bearer header",
        )
        .into_response(),
    }
}

pub async fn logout() -> Response {
    let cookie = format!(
        "{}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0",
        auth::COOKIE
    );
    (
        [(header::SET_COOKIE, cookie)],
        Json(json!({ "authorized": false })),
    )
        .into_response()
}

/// GPUs (or why none are listed), disk space of the data folder, version.
pub async fn system(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let root = state.dirs.root.clone();
    let facts = tokio::task::spawn_blocking(move || {
        let (gpus, gpu_error) = match wanlora_sysinfo::gpus() {
            Ok(g) => (g, None),
            Err(e) => (Vec::new(), Some(e)),
        };
        let disk = wanlora_sysinfo::disk_space(&root);
        (gpus, gpu_error, disk)
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?;
    let (gpus, gpu_error, disk) = facts;
    let disk = match disk {
        Ok((free, total)) => json!({ "free_bytes": free, "total_bytes": total,
                                     "free": wanlora_sysinfo::human_bytes(free),
                                     "total": wanlora_sysinfo::human_bytes(total) }),
        Err(e) => json!({ "error": e }),
    };
    Ok(Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "data_dir": state.dirs.root.display().to_string(),
        "datasets_dir": state.dirs.datasets.display().to_string(),
        "output_dir": state.dirs.output.display().to_string(),
        "max_upload_bytes": state.max_upload_bytes,
        "gpus": gpus,
        "gpu_error": gpu_error,
        "disk": disk,
    })))
}

pub async fn get_settings(
    State(state): State<AppState>,
) -> ApiResult<Json<settings::SettingsView>> {
    Ok(Json(state.db.call(settings::view).await?))
}

pub async fn put_settings(
    State(state): State<AppState>,
    Json(mut update): Json<SettingsUpdate>,
) -> ApiResult<Json<settings::SettingsView>> {
    if let Some(gpu) = &update.default_gpu {
        let normalized = devices::normalize_gpu(gpu)
            .map_err(|e| ApiError::bad_request(format!("default_gpu: {e}")))?;
        update.default_gpu = Some(normalized);
    }
    state
        .db
        .call(move |c| {
            settings::apply(c, &update)?;
            settings::view(c)
        })
        .await
        .map(Json)
        .map_err(Into::into)
}
