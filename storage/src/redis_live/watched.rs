//! Large appends without the script: the step's keys are `WATCH`ed, the offset rule is applied
//! here to what Redis holds, and the new entries go in with one `MULTI`/`EXEC`, which Redis
//! refuses if anything changed the step in between (another node's append, a release); then
//! the append is decided again on what changed.
//!
//! Why: Redis copies every argument of a script call into a Lua string first. For a 1 MiB
//! append that costs about 1.3 ms of Redis's one thread, where `XADD`ing the same bytes costs
//! 0.1 ms (docs/PERFORMANCE.md, "Large appends without Lua"). Small appends stay with the
//! script, which commits many steps' chunks together (see [`super::batch`]).
//!
//! Each entry is stored as a zstd frame at the archive's level (field `z`; `d` when that saves
//! nothing): Redis takes, persists and serves a third of the bytes or less, and the archiver
//! writes the frames into segments as they are.
//!
//! `WATCH` belongs to a connection, so each append here has a connection of its own, from a
//! small pool, for its two round trips. A connection that fails is dropped, never reused: a
//! reconnect would lose the `WATCH` and let an `EXEC` through unchecked.

use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, Value};
use tokio::sync::Semaphore;

use super::batch::{Appended, Chunk};
use super::{ENTRY, INDEX_EVERY_BYTES, io, key_of};
use crate::live::{LiveError, TIME_INDEX_GAP_US};
use crate::segment::compress_frame;

/// Connections (and so large appends in flight) per node.
const CONNECTIONS: usize = 8;
/// Times an append is decided again because the step changed under it before it gives up (each
/// time, some other change to the step went in).
const ATTEMPTS: usize = 100;

/// The fields of a step's meta hash an append reads.
const FIELDS: [&str; 5] = ["hwm", "end", "ti_off", "ti_ts", "rel"];

/// What the step's meta hash held when the append was decided.
#[derive(Debug, Default, PartialEq)]
struct Meta {
    hwm: u64,
    ended: bool,
    ti_off: Option<u64>,
    ti_ts: Option<u64>,
    /// The released prefix.
    rel: u64,
}

/// What an append does to a step, as `append.lua` decides it for small ones.
#[derive(Debug, PartialEq)]
enum Plan {
    /// Nothing to add: this is the answer.
    Answer(Appended),
    /// Add the chunk's bytes from `skip` on, as `[start, hwm)`; `index` when a time-index point
    /// is due at `start`.
    Write { skip: usize, start: u64, hwm: u64, index: bool },
}

/// The append of `len` bytes at `offset` to a step with `meta`, which may hold at most
/// `hold_max` bytes above its released prefix (0: no limit).
fn plan(meta: &Meta, offset: u64, len: usize, timestamp_us: u64, hold_max: u64) -> Plan {
    let hwm = meta.hwm;
    let answer = |outcome: &str| Plan::Answer(Appended { outcome: outcome.to_string(), hwm, start: hwm, pushed: false });
    if meta.ended {
        return answer("ended");
    }
    if offset > hwm {
        return answer("gap");
    }
    let end = offset + len as u64;
    if end <= hwm {
        return answer("written");
    }
    if hold_max > 0 && hwm - meta.rel.min(hwm) >= hold_max {
        return answer("full");
    }
    let due = match (meta.ti_off, meta.ti_ts) {
        (Some(off), Some(ts)) => timestamp_us >= ts && (hwm >= off + INDEX_EVERY_BYTES || timestamp_us >= ts + TIME_INDEX_GAP_US),
        _ => true,
    };
    Plan::Write { skip: (hwm - offset) as usize, start: hwm, hwm: end, index: due }
}

/// One entry an append adds: how many bytes it holds, and the field and bytes it is stored as.
struct Body {
    len: usize,
    field: &'static str,
    bytes: Bytes,
}

/// An entry's bytes compressed at `level` into one zstd frame, or kept as they are where the
/// frame would not be smaller.
fn body(piece: Bytes, level: i32) -> Body {
    match compress_frame(&piece, level) {
        Ok((frame, _)) if frame.len() < piece.len() => Body { len: piece.len(), field: "z", bytes: Bytes::from(frame) },
        _ => Body { len: piece.len(), field: "d", bytes: piece },
    }
}

/// `bytes` cut into entries of at most [`ENTRY`] bytes, compressed at once (on the blocking
/// pool): an append waits for its slowest entry, not for all of them in turn.
async fn bodies(bytes: Bytes, level: i32) -> Result<Vec<Body>, String> {
    let tasks: Vec<_> = (0..bytes.len())
        .step_by(ENTRY)
        .map(|at| {
            let piece = bytes.slice(at..(at + ENTRY).min(bytes.len()));
            tokio::task::spawn_blocking(move || body(piece, level))
        })
        .collect();
    let mut out = Vec::with_capacity(tasks.len());
    for task in tasks {
        out.push(task.await.map_err(|e| format!("compression task failed: {e}"))?);
    }
    Ok(out)
}

