//! `tailrace tail`: follow a step's output over the websocket tail from an offset, writing the
//! raw bytes out; reconnects from the last offset received, so nothing is skipped or repeated.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tracing::warn;

use crate::client::Server;

/// Follows the step until it ends; returns the end record (JSON) the server sent.
pub async fn follow<W: AsyncWrite + Unpin>(
    server: &Server,
    token: &str,
    job: &str,
    step: &str,
    from: u64,
    out: &mut W,
) -> Result<serde_json::Value, String> {
    let mut offset = from;
    let mut failures = 0u32;
    loop {
        match follow_once(server, token, job, step, &mut offset, out).await {
            Ok(Some(end)) => return Ok(end),
            Ok(None) => failures = 0,
            Err(Fatal(msg)) => return Err(msg),
            Err(Retry(msg)) => {
                failures += 1;
                if failures > 30 {
                    return Err(format!("gave up after {failures} failed reconnects: {msg}"));
                }
                warn!(error = %msg, offset, "tail interrupted; reconnecting from the last offset");
            }
        }
        tokio::time::sleep(Duration::from_millis(200 * u64::from(failures.min(10)))).await;
    }
}

enum TailError {
    Fatal(String),
    Retry(String),
}
use TailError::{Fatal, Retry};

async fn follow_once<W: AsyncWrite + Unpin>(
    server: &Server,
    token: &str,
    job: &str,
    step: &str,
    offset: &mut u64,
    out: &mut W,
) -> Result<Option<serde_json::Value>, TailError> {
    let scheme = if server.tls.is_some() { "wss" } else { "ws" };
    let url = format!("{scheme}://{}/api/v1/jobs/{job}/steps/{step}/tail?offset={offset}", server.authority);
    let mut req = url.into_client_request().map_err(|e| Fatal(e.to_string()))?;
    req.headers_mut().insert(
        http::header::AUTHORIZATION,
        format!("Bearer {token}").parse().map_err(|_| Fatal("token is not a valid header value".into()))?,
    );
    let io = server.connect(crate::net::Alpn::Http1).await.map_err(|e| Retry(e.to_string()))?;
    let (mut ws, _) = match tokio_tungstenite::client_async(req, io).await {
        Ok(c) => c,
        Err(WsError::Http(resp)) => {
            let body = resp.body().as_ref().map(|b| String::from_utf8_lossy(b).to_string()).unwrap_or_default();
            let msg = format!("server answered {}: {}", resp.status(), body.trim());
            return Err(if resp.status().is_client_error() { Fatal(msg) } else { Retry(msg) });
        }
        Err(e) => return Err(Retry(format!("could not connect: {e}"))),
    };
    while let Some(msg) = ws.next().await {
        match msg.map_err(|e| Retry(e.to_string()))? {
            Message::Binary(b) => {
                if b.len() < 8 {
                    return Err(Fatal("malformed tail message (shorter than its offset)".into()));
                }
                let at = u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
                let data = &b[8..];
                if at > *offset {
                    return Err(Retry(format!("server skipped from {offset} to {at}")));
                }
                // A message that overlaps what we have (after a reconnect) is trimmed.
                let skip = ((*offset - at) as usize).min(data.len());
                out.write_all(&data[skip..]).await.map_err(|e| Fatal(format!("write failed: {e}")))?;
                *offset += (data.len() - skip) as u64;
            }
            Message::Text(t) => {
                out.flush().await.map_err(|e| Fatal(format!("write failed: {e}")))?;
                let v: serde_json::Value = serde_json::from_str(&t).map_err(|e| Fatal(format!("bad status message: {e}")))?;
                if v.get("type").and_then(|t| t.as_str()) == Some("end") {
                    return Ok(Some(v));
                }
            }
            Message::Close(frame) => {
                if let Some(f) = frame.filter(|f| u16::from(f.code) == 1011) {
                    return Err(Retry(format!("server closed the tail: {}", f.reason)));
                }
                break;
            }
            _ => {}
        }
    }
    out.flush().await.map_err(|e| Fatal(format!("write failed: {e}")))?;
    Err(Retry("connection closed before the step ended".into()))
}
