//! Jobs and steps: create a job (admin), read a job, list its steps.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use tailrace_protocol::token::{Claims, Scope};
use tailrace_protocol::JobId;
use tailrace_storage::meta::now_ms;
use tailrace_storage::{Job, NewJob, Step};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::AppState;

/// Most secret digests one job may register.
pub const MAX_SECRET_DIGESTS: usize = 1000;

/// Answer of `POST /api/v1/jobs`.
#[derive(Debug, Serialize)]
pub struct CreatedJob {
    pub job_id: String,
    pub job_number: u64,
    pub project: String,
    /// Job-scoped runner token: writes this job only, expires at `token_expires_at`.
    pub token: String,
    /// The token's id, for revocation and in the audit log.
    pub token_id: String,
    /// Seconds since the Unix epoch.
    pub token_expires_at: u64,
}

pub async fn create_job(
    State(state): State<Arc<AppState>>,
    Caller(claims): Caller,
    Json(new): Json<NewJob>,
) -> Result<(StatusCode, Json<CreatedJob>), ApiError> {
    if !claims.is_admin() {
        return Err(ApiError::Forbidden("creating jobs needs the admin token".into()));
    }
    if new.secrets.len() > MAX_SECRET_DIGESTS {
        return Err(ApiError::BadRequest(format!("at most {MAX_SECRET_DIGESTS} secret digests per job")));
    }
    tailrace_protocol::secret::DigestSet::new(&new.secrets).map_err(|e| ApiError::BadRequest(format!("secrets: {e}")))?;
    let digests = new.secrets.len();
    let job = state.core.meta.create_job(new).await?;
    let exp = now_ms() / 1000 + state.job_token_ttl.as_secs();
    let token_claims = Claims::new(Scope::Job { job: job.id.to_string(), project: job.project.clone() }, Some(exp));
    let token = state.core.keys.sign(&token_claims);
    tracing::info!(job = %job.id, project = %job.project, number = job.number, token_id = %token_claims.id, "job created");
    state.core.audit.record_durable(
        "job_created",
        Some(&claims),
        serde_json::json!({"job": job.id.as_str(), "project": job.project, "number": job.number, "token_id": token_claims.id, "token_expires_at": exp, "secret_digests": digests}),
    ).await;
    Ok((
        StatusCode::CREATED,
        Json(CreatedJob {
            job_id: job.id.to_string(),
            job_number: job.number,
            project: job.project,
            token,
            token_id: token_claims.id,
            token_expires_at: exp,
        }),
    ))
}

/// Loads a job the caller may read; unknown and forbidden jobs look alike to outsiders.
pub async fn readable_job(state: &AppState, claims: &Claims, job: &str) -> Result<Job, ApiError> {
    let not_found = || ApiError::NotFound(format!("job {job} not found, or your token cannot read it"));
    let id = JobId::new(job).map_err(|_| not_found())?;
    let job = state.jobs.get(&state.core.meta, &id).await?.ok_or_else(not_found)?;
    if !claims.can_read(&job.project, job.id.as_str()) {
        return Err(not_found());
    }
    Ok(job)
}

pub async fn get_job(
    State(state): State<Arc<AppState>>,
    Caller(claims): Caller,
    Path(job): Path<String>,
) -> Result<Json<Job>, ApiError> {
    Ok(Json(readable_job(&state, &claims, &job).await?))
}

/// Answer of `GET /api/v1/jobs/{job}/steps`.
#[derive(Debug, Serialize)]
pub struct StepList {
    pub items: Vec<Step>,
}

pub async fn list_steps(
    State(state): State<Arc<AppState>>,
    Caller(claims): Caller,
    Path(job): Path<String>,
) -> Result<Json<StepList>, ApiError> {
    let job = readable_job(&state, &claims, &job).await?;
    let mut items = state.core.meta.steps(&job.id).await?;
    // A running step's length is what the live tier holds durably right now.
    for step in items.iter_mut().filter(|s| s.end.is_none() && s.archived_at_ms.is_none()) {
        let key = tailrace_storage::StepKey::new(job.id.clone(), step.step.clone());
        if let Ok(rx) = state.core.live.subscribe(&key).await {
            step.length = Some(rx.borrow().durable);
        }
    }
    Ok(Json(StepList { items }))
}

/// Jobs recently asked for, by id. A job record never changes once created, so every request
/// for a job's artifacts or output need not ask the metadata store again. Bounded: emptied when
/// it holds `CAPACITY` jobs.
#[derive(Debug, Default)]
pub struct JobCache {
    jobs: parking_lot::Mutex<std::collections::HashMap<JobId, Job>>,
}

impl JobCache {
    const CAPACITY: usize = 100_000;

    /// The job, from the cache or the store (a job not found is not remembered).
    pub async fn get(&self, meta: &std::sync::Arc<dyn tailrace_storage::MetaStore>, id: &JobId) -> Result<Option<Job>, tailrace_storage::MetaError> {
        if let Some(j) = self.jobs.lock().get(id) {
            return Ok(Some(j.clone()));
        }
        let found = meta.job(id).await?;
        if let Some(j) = &found {
            let mut jobs = self.jobs.lock();
            if jobs.len() >= Self::CAPACITY {
                jobs.clear();
            }
            jobs.insert(id.clone(), j.clone());
        }
        Ok(found)
    }
}
