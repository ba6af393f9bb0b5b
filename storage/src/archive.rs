//! The archive: moves steps' output from the live tier into an object store as seekable zstd
//! segments — running steps incrementally, by size and age, ended steps to the end — records
//! their manifest in the metadata store, then releases the live bytes; and reads any byte range
//! back by fetching and decompressing only the frames it covers.
//!
//! Crash safety: object keys are deterministic (kind, start date, job, step, sequence), so an
//! archiver that died mid-way simply rewrites the same objects; new segments and the "archived"
//! mark are one metadata transaction; live bytes are released only after it. A restart re-queues
//! every step that ended but is not archived, and releases live bytes of steps that are already
//! archived.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use parking_lot::Mutex;
use tailrace_protocol::StreamHasher;
use tokio::sync::{mpsc, Semaphore};
use tracing::{info, warn};

use crate::live::{LiveError, LiveTier, StepKey, Stored};
use crate::meta::{now_ms, MetaError, MetaStore, Segment, Step};
use crate::time::civil_date;
use crate::segment::{compress_frame, count_newlines, covering, decompress_frames, frame_aligned_end, seek_table, FrameEntry, SegmentError, FRAME_INPUT};

/// Bytes read from the live tier at once while archiving (a whole number of frames).
const READ_BLOCK: usize = 16 * FRAME_INPUT;
/// Frames of one segment compressing at once: a single busy step can use the whole pool.
const FRAMES_IN_FLIGHT: usize = 4;

/// Live bytes read ahead of the frames cut from them, in the order they were read.
#[derive(Default)]
struct ReadAhead {
    pieces: VecDeque<Stored>,
    len: usize,
}

impl ReadAhead {
    fn push(&mut self, piece: Stored) {
        self.len += piece.raw.len();
        self.pieces.push_back(piece);
    }

    /// The next frame, of at most `max` bytes: a piece the live tier stored as a frame, with
    /// that frame, when it fits; else the bytes up to the next such piece, to be compressed.
    fn next_frame(&mut self, max: usize) -> (Bytes, Option<Bytes>) {
        if self.pieces.front().is_some_and(|p| p.frame.is_some() && p.raw.len() <= max)
            && let Some(Stored { raw, frame }) = self.pieces.pop_front()
        {
            self.len -= raw.len();
            return (raw, frame);
        }
        let mut n = 0;
        for (i, p) in self.pieces.iter().enumerate() {
            if (i > 0 && p.frame.is_some()) || n >= max {
                break;
            }
            n += p.raw.len();
        }
        (self.take(n.min(max)), None)
    }

    /// The next `n` bytes (at most all held): a slice of the first piece when it holds them
    /// all, else one copy of the pieces they span. A piece cut keeps no frame.
    fn take(&mut self, n: usize) -> Bytes {
        let n = n.min(self.len);
        self.len -= n;
        let Some(first) = self.pieces.front_mut() else { return Bytes::new() };
        if first.raw.len() >= n {
            first.frame = None;
            let b = first.raw.split_to(n);
            if first.raw.is_empty() {
                self.pieces.pop_front();
            }
            return b;
        }
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let Some(piece) = self.pieces.front_mut() else { break };
            let k = (n - out.len()).min(piece.raw.len());
            piece.frame = None;
            out.extend_from_slice(&piece.raw.split_to(k));
            if piece.raw.is_empty() {
                self.pieces.pop_front();
            }
        }
        Bytes::from(out)
    }
}

/// A frame of a segment being written: stored by the live tier as it is, or compressing.
enum Framing {
    Stored(Bytes, FrameEntry),
    Compressing(tokio::task::JoinHandle<Result<(Vec<u8>, FrameEntry), SegmentError>>),
}

/// `range` cut into segments of at most `bytes`, numbered from `seq`: (seq, start, length).
fn cuts(seq: u32, range: std::ops::Range<u64>, bytes: u64) -> impl Iterator<Item = (u32, u64, u64)> {
    let bytes = bytes.max(1);
    (range.start..range.end).step_by(bytes as usize).zip(seq..).map(move |(start, seq)| (seq, start, bytes.min(range.end - start)))
}

