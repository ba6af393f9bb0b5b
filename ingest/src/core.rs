//! The ingest core: one step's stream of frames in, durable acks out, whatever the transport.
//!
//! Per stream: OPEN (token checked, step opened) → ACCEPT with the durable hwm → DATA frames
//! appended under the offset rule → END verified against length and checksum → END echoed back.
//! An acker task runs beside the reader and acknowledges bytes once the live tier made them
//! durable, so fsyncs are group-committed over many chunks while reading goes on.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tailrace_protocol::secret::{DigestSet, SecretDigest};
use tailrace_protocol::token::{Claims, Keyring};
use tailrace_protocol::{
    Accept, Data, Decoder, End, ErrorFrame, ErrorKind, Frame, FrameError, Open,
};
use tailrace_storage::meta::now_ms;
use tailrace_storage::{AppendOutcome, Archive, AuditLog, LiveError, LiveTier, MetaStore, StepEnd, StepKey};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::metrics::IngestMetrics;
use crate::mask::Masked;
use crate::quota::{StreamPermit, TokenQuotas};

/// Per-stream state threaded through a stream's phases.
struct StreamCtx<'a> {
    permit: &'a StreamPermit<'a>,
    /// The job's secret digests, when it registered any.
    masking: Option<&'a DigestSet>,
}

/// Limits that bound what one stream may cost.
#[derive(Debug, Clone)]
pub struct IngestLimits {
    /// Largest frame payload accepted; a larger frame closes the stream with `too_large`.
    /// Memory per stream is about one such frame plus the read buffer's slack.
    pub max_frame: usize,
    /// How long a new stream may take to send OPEN.
    pub open_timeout: Duration,
    /// Streams one token may have open at once; 0: no limit.
    pub steps_per_token: u32,
    /// Bytes per second one token may send over all its streams; 0: no limit.
    pub bytes_per_sec_per_token: u64,
}

impl Default for IngestLimits {
    fn default() -> Self {
        Self {
            max_frame: tailrace_protocol::DEFAULT_MAX_FRAME,
            open_timeout: Duration::from_secs(10),
            steps_per_token: 256,
            bytes_per_sec_per_token: 0,
        }
    }
}

/// Everything ingest needs: where bytes go, who may write, and counters.
pub struct IngestCore {
    pub live: Arc<dyn LiveTier>,
    pub meta: Arc<dyn MetaStore>,
    /// Token keys and revoked token ids, shared with the HTTP API.
    pub keys: Arc<Keyring>,
    pub limits: IngestLimits,
    pub metrics: IngestMetrics,
    /// The archiver, when there is one.
    pub archiving: Option<Archiving>,
    /// Where failed authentication is recorded.
    pub audit: Arc<AuditLog>,
    /// Streams and bytes of each token streaming now.
    pub tokens: TokenQuotas,
}

/// How ingest works with the archiver.
pub struct Archiving {
    /// Told about every verified step, and about a running step each time its durable bytes
    /// grow by the archive's `live_bytes`, so it is archived at once. When the queue is full the
    /// archiver's periodic sweep picks the step up instead. `None` on a node that does not
    /// archive (another node's sweep finds the step).
    pub queue: Option<mpsc::Sender<StepKey>>,
    /// Hashes a step whose live tier lost the hash of its archived prefix in a restart.
    pub archive: Arc<Archive>,
}

/// Outgoing encoded frames of one stream; bounded, so a peer that does not read its acks stalls
/// only its own stream.
pub type FrameSink = mpsc::Sender<Bytes>;

/// How a stream ended, for logs.
enum Outcome {
    Verified,
    Disconnected,
    Refused(ErrorKind, String),
}

fn now_secs() -> u64 {
    now_ms() / 1000
}

