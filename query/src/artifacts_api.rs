//! Artifacts over HTTP: resumable uploads (`PUT`), upload status, listings in Tailrace's and
//! CircleCI's shapes, and downloads with conditional and (multi-)range requests, streamed from
//! the object store and presented safely (`artifact_serving`).
//!
//! Upload: `PUT /api/v1/jobs/{job}/artifacts/{path}` with the job token, `Upload-Length` (the
//! file's size), `X-Tailrace-Sha256` (its digest) and, when resuming, `Upload-Offset` (where the
//! body starts). `201` completes it; `202` says the body ended early and `Upload-Offset` where
//! to continue; `409` with `Upload-Offset` says to resume from there.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use futures_util::{stream, StreamExt, TryStreamExt};
use serde::Serialize;
use tailrace_protocol::artifact_path::{self, encode_path};
use tailrace_storage::time::rfc3339;
use tailrace_storage::{Artifact, ArtifactError, Artifacts, Job, MetaError, UploadOutcome, UploadRequest};

use crate::artifact_serving::{content_type, present};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::jobs::readable_job;
use crate::ranges::parse_ranges;
use crate::tests_api::{Page, PageQuery};
use crate::AppState;

/// Artifacts per page of a listing.
const PAGE: usize = 1000;

/// How artifacts are served; set by the operator.
#[derive(Debug, Clone, Default)]
pub struct ArtifactServing {
    /// Serve HTML, SVG, XML and JavaScript as their real types (sandboxed) instead of inert text.
    pub serve_active: bool,
    /// Base URL put in listings (e.g. a separate origin for artifacts); default: this server as
    /// the request reached it.
    pub base_url: Option<String>,
}

fn artifacts(state: &AppState) -> Result<&Arc<Artifacts>, ApiError> {
    state.artifacts.as_ref().ok_or_else(|| ApiError::Unavailable("artifacts need an object store; this server runs without one (archive = false)".into()))
}

impl From<ArtifactError> for ApiError {
    fn from(e: ArtifactError) -> Self {
        let msg = e.to_string();
        match e {
            ArtifactError::Name(_) | ArtifactError::Invalid(_) | ArtifactError::Body { .. } => ApiError::BadRequest(msg),
            ArtifactError::Conflict(_) | ArtifactError::Meta(MetaError::Conflict(_)) => ApiError::Conflict(msg, None),
            ArtifactError::Gap { durable } => ApiError::Conflict(msg, Some(durable)),
            ArtifactError::InProgress(_) => ApiError::Locked(msg),
            ArtifactError::TooLarge(_) | ArtifactError::Meta(MetaError::Limit(_)) => ApiError::TooLarge(msg),
            ArtifactError::Digest { .. } => ApiError::Unprocessable(msg),
            ArtifactError::Store(_) => ApiError::Unavailable(format!("{msg}; the upload can be resumed")),
            ArtifactError::Meta(m) => m.into(),
            _ => ApiError::Internal(msg),
        }
    }
}

fn header_u64(headers: &HeaderMap, name: &str) -> Result<Option<u64>, ApiError> {
    headers
        .get(name)
        .map(|v| v.to_str().ok().and_then(|s| s.trim().parse().ok()).ok_or_else(|| ApiError::BadRequest(format!("{name} must be a number of bytes"))))
        .transpose()
}

/// What a listing or an upload answer says about an artifact.
#[derive(Debug, Serialize)]
pub struct ArtifactInfo {
    pub path: String,
    pub size: u64,
    pub sha256: String,
    pub content_type: String,
    pub created_at: String,
    pub url: String,
}

