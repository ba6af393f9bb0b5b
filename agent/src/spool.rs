//! The agent's spool: every byte the command printed, kept on disk until the server acknowledges
//! it as durable, so no failure of the network or the server loses output.
//!
//! The file is a sequence of records `stream: u8, timestamp_us: u64, len: u32, bytes`, in the
//! order the agent read them. Stream offsets are implied by the record lengths. The bound is on
//! *unacknowledged* bytes (`max_unacked`): when it is reached, `append` waits, the agent stops
//! reading the command's pipes and the command blocks on its next write — the documented
//! "block" choice: never drop output, never grow without bound.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use tailrace_protocol::{StreamHasher, StreamTag};
use tokio::sync::watch;

const RECORD_HEADER: usize = 13;

/// A chunk of output read back from the spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub offset: u64,
    pub timestamp_us: u64,
    pub stream: StreamTag,
    pub bytes: Bytes,
}

/// What the writer side has done, for senders to follow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Written {
    /// Stream bytes appended so far.
    pub len: u64,
    /// File bytes used so far.
    pub file_len: u64,
    /// No more appends will come.
    pub closed: bool,
}

/// The spool of one step.
pub struct Spool {
    file: File,
    max_unacked: u64,
    inner: Mutex<Inner>,
    written: watch::Sender<Written>,
    acked: watch::Sender<u64>,
}

struct Inner {
    hasher: StreamHasher,
    /// A record boundary known to be at or below the acked offset: (stream offset, file pos).
    checkpoint: (u64, u64),
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool").field("written", &*self.written.borrow()).field("acked", &*self.acked.borrow()).finish()
    }
}

impl Spool {
    /// A new spool in a fresh unlinked file under `dir`, holding at most `max_unacked` bytes the
    /// server has not acknowledged.
    pub fn create(dir: &Path, max_unacked: u64) -> std::io::Result<Self> {
        let file = tempfile::tempfile_in(dir)?;
        Ok(Self {
            file,
            max_unacked: max_unacked.max(1),
            inner: Mutex::new(Inner { hasher: StreamHasher::new(), checkpoint: (0, 0) }),
            written: watch::Sender::new(Written::default()),
            acked: watch::Sender::new(0),
        })
    }

    /// Appends output, waiting first while the unacknowledged bytes are at the bound.
    /// Cancel-safe: nothing is written until the wait is over.
    pub async fn append(&self, stream: StreamTag, timestamp_us: u64, bytes: &[u8]) -> std::io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        let mut acked = self.acked.subscribe();
        loop {
            let unacked = self.written.borrow().len - *acked.borrow_and_update();
            if unacked < self.max_unacked {
                break;
            }
            if acked.changed().await.is_err() {
                break;
            }
        }
        let w = *self.written.borrow();
        let mut rec = Vec::with_capacity(RECORD_HEADER + bytes.len());
        rec.push(stream.to_byte());
        rec.extend_from_slice(&timestamp_us.to_be_bytes());
        rec.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        rec.extend_from_slice(bytes);
        self.file.write_all_at(&rec, w.file_len)?;
        self.inner.lock().hasher.update(bytes);
        self.written.send_modify(|s| {
            s.len += bytes.len() as u64;
            s.file_len += rec.len() as u64;
        });
        Ok(())
    }

    /// No more output will be appended.
    pub fn close(&self) {
        self.written.send_modify(|s| s.closed = true);
    }

    /// Records that the server holds every byte below `durable`.
    pub fn ack(&self, durable: u64) {
        self.acked.send_if_modified(|a| std::mem::replace(a, (*a).max(durable)) < durable);
    }

    pub fn acked(&self) -> u64 {
        *self.acked.borrow()
    }

    pub fn written(&self) -> Written {
        *self.written.borrow()
    }

    pub fn subscribe(&self) -> watch::Receiver<Written> {
        self.written.subscribe()
    }

    /// Length and checksum of everything appended (the END frame's values once closed).
    pub fn checksum(&self) -> (u64, String) {
        let inner = self.inner.lock();
        (inner.hasher.len(), inner.hasher.hex())
    }

    /// A cursor positioned at stream `offset` (which must not be past the written length).
    pub fn cursor(&self, offset: u64) -> std::io::Result<Cursor> {
        let (mut at, mut pos) = self.inner.lock().checkpoint;
        if at > offset {
            (at, pos) = (0, 0);
        }
        let file_len = self.written.borrow().file_len;
        // Walk record headers to the record holding `offset`.
        while pos < file_len {
            let mut h = [0u8; RECORD_HEADER];
            self.file.read_exact_at(&mut h, pos)?;
            let len = u32::from_be_bytes([h[9], h[10], h[11], h[12]]) as u64;
            if at + len > offset {
                break;
            }
            at += len;
            pos += RECORD_HEADER as u64 + len;
        }
        if offset <= self.acked() {
            self.inner.lock().checkpoint = (at, pos);
        }
        Ok(Cursor { pos, at, skip: offset - at })
    }

    /// Reads the chunk under the cursor and advances it; `None` when it is at the written end.
    pub fn next_chunk(&self, c: &mut Cursor) -> std::io::Result<Option<Chunk>> {
        if c.pos >= self.written.borrow().file_len {
            return Ok(None);
        }
        let mut h = [0u8; RECORD_HEADER];
        self.file.read_exact_at(&mut h, c.pos)?;
        let stream = StreamTag::from_byte(h[0]).unwrap_or(StreamTag::Stdout);
        let timestamp_us = u64::from_be_bytes([h[1], h[2], h[3], h[4], h[5], h[6], h[7], h[8]]);
        let len = u32::from_be_bytes([h[9], h[10], h[11], h[12]]) as u64;
        let mut buf = BytesMut::zeroed((len - c.skip) as usize);
        self.file.read_exact_at(&mut buf, c.pos + RECORD_HEADER as u64 + c.skip)?;
        let chunk = Chunk { offset: c.at + c.skip, timestamp_us, stream, bytes: buf.freeze() };
        c.pos += RECORD_HEADER as u64 + len;
        c.at += len;
        c.skip = 0;
        Ok(Some(chunk))
    }
}