impl IngestCore {
    /// Serves one step's stream until it is verified, refused or the peer goes away.
    ///
    /// Cancel-safe: dropping the future leaves the step consistent — bytes appended so far stay
    /// (they are at or below the hwm the next OPEN reports) and the agent resends the rest.
    pub async fn serve_stream<R: AsyncRead + Unpin>(self: &Arc<Self>, mut reader: R, out: FrameSink, peer: &str) {
        let decoder = Decoder::new(self.limits.max_frame);
        let mut buf = BytesMut::with_capacity(64 * 1024);
        let first = tokio::time::timeout(self.limits.open_timeout, read_frame(&mut reader, &mut buf, &decoder)).await;
        let open = match first {
            Ok(Ok(Some(Frame::Open(open)))) => open,
            Ok(Ok(Some(other))) => {
                return self.refuse(&out, ErrorKind::Protocol, format!("first frame must be OPEN, got {}", frame_name(&other)), None, peer).await;
            }
            Ok(Ok(None)) => return,
            Ok(Err(e)) => return self.refuse_frame_error(&out, e, peer).await,
            Err(_) => {
                return self.refuse(&out, ErrorKind::Protocol, "no OPEN frame within the open timeout".into(), None, peer).await;
            }
        };
        let key = StepKey::new(open.job.clone(), open.step.clone());
        let (claims, secrets) = match self.authorize(&open).await {
            Ok(authorized) => authorized,
            Err(msg) => {
                IngestMetrics::inc(&self.metrics.errors_unauthorized);
                self.audit.record("auth_failed", None, serde_json::json!({"via": "ingest", "job": open.job.as_str(), "step": open.step.as_str(), "reason": msg, "peer": peer}));
                return self.refuse(&out, ErrorKind::Unauthorized, msg, None, peer).await;
            }
        };
        let permit = match self.tokens.open(&claims.id, self.limits.steps_per_token) {
            Ok(p) => p,
            Err(n) => {
                IngestMetrics::inc(&self.metrics.errors_quota);
                let msg = format!("this token already streams {n} steps, its limit (ingest_steps_per_token); retry when one ends");
                return self.refuse(&out, ErrorKind::Unavailable, msg, None, peer).await;
            }
        };
        IngestMetrics::inc(&self.metrics.streams_opened);
        self.metrics.streams_active.fetch_add(1, Relaxed);
        let masking = match DigestSet::new(&secrets) {
            Ok(set) if !set.is_empty() => Some(set),
            Ok(_) => None,
            Err(e) => {
                // Validated when the job was created; a bad record must not stop the output.
                warn!(step = %key, error = %e, "job's secret digests are unusable; output is not masked at ingest");
                None
            }
        };
        let stream = StreamCtx { permit: &permit, masking: masking.as_ref() };
        let outcome = self.run_open_stream(&key, &open.name, reader, buf, &decoder, out.clone(), &stream).await;
        drop(permit);
        self.metrics.streams_active.fetch_sub(1, Relaxed);
        match outcome {
            Ok(Outcome::Verified) => info!(step = %key, peer, "step verified"),
            Ok(Outcome::Disconnected) => debug!(step = %key, peer, "stream closed by peer"),
            Ok(Outcome::Refused(kind, msg)) => self.refuse(&out, kind, msg, None, peer).await,
            Err(e) => {
                IngestMetrics::inc(&self.metrics.errors_storage);
                warn!(step = %key, peer, error = %e, "live tier failed; agent will retry");
                self.refuse(&out, ErrorKind::Unavailable, format!("server could not store output: {e}; retry later"), None, peer).await;
            }
        }
    }

    /// The caller's claims and the job's secret digests.
    async fn authorize(&self, open: &Open) -> Result<(Claims, Vec<SecretDigest>), String> {
        let claims = self.keys.verify(&open.token, now_secs()).map_err(|e| e.to_string())?;
        if !claims.can_write_job(open.job.as_str()) {
            return Err(format!("token does not allow writing job {}", open.job));
        }
        match self.meta.job(&open.job).await {
            Ok(Some(job)) => Ok((claims, job.secrets)),
            Ok(None) => Err(format!("job {} does not exist", open.job)),
            Err(e) => Err(format!("could not look up job {}: {e}", open.job)),
        }
    }

