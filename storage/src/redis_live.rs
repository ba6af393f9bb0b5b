//! The scale-out live tier: one Redis Stream per running step, shared by every node.
//!
//! Per step (one hash tag, so a Redis Cluster keeps a step on one shard): `tr:{job/step}:m`, a
//! hash with the written length `hwm`, the released prefix `rel`, the end, and the last
//! time-index point; `…:s`, the stream, one entry per appended chunk with id `<offset>-1`;
//! `…:t`, the time index; `…:o`, replacement bytes of entries an overwrite changed. Every
//! change is atomic inside Redis, so two nodes racing on one step cannot interleave or duplicate
//! bytes: a Lua script applies the offset rule (small appends of many steps share one call of
//! the append script, each under its own step's rule: see [`batch`]), except for large appends,
//! which `WATCH` the step and commit with `MULTI`/`EXEC` (see [`watched`]). Appends, prefix
//! releases and ends publish on `…:n`, which each node's follower (see [`follow`]) turns into
//! `watch` updates for its readers and wake-ups for appends waiting for room; small appends
//! publish their bytes, which the follower keeps for those readers, and a node keeps its own
//! large appends' bytes for its readers too.
//! Keys expire `ttl` after the last append; the archiver's release deletes them.
//!
//! Durable means what Redis acknowledged under its own persistence (run it with
//! `appendonly yes` and `appendfsync always`); with `wait_replicas` set, `sync` also waits
//! for that many replicas (`WAIT`). The checksum at END comes from the hash a node kept of the
//! received bytes while its own appends added every byte of the step (the script says which
//! bytes each append added), as the staging tier does; otherwise (another node appended some)
//! it is computed by reading the step back, so such a step whose stored bytes differ from what
//! was sent (masked at ingest, or scrubbed) is verified by length only.

use std::collections::HashMap;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use parking_lot::Mutex;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};
use tailrace_protocol::{JobId, StepId, StreamHasher};
use tokio::sync::{mpsc, watch, Notify};
use tracing::warn;

use crate::live::{AppendOutcome, Gauge, LiveError, LiveTier, Progress, StepEnd, StepKey, Stored};
use crate::segment::{decompress_frame, frame_content_size};

mod batch;
mod follow;
mod watched;

/// A time-index point at least every this many bytes (as the staging tier).
const INDEX_EVERY_BYTES: u64 = 64 * 1024;
/// The set of steps with keys here, for recovery scans.
const RESIDENT: &str = "tr:resident";
/// Bytes per read while hashing a step back.
const HASH_READ: usize = 4 << 20;
/// Most bytes in one stream entry: a read touches little more than it returns.
const ENTRY: usize = 256 * 1024;
/// How often an append waiting for the archiver to release bytes says so in the log.
const FULL_WARN: Duration = Duration::from_secs(30);
/// Appends of at most this many new bytes are pushed to followers with their notification, so
/// a node's readers of a live step get them without reading them back (see [`follow`]).
const PUSH_MAX: usize = 64 * 1024;
/// Where and how long the Redis live tier keeps steps.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis://[user:pass@]host:port[/db]`.
    pub url: String,
    /// Keys of a step expire this long after its last append (abandoned steps).
    pub ttl: Duration,
    /// Replicas `sync` waits for (`WAIT`); 0 trusts the primary's persistence.
    pub wait_replicas: u32,
    /// Most bytes a step holds above the prefix the archiver released: past it, appends wait
    /// (unacknowledged; agents keep their spool) until the archiver takes some (0: no limit).
    /// A running step so holds at most this plus one append (2 MiB) in Redis.
    pub hold_max_bytes: u64,
    /// zstd level of the frames large appends are stored as: the archive's, since the archiver
    /// writes those frames into segments as they are.
    pub level: i32,
}

impl RedisConfig {
    /// The keys' expiry in whole seconds (at least one), as `EXPIRE` takes it.
    fn ttl_secs(&self) -> u64 {
        self.ttl.as_secs().max(1)
    }
}

struct Scripts {
    open: Script,
    read: Script,
    overwrite: Script,
    release_prefix: Script,
    finish: Script,
}

/// The Redis Streams live tier. Cheap to share: [`RedisTier::CONNECTIONS`] multiplexed connections
/// (each reconnecting by itself) for commands, a step's always on the same one, and one
/// pub/sub connection for the follower.
pub struct RedisTier {
    cons: Vec<ConnectionManager>,
    /// Per connection: its small appends, joined into one script call.
    appenders: Vec<batch::Appender>,
    /// Large appends, without the script.
    watched: watched::Watched,
    /// Appends that found their step holding `hold_max_bytes` and waited.
    full_waits: AtomicU64,
    cfg: RedisConfig,
    scripts: Scripts,
    watchers: follow::Watchers,
    follow: mpsc::UnboundedSender<StepKey>,
    /// The hash of the received bytes of steps whose every byte this node's appends added, and
    /// when each was last used (steps that moved to another node are swept after `ttl`).
    hashers: Mutex<HashMap<StepKey, (StreamHasher, Instant)>>,
}

