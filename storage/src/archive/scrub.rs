//! Scrubbing a secret out of a step's stored output, archive and live tier alike: every byte of
//! every occurrence but newlines becomes `*`, so offsets, lengths and the line index stay valid
//! for readers. Archived segments that hold an occurrence are re-encoded to new objects, the
//! manifest is switched to them, and the old objects are deleted. The step's recorded checksum
//! stays the one the agent sent (the checksum of what was streamed, not of what is stored).

use std::ops::Range;

use bytes::Bytes;
use object_store::path::Path as ObjectPath;
use object_store::ObjectStoreExt;

use super::{Archive, ArchiveError, READ_BLOCK};
use crate::live::{LiveError, StepKey};
use crate::meta::Segment;
use crate::segment::{compress_frame, decompress_frames, seek_table};
use tailrace_protocol::secret::star;
use tailrace_protocol::StreamHasher;

/// What a scrub of one step changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Scrubbed {
    /// Occurrences of the secret found (and masked).
    pub occurrences: u64,
    /// Archived segments rewritten.
    pub segments: u64,
    /// Occurrences masked in the live tier.
    pub live: u64,
}

/// Finds a needle in a stream read in pieces, including across the pieces.
struct Finder<'a> {
    needle: &'a [u8],
    carry: Vec<u8>,
    /// Stream offset of `carry[0]`.
    carry_at: u64,
    found: Vec<Range<u64>>,
}

impl<'a> Finder<'a> {
    fn new(needle: &'a [u8], from: u64) -> Self {
        Self { needle, carry: Vec::new(), carry_at: from, found: Vec::new() }
    }

    /// Feeds the next piece (it follows the previous one in the stream).
    fn feed(&mut self, piece: &[u8]) {
        let carried = self.carry.len();
        self.carry.extend_from_slice(piece);
        let n = self.needle.len();
        for i in memchr::memmem::find_iter(&self.carry, self.needle) {
            // A match wholly inside the carried tail was found with the previous piece.
            if i + n > carried {
                let at = self.carry_at + i as u64;
                self.found.push(at..at + n as u64);
            }
        }
        let keep = self.carry.len().min(n.saturating_sub(1));
        let drop = self.carry.len() - keep;
        self.carry.drain(..drop);
        self.carry_at += drop as u64;
    }
}

/// Masks the bytes of `buf` (at stream offset `at`) that fall in `ranges`, newlines excepted.
fn mask(buf: &mut [u8], at: u64, ranges: &[Range<u64>]) -> bool {
    let end = at + buf.len() as u64;
    let mut changed = false;
    for r in ranges.iter().filter(|r| r.start < end && r.end > at) {
        let (s, e) = ((r.start.max(at) - at) as usize, (r.end.min(end) - at) as usize);
        changed |= star(&mut buf[s..e]);
    }
    changed
}