    #[allow(clippy::too_many_arguments)] // one stream's parts, threaded through its phases
    async fn run_open_stream<R: AsyncRead + Unpin>(
        self: &Arc<Self>,
        key: &StepKey,
        name: &str,
        mut reader: R,
        mut buf: BytesMut,
        decoder: &Decoder,
        out: FrameSink,
        stream: &StreamCtx<'_>,
    ) -> Result<Outcome, LiveError> {
        let step = match self.meta.open_step(&key.job, &key.step, name).await {
            Ok(step) => step,
            Err(e) => return Ok(Outcome::Refused(ErrorKind::Unavailable, format!("could not record step: {e}"))),
        };
        if step.archived_at_ms.is_some() || step.expired_at_ms.is_some() {
            // The live tier released this step: answer from the record, never recreate it there.
            return self.serve_released_step(key, &step, &mut reader, &mut buf, decoder, &out).await;
        }
        let progress = self.live.open(key).await?;
        let accept = Frame::Accept(Accept { hwm: progress.durable, ended: progress.end.is_some() });
        if out.send(accept.to_bytes()).await.is_err() {
            return Ok(Outcome::Disconnected);
        }
        let (written_tx, written_rx) = watch::channel(progress.durable);
        let acker = tokio::spawn(ack_loop(self.clone(), key.clone(), written_rx, progress.durable, out.clone()));
        let result = self.read_loop(key, &mut reader, &mut buf, decoder, &out, &written_tx, stream).await;
        drop(written_tx);
        // The acker sends the last ack for what was written before it stops; a verified END
        // comes after it, so the agent sees its final ack first.
        let _ = acker.await;
        match result {
            Ok(Some(end)) => self.finish(key, end, &out).await,
            Ok(None) => Ok(Outcome::Disconnected),
            Err(outcome) => Ok(outcome),
        }
    }

    /// A reconnecting agent of a step that already ended and left the live tier (its END echo
    /// was lost): ACCEPT with the verified length, confirm a matching END, refuse anything else.
    async fn serve_released_step<R: AsyncRead + Unpin>(
        &self,
        key: &StepKey,
        step: &tailrace_storage::Step,
        reader: &mut R,
        buf: &mut BytesMut,
        decoder: &Decoder,
        out: &FrameSink,
    ) -> Result<Outcome, LiveError> {
        let (Some(length), Some(_)) = (step.length, step.end.as_ref()) else {
            return Ok(Outcome::Refused(ErrorKind::Protocol, format!("step {key} is archived but has no recorded end")));
        };
        if out.send(Frame::Accept(Accept { hwm: length, ended: true }).to_bytes()).await.is_err() {
            return Ok(Outcome::Disconnected);
        }
        loop {
            match read_frame(reader, buf, decoder).await {
                Ok(Some(Frame::End(end))) => return Ok(confirm_recorded_end(key, step, end, out).await),
                // A resend of bytes the step already holds is harmless; anything past it is not.
                Ok(Some(Frame::Data(d))) if d.offset.saturating_add(d.bytes.len() as u64) <= length => continue,
                Ok(Some(Frame::Data(_))) => {
                    return Ok(Outcome::Refused(ErrorKind::Conflict, format!("step {key} already ended at {length} bytes; no more output is accepted")));
                }
                Ok(Some(other)) => {
                    return Ok(Outcome::Refused(ErrorKind::Protocol, format!("unexpected {} frame from agent", frame_name(&other))));
                }
                Ok(None) | Err(ReadError::Io(_)) => return Ok(Outcome::Disconnected),
                Err(ReadError::Frame(e)) => return Ok(frame_error_outcome(e)),
            }
        }
    }