/// How long ago (µs, before `now_us`) the byte at `offset` arrived, by the time index: the last
/// point at or before it (every byte after a point arrived within `TIME_INDEX_GAP_US` of it).
fn oldest_waiting_age_us(times: &[(u64, u64)], offset: u64, now_us: u64) -> u64 {
    let i = times.partition_point(|&(off, _)| off <= offset);
    let at = if i == 0 { times.first().map_or(now_us, |t| t.1) } else { times[i - 1].1 };
    now_us.saturating_sub(at)
}

/// How segments are written.
#[derive(Debug, Clone)]
pub struct ArchiveConfig {
    /// zstd level of every frame.
    pub level: i32,
    /// Stream bytes per segment object at most; a larger step gets several segments.
    pub segment_bytes: u64,
    /// A running step is archived in segments of this many bytes as soon as that many wait in
    /// the live tier (which so holds about this much per running step).
    pub live_bytes: u64,
    /// A running step's waiting bytes are archived once the oldest is this old.
    pub live_age: Duration,
    /// Multipart upload part size (S3 needs at least 5 MiB). Memory per archiving step is about
    /// two parts plus one frame.
    pub part_bytes: usize,
    /// Frames compressed at once across all steps (the bounded compression pool).
    pub compress_threads: usize,
    /// Steps archived at once.
    pub concurrent_steps: usize,
    /// How often to look for steps that still need archiving (after failures or restarts).
    pub sweep_every: Duration,
    /// This node's name in archiving leases: with several archiver nodes, one archives a step
    /// at a time, and a dead node's lease expires for another to take over.
    pub node: String,
}

impl Default for ArchiveConfig {
    fn default() -> Self {
        Self {
            level: 1,
            segment_bytes: 256 * 1024 * 1024,
            live_bytes: 64 * 1024 * 1024,
            live_age: Duration::from_secs(600),
            part_bytes: 8 * 1024 * 1024,
            compress_threads: 2,
            concurrent_steps: 2,
            node: "local".into(),
            sweep_every: Duration::from_secs(10),
        }
    }
}

/// Why archiving or an archive read failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArchiveError {
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    #[error(transparent)]
    Live(#[from] LiveError),
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Segment(#[from] SegmentError),
    #[error("{0}")]
    State(String),
}

impl ArchiveError {
    /// The object is gone (expired or deleted).
    pub fn is_not_found(&self) -> bool {
        matches!(self, ArchiveError::Store(object_store::Error::NotFound { .. }))
    }
}

/// Counters of the archiver, rendered as `tailrace_archive_*`.
#[derive(Debug, Default)]
pub struct ArchiveMetrics {
    pub steps: AtomicU64,
    pub segments: AtomicU64,
    pub raw_bytes: AtomicU64,
    pub stored_bytes: AtomicU64,
    pub failures: AtomicU64,
    pub read_bytes: AtomicU64,
    pub fetched_bytes: AtomicU64,
    pub expired: AtomicU64,
    pub running_bytes: AtomicU64,
    pub lease_skips: AtomicU64,
    /// Frames written as the live tier stored them, not compressed again.
    pub frames_reused: AtomicU64,
    /// Ended steps not archived yet, as the last sweep found them (at most 256 are counted).
    pub backlog: AtomicU64,
    /// Expiry sweeps this node ran, and those that failed (to be retried next period).
    pub expiry_sweeps: AtomicU64,
    pub expiry_failures: AtomicU64,
    /// When this node's last expiry sweep succeeded (Unix ms; 0: not yet).
    pub expiry_last_success_ms: AtomicU64,
}

impl ArchiveMetrics {
    pub fn render(&self, out: &mut String) {
        for (name, help, v) in [
            ("tailrace_archive_steps_total", "Steps moved to the archive.", &self.steps),
            ("tailrace_archive_segments_total", "Segment objects uploaded.", &self.segments),
            ("tailrace_archive_raw_bytes_total", "Output bytes archived (before compression).", &self.raw_bytes),
            ("tailrace_archive_stored_bytes_total", "Bytes uploaded to the object store.", &self.stored_bytes),
            ("tailrace_archive_failures_total", "Archiving attempts that failed and will be retried.", &self.failures),
            ("tailrace_archive_read_bytes_total", "Output bytes served from the archive.", &self.read_bytes),
            ("tailrace_archive_fetched_bytes_total", "Compressed bytes fetched from the object store to serve reads.", &self.fetched_bytes),
            ("tailrace_archive_running_bytes_total", "Output bytes of running steps archived and released from the live tier before the step ended.", &self.running_bytes),
            ("tailrace_archive_frames_reused_total", "Segment frames written as the live tier stored them (large appends on Redis), not compressed again.", &self.frames_reused),
            ("tailrace_archive_lease_skips_total", "Steps due for archiving left to the node holding their lease.", &self.lease_skips),
            ("tailrace_archive_expired_steps_total", "Steps whose output retention deleted.", &self.expired),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}", v.load(Relaxed));
        }
        let _ = writeln!(
            out,
            "# HELP tailrace_archive_backlog_steps Ended steps still waiting to be archived, as the last sweep found them (counts up to 256).\n\
             # TYPE tailrace_archive_backlog_steps gauge\ntailrace_archive_backlog_steps {}",
            self.backlog.load(Relaxed)
        );
        let _ = writeln!(out, "# HELP tailrace_expiry_sweeps_total Expiry sweeps run by this node, by result.\n# TYPE tailrace_expiry_sweeps_total counter");
        let (sweeps, failures) = (self.expiry_sweeps.load(Relaxed), self.expiry_failures.load(Relaxed));
        let _ = writeln!(out, "tailrace_expiry_sweeps_total{{result=\"ok\"}} {}", sweeps.saturating_sub(failures));
        let _ = writeln!(out, "tailrace_expiry_sweeps_total{{result=\"failed\"}} {failures}");
        let _ = writeln!(
            out,
            "# HELP tailrace_expiry_last_success_timestamp_seconds When this node's last expiry sweep succeeded (0: none yet).\n\
             # TYPE tailrace_expiry_last_success_timestamp_seconds gauge\ntailrace_expiry_last_success_timestamp_seconds {}",
            self.expiry_last_success_ms.load(Relaxed) / 1000
        );
    }
}

