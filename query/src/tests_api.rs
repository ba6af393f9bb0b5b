//! Test results over HTTP: a runner uploads a result file to its job (JUnit XML, or JSON records
//! with `Content-Type: application/json`), readers list a job's tests — Tailrace's
//! `/api/v1/jobs/{job}/tests` and CircleCI's `/api/v2/project/{slug}/{job-number}/tests`.
//!
//! Uploads are parsed as they arrive and may come while the job still runs. The raw file is kept
//! in the object store under `test-results/` (when an archive is configured), then the runs are
//! recorded; a file that cannot be parsed is refused with the parser's reason and stores nothing.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tailrace_ingest::results::{parse_json, parse_junit, Counts, JunitLimits, Parsed};
use tailrace_protocol::JobId;
use tailrace_storage::meta::now_ms;
use tailrace_storage::time::civil_date;
use tailrace_storage::{Job, TestRun};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::jobs::readable_job;
use crate::AppState;

/// Largest result file accepted in one upload.
pub const MAX_UPLOAD: usize = 64 << 20;
/// Tests per page of a listing.
const PAGE: usize = 250;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadQuery {
    /// The file's name (kept as each test's `source`).
    pub source: Option<String>,
}

/// Answer of an upload: what was recorded, and what the parser noticed.
#[derive(Debug, Serialize)]
pub struct UploadReport {
    pub source: String,
    #[serde(flatten)]
    pub counts: Counts,
    pub warnings: Vec<String>,
}

/// `[A-Za-z0-9._-]`, other bytes as `_`, at most 100 characters: safe in object keys and logs.
fn clean_source(s: &str) -> String {
    let s: String = s.chars().take(100).map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' }).collect();
    if s.is_empty() || s.starts_with('.') { format!("upload{s}") } else { s }
}

pub async fn upload(
    State(state): State<Arc<AppState>>,
    Caller(claims): Caller,
    Path(job): Path<String>,
    Query(q): Query<UploadQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<UploadReport>), ApiError> {
    if !claims.can_write_job(&job) {
        return Err(ApiError::Forbidden(format!("this token cannot write job {job}; upload with the job's own token")));
    }
    let id = JobId::new(&job).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let Some(job_record) = state.core.meta.job(&id).await? else {
        return Err(ApiError::NotFound(format!("job {job} not found")));
    };
    let source = clean_source(q.source.as_deref().unwrap_or("upload"));
    let json = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("json"));
    let raw = body.clone();
    let parsed: Parsed = tokio::task::spawn_blocking(move || {
        let limits = JunitLimits::default();
        if json { parse_json(&raw, &limits).map_err(|e| e.to_string()) } else { parse_junit(&raw[..], &limits).map_err(|e| e.to_string()) }
    })
    .await
    .map_err(|e| ApiError::Internal(format!("parser task failed: {e}")))?
    .map_err(|e| ApiError::Unprocessable(format!("{source}: {e}")))?;

    if let Some(archive) = &state.archive {
        let (y, m, d) = civil_date(now_ms());
        let key = format!("test-results/{y:04}/{m:02}/{d:02}/{job}/{}-{source}", now_ms());
        archive.put_object(&key, body).await.map_err(|e| {
            ApiError::Unavailable(format!("could not store the result file: {e}; nothing was recorded, retry the upload"))
        })?;
    }
    let runs: Vec<TestRun> = parsed
        .tests
        .iter()
        .map(|t| TestRun {
            classname: t.classname.clone(),
            name: t.name.clone(),
            file: t.file.clone(),
            source: source.clone(),
            result: t.result().as_str().to_string(),
            run_time: t.time(),
            message: t.attempts.iter().rev().find_map(|a| a.message.clone()),
            attempts: t.attempts.len() as u32,
            flaky: t.is_flaky(),
            wasted_time: if t.is_flaky() { t.attempts.iter().filter(|a| a.result.is_failed()).filter_map(|a| a.time).sum() } else { 0.0 },
        })
        .collect();
    state.core.meta.record_test_runs(&job_record, &runs).await?;
    let counts = parsed.counts();
    tracing::info!(job = %job, source = %source, tests = counts.tests, failed = counts.failure + counts.error, "test results stored");
    Ok((StatusCode::CREATED, Json(UploadReport { source, counts, warnings: parsed.warnings })))
}

#[derive(Debug, Deserialize)]
pub struct PageQuery {
    #[serde(rename = "page-token")]
    pub page_token: Option<String>,
}

/// One test of a job in CircleCI's shape.
#[derive(Debug, Serialize)]
pub struct CircleTest {
    pub message: String,
    pub source: String,
    pub run_time: f64,
    pub file: Option<String>,
    pub result: String,
    pub name: String,
    pub classname: String,
}

#[derive(Debug, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_page_token: Option<String>,
}

async fn page(state: &AppState, job: &Job, token: Option<&str>) -> Result<Page<TestRun>, ApiError> {
    let from = match token {
        None => 0,
        Some(t) => t.parse().map_err(|_| ApiError::BadRequest(format!("invalid page-token {t:?}; pass next_page_token as given")))?,
    };
    let mut rows = state.core.meta.test_runs(&job.id, from, PAGE + 1).await?;
    let next_page_token = (rows.len() > PAGE).then(|| rows[PAGE].0.to_string());
    rows.truncate(PAGE);
    Ok(Page { items: rows.into_iter().map(|(_, r)| r).collect(), next_page_token })
}

/// `GET /api/v1/jobs/{job}/tests`: every field Tailrace keeps (attempts, flaky).
pub async fn job_tests(
    State(state): State<Arc<AppState>>,
    Caller(claims): Caller,
    Path(job): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<Json<Page<TestRun>>, ApiError> {
    let job = readable_job(&state, &claims, &job).await?;
    Ok(Json(page(&state, &job, q.page_token.as_deref()).await?))
}

/// `GET /api/v2/project/{vcs}/{org}/{repo}/{job-number}/tests`, as CircleCI answers it.
pub async fn circle_job_tests(
    State(state): State<Arc<AppState>>,
    Caller(claims): Caller,
    Path((vcs, org, repo, number)): Path<(String, String, String, u64)>,
    Query(q): Query<PageQuery>,
) -> Result<Json<Page<CircleTest>>, ApiError> {
    let project = format!("{vcs}/{org}/{repo}");
    let not_found = || ApiError::NotFound(format!("job {number} of project {project} not found, or your token cannot read it"));
    let job = state.core.meta.job_by_number(&project, number).await?.ok_or_else(not_found)?;
    if !claims.can_read(&job.project, job.id.as_str()) {
        return Err(not_found());
    }
    let p = page(&state, &job, q.page_token.as_deref()).await?;
    let items = p
        .items
        .into_iter()
        .map(|r| CircleTest {
            message: r.message.unwrap_or_default(),
            source: r.source,
            run_time: r.run_time.unwrap_or(0.0),
            file: r.file,
            result: r.result,
            name: r.name,
            classname: r.classname,
        })
        .collect();
    Ok(Json(Page { items, next_page_token: p.next_page_token }))
}

#[cfg(test)]
mod tests {
    use super::clean_source;

    #[test]
    fn sources_are_safe_names() {
        assert_eq!(clean_source("junit.xml"), "junit.xml");
        assert_eq!(clean_source("../../etc/passwd"), "upload.._.._etc_passwd");
        assert_eq!(clean_source("a b/ç"), "a_b__");
        assert_eq!(clean_source(""), "upload");
    }
}
