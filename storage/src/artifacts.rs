//! Artifacts: files a job stores (binaries, reports, screenshots), kept in the object store as
//! fixed-size part objects `artifacts/Y/M/D/<job>/<id>.<part>`, with their manifest in the
//! metadata store.
//!
//! An upload is a byte stream with offsets, like a step's output: the server holds a durable
//! offset per artifact (whole parts stored and recorded), a request starting below it has its
//! resent prefix skipped, one starting above it is refused with the offset to resume from. So a
//! dropped connection costs at most the part that was in flight. The SHA-256 the uploader
//! declares is checked as the last byte arrives; its state is saved with each part, so any
//! process can continue an upload without reading stored parts back. Memory per upload is one
//! part (`part_size`); at most `uploads` uploads hold one at a time.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::{self, BoxStream, StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, GetRange, GetResultPayload, ObjectStore, ObjectStoreExt, PutPayload};
use parking_lot::Mutex;
use serde::Serialize;
use tailrace_protocol::artifact_path::{self, PathError};
use tailrace_protocol::JobId;
use tokio::sync::Semaphore;

use crate::digest::ResumableSha256;
use crate::meta::{now_ms, MetaError, MetaStore};
use crate::time::civil_date;

/// Bytes read from a local part file per body chunk when serving.
const READ_CHUNK: usize = 256 * 1024;

/// One artifact of a job, as the metadata store keeps it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Artifact {
    /// Names the artifact's objects; derived from job, path, size and digest.
    pub id: String,
    pub job: JobId,
    /// Normalised path ([`artifact_path::normalize`]).
    pub path: String,
    pub size: u64,
    /// Lowercase hex SHA-256 of the whole file, as declared by the uploader and verified.
    pub sha256: String,
    pub content_type: String,
    pub part_size: u64,
    /// Parts stored and recorded, from the first.
    pub parts_done: u32,
    /// [`ResumableSha256`] state after `parts_done` parts.
    #[serde(skip)]
    pub hash_state: Vec<u8>,
    pub created_ms: u64,
    pub completed_ms: Option<u64>,
    pub expired_ms: Option<u64>,
}

impl Artifact {
    /// Parts the whole file takes (0 for an empty file).
    pub fn parts(&self) -> u32 {
        self.size.div_ceil(self.part_size.max(1)) as u32
    }

    /// Bytes held durably: the parts stored so far.
    pub fn durable(&self) -> u64 {
        (u64::from(self.parts_done) * self.part_size).min(self.size)
    }

    pub fn is_complete(&self) -> bool {
        self.completed_ms.is_some()
    }

    /// Object key of part `n`: kind and upload date first, so lifecycle rules match by prefix.
    pub fn part_key(&self, n: u32) -> String {
        let (y, m, d) = civil_date(self.created_ms);
        format!("artifacts/{y:04}/{m:02}/{d:02}/{}/{}.{n:06}", self.job, self.id)
    }

    fn part_len(&self, n: u32) -> u64 {
        self.size.saturating_sub(u64::from(n) * self.part_size).min(self.part_size)
    }
}

/// Limits and sizes of artifact storage.
#[derive(Debug, Clone)]
pub struct ArtifactConfig {
    /// Bytes per part object; a multiple of 64 (the digest state is saved at part ends).
    pub part_size: u64,
    /// Largest single artifact.
    pub max_file: u64,
    /// Largest total of one job's artifacts.
    pub max_job: u64,
    /// Uploads receiving at once (each holds up to one part in memory); more wait their turn.
    pub uploads: usize,
}

impl Default for ArtifactConfig {
    fn default() -> Self {
        Self { part_size: 8 << 20, max_file: 10 << 30, max_job: 50 << 30, uploads: 8 }
    }
}

