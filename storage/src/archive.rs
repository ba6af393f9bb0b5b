//! The archive: moves ended steps from the live tier into an object store as seekable zstd
//! segments, records their manifest in the metadata store, then releases the live bytes; and
//! reads any byte range back by fetching and decompressing only the frames it covers.
//!
//! Crash safety: object keys are deterministic (kind, end date, job, step, sequence), so an
//! archiver that died mid-way simply rewrites the same objects; the manifest and the "archived"
//! mark are one metadata transaction; the live bytes are released only after it. A restart
//! re-queues every step that ended but is not archived, and releases live bytes of steps that
//! are already archived.

use std::collections::HashSet;
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

use crate::live::{LiveError, LiveTier, StepKey};
use crate::meta::{MetaError, MetaStore, Segment};
use crate::time::civil_date;
use crate::segment::{compress_frame, covering, decompress_frames, seek_table, SegmentError, FRAME_INPUT};

/// Bytes read from the live tier at once while archiving (a whole number of frames).
const READ_BLOCK: usize = 16 * FRAME_INPUT;

/// How segments are written.
#[derive(Debug, Clone)]
pub struct ArchiveConfig {
    /// zstd level of every frame.
    pub level: i32,
    /// Stream bytes per segment object at most; a larger step gets several segments.
    pub segment_bytes: u64,
    /// Multipart upload part size (S3 needs at least 5 MiB). Memory per archiving step is about
    /// two parts plus one frame.
    pub part_bytes: usize,
    /// Frames compressed at once across all steps (the bounded compression pool).
    pub compress_threads: usize,
    /// Steps archived at once.
    pub concurrent_steps: usize,
    /// How often to look for steps that still need archiving (after failures or restarts).
    pub sweep_every: Duration,
}

impl Default for ArchiveConfig {
    fn default() -> Self {
        Self {
            level: 1,
            segment_bytes: 256 * 1024 * 1024,
            part_bytes: 8 * 1024 * 1024,
            compress_threads: 2,
            concurrent_steps: 2,
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
            ("tailrace_archive_expired_steps_total", "Steps whose output retention deleted.", &self.expired),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}", v.load(Relaxed));
        }
    }
}

/// The archive of one deployment.
pub struct Archive {
    store: Arc<dyn ObjectStore>,
    live: Arc<dyn LiveTier>,
    meta: Arc<dyn MetaStore>,
    cfg: ArchiveConfig,
    pool: Semaphore,
    in_flight: Mutex<HashSet<StepKey>>,
    pub metrics: ArchiveMetrics,
}

/// The object key of a step's segment: kind and date first, so expiry can sweep by prefix.
pub fn segment_key(ended_at_ms: u64, key: &StepKey, seq: u32) -> String {
    let (y, m, d) = civil_date(ended_at_ms);
    format!("logs/{y:04}/{m:02}/{d:02}/{}/{}/{seq:06}.zst", key.job, key.step)
}

impl Archive {
    pub fn new(store: Arc<dyn ObjectStore>, live: Arc<dyn LiveTier>, meta: Arc<dyn MetaStore>, cfg: ArchiveConfig) -> Self {
        let pool = Semaphore::new(cfg.compress_threads.max(1));
        Self { store, live, meta, cfg, pool, in_flight: Mutex::new(HashSet::new()), metrics: ArchiveMetrics::default() }
    }

    /// Archives one ended step (idempotent: an archived step only has its live bytes released).
    pub async fn archive_step(&self, key: &StepKey) -> Result<(), ArchiveError> {
        let step = self
            .meta
            .step(&key.job, &key.step)
            .await?
            .ok_or_else(|| ArchiveError::State(format!("step {key} is not in the metadata store")))?;
        if step.archived_at_ms.is_some() || step.expired_at_ms.is_some() {
            return Ok(self.live.release(key).await?);
        }
        let end = step.end.ok_or_else(|| ArchiveError::State(format!("step {key} has not ended")))?;
        let len = step.length.unwrap_or(0);
        let times = self.live.time_index(key).await?;
        let mut segments = Vec::new();
        let mut start = 0u64;
        while start < len {
            let seg_len = self.cfg.segment_bytes.min(len - start);
            let seq = segments.len() as u32;
            segments.push(self.write_segment(key, end.ended_at_ms, seq, start, seg_len, &times).await?);
            start += seg_len;
        }
        self.meta.record_archive(&key.job, &key.step, &segments).await?;
        self.live.release(key).await?;
        self.metrics.steps.fetch_add(1, Relaxed);
        info!(step = %key, bytes = len, segments = segments.len(), "step archived");
        Ok(())
    }

