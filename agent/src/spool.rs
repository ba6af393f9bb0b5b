//! The agent's spool: every byte the command printed, kept until the server acknowledges it as
//! durable, so no failure of the network or the server loses output.
//!
//! Chunks live in memory while the unacknowledged backlog is small (`mem_max`, 8 MiB by
//! default) — the normal case, where nothing touches the disk. When the server is slow or gone,
//! the oldest unacknowledged chunks spill to an unlinked file as records
//! `stream: u8, timestamp_us: u64, len: u32, bytes`; the spilled range is always contiguous,
//! `[disk_start, disk_end)`, just below what memory holds, and the file is emptied once the
//! server has acknowledged it. The overall bound is on *unacknowledged* bytes (`max_unacked`):
//! when it is reached, `append` waits, the agent stops reading the command's pipes and the
//! command blocks on its next write — the documented "block" choice: never drop output, never
//! grow without bound.

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use tailrace_protocol::{StreamHasher, StreamTag};
use tokio::sync::watch;

const RECORD_HEADER: usize = 13;
/// Default bound on unacknowledged output held in memory before it spills to disk.
pub const DEFAULT_MEM_MAX: usize = 8 * 1024 * 1024;

/// A chunk of output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub offset: u64,
    pub timestamp_us: u64,
    pub stream: StreamTag,
    pub bytes: Bytes,
}

impl Chunk {
    fn end(&self) -> u64 {
        self.offset + self.bytes.len() as u64
    }
}

/// What the writer side has done, for senders to follow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Written {
    /// Stream bytes appended so far.
    pub len: u64,
    /// No more appends will come.
    pub closed: bool,
}

/// The spool of one step.
pub struct Spool {
    file: File,
    max_unacked: u64,
    mem_max: usize,
    inner: Mutex<Inner>,
    written: watch::Sender<Written>,
    acked: watch::Sender<u64>,
}

struct Inner {
    hasher: StreamHasher,
    /// Unspilled chunks, oldest first; the first may start below `acked` until it is dropped.
    mem: VecDeque<Chunk>,
    mem_bytes: usize,
    /// Stream range held in the file, and the file's length.
    disk_start: u64,
    disk_end: u64,
    file_len: u64,
    /// Bumped whenever the file is emptied, so cursors drop their cached file positions.
    generation: u64,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool").field("written", &*self.written.borrow()).field("acked", &*self.acked.borrow()).finish()
    }
}

/// A read position in the spool.
#[derive(Debug, Clone, Copy)]
pub struct Cursor {
    offset: u64,
    /// (generation, file position, stream offset) of a record start at or below `offset`.
    disk_hint: Option<(u64, u64, u64)>,
}

impl Cursor {
    /// Stream offset of the next byte this cursor yields.
    pub fn offset(&self) -> u64 {
        self.offset
    }
}

fn invalid(msg: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, msg)
}

impl Spool {
    /// A new spool whose file is a fresh unlinked file under `dir`. At most `max_unacked` bytes
    /// the server has not acknowledged are held, at most `mem_max` of them in memory.
    pub fn create(dir: &Path, max_unacked: u64, mem_max: usize) -> std::io::Result<Self> {
        let file = tempfile::tempfile_in(dir)?;
        Ok(Self {
            file,
            max_unacked: max_unacked.max(1),
            mem_max,
            inner: Mutex::new(Inner {
                hasher: StreamHasher::new(),
                mem: VecDeque::new(),
                mem_bytes: 0,
                disk_start: 0,
                disk_end: 0,
                file_len: 0,
                generation: 0,
            }),
            written: watch::Sender::new(Written::default()),
            acked: watch::Sender::new(0),
        })
    }