    /// Reads DATA until END (returned), EOF (`None`) or a refusal.
    #[allow(clippy::too_many_arguments)] // one stream's parts, threaded through its phases
    async fn read_loop<R: AsyncRead + Unpin>(
        &self,
        key: &StepKey,
        reader: &mut R,
        buf: &mut BytesMut,
        decoder: &Decoder,
        out: &FrameSink,
        written: &watch::Sender<u64>,
        stream: &StreamCtx<'_>,
    ) -> Result<Option<End>, Outcome> {
        let mut gap_reported = false;
        // The last bytes this stream stored (for secrets split across chunks), ending at `.1`.
        let mut tail: (Vec<u8>, u64) = (Vec::new(), u64::MAX);
        // A frame read while coalescing that belongs to the next turn.
        let mut pending: Option<Result<Option<Frame>, ReadError>> = None;
        loop {
            let next = match pending.take() {
                Some(r) => r,
                None => read_frame(reader, buf, decoder).await,
            };
            let frame = match next {
                Ok(Some(f)) => f,
                Ok(None) => return Ok(None),
                Err(ReadError::Io(e)) => {
                    debug!(step = %key, error = %e, "stream read failed");
                    return Ok(None);
                }
                Err(ReadError::Frame(e)) => {
                    IngestMetrics::inc(&self.metrics.errors_bad_frame);
                    return Err(frame_error_outcome(e));
                }
            };
            match frame {
                Frame::Data(Data { offset, bytes, timestamp_us, .. }) => {
                    IngestMetrics::inc(&self.metrics.data_frames);
                    let (bytes, next) = coalesce(reader, buf, decoder, offset, timestamp_us, bytes, &self.metrics).await;
                    pending = next;
                    let len = bytes.len() as u64;
                    let pause = self.tokens.charge(stream.permit, len, self.limits.bytes_per_sec_per_token, std::time::Instant::now());
                    if !pause.is_zero() {
                        self.metrics.throttled_us.fetch_add(pause.as_micros() as u64, Relaxed);
                        tokio::time::sleep(pause).await;
                    }
                    let before = *written.borrow();
                    let masked = match stream.masking {
                        Some(set) => match self.mask(set, key, offset, &bytes, &mut tail).await {
                            Ok(m) => m,
                            Err(e) => {
                                IngestMetrics::inc(&self.metrics.errors_storage);
                                return Err(Outcome::Refused(ErrorKind::Unavailable, format!("server could not mask output: {e}; retry later")));
                            }
                        },
                        None => Masked::default(),
                    };
                    if masked.stored.is_some() {
                        IngestMetrics::inc(&self.metrics.masked_chunks);
                    }
                    let started = std::time::Instant::now();
                    let appended = self.live.append_stored(key, offset, timestamp_us, bytes, masked.stored).await;
                    self.metrics.append_seconds.observe(started.elapsed());
                    if let (Ok(AppendOutcome::Written { .. }), Some((at, b))) = (&appended, masked.before) {
                        // The first part of a secret split across chunks, stored with the chunk before.
                        if let Err(e) = self.live.overwrite(key, at, Bytes::from(b)).await {
                            warn!(step = %key, error = %e, "could not mask the start of a secret split across chunks");
                        }
                    }
                    match appended {
                        Ok(AppendOutcome::Written { hwm }) => {
                            gap_reported = false;
                            let new = hwm.saturating_sub(before.max(offset));
                            self.metrics.bytes_written.fetch_add(new.min(len), Relaxed);
                            self.metrics.bytes_resent.fetch_add(len - new.min(len), Relaxed);
                            written.send_if_modified(|w| std::mem::replace(w, (*w).max(hwm)) < hwm);
                        }
                        Ok(AppendOutcome::Gap { hwm }) => {
                            // Frames after a gap are gaps too until the agent rewinds: say it once.
                            if !gap_reported {
                                gap_reported = true;
                                IngestMetrics::inc(&self.metrics.errors_gap);
                                let msg = format!("chunk at offset {offset} leaves a gap: server holds {hwm} bytes; resend from {hwm}");
                                let frame = Frame::Error(ErrorFrame { kind: ErrorKind::Gap, message: msg, hwm: Some(hwm) });
                                if out.send(frame.to_bytes()).await.is_err() {
                                    return Ok(None);
                                }
                            }
                        }
                        Ok(AppendOutcome::Ended { hwm }) if offset + len <= hwm => {
                            // A resend of bytes the step ended with (another stream of the
                            // step ended it first): nothing new, so nothing wrong.
                            self.metrics.bytes_resent.fetch_add(len, Relaxed);
                        }
                        Ok(AppendOutcome::Ended { hwm }) => {
                            return Err(Outcome::Refused(
                                ErrorKind::Conflict,
                                format!("step {key} already ended at {hwm} bytes; no more output is accepted"),
                            ));
                        }
                        Err(e) => {
                            IngestMetrics::inc(&self.metrics.errors_storage);
                            return Err(Outcome::Refused(ErrorKind::Unavailable, format!("server could not store output: {e}; retry later")));
                        }
                    }
                }
                Frame::End(end) => return Ok(Some(end)),
                other => {
                    return Err(Outcome::Refused(ErrorKind::Protocol, format!("unexpected {} frame from agent", frame_name(&other))));
                }
            }
        }
    }