    async fn write_segment(
        &self,
        key: &StepKey,
        ended_at_ms: u64,
        seq: u32,
        start: u64,
        len: u64,
        times: &[(u64, u64)],
    ) -> Result<Segment, ArchiveError> {
        let path = ObjectPath::from(segment_key(ended_at_ms, key, seq));
        let upload = self.store.put_multipart(&path).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, self.cfg.part_bytes);
        let result = async {
            let mut frames = Vec::new();
            let mut frame_lines = Vec::new();
            let mut frame_times = Vec::new();
            let mut hasher = StreamHasher::new();
            let mut stored = 0u64;
            let mut pos = start;
            // Read the live tier in blocks of several frames: fewer, larger reads.
            let mut block = Bytes::new();
            while pos < start + len {
                let want = (FRAME_INPUT as u64).min(start + len - pos) as usize;
                if block.is_empty() {
                    let block_len = (READ_BLOCK as u64).min(start + len - pos) as usize;
                    block = Bytes::from(self.read_live_exact(key, pos, block_len).await?);
                }
                let raw = block.split_to(want.min(block.len()));
                let want = raw.len();
                hasher.update(&raw);
                frame_lines.push(raw.iter().filter(|&&b| b == b'\n').count() as u32);
                // When the frame's first byte was read: the last time point at or before it.
                let i = times.partition_point(|&(off, _)| off <= pos);
                frame_times.push(if i == 0 { times.first().map_or(0, |t| t.1) } else { times[i - 1].1 });
                let (compressed, entry) = {
                    let _slot = self.pool.acquire().await.map_err(|e| ArchiveError::State(e.to_string()))?;
                    let level = self.cfg.level;
                    tokio::task::spawn_blocking(move || compress_frame(&raw, level))
                        .await
                        .map_err(|e| ArchiveError::State(format!("compression task failed: {e}")))??
                };
                writer.wait_for_capacity(2).await?;
                stored += compressed.len() as u64;
                writer.put(Bytes::from(compressed));
                frames.push(entry);
                pos += want as u64;
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

    async fn read_live_exact(&self, key: &StepKey, offset: u64, len: usize) -> Result<Vec<u8>, ArchiveError> {
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            let b = self.live.read(key, offset + out.len() as u64, len - out.len()).await?;
            if b.is_empty() {
                return Err(ArchiveError::State(format!("live tier holds fewer bytes of {key} than its verified length")));
            }
            out.extend_from_slice(&b);
        }
        Ok(out)
    }

    /// Reads up to `max` bytes at `offset` from archived `segments`, never crossing a segment;
    /// empty at or past the end.
    pub async fn read(&self, segments: &[Segment], offset: u64, max: usize) -> Result<Bytes, ArchiveError> {
        let Some(seg) = segments.iter().find(|s| s.start <= offset && offset < s.start + s.length) else {
            return Ok(Bytes::new());
        };
        let rel = offset - seg.start;
        let end = (rel + max as u64).min(seg.length);
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
                if self.in_flight.lock().contains(&key) {
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

    /// Archives steps as they end (sent on `ended`), and every `sweep_every` catches up on
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
                if !self.in_flight.lock().insert(key.clone()) {
                    continue;
                }
                let Ok(slot) = slots.clone().acquire_owned().await else { return };
                let this = self.clone();
                tokio::spawn(async move {
                    if let Err(e) = this.archive_step(&key).await {
                        this.metrics.failures.fetch_add(1, Relaxed);
                        warn!(step = %key, error = %e, "archiving failed; output stays in the live tier and will be retried");
                    }
                    this.in_flight.lock().remove(&key);
                    drop(slot);
                });
            }
        }
    }

    /// Steps that ended but are not archived, and live steps already archived (a crash between
    /// recording the manifest and releasing the live bytes).
    async fn pending(&self) -> Vec<StepKey> {
        let mut out: Vec<StepKey> = match self.meta.ended_unarchived(256).await {
            Ok(v) => v.into_iter().map(|(j, s)| StepKey::new(j, s)).collect(),
            Err(e) => {
                warn!(error = %e, "could not list steps to archive");
                Vec::new()
            }
        };
        if let Ok(resident) = self.live.resident(4096).await {
            for key in resident {
                if let Ok(Some(step)) = self.meta.step(&key.job, &key.step).await {
                    if step.archived_at_ms.is_some() {
                        out.push(key);
                    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