impl Archive {
    /// Scrubs every occurrence of `secret` from one step. Holds the step's archiving slot here
    /// and its lease in the metadata store, so no archiver (on this node or another) copies
    /// live bytes between the scan and the rewrite; waits up to two lease lengths for them.
    pub async fn scrub_step(&self, key: &StepKey, secret: &[u8]) -> Result<Scrubbed, ArchiveError> {
        if secret.is_empty() {
            return Err(ArchiveError::State("an empty secret cannot be scrubbed".into()));
        }
        loop {
            {
                let mut in_flight = self.in_flight.lock();
                if !in_flight.contains_key(key) {
                    in_flight.insert(key.clone(), false);
                    break;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let deadline = tokio::time::Instant::now() + 2 * super::LEASE;
        let result = loop {
            match self.leased(key, self.scrub_held(key, secret)).await {
                Ok(Some(r)) => break Ok(r),
                Ok(None) if tokio::time::Instant::now() < deadline => tokio::time::sleep(std::time::Duration::from_millis(500)).await,
                Ok(None) => break Err(ArchiveError::State(format!("step {key} is being archived by another node; scrub again"))),
                Err(e) => break Err(e),
            }
        };
        // Work the archiver asked for meanwhile is picked up by its next sweep.
        self.in_flight.lock().remove(key);
        result
    }

    async fn scrub_held(&self, key: &StepKey, secret: &[u8]) -> Result<Scrubbed, ArchiveError> {
        let segments = self.meta.segments(&key.job, &key.step).await?;
        let archived = segments.last().map_or(0, |s| s.start + s.length);
        let mut finder = Finder::new(secret, 0);
        let mut pos = 0u64;
        while pos < archived {
            let b = self.read(&segments, pos, READ_BLOCK).await?;
            if b.is_empty() {
                return Err(ArchiveError::State(format!("archive of {key} ends at {pos}, manifest says {archived}")));
            }
            finder.feed(&b);
            pos += b.len() as u64;
        }
        // Then what the live tier holds beyond the archive (a running step, or one not archived).
        let live_end = match self.live.subscribe(key).await {
            Ok(rx) => rx.borrow().durable,
            Err(LiveError::NotFound(_)) => archived,
            Err(e) => return Err(e.into()),
        };
        while pos < live_end {
            let b = self.live.read(key, pos, READ_BLOCK).await?;
            if b.is_empty() {
                break;
            }
            finder.feed(&b);
            pos += b.len() as u64;
        }
        let found = finder.found;
        let mut done = Scrubbed { occurrences: found.len() as u64, ..Default::default() };
        if found.is_empty() {
            return Ok(done);
        }
        // The live tier: every occurrence it still holds (below its released prefix it holds none).
        for r in &found {
            let mut start = r.start;
            loop {
                let result = match self.read_live_exact(key, start, (r.end - start) as usize).await {
                    Ok(read) => {
                        let mut bytes = read.to_vec();
                        mask(&mut bytes, start, std::slice::from_ref(r));
                        self.live.overwrite(key, start, Bytes::from(bytes)).await.map_err(ArchiveError::from)
                    }
                    Err(e) => Err(e),
                };
                match result {
                    Ok(()) => {
                        done.live += 1;
                        break;
                    }
                    // Partly released meanwhile: the rest is still here.
                    Err(ArchiveError::Live(LiveError::Released { below, .. })) if below > start && below < r.end => start = below,
                    // Released or gone: the archive holds it, and is scrubbed below.
                    Err(ArchiveError::Live(LiveError::Released { .. } | LiveError::NotFound(_)) | ArchiveError::State(_)) => break,
                    Err(e) => return Err(e),
                }
            }
        }
        // The archive: segments holding an occurrence, re-encoded.
        let step = self.meta.step(&key.job, &key.step).await?;
        let complete = step.is_some_and(|s| s.archived_at_ms.is_some());
        let mut rewritten = Vec::new();
        let mut old_keys = Vec::new();
        for seg in segments.iter().filter(|s| found.iter().any(|r| r.start < s.start + s.length && r.end > s.start)) {
            let new = self.rewrite_segment(seg, &found).await?;
            old_keys.push(seg.key.clone());
            rewritten.push(new);
        }
        if !rewritten.is_empty() {
            self.meta.record_segments(&key.job, &key.step, &rewritten, complete).await?;
            for old in old_keys {
                if let Err(e) = self.store.delete(&ObjectPath::from(old.as_str())).await {
                    tracing::warn!(object = %old, error = %e, "could not delete a scrubbed segment's old object; delete it by hand");
                }
            }
        }
        done.segments = rewritten.len() as u64;
        Ok(done)
    }

    /// Writes `seg` again with `ranges` masked, to a new object; returns its manifest entry.
    async fn rewrite_segment(&self, seg: &Segment, ranges: &[Range<u64>]) -> Result<Segment, ArchiveError> {
        let object = self.store.get(&ObjectPath::from(seg.key.as_str())).await?.bytes().await?;
        let frames = seg.frames.clone();
        let level = self.cfg.level;
        let ranges = ranges.to_vec();
        let start = seg.start;
        let (body, entries, checksum) = tokio::task::spawn_blocking(move || -> Result<_, ArchiveError> {
            let mut plain = decompress_frames(&object, &frames)?;
            mask(&mut plain, start, &ranges);
            let mut hasher = StreamHasher::new();
            hasher.update(&plain);
            let mut body = Vec::with_capacity(object.len());
            let mut entries = Vec::with_capacity(frames.len());
            let mut at = 0usize;
            for f in &frames {
                let (c, e) = compress_frame(&plain[at..at + f.decompressed as usize], level)?;
                body.extend_from_slice(&c);
                entries.push(e);
                at += f.decompressed as usize;
            }
            body.extend_from_slice(&seek_table(&entries));
            Ok((body, entries, hasher.hex()))
        })
        .await
        .map_err(|e| ArchiveError::State(format!("scrub task failed: {e}")))??;
        let base = seg.key.strip_suffix(".zst").unwrap_or(&seg.key);
        let base = base.split(".scrubbed-").next().unwrap_or(base);
        let key = format!("{base}.scrubbed-{}.zst", crate::meta::now_ms());
        let compressed = body.len() as u64;
        self.store.put(&ObjectPath::from(key.as_str()), Bytes::from(body).into()).await?;
        Ok(Segment { key, compressed, checksum, frames: entries, ..seg.clone() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_finder_sees_occurrences_across_pieces_once() {
        let text = b"..s3cret..s3c|ret..s3cret";
        for split in 0..text.len() {
            let mut f = Finder::new(b"s3cret", 0);
            let (a, b) = text.split_at(split);
            f.feed(a);
            f.feed(b);
            assert_eq!(f.found, vec![2..8, 19..25], "split at {split}");
        }
        let mut f = Finder::new(b"ab", 0);
        for piece in [&b"a"[..], b"b", b"a", b"", b"b"] {
            f.feed(piece);
        }
        assert_eq!(f.found, vec![0..2, 2..4]);
    }

    #[test]
    fn masking_keeps_newlines_and_length() {
        let mut buf = b"xx pa\nss yy".to_vec();
        assert!(mask(&mut buf, 100, &[103..108, 300..310]));
        assert_eq!(buf, b"xx **\n** yy");
        assert!(!mask(&mut buf, 100, &[200..210, 90..95]));
    }
}
