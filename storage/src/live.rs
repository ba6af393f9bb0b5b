//! The live-tier contract: atomic offset-checked append, durable sync, read from an offset, wait
//! for new bytes, and the end-of-step record.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tailrace_protocol::{EndReason, JobId, StepId};
use tokio::sync::watch;

/// A time-index point is made whenever output arrives this long (µs) after the last point.
pub const TIME_INDEX_GAP_US: u64 = 1_000_000;

/// Addresses one step's stream.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StepKey {
    pub job: JobId,
    pub step: StepId,
}

impl StepKey {
    pub fn new(job: JobId, step: StepId) -> Self {
        Self { job, step }
    }
}

impl std::fmt::Display for StepKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.job, self.step)
    }
}

/// When a written byte counts as durable (and may be acknowledged to the agent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// After `fsync` of the staging file (group-committed): survives a machine crash.
    #[default]
    Fsync,
    /// After the write reaches the OS page cache: survives a process crash, not a power loss.
    Os,
}

/// How a step ended, as verified by ingest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Running,
    Success,
    Failed,
    Cancelled,
    TimedOut,
}

impl StepStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Running => "running",
            StepStatus::Success => "success",
            StepStatus::Failed => "failed",
            StepStatus::Cancelled => "cancelled",
            StepStatus::TimedOut => "timed_out",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "running" => StepStatus::Running,
            "success" => StepStatus::Success,
            "failed" => StepStatus::Failed,
            "cancelled" => StepStatus::Cancelled,
            "timed_out" => StepStatus::TimedOut,
            _ => return None,
        })
    }
}

/// The verified end of a step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepEnd {
    pub status: StepStatus,
    pub reason: EndReason,
    pub exit_code: Option<i32>,
    pub length: u64,
    pub checksum: String,
    pub duration_ms: u64,
    /// Milliseconds since the Unix epoch.
    pub ended_at_ms: u64,
}

impl StepEnd {
    /// The status a step gets from how it ended.
    pub fn status_for(reason: EndReason, exit_code: Option<i32>) -> StepStatus {
        match (reason, exit_code) {
            (EndReason::Exited, Some(0)) => StepStatus::Success,
            (EndReason::Cancelled, _) => StepStatus::Cancelled,
            (EndReason::TimedOut, _) => StepStatus::TimedOut,
            _ => StepStatus::Failed,
        }
    }
}

/// What readers follow: the durable length and, once verified, the end.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    pub durable: u64,
    pub end: Option<Arc<StepEnd>>,
}

/// The result of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOutcome {
    /// Bytes are written (not yet durable); the step now holds `hwm` bytes.
    Written { hwm: u64 },
    /// The chunk started above the hwm; nothing was written.
    Gap { hwm: u64 },
    /// The step already ended; nothing was written.
    Ended { hwm: u64 },
}

/// Why the live tier failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LiveError {
    #[error("step {0} not found")]
    NotFound(String),
    #[error("live tier I/O error on {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// The bytes below `below` were archived and dropped from the live tier (the step is still
    /// running); read them from the archive.
    #[error("bytes of step {key} below offset {below} moved to the archive")]
    Released { key: String, below: u64 },
    /// Ingest stored masked bytes and a restart lost the hash of what the agent sent: only the
    /// length can be checked.
    #[error("step {key} was masked at ingest and the server restarted since: only its length ({len}) can be verified")]
    Unverifiable { key: String, len: u64 },
    #[error("step {key} ended with different content: held {held_len} bytes ({held_checksum}), END says {len} bytes ({checksum})")]
    Conflict { key: String, held_len: u64, held_checksum: String, len: u64, checksum: String },
}