fn base_url(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(b) = &state.artifact_serving.base_url {
        return b.trim_end_matches('/').to_string();
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost");
    let proto = headers.get("x-forwarded-proto").and_then(|h| h.to_str().ok()).filter(|p| *p == "https").unwrap_or("http");
    format!("{proto}://{host}")
}

fn info(a: &Artifact, base: &str) -> ArtifactInfo {
    ArtifactInfo {
        path: a.path.clone(),
        size: a.size,
        sha256: a.sha256.clone(),
        content_type: a.content_type.clone(),
        created_at: rfc3339(a.completed_ms.unwrap_or(a.created_ms)),
        url: format!("{base}/api/v1/jobs/{}/artifacts/{}", a.job, encode_path(&a.path)),
    }
}

/// `PUT /api/v1/jobs/{job}/artifacts/{path}`.
pub async fn upload(
    State(state): State<Arc<AppState>>,
    Caller(claims): Caller,
    Path((job, path)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    if !claims.can_write_job(&job) {
        return Err(ApiError::Forbidden(format!("this token cannot write job {job}; upload with the job's own token")));
    }
    let store = artifacts(&state)?;
    let id = tailrace_protocol::JobId::new(&job).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    if state.jobs.get(&state.core.meta, &id).await?.is_none() {
        return Err(ApiError::NotFound(format!("job {job} not found")));
    }
    let offset = header_u64(&headers, "upload-offset")?.unwrap_or(0);
    let size = match (header_u64(&headers, "upload-length")?, header_u64(&headers, header::CONTENT_LENGTH.as_str())?) {
        (Some(n), _) => n,
        (None, Some(n)) if offset == 0 => n,
        _ => return Err(ApiError::BadRequest("Upload-Length (the whole file's size in bytes) is required".into())),
    };
    if let Some(n) = header_u64(&headers, header::CONTENT_LENGTH.as_str())?
        && offset.saturating_add(n) > size {
            return Err(ApiError::BadRequest(format!("a body of {n} bytes from Upload-Offset {offset} passes Upload-Length {size}")));
        }
    let sha256 = headers
        .get("x-tailrace-sha256")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::BadRequest("X-Tailrace-Sha256 (the file's SHA-256 in hex) is required".into()))?
        .to_string();
    let req = UploadRequest { job: id, content_type: content_type(&path).into(), path, offset, size, sha256 };
    let base = base_url(&state, &headers);
    // The upload runs on its own task: a client that goes away ends the body stream with an
    // error rather than cancelling the upload between storing a part and recording it.
    let task = {
        let store = store.clone();
        tokio::spawn(async move { store.upload(req, body.into_data_stream()).await })
    };
    let outcome = task.await.map_err(|e| ApiError::Internal(format!("upload task failed: {e}")))??;
    let (status, art) = match outcome {
        UploadOutcome::Complete { artifact, new } => {
            if new {
                tracing::info!(job = %job, path = %artifact.path, size = artifact.size, "artifact stored");
            }
            (if new { StatusCode::CREATED } else { StatusCode::OK }, artifact)
        }
        UploadOutcome::Partial { artifact } => (StatusCode::ACCEPTED, artifact),
    };
    let mut resp = (status, Json(info(&art, &base))).into_response();
    resp.headers_mut().insert("upload-offset", HeaderValue::from(art.durable()));
    Ok(resp)
}

/// Answer of the upload status route.
#[derive(Debug, Serialize)]
pub struct UploadStatus {
    pub path: String,
    pub size: u64,
    pub sha256: String,
    /// Bytes the server holds; resume from here.
    pub offset: u64,
    pub complete: bool,
}

/// `GET /api/v1/jobs/{job}/artifact-uploads/{path}`: how much of an upload the server holds.
pub async fn upload_status(
    State(state): State<Arc<AppState>>,
    Caller(claims): Caller,
    Path((job, path)): Path<(String, String)>,
) -> Result<Json<UploadStatus>, ApiError> {
    let job = readable_job(&state, &claims, &job).await?;
    let path = artifact_path::normalize(&path).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let not_found = || ApiError::NotFound(format!("no upload of {path} in job {}", job.id));
    let a = state.core.meta.artifact(&job.id, &path).await?.filter(|a| a.expired_ms.is_none()).ok_or_else(not_found)?;
    Ok(Json(UploadStatus { offset: a.durable(), complete: a.is_complete(), path: a.path, size: a.size, sha256: a.sha256 }))
}

async fn page(state: &AppState, job: &Job, token: Option<&str>) -> Result<(Vec<Artifact>, Option<String>), ApiError> {
    let mut rows = state.core.meta.artifacts(&job.id, token.unwrap_or(""), PAGE + 1).await?;
    let next = (rows.len() > PAGE).then(|| rows[PAGE - 1].path.clone());
    rows.truncate(PAGE);
    Ok((rows, next))
}

/// `GET /api/v1/jobs/{job}/artifacts`: sizes, digests, content types, download URLs.
pub async fn list(
    State(state): State<Arc<AppState>>,
    Caller(claims): Caller,
    Path(job): Path<String>,
    Query(q): Query<PageQuery>,
    headers: HeaderMap,
) -> Result<Json<Page<ArtifactInfo>>, ApiError> {
    let job = readable_job(&state, &claims, &job).await?;
    let (rows, next_page_token) = page(&state, &job, q.page_token.as_deref()).await?;
    let base = base_url(&state, &headers);
    Ok(Json(Page { items: rows.iter().map(|a| info(a, &base)).collect(), next_page_token }))
}

/// One artifact in CircleCI's shape.
#[derive(Debug, Serialize)]
pub struct CircleArtifact {
    pub path: String,
    pub node_index: u32,
    pub url: String,
}

/// `GET /api/v2/project/{vcs}/{org}/{repo}/{job-number}/artifacts`, as CircleCI answers it.
pub async fn circle_list(
    State(state): State<Arc<AppState>>,
    Caller(claims): Caller,
    Path((vcs, org, repo, number)): Path<(String, String, String, u64)>,
    Query(q): Query<PageQuery>,
    headers: HeaderMap,
) -> Result<Json<Page<CircleArtifact>>, ApiError> {
    let project = format!("{vcs}/{org}/{repo}");
    let not_found = || ApiError::NotFound(format!("job {number} of project {project} not found, or your token cannot read it"));
    let job = state.core.meta.job_by_number(&project, number).await?.ok_or_else(not_found)?;
    if !claims.can_read(&job.project, job.id.as_str()) {
        return Err(not_found());
    }
    let (rows, next_page_token) = page(&state, &job, q.page_token.as_deref()).await?;
    let base = base_url(&state, &headers);
    let items = rows.iter().map(|a| CircleArtifact { path: a.path.clone(), node_index: 0, url: info(a, &base).url }).collect();
    Ok(Json(Page { items, next_page_token }))
}

/// Whether a conditional request's validators say the client's copy is current.
fn not_modified(headers: &HeaderMap, etag: &str, modified_s: u64) -> bool {
    if let Some(inm) = headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) {
        return inm.split(',').map(|t| t.trim().trim_start_matches("W/")).any(|t| t == "*" || t == etag);
    }
    let since = headers.get(header::IF_MODIFIED_SINCE).and_then(|v| v.to_str().ok()).and_then(|v| httpdate::parse_http_date(v).ok());
    since.and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).is_some_and(|t| t.as_secs() >= modified_s)
}