impl std::fmt::Debug for RedisTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTier").field("ttl", &self.cfg.ttl).finish()
    }
}

fn io(what: impl std::fmt::Display, e: impl std::fmt::Display) -> LiveError {
    LiveError::Io { what: what.to_string(), source: std::io::Error::other(e.to_string()) }
}

/// `tr:{job/step}:<suffix>`.
pub(crate) fn key_of(k: &StepKey, suffix: &str) -> String {
    format!("tr:{{{}/{}}}:{suffix}", k.job, k.step)
}

/// A stream entry: its first offset, how many bytes it holds, and how it stores them.
struct Entry {
    start: u64,
    len: usize,
    body: Body,
}

/// An entry's bytes as they are (field `d`) or as one zstd frame (field `z`: large appends),
/// decompressed only when they are read.
enum Body {
    Raw(Bytes),
    Frame(Bytes),
}

impl Entry {
    fn raw(&self, key: &StepKey) -> Result<Bytes, LiveError> {
        match &self.body {
            Body::Raw(b) => Ok(b.clone()),
            Body::Frame(f) => inflate(key, self.start, f),
        }
    }
}

/// The bytes of a stored zstd frame of an entry (at most [`ENTRY`] bytes).
fn inflate(key: &StepKey, start: u64, frame: &[u8]) -> Result<Bytes, LiveError> {
    decompress_frame(frame, ENTRY).map(Bytes::from).map_err(|e| io(key, format!("the entry at {start} is not a readable zstd frame: {e}")))
}

/// The entries of an `XRANGE`/`XREVRANGE` answer, the bytes moved out of the answer, not
/// copied.
fn stream_entries(key: &StepKey, answer: redis::Value) -> Result<Vec<Entry>, LiveError> {
    use redis::Value;
    let bad = || io(key, "unexpected stream entry in an XRANGE answer");
    let Value::Array(rows) = answer else { return Err(bad()) };
    rows.into_iter()
        .map(|row| {
            let Value::Array(parts) = row else { return Err(bad()) };
            let Ok([id, fields]) = <[Value; 2]>::try_from(parts) else { return Err(bad()) };
            let id: String = redis::from_owned_redis_value(id).map_err(|e| io(key, e))?;
            let start: u64 = id.split('-').next().and_then(|n| n.parse().ok()).ok_or_else(|| io(key, format!("bad entry id {id}")))?;
            let Value::Array(fields) = fields else { return Err(bad()) };
            let mut fields = fields.into_iter();
            while let (Some(Value::BulkString(name)), Some(value)) = (fields.next(), fields.next()) {
                let Value::BulkString(data) = value else { return Err(bad()) };
                match name.as_slice() {
                    b"d" => return Ok(Entry { start, len: data.len(), body: Body::Raw(Bytes::from(data)) }),
                    b"z" => {
                        let len = frame_content_size(&data).ok_or_else(|| io(key, format!("the entry at {start} is not a zstd frame that records its size")))?;
                        return Ok(Entry { start, len: len as usize, body: Body::Frame(Bytes::from(data)) });
                    }
                    _ => {}
                }
            }
            Err(io(key, format!("entry {id} has no bytes")))
        })
        .collect()
}

/// Runs a command that is safe to repeat, once more after a connection error: a command
/// connection fails its first command after Redis restarted, then reconnects.
async fn retried<T, F: Future<Output = Result<T, LiveError>>>(mut run: impl FnMut() -> F) -> Result<T, LiveError> {
    match run().await {
        Err(LiveError::Io { .. }) => run().await,
        other => other,
    }
}

fn end_from_json(key: &StepKey, json: &str) -> Result<StepEnd, LiveError> {
    serde_json::from_str(json).map_err(|e| io(format!("end of {key}"), e))
}

impl RedisTier {
    /// Command connections a node opens (besides one for pub/sub); appends queued on one while
    /// its last script call is out are committed together by the next.
    pub const CONNECTIONS: usize = 8;

