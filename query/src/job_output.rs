//! `GET /api/v1/jobs/{job}/output`: every step of a job in order, each after a header line,
//! streamed step by step from the live tier or the archive (never buffered whole).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt;
use tailrace_storage::StepKey;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::jobs::readable_job;
use crate::output::byte_stream;
use crate::source::Source;
use crate::AppState;

pub async fn get_job_output(
    State(state): State<Arc<AppState>>,
    Caller(claims): Caller,
    Path(job): Path<String>,
) -> Result<Response, ApiError> {
    let job = readable_job(&state, &claims, &job).await?;
    let steps = state.core.meta.steps(&job.id).await?;
    let parts = futures_util::stream::iter(steps).then(move |step| {
        let state = state.clone();
        async move {
            let key = StepKey::new(step.job.clone(), step.step.clone());
            let header_line = |status: &str, len: u64| {
                Bytes::from(format!("==> step {} ({}): {status}, {len} bytes <==\n", step.step, step.name))
            };
            match Source::open(&state, &key).await {
                Ok(mut source) => {
                    let (len, end) = source.snapshot();
                    let status = end.map_or("running", |e| e.status.as_str());
                    let line = header_line(status, len);
                    let head = futures_util::stream::once(async move { Ok(line) });
                    head.chain(byte_stream(state, key, source, 0, len)).chain(futures_util::stream::once(async { Ok(Bytes::from_static(b"\n")) })).boxed()
                }
                Err(e) => {
                    let line = Bytes::from(format!("==> step {} ({}): output unavailable: {e} <==\n", step.step, step.name));
                    futures_util::stream::once(async move { Ok::<_, std::io::Error>(line) }).boxed()
                }
            }
        }
    });
    let body = parts.flatten();
    Response::builder()
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header("x-content-type-options", "nosniff")
        .header(header::CONTENT_DISPOSITION, format!("attachment; filename=\"job-{}-{}.log\"", job.project.replace('/', "-"), job.number))
        .body(Body::from_stream(body))
        .map_err(|e| ApiError::Internal(e.to_string()))
}