fn parse_meta(values: Vec<Option<String>>) -> Result<Meta, String> {
    let num = |v: &Option<String>, name: &str| v.as_deref().map(|s| s.parse::<u64>().map_err(|_| format!("the step's {name} is {s:?}"))).transpose();
    let [hwm, end, ti_off, ti_ts, rel] = <[Option<String>; 5]>::try_from(values).map_err(|v| format!("HMGET answered {} fields", v.len()))?;
    Ok(Meta {
        hwm: num(&hwm, "hwm")?.unwrap_or(0),
        ended: end.is_some(),
        ti_off: num(&ti_off, "ti_off")?,
        ti_ts: num(&ti_ts, "ti_ts")?,
        rel: num(&rel, "rel")?.unwrap_or(0),
    })
}

/// The pool of connections for large appends.
pub(super) struct Watched {
    client: Client,
    config: AsyncConnectionConfig,
    idle: Mutex<Vec<MultiplexedConnection>>,
    slots: Semaphore,
    ttl: u64,
    hold_max: u64,
    level: i32,
}

impl Watched {
    /// Large appends through `client`, with the limits of [`super::batch::Appender::start`],
    /// stored as frames of zstd `level`.
    pub(super) fn new(client: Client, ttl: u64, hold_max: u64, level: i32) -> Self {
        let config = AsyncConnectionConfig::new().set_connection_timeout(Duration::from_secs(5)).set_response_timeout(Duration::from_secs(10));
        Self { client, config, idle: Mutex::default(), slots: Semaphore::new(CONNECTIONS), ttl, hold_max, level }
    }

    /// Appends `chunk` under the offset rule. A failure on a pooled connection (Redis
    /// restarted since it was last used) empties the pool and the append is made once more on
    /// a new connection: whatever the failed one did or did not commit, the offset rule makes
    /// the second the same append.
    pub(super) async fn append(&self, chunk: &Chunk) -> Result<Appended, LiveError> {
        let key = &chunk.key;
        let _slot = self.slots.acquire().await.map_err(|_| io(key, "the Redis appender stopped"))?;
        let pooled = self.idle.lock().pop();
        if let Some(mut con) = pooled {
            match self.attempts(&mut con, chunk).await {
                Ok(appended) => {
                    self.idle.lock().push(con);
                    return Ok(appended);
                }
                // Dropped, with the `WATCH` it may still hold; so are the others.
                Err(_) => self.idle.lock().clear(),
            }
        }
        let mut con = self.client.get_multiplexed_async_connection_with_config(&self.config).await.map_err(|e| io("Redis", e))?;
        let appended = self.attempts(&mut con, chunk).await.map_err(|e| io(key, e))?;
        self.idle.lock().push(con);
        Ok(appended)
    }

    async fn attempts(&self, con: &mut MultiplexedConnection, chunk: &Chunk) -> Result<Appended, String> {
        let (m, s) = (key_of(&chunk.key, "m"), key_of(&chunk.key, "s"));
        // The entries of the last attempt, and from which byte of the chunk they start.
        let mut compressed: Option<(usize, Vec<Body>)> = None;
        for _ in 0..ATTEMPTS {
            let (values,): (Vec<Option<String>>,) = redis::pipe()
                .cmd("WATCH")
                .arg(&m)
                .arg(&s)
                .ignore()
                .cmd("HMGET")
                .arg(&m)
                .arg(&FIELDS[..])
                .query_async(con)
                .await
                .map_err(|e| e.to_string())?;
            let (skip, start, hwm, index) = match plan(&parse_meta(values)?, chunk.offset, chunk.bytes.len(), chunk.timestamp_us, self.hold_max) {
                Plan::Write { skip, start, hwm, index } => (skip, start, hwm, index),
                Plan::Answer(answer) => {
                    let _: () = redis::cmd("UNWATCH").query_async(con).await.map_err(|e| e.to_string())?;
                    return Ok(answer);
                }
            };
            if compressed.as_ref().is_none_or(|(from, _)| *from != skip) {
                compressed = Some((skip, bodies(chunk.bytes.slice(skip..), self.level).await?));
            }
            let entries = compressed.as_ref().map_or(&[][..], |(_, e)| &e[..]);
            let answer: Value = self.commit(chunk, &m, &s, entries, start, hwm, index).query_async(con).await.map_err(|e| e.to_string())?;
            if answer != Value::Nil {
                return Ok(Appended { outcome: "written".to_string(), hwm, start, pushed: false });
            }
        }
        Err(format!("the step changed under each of {ATTEMPTS} attempts to append to it"))
    }

