//! `POST /api/v1/jobs/{job}/scrub` (admin): removes a secret from a job's stored output after
//! the fact — every step, archive and live tier — by same-length replacement, and records the
//! scrub in the audit log (never the secret; only its length).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::Json;
use base64::Engine;
use serde::{Deserialize, Serialize};
use tailrace_protocol::secret::MIN_SECRET;
use tailrace_storage::StepKey;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::AppState;

/// Body: the secret as text, or as base64 for bytes that are not UTF-8.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScrubRequest {
    #[serde(default)]
    pub secret: Option<String>,
    #[serde(default)]
    pub secret_base64: Option<String>,
}

impl std::fmt::Debug for ScrubRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScrubRequest(<redacted>)")
    }
}

/// What the scrub changed.
#[derive(Debug, Serialize)]
pub struct ScrubAnswer {
    pub job: String,
    pub steps: usize,
    /// Occurrences found and masked.
    pub occurrences: u64,
    /// Occurrences masked in the live tier (running or not yet archived steps).
    pub live_occurrences: u64,
    /// Archived segment objects rewritten.
    pub segments_rewritten: u64,
}

pub async fn scrub(
    State(state): State<Arc<AppState>>,
    Caller(claims): Caller,
    Path(job): Path<String>,
    Json(req): Json<ScrubRequest>,
) -> Result<Json<ScrubAnswer>, ApiError> {
    if !claims.is_admin() {
        return Err(ApiError::Forbidden("scrubbing needs the admin token".into()));
    }
    let job = crate::jobs::readable_job(&state, &claims, &job).await?;
    let secret = match (req.secret, req.secret_base64) {
        (Some(s), None) => s.into_bytes(),
        (None, Some(b)) => base64::engine::general_purpose::STANDARD
            .decode(b.trim())
            .map_err(|_| ApiError::BadRequest("secret_base64 is not base64".into()))?,
        _ => return Err(ApiError::BadRequest("send exactly one of `secret` or `secret_base64`".into())),
    };
    if secret.len() < MIN_SECRET {
        return Err(ApiError::BadRequest(format!("secrets shorter than {MIN_SECRET} bytes are not scrubbed (too many false matches)")));
    }
    let Some(archive) = &state.archive else {
        return Err(ApiError::Unavailable("scrubbing needs the archive (archive = true)".into()));
    };
    let steps = state.core.meta.steps(&job.id).await?;
    let mut answer = ScrubAnswer { job: job.id.to_string(), steps: steps.len(), occurrences: 0, live_occurrences: 0, segments_rewritten: 0 };
    for step in &steps {
        let key = StepKey::new(job.id.clone(), step.step.clone());
        let done = archive.scrub_step(&key, &secret).await.map_err(|e| ApiError::Unavailable(format!("scrub of {key} failed: {e}; run it again")))?;
        answer.occurrences += done.occurrences;
        answer.live_occurrences += done.live;
        answer.segments_rewritten += done.segments;
    }
    tracing::info!(job = %job.id, occurrences = answer.occurrences, segments = answer.segments_rewritten, "secret scrubbed from stored output");
    state.core.audit.record_durable(
        "scrub",
        Some(&claims),
        serde_json::json!({
            "job": answer.job, "steps": answer.steps, "occurrences": answer.occurrences,
            "live_occurrences": answer.live_occurrences, "segments_rewritten": answer.segments_rewritten,
            "secret_length": secret.len(),
        }),
    ).await;
    Ok(Json(answer))
}