/// The archive of one deployment.
pub struct Archive {
    store: Arc<dyn ObjectStore>,
    live: Arc<dyn LiveTier>,
    meta: Arc<dyn MetaStore>,
    cfg: ArchiveConfig,
    pool: Arc<Semaphore>,
    /// Steps being archived now, each with whether more work arrived meanwhile (run it again).
    in_flight: Mutex<HashMap<StepKey, bool>>,
    pub metrics: ArchiveMetrics,
}

/// How long an archiving lease lasts without renewal (a dead node's steps wait this long).
pub const LEASE: Duration = Duration::from_secs(60);

/// The object key of a step's segment: kind and the step's start date first, so lifecycle rules
/// can match by prefix. Deterministic, so a retried upload overwrites the same object.
pub fn segment_key(started_at_ms: u64, key: &StepKey, seq: u32) -> String {
    let (y, m, d) = civil_date(started_at_ms);
    format!("logs/{y:04}/{m:02}/{d:02}/{}/{}/{seq:06}.zst", key.job, key.step)
}

impl Archive {
    pub fn new(store: Arc<dyn ObjectStore>, live: Arc<dyn LiveTier>, meta: Arc<dyn MetaStore>, cfg: ArchiveConfig) -> Self {
        let pool = Arc::new(Semaphore::new(cfg.compress_threads.max(1)));
        Self { store, live, meta, cfg, pool, in_flight: Mutex::new(HashMap::new()), metrics: ArchiveMetrics::default() }
    }

    /// Stores an object of another kind (e.g. a raw test-result file under `test-results/`) in
    /// the archive's store.
    pub async fn put_object(&self, key: &str, bytes: Bytes) -> Result<(), ArchiveError> {
        self.store.put(&ObjectPath::from(key), bytes.into()).await?;
        Ok(())
    }

    /// The metadata store it records manifests in.
    pub fn meta(&self) -> &Arc<dyn MetaStore> {
        &self.meta
    }

    /// Bytes a running step may gather in the live tier before they are archived.
    pub fn live_bytes(&self) -> u64 {
        self.cfg.live_bytes
    }