/// Why an upload or read was refused or failed. Messages say what to do next.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArtifactError {
    #[error(transparent)]
    Name(#[from] PathError),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("the server holds {durable} bytes of this artifact; send the rest from Upload-Offset {durable}")]
    Gap { durable: u64 },
    #[error("another upload of {0} is in progress; retry when it has finished or failed")]
    InProgress(String),
    #[error("the file's SHA-256 is {got}, not the declared {want}: it changed while uploading or was damaged in transit; nothing was kept, upload it again")]
    Digest { want: String, got: String },
    #[error("the upload stopped at byte {at}: {reason}; resume from Upload-Offset {durable}")]
    Body { at: u64, durable: u64, reason: String },
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    #[error(transparent)]
    Meta(#[from] MetaError),
}

/// What an upload request asks for.
#[derive(Debug, Clone)]
pub struct UploadRequest {
    pub job: JobId,
    /// As the client named it; normalised here.
    pub path: String,
    /// Where the request's body starts in the file.
    pub offset: u64,
    /// The whole file's size.
    pub size: u64,
    /// The whole file's SHA-256, hex.
    pub sha256: String,
    pub content_type: String,
}

/// How an upload request ended.
#[derive(Debug)]
pub enum UploadOutcome {
    /// The artifact is complete; `new` is false when it already was (a retried request).
    Complete { artifact: Artifact, new: bool },
    /// The body ended before the file did; send the rest from `artifact.durable()`.
    Partial { artifact: Artifact },
}

/// Counters of artifact storage, rendered as `tailrace_artifact_*`.
#[derive(Debug, Default)]
pub struct ArtifactMetrics {
    pub received_bytes: AtomicU64,
    pub stored_bytes: AtomicU64,
    pub completed: AtomicU64,
    pub served_bytes: AtomicU64,
    pub refused: AtomicU64,
    pub expired: AtomicU64,
}

impl ArtifactMetrics {
    pub fn render(&self, out: &mut String) {
        for (name, help, v) in [
            ("tailrace_artifact_received_bytes_total", "Upload body bytes received, including resent ones that were skipped.", &self.received_bytes),
            ("tailrace_artifact_stored_bytes_total", "Artifact bytes written to the object store.", &self.stored_bytes),
            ("tailrace_artifact_completed_total", "Artifacts whose upload completed with a verified digest.", &self.completed),
            ("tailrace_artifact_served_bytes_total", "Artifact bytes served to downloads.", &self.served_bytes),
            ("tailrace_artifact_refused_total", "Upload requests refused (names, limits, conflicts, digests).", &self.refused),
            ("tailrace_artifact_expired_total", "Artifacts deleted by retention.", &self.expired),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}", v.load(Relaxed));
        }
    }
}

/// Artifact storage of one deployment.
pub struct Artifacts {
    store: Arc<dyn ObjectStore>,
    meta: Arc<dyn MetaStore>,
    pub cfg: ArtifactConfig,
    uploads: Semaphore,
    /// (job, path) of uploads receiving in this process.
    active: Mutex<HashSet<(String, String)>>,
    pub metrics: ArtifactMetrics,
}

/// Removes an upload from the active set when the request ends, however it ends.
struct ActiveGuard<'a>(&'a Mutex<HashSet<(String, String)>>, (String, String));

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.lock().remove(&self.1);
    }
}

fn valid_sha256(s: &str) -> Option<String> {
    (s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())).then(|| s.to_ascii_lowercase())
}

impl Artifacts {
    pub fn new(store: Arc<dyn ObjectStore>, meta: Arc<dyn MetaStore>, cfg: ArtifactConfig) -> Self {
        let uploads = Semaphore::new(cfg.uploads.max(1));
        Self { store, meta, cfg, uploads, active: Mutex::new(HashSet::new()), metrics: ArtifactMetrics::default() }
    }

