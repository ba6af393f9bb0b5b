//! Delivers a spool to ingest: OPEN, resume from the server's hwm, DATA as fast as flow control
//! allows, ACKs release spool bytes, END once the command is over; reconnects with backoff after
//! any failure until the server confirms END.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tailrace_protocol::frame::write_data_header;
use tailrace_protocol::{Decoder, End, EndReason, ErrorKind, Frame, Open};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::spool::Spool;
use crate::transport::{Connector, StepStream};

/// What the command's end contributes to END.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndMeta {
    pub exit_code: Option<i32>,
    pub reason: EndReason,
    pub duration_ms: u64,
}

/// Where delivery stands, for the runner to watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryState {
    Connecting,
    /// The first attempt failed (server unreachable or unavailable); retrying with backoff.
    Retrying,
    /// The server accepted the step at least once.
    Accepted,
    /// The server confirmed END: every byte is held and verified.
    Verified,
    /// The server refused the step for good (bad token, conflicting content): retrying cannot help.
    Failed(String),
}

enum StreamError {
    Retry(String),
    Fatal(String),
}

/// Delivers until verified, refused, or `delivery_timeout` after the command ended.
pub async fn deliver(
    mut connector: Connector,
    spool: Arc<Spool>,
    open: Open,
    mut end: watch::Receiver<Option<EndMeta>>,
    delivery_timeout: Duration,
    state: watch::Sender<DeliveryState>,
) {
    let mut backoff = Duration::from_millis(100);
    let mut ended_at: Option<Instant> = None;
    loop {
        if ended_at.is_none() && end.borrow().is_some() {
            ended_at = Some(Instant::now());
        }
        if let Some(t) = ended_at
            && t.elapsed() > delivery_timeout {
                let msg = format!(
                    "gave up delivering output {delivery_timeout:?} after the command ended; the server holds {} of {} bytes",
                    spool.acked(),
                    spool.written().len
                );
                state.send_replace(DeliveryState::Failed(msg));
                return;
            }
        let err = match connector.open().await {
            Ok(stream) => {
                let via = stream.via;
                match run_stream(stream, &spool, &open, &mut end, &state).await {
                    Ok(()) => {
                        info!(via, bytes = spool.written().len, "step delivered and verified");
                        state.send_replace(DeliveryState::Verified);
                        return;
                    }
                    Err(StreamError::Fatal(msg)) => {
                        state.send_replace(DeliveryState::Failed(msg));
                        return;
                    }
                    Err(StreamError::Retry(msg)) => {
                        if *state.borrow() == DeliveryState::Accepted {
                            backoff = Duration::from_millis(100);
                        }
                        format!("{msg} (over {via})")
                    }
                }
            }
            Err(e) => e,
        };
        state.send_if_modified(|s| {
            let first = *s == DeliveryState::Connecting;
            if first {
                *s = DeliveryState::Retrying;
            }
            first
        });
        warn!(error = %err, retry_in = ?backoff, acked = spool.acked(), written = spool.written().len, "output stream interrupted; will resume");
        let jitter = Duration::from_millis(u64::from(rand::random::<u8>()) % 50);
        tokio::select! {
            _ = tokio::time::sleep(backoff + jitter) => {}
            _ = end.changed(), if ended_at.is_none() => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

enum Event {
    Error(tailrace_protocol::ErrorFrame),
    End,
    Closed(String),
}

async fn run_stream(
    stream: StepStream,
    spool: &Arc<Spool>,
    open: &Open,
    end: &mut watch::Receiver<Option<EndMeta>>,
    state: &watch::Sender<DeliveryState>,
) -> Result<(), StreamError> {
    let StepStream { mut tx, mut rx, via } = stream;
    let retry = |e: std::io::Error| StreamError::Retry(format!("send failed: {e}"));
    tx.send(&mut [Frame::Open(open.clone()).to_bytes()]).await.map_err(retry)?;
    let decoder = Decoder::default();
    let mut buf = BytesMut::with_capacity(4096);
    let accept = match read_frame(&mut rx, &mut buf, &decoder).await {
        Ok(Some(Frame::Accept(a))) => a,
        Ok(Some(Frame::Error(e))) => return Err(classify(e)),
        Ok(Some(other)) => return Err(StreamError::Fatal(format!("server sent {other:?} instead of ACCEPT"))),
        Ok(None) => return Err(StreamError::Retry("server closed the stream before ACCEPT".into())),
        Err(e) => return Err(StreamError::Retry(e)),
    };
    let written = spool.written().len;
    if accept.hwm > written {
        return Err(StreamError::Fatal(format!(
            "server holds {} bytes of this step but this agent wrote only {written}; is another agent writing step {}?",
            accept.hwm, open.step
        )));
    }
    spool.ack(accept.hwm);
    state.send_if_modified(|s| {
        let first = matches!(*s, DeliveryState::Connecting | DeliveryState::Retrying);
        if first {
            *s = DeliveryState::Accepted;
        }
        first
    });
    debug!(via, hwm = accept.hwm, ended = accept.ended, "step accepted");

    // Replies are read by their own task so ACKs release spool room while this one sends.
    let (ev_tx, mut events) = mpsc::channel::<Event>(4);
    let reader_spool = spool.clone();
    let reader = tokio::spawn(async move {
        loop {
            let ev = match read_frame(&mut rx, &mut buf, &decoder).await {
                Ok(Some(Frame::Ack { durable })) => {
                    reader_spool.ack(durable);
                    continue;
                }
                Ok(Some(Frame::Error(e))) => Event::Error(e),
                Ok(Some(Frame::End(_))) => Event::End,
                Ok(Some(other)) => Event::Closed(format!("unexpected {other:?} from server")),
                Ok(None) => Event::Closed("server closed the stream".into()),
                Err(e) => Event::Closed(e),
            };
            let _ = ev_tx.send(ev).await;
            return;
        }
    });
    let _abort = AbortOnDrop(reader);

    let mut cursor = spool.cursor(accept.hwm);
    let mut written_rx = spool.subscribe();
    let mut end_sent = false;
    loop {
        // Send what the spool holds, checking for server events between chunks.
        loop {
            if let Ok(ev) = events.try_recv() {
                return handle_event(ev, end_sent);
            }
            written_rx.borrow_and_update();
            let Some(chunk) = spool.next_chunk(&mut cursor).map_err(|e| StreamError::Fatal(format!("spool read failed: {e}")))? else {
                break;
            };
            let mut header = BytesMut::with_capacity(22);
            write_data_header(chunk.offset, chunk.timestamp_us, chunk.stream, chunk.bytes.len(), &mut header);
            tx.send(&mut [header.freeze(), chunk.bytes]).await.map_err(retry)?;
        }
        let w = spool.written();
        let meta = *end.borrow();
        if !end_sent && w.closed && cursor.offset() == w.len
            && let Some(meta) = meta {
                let (length, checksum) = spool.checksum();
                let frame = Frame::End(End { exit_code: meta.exit_code, reason: meta.reason, duration_ms: meta.duration_ms, length, checksum });
                tx.send(&mut [frame.to_bytes()]).await.map_err(retry)?;
                tx.finish();
                end_sent = true;
            }
        tokio::select! {
            ev = events.recv() => match ev {
                Some(ev) => return handle_event(ev, end_sent),
                None => return Err(StreamError::Retry("reply reader stopped".into())),
            },
            _ = written_rx.changed(), if !end_sent => {}
            _ = end.changed(), if !end_sent => {}
        }
    }
}

fn handle_event(ev: Event, end_sent: bool) -> Result<(), StreamError> {
    match ev {
        Event::End if end_sent => Ok(()),
        Event::End => Err(StreamError::Fatal("server confirmed END that this agent did not send".into())),
        Event::Error(e) => Err(classify(e)),
        Event::Closed(msg) => Err(StreamError::Retry(msg)),
    }
}

fn classify(e: tailrace_protocol::ErrorFrame) -> StreamError {
    match e.kind {
        ErrorKind::Gap | ErrorKind::Unavailable => StreamError::Retry(format!("server: {}", e.message)),
        _ => StreamError::Fatal(format!("server refused the step ({:?}): {}", e.kind, e.message)),
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn read_frame<R: AsyncRead + Unpin + ?Sized>(
    reader: &mut R,
    buf: &mut BytesMut,
    decoder: &Decoder,
) -> Result<Option<Frame>, String> {
    loop {
        if let Some(f) = decoder.decode(buf).map_err(|e| format!("bad frame from server: {e}"))? {
            return Ok(Some(f));
        }
        let n = reader.read_buf(buf).await.map_err(|e| format!("read failed: {e}"))?;
        if n == 0 {
            return if buf.is_empty() { Ok(None) } else { Err("server closed the stream inside a frame".into()) };
        }
    }
}