    /// Archives what is due of one step (idempotent). An ended step: every byte not archived
    /// yet, then the step is marked archived and its live bytes released. A running step
    /// (incremental archiving): whole `live_bytes` segments once that many bytes wait, or every
    /// durable byte once the oldest waiting one is `live_age` old; each segment is released from
    /// the live tier once it is recorded.
    pub async fn archive_step(&self, key: &StepKey) -> Result<(), ArchiveError> {
        let step = self
            .meta
            .step(&key.job, &key.step)
            .await?
            .ok_or_else(|| ArchiveError::State(format!("step {key} is not in the metadata store")))?;
        if step.archived_at_ms.is_some() || step.expired_at_ms.is_some() {
            return Ok(self.live.release(key).await?);
        }
        let done = self.meta.segments(&key.job, &key.step).await?;
        let archived = done.last().map_or(0, |s| s.start + s.length);
        let seq = done.len() as u32;
        if step.end.is_some() {
            let len = step.length.unwrap_or(0);
            let times = self.live.time_index(key).await?;
            let mut segments = Vec::new();
            for (seq, start, len) in cuts(seq, archived..len, self.cfg.segment_bytes) {
                segments.push(self.write_segment(key, step.started_at_ms, seq, start, len, &times).await?);
            }
            self.meta.record_segments(&key.job, &key.step, &segments, true).await?;
            self.live.release(key).await?;
            self.metrics.steps.fetch_add(1, Relaxed);
            info!(step = %key, bytes = len, segments = seq as usize + segments.len(), "step archived");
            return Ok(());
        }
        let durable = self.live.subscribe(key).await?.borrow().durable;
        let waiting = durable.saturating_sub(archived);
        if waiting == 0 {
            return Ok(());
        }
        let times = self.live.time_index(key).await?;
        let upto = if waiting >= self.cfg.live_bytes {
            archived + waiting / self.cfg.live_bytes * self.cfg.live_bytes
        } else if oldest_waiting_age_us(&times, archived, now_ms() * 1000) >= self.cfg.live_age.as_micros() as u64 {
            durable
        } else {
            return Ok(());
        };
        // Each segment is recorded and released as soon as it is written: the live tier may be
        // holding the most it takes of the step (`live_hold_max_mib`), its appends waiting.
        for (seq, start, len) in cuts(seq, archived..upto, self.cfg.live_bytes) {
            let segment = self.write_segment(key, step.started_at_ms, seq, start, len, &times).await?;
            self.meta.record_segments(&key.job, &key.step, &[segment], false).await?;
            self.live.release_prefix(key, start + len).await?;
            self.metrics.running_bytes.fetch_add(len, Relaxed);
        }
        info!(step = %key, from = archived, to = upto, "running step's output archived and released from the live tier");
        Ok(())
    }

    /// The length and checksum of a step's first `len` bytes, read from the archive below its
    /// archived prefix and from the live tier above it — for a running step whose live tier lost
    /// the hash of a released prefix in a restart.
    pub async fn stream_checksum(&self, key: &StepKey, len: u64) -> Result<(u64, String), ArchiveError> {
        let segments = self.meta.segments(&key.job, &key.step).await?;
        let archived = segments.last().map_or(0, |s| s.start + s.length);
        let mut hasher = StreamHasher::new();
        let mut pos = 0u64;
        while pos < len {
            let max = (READ_BLOCK as u64).min(len - pos) as usize;
            let b = if pos < archived { self.read(&segments, pos, max).await? } else { self.live.read(key, pos, max).await? };
            if b.is_empty() {
                return Err(ArchiveError::State(format!("step {key} holds only {pos} of {len} bytes")));
            }
            hasher.update(&b);
            pos += b.len() as u64;
        }
        Ok((len, hasher.hex()))
    }

