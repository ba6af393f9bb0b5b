//! Operations endpoints: liveness, readiness, Prometheus metrics, ingest discovery.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;

use crate::{AppState, IngestInfo};

/// Counters of the read path, rendered as `tailrace_query_*`.
#[derive(Debug, Default)]
pub struct QueryMetrics {
    pub tails_active: AtomicU64,
    pub tails_opened: AtomicU64,
    pub tail_bytes: AtomicU64,
    pub output_bytes: AtomicU64,
}

impl QueryMetrics {
    pub fn render(&self, out: &mut String) {
        for (name, kind, help, v) in [
            ("tailrace_query_tails_active", "gauge", "Websocket tails open now.", &self.tails_active),
            ("tailrace_query_tails_opened_total", "counter", "Websocket tails opened.", &self.tails_opened),
            ("tailrace_query_tail_bytes_total", "counter", "Output bytes sent to websocket tails.", &self.tail_bytes),
            ("tailrace_query_output_bytes_total", "counter", "Output bytes served by ranged GETs.", &self.output_bytes),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}", v.load(Relaxed));
        }
    }
}

pub async fn healthz() -> &'static str {
    "ok\n"
}

/// How long `/readyz` waits for the metadata store: less than a probe's usual timeout.
const READY_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Ready when the metadata store answers, within [`READY_WAIT`].
pub async fn readyz(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let probe = tailrace_protocol::JobId::new("readyz-probe").map(|id| async move { state.core.meta.job(&id).await });
    match probe {
        Ok(fut) => match tokio::time::timeout(READY_WAIT, fut).await {
            Ok(Ok(_)) => (StatusCode::OK, "ready\n".to_string()),
            Ok(Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, format!("metadata store unavailable: {e}\n")),
            Err(_) => (StatusCode::SERVICE_UNAVAILABLE, format!("metadata store unavailable: no answer within {}s\n", READY_WAIT.as_secs())),
        },
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

pub async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let mut out = String::with_capacity(4096);
    state.core.metrics.render(&mut out);
    state.metrics.render(&mut out);
    state.core.audit.render(&mut out);
    if let Some(archive) = &state.archive {
        archive.metrics.render(&mut out);
    }
    if let Some(artifacts) = &state.artifacts {
        artifacts.metrics.render(&mut out);
    }
    if let Some(l) = &state.rate_limit {
        let name = "tailrace_http_rate_limited_total";
        let _ = writeln!(out, "# HELP {name} Requests answered 429 by the rate limits.\n# TYPE {name} counter\n{name} {}", l.limited.load(Relaxed));
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}

pub async fn ingest_info(State(state): State<Arc<AppState>>) -> Json<IngestInfo> {
    Json(state.info.clone())
}