/// A read position in the spool.
#[derive(Debug, Clone, Copy)]
pub struct Cursor {
    pos: u64,
    at: u64,
    skip: u64,
}

impl Cursor {
    /// Stream offset of the next byte this cursor yields.
    pub fn offset(&self) -> u64 {
        self.at + self.skip
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn chunks_come_back_from_any_offset() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::create(dir.path(), 1 << 20).unwrap();
        spool.append(StreamTag::Stdout, 1, b"hello ").await.unwrap();
        spool.append(StreamTag::Stderr, 2, b"world").await.unwrap();
        spool.close();
        let read_all = |from: u64| {
            let mut c = spool.cursor(from).unwrap();
            let mut out = Vec::new();
            while let Some(ch) = spool.next_chunk(&mut c).unwrap() {
                out.push((ch.offset, ch.stream, String::from_utf8(ch.bytes.to_vec()).unwrap()));
            }
            out
        };
        assert_eq!(read_all(0), vec![(0, StreamTag::Stdout, "hello ".into()), (6, StreamTag::Stderr, "world".into())]);
        assert_eq!(read_all(3), vec![(3, StreamTag::Stdout, "lo ".into()), (6, StreamTag::Stderr, "world".into())]);
        spool.ack(8);
        assert_eq!(read_all(8), vec![(8, StreamTag::Stderr, "rld".into())]);
        assert_eq!(read_all(11), vec![]);
        assert_eq!(read_all(1), vec![(1, StreamTag::Stdout, "ello ".into()), (6, StreamTag::Stderr, "world".into())]);
        let mut h = StreamHasher::new();
        h.update(b"hello world");
        assert_eq!(spool.checksum(), (11, h.hex()));
    }

    #[tokio::test]
    async fn append_waits_while_unacked_bytes_are_at_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let spool = std::sync::Arc::new(Spool::create(dir.path(), 4).unwrap());
        spool.append(StreamTag::Stdout, 0, b"1234").await.unwrap();
        let s2 = spool.clone();
        let blocked = tokio::spawn(async move { s2.append(StreamTag::Stdout, 0, b"5").await });
        tokio::task::yield_now().await;
        assert!(!blocked.is_finished());
        assert_eq!(spool.written().len, 4);
        spool.ack(2);
        blocked.await.unwrap().unwrap();
        assert_eq!(spool.written().len, 5);
    }
}