    /// The transaction that adds `entries` (the chunk's bytes from where they are new) as
    /// `[start, hwm)`, with ids `<first offset>-1`, the new `hwm` (and the time-index point,
    /// renewing the keys' expiry, when due), and the notification.
    #[allow(clippy::too_many_arguments)]
    fn commit(&self, chunk: &Chunk, m: &str, s: &str, entries: &[Body], start: u64, hwm: u64, index: bool) -> redis::Pipeline {
        let mut pipe = redis::pipe();
        pipe.atomic();
        let mut at = start;
        for e in entries {
            pipe.cmd("XADD").arg(s).arg(format!("{at}-1")).arg(e.field).arg(&e.bytes[..]).ignore();
            at += e.len as u64;
        }
        let hset = pipe.cmd("HSET").arg(m).arg("hwm").arg(hwm);
        if chunk.masked {
            hset.arg("masked").arg("1");
        }
        if index {
            hset.arg("ti_off").arg(start).arg("ti_ts").arg(chunk.timestamp_us);
        }
        hset.ignore();
        if index {
            let t = key_of(&chunk.key, "t");
            pipe.cmd("RPUSH").arg(&t).arg(format!("{start}:{}", chunk.timestamp_us)).ignore();
            for k in [m, s, t.as_str()] {
                pipe.cmd("EXPIRE").arg(k).arg(self.ttl).ignore();
            }
        }
        pipe.cmd("PUBLISH").arg(key_of(&chunk.key, "n")).arg(format!("h{hwm}")).ignore();
        pipe
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(outcome: &str, hwm: u64) -> Plan {
        Plan::Answer(Appended { outcome: outcome.to_string(), hwm, start: hwm, pushed: false })
    }

    #[test]
    fn the_offset_rule_as_the_append_script_applies_it() {
        let meta = Meta { hwm: 1000, ended: false, ti_off: Some(990), ti_ts: Some(5_000_000), rel: 0 };
        assert_eq!(plan(&meta, 1001, 500, 5_000_000, 0), answer("gap", 1000));
        assert_eq!(plan(&meta, 0, 1000, 5_000_000, 0), answer("written", 1000), "a whole resend adds nothing");
        assert_eq!(plan(&meta, 1000, 0, 5_000_000, 0), answer("written", 1000));
        assert_eq!(plan(&meta, 400, 700, 5_000_000, 0), Plan::Write { skip: 600, start: 1000, hwm: 1100, index: false }, "a resent prefix is cut off");
        assert_eq!(plan(&meta, 1000, 10, 5_000_000, 0), Plan::Write { skip: 0, start: 1000, hwm: 1010, index: false });
        assert_eq!(plan(&Meta { ended: true, ..meta }, 1000, 10, 0, 0), answer("ended", 1000));
        // A fresh step (no meta yet) starts at 0, with a time-index point at its first byte.
        assert_eq!(plan(&Meta::default(), 0, 10, 7, 0), Plan::Write { skip: 0, start: 0, hwm: 10, index: true });
        assert_eq!(plan(&Meta::default(), 5, 10, 7, 0), answer("gap", 0));
    }

    #[test]
    fn a_step_holding_its_most_bytes_above_the_released_prefix_takes_no_more() {
        let meta = Meta { hwm: 1000, rel: 200, ..Meta::default() };
        assert_eq!(plan(&meta, 1000, 10, 0, 800), answer("full", 1000));
        assert_eq!(plan(&meta, 0, 1000, 0, 800), answer("written", 1000), "a resend is answered, not refused");
        assert_eq!(plan(&meta, 1001, 10, 0, 800), answer("gap", 1000));
        assert!(matches!(plan(&meta, 1000, 10, 0, 801), Plan::Write { .. }), "one append may go past the limit");
        assert!(matches!(plan(&meta, 1000, 10, 0, 0), Plan::Write { .. }), "0 is no limit");
    }

    #[test]
    fn a_time_index_point_is_due_every_64_kib_and_after_a_silence_but_never_back_in_time() {
        let meta = Meta { hwm: 1000 + INDEX_EVERY_BYTES, ended: false, ti_off: Some(1000), ti_ts: Some(5_000_000), rel: 0 };
        let index = |meta: &Meta, ts| matches!(plan(meta, meta.hwm, 10, ts, 0), Plan::Write { index: true, .. });
        assert!(index(&meta, 5_000_000), "64 KiB after the last point");
        assert!(!index(&meta, 4_999_999), "a clock that went back adds no point");
        let near = Meta { hwm: 1001, ..meta };
        assert!(!index(&near, 5_000_000));
        assert!(index(&near, 5_000_000 + TIME_INDEX_GAP_US), "after a silence");
    }

    #[test]
    fn meta_fields_are_read_or_refused() {
        let some = |s: &str| Some(s.to_string());
        assert_eq!(parse_meta(vec![None, None, None, None, None]).unwrap(), Meta::default());
        assert_eq!(
            parse_meta(vec![some("12"), some("{}"), some("3"), some("4"), some("5")]).unwrap(),
            Meta { hwm: 12, ended: true, ti_off: Some(3), ti_ts: Some(4), rel: 5 }
        );
        assert!(parse_meta(vec![some("x"), None, None, None, None]).unwrap_err().contains("hwm"));
        assert!(parse_meta(vec![None]).is_err());
    }
}
