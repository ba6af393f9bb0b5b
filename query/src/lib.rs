//! Tailrace query: the HTTP API — jobs, steps, output by range, the websocket live tail, test
//! results (upload and listing), artifacts (upload, listing, download) — plus
//! `/healthz`, `/readyz` and `/metrics`. The HTTP/2 ingest route is mounted on the same server.

pub mod artifact_serving;
pub mod artifacts_api;
pub mod auth;
pub mod error;
pub mod insights_api;
pub mod job_output;
pub mod jobs;
pub mod lines;
pub mod ops;
pub mod output;
pub mod projects_api;
pub mod ranges;
pub mod rate_limit;
pub mod server;
pub mod scrub_api;
pub mod search;
pub mod since;
pub mod source;
pub mod tail;
pub mod tests_api;
pub mod tokens_api;
pub mod ui;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use serde::Serialize;
use tailrace_ingest::IngestCore;

pub use crate::ops::QueryMetrics;

/// How agents reach the QUIC listener; published at `GET /api/v1/ingest/info`.
#[derive(Debug, Clone, Serialize)]
pub struct IngestInfo {
    /// `host:port` of the QUIC listener as bound; an agent replaces an unspecified host
    /// (`0.0.0.0`, `[::]`) with the host of the server URL it was given.
    pub quic_addr: Option<String>,
    /// ALPN to offer.
    pub alpn: String,
    /// SHA-256 (hex) of the QUIC certificate, for agents to pin.
    pub cert_sha256: Option<String>,
    /// Path of the HTTP/2 ingest endpoint on this server.
    pub http2_path: String,
}

/// Shared state of every handler.
pub struct AppState {
    pub core: Arc<IngestCore>,
    pub info: IngestInfo,
    /// The QUIC certificate in use on an ingest node (renewals change its fingerprint, which
    /// `/api/v1/ingest/info` publishes).
    pub quic_cert: Option<Arc<tailrace_ingest::tls::ReloadingCert>>,
    pub metrics: QueryMetrics,
    /// Lifetime of job tokens handed out by `POST /api/v1/jobs`.
    pub job_token_ttl: Duration,
    /// Where ended steps are archived; `None` keeps everything in the live tier.
    pub archive: Option<Arc<tailrace_storage::Archive>>,
    /// Artifact storage (on the archive's object store); `None` without one.
    pub artifacts: Option<Arc<tailrace_storage::Artifacts>>,
    pub artifact_serving: artifacts_api::ArtifactServing,
    pub jobs: jobs::JobCache,
    /// Request rate limits per token and per client address; `None` turns them off.
    pub rate_limit: Option<rate_limit::RateLimiter>,
}

/// Which parts of the HTTP surface a process serves (its roles).
#[derive(Debug, Clone, Copy)]
pub struct Surface {
    /// The API: jobs, tokens, output, tails, tests, artifacts, insights.
    pub api: bool,
    /// The HTTP/2 ingest route.
    pub ingest: bool,
}

/// The HTTP surface: probes, metrics and ingest info always; the API and the ingest route as
/// `surface` says.
pub fn router(state: Arc<AppState>, surface: Surface) -> Router {
    let ops = Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/api/v1/ingest/info", get(ops::ingest_info));
    let api = Router::new()
        .route("/api/v1/jobs", post(jobs::create_job))
        .route("/api/v1/tokens", post(tokens_api::create_read_token))
        .route("/api/v1/tokens/revoke", post(tokens_api::revoke))
        .route("/api/v1/jobs/{job}", get(jobs::get_job))
        .route("/api/v1/jobs/{job}/steps", get(jobs::list_steps))
        .route("/api/v1/jobs/{job}/scrub", post(scrub_api::scrub))
        .route("/api/v1/jobs/{job}/output", get(job_output::get_job_output))
        .route("/api/v1/jobs/{job}/steps/{step}/output", get(output::get_output))
        .route("/api/v1/jobs/{job}/steps/{step}/tail", get(tail::tail))
        .route("/api/v1/jobs/{job}/steps/{step}/times", get(since::get_times))
        .route("/api/v1/jobs/{job}/steps/{step}/search", get(search::search))
        .route("/api/v1/jobs/{job}/steps/{step}/line-number", get(lines::line_number))
        .route(
            "/api/v1/jobs/{job}/tests",
            get(tests_api::job_tests).post(tests_api::upload).layer(DefaultBodyLimit::max(tests_api::MAX_UPLOAD)),
        )
        .route("/api/v2/project/{vcs}/{org}/{repo}/{number}/tests", get(tests_api::circle_job_tests))
        .route("/api/v1/jobs/{job}/artifacts", get(artifacts_api::list))
        .route(
            "/api/v1/jobs/{job}/artifacts/{*path}",
            get(artifacts_api::download).put(artifacts_api::upload).layer(DefaultBodyLimit::disable()),
        )
        .route("/api/v1/jobs/{job}/artifact-uploads/{*path}", get(artifacts_api::upload_status))
        .route("/api/v2/project/{vcs}/{org}/{repo}/{number}/artifacts", get(artifacts_api::circle_list))
        .route("/api/v2/insights/{vcs}/{org}/{repo}/flaky-tests", get(insights_api::flaky_tests))
        .route("/api/v1/projects/{vcs}/{org}/{repo}/tests/history", get(insights_api::test_history))
        .route("/api/v1/projects", get(projects_api::list_projects))
        .route("/api/v1/projects/{vcs}/{org}/{repo}/jobs", get(projects_api::list_jobs))
        .route("/api/v2/insights/{vcs}/{org}/{repo}/workflows/{workflow}/test-metrics", get(insights_api::test_metrics))
        .merge(ui::routes());
    let app = if surface.api {
        ops.merge(api)
    } else {
        ops.fallback(|| async {
            (axum::http::StatusCode::NOT_FOUND, "this node does not serve the API (its roles do not include query); send API requests to a query node\n")
        })
    };
    let app = app.layer(axum::middleware::from_fn_with_state(state.clone(), rate_limit::limit)).with_state(state.clone());
    if surface.ingest { app.merge(tailrace_ingest::http2::router(state.core.clone())) } else { app }
}