/// Where running steps' bytes live until they are archived.
///
/// Every method is cancel-safe: dropping a future leaves the step consistent (an append either
/// wrote its bytes under the step's lock or did nothing).
pub trait LiveTier: Send + Sync + 'static {
    /// Opens (or recovers) a step and returns its current progress.
    fn open<'a>(&'a self, key: &'a StepKey) -> BoxFuture<'a, Result<Progress, LiveError>>;

    /// Appends `bytes` at `offset` under the offset rule, atomically per step. `timestamp_us`
    /// (when the agent read them) feeds the step's sparse time index.
    fn append<'a>(&'a self, key: &'a StepKey, offset: u64, timestamp_us: u64, bytes: Bytes)
    -> BoxFuture<'a, Result<AppendOutcome, LiveError>>;

    /// Like `append`, but writes `stored` (as long as `bytes`: the same bytes with secrets
    /// masked) while the offset rule and the step's checksum see `bytes`, what the agent sent.
    fn append_stored<'a>(&'a self, key: &'a StepKey, offset: u64, timestamp_us: u64, bytes: Bytes, stored: Option<Bytes>)
    -> BoxFuture<'a, Result<AppendOutcome, LiveError>>;

    /// The step's sparse time index: `(offset, timestamp_us)` points, increasing in both, at
    /// most every 64 KiB of output, and always where output arrives `TIME_INDEX_GAP_US` or more
    /// after the last point — so every byte after a point arrived less than that after it.
    /// Best effort: a crash may lose recent points.
    fn time_index<'a>(&'a self, key: &'a StepKey) -> BoxFuture<'a, Result<Vec<(u64, u64)>, LiveError>>;

    /// Makes every byte written so far durable and returns the durable length (group commit:
    /// concurrent callers share one sync).
    fn sync<'a>(&'a self, key: &'a StepKey) -> BoxFuture<'a, Result<u64, LiveError>>;

    /// Reads up to `max` durable bytes from `offset`; empty at or past the durable length.
    fn read<'a>(&'a self, key: &'a StepKey, offset: u64, max: usize) -> BoxFuture<'a, Result<Bytes, LiveError>>;

    /// As [`LiveTier::read`], in the pieces the bytes are stored as: a piece that is a whole
    /// zstd frame as stored (a large append on Redis) comes with the frame, which the archiver
    /// writes as it is instead of compressing the bytes again.
    fn read_stored<'a>(&'a self, key: &'a StepKey, offset: u64, max: usize) -> BoxFuture<'a, Result<Vec<Stored>, LiveError>> {
        Box::pin(async move { Ok(vec![Stored { raw: self.read(key, offset, max).await?, frame: None }]) })
    }

    /// A receiver of the step's progress, for readers that wait for new bytes or the end.
    fn subscribe<'a>(&'a self, key: &'a StepKey) -> BoxFuture<'a, Result<watch::Receiver<Progress>, LiveError>>;

    /// The length and xxh3 checksum of every byte written; `NotFound` for a step that is not
    /// here (never opened, or released); `Released` when a restart lost the hash of a released
    /// prefix (the caller hashes the archived prefix instead).
    fn checksum<'a>(&'a self, key: &'a StepKey) -> BoxFuture<'a, Result<(u64, String), LiveError>>;

    /// Records the verified end durably and wakes every reader. Ending an ended step with the
    /// same length and checksum succeeds; with different ones it is a `Conflict`.
    fn finish<'a>(&'a self, key: &'a StepKey, end: StepEnd) -> BoxFuture<'a, Result<Arc<StepEnd>, LiveError>>;

    /// Drops an ended step's bytes once the archive holds them durably. Readers that still hold
    /// the step open finish their reads; later reads get `NotFound` and go to the archive.
    /// Releasing a step that is not here succeeds.
    fn release<'a>(&'a self, key: &'a StepKey) -> BoxFuture<'a, Result<(), LiveError>>;

    /// Drops the bytes below `upto` of a step that is still running, once the archive holds them
    /// durably (incremental archiving keeps the live tier bounded). Later reads below `upto`,
    /// and — after a restart — the checksum, get `Released`. Offsets do not change. Releasing
    /// what is already released succeeds.
    fn release_prefix<'a>(&'a self, key: &'a StepKey, upto: u64) -> BoxFuture<'a, Result<(), LiveError>>;

    /// Replaces written bytes at `offset` with as many others (a scrub, or masking a secret
    /// split across chunks: offsets, the length and the checksum of what the agent sent stay as
    /// they are) and makes them durable. Refused below the released prefix or past the written
    /// length.
    fn overwrite<'a>(&'a self, key: &'a StepKey, offset: u64, bytes: Bytes) -> BoxFuture<'a, Result<(), LiveError>>;

    /// Steps whose bytes are held here, for recovery scans (at most `limit`).
    fn resident<'a>(&'a self, limit: usize) -> BoxFuture<'a, Result<Vec<StepKey>, LiveError>>;

    /// Whether the tier can take bytes now (for `/readyz`): local files always can; a shared
    /// tier answers a round trip.
    fn health(&self) -> BoxFuture<'_, Result<(), LiveError>> {
        Box::pin(async { Ok(()) })
    }

    /// Whether an append that returned `Written { hwm }` has already made those bytes as
    /// durable as [`LiveTier::sync`] would (the backend persists before it answers), so ingest
    /// can acknowledge `hwm` without a `sync` round trip.
    fn durable_on_append(&self) -> bool {
        false
    }

    /// What the backend's own settings mean for acknowledged output, for `--check-config` and
    /// the start-up log: `Err` when an acknowledged byte could be lost (what to change), else
    /// notes on settings that cost speed. Local files have no settings of their own.
    fn settings(&self) -> BoxFuture<'_, Result<Vec<String>, String>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    /// The backend's own gauges for `/metrics`, as (name, help, value): a shared tier reports
    /// its memory; local files report none.
    fn gauges(&self) -> BoxFuture<'_, Result<Vec<Gauge>, LiveError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}

