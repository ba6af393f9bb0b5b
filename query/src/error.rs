//! API errors: one enum by meaning, rendered as `{"message": …}` with the matching status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// An error answer of the API. Messages say what to do next.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Gone(String),
    #[error("{0}")]
    RangeNotSatisfiable(String, u64),
    #[error("{0}")]
    Unprocessable(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Gone(_) => StatusCode::GONE,
            ApiError::RangeNotSatisfiable(..) => StatusCode::RANGE_NOT_SATISFIABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if let ApiError::Internal(msg) = &self {
            tracing::error!(%msg, "internal error");
        }
        let mut resp = (status, Json(serde_json::json!({ "message": self.to_string() }))).into_response();
        if let ApiError::RangeNotSatisfiable(_, len) = self {
            if let Ok(v) = format!("bytes */{len}").parse() {
                resp.headers_mut().insert(axum::http::header::CONTENT_RANGE, v);
            }
        }
        resp
    }
}

impl From<tailrace_storage::MetaError> for ApiError {
    fn from(e: tailrace_storage::MetaError) -> Self {
        match e {
            tailrace_storage::MetaError::JobNotFound(j) => ApiError::NotFound(format!("job {j} not found")),
            tailrace_storage::MetaError::Invalid { .. } => ApiError::BadRequest(e.to_string()),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<tailrace_storage::LiveError> for ApiError {
    fn from(e: tailrace_storage::LiveError) -> Self {
        match e {
            tailrace_storage::LiveError::NotFound(s) => ApiError::NotFound(format!("no output stored for step {s}")),
            other => ApiError::Internal(other.to_string()),
        }
    }
}