    /// Connects (failing fast if Redis does not answer) and starts the follower.
    pub async fn connect(cfg: RedisConfig) -> Result<Arc<Self>, LiveError> {
        let client = redis::Client::open(cfg.url.as_str()).map_err(|e| io("live_url", e))?;
        let mcfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_secs(5))
            .set_response_timeout(Duration::from_secs(10))
            .set_number_of_retries(2)
            .set_max_delay(1000);
        let mut cons = Vec::with_capacity(Self::CONNECTIONS);
        for _ in 0..Self::CONNECTIONS {
            let con = tokio::time::timeout(Duration::from_secs(15), client.get_connection_manager_with_config(mcfg.clone()))
                .await
                .map_err(|_| io("Redis", "no answer within 15 s"))?
                .map_err(|e| io("Redis", e))?;
            cons.push(con);
        }
        let scripts = Scripts {
            open: Script::new(include_str!("redis_live/open.lua")),
            read: Script::new(include_str!("redis_live/read.lua")),
            overwrite: Script::new(include_str!("redis_live/overwrite.lua")),
            release_prefix: Script::new(include_str!("redis_live/release_prefix.lua")),
            finish: Script::new(include_str!("redis_live/finish.lua")),
        };
        let watchers = follow::Watchers::default();
        let (tx, rx) = mpsc::unbounded_channel();
        let appenders = cons.iter().map(|c| batch::Appender::start(c.clone(), cfg.ttl_secs(), cfg.hold_max_bytes)).collect();
        let watched = watched::Watched::new(client.clone(), cfg.ttl_secs(), cfg.hold_max_bytes, cfg.level);
        let tier = Arc::new(Self { cons, appenders, watched, full_waits: AtomicU64::new(0), cfg, scripts, watchers: watchers.clone(), follow: tx, hashers: Mutex::default() });
        tokio::spawn(follow::run(client, Arc::downgrade(&tier), watchers, rx));
        let _: () = redis::cmd("PING").query_async(&mut tier.con()).await.map_err(|e| io("Redis", e))?;
        tier.appenders[0].load().await?;
        Ok(tier)
    }

    /// `script` with the step's keys of `suffixes` (`m`, `s`, `t`, `o`), in that order.
    fn on_step<'s>(script: &'s Script, key: &StepKey, suffixes: &[&str]) -> redis::ScriptInvocation<'s> {
        let mut inv = script.prepare_invoke();
        for s in suffixes {
            inv.key(key_of(key, s));
        }
        inv
    }

    /// The connection for commands that are about no step.
    fn con(&self) -> ConnectionManager {
        self.cons[0].clone()
    }

    /// The connection for a step's commands: always the same one, so they run in the order
    /// they are sent.
    fn con_for(&self, key: &StepKey) -> ConnectionManager {
        self.cons[Self::slot(key)].clone()
    }

    fn slot(key: &StepKey) -> usize {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        (BuildHasherDefault::<DefaultHasher>::default().hash_one(key) % Self::CONNECTIONS as u64) as usize
    }

    /// The step's progress as Redis holds it; `None` when it is not here.
    pub(crate) async fn progress(&self, key: &StepKey) -> Result<Option<Progress>, LiveError> {
        let (hwm, end): (Option<u64>, Option<String>) =
            retried(|| async { self.con_for(key).hget(key_of(key, "m"), &["hwm", "end"]).await.map_err(|e| io(key, e)) }).await?;
        let Some(durable) = hwm else { return Ok(None) };
        let end = end.map(|j| end_from_json(key, &j)).transpose()?.map(Arc::new);
        Ok(Some(Progress { durable, end }))
    }

    /// Appends `stored` for `received` (what the agent sent, as long), waiting while the step
    /// holds `hold_max_bytes` the archiver has not released: the step is followed, and its
    /// follower wakes the append when any node releases a prefix (or a notification may have
    /// been missed).
    async fn append_inner(&self, key: &StepKey, offset: u64, timestamp_us: u64, stored: Bytes, received: &[u8], masked: bool) -> Result<AppendOutcome, LiveError> {
        // While waiting: since when, the step's `watch` (which keeps it followed) and the wake-up.
        let mut waiting: Option<(Instant, watch::Receiver<Progress>, Arc<Notify>)> = None;
        let batch::Appended { outcome, hwm, start, pushed } = loop {
            // Armed before the attempt: a release after the attempt found the step full wakes it.
            let released = waiting.as_ref().map(|(_, _, r)| r.clone());
            let mut notified = pin!(released.as_deref().map(Notify::notified));
            if let Some(n) = notified.as_mut().as_pin_mut() {
                n.enable();
            }
            let chunk = batch::Chunk { key: key.clone(), offset, timestamp_us, bytes: stored.clone(), masked };
            let appended = if chunk.bytes.len() > batch::SMALL { self.watched.append(&chunk).await } else { self.appenders[Self::slot(key)].append(chunk).await }?;
            if appended.outcome != "full" {
                break appended;
            }
            let (Some(mut notified), Some((since, _, _))) = (notified.as_pin_mut(), &waiting) else {
                // Full for the first time: follow the step, then try again before waiting.
                self.full_waits.fetch_add(1, Relaxed);
                let progress = self.subscribe(key).await?;
                let released = self.watchers.released(key).ok_or_else(|| io(key, "a followed step is not in the follower's map"))?;
                waiting = Some((Instant::now(), progress, released));
                continue;
            };
            while tokio::time::timeout(FULL_WARN, notified.as_mut()).await.is_err() {
                warn!(
                    step = %key,
                    held_bytes = self.cfg.hold_max_bytes,
                    waited_secs = since.elapsed().as_secs(),
                    "the step's output waits for the archiver: Redis holds the most it may of it; check that an archiver node runs and can write to the archive"
                );
            }
        };
        if start < hwm {
            let added = match (start.checked_sub(offset), hwm.checked_sub(offset)) {
                (Some(a), Some(b)) if b as usize <= received.len() => a as usize..b as usize,
                _ => return Err(io(key, format!("Redis answered an append of {} bytes at {offset} with [{start}, {hwm})", received.len()))),
            };
            if pushed {
                // This node's readers get the bytes now, not when the notification comes back.
                // A copy: a slice would keep the whole buffer the chunk was read into.
                self.watchers.pushed(&key_of(key, "n"), start, || Bytes::copy_from_slice(&stored[added.clone()]));
            } else if stored.len() > batch::SMALL && !masked {
                // A large append is not published, but this node's readers get its bytes from
                // here rather than reading the stream back and decompressing it (within the
                // node's budget). A slice: it is (nearly) the whole batch, and a followed step
                // keeps only its last one.
                self.watchers.kept(&key_of(key, "n"), start, added.len(), || stored.slice(added.clone()));
            }
            self.hash_added(key, &received[added], start);
        }
        Ok(match outcome.as_str() {
            "gap" => AppendOutcome::Gap { hwm },
            "ended" => AppendOutcome::Ended { hwm },
            _ => AppendOutcome::Written { hwm },
        })
    }

    /// Bytes this node's append added at `at`: extends the step's hash if it ends there, else
    /// drops it (another node added bytes in between).
    fn hash_added(&self, key: &StepKey, added: &[u8], at: u64) {
        let mut hashers = self.hashers.lock();
        match hashers.get_mut(key) {
            Some((h, used)) if h.len() == at => {
                h.update(added);
                *used = Instant::now();
            }
            Some(_) => {
                hashers.remove(key);
            }
            None => {}
        }
    }

    /// Starts hashing a step this node opens empty; forgets a hash another node's appends made
    /// stale. Sweeps hashes unused for `ttl` (steps that moved to another node).
    fn start_hash(&self, key: &StepKey, hwm: u64) {
        let mut hashers = self.hashers.lock();
        match hashers.get(key) {
            Some((h, _)) if h.len() != hwm => {
                hashers.remove(key);
            }
            Some(_) => {}
            None if hwm == 0 => {
                if hashers.len() % 1024 == 1023 {
                    let ttl = self.cfg.ttl;
                    hashers.retain(|_, (_, used)| used.elapsed() < ttl);
                }
                hashers.insert(key.clone(), (StreamHasher::new(), Instant::now()));
            }
            None => {}
        }
    }

    /// A read through the Lua script, which applies the overwrite overlay (masked or scrubbed
    /// steps).
    async fn read_scripted(&self, key: &StepKey, offset: u64, max: usize) -> Result<Bytes, LiveError> {
        let (status, n, data): (String, u64, Vec<u8>) = Self::on_step(&self.scripts.read, key, &["m", "s", "o"])
            .arg(offset)
            .arg(max)
            .invoke_async(&mut self.con_for(key))
            .await
            .map_err(|e| io(key, e))?;
        match status.as_str() {
            "missing" => Err(LiveError::NotFound(key.to_string())),
            "released" => Err(LiveError::Released { key: key.to_string(), below: n }),
            // The entry holding `offset` is a stored frame, which Lua cannot decompress.
            "z" => {
                let raw = inflate(key, n, &data)?;
                let from = offset.checked_sub(n).map_or(usize::MAX, |f| f as usize);
                if from >= raw.len() {
                    return Err(io(key, format!("the entry at {n} does not hold offset {offset}")));
                }
                Ok(raw.slice(from..raw.len().min(from.saturating_add(max))))
            }
            _ => Ok(Bytes::from(data)),
        }
    }

    /// One consistent snapshot (MULTI/EXEC: a prefix release cannot slip between the checks and
    /// the entries): the step's hwm, released prefix and mark, and up to `count` entries from
    /// `offset` — with the entry holding `offset` when `before` (an offset inside an entry).
    async fn snapshot(&self, key: &StepKey, offset: u64, count: usize, before: bool) -> Result<(Meta, Vec<Entry>), LiveError> {
        let at = format!("{offset}-1");
        let stream = key_of(key, "s");
        let mut pipe = redis::pipe();
        pipe.atomic().cmd("HMGET").arg(key_of(key, "m")).arg(&["hwm", "rel", "masked"]);
        if before {
            pipe.cmd("XREVRANGE").arg(&stream).arg(&at).arg("-").arg("COUNT").arg(1);
        }
        pipe.cmd("XRANGE").arg(&stream).arg(&at).arg("+").arg("COUNT").arg(count);
        let answer: redis::Value = pipe.query_async(&mut self.con_for(key)).await.map_err(|e| io(key, e))?;
        // Taken apart by value: the entries' bytes become the returned `Bytes` without a copy.
        let redis::Value::Array(parts) = answer else { return Err(io(key, "unexpected MULTI answer")) };
        let mut parts = parts.into_iter();
        let meta = parts.next().ok_or_else(|| io(key, "unexpected MULTI answer"))?;
        let meta: Meta = redis::from_owned_redis_value(meta).map_err(|e| io(key, e))?;
        let mut entries: Vec<Entry> = Vec::new();
        for part in parts {
            for e in stream_entries(key, part)? {
                // The entry before `offset` may also be the first from it.
                if entries.last().is_none_or(|last| e.start > last.start) {
                    entries.push(e);
                }
            }
        }
        Ok((meta, entries))
    }

    /// A read straight from the stream entries: the bytes go from Redis to us without passing
    /// through Lua. `None` for a step with overwritten bytes, which only the script reads
    /// correctly. A read of at least an entry's size ends on an entry boundary unless its first
    /// entry alone is more than asked for, so a sequential reader (tails, downloads, the
    /// archiver) starts each read where an entry starts and needs only the entries from there;
    /// a read inside an entry also asks for the entry before. Smaller reads are filled. The
    /// bytes come in the pieces they were stored as.
    async fn read_entries(&self, key: &StepKey, offset: u64, max: usize) -> Result<Option<Vec<Stored>>, LiveError> {
        let count = max.div_ceil(ENTRY).max(1);
        let (mut meta, mut entries) = self.snapshot(key, offset, count, false).await?;
        let inside = |m: &Meta, e: &[Entry]| m.0.is_some_and(|hwm| offset < hwm) && m.2.is_none() && e.first().is_none_or(|e| e.start != offset);
        if inside(&meta, &entries) {
            (meta, entries) = self.snapshot(key, offset, count, true).await?;
        }
        let (Some(hwm), rel, masked) = meta else { return Err(LiveError::NotFound(key.to_string())) };
        if masked.is_some() {
            return Ok(None);
        }
        let rel = rel.unwrap_or(0);
        if offset < rel {
            return Err(LiveError::Released { key: key.to_string(), below: rel });
        }
        if offset >= hwm || max == 0 {
            return Ok(Some(Vec::new()));
        }
        let mut read = Collect { pos: offset, left: max.min((hwm - offset) as usize), pieces: Vec::new(), entries: 0, align: max >= ENTRY, done: false };
        read.take(key, entries)?;
        if read.pieces.is_empty() {
            return Err(io(key, format!("stream has no entry for offset {offset} below its length {hwm}")));
        }
        // Entries smaller than asked for (small appends): more rounds, sized by what the first
        // returned. A later round that finds its entries released ends the read short.
        while read.left > 0 && !read.done {
            let got = (read.pos - offset) as usize;
            let count = (read.left / (got / read.entries.max(1)).max(1) + 2).min(1024);
            let after: redis::Value = redis::cmd("XRANGE")
                .arg(key_of(key, "s"))
                .arg(format!("{}-1", read.pos))
                .arg("+")
                .arg("COUNT")
                .arg(count)
                .query_async(&mut self.con_for(key))
                .await
                .map_err(|e| io(key, e))?;
            let before = read.pieces.len();
            if read.take(key, stream_entries(key, after)?).is_err() || read.pieces.len() == before {
                break;
            }
        }
        Ok(Some(read.pieces))
    }

    /// Puts the bytes of the entry at `start`, stored as a frame, into the step's overlay,
    /// unless the overlay has that entry already.
    async fn inflate_into_overlay(&self, key: &StepKey, start: u64) -> Result<(), LiveError> {
        let id = format!("{start}-1");
        let answer: redis::Value = redis::cmd("XRANGE").arg(key_of(key, "s")).arg(&id).arg(&id).query_async(&mut self.con_for(key)).await.map_err(|e| io(key, e))?;
        // Gone: a release took it, and the script will say so.
        let Some(entry) = stream_entries(key, answer)?.pop() else { return Ok(()) };
        let raw = entry.raw(key)?;
        let _: () = redis::pipe()
            .atomic()
            .hset_nx(key_of(key, "o"), &id, &raw[..])
            .ignore()
            .expire(key_of(key, "o"), self.cfg.ttl_secs() as i64)
            .ignore()
            .query_async(&mut self.con_for(key))
            .await
            .map_err(|e| io(key, e))?;
        Ok(())
    }

    /// A read in the pieces the bytes are stored as: the bytes kept for this node's readers
    /// (only when `recent`: the archiver wants the stored frames instead), the entries, or (a
    /// step with overwritten bytes) what the script returns.
    async fn read_pieces(&self, key: &StepKey, offset: u64, max: usize, recent: bool) -> Result<Vec<Stored>, LiveError> {
        if let Some(raw) = self.watchers.recent(key, offset, max).filter(|_| recent) {
            return Ok(vec![Stored { raw, frame: None }]);
        }
        retried(|| async {
            match self.read_entries(key, offset, max).await? {
                Some(pieces) => Ok(pieces),
                None => Ok(vec![Stored { raw: self.read_scripted(key, offset, max).await?, frame: None }]),
            }
        })
        .await
    }
}

