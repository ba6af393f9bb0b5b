//! `GET /api/v1/jobs/{job}/steps/{step}/tail?offset=N`: a websocket that sends exactly the bytes
//! from N on, then the end of the step.
//!
//! Messages, server → client: binary = 8-byte big-endian offset of the first byte, then the
//! bytes; text = JSON `{"type":"end", …}` with the verified end, after which the server closes.
//! A client that reconnects with `offset` = last offset + last length continues with no gap and
//! no duplicate. Each tail reads at its own pace from the live tier, so a slow reader never
//! slows ingest or other readers.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use bytes::{BufMut, BytesMut};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tailrace_storage::StepKey;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::output::readable_step;
use crate::source::Source;
use crate::AppState;

/// Output bytes per websocket message: the tails open now share [`MESSAGE_BUDGET`], each
/// between these bounds. A lone tail that fell behind catches up in 1 MiB reads (on Redis, one
/// round trip each); 10,000 tails hold at most 64 KiB each.
const MESSAGE_MIN: usize = 64 * 1024;
const MESSAGE_MAX: usize = 1024 * 1024;
/// What all tails' pending messages may hold together (before the per-tail floor).
const MESSAGE_BUDGET: usize = 256 * 1024 * 1024;
/// The websocket's read buffer: readers send only close and ping frames. tungstenite zero-fills
/// the free part of this buffer on every read attempt, and a tail polls its socket each time
/// output arrives, so the 128 KiB default cost 8% of the server's CPU at 1,000 tails.
const READ_BUFFER: usize = 4 * 1024;

#[derive(Debug, Deserialize)]
pub struct TailQuery {
    /// First byte to send; 0 by default.
    #[serde(default)]
    pub offset: u64,
}

pub async fn tail(
    ws: WebSocketUpgrade,
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((job, step)): Path<(String, String)>,
    Query(q): Query<TailQuery>,
) -> Result<Response, ApiError> {
    let key = readable_step(&state, &caller, &job, &step).await?;
    let source = Source::open(&state, &key).await?;
    Ok(ws.max_message_size(64 * 1024).read_buffer_size(READ_BUFFER).on_upgrade(move |socket| async move {
        state.metrics.tails_opened.fetch_add(1, Relaxed);
        state.metrics.tails_active.fetch_add(1, Relaxed);
        if let Err(e) = run_tail(&state, &key, q.offset, source, socket).await {
            tracing::debug!(step = %key, error = %e, "tail ended");
        }
        state.metrics.tails_active.fetch_sub(1, Relaxed);
    }))
}

async fn run_tail(state: &AppState, key: &StepKey, mut offset: u64, mut source: Source, socket: WebSocket) -> Result<(), axum::Error> {
    let (mut sink, mut incoming) = socket.split();
    let close_with = |reason: String| Message::Close(Some(CloseFrame { code: 1011, reason: reason.into() }));
    // When the live tier last reported new output: its first delivery is timed.
    let mut woke: Option<std::time::Instant> = None;
    loop {
        // Snapshot before reading: if the end is known now, the read below sees every byte.
        let (_, end) = source.snapshot();
        let tails = state.metrics.tails_active.load(Relaxed).max(1) as usize;
        let message = (MESSAGE_BUDGET / tails).clamp(MESSAGE_MIN, MESSAGE_MAX);
        let chunk = match source.read(state, key, offset, message).await {
            Ok(c) => c,
            Err(e) => return sink.send(close_with(format!("could not read output: {e}"))).await,
        };
        if !chunk.is_empty() {
            let mut msg = BytesMut::with_capacity(8 + chunk.len());
            msg.put_u64(offset);
            msg.extend_from_slice(&chunk);
            sink.send(Message::Binary(msg.freeze())).await?;
            offset += chunk.len() as u64;
            state.metrics.tail_bytes.fetch_add(chunk.len() as u64, Relaxed);
            if let Some(at) = woke.take() {
                state.metrics.tail_delivery_seconds.observe(at.elapsed());
            }
            continue;
        }
        if let Some(end) = end.filter(|e| offset >= e.length) {
            let mut json = serde_json::to_value(&end).unwrap_or_default();
            json["type"] = "end".into();
            sink.send(Message::Text(json.to_string().into())).await?;
            return sink.send(Message::Close(None)).await;
        }
        if let Source::Archived { .. } = source {
            return sink.send(close_with(format!("archived output ends before offset {offset}"))).await;
        }
        tokio::select! {
            changed = source.changed(state, key) => {
                if let Err(e) = changed {
                    return sink.send(close_with(format!("could not follow output: {e}"))).await;
                }
                woke = Some(std::time::Instant::now());
            }
            msg = incoming.next() => match msg {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return Ok(()),
                Some(Ok(_)) => {}
            },
        }
    }
}
