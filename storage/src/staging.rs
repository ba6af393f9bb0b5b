//! The embedded live tier: one staging file per step on local disk, group-commit fsync, and a
//! watch channel per step that wakes readers when the durable length grows or the step ends.
//!
//! Layout under the root: `<job>/<step>.log` holds the stream's bytes at their offsets;
//! `<job>/<step>.end` holds the verified end (JSON, written atomically); `<job>/<step>.idx` is
//! the sparse time index, 16-byte records `offset: u64 LE, timestamp_us: u64 LE`; `<job>/<step>.rel`
//! holds the released prefix of a running step (decimal offset, written atomically before the
//! prefix's disk blocks are punched out of the log, so offsets never move); `<job>/<step>.masked`
//! exists once ingest stored masked bytes (the log then differs from what the agent hashed, so
//! after a restart END can be checked by length only). After a crash the hwm
//! is the log file's length: every byte in it was written at its own offset under the offset
//! rule, so the file is always a prefix of the agent's stream.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write as _};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Acquire, Release};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::future::BoxFuture;
use parking_lot::Mutex;
use tailrace_protocol::{apply_offset_rule, OffsetDecision, StreamHasher};
use tokio::sync::watch;

use crate::live::{AppendOutcome, Durability, LiveError, LiveTier, Progress, StepEnd, StepKey, TIME_INDEX_GAP_US};

/// Staging files under one directory.
pub struct StagingTier {
    root: PathBuf,
    durability: Durability,
    steps: Mutex<HashMap<StepKey, Arc<Entry>>>,
}

struct Entry {
    log_path: PathBuf,
    end_path: PathBuf,
    idx_path: PathBuf,
    rel_path: PathBuf,
    masked_path: PathBuf,
    file: Arc<File>,
    /// The time index; opened with the log.
    idx: Option<File>,
    writer: Mutex<Writer>,
    /// Serialises fsyncs; a caller that waited here finds its bytes already synced by the one
    /// before it (group commit).
    sync_lock: tokio::sync::Mutex<()>,
    progress: watch::Sender<Progress>,
    /// Bytes below this are in the archive and (about to be) gone from the log. Raised before
    /// the blocks are punched; readers check it before and after they read.
    released: AtomicU64,
}

struct Writer {
    written: u64,
    /// Length of the time index file, and its last point.
    idx_len: u64,
    last_point: Option<(u64, u64)>,
    /// Hash of the `written` bytes the agent sent; `None` after recovery until someone asks for
    /// the checksum.
    hasher: Option<StreamHasher>,
    ended: bool,
    /// Some stored bytes were masked at ingest (the `.masked` marker exists).
    masked: bool,
}

impl StagingTier {
    /// A live tier rooted at `root` (created if missing).
    pub fn new(root: impl Into<PathBuf>, durability: Durability) -> Result<Self, LiveError> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(|e| io(&root, e))?;
        Ok(Self { root, durability, steps: Mutex::new(HashMap::new()) })
    }

    /// Number of steps with state in memory (open or being read).
    pub fn resident_steps(&self) -> usize {
        self.steps.lock().len()
    }

    fn paths(&self, key: &StepKey) -> (PathBuf, PathBuf) {
        // Ids are validated to `[A-Za-z0-9._-]`, not starting with '.', so they are safe here.
        let dir = self.root.join(key.job.as_str());
        (dir.join(format!("{}.log", key.step)), dir.join(format!("{}.end", key.step)))
    }

    fn idx_path(&self, key: &StepKey) -> PathBuf {
        self.root.join(key.job.as_str()).join(format!("{}.idx", key.step))
    }

    fn rel_path(&self, key: &StepKey) -> PathBuf {
        self.root.join(key.job.as_str()).join(format!("{}.rel", key.step))
    }

    fn masked_path(&self, key: &StepKey) -> PathBuf {
        self.root.join(key.job.as_str()).join(format!("{}.masked", key.step))
    }

    /// The step's in-memory entry, loading it from disk if needed. With `create`, a missing step
    /// is created; otherwise it is `NotFound`.
    async fn entry(&self, key: &StepKey, create: bool) -> Result<Arc<Entry>, LiveError> {
        if let Some(e) = self.steps.lock().get(key) {
            return Ok(e.clone());
        }
        let (log_path, end_path) = self.paths(key);
        let paths = StepPaths { log: log_path, end: end_path, idx: self.idx_path(key), rel: self.rel_path(key), masked: self.masked_path(key) };
        let name = key.to_string();
        let loaded = tokio::task::spawn_blocking(move || load(paths, create, name))
            .await
            .map_err(|e| LiveError::Io { what: "load task".into(), source: std::io::Error::other(e) })??;
        if !create && loaded.writer.lock().ended {
            // A reader of an ended step: nothing will change, so do not keep it resident.
            return Ok(Arc::new(loaded));
        }
        let mut steps = self.steps.lock();
        // Another task may have loaded it meanwhile; keep the first so there is one writer state.
        Ok(steps.entry(key.clone()).or_insert_with(|| Arc::new(loaded)).clone())
    }
}

