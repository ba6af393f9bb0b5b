//! The agent's spool: every byte the command printed, kept on disk until the server acknowledges
//! it as durable, so no failure of the network or the server loses output.
//!
//! The file is a sequence of records `stream: u8, timestamp_us: u64, len: u32, bytes`, in the
//! order the agent read them. Stream offsets are implied by the record lengths. The bound is on
//! *unacknowledged* bytes (`max_unacked`): when it is reached, `append` waits, the agent stops
//! reading the command's pipes and the command blocks on its next write — the documented
//! "block" choice: never drop output, never grow without bound.

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use tailrace_protocol::{StreamHasher, StreamTag};
use tokio::sync::watch;

const RECORD_HEADER: usize = 13;
/// Most recent output kept in memory as well, so the sender usually takes a chunk from memory
/// instead of reading it back from the file: the bound on the agent's payload memory.
const HOT_MAX: usize = 4 * 1024 * 1024;

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
    /// The newest chunks with their file positions, at most `HOT_MAX` bytes, oldest first.
    hot: VecDeque<(u64, Chunk)>,
    hot_bytes: usize,
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
            inner: Mutex::new(Inner { hasher: StreamHasher::new(), hot: VecDeque::new(), hot_bytes: 0, checkpoint: (0, 0) }),
            written: watch::Sender::new(Written::default()),
            acked: watch::Sender::new(0),
        })
    }

    /// Appends output, waiting first while the unacknowledged bytes are at the bound.
    /// Cancel-safe: nothing is written until the wait is over.
    pub async fn append(&self, stream: StreamTag, timestamp_us: u64, bytes: Bytes) -> std::io::Result<()> {
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
        let mut header = [0u8; RECORD_HEADER];
        header[0] = stream.to_byte();
        header[1..9].copy_from_slice(&timestamp_us.to_be_bytes());
        header[9..].copy_from_slice(&(bytes.len() as u32).to_be_bytes());
        self.file.write_all_at(&header, w.file_len)?;
        self.file.write_all_at(&bytes, w.file_len + RECORD_HEADER as u64)?;
        let len = bytes.len();
        {
            let mut inner = self.inner.lock();
            inner.hasher.update(&bytes);
            inner.hot_bytes += len;
            inner.hot.push_back((w.file_len, Chunk { offset: w.len, timestamp_us, stream, bytes }));
            while inner.hot_bytes > HOT_MAX && inner.hot.len() > 1 {
                if let Some((_, old)) = inner.hot.pop_front() {
                    inner.hot_bytes -= old.bytes.len();
                }
            }
        }
        self.written.send_modify(|s| {
            s.len += len as u64;
            s.file_len += (RECORD_HEADER + len) as u64;
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
        if c.skip == 0 {
            let inner = self.inner.lock();
            let hot = &inner.hot;
            if let Ok(i) = hot.binary_search_by_key(&c.pos, |(pos, _)| *pos) {
                let chunk = hot[i].1.clone();
                c.pos += (RECORD_HEADER + chunk.bytes.len()) as u64;
                c.at += chunk.bytes.len() as u64;
                return Ok(Some(chunk));
            }
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
        spool.append(StreamTag::Stdout, 1, Bytes::from_static(b"hello ")).await.unwrap();
        spool.append(StreamTag::Stderr, 2, Bytes::from_static(b"world")).await.unwrap();
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
    async fn chunks_beyond_the_hot_window_come_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::create(dir.path(), u64::MAX).unwrap();
        let piece = |i: u8| Bytes::from(vec![i; HOT_MAX / 3]);
        for i in 0..8 {
            spool.append(StreamTag::Stdout, u64::from(i), piece(i)).await.unwrap();
        }
        let mut c = spool.cursor(0).unwrap();
        for i in 0..8 {
            let ch = spool.next_chunk(&mut c).unwrap().unwrap();
            assert_eq!((ch.offset, ch.timestamp_us, ch.bytes), ((HOT_MAX / 3 * i as usize) as u64, u64::from(i), piece(i)));
        }
        assert!(spool.next_chunk(&mut c).unwrap().is_none());
        assert!(spool.inner.lock().hot_bytes <= HOT_MAX);
    }

    #[tokio::test]
    async fn append_waits_while_unacked_bytes_are_at_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let spool = std::sync::Arc::new(Spool::create(dir.path(), 4).unwrap());
        spool.append(StreamTag::Stdout, 0, Bytes::from_static(b"1234")).await.unwrap();
        let s2 = spool.clone();
        let blocked = tokio::spawn(async move { s2.append(StreamTag::Stdout, 0, Bytes::from_static(b"5")).await });
        tokio::task::yield_now().await;
        assert!(!blocked.is_finished());
        assert_eq!(spool.written().len, 4);
        spool.ack(2);
        blocked.await.unwrap().unwrap();
        assert_eq!(spool.written().len, 5);
    }
}