    async fn write_segment(
        &self,
        key: &StepKey,
        started_at_ms: u64,
        seq: u32,
        start: u64,
        len: u64,
        times: &[(u64, u64)],
    ) -> Result<Segment, ArchiveError> {
        let path = ObjectPath::from(segment_key(started_at_ms, key, seq));
        let upload = self.store.put_multipart(&path).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, self.cfg.part_bytes);
        let result = async {
            let mut frames = Vec::new();
            let mut frame_lines = Vec::new();
            let mut frame_times = Vec::new();
            let mut hasher = StreamHasher::new();
            let mut stored = 0u64;
            let mut pos = start;
            // Read the live tier in blocks of several frames: fewer, larger reads. Frames
            // compress while the next are read, several at once (in order); a frame the live
            // tier stored is written as it is.
            let mut ahead = ReadAhead::default();
            let mut compressing = VecDeque::new();
            while pos < start + len || !compressing.is_empty() {
                if pos < start + len && compressing.len() < FRAMES_IN_FLIGHT {
                    let want = (FRAME_INPUT as u64).min(start + len - pos) as usize;
                    self.fill(key, &mut ahead, pos, want, start + len).await?;
                    let (raw, frame) = ahead.next_frame(want);
                    hasher.update(&raw);
                    frame_lines.push(count_newlines(&raw) as u32);
                    // When the frame's first byte was read: the last time point at or before it.
                    let i = times.partition_point(|&(off, _)| off <= pos);
                    frame_times.push(if i == 0 { times.first().map_or(0, |t| t.1) } else { times[i - 1].1 });
                    pos += raw.len() as u64;
                    if let Some(frame) = frame {
                        self.metrics.frames_reused.fetch_add(1, Relaxed);
                        let entry = FrameEntry { compressed: frame.len() as u32, decompressed: raw.len() as u32 };
                        compressing.push_back(Framing::Stored(frame, entry));
                        continue;
                    }
                    let slot = self.pool.clone().acquire_owned().await.map_err(|e| ArchiveError::State(e.to_string()))?;
                    let level = self.cfg.level;
                    compressing.push_back(Framing::Compressing(tokio::task::spawn_blocking(move || {
                        let _slot = slot;
                        compress_frame(&raw, level)
                    })));
                    continue;
                }
                let (compressed, entry) = match compressing.pop_front() {
                    None => break,
                    Some(Framing::Stored(frame, entry)) => (frame, entry),
                    Some(Framing::Compressing(task)) => {
                        let (c, entry) = task.await.map_err(|e| ArchiveError::State(format!("compression task failed: {e}")))??;
                        (Bytes::from(c), entry)
                    }
                };
                writer.wait_for_capacity(2).await?;
                stored += compressed.len() as u64;
                writer.put(compressed);
                frames.push(entry);
            }
            let table = seek_table(&frames);
            stored += table.len() as u64;
            writer.put(Bytes::from(table));
            Ok::<_, ArchiveError>((frames, frame_lines, frame_times, hasher, stored))
        }
        .await;
        let (frames, frame_lines, frame_times, hasher, stored) = match result {
            Ok(r) => r,
            Err(e) => {
                let _ = writer.abort().await;
                return Err(e);
            }
        };
        writer.finish().await?;
        self.metrics.segments.fetch_add(1, Relaxed);
        self.metrics.raw_bytes.fetch_add(len, Relaxed);
        self.metrics.stored_bytes.fetch_add(stored, Relaxed);
        Ok(Segment { seq, start, length: len, key: path.to_string(), compressed: stored, checksum: hasher.hex(), frames, frame_lines, frame_times })
    }

    /// Exactly `len` live bytes at `offset`; `State` when the live tier holds fewer. One read
    /// that returns them all is passed on as it is, not copied.
    async fn read_live_exact(&self, key: &StepKey, offset: u64, len: usize) -> Result<Bytes, ArchiveError> {
        let mut ahead = ReadAhead::default();
        self.fill(key, &mut ahead, offset, len, offset + len as u64).await?;
        Ok(ahead.take(len))
    }

    /// Reads the live tier into `ahead`, which holds the bytes from `at` on, until it holds
    /// `want` bytes, in reads of at most [`READ_BLOCK`] that go no further than `end`; `State`
    /// when the live tier holds fewer.
    async fn fill(&self, key: &StepKey, ahead: &mut ReadAhead, at: u64, want: usize, end: u64) -> Result<(), ArchiveError> {
        while ahead.len < want {
            let from = at + ahead.len as u64;
            let pieces = self.live.read_stored(key, from, (READ_BLOCK as u64).min(end - from) as usize).await?;
            if pieces.iter().all(|p| p.raw.is_empty()) {
                return Err(ArchiveError::State(format!("live tier holds fewer bytes of {key} than its verified length")));
            }
            for p in pieces.into_iter().filter(|p| !p.raw.is_empty()) {
                ahead.push(p);
            }
        }
        Ok(())
    }

    /// Reads up to `max` bytes at `offset` from archived `segments`, never crossing a segment
    /// and, when the range spans frames, ending on a frame boundary (so a sequential reader
    /// decompresses each frame once); empty at or past the end.
    pub async fn read(&self, segments: &[Segment], offset: u64, max: usize) -> Result<Bytes, ArchiveError> {
        let Some(seg) = segments.iter().find(|s| s.start <= offset && offset < s.start + s.length) else {
            return Ok(Bytes::new());
        };
        let rel = offset - seg.start;
        let end = frame_aligned_end(&seg.frames, rel, (rel + max as u64).min(seg.length));
        let span = covering(&seg.frames, rel, end);
        let raw = self.store.get_range(&ObjectPath::from(seg.key.as_str()), span.object_range.clone()).await?;
        self.metrics.fetched_bytes.fetch_add(raw.len() as u64, Relaxed);
        let frames = span.frames;
        let plain = tokio::task::spawn_blocking(move || decompress_frames(&raw, &frames))
            .await
            .map_err(|e| ArchiveError::State(format!("decompression task failed: {e}")))??;
        let s = (rel - span.first_offset) as usize;
        let n = (end - rel) as usize;
        if plain.len() < s + n {
            return Err(ArchiveError::State(format!("segment {} decoded short", seg.key)));
        }
        self.metrics.read_bytes.fetch_add(n as u64, Relaxed);
        Ok(Bytes::from(plain).slice(s..s + n))
    }

    /// Deletes the output of every step that ended before `cutoff_ms`: its segment objects, its
    /// live bytes (if archiving never happened), then its manifest. With `dry_run`, only lists
    /// them. Returns the steps (and the bytes of output) expired.
    pub async fn expire(&self, cutoff_ms: u64, dry_run: bool) -> Result<Vec<(StepKey, u64)>, ArchiveError> {
        let mut done = Vec::new();
        loop {
            let batch = self.meta.expiry_candidates(cutoff_ms, 256).await?;
            if batch.is_empty() {
                return Ok(done);
            }
            let last_batch = batch.len() < 256;
            for (job, step) in batch {
                let key = StepKey::new(job, step);
                if self.in_flight.lock().contains_key(&key) {
                    // Being archived right now: the next sweep expires it.
                    continue;
                }
                let len = self.meta.step(&key.job, &key.step).await?.and_then(|s| s.length).unwrap_or(0);
                if !dry_run {
                    for seg in self.meta.segments(&key.job, &key.step).await? {
                        match self.store.delete(&ObjectPath::from(seg.key.as_str())).await {
                            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                            Err(e) => return Err(e.into()),
                        }
                    }
                    self.live.release(&key).await?;
                    self.meta.mark_expired(&key.job, &key.step).await?;
                    self.metrics.expired.fetch_add(1, Relaxed);
                }
                done.push((key, len));
            }
            if dry_run || last_batch {
                return Ok(done);
            }
        }
    }

    /// Deletes the objects of one kind (`prefix`, e.g. `test-results/`, keys `prefix/Y/M/D/…`)
    /// stored on a day before `cutoff_ms`; with `dry_run`, only lists them. Returns their keys.
    pub async fn expire_kind(&self, prefix: &str, cutoff_ms: u64, dry_run: bool) -> Result<Vec<String>, ArchiveError> {
        use futures_util::TryStreamExt as _;
        let cutoff_day = (cutoff_ms / 86_400_000) as i64;
        let listed: Vec<_> = self.store.list(Some(&ObjectPath::from(prefix))).map_ok(|m| m.location).try_collect().await?;
        let mut expired = Vec::new();
        for key in listed {
            let parts: Vec<&str> = key.as_ref().split('/').collect();
            let day = match parts.get(1..4) {
                Some([y, m, d]) => match (y.parse(), m.parse(), d.parse()) {
                    (Ok(y), Ok(m), Ok(d)) => crate::time::days_from_civil(y, m, d),
                    _ => continue,
                },
                _ => continue,
            };
            if day >= cutoff_day {
                continue;
            }
            if !dry_run {
                match self.store.delete(&key).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            expired.push(key.to_string());
        }
        Ok(expired)
    }

    /// Archives steps sent on `ended` (as they end, or as a running step's live bytes grow by
    /// `live_bytes`), and every `sweep_every` catches up on
    /// steps left behind by failures or restarts. Runs until `ended` closes.
    pub async fn run(self: Arc<Self>, mut ended: mpsc::Receiver<StepKey>) {
        let slots = Arc::new(Semaphore::new(self.cfg.concurrent_steps.max(1)));
        let mut sweep = tokio::time::interval(self.cfg.sweep_every);
        loop {
            let keys = tokio::select! {
                k = ended.recv() => match k { Some(k) => vec![k], None => return },
                _ = sweep.tick() => self.pending().await,
            };
            for key in keys {
                {
                    let mut in_flight = self.in_flight.lock();
                    if let Some(again) = in_flight.get_mut(&key) {
                        // Being archived: run once more when done (the step may have ended).
                        *again = true;
                        continue;
                    }
                    in_flight.insert(key.clone(), false);
                }
                let Ok(slot) = slots.clone().acquire_owned().await else { return };
                let this = self.clone();
                tokio::spawn(async move {
                    loop {
                        if let Err(e) = this.archive_leased(&key).await {
                            this.metrics.failures.fetch_add(1, Relaxed);
                            warn!(step = %key, error = %e, "archiving failed; output stays in the live tier and will be retried");
                        }
                        let mut in_flight = this.in_flight.lock();
                        if in_flight.get(&key) == Some(&true) {
                            in_flight.insert(key.clone(), false);
                            continue;
                        }
                        in_flight.remove(&key);
                        break;
                    }
                    drop(slot);
                });
            }
        }
    }

    /// Archives what is due of a step under its lease (see [`ArchiveConfig::node`]); a step
    /// another node holds is left to it.
    pub async fn archive_leased(&self, key: &StepKey) -> Result<(), ArchiveError> {
        if self.leased(key, self.archive_step(key)).await?.is_none() {
            self.metrics.lease_skips.fetch_add(1, Relaxed);
        }
        Ok(())
    }

    /// Runs `work` holding the step's lease `archive:<job>/<step>`, renewed while it runs;
    /// `None` (and `work` never started) if another node holds it.
    pub(crate) async fn leased<T>(&self, key: &StepKey, work: impl std::future::Future<Output = Result<T, ArchiveError>>) -> Result<Option<T>, ArchiveError> {
        let name = format!("archive:{key}");
        let node = self.cfg.node.as_str();
        let now = now_ms();
        if !self.meta.lease(&name, node, now + LEASE.as_millis() as u64, now).await? {
            return Ok(None);
        }
        tokio::pin!(work);
        let mut renew = tokio::time::interval(LEASE / 3);
        renew.tick().await;
        let result = loop {
            tokio::select! {
                r = &mut work => break r,
                _ = renew.tick() => {
                    let now = now_ms();
                    match self.meta.lease(&name, node, now + LEASE.as_millis() as u64, now).await {
                        Ok(true) => {}
                        // Archiving is idempotent (same keys, manifests replaced by seq): a
                        // second node doing the same work wastes effort, never output.
                        Ok(false) => warn!(step = %key, "step lease taken over by another node; finishing anyway"),
                        Err(e) => warn!(step = %key, error = %e, "could not renew the step lease"),
                    }
                }
            }
        };
        if let Err(e) = self.meta.unlease(&name, node).await {
            warn!(step = %key, error = %e, "could not give the step lease back; it expires by itself");
        }
        result.map(Some)
    }

    /// Steps that ended but are not archived; live steps already archived (a crash between
    /// recording the manifest and releasing the live bytes); and running steps, whose waiting
    /// bytes may have grown old.
    async fn pending(&self) -> Vec<StepKey> {
        let mut out: Vec<StepKey> = match self.meta.ended_unarchived(256).await {
            Ok(v) => {
                self.metrics.backlog.store(v.len() as u64, Relaxed);
                v.into_iter().map(|(j, s)| StepKey::new(j, s)).collect()
            }
            Err(e) => {
                warn!(error = %e, "could not list steps to archive");
                Vec::new()
            }
        };
        if let Ok(resident) = self.live.resident(4096).await {
            for key in resident {
                let step = self.meta.step(&key.job, &key.step).await;
                if let Ok(Some(Step { archived_at_ms, end, .. })) = step
                    && (archived_at_ms.is_some() || end.is_none())
                {
                    out.push(key);
                }
            }
        }
        out
    }
}