fn io(path: &Path, source: std::io::Error) -> LiveError {
    LiveError::Io { what: path.display().to_string(), source }
}

/// Index points at most this far apart in bytes…
const INDEX_EVERY_BYTES: u64 = 64 * 1024;

fn parse_index(bytes: &[u8], written: u64) -> Vec<(u64, u64)> {
    bytes
        .chunks_exact(16)
        .map(|r| (u64::from_le_bytes(r[..8].try_into().unwrap_or_default()), u64::from_le_bytes(r[8..].try_into().unwrap_or_default())))
        .take_while(|&(off, _)| off < written.max(1))
        .collect()
}

/// The files of one step.
struct StepPaths {
    log: PathBuf,
    end: PathBuf,
    idx: PathBuf,
    rel: PathBuf,
    masked: PathBuf,
}

fn load(paths: StepPaths, create: bool, name: String) -> Result<Entry, LiveError> {
    let StepPaths { log: log_path, end: end_path, idx: idx_path, rel: rel_path, masked: masked_path } = paths;
    let masked = masked_path.exists();
    if create
        && let Some(dir) = log_path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        }
    let file = OpenOptions::new().read(true).write(true).create(create).truncate(false).open(&log_path);
    let file = match file {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Err(LiveError::NotFound(name)),
        Err(e) => return Err(io(&log_path, e)),
    };
    let written = file.metadata().map_err(|e| io(&log_path, e))?.len();
    let end = match std::fs::read(&end_path) {
        Ok(b) => Some(Arc::new(serde_json::from_slice::<StepEnd>(&b).map_err(|e| {
            io(&end_path, std::io::Error::new(ErrorKind::InvalidData, e))
        })?)),
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => return Err(io(&end_path, e)),
    };
    let ended = end.is_some();
    if !ended {
        // Whatever survived a process crash sits in the page cache; make it durable before we
        // report it as held, so an ack can never be taken back. (An ended step was synced when
        // it ended.)
        file.sync_data().map_err(|e| io(&log_path, e))?;
    }
    let released = match std::fs::read_to_string(&rel_path) {
        Ok(t) => t.trim().parse::<u64>().map_err(|e| io(&rel_path, std::io::Error::new(ErrorKind::InvalidData, e)))?,
        Err(e) if e.kind() == ErrorKind::NotFound => 0,
        Err(e) => return Err(io(&rel_path, e)),
    };
    let hasher = (written == 0).then(StreamHasher::new);
    // The index is best effort: keep whole records that point into the log, drop the rest.
    let (idx, idx_len, last_point) = if ended {
        (None, 0, None)
    } else {
        let idx = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&idx_path).map_err(|e| io(&idx_path, e))?;
        let points = parse_index(&std::fs::read(&idx_path).map_err(|e| io(&idx_path, e))?, written);
        let len = points.len() as u64 * 16;
        idx.set_len(len).map_err(|e| io(&idx_path, e))?;
        (Some(idx), len, points.last().copied())
    };
    Ok(Entry {
        log_path,
        end_path,
        idx_path,
        rel_path,
        masked_path,
        file: Arc::new(file),
        idx,
        writer: Mutex::new(Writer { written, idx_len, last_point, hasher, ended, masked }),
        released: AtomicU64::new(released),
        sync_lock: tokio::sync::Mutex::new(()),
        progress: watch::Sender::new(Progress { durable: written, end }),
    })
}

