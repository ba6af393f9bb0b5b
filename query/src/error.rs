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
    /// 409, with the durable offset to resume an upload from when there is one.
    #[error("{0}")]
    Conflict(String, Option<u64>),
    /// 423: another request holds the resource (an upload in progress); retry later.
    #[error("{0}")]
    Locked(String),
    #[error("{0}")]
    TooLarge(String),
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
            ApiError::Conflict(..) => StatusCode::CONFLICT,
            ApiError::Locked(_) => StatusCode::LOCKED,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
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
        match self {
            ApiError::RangeNotSatisfiable(_, len) => {
                if let Ok(v) = format!("bytes */{len}").parse() {
                    resp.headers_mut().insert(axum::http::header::CONTENT_RANGE, v);
                }
            }
            ApiError::Conflict(_, Some(offset)) => {
                resp.headers_mut().insert("upload-offset", offset.into());
            }
            _ => {}
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