    /// What to store for a DATA chunk of a job with secret digests; `tail` carries the last
    /// bytes this stream stored, so the look-back costs no read while the stream is in order.
    async fn mask(&self, set: &DigestSet, key: &StepKey, offset: u64, bytes: &Bytes, tail: &mut (Vec<u8>, u64)) -> Result<Masked, LiveError> {
        let look = (set.longest() - 1).min(offset as usize);
        let before: Vec<u8> = if tail.1 == offset && tail.0.len() >= look {
            tail.0[tail.0.len() - look..].to_vec()
        } else {
            // A reconnect or a resend: what the live tier holds durably before `offset`.
            match self.live.read(key, offset - look as u64, look).await {
                Ok(b) => b.to_vec(),
                Err(LiveError::Released { .. } | LiveError::NotFound(_)) => Vec::new(),
                Err(e) => return Err(e),
            }
        };
        let m = crate::mask::mask_chunk(set, &before, offset, bytes);
        // What is stored now: `before` (as rewritten, if a split secret reached into it), then the chunk.
        let mut next = m.before.as_ref().map_or(before, |(_, b)| b.clone());
        next.extend_from_slice(m.stored.as_deref().unwrap_or(bytes));
        let keep = next.len().min(set.longest());
        *tail = (next.split_off(next.len() - keep), offset + bytes.len() as u64);
        Ok(m)
    }

    /// Verifies END against what is held, records the end, and echoes END to the agent.
    async fn finish(&self, key: &StepKey, end: End, out: &FrameSink) -> Result<Outcome, LiveError> {
        let (len, checksum) = match self.live.checksum(key).await {
            Ok(c) => c,
            // Archived and released since this stream opened (a resent END): check the record.
            Err(LiveError::NotFound(_)) => {
                return Ok(match self.meta.step(&key.job, &key.step).await {
                    Ok(Some(step)) => confirm_recorded_end(key, &step, end, out).await,
                    Ok(None) => Outcome::Refused(ErrorKind::Protocol, format!("step {key} is not recorded")),
                    Err(e) => Outcome::Refused(ErrorKind::Unavailable, format!("could not look up step {key}: {e}; retry")),
                });
            }
            // A restart lost the hash of the prefix already archived: hash it from the archive.
            Err(released @ LiveError::Released { .. }) => {
                let Some(a) = &self.archiving else { return Err(released) };
                let len = self.live.sync(key).await?;
                a.archive.stream_checksum(key, len).await.map_err(|e| LiveError::Io {
                    what: format!("archived prefix of {key}"),
                    source: std::io::Error::other(e.to_string()),
                })?
            }
            // Masked at ingest, then a restart: only the length can be checked.
            Err(LiveError::Unverifiable { len, .. }) => {
                warn!(step = %key, "step was masked at ingest and the server restarted since; END verified by length only");
                (len, end.checksum.clone())
            }
            Err(e) => return Err(e),
        };
        if end.length != len || end.checksum != checksum {
            IngestMetrics::inc(&self.metrics.errors_mismatch);
            let msg = format!(
                "END does not match: agent sent {} bytes with checksum {}, server holds {len} bytes with checksum {checksum}",
                end.length, end.checksum
            );
            let frame = Frame::Error(ErrorFrame { kind: ErrorKind::Mismatch, message: msg, hwm: Some(len) });
            let _ = out.send(frame.to_bytes()).await;
            return Ok(Outcome::Disconnected);
        }
        self.live.sync(key).await?;
        let step_end = StepEnd {
            status: StepEnd::status_for(end.reason, end.exit_code),
            reason: end.reason,
            exit_code: end.exit_code,
            length: len,
            checksum,
            duration_ms: end.duration_ms,
            ended_at_ms: now_ms(),
        };
        let recorded = match self.live.finish(key, step_end).await {
            Ok(r) => r,
            Err(LiveError::Conflict { .. }) => {
                return Ok(Outcome::Refused(ErrorKind::Conflict, format!("step {key} already ended with other content")));
            }
            Err(e) => return Err(e),
        };
        if let Err(e) = self.meta.finish_step(&key.job, &key.step, &recorded).await {
            // The live tier holds the end durably; the agent's retry of END records it again.
            return Ok(Outcome::Refused(ErrorKind::Unavailable, format!("could not record step end: {e}; retry")));
        }
        IngestMetrics::inc(&self.metrics.steps_verified);
        if let Some(q) = self.archiving.as_ref().and_then(|a| a.queue.as_ref()) {
            let _ = q.try_send(key.clone());
        }
        let _ = out.send(Frame::End(end).to_bytes()).await;
        Ok(Outcome::Verified)
    }

