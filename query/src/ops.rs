//! Operations endpoints: liveness, readiness, Prometheus metrics, ingest discovery.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;

use tailrace_storage::histogram::Histogram;

use crate::{AppState, IngestInfo};

/// Counters of the read path, rendered as `tailrace_query_*`.
#[derive(Debug, Default)]
pub struct QueryMetrics {
    pub tails_active: AtomicU64,
    pub tails_opened: AtomicU64,
    pub tail_bytes: AtomicU64,
    pub output_bytes: AtomicU64,
    /// From the live tier reporting new durable output to its delivery on a websocket tail.
    pub tail_delivery_seconds: Histogram,
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
        self.tail_delivery_seconds.render(
            out,
            "tailrace_query_tail_delivery_seconds",
            "Time from this node learning of new durable output of a followed step to sending it on a websocket tail.",
            "",
            true,
        );
    }
}

pub async fn healthz() -> &'static str {
    "ok\n"
}

/// How long `/readyz` waits for the metadata store: less than a probe's usual timeout.
const READY_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Ready when the metadata store and the live tier answer, each within [`READY_WAIT`]; the
/// body names what is unavailable.
pub async fn readyz(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let Ok(probe) = tailrace_protocol::JobId::new("readyz-probe") else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "bad probe id\n".to_string());
    };
    let wait = |what: &str, r: Result<Result<(), String>, tokio::time::error::Elapsed>| match r {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(format!("{what} unavailable: {e}")),
        Err(_) => Some(format!("{what} unavailable: no answer within {}s", READY_WAIT.as_secs())),
    };
    let (meta, live) = tokio::join!(
        tokio::time::timeout(READY_WAIT, async { state.core.meta.job(&probe).await.map(drop).map_err(|e| e.to_string()) }),
        tokio::time::timeout(READY_WAIT, async { state.core.live.health().await.map_err(|e| e.to_string()) }),
    );
    let problems: Vec<String> = [wait("metadata store", meta), wait("live tier", live)].into_iter().flatten().collect();
    if problems.is_empty() {
        (StatusCode::OK, "ready\n".to_string())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, problems.join("\n") + "\n")
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
    // A shared live tier's gauges, unless it does not answer in time (then /readyz says why).
    if let Ok(Ok(gauges)) = tokio::time::timeout(READY_WAIT, state.core.live.gauges()).await {
        for (name, help, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
    }
    let _ = writeln!(
        out,
        "# HELP tailrace_build_info The running version.\n# TYPE tailrace_build_info gauge\ntailrace_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    if let Some(l) = &state.rate_limit {
        let name = "tailrace_http_rate_limited_total";
        let _ = writeln!(out, "# HELP {name} Requests answered 429 by the rate limits.\n# TYPE {name} counter\n{name} {}", l.limited.load(Relaxed));
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}

pub async fn ingest_info(State(state): State<Arc<AppState>>) -> Json<IngestInfo> {
    let mut info = state.info.clone();
    if let Some(cert) = &state.quic_cert {
        info.cert_sha256 = Some(cert.fingerprint());
    }
    Json(info)
}
