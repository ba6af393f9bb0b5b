//! Group commit of appends: the append script takes the chunks of many steps in one call, and
//! small appends that queue on a connection while its last call is out go to Redis together.
//!
//! Why: Redis reads at most 16 KiB of small arguments from a connection per turn of its event
//! loop (a bulk argument of 32 KiB or more is read whole), and with `appendfsync always` every
//! turn ends in an fsync. A thousand steps' 1 KB appends sent one command each took a dozen
//! turns — a dozen fsyncs — per tick; joined, their bytes travel as one argument and one call
//! commits them all. Large appends gain nothing from company and go without the script (see
//! [`super::watched`]).
//!
//! The queue is unbounded in count but not in bytes: a step's stream has one append out at a
//! time (ingest awaits each), so it holds at most one small chunk per open stream.

use std::io::Write as _;

use bytes::Bytes;
use redis::aio::ConnectionManager;
use redis::{RedisWrite as _, Script};
use tokio::sync::{mpsc, oneshot};

use super::{ENTRY, INDEX_EVERY_BYTES, PUSH_MAX, io, key_of};
use crate::live::{LiveError, StepKey, TIME_INDEX_GAP_US};

/// Appends of at most this many bytes go through the script, waiting for company while a call
/// is out; larger ones go through [`super::watched`].
pub(super) const SMALL: usize = 64 * 1024;
/// A call takes queued chunks until it holds this many bytes…
const BATCH_BYTES: usize = 256 * 1024;
/// …or this many chunks.
const BATCH_CHUNKS: usize = 256;

/// One step's chunk to append: `bytes` are what is stored, `masked` when they differ from
/// what the agent sent.
pub(super) struct Chunk {
    pub key: StepKey,
    pub offset: u64,
    pub timestamp_us: u64,
    pub bytes: Bytes,
    pub masked: bool,
}

/// What the append script answered for one chunk: the call added the bytes `[start, hwm)`,
/// and published them with the notification when `pushed`.
#[derive(Debug, PartialEq)]
pub(super) struct Appended {
    pub outcome: String,
    pub hwm: u64,
    pub start: u64,
    pub pushed: bool,
}

/// The small appends of one connection, joined while a call is out. Cheap to share; its task
/// ends when the last handle is dropped.
#[derive(Clone)]
pub(super) struct Appender {
    con: ConnectionManager,
    script: Script,
    queue: mpsc::UnboundedSender<(Chunk, oneshot::Sender<Result<Appended, String>>)>,
}

impl Appender {
    /// Starts the connection's batching task (in the current runtime). Keys expire `ttl`
    /// seconds after an append; a step holding `hold_max` bytes above its released prefix takes
    /// no more (0: no limit).
    pub(super) fn start(con: ConnectionManager, ttl: u64, hold_max: u64) -> Self {
        let script = Script::new(include_str!("append.lua"));
        let (queue, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(con.clone(), script.clone(), [ttl, hold_max], rx));
        Self { con, script, queue }
    }

    /// Loads the append script into Redis (ahead of the first append, which would otherwise
    /// find it missing on every connection at once).
    pub(super) async fn load(&self) -> Result<(), LiveError> {
        self.script.prepare_invoke().load_async(&mut self.con.clone()).await.map(drop).map_err(|e| io("Redis", e))
    }

    /// Appends `chunk` (of at most [`SMALL`] bytes) under the offset rule.
    pub(super) async fn append(&self, chunk: Chunk) -> Result<Appended, LiveError> {
        let key = chunk.key.clone();
        let (tx, rx) = oneshot::channel();
        self.queue.send((chunk, tx)).map_err(|_| io(&key, "the Redis appender stopped"))?;
        rx.await.map_err(|_| io(&key, "the Redis appender stopped"))?.map_err(|e| io(&key, e))
    }
}