/// A step's `hwm`, released prefix and mark, as `HMGET` answers them.
type Meta = (Option<u64>, Option<u64>, Option<String>);

/// A read's bytes gathered from stream entries.
struct Collect {
    pos: u64,
    left: usize,
    pieces: Vec<Stored>,
    entries: usize,
    /// End on an entry boundary rather than cut an entry after the first.
    align: bool,
    /// The next entry would have been cut: the read ends on the boundary before it.
    done: bool,
}

impl Collect {
    /// Takes the bytes from `pos` out of entries in order; an entry past `pos` is a hole. When
    /// aligning, only the first piece of a read may end inside an entry. A piece keeps its
    /// entry's stored frame only when it is the whole entry.
    fn take(&mut self, key: &StepKey, entries: impl IntoIterator<Item = Entry>) -> Result<(), LiveError> {
        for entry in entries {
            let (start, len) = (entry.start, entry.len);
            let end = start + len as u64;
            if end <= self.pos {
                continue;
            }
            if start > self.pos {
                return Err(io(key, format!("stream has no entry for offset {} (next starts at {start})", self.pos)));
            }
            let from = (self.pos - start) as usize;
            if self.align && len - from > self.left && !self.pieces.is_empty() {
                self.done = true;
                break;
            }
            let take = (len - from).min(self.left);
            let data = entry.raw(key)?;
            if data.len() != len {
                return Err(io(key, format!("the entry at {start} holds {} bytes, its frame says {len}", data.len())));
            }
            let frame = match entry.body {
                Body::Frame(f) if from == 0 && take == len => Some(f),
                _ => None,
            };
            self.pieces.push(Stored { raw: data.slice(from..from + take), frame });
            self.entries += 1;
            self.pos += take as u64;
            self.left -= take;
            if self.left == 0 {
                break;
            }
        }
        Ok(())
    }
}

