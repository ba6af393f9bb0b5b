//! `GET /api/v1/jobs/{job}/steps/{step}/output`: a step's bytes, whole or by `Range: bytes=a-b`,
//! streamed from the live tier in chunks (never buffered whole).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use tailrace_protocol::StepId;
use tailrace_storage::StepKey;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::jobs::readable_job;
use crate::lines::{after_newline, parse_lines};
use crate::ranges::parse_range;
use crate::since::offset_since;
use crate::source::Source;
use crate::AppState;

/// Bytes read from the store per body chunk.
const CHUNK: usize = 256 * 1024;

/// A step the caller may read, and its key.
pub async fn readable_step(state: &AppState, caller: &Caller, job: &str, step: &str) -> Result<StepKey, ApiError> {
    let job = readable_job(state, &caller.0, job).await?;
    let not_found = || ApiError::NotFound(format!("step {step} of job {} not found", job.id));
    let step = StepId::new(step).map_err(|_| not_found())?;
    state.core.meta.step(&job.id, &step).await?.ok_or_else(not_found)?;
    Ok(StepKey::new(job.id, step))
}

/// `?offset=N&length=M`: the same as `Range: bytes=N-(N+M-1)`, for clients that cannot set headers.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputQuery {
    pub offset: Option<u64>,
    pub length: Option<u64>,
    /// `A-B`, `A-` or `A`: whole lines, counted from 1.
    pub lines: Option<String>,
    /// Output read at or after this time: RFC 3339 (`2026-11-28T10:00:00Z`) or Unix milliseconds.
    pub since: Option<String>,
}

pub async fn get_output(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((job, step)): Path<(String, String)>,
    Query(q): Query<OutputQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let key = readable_step(&state, &caller, &job, &step).await?;
    let mut source = Source::open(&state, &key).await?;
    let (len, end) = source.snapshot();
    let ended = end.is_some();
    if q.lines.is_some() || q.since.is_some() {
        if headers.contains_key(header::RANGE) || q.offset.is_some() || q.length.is_some() || (q.lines.is_some() && q.since.is_some()) {
            return Err(ApiError::BadRequest("use ?lines= or ?since= on its own, without Range or ?offset=".into()));
        }
        let (start, stop) = if let Some(lines) = q.lines.as_deref() {
            let r = parse_lines(lines).map_err(ApiError::BadRequest)?;
            let start = after_newline(&state, &key, &mut source, r.first - 1)
                .await?
                .filter(|&s| s < len || (s == len && r.first == 1))
                .ok_or_else(|| ApiError::RangeNotSatisfiable(format!("the output has fewer than {} lines", r.first), len))?;
            let stop = match r.last {
                Some(last) => after_newline(&state, &key, &mut source, last).await?.unwrap_or(len).min(len),
                None => len,
            };
            (start, stop)
        } else {
            let since = q.since.as_deref().unwrap_or_default();
            let t_ms = tailrace_storage::time::parse_timestamp_ms(since, 1).map_err(ApiError::BadRequest)?;
            let start = offset_since(&state, &key, &mut source, t_ms.saturating_mul(1000)).await?.min(len);
            (start, len)
        };
        return Response::builder()
            .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .header(header::CONTENT_LENGTH, stop - start)
            .header("x-content-type-options", "nosniff")
            .header("tailrace-offset", start)
            .header("tailrace-step-status", if ended { "ended" } else { "running" })
            .body(Body::from_stream(byte_stream(state, key, source, start, stop)))
            .map_err(|e| ApiError::Internal(e.to_string()));
    }
    let spec = match (headers.get(header::RANGE), q.offset, q.length) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
            return Err(ApiError::BadRequest("use either a Range header or ?offset=&length=, not both".into()));
        }
        (Some(v), None, None) => Some(v.to_str().map_err(|_| ApiError::BadRequest("Range header is not ASCII".into()))?.to_string()),
        (None, None, None) => None,
        (None, offset, length) => {
            let offset = offset.unwrap_or(0);
            match length {
                Some(0) => return Err(ApiError::BadRequest("length must be at least 1".into())),
                Some(n) => Some(format!("bytes={offset}-{}", offset.saturating_add(n - 1))),
                None => Some(format!("bytes={offset}-")),
            }
        }
    };
    let range = match spec {
        Some(v) => Some(parse_range(&v, len).map_err(|m| ApiError::RangeNotSatisfiable(m, len))?),
        None => None,
    };
    let (start, end) = range.unwrap_or((0, len));
    let mut resp = Response::builder()
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(header::CONTENT_LENGTH, end - start)
        .header(header::ACCEPT_RANGES, "bytes")
        .header("x-content-type-options", "nosniff")
        .header("tailrace-step-status", if ended { "ended" } else { "running" });
    if range.is_some() {
        // While a step runs its final length is unknown: say `*` rather than a length that grows.
        let total = if ended { len.to_string() } else { "*".into() };
        resp = resp
            .status(StatusCode::PARTIAL_CONTENT)
            .header(header::CONTENT_RANGE, HeaderValue::from_str(&format!("bytes {start}-{}/{total}", end - 1)).map_err(|e| ApiError::Internal(e.to_string()))?);
    }
    let stream = byte_stream(state, key, source, start, end);
    resp.body(Body::from_stream(stream)).map_err(|e| ApiError::Internal(e.to_string()))
}

/// The bytes `[start, end)` of a step as a body stream, read in chunks from wherever they are.
pub fn byte_stream(
    state: Arc<AppState>,
    key: StepKey,
    source: Source,
    start: u64,
    end: u64,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send + 'static {
    futures_util::stream::unfold((state, key, source, start), move |(state, key, mut source, pos)| async move {
        if pos >= end {
            return None;
        }
        let want = ((end - pos) as usize).min(CHUNK);
        match source.read(&state, &key, pos, want).await {
            Ok(b) if !b.is_empty() => {
                state.metrics.output_bytes.fetch_add(b.len() as u64, Relaxed);
                let next = pos + b.len() as u64;
                Some((Ok(b), (state, key, source, next)))
            }
            Ok(_) => Some((Err(std::io::Error::other("output shrank while being read")), (state, key, source, end))),
            Err(e) => Some((Err(std::io::Error::other(e.to_string())), (state, key, source, end))),
        }
    })
}