/// Bytes read by [`LiveTier::read_stored`]: `frame`, when there is one, is a single zstd frame
/// that decompresses to exactly `raw`.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub raw: Bytes,
    pub frame: Option<Bytes>,
}

/// One gauge of [`LiveTier::gauges`]: name, help text, value.
pub type Gauge = (&'static str, &'static str, f64);

/// The conformance suite every [`LiveTier`] backend must pass. `job` names the steps it uses.
#[doc(hidden)]
#[allow(clippy::unwrap_used)]
pub mod conformance {
    use std::time::Duration;

    use tailrace_protocol::StreamHasher;

    use super::*;

    /// A successful end of a step whose output is `bytes`.
    pub fn end_for(bytes: &[u8]) -> StepEnd {
        let mut h = StreamHasher::new();
        h.update(bytes);
        StepEnd {
            status: StepStatus::Success,
            reason: EndReason::Exited,
            exit_code: Some(0),
            length: bytes.len() as u64,
            checksum: h.hex(),
            duration_ms: 1,
            ended_at_ms: 1,
        }
    }

    /// Waits (at most 10 s, then fails) until the receiver's progress satisfies `f`.
    async fn wait(rx: &mut watch::Receiver<Progress>, what: &str, f: impl FnMut(&Progress) -> bool) {
        match tokio::time::timeout(Duration::from_secs(10), rx.wait_for(f)).await {
            Ok(Ok(_)) => {}
            other => panic!("readers were not told {what}: {:?}", other.map(|r| r.map(|p| p.clone()))),
        }
    }