/// Whether `If-Range` (if any) still matches, so a `Range` may be honoured.
fn if_range_holds(headers: &HeaderMap, etag: &str, last_modified: &str) -> bool {
    match headers.get(header::IF_RANGE).and_then(|v| v.to_str().ok()) {
        None => true,
        Some(v) => v.trim() == etag || v.trim() == last_modified,
    }
}

/// `GET`/`HEAD /api/v1/jobs/{job}/artifacts/{path}`.
pub async fn download(
    State(state): State<Arc<AppState>>,
    Caller(claims): Caller,
    Path((job, path)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let job = readable_job(&state, &claims, &job).await?;
    let store = artifacts(&state)?.clone();
    let not_found = || ApiError::NotFound(format!("no artifact {path:?} in job {}", job.id));
    let path = artifact_path::normalize(&path).map_err(|_| not_found())?;
    let art = state.core.meta.artifact(&job.id, &path).await?.filter(|a| a.is_complete()).ok_or_else(not_found)?;
    if art.expired_ms.is_some() {
        return Err(ApiError::Gone(format!("artifact {path} of job {} expired (artifacts retention)", job.id)));
    }
    let etag = format!("\"{}\"", art.sha256);
    let modified_s = art.completed_ms.unwrap_or(art.created_ms) / 1000;
    let last_modified = httpdate::fmt_http_date(std::time::UNIX_EPOCH + std::time::Duration::from_secs(modified_s));
    let shown = present(&art.path, state.artifact_serving.serve_active);
    let mut resp = Response::builder()
        .header(header::ETAG, &etag)
        .header(header::LAST_MODIFIED, &last_modified)
        .header(header::CACHE_CONTROL, "private, max-age=3600")
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(header::CONTENT_SECURITY_POLICY, shown.csp)
        .header(header::REFERRER_POLICY, "no-referrer");
    let internal = |e: axum::http::Error| ApiError::Internal(e.to_string());
    if not_modified(&headers, &etag, modified_s) {
        return resp.status(StatusCode::NOT_MODIFIED).body(Body::empty()).map_err(internal);
    }
    let len = art.size;
    let ranges = match headers.get(header::RANGE).filter(|_| if_range_holds(&headers, &etag, &last_modified)) {
        None => None,
        Some(v) => {
            let v = v.to_str().map_err(|_| ApiError::BadRequest("Range header is not ASCII".into()))?;
            Some(parse_ranges(v, len).map_err(|m| ApiError::RangeNotSatisfiable(m, len))?)
        }
    };
    resp = resp.header(header::CONTENT_DISPOSITION, &shown.disposition);
    let body_err = |e: ArtifactError| std::io::Error::other(e.to_string());
    match ranges.as_deref() {
        None => resp
            .header(header::CONTENT_TYPE, &shown.content_type)
            .header(header::CONTENT_LENGTH, len)
            .body(Body::from_stream(store.read(&art, 0, len).map_err(body_err)))
            .map_err(internal),
        Some(&[(start, end)]) => resp
            .status(StatusCode::PARTIAL_CONTENT)
            .header(header::CONTENT_TYPE, &shown.content_type)
            .header(header::CONTENT_RANGE, format!("bytes {start}-{}/{len}", end - 1))
            .header(header::CONTENT_LENGTH, end - start)
            .body(Body::from_stream(store.read(&art, start, end).map_err(body_err)))
            .map_err(internal),
        Some(many) => {
            let boundary = format!("tailrace-{:016x}", rand::random::<u64>());
            let heads: Vec<Bytes> = many
                .iter()
                .enumerate()
                .map(|(i, (s, e))| {
                    let lead = if i == 0 { "" } else { "\r\n" };
                    Bytes::from(format!(
                        "{lead}--{boundary}\r\nContent-Type: {}\r\nContent-Range: bytes {s}-{}/{len}\r\n\r\n",
                        shown.content_type,
                        e - 1
                    ))
                })
                .collect();
            let tail = Bytes::from(format!("\r\n--{boundary}--\r\n"));
            let total: u64 = heads.iter().map(|h| h.len() as u64).sum::<u64>() + many.iter().map(|(s, e)| e - s).sum::<u64>() + tail.len() as u64;
            let parts: Vec<_> = heads
                .into_iter()
                .zip(many.iter().copied())
                .map(|(h, (s, e))| stream::once(async move { Ok(h) }).chain(store.read(&art, s, e)).boxed())
                .collect();
            let body = stream::iter(parts).flatten().chain(stream::once(async move { Ok(tail) })).map_err(body_err);
            resp.status(StatusCode::PARTIAL_CONTENT)
                .header(header::CONTENT_TYPE, format!("multipart/byteranges; boundary={boundary}"))
                .header(header::CONTENT_LENGTH, total)
                .body(Body::from_stream(body))
                .map_err(internal)
        }
    }
}