fn join_err(e: tokio::task::JoinError) -> LiveError {
    LiveError::Io { what: "blocking task".into(), source: std::io::Error::other(e) }
}

impl Entry {
    fn publish_durable(&self, durable: u64) {
        self.progress.send_if_modified(|p| {
            let grew = durable > p.durable;
            p.durable = p.durable.max(durable);
            grew
        });
    }
}

impl LiveTier for StagingTier {
    fn open<'a>(&'a self, key: &'a StepKey) -> BoxFuture<'a, Result<Progress, LiveError>> {
        Box::pin(async move { Ok(self.entry(key, true).await?.progress.borrow().clone()) })
    }

    fn append<'a>(
        &'a self,
        key: &'a StepKey,
        offset: u64,
        timestamp_us: u64,
        bytes: Bytes,
    ) -> BoxFuture<'a, Result<AppendOutcome, LiveError>> {
        self.append_stored(key, offset, timestamp_us, bytes, None)
    }

    fn append_stored<'a>(
        &'a self,
        key: &'a StepKey,
        offset: u64,
        timestamp_us: u64,
        bytes: Bytes,
        stored: Option<Bytes>,
    ) -> BoxFuture<'a, Result<AppendOutcome, LiveError>> {
        Box::pin(async move {
            if stored.as_ref().is_some_and(|s| s.len() != bytes.len()) {
                return Err(LiveError::Io { what: key.to_string(), source: std::io::Error::other("stored bytes must be as long as the received ones") });
            }
            let e = self.entry(key, true).await?;
            if stored.is_some() && !e.writer.lock().masked {
                // The marker before any masked byte: a restart must know the log is not what the
                // agent hashed.
                let path = e.masked_path.clone();
                tokio::task::spawn_blocking(move || write_atomically(&path, b"masked at ingest\n")).await.map_err(join_err)??;
                e.writer.lock().masked = true;
            }
            let hwm = {
                let mut w = e.writer.lock();
                if w.ended {
                    return Ok(AppendOutcome::Ended { hwm: w.written });
                }
                let skip = match apply_offset_rule(w.written, offset, bytes.len()) {
                    OffsetDecision::Gap => return Ok(AppendOutcome::Gap { hwm: w.written }),
                    OffsetDecision::Duplicate => return Ok(AppendOutcome::Written { hwm: w.written }),
                    OffsetDecision::Append { skip } => skip,
                };
                let new = &bytes[skip..];
                let to_store = stored.as_ref().map_or(new, |s| &s[skip..]);
                // A positional write into the page cache; it does not wait for the disk. On
                // error nothing is counted as written, and the next append rewrites the range.
                e.file.write_all_at(to_store, w.written).map_err(|err| io(&e.log_path, err))?;
                if let Some(h) = w.hasher.as_mut() {
                    h.update(new);
                }
                let at = w.written;
                w.written += new.len() as u64;
                let due = w.last_point.is_none_or(|(o, t)| at >= o + INDEX_EVERY_BYTES || timestamp_us >= t + TIME_INDEX_GAP_US);
                if let (true, Some(idx)) = (due && w.last_point.is_none_or(|(_, t)| timestamp_us >= t), e.idx.as_ref()) {
                    let mut rec = [0u8; 16];
                    rec[..8].copy_from_slice(&at.to_le_bytes());
                    rec[8..].copy_from_slice(&timestamp_us.to_le_bytes());
                    // Best effort: a failed index write loses a search point, never output.
                    if idx.write_all_at(&rec, w.idx_len).is_ok() {
                        w.idx_len += 16;
                        w.last_point = Some((at, timestamp_us));
                    }
                }
                w.written
            };
            if self.durability == Durability::Os {
                e.publish_durable(hwm);
            }
            Ok(AppendOutcome::Written { hwm })
        })
    }

    fn sync<'a>(&'a self, key: &'a StepKey) -> BoxFuture<'a, Result<u64, LiveError>> {
        Box::pin(async move {
            let e = self.entry(key, true).await?;
            if self.durability == Durability::Os {
                let written = e.writer.lock().written;
                e.publish_durable(written);
                return Ok(written);
            }
            let _turn = e.sync_lock.lock().await;
            let target = e.writer.lock().written;
            let durable = e.progress.borrow().durable;
            if durable >= target {
                return Ok(durable);
            }
            let file = e.file.clone();
            tokio::task::spawn_blocking(move || file.sync_data())
                .await
                .map_err(join_err)?
                .map_err(|err| io(&e.log_path, err))?;
            e.publish_durable(target);
            Ok(target)
        })
    }

    fn read<'a>(&'a self, key: &'a StepKey, offset: u64, max: usize) -> BoxFuture<'a, Result<Bytes, LiveError>> {
        Box::pin(async move {
            let e = self.entry(key, false).await?;
            let released = |e: &Entry| {
                let below = e.released.load(Acquire);
                (offset < below).then(|| LiveError::Released { key: key.to_string(), below })
            };
            if let Some(err) = released(&e) {
                return Err(err);
            }
            let durable = e.progress.borrow().durable;
            if offset >= durable || max == 0 {
                return Ok(Bytes::new());
            }
            let len = (durable - offset).min(max as u64) as usize;
            let mut buf = BytesMut::zeroed(len);
            // Recent output is in the page cache: read it here, without a trip to the blocking
            // pool (that handoff cost more than the copy when thousands of tails read small
            // pieces). Only when the kernel would wait for the disk does the read move there.
            let bytes = if read_cached(&e.file, &mut buf, offset) {
                buf.freeze()
            } else {
                let file = e.file.clone();
                let path = e.log_path.clone();
                tokio::task::spawn_blocking(move || {
                    file.read_exact_at(&mut buf, offset).map_err(|err| io(&path, err))?;
                    Ok::<_, LiveError>(buf.freeze())
                })
                .await
                .map_err(join_err)??
            };
            // Released while we read: the blocks may have been punched under us.
            match released(&e) {
                Some(err) => Err(err),
                None => Ok(bytes),
            }
        })
    }

    fn subscribe<'a>(&'a self, key: &'a StepKey) -> BoxFuture<'a, Result<watch::Receiver<Progress>, LiveError>> {
        Box::pin(async move { Ok(self.entry(key, false).await?.progress.subscribe()) })
    }

    fn checksum<'a>(&'a self, key: &'a StepKey) -> BoxFuture<'a, Result<(u64, String), LiveError>> {
        Box::pin(async move {
            // Never create: a released step must not come back as an empty one.
            let e = self.entry(key, false).await?;
            {
                let w = e.writer.lock();
                if let Some(h) = w.hasher.as_ref().filter(|h| h.len() == w.written) {
                    return Ok((w.written, h.hex()));
                }
            }
            // Recovered step: hash the file once, then keep the hasher for later appends.
            let (written, masked) = {
                let w = e.writer.lock();
                (w.written, w.masked)
            };
            if masked {
                return Err(LiveError::Unverifiable { key: key.to_string(), len: written });
            }
            let released = e.released.load(Acquire);
            if released > 0 {
                return Err(LiveError::Released { key: key.to_string(), below: released });
            }
            let file = e.file.clone();
            let path = e.log_path.clone();
            let hasher = tokio::task::spawn_blocking(move || -> Result<StreamHasher, LiveError> {
                let mut h = StreamHasher::new();
                let mut buf = vec![0u8; 1 << 20];
                let mut pos = 0u64;
                while pos < written {
                    let n = ((written - pos) as usize).min(buf.len());
                    file.read_exact_at(&mut buf[..n], pos).map_err(|err| io(&path, err))?;
                    h.update(&buf[..n]);
                    pos += n as u64;
                }
                Ok(h)
            })
            .await
            .map_err(join_err)??;
            let mut w = e.writer.lock();
            let hex = hasher.hex();
            if w.written == written {
                w.hasher = Some(hasher);
            }
            Ok((written, hex))
        })
    }

    fn finish<'a>(&'a self, key: &'a StepKey, end: StepEnd) -> BoxFuture<'a, Result<std::sync::Arc<StepEnd>, LiveError>> {
        Box::pin(async move {
            let e = self.entry(key, true).await?;
            let _turn = e.sync_lock.lock().await;
            if let Some(existing) = e.progress.borrow().end.clone() {
                if existing.length == end.length && existing.checksum == end.checksum {
                    return Ok(existing);
                }
                return Err(LiveError::Conflict {
                    key: key.to_string(),
                    held_len: existing.length,
                    held_checksum: existing.checksum.clone(),
                    len: end.length,
                    checksum: end.checksum,
                });
            }
            e.writer.lock().ended = true;
            let file = e.file.clone();
            let idx = e.idx.as_ref().and_then(|f| f.try_clone().ok());
            let (end_path, log_path) = (e.end_path.clone(), e.log_path.clone());
            let json = serde_json::to_vec(&end).unwrap_or_default();
            tokio::task::spawn_blocking(move || -> Result<(), LiveError> {
                file.sync_data().map_err(|err| io(&log_path, err))?;
                if let Some(idx) = idx {
                    let _ = idx.sync_data();
                }
                write_atomically(&end_path, &json)
            })
            .await
            .map_err(join_err)?
            .inspect_err(|_| e.writer.lock().ended = false)?;
            let end = Arc::new(end);
            e.progress.send_modify(|p| {
                p.durable = end.length;
                p.end = Some(end.clone());
            });
            // Readers that subscribed keep the entry alive; new ones reload it from disk.
            self.steps.lock().remove(key);
            Ok(end)
        })
    }

    fn release<'a>(&'a self, key: &'a StepKey) -> BoxFuture<'a, Result<(), LiveError>> {
        Box::pin(async move {
            self.steps.lock().remove(key);
            let (log, end) = self.paths(key);
            let idx = self.idx_path(key);
            let rel = self.rel_path(key);
            let masked = self.masked_path(key);
            tokio::task::spawn_blocking(move || -> Result<(), LiveError> {
                // The log first: a step with an end marker but no log is released, never "empty".
                remove_if_present(&log)?;
                remove_if_present(&idx)?;
                remove_if_present(&rel)?;
                remove_if_present(&masked)?;
                remove_if_present(&end)?;
                if let Some(dir) = log.parent() {
                    // Only succeeds once the job's last step is gone.
                    let _ = std::fs::remove_dir(dir);
                }
                Ok(())
            })
            .await
            .map_err(join_err)?
        })
    }

    fn release_prefix<'a>(&'a self, key: &'a StepKey, upto: u64) -> BoxFuture<'a, Result<(), LiveError>> {
        Box::pin(async move {
            let e = self.entry(key, false).await?;
            if upto <= e.released.load(Acquire) {
                return Ok(());
            }
            let durable = e.progress.borrow().durable;
            if upto > durable {
                return Err(LiveError::Io {
                    what: key.to_string(),
                    source: std::io::Error::other(format!("cannot release {upto} bytes: only {durable} are durable")),
                });
            }
            // Serialise with `finish` and other releases.
            let _turn = e.sync_lock.lock().await;
            let entry = e.clone();
            tokio::task::spawn_blocking(move || -> Result<(), LiveError> {
                // The mark first, on disk and in memory: after a crash or during the punch,
                // reads below it are refused, never served from punched-out (zeroed) blocks.
                write_atomically(&entry.rel_path, upto.to_string().as_bytes())?;
                entry.released.fetch_max(upto, Release);
                punch_hole(&entry.file, upto).map_err(|err| io(&entry.log_path, err))
            })
            .await
            .map_err(join_err)?
        })
    }

    fn overwrite<'a>(&'a self, key: &'a StepKey, offset: u64, bytes: Bytes) -> BoxFuture<'a, Result<(), LiveError>> {
        Box::pin(async move {
            let e = self.entry(key, false).await?;
            let below = e.released.load(Acquire);
            if offset < below {
                return Err(LiveError::Released { key: key.to_string(), below });
            }
            let written = e.writer.lock().written;
            let end = offset.saturating_add(bytes.len() as u64);
            if end > written {
                return Err(LiveError::Io {
                    what: key.to_string(),
                    source: std::io::Error::other(format!("cannot overwrite up to {end}: only {written} bytes are written")),
                });
            }
            // The file is not opened for appending, so a positioned write lands where it is told.
            let entry = e.clone();
            tokio::task::spawn_blocking(move || {
                entry.file.write_all_at(&bytes, offset).and_then(|_| entry.file.sync_data()).map_err(|err| io(&entry.log_path, err))
            })
            .await
            .map_err(join_err)?
        })
    }

    fn time_index<'a>(&'a self, key: &'a StepKey) -> BoxFuture<'a, Result<Vec<(u64, u64)>, LiveError>> {
        Box::pin(async move {
            let e = self.entry(key, false).await?;
            let written = e.writer.lock().written;
            let path = e.idx_path.clone();
            tokio::task::spawn_blocking(move || match std::fs::read(&path) {
                Ok(b) => Ok(parse_index(&b, written)),
                Err(err) if err.kind() == ErrorKind::NotFound => Ok(Vec::new()),
                Err(err) => Err(io(&path, err)),
            })
            .await
            .map_err(join_err)?
        })
    }

    fn resident<'a>(&'a self, limit: usize) -> BoxFuture<'a, Result<Vec<StepKey>, LiveError>> {
        Box::pin(async move {
            let root = self.root.clone();
            tokio::task::spawn_blocking(move || -> Result<Vec<StepKey>, LiveError> {
                let mut out = Vec::new();
                for job in std::fs::read_dir(&root).map_err(|e| io(&root, e))?.flatten() {
                    let Ok(job_id) = tailrace_protocol::JobId::new(job.file_name().to_string_lossy().into_owned()) else { continue };
                    for f in std::fs::read_dir(job.path()).map_err(|e| io(&job.path(), e))?.flatten() {
                        let name = f.file_name().to_string_lossy().into_owned();
                        let Some(step) = name.strip_suffix(".log") else { continue };
                        if let Ok(step_id) = tailrace_protocol::StepId::new(step) {
                            out.push(StepKey::new(job_id.clone(), step_id));
                            if out.len() >= limit {
                                return Ok(out);
                            }
                        }
                    }
                }
                Ok(out)
            })
            .await
            .map_err(join_err)?
        })
    }
}