    async fn refuse_frame_error(&self, out: &FrameSink, e: ReadError, peer: &str) {
        match e {
            ReadError::Io(_) => {}
            ReadError::Frame(fe) => {
                IngestMetrics::inc(&self.metrics.errors_bad_frame);
                if let Outcome::Refused(kind, msg) = frame_error_outcome(fe) {
                    self.refuse(out, kind, msg, None, peer).await;
                }
            }
        }
    }

    async fn refuse(&self, out: &FrameSink, kind: ErrorKind, message: String, hwm: Option<u64>, peer: &str) {
        warn!(peer, ?kind, %message, "stream refused");
        let _ = out.send(Frame::Error(ErrorFrame { kind, message, hwm }).to_bytes()).await;
    }
}

/// Confirms a resent END against a step's recorded end (its live bytes are gone): echoes END
/// when length and checksum match, refuses it as a conflict otherwise.
async fn confirm_recorded_end(key: &StepKey, step: &tailrace_storage::Step, end: End, out: &FrameSink) -> Outcome {
    match (step.length, step.end.as_ref()) {
        (Some(length), Some(f)) if end.length == length && end.checksum == f.checksum => {
            let _ = out.send(Frame::End(end).to_bytes()).await;
            Outcome::Verified
        }
        (length, f) => Outcome::Refused(
            ErrorKind::Conflict,
            format!(
                "step {key} already ended with other content ({} bytes, checksum {})",
                length.unwrap_or(0),
                f.map_or("unknown", |f| f.checksum.as_str())
            ),
        ),
    }
}

/// Acknowledges durable bytes as the reader writes them; ends (after a last sync) when the
/// reader drops its sender.
async fn ack_loop(core: Arc<IngestCore>, key: StepKey, mut written: watch::Receiver<u64>, mut acked: u64, out: FrameSink) {
    // Tell the archiver each time the durable bytes cross a multiple of its `live_bytes`.
    let every = core.archiving.as_ref().map(|a| a.archive.live_bytes()).filter(|&e| e > 0);
    let next_due = |acked: u64| every.map_or(u64::MAX, |e| (acked / e + 1) * e);
    let mut archive_due = next_due(acked);
    loop {
        let closed = written.changed().await.is_err();
        let target = *written.borrow_and_update();
        if target > acked {
            let started = std::time::Instant::now();
            let synced = if core.live.durable_on_append() { Ok(target) } else { core.live.sync(&key).await };
            core.metrics.sync_seconds.observe(started.elapsed());
            match synced {
                Ok(durable) if durable > acked => {
                    acked = durable;
                    if acked >= archive_due {
                        if let Some(q) = core.archiving.as_ref().and_then(|a| a.queue.as_ref()) {
                            let _ = q.try_send(key.clone());
                        }
                        archive_due = next_due(acked);
                    }
                    IngestMetrics::inc(&core.metrics.acks_sent);
                    if out.send(Frame::Ack { durable }.to_bytes()).await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    IngestMetrics::inc(&core.metrics.errors_storage);
                    warn!(step = %key, error = %e, "sync failed; bytes stay unacknowledged");
                    return;
                }
            }
        }
        if closed {
            return;
        }
    }
}

