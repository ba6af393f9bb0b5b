//! The HTTP/2 ingest transport, for networks that block UDP: `POST /api/v1/ingest` with a
//! streaming request body of frames; the response body streams ACCEPT/ACK/END/ERROR back
//! (full duplex over one HTTP/2 stream). Same frames, same core as QUIC.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use futures_util::TryStreamExt;
use tokio::sync::mpsc;
use tokio_util::io::StreamReader;

use crate::core::IngestCore;

/// Path of the HTTP/2 ingest endpoint.
pub const INGEST_PATH: &str = "/api/v1/ingest";
/// Header naming the protocol version.
pub const PROTOCOL_HEADER: &str = "tailrace-protocol";
/// Content type of a frame stream.
pub const CONTENT_TYPE: &str = "application/vnd.tailrace.frames";

/// The ingest route, ready to merge into the HTTP server's router.
pub fn router(core: Arc<IngestCore>) -> Router {
    Router::new().route(INGEST_PATH, post(ingest)).with_state(core)
}

async fn ingest(State(core): State<Arc<IngestCore>>, req: Request) -> Response {
    let version = req.headers().get(PROTOCOL_HEADER).and_then(|v| v.to_str().ok());
    if version != Some(tailrace_protocol::PROTOCOL_VERSION) {
        let msg = format!(
            "missing or unsupported {PROTOCOL_HEADER} header (this server speaks version {}); use `tailrace run`",
            tailrace_protocol::PROTOCOL_VERSION
        );
        return (StatusCode::BAD_REQUEST, msg).into_response();
    }
    let body = req.into_body().into_data_stream().map_err(std::io::Error::other);
    let reader = StreamReader::new(body);
    let (tx, rx) = mpsc::channel::<Bytes>(32);
    tokio::spawn(async move { core.serve_stream(reader, tx, "http2").await });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, CONTENT_TYPE)
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