fn remove_if_present(path: &Path) -> Result<(), LiveError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(path, e)),
    }
}

/// Frees the disk blocks of the log's first `len` bytes, keeping its size and every offset.
/// A filesystem without hole punching keeps the blocks (the mark still refuses reads).
fn punch_hole(file: &File, len: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd as _;
    let len = libc::off_t::try_from(len).map_err(std::io::Error::other)?;
    // SAFETY: `fallocate` on a file descriptor we own, with no pointers involved.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE, 0, len) };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => {
            tracing::debug!(error = %err, "filesystem cannot punch holes; released bytes stay on disk until the step ends");
            Ok(())
        }
        _ => Err(err),
    }
}

/// Writes `bytes` to `path` via a synced temporary file and a rename, then syncs the directory.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), LiveError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = File::create(&tmp).map_err(|e| io(&tmp, e))?;
    f.write_all(bytes).and_then(|_| f.sync_all()).map_err(|e| io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io(path, e))?;
    if let Some(dir) = path.parent() {
        File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io(dir, e))?;
    }
    Ok(())
}


/// Fills `buf` from `offset` only if every byte is in the page cache (`preadv2` with
/// `RWF_NOWAIT`, which never waits for the disk); `false` when some are not, on any error, or
/// on kernels without it — the caller then reads on the blocking pool.
fn read_cached(file: &File, buf: &mut [u8], offset: u64) -> bool {
    use std::os::fd::AsRawFd as _;
    let mut done = 0usize;
    while done < buf.len() {
        let rest = &mut buf[done..];
        let iov = libc::iovec { iov_base: rest.as_mut_ptr().cast(), iov_len: rest.len() };
        let Ok(at) = libc::off_t::try_from(offset + done as u64) else { return false };
        // SAFETY: `iov` describes `rest`, which is valid for writes of its length for the whole
        // call; the fd is open for the lifetime of `file`.
        let n = unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, at, libc::RWF_NOWAIT) };
        if n <= 0 {
            return false;
        }
        done += n as usize;
    }
    true
}

#[cfg(test)]
mod tests;