    /// Appends output, waiting first while the unacknowledged bytes are at the bound.
    /// Cancel-safe: nothing is appended until the wait is over.
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
        let len = bytes.len();
        {
            let mut inner = self.inner.lock();
            let offset = self.written.borrow().len;
            inner.hasher.update(&bytes);
            inner.mem_bytes += len;
            inner.mem.push_back(Chunk { offset, timestamp_us, stream, bytes });
            self.spill(&mut inner)?;
        }
        self.written.send_modify(|s| s.len += len as u64);
        Ok(())
    }

    /// Moves the oldest unacknowledged chunks to the file while memory is over its bound.
    fn spill(&self, inner: &mut Inner) -> std::io::Result<()> {
        let acked = *self.acked.borrow();
        while inner.mem_bytes > self.mem_max && inner.mem.len() > 1 {
            let Some(chunk) = inner.mem.pop_front() else { break };
            inner.mem_bytes -= chunk.bytes.len();
            if chunk.end() <= acked {
                // Acknowledged meanwhile (an ack races this append), and so is everything already
                // in the file: empty it rather than leave a hole in the spilled range.
                if inner.file_len > 0 {
                    self.file.set_len(0)?;
                    inner.file_len = 0;
                    inner.disk_start = chunk.end();
                    inner.disk_end = chunk.end();
                    inner.generation += 1;
                }
                continue;
            }
            if inner.file_len == 0 {
                inner.disk_start = chunk.offset;
            }
            let mut header = [0u8; RECORD_HEADER];
            header[0] = chunk.stream.to_byte();
            header[1..9].copy_from_slice(&chunk.timestamp_us.to_be_bytes());
            header[9..].copy_from_slice(&(chunk.bytes.len() as u32).to_be_bytes());
            self.file.write_all_at(&header, inner.file_len)?;
            self.file.write_all_at(&chunk.bytes, inner.file_len + RECORD_HEADER as u64)?;
            inner.file_len += (RECORD_HEADER + chunk.bytes.len()) as u64;
            inner.disk_end = chunk.end();
        }
        Ok(())
    }

    /// No more output will be appended.
    pub fn close(&self) {
        self.written.send_modify(|s| s.closed = true);
    }

    /// Records that the server holds every byte below `durable`, and frees what it covers.
    pub fn ack(&self, durable: u64) {
        if !self.acked.send_if_modified(|a| std::mem::replace(a, (*a).max(durable)) < durable) {
            return;
        }
        // An append may run right here, seeing the new ack before the memory below is freed.
        self.release_acked(durable);
    }

    /// Frees memory and file space that acknowledgements up to `durable` cover.
    fn release_acked(&self, durable: u64) {
        let mut inner = self.inner.lock();
        while inner.mem.front().is_some_and(|c| c.end() <= durable) {
            if let Some(c) = inner.mem.pop_front() {
                inner.mem_bytes -= c.bytes.len();
            }
        }
        if inner.file_len > 0 && durable >= inner.disk_end {
            // Everything spilled is held by the server: start the file afresh.
            if self.file.set_len(0).is_ok() {
                inner.file_len = 0;
                inner.disk_start = inner.disk_end;
                inner.generation += 1;
            }
        }
    }

    pub fn acked(&self) -> u64 {
        *self.acked.borrow()
    }

    /// Waits until the server has acknowledged at least `n` bytes.
    pub async fn wait_acked(&self, n: u64) {
        let _ = self.acked.subscribe().wait_for(|&a| a >= n).await;
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

    /// A cursor at stream `offset`.
    pub fn cursor(&self, offset: u64) -> Cursor {
        Cursor { offset, disk_hint: None }
    }

    /// The chunk (or rest of a chunk) at the cursor, advancing it; `None` at the written end.
    /// Fails if the bytes were already released as acknowledged (the server lost acked data).
    pub fn next_chunk(&self, c: &mut Cursor) -> std::io::Result<Option<Chunk>> {
        let inner = self.inner.lock();
        if c.offset >= self.written.borrow().len {
            return Ok(None);
        }
        let chunk = if c.offset >= inner.disk_end || inner.file_len == 0 {
            let i = inner.mem.partition_point(|ch| ch.end() <= c.offset);
            let ch = inner.mem.get(i).filter(|ch| ch.offset <= c.offset).ok_or_else(|| {
                invalid(format!("spool no longer holds offset {}: the server acknowledged it before", c.offset))
            })?;
            let skip = (c.offset - ch.offset) as usize;
            Chunk { offset: c.offset, timestamp_us: ch.timestamp_us, stream: ch.stream, bytes: ch.bytes.slice(skip..) }
        } else {
            if c.offset < inner.disk_start {
                return Err(invalid(format!("spool no longer holds offset {}: the server acknowledged it before", c.offset)));
            }
            let (mut pos, mut at) = match c.disk_hint {
                Some((g, pos, at)) if g == inner.generation && at <= c.offset => (pos, at),
                _ => (0, inner.disk_start),
            };
            loop {
                let mut h = [0u8; RECORD_HEADER];
                self.file.read_exact_at(&mut h, pos)?;
                let len = u64::from(u32::from_be_bytes([h[9], h[10], h[11], h[12]]));
                if at + len > c.offset {
                    let skip = c.offset - at;
                    let mut buf = BytesMut::zeroed((len - skip) as usize);
                    self.file.read_exact_at(&mut buf, pos + RECORD_HEADER as u64 + skip)?;
                    c.disk_hint = Some((inner.generation, pos + RECORD_HEADER as u64 + len, at + len));
                    break Chunk {
                        offset: c.offset,
                        timestamp_us: u64::from_be_bytes([h[1], h[2], h[3], h[4], h[5], h[6], h[7], h[8]]),
                        stream: StreamTag::from_byte(h[0]).unwrap_or(StreamTag::Stdout),
                        bytes: buf.freeze(),
                    };
                }
                at += len;
                pos += RECORD_HEADER as u64 + len;
            }
        };
        c.offset = chunk.end();
        Ok(Some(chunk))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(spool: &Spool, from: u64) -> Vec<(u64, StreamTag, String)> {
        let mut c = spool.cursor(from);
        let mut out = Vec::new();
        while let Some(ch) = spool.next_chunk(&mut c).unwrap() {
            out.push((ch.offset, ch.stream, String::from_utf8(ch.bytes.to_vec()).unwrap()));
        }
        out
    }

    #[tokio::test]
    async fn chunks_come_back_from_any_offset_in_memory_and_on_disk() {
        for mem_max in [1 << 20, 0] {
            let dir = tempfile::tempdir().unwrap();
            let spool = Spool::create(dir.path(), 1 << 20, mem_max).unwrap();
            spool.append(StreamTag::Stdout, 1, Bytes::from_static(b"hello ")).await.unwrap();
            spool.append(StreamTag::Stderr, 2, Bytes::from_static(b"world")).await.unwrap();
            spool.append(StreamTag::Stdout, 3, Bytes::from_static(b"!")).await.unwrap();
            spool.close();
            let all = vec![(0, StreamTag::Stdout, "hello ".into()), (6, StreamTag::Stderr, "world".into()), (11, StreamTag::Stdout, "!".into())];
            assert_eq!(read_all(&spool, 0), all, "mem_max {mem_max}");
            assert_eq!(read_all(&spool, 3)[0], (3, StreamTag::Stdout, "lo ".into()));
            assert_eq!(read_all(&spool, 8)[0], (8, StreamTag::Stderr, "rld".into()));
            assert_eq!(read_all(&spool, 12), vec![]);
            spool.ack(6);
            assert_eq!(read_all(&spool, 6), all[1..].to_vec());
            if mem_max > 0 {
                assert!(spool.next_chunk(&mut spool.cursor(2)).is_err(), "acknowledged bytes in memory are released");
            }
            let mut h = StreamHasher::new();
            h.update(b"hello world!");
            assert_eq!(spool.checksum(), (12, h.hex()));
        }
    }

    #[tokio::test]
    async fn the_file_is_emptied_once_everything_spilled_is_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::create(dir.path(), u64::MAX, 8).unwrap();
        for i in 0..10u8 {
            spool.append(StreamTag::Stdout, 0, Bytes::from(vec![b'a' + i; 4])).await.unwrap();
        }
        let spilled = spool.inner.lock().file_len;
        assert!(spilled > 0);
        let mut c = spool.cursor(0);
        spool.next_chunk(&mut c).unwrap();
        spool.ack(36);
        assert_eq!(spool.inner.lock().file_len, 0);
        // The cursor's cached file position is stale now; reads continue from memory.
        let ch = spool.next_chunk(&mut spool.cursor(36)).unwrap().unwrap();
        assert_eq!(ch.bytes, Bytes::from_static(b"jjjj"));
        spool.append(StreamTag::Stdout, 0, Bytes::from_static(b"kkkkllllmmmm")).await.unwrap();
        let text: String = read_all(&spool, 36).into_iter().map(|(_, _, s)| s).collect();
        assert_eq!(text, "jjjjkkkkllllmmmm");
    }

    proptest::proptest! {
        // Model test: any interleaving of appends, acks (including acks that land before the
        // spill sees them) and reads from any unacknowledged offset returns exactly the stream.
        #[test]
        fn reads_match_the_stream_under_any_acks_and_spills(
            mem_max in 0usize..64,
            ops in proptest::collection::vec((0u8..4, 1usize..40, 0u64..1000), 1..80),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            rt.block_on(async {
                let dir = tempfile::tempdir().unwrap();
                let spool = Spool::create(dir.path(), u64::MAX, mem_max).unwrap();
                let mut model: Vec<u8> = Vec::new();
                let mut acked = 0u64;
                for (i, (op, n, x)) in ops.into_iter().enumerate() {
                    match op {
                        0 | 1 => {
                            let bytes: Vec<u8> = (0..n).map(|j| (i * 31 + j) as u8).collect();
                            model.extend_from_slice(&bytes);
                            spool.append(StreamTag::Stdout, 0, Bytes::from(bytes)).await.unwrap();
                        }
                        2 if n % 2 == 0 => {
                            acked = acked.max(x % (model.len() as u64 + 1));
                            spool.ack(acked);
                        }
                        2 => {
                            // An ack racing an append: the append sees the new ack before the
                            // ack frees anything.
                            acked = acked.max(x % (model.len() as u64 + 1));
                            spool.acked.send_replace(acked);
                            let bytes: Vec<u8> = (0..n).map(|j| (i * 17 + j) as u8).collect();
                            model.extend_from_slice(&bytes);
                            spool.append(StreamTag::Stdout, 0, Bytes::from(bytes)).await.unwrap();
                            spool.release_acked(acked);
                        }
                        _ => {
                            let from = acked + x % (model.len() as u64 - acked + 1);
                            let mut c = spool.cursor(from);
                            let mut got = Vec::new();
                            while let Some(ch) = spool.next_chunk(&mut c).unwrap() {
                                assert_eq!(ch.offset, from + got.len() as u64);
                                got.extend_from_slice(&ch.bytes);
                            }
                            assert_eq!(&got[..], &model[from as usize..]);
                        }
                    }
                }
            });
        }
    }

    #[tokio::test]
    async fn append_waits_while_unacked_bytes_are_at_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let spool = std::sync::Arc::new(Spool::create(dir.path(), 4, DEFAULT_MEM_MAX).unwrap());
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
