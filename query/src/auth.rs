//! Request authentication: a bearer token (`Authorization: Bearer …`) or the `tailrace_token`
//! cookie, verified against the server's key. Tokens never go in URLs, where logs keep them.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header::{AUTHORIZATION, COOKIE};
use axum::http::request::Parts;
use tailrace_protocol::token::Claims;
use tailrace_storage::meta::now_ms;

use crate::error::ApiError;
use crate::AppState;

/// The verified claims of the caller's token.
#[derive(Debug, Clone)]
pub struct Caller(pub Claims);

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, ApiError> {
        let token = bearer(parts).or_else(|| cookie(parts)).ok_or_else(|| {
            ApiError::Unauthorized(
                "missing token: send `Authorization: Bearer <token>` (see <data-dir>/admin-token, or `tailrace job create`)".into(),
            )
        })?;
        state
            .core
            .keys
            .verify(&token, now_ms() / 1000)
            .map(Caller)
            .map_err(|e| ApiError::Unauthorized(e.to_string()))
    }
}

fn bearer(parts: &Parts) -> Option<String> {
    let v = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_string())
}

fn cookie(parts: &Parts) -> Option<String> {
    parts.headers.get_all(COOKIE).iter().filter_map(|v| v.to_str().ok()).find_map(|v| {
        v.split(';').find_map(|kv| kv.trim().strip_prefix("tailrace_token=").map(str::to_string))
    })
}
