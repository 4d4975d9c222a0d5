//! How failures reach the browser: a status code and `{"error": "...", "findings": [...]}`.

use crate::db::DbError;
use crate::jobspec::Finding;
use crate::paths::PathError;
use crate::supervisor::SupervisorError;
use crate::uploads::UploadError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub findings: Vec<Finding>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            findings: Vec::new(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// A job that cannot be saved: 422 with the findings for the form.
    pub fn invalid_job(findings: Vec<Finding>) -> Self {
        let first = findings
            .iter()
            .find(|f| f.severity == crate::jobspec::Severity::Error)
            .map(|f| {
                if f.path.is_empty() {
                    f.message.clone()
                } else {
                    format!("{}: {}", f.path, f.message)
                }
            })
            .unwrap_or_default();
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            message: format!("the job has errors; first: {first}"),
            findings,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.message, "findings": self.findings });
        (self.status, Json(body)).into_response()
    }
}

impl From<PathError> for ApiError {
    fn from(e: PathError) -> Self {
        match e {
            PathError::Io { ref source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                ApiError::not_found(e.to_string())
            }
            PathError::Io { .. } => ApiError::internal(e.to_string()),
            PathError::Outside(_) | PathError::Symlink(_) => {
                ApiError::new(StatusCode::FORBIDDEN, e.to_string())
            }
            PathError::BadName { .. } => ApiError::bad_request(e.to_string()),
        }
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::DuplicateName(_) => ApiError::conflict(e.to_string()),
            other => ApiError::internal(other.to_string()),
        }
    }
}

impl From<SupervisorError> for ApiError {
    fn from(e: SupervisorError) -> Self {
        match e {
            SupervisorError::Db(db) => db.into(),
            SupervisorError::NoSuchJob(_) => ApiError::not_found(e.to_string()),
            SupervisorError::WrongState { .. } => ApiError::conflict(e.to_string()),
            SupervisorError::Io { .. } => ApiError::internal(e.to_string()),
        }
    }
}

impl From<UploadError> for ApiError {
    fn from(e: UploadError) -> Self {
        match e {
            UploadError::Path(p) => p.into(),
            UploadError::TooLarge { .. } => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, e.to_string())
            }
            UploadError::Type { .. } => {
                ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, e.to_string())
            }
            UploadError::Content { .. } | UploadError::Archive { .. } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
            }
            UploadError::Io { .. } => ApiError::internal(e.to_string()),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