impl LiveTier for RedisTier {
    fn open<'a>(&'a self, key: &'a StepKey) -> BoxFuture<'a, Result<Progress, LiveError>> {
        Box::pin(retried(move || async move {
            let (hwm, end): (u64, String) =
                self.scripts.open.key(key_of(key, "m")).arg(self.cfg.ttl_secs()).invoke_async(&mut self.con_for(key)).await.map_err(|e| io(key, e))?;
            let _: () = self.con().sadd(RESIDENT, key.to_string()).await.map_err(|e| io(key, e))?;
            if end.is_empty() {
                self.start_hash(key, hwm);
            }
            let end = (!end.is_empty()).then(|| end_from_json(key, &end)).transpose()?.map(Arc::new);
            Ok(Progress { durable: hwm, end })
        }))
    }

    fn append<'a>(&'a self, key: &'a StepKey, offset: u64, timestamp_us: u64, bytes: Bytes) -> BoxFuture<'a, Result<AppendOutcome, LiveError>> {
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
            match stored {
                // The offset rule needs only the length, which the two share.
                Some(s) if s.len() == bytes.len() => {
                    let masked = s != bytes;
                    self.append_inner(key, offset, timestamp_us, s, &bytes, masked).await
                }
                Some(_) => Err(io(key, "stored bytes must be as long as the received ones")),
                None => self.append_inner(key, offset, timestamp_us, bytes.clone(), &bytes, false).await,
            }
        })
    }

    fn time_index<'a>(&'a self, key: &'a StepKey) -> BoxFuture<'a, Result<Vec<(u64, u64)>, LiveError>> {
        Box::pin(retried(move || async move {
            let points: Vec<String> = self.con_for(key).lrange(key_of(key, "t"), 0, -1).await.map_err(|e| io(key, e))?;
            Ok(points
                .iter()
                .filter_map(|p| {
                    let (o, t) = p.split_once(':')?;
                    Some((o.parse().ok()?, t.parse().ok()?))
                })
                .collect())
        }))
    }

    fn sync<'a>(&'a self, key: &'a StepKey) -> BoxFuture<'a, Result<u64, LiveError>> {
        Box::pin(retried(move || async move {
            let hwm: Option<u64> = self.con_for(key).hget(key_of(key, "m"), "hwm").await.map_err(|e| io(key, e))?;
            let hwm = hwm.ok_or_else(|| LiveError::NotFound(key.to_string()))?;
            if self.cfg.wait_replicas > 0 {
                let acked: u32 = redis::cmd("WAIT")
                    .arg(self.cfg.wait_replicas)
                    .arg(5000)
                    .query_async(&mut self.con_for(key))
                    .await
                    .map_err(|e| io(key, e))?;
                if acked < self.cfg.wait_replicas {
                    return Err(io(key, format!("only {acked} of {} Redis replicas acknowledged within 5 s", self.cfg.wait_replicas)));
                }
            }
            Ok(hwm)
        }))
    }

    fn read<'a>(&'a self, key: &'a StepKey, offset: u64, max: usize) -> BoxFuture<'a, Result<Bytes, LiveError>> {
        Box::pin(async move {
            let mut pieces = self.read_pieces(key, offset, max, true).await?;
            Ok(match pieces.len() {
                0 => Bytes::new(),
                1 => pieces.remove(0).raw,
                _ => Bytes::from(pieces.iter().map(|p| &p.raw[..]).collect::<Vec<_>>().concat()),
            })
        })
    }

    fn read_stored<'a>(&'a self, key: &'a StepKey, offset: u64, max: usize) -> BoxFuture<'a, Result<Vec<Stored>, LiveError>> {
        Box::pin(self.read_pieces(key, offset, max, false))
    }

    fn subscribe<'a>(&'a self, key: &'a StepKey) -> BoxFuture<'a, Result<watch::Receiver<Progress>, LiveError>> {
        Box::pin(async move {
            if let Some(rx) = self.watchers.receiver(key) {
                return Ok(rx);
            }
            let progress = self.progress(key).await?.ok_or_else(|| LiveError::NotFound(key.to_string()))?;
            let (rx, new) = self.watchers.insert(key, progress);
            if new {
                // The follower subscribes, then reads the progress again: nothing published
                // between the read above and the subscription is missed.
                let _ = self.follow.send(key.clone());
            }
            Ok(rx)
        })
    }

    fn checksum<'a>(&'a self, key: &'a StepKey) -> BoxFuture<'a, Result<(u64, String), LiveError>> {
        Box::pin(retried(move || async move {
            let (hwm, rel, masked): (Option<u64>, Option<u64>, Option<String>) =
                redis::cmd("HMGET").arg(key_of(key, "m")).arg(&["hwm", "rel", "masked"]).query_async(&mut self.con_for(key)).await.map_err(|e| io(key, e))?;
            let hwm = hwm.ok_or_else(|| LiveError::NotFound(key.to_string()))?;
            if let Some((h, _)) = self.hashers.lock().get(key).filter(|(h, _)| h.len() == hwm) {
                return Ok((hwm, h.hex()));
            }
            if masked.is_some() {
                return Err(LiveError::Unverifiable { key: key.to_string(), len: hwm });
            }
            if let Some(below) = rel.filter(|r| *r > 0) {
                return Err(LiveError::Released { key: key.to_string(), below });
            }
            let mut h = StreamHasher::new();
            while h.len() < hwm {
                let chunk = self.read(key, h.len(), HASH_READ).await?;
                if chunk.is_empty() {
                    return Err(io(key, format!("stream ends at {} below its length {hwm}", h.len())));
                }
                h.update(&chunk);
            }
            Ok((hwm, h.hex()))
        }))
    }

    fn finish<'a>(&'a self, key: &'a StepKey, end: StepEnd) -> BoxFuture<'a, Result<Arc<StepEnd>, LiveError>> {
        Box::pin(async move {
            let json = serde_json::to_string(&end).map_err(|e| io(key, e))?;
            let (status, held): (String, String) = retried(|| async {
                self.scripts.finish.key(key_of(key, "m")).arg(&json).arg(key_of(key, "n")).invoke_async(&mut self.con_for(key)).await.map_err(|e| io(key, e))
            })
            .await?;
            match status.as_str() {
                "missing" => Err(LiveError::NotFound(key.to_string())),
                "set" => Ok(Arc::new(end)),
                _ => {
                    let held = end_from_json(key, &held)?;
                    if held.length == end.length && held.checksum == end.checksum {
                        Ok(Arc::new(held))
                    } else {
                        Err(LiveError::Conflict {
                            key: key.to_string(),
                            held_len: held.length,
                            held_checksum: held.checksum,
                            len: end.length,
                            checksum: end.checksum,
                        })
                    }
                }
            }
        })
    }

    fn release<'a>(&'a self, key: &'a StepKey) -> BoxFuture<'a, Result<(), LiveError>> {
        Box::pin(retried(move || async move {
            let keys = ["m", "s", "t", "o"].map(|s| key_of(key, s));
            self.watchers.stop_bytes(key);
            self.hashers.lock().remove(key);
            let _: () = redis::pipe()
                .atomic()
                .del(&keys)
                .ignore()
                .srem(RESIDENT, key.to_string())
                .ignore()
                .publish(key_of(key, "n"), "x")
                .ignore()
                .query_async(&mut self.con_for(key))
                .await
                .map_err(|e| io(key, e))?;
            Ok(())
        }))
    }

    fn release_prefix<'a>(&'a self, key: &'a StepKey, upto: u64) -> BoxFuture<'a, Result<(), LiveError>> {
        Box::pin(retried(move || async move {
            self.watchers.forget_bytes(key);
            let _: i64 = Self::on_step(&self.scripts.release_prefix, key, &["m", "s", "o"])
                .arg(upto)
                .arg(key_of(key, "n"))
                .invoke_async(&mut self.con_for(key))
                .await
                .map_err(|e| io(key, e))?;
            Ok(())
        }))
    }

    fn overwrite<'a>(&'a self, key: &'a StepKey, offset: u64, bytes: Bytes) -> BoxFuture<'a, Result<(), LiveError>> {
        Box::pin(async move {
            // Before the change: no reader here is served the old bytes after it returns.
            self.watchers.stop_bytes(key);
            let (status, n) = loop {
                let (status, n): (String, u64) = retried(|| async {
                    Self::on_step(&self.scripts.overwrite, key, &["m", "s", "o"])
                        .arg(offset)
                        .arg(&bytes[..])
                        .arg(self.cfg.ttl_secs())
                        .arg(key_of(key, "n"))
                        .invoke_async(&mut self.con_for(key))
                        .await
                        .map_err(|e| io(key, e))
                })
                .await?;
                if status != "inflate" {
                    break (status, n);
                }
                // A stored frame in the range: its bytes go into the overlay as they are (only
                // if no overwrite put others there first), where the script can change them.
                retried(|| self.inflate_into_overlay(key, n)).await?;
            };
            match status.as_str() {
                "missing" => Err(LiveError::NotFound(key.to_string())),
                "refused" if n > offset => Err(io(key, format!("overwrite at {offset} runs past the {n} bytes written"))),
                "refused" => Err(LiveError::Released { key: key.to_string(), below: n }),
                _ => Ok(()),
            }
        })
    }

    fn health(&self) -> BoxFuture<'_, Result<(), LiveError>> {
        Box::pin(retried(move || async move { redis::cmd("PING").query_async::<()>(&mut self.con()).await.map_err(|e| io("Redis", e)) }))
    }

    /// Redis answers a write after its AOF policy ran (with `appendfsync always`, after the
    /// fsync), so what an append returned is what `sync` would read back — unless acks wait for
    /// replicas, which only `sync` does.
    fn durable_on_append(&self) -> bool {
        self.cfg.wait_replicas == 0
    }

    /// Reads Redis's persistence settings (`CONFIG GET`; a managed Redis that refuses it gets a
    /// note saying what to make sure of instead).
    fn settings(&self) -> BoxFuture<'_, Result<Vec<String>, String>> {
        Box::pin(async move {
            let mut pipe = redis::pipe();
            for name in ["appendonly", "appendfsync", "auto-aof-rewrite-percentage", "auto-aof-rewrite-min-size"] {
                pipe.cmd("CONFIG").arg("GET").arg(name);
            }
            let got: Result<Vec<HashMap<String, String>>, _> = pipe.query_async(&mut self.con()).await;
            let got = match got {
                Ok(g) => g.into_iter().flatten().collect::<HashMap<String, String>>(),
                Err(e) => {
                    return Ok(vec![format!(
                        "could not read Redis's persistence settings ({e}); make sure it runs with appendonly yes and appendfsync always, or set live_wait_replicas"
                    )]);
                }
            };
            let get = |name: &str| got.get(name).map(String::as_str).unwrap_or("");
            let (aof, fsync) = (get("appendonly"), get("appendfsync"));
            if self.cfg.wait_replicas == 0 && (aof != "yes" || fsync != "always") {
                return Err(format!(
                    "Redis runs with appendonly {aof} and appendfsync {fsync}, and live_wait_replicas is 0: output acknowledged to agents is lost if Redis stops; \
                     run Redis with appendonly yes and appendfsync always (in redis.conf, or CONFIG SET then CONFIG REWRITE), or replicate it and set live_wait_replicas"
                ));
            }
            let mut notes = Vec::new();
            let min_mib = get("auto-aof-rewrite-min-size").parse::<u64>().unwrap_or(0) >> 20;
            if aof == "yes" && get("auto-aof-rewrite-percentage") != "0" && min_mib < 1024 {
                notes.push(format!(
                    "Redis rewrites its append-only file from {min_mib} MiB on (auto-aof-rewrite-min-size): each rewrite forks Redis and writes out all it holds, \
                     which with output streaming at MB/s comes every few seconds and delays writes while it runs; set it to 1gb or more"
                ));
            }
            Ok(notes)
        })
    }

    fn gauges(&self) -> BoxFuture<'_, Result<Vec<Gauge>, LiveError>> {
        Box::pin(retried(move || async move {
            let info: String = redis::cmd("INFO").arg("memory").query_async(&mut self.con()).await.map_err(|e| io("Redis", e))?;
            let field = |name: &str| {
                info.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(':')?.trim().parse::<f64>().ok()).unwrap_or(0.0)
            };
            let resident: u64 = self.con().scard(RESIDENT).await.map_err(|e| io(RESIDENT, e))?;
            Ok(vec![
                ("tailrace_live_redis_used_memory_bytes", "Memory Redis uses (INFO memory used_memory).", field("used_memory")),
                ("tailrace_live_redis_maxmemory_bytes", "Redis's maxmemory setting (0: no limit).", field("maxmemory")),
                ("tailrace_live_resident_steps", "Steps whose output the live tier holds.", resident as f64),
                (
                    "tailrace_live_redis_full_waits_total",
                    "Appends that waited because their step held live_hold_max_mib the archiver had not released.",
                    self.full_waits.load(Relaxed) as f64,
                ),
            ])
        }))
    }

    fn resident<'a>(&'a self, limit: usize) -> BoxFuture<'a, Result<Vec<StepKey>, LiveError>> {
        Box::pin(retried(move || async move {
            let members: Vec<String> = self.con().smembers(RESIDENT).await.map_err(|e| io(RESIDENT, e))?;
            let mut out = Vec::new();
            for m in members {
                let Some(key) = m.split_once('/').and_then(|(j, s)| Some(StepKey::new(JobId::new(j).ok()?, StepId::new(s).ok()?))) else {
                    continue;
                };
                // Keys that expired (an abandoned step) leave their member behind: forget it.
                let exists: bool = self.con().exists(key_of(&key, "m")).await.map_err(|e| io(&key, e))?;
                if !exists {
                    let _: () = self.con().srem(RESIDENT, &m).await.map_err(|e| io(&key, e))?;
                    continue;
                }
                out.push(key);
                if out.len() >= limit {
                    break;
                }
            }
            Ok(out)
        }))
    }
}