    /// Receives (part of) an artifact. See the module documentation for the offset rule.
    pub async fn upload<S, E>(&self, req: UploadRequest, body: S) -> Result<UploadOutcome, ArtifactError>
    where
        S: futures_util::Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let r = self.upload_inner(req, body).await;
        if matches!(r, Err(ArtifactError::Name(_) | ArtifactError::Invalid(_) | ArtifactError::Conflict(_) | ArtifactError::TooLarge(_) | ArtifactError::Digest { .. })) {
            self.metrics.refused.fetch_add(1, Relaxed);
        }
        r
    }

    async fn upload_inner<S, E>(&self, req: UploadRequest, mut body: S) -> Result<UploadOutcome, ArtifactError>
    where
        S: futures_util::Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let path = artifact_path::normalize(&req.path)?;
        let sha256 = valid_sha256(&req.sha256)
            .ok_or_else(|| ArtifactError::Invalid("X-Tailrace-Sha256 must be the file's SHA-256 as 64 hex digits".into()))?;
        if req.size > self.cfg.max_file {
            return Err(ArtifactError::TooLarge(format!(
                "{path} is {} bytes; artifacts may be at most {} bytes (artifacts_max_file_mib)",
                req.size, self.cfg.max_file
            )));
        }
        if req.offset > req.size {
            return Err(ArtifactError::Invalid(format!("Upload-Offset {} is beyond Upload-Length {}", req.offset, req.size)));
        }
        let key = (req.job.to_string(), path.clone());
        if !self.active.lock().insert(key.clone()) {
            return Err(ArtifactError::InProgress(path));
        }
        let _guard = ActiveGuard(&self.active, key);

        let mut art = match self.meta.artifact(&req.job, &path).await? {
            Some(a) if a.is_complete() && a.expired_ms.is_none() => {
                if a.size == req.size && a.sha256 == sha256 {
                    return Ok(UploadOutcome::Complete { artifact: a, new: false });
                }
                return Err(ArtifactError::Conflict(format!(
                    "artifact {path} already exists with other content (sha256 {}); artifacts cannot be replaced, store this one under another name",
                    a.sha256
                )));
            }
            Some(a) if a.expired_ms.is_none() && a.size == req.size && a.sha256 == sha256 => a,
            Some(a) => {
                // An expired artifact, or an unfinished upload of other content (the file
                // changed between attempts): forget it and start over.
                self.forget(&a, (a.parts_done + 1).min(a.parts())).await?;
                self.fresh(&req, path, sha256)
            }
            None => self.fresh(&req, path, sha256),
        };
        // A file of more than one part is recorded first, so that its parts can be: limits and
        // name collisions are checked before any byte is read. A one-part file is recorded once,
        // complete (one metadata write per small file).
        if art.completed_ms.is_none() && art.parts_done == 0 && (art.parts() > 1 || art.size == 0) {
            if art.size == 0 {
                art.completed_ms = Some(now_ms());
            }
            art = self.insert(art).await?;
            if art.is_complete() {
                self.metrics.completed.fetch_add(1, Relaxed);
                return Ok(UploadOutcome::Complete { artifact: art, new: true });
            }
        }
        let durable = art.durable();
        if req.offset > durable {
            return Err(ArtifactError::Gap { durable });
        }
        let _permit = self.uploads.acquire().await.map_err(|_| ArtifactError::Invalid("server is shutting down".into()))?;

        let mut skip = durable - req.offset;
        let mut at = req.offset;
        let mut hasher = ResumableSha256::resume(&art.hash_state)
            .ok_or_else(|| ArtifactError::Invalid(format!("stored digest state of {} is damaged; delete the job's artifacts", art.path)))?;
        let mut part: Vec<Bytes> = Vec::new();
        let mut part_len = 0u64;
        while art.parts_done < art.parts() {
            let mut chunk = match body.next().await {
                Some(Ok(c)) => c,
                Some(Err(e)) => {
                    return Err(ArtifactError::Body { at, durable: art.durable(), reason: e.to_string() });
                }
                None => return Ok(UploadOutcome::Partial { artifact: art }),
            };
            self.metrics.received_bytes.fetch_add(chunk.len() as u64, Relaxed);
            at += chunk.len() as u64;
            let skipped = skip.min(chunk.len() as u64);
            skip -= skipped;
            let _ = chunk.split_to(skipped as usize);
            while !chunk.is_empty() {
                let want = art.part_len(art.parts_done);
                let take = (want - part_len).min(chunk.len() as u64) as usize;
                let piece = chunk.split_to(take);
                hasher.update(&piece);
                part_len += piece.len() as u64;
                part.push(piece);
                if part_len < want {
                    continue;
                }
                let last = art.parts_done + 1 == art.parts();
                // Nothing may follow the last byte: refuse before the artifact completes.
                if last && (!chunk.is_empty() || matches!(body.next().await, Some(Ok(extra)) if !extra.is_empty())) {
                    return Err(ArtifactError::Invalid(format!("the body is longer than Upload-Length {}", art.size)));
                }
                art = self.store_part(art, std::mem::take(&mut part), &hasher).await?;
                part_len = 0;
            }
        }
        match art.is_complete() {
            true => Ok(UploadOutcome::Complete { artifact: art, new: true }),
            false => Ok(UploadOutcome::Partial { artifact: art }),
        }
    }

    fn fresh(&self, req: &UploadRequest, path: String, sha256: String) -> Artifact {
        // The id (which names the objects) follows from what is uploaded, so a retry after a
        // crash between storing a part and recording it writes the same objects again.
        let id = {
            use sha2::Digest as _;
            let h = sha2::Sha256::new().chain_update(format!("{}\0{path}\0{sha256}\0{}", req.job, req.size)).finalize();
            h[..16].iter().map(|b| format!("{b:02x}")).collect()
        };
        Artifact {
            id,
            job: req.job.clone(),
            path,
            size: req.size,
            sha256,
            content_type: req.content_type.clone(),
            part_size: self.cfg.part_size,
            parts_done: 0,
            hash_state: Vec::new(),
            created_ms: now_ms(),
            completed_ms: None,
            expired_ms: None,
        }
    }

    /// Records `art`; another process that recorded the same path first wins (ours is deleted).
    async fn insert(&self, art: Artifact) -> Result<Artifact, ArtifactError> {
        let stored = self.meta.insert_artifact(&art, self.cfg.max_job).await?;
        if stored.id != art.id {
            self.delete_parts(&art, art.parts_done).await?;
            if stored.is_complete() && (stored.sha256 != art.sha256 || stored.size != art.size) {
                return Err(ArtifactError::Conflict(format!("artifact {} was stored meanwhile with other content", art.path)));
            }
        }
        Ok(stored)
    }

    /// Stores the next part; the last one completes the artifact if the digest matches.
    async fn store_part(&self, mut art: Artifact, chunks: Vec<Bytes>, hasher: &ResumableSha256) -> Result<Artifact, ArtifactError> {
        let n = art.parts_done;
        let len: u64 = chunks.iter().map(|c| c.len() as u64).sum();
        self.store.put(&ObjectPath::from(art.part_key(n)), PutPayload::from_iter(chunks)).await?;
        self.metrics.stored_bytes.fetch_add(len, Relaxed);
        let last = n + 1 == art.parts();
        if last {
            let got = hasher.clone().finish_hex();
            if got != art.sha256 {
                self.forget(&art, n + 1).await?;
                return Err(ArtifactError::Digest { want: art.sha256.clone(), got });
            }
            art.completed_ms = Some(now_ms());
        } else {
            art.hash_state = hasher.save().ok_or_else(|| ArtifactError::Invalid("part size must be a multiple of 64 bytes".into()))?;
        }
        art.parts_done = n + 1;
        if n == 0 && art.parts() == 1 {
            art = self.insert(art).await?;
        } else if !self.meta.advance_artifact(&art.id, n, &art.hash_state, art.completed_ms).await? {
            return Err(ArtifactError::InProgress(art.path.clone()));
        }
        if art.is_complete() {
            self.metrics.completed.fetch_add(1, Relaxed);
        }
        Ok(art)
    }

    async fn delete_parts(&self, art: &Artifact, parts: u32) -> Result<(), ArtifactError> {
        for n in 0..parts {
            match self.store.delete(&ObjectPath::from(art.part_key(n))).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Deletes an artifact's first `parts` objects and its record.
    async fn forget(&self, art: &Artifact, parts: u32) -> Result<(), ArtifactError> {
        self.delete_parts(art, parts).await?;
        self.meta.delete_artifact(&art.id).await?;
        Ok(())
    }

    /// The bytes `[start, end)` of a complete artifact, streamed part by part from the store.
    pub fn read(self: &Arc<Self>, art: &Artifact, start: u64, end: u64) -> BoxStream<'static, Result<Bytes, ArtifactError>> {
        let ps = art.part_size.max(1);
        let end = end.min(art.size);
        if start >= end {
            return stream::empty().boxed();
        }
        let pieces: Vec<(String, u64, u64)> = ((start / ps) as u32..=((end - 1) / ps) as u32)
            .map(|n| {
                let base = u64::from(n) * ps;
                (art.part_key(n), start.max(base) - base, end.min(base + ps) - base)
            })
            .collect();
        let this = self.clone();
        stream::iter(pieces)
            .then(move |(key, a, b)| {
                let this = this.clone();
                async move { this.part_stream(key, a, b).await }
            })
            .try_flatten()
            .boxed()
    }

    async fn part_stream(self: Arc<Self>, key: String, a: u64, b: u64) -> Result<BoxStream<'static, Result<Bytes, ArtifactError>>, ArtifactError> {
        let opts = GetOptions { range: Some(GetRange::Bounded(a..b)), ..Default::default() };
        let got = self.store.get_opts(&ObjectPath::from(key), opts).await?;
        let metrics = self.clone();
        let counted = move |r: Result<Bytes, ArtifactError>| {
            if let Ok(c) = &r {
                metrics.metrics.served_bytes.fetch_add(c.len() as u64, Relaxed);
            }
            r
        };
        Ok(match got.payload {
            // The local store hands out the file: read it with one positioned read per chunk on
            // the blocking pool (rather than its 8 KiB chunks, or a seek and reads).
            GetResultPayload::File(file, _) => {
                let file = Arc::new(file);
                stream::try_unfold(got.range.start, move |pos| {
                    let (file, end) = (file.clone(), got.range.end);
                    async move {
                        if pos >= end {
                            return Ok(None);
                        }
                        let n = (end - pos).min(READ_CHUNK as u64) as usize;
                        let chunk = tokio::task::spawn_blocking(move || {
                            use std::os::unix::fs::FileExt as _;
                            let mut buf = vec![0u8; n];
                            file.read_exact_at(&mut buf, pos).map(|()| Bytes::from(buf))
                        })
                        .await
                        .map_err(|e| ArtifactError::Invalid(format!("reading a stored part: {e}")))?
                        .map_err(|e| ArtifactError::Invalid(format!("reading a stored part: {e}")))?;
                        Ok(Some((chunk, pos + n as u64)))
                    }
                })
                .map(counted)
                .boxed()
            }
            GetResultPayload::Stream(s) => s.map_err(ArtifactError::Store).map(counted).boxed(),
        })
    }

    /// Deletes artifacts uploaded before `cutoff_ms` (objects, then the record, which stays
    /// as a tombstone so downloads answer `410 Gone`). With `dry_run`, only lists them.
    pub async fn expire(&self, cutoff_ms: u64, dry_run: bool) -> Result<Vec<Artifact>, ArtifactError> {
        let mut done = Vec::new();
        loop {
            let batch = self.meta.artifacts_to_expire(cutoff_ms, 256).await?;
            let last = batch.len() < 256;
            let mut skipped = 0;
            for art in batch {
                if self.active.lock().contains(&(art.job.to_string(), art.path.clone())) {
                    // Receiving right now: the next sweep expires it.
                    skipped += 1;
                    continue;
                }
                if !dry_run {
                    self.delete_parts(&art, art.parts()).await?;
                    self.meta.mark_artifact_expired(&art.id, now_ms()).await?;
                    self.metrics.expired.fetch_add(1, Relaxed);
                }
                done.push(art);
            }
            if dry_run || last || skipped == 256 {
                return Ok(done);
            }
        }
    }
}

#[cfg(test)]
mod tests;