/// Deletes the temporary files that `object_store`'s local filesystem backend leaves when the
/// process dies mid-upload (`<object>#<n>`). Call it at start, before any upload runs; returns
/// how many were removed.
pub fn remove_local_upload_leftovers(dir: &std::path::Path) -> std::io::Result<usize> {
    let mut removed = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                stack.push(path);
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            let leftover = name.rsplit_once('#').is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
            if leftover {
                std::fs::remove_file(&path)?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}

mod scrub;
pub use scrub::Scrubbed;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_cut_from_the_pieces_read_ahead_in_order() {
        let mut ahead = ReadAhead::default();
        assert_eq!(ahead.take(5), Bytes::new());
        let first = Bytes::from_static(b"0123456789");
        ahead.push(raw(first.clone()));
        ahead.push(raw(Bytes::from_static(b"abcdef")));
        ahead.push(raw(Bytes::from_static(b"XYZ")));
        let head = ahead.take(4);
        assert_eq!(head, &b"0123"[..]);
        assert_eq!(head.as_ptr(), first.as_ptr(), "a frame inside one piece is not copied");
        assert_eq!(ahead.take(6), &b"456789"[..]);
        assert_eq!(ahead.take(8), &b"abcdefXY"[..], "across pieces");
        assert_eq!(ahead.len, 1);
        assert_eq!(ahead.take(100), &b"Z"[..], "at most what is held");
        assert_eq!((ahead.len, ahead.pieces.len()), (0, 0));
    }

    fn raw(b: Bytes) -> Stored {
        Stored { raw: b, frame: None }
    }

    fn framed(b: &'static [u8], frame: &'static [u8]) -> Stored {
        Stored { raw: Bytes::from_static(b), frame: Some(Bytes::from_static(frame)) }
    }

    #[test]
    fn stored_frames_are_reused_whole_and_never_cut() {
        let mut ahead = ReadAhead::default();
        for p in [raw(Bytes::from_static(b"ab")), raw(Bytes::from_static(b"cd")), framed(b"efgh", b"F1"), framed(b"ijkl", b"F2"), raw(Bytes::from_static(b"mn")), framed(b"opqrst", b"F3")] {
            ahead.push(p);
        }
        assert_eq!(ahead.next_frame(100), (Bytes::from_static(b"abcd"), None), "raw pieces up to the next stored frame");
        assert_eq!(ahead.next_frame(100), (Bytes::from_static(b"efgh"), Some(Bytes::from_static(b"F1"))));
        assert_eq!(ahead.next_frame(3), (Bytes::from_static(b"ijk"), None), "a frame longer than asked for is cut and compressed again");
        assert_eq!(ahead.next_frame(100), (Bytes::from_static(b"lmn"), None), "what is left of it has no frame");
        assert_eq!(ahead.next_frame(6), (Bytes::from_static(b"opqrst"), Some(Bytes::from_static(b"F3"))));
        assert_eq!((ahead.len, ahead.pieces.len()), (0, 0));
        assert_eq!(ahead.next_frame(6), (Bytes::new(), None));
    }

    #[test]
    fn ranges_are_cut_into_numbered_segments() {
        assert_eq!(cuts(3, 10..35, 10).collect::<Vec<_>>(), [(3, 10, 10), (4, 20, 10), (5, 30, 5)]);
        assert_eq!(cuts(0, 0..20, 10).collect::<Vec<_>>(), [(0, 0, 10), (1, 10, 10)]);
        assert_eq!(cuts(7, 5..5, 10).count(), 0);
        assert_eq!(cuts(0, 0..2, 0).collect::<Vec<_>>(), [(0, 0, 1), (1, 1, 1)], "a zero size is one byte");
    }

    #[test]
    fn local_upload_leftovers_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("logs/2026/01/01/j/s");
        std::fs::create_dir_all(&sub).unwrap();
        for name in ["000000.zst", "000000.zst#1", "000001.zst#12", "odd#name"] {
            std::fs::write(sub.join(name), b"x").unwrap();
        }
        assert_eq!(remove_local_upload_leftovers(dir.path()).unwrap(), 2);
        let mut left: Vec<_> = std::fs::read_dir(&sub).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        left.sort();
        assert_eq!(left, ["000000.zst", "odd#name"]);
    }
}