    pub async fn run(tier: &dyn LiveTier, job: &str) {
        let key = |s: &str| StepKey::new(JobId::new(job).unwrap(), StepId::new(s).unwrap());
        let k = key("a");
        assert!(matches!(tier.read(&k, 0, 1).await, Err(LiveError::NotFound(_))));
        assert!(matches!(tier.subscribe(&k).await, Err(LiveError::NotFound(_))));
        assert!(matches!(tier.checksum(&k).await, Err(LiveError::NotFound(_))));

        // The offset rule: append at the hwm, trim a resent prefix, refuse a gap.
        assert_eq!(tier.open(&k).await.unwrap(), Progress::default());
        let mut rx = tier.subscribe(&k).await.unwrap();
        let b = |s: &'static [u8]| Bytes::from_static(s);
        assert_eq!(tier.append(&k, 0, 1_000_000, b(b"hello ")).await.unwrap(), AppendOutcome::Written { hwm: 6 });
        assert_eq!(tier.append(&k, 3, 1_000_001, b(b"lo world")).await.unwrap(), AppendOutcome::Written { hwm: 11 });
        assert_eq!(tier.append(&k, 0, 1_000_002, b(b"hel")).await.unwrap(), AppendOutcome::Written { hwm: 11 });
        assert_eq!(tier.append(&k, 20, 1_000_003, b(b"x")).await.unwrap(), AppendOutcome::Gap { hwm: 11 });
        assert_eq!(tier.sync(&k).await.unwrap(), 11);
        wait(&mut rx, "the durable length", |p| p.durable == 11).await;
        assert_eq!(&tier.read(&k, 0, 100).await.unwrap()[..], b"hello world");
        assert_eq!(&tier.read(&k, 4, 3).await.unwrap()[..], b"o w");
        assert!(tier.read(&k, 11, 10).await.unwrap().is_empty());
        assert_eq!(tier.checksum(&k).await.unwrap(), (11, end_for(b"hello world").checksum));
        assert_eq!(tier.open(&k).await.unwrap().durable, 11, "opening again finds the bytes");
        assert!(tier.resident(1000).await.unwrap().contains(&k));

        // The time index: the first byte, then a gap of more than a second.
        tier.append(&k, 11, 3_000_000, b(b"!")).await.unwrap();
        assert_eq!(tier.time_index(&k).await.unwrap(), [(0, 1_000_000), (11, 3_000_000)]);

        // The end: recorded once, readers told, a different end refused, appends refused.
        tier.sync(&k).await.unwrap();
        let end = tier.finish(&k, end_for(b"hello world!")).await.unwrap();
        wait(&mut rx, "the end", |p| p.end.is_some()).await;
        assert_eq!(rx.borrow().end.as_deref(), Some(&*end));
        assert_eq!(tier.finish(&k, end_for(b"hello world!")).await.unwrap(), end);
        assert!(matches!(tier.finish(&k, end_for(b"hello world?")).await, Err(LiveError::Conflict { .. })));
        assert_eq!(tier.append(&k, 12, 3_000_001, b(b"more")).await.unwrap(), AppendOutcome::Ended { hwm: 12 });
        assert_eq!(tier.open(&k).await.unwrap().end.as_deref(), Some(&*end));

        // A released prefix of a running step: refused below, served above.
        let r = key("b");
        tier.open(&r).await.unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        for (i, chunk) in data.chunks(100_000).enumerate() {
            tier.append(&r, i as u64 * 100_000, 1, Bytes::copy_from_slice(chunk)).await.unwrap();
        }
        tier.sync(&r).await.unwrap();
        tier.release_prefix(&r, 150_000).await.unwrap();
        tier.release_prefix(&r, 10).await.unwrap();
        assert!(matches!(tier.read(&r, 149_999, 10).await, Err(LiveError::Released { below: 150_000, .. })));
        assert_eq!(&tier.read(&r, 150_000, 60_000).await.unwrap()[..], &data[150_000..210_000]);
        assert_eq!(&tier.read(&r, 299_990, 100).await.unwrap()[..], &data[299_990..]);
        match tier.checksum(&r).await {
            Ok(c) => assert_eq!(c, (300_000, end_for(&data).checksum)),
            Err(LiveError::Released { below, .. }) => assert_eq!(below, 150_000),
            Err(e) => panic!("checksum after a released prefix: {e}"),
        }

        // Overwrite: same length, across chunk boundaries; refused below the release or past the end.
        tier.overwrite(&r, 199_998, b(b"****")).await.unwrap();
        let mut want = data[199_990..200_010].to_vec();
        want[8..12].copy_from_slice(b"****");
        assert_eq!(&tier.read(&r, 199_990, 20).await.unwrap()[..], &want[..]);
        assert!(tier.overwrite(&r, 100, b(b"x")).await.is_err());
        assert!(tier.overwrite(&r, 299_999, b(b"xy")).await.is_err());

        // An overwrite inside a followed step's earlier chunk, with later chunks after it: read
        // at once, every reader gets the new bytes.
        let w = key("d");
        tier.open(&w).await.unwrap();
        let mut wx = tier.subscribe(&w).await.unwrap();
        for (i, part) in [&b"first line\n"[..], b"token=abcd\n", b"last line\n"].into_iter().enumerate() {
            let at = [0, 11, 22][i];
            tier.append(&w, at, 1, Bytes::copy_from_slice(part)).await.unwrap();
        }
        tier.sync(&w).await.unwrap();
        wait(&mut wx, "the followed step's bytes", |p| p.durable == 32).await;
        assert_eq!(&tier.read(&w, 0, 100).await.unwrap()[..], b"first line\ntoken=abcd\nlast line\n");
        tier.overwrite(&w, 17, b(b"****")).await.unwrap();
        assert_eq!(&tier.read(&w, 0, 100).await.unwrap()[..], b"first line\ntoken=****\nlast line\n");
        assert_eq!(&tier.read(&w, 11, 11).await.unwrap()[..], b"token=****\n");

        // Stored bytes that differ from the received ones: readers get the stored ones.
        let m = key("c");
        tier.open(&m).await.unwrap();
        let sent = b(b"token=abcd\n");
        tier.append_stored(&m, 0, 1, sent.clone(), Some(b(b"token=****\n"))).await.unwrap();
        tier.sync(&m).await.unwrap();
        assert_eq!(&tier.read(&m, 0, 100).await.unwrap()[..], b"token=****\n");
        match tier.checksum(&m).await {
            Ok(c) => assert_eq!(c, (11, end_for(&sent).checksum)),
            Err(LiveError::Unverifiable { len, .. }) => assert_eq!(len, 11),
            Err(e) => panic!("checksum of masked bytes: {e}"),
        }

        // Release: gone for later readers, twice is fine.
        tier.release(&k).await.unwrap();
        tier.release(&k).await.unwrap();
        assert!(matches!(tier.read(&k, 0, 10).await, Err(LiveError::NotFound(_))));
        assert!(matches!(tier.checksum(&k).await, Err(LiveError::NotFound(_))));
        assert!(!tier.resident(1000).await.unwrap().contains(&k));
        for s in [&r, &m, &w] {
            tier.finish(s, StepEnd { length: 0, ..end_for(b"") }).await.ok();
            tier.release(s).await.unwrap();
        }
    }
}