/// Takes what queued while the last call was out (up to a call's worth) and sends it as one.
async fn run(mut con: ConnectionManager, script: Script, limits: [u64; 2], mut rx: mpsc::UnboundedReceiver<(Chunk, oneshot::Sender<Result<Appended, String>>)>) {
    let mut chunks = Vec::new();
    let mut replies = Vec::new();
    while let Some((first, reply)) = rx.recv().await {
        let mut bytes = first.bytes.len();
        chunks.push(first);
        replies.push(reply);
        while chunks.len() < BATCH_CHUNKS && bytes < BATCH_BYTES {
            let Ok((chunk, reply)) = rx.try_recv() else { break };
            bytes += chunk.bytes.len();
            chunks.push(chunk);
            replies.push(reply);
        }
        match call(&mut con, &script, limits, &chunks).await {
            Ok(answers) => {
                // An answer short of the chunks (never from this script) drops the rest's
                // replies, which their callers see as an error.
                for (reply, answer) in replies.drain(..).zip(answers) {
                    let _ = reply.send(Ok(answer));
                }
            }
            Err(e) => {
                let e = e.to_string();
                for reply in replies.drain(..) {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
        chunks.clear();
    }
}

/// One call of the append script for `chunks` (applied in order; a step may have several),
/// loading the script when Redis lost it (a restart, `SCRIPT FLUSH`) and sending the call once
/// more.
async fn call(con: &mut ConnectionManager, script: &Script, limits: [u64; 2], chunks: &[Chunk]) -> Result<Vec<Appended>, redis::RedisError> {
    let cmd = command(script.get_hash(), limits, chunks);
    let answers: Vec<(String, u64, u64, u8)> = match cmd.query_async(con).await {
        Err(e) if e.kind() == redis::ErrorKind::NoScriptError => {
            script.prepare_invoke().load_async(con).await?;
            cmd.query_async(con).await
        }
        other => other,
    }?;
    Ok(answers.into_iter().map(|(outcome, hwm, start, pushed)| Appended { outcome, hwm, start, pushed: pushed == 1 }).collect())
}

/// The `EVALSHA` of the append script, built by hand: the bytes are copied once, into the
/// command (a `ScriptInvocation` copies its arguments twice more). They follow the chunks'
/// descriptions as one run cut into pieces of [`ENTRY`] bytes, so a large chunk is whole
/// pieces and a batch of small ones is one argument.
fn command(sha: &str, [ttl, hold_max]: [u64; 2], chunks: &[Chunk]) -> redis::Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(sha).arg(chunks.len());
    for c in chunks {
        cmd.arg(key_of(&c.key, "m"));
    }
    cmd.arg(ttl).arg(INDEX_EVERY_BYTES).arg(TIME_INDEX_GAP_US).arg(PUSH_MAX).arg(hold_max);
    for c in chunks {
        cmd.arg(c.offset).arg(c.timestamp_us).arg(c.bytes.len()).arg(if c.masked { "1" } else { "0" });
    }
    let mut left: usize = chunks.iter().map(|c| c.bytes.len()).sum();
    let mut rest = chunks.iter().map(|c| &c.bytes[..]);
    let mut cur: &[u8] = &[];
    while left > 0 {
        let mut need = left.min(ENTRY);
        left -= need;
        let mut piece = cmd.writer_for_next_arg();
        while need > 0 {
            if cur.is_empty() {
                let Some(next) = rest.next() else { break };
                cur = next;
                continue;
            }
            let n = need.min(cur.len());
            // Writing into the command's own buffer cannot fail.
            let _ = piece.write_all(&cur[..n]);
            cur = &cur[n..];
            need -= n;
        }
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(step: &str, bytes: &[u8]) -> Chunk {
        let key = StepKey::new(tailrace_protocol::JobId::new("j1").unwrap(), tailrace_protocol::StepId::new(step).unwrap());
        Chunk { key, offset: 0, timestamp_us: 1, bytes: Bytes::copy_from_slice(bytes), masked: false }
    }

    /// The arguments after the fixed ones and the chunks' descriptions: the pieces.
    fn pieces(chunks: &[Chunk]) -> Vec<Vec<u8>> {
        let cmd = command("sha", [60, 0], chunks);
        let fixed = 2 + chunks.len() + 5 + 4 * chunks.len();
        cmd.args_iter()
            .skip(1 + fixed)
            .map(|a| match a {
                redis::Arg::Simple(b) => b.to_vec(),
                redis::Arg::Cursor => Vec::new(),
            })
            .collect()
    }

    #[test]
    fn small_chunks_travel_as_one_piece_and_large_ones_as_entry_sized_pieces() {
        let small = [chunk("a", b"hello "), chunk("b", b""), chunk("c", b"world")];
        assert_eq!(pieces(&small), vec![b"hello world".to_vec()]);
        let big: Vec<u8> = (0..ENTRY * 2 + 10).map(|i| i as u8).collect();
        let large = [chunk("a", &big)];
        let got = pieces(&large);
        assert_eq!(got.iter().map(Vec::len).collect::<Vec<_>>(), vec![ENTRY, ENTRY, 10]);
        assert_eq!(got.concat(), big);
        // A run across chunks is cut at ENTRY wherever it falls.
        let mixed = [chunk("a", &big[..ENTRY - 3]), chunk("b", &big[..7])];
        let got = pieces(&mixed);
        assert_eq!(got.iter().map(Vec::len).collect::<Vec<_>>(), vec![ENTRY, 4]);
        assert_eq!(got.concat(), [&big[..ENTRY - 3], &big[..7]].concat());
    }
}
