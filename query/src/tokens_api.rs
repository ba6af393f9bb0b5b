//! Tokens: issue a project read token (admin), revoke a token (admin by id, or anyone holding
//! the token itself). Issued and revoked tokens are recorded in the audit log by id.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use tailrace_protocol::token::{Claims, Scope};
use tailrace_storage::meta::now_ms;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::AppState;

/// Body of `POST /api/v1/tokens`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewReadToken {
    /// Project whose jobs the token may read.
    pub project: String,
    /// Lifetime in seconds; default 30 days.
    #[serde(default)]
    pub ttl_secs: Option<u64>,
}

/// Answer of `POST /api/v1/tokens`.
#[derive(Debug, Serialize)]
pub struct CreatedToken {
    pub project: String,
    pub token: String,
    /// The token's id, for revocation and in the audit log.
    pub token_id: String,
    pub token_expires_at: u64,
}

/// Issues a project-scoped read token (admin only).
pub async fn create_read_token(
    State(state): State<Arc<AppState>>,
    Caller(claims): Caller,
    Json(req): Json<NewReadToken>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    if !claims.is_admin() {
        return Err(ApiError::Forbidden("issuing read tokens needs the admin token".into()));
    }
    tailrace_storage::meta::validate_project(&req.project)?;
    let exp = now_ms() / 1000 + req.ttl_secs.unwrap_or(30 * 24 * 3600);
    let issued = Claims::new(Scope::Project { project: req.project.clone() }, Some(exp));
    let token = state.core.keys.sign(&issued);
    tracing::info!(project = %req.project, token_id = %issued.id, "read token issued");
    state.core.audit.record_durable(
        "token_created",
        Some(&claims),
        serde_json::json!({"token_id": issued.id, "scope": "project", "project": req.project, "token_expires_at": exp}),
    ).await;
    Ok((StatusCode::CREATED, Json(CreatedToken { project: req.project, token, token_id: issued.id, token_expires_at: exp })))
}

/// Body of `POST /api/v1/tokens/revoke`: a token id (admin only), or a token itself (whoever
/// holds it may revoke it, e.g. a leaked job token).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revoke {
    #[serde(default)]
    pub token_id: Option<String>,
    #[serde(default)]
    pub token: Option<String>,
}

/// Answer of `POST /api/v1/tokens/revoke`.
#[derive(Debug, Serialize)]
pub struct Revoked {
    pub token_id: String,
}

/// Revokes a token on every node: recorded in the metadata store (which other nodes reload),
/// applied to this node's keyring at once.
pub async fn revoke(
    State(state): State<Arc<AppState>>,
    Caller(caller): Caller,
    Json(req): Json<Revoke>,
) -> Result<Json<Revoked>, ApiError> {
    let now = now_ms() / 1000;
    let (id, until) = match (req.token_id, req.token) {
        (Some(id), None) if caller.is_admin() => {
            if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ApiError::BadRequest("token_id must be the hex id given when the token was issued".into()));
            }
            (id, u64::MAX)
        }
        (Some(_), None) => return Err(ApiError::Forbidden("revoking by id needs the admin token; to revoke your own token send it as `token`".into())),
        (None, Some(token)) => match state.core.keys.verify(&token, now) {
            Ok(c) => (c.id, c.exp.unwrap_or(u64::MAX)),
            Err(e) => return Err(ApiError::BadRequest(format!("the token to revoke is not valid here: {e}"))),
        },
        _ => return Err(ApiError::BadRequest("send exactly one of `token_id` or `token`".into())),
    };
    state.core.meta.revoke_token(&id, until).await?;
    state.core.keys.revoke(&id);
    tracing::info!(token_id = %id, "token revoked");
    state.core.audit.record_durable("token_revoked", Some(&caller), serde_json::json!({"token_id": id})).await;
    Ok(Json(Revoked { token_id: id }))
}
