//! Request authentication: a bearer token (`Authorization: Bearer …`) or the `tailrace_token`
//! cookie, verified against the server's key. Tokens never go in URLs, where logs keep them.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header::{AUTHORIZATION, COOKIE};
use axum::http::request::Parts;
use axum::http::HeaderMap;
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
        let verified = match token_of(&parts.headers) {
            None => Err("missing token: send `Authorization: Bearer <token>` (see <data-dir>/admin-token, or `tailrace job create`)".to_string()),
            Some(token) => state.core.keys.verify(&token, now_ms() / 1000).map_err(|e| e.to_string()),
        };
        verified.map(Caller).map_err(|reason| {
            let peer = parts.extensions.get::<crate::rate_limit::PeerAddr>().map(|p| p.0.ip().to_string());
            state.core.audit.record(
                "auth_failed",
                None,
                serde_json::json!({"via": "http", "method": parts.method.as_str(), "path": parts.uri.path(), "reason": reason, "peer": peer}),
            );
            ApiError::Unauthorized(reason)
        })
    }
}

/// The token a request carries: the bearer token, else the `tailrace_token` cookie.
pub(crate) fn token_of(headers: &HeaderMap) -> Option<String> {
    bearer(headers).or_else(|| cookie(headers))
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_string())
}

fn cookie(headers: &HeaderMap) -> Option<String> {
    headers.get_all(COOKIE).iter().filter_map(|v| v.to_str().ok()).find_map(|v| {
        v.split(';').find_map(|kv| kv.trim().strip_prefix("tailrace_token=").map(str::to_string))
    })
}