enum ReadError {
    Io(std::io::Error),
    Frame(FrameError),
}

/// Reads until one frame is complete. `Ok(None)` is a clean end of stream between frames.
/// Most bytes one append takes: DATA frames already received that continue a chunk are
/// appended with it, so a shared live tier (Redis) costs one round trip per batch, not per frame.
/// As large as an HTTP/2 or QUIC stream's window (2 MiB): what the agent could send while the
/// last append was out is one append.
const MAX_BATCH: usize = 2 << 20;

/// Joins to `first` (at `offset`) the DATA frames that follow it contiguously and are already
/// here — in the buffer, or readable without waiting — up to [`MAX_BATCH`] bytes, and less than
/// the time-index gap apart (so no time point is lost). Returns the batch and, if one was read,
/// the next frame (or read error) for the caller's next turn. A lone frame is not copied.
async fn coalesce<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
    decoder: &Decoder,
    offset: u64,
    timestamp_us: u64,
    first: Bytes,
    metrics: &IngestMetrics,
) -> (Bytes, Option<Result<Option<Frame>, ReadError>>) {
    use futures_util::FutureExt as _;
    let mut batch: Option<BytesMut> = None;
    let mut len = first.len();
    let next = loop {
        if len >= MAX_BATCH {
            break None;
        }
        match decoder.decode(buf) {
            Ok(Some(Frame::Data(d)))
                if d.offset == offset + len as u64
                    && d.timestamp_us.saturating_sub(timestamp_us) < tailrace_storage::live::TIME_INDEX_GAP_US
                    && len + d.bytes.len() <= MAX_BATCH =>
            {
                IngestMetrics::inc(&metrics.data_frames);
                let b = batch.get_or_insert_with(|| {
                    let mut b = BytesMut::with_capacity(MAX_BATCH);
                    b.extend_from_slice(&first);
                    b
                });
                b.extend_from_slice(&d.bytes);
                len += d.bytes.len();
            }
            Ok(Some(other)) => break Some(Ok(Some(other))),
            Err(e) => break Some(Err(ReadError::Frame(e))),
            Ok(None) => {
                if buf.capacity() - buf.len() < 16 * 1024 {
                    buf.reserve(64 * 1024);
                }
                // Only what is already readable: never wait for the agent here.
                match reader.read_buf(buf).now_or_never() {
                    Some(Ok(n)) if n > 0 => continue,
                    Some(Err(e)) => break Some(Err(ReadError::Io(e))),
                    _ => break None,
                }
            }
        }
    };
    (batch.map_or(first, BytesMut::freeze), next)
}

async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
    decoder: &Decoder,
) -> Result<Option<Frame>, ReadError> {
    loop {
        if let Some(frame) = decoder.decode(buf).map_err(ReadError::Frame)? {
            return Ok(Some(frame));
        }
        if buf.capacity() - buf.len() < 16 * 1024 {
            buf.reserve(64 * 1024);
        }
        let n = reader.read_buf(buf).await.map_err(ReadError::Io)?;
        if n == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(ReadError::Io(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "stream ended inside a frame")))
            };
        }
    }
}

fn frame_error_outcome(e: FrameError) -> Outcome {
    let kind = match e {
        FrameError::TooLarge { .. } => ErrorKind::TooLarge,
        _ => ErrorKind::BadFrame,
    };
    Outcome::Refused(kind, e.to_string())
}

fn frame_name(f: &Frame) -> &'static str {
    match f {
        Frame::Open(_) => "OPEN",
        Frame::Accept(_) => "ACCEPT",
        Frame::Data(_) => "DATA",
        Frame::Ack { .. } => "ACK",
        Frame::End(_) => "END",
        Frame::Error(_) => "ERROR",
    }
}

#[cfg(test)]
mod tests;
