//! The archive's segment format: zstd *seekable* objects. Independent zstd frames of up to
//! 256 KiB of input each, followed by the seek table in a skippable frame (the format of zstd's
//! `contrib/seekable_format`), so `zstd -d` reads a segment as a plain file and a range read
//! fetches and decompresses only the frames it covers. Pure functions; no I/O.

use std::cell::RefCell;

use serde::{Deserialize, Serialize};

/// Input bytes per zstd frame.
pub const FRAME_INPUT: usize = 256 * 1024;
const SKIPPABLE_MAGIC: u32 = 0x184D_2A5E;
const SEEKABLE_MAGIC: u32 = 0x8F92_EAB1;
const FOOTER: usize = 9;

/// One frame of a segment: its compressed and decompressed sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrameEntry {
    pub compressed: u32,
    pub decompressed: u32,
}

/// Why a segment could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SegmentError {
    #[error("zstd: {0}")]
    Zstd(#[from] std::io::Error),
    #[error("corrupt segment: {0}")]
    Corrupt(String),
}

thread_local! {
    /// Each thread's zstd contexts, made once: making one costs more than a small frame.
    static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// Runs `f` with this thread's decompression context.
fn with_decompressor<T>(f: impl FnOnce(&mut zstd::bulk::Decompressor<'static>) -> std::io::Result<T>) -> std::io::Result<T> {
    DECOMPRESSOR.with_borrow_mut(|d| {
        let d = match d {
            Some(d) => d,
            None => d.insert(zstd::bulk::Decompressor::new()?),
        };
        f(d)
    })
}

/// Compresses one frame (at most [`FRAME_INPUT`] bytes) at `level`; the frame records its
/// decompressed size.
pub fn compress_frame(input: &[u8], level: i32) -> Result<(Vec<u8>, FrameEntry), SegmentError> {
    let out = COMPRESSOR.with_borrow_mut(|c| {
        let c = match c {
            Some(c) => c,
            None => c.insert(zstd::bulk::Compressor::new(level)?),
        };
        c.set_compression_level(level)?;
        c.compress(input)
    })?;
    let entry = FrameEntry { compressed: out.len() as u32, decompressed: input.len() as u32 };
    Ok((out, entry))
}

/// Decompresses one frame of at most `max` bytes.
pub fn decompress_frame(frame: &[u8], max: usize) -> Result<Vec<u8>, SegmentError> {
    Ok(with_decompressor(|d| d.decompress(frame, max))?)
}

/// The decompressed size a frame's header records (frames from [`compress_frame`] record it).
pub fn frame_content_size(frame: &[u8]) -> Option<u64> {
    zstd::zstd_safe::get_frame_content_size(frame).ok().flatten()
}

/// The seek table for `frames`, as a skippable frame to append after them.
pub fn seek_table(frames: &[FrameEntry]) -> Vec<u8> {
    let body = frames.len() * 8 + FOOTER;
    let mut out = Vec::with_capacity(8 + body);
    out.extend_from_slice(&SKIPPABLE_MAGIC.to_le_bytes());
    out.extend_from_slice(&(body as u32).to_le_bytes());
    for f in frames {
        out.extend_from_slice(&f.compressed.to_le_bytes());
        out.extend_from_slice(&f.decompressed.to_le_bytes());
    }
    out.extend_from_slice(&(frames.len() as u32).to_le_bytes());
    out.push(0); // descriptor: no per-frame checksums
    out.extend_from_slice(&SEEKABLE_MAGIC.to_le_bytes());
    out
}

/// Reads the seek table at the end of a whole segment object.
pub fn parse_seek_table(object: &[u8]) -> Result<Vec<FrameEntry>, SegmentError> {
    let corrupt = |m: &str| SegmentError::Corrupt(m.to_string());
    if object.len() < 8 + FOOTER {
        return Err(corrupt("shorter than a seek table"));
    }
    let foot = &object[object.len() - FOOTER..];
    let n = u32::from_le_bytes([foot[0], foot[1], foot[2], foot[3]]) as usize;
    if u32::from_le_bytes([foot[5], foot[6], foot[7], foot[8]]) != SEEKABLE_MAGIC {
        return Err(corrupt("no seekable magic at the end"));
    }
    if foot[4] != 0 {
        return Err(corrupt("unsupported seek table descriptor"));
    }
    let table = n.checked_mul(8).and_then(|t| t.checked_add(8 + FOOTER)).filter(|&t| t <= object.len()).ok_or_else(|| corrupt("seek table larger than the object"))?;
    let start = object.len() - table;
    let entries = &object[start + 8..object.len() - FOOTER];
    Ok(entries
        .chunks_exact(8)
        .map(|e| FrameEntry {
            compressed: u32::from_le_bytes([e[0], e[1], e[2], e[3]]),
            decompressed: u32::from_le_bytes([e[4], e[5], e[6], e[7]]),
        })
        .collect())
}

/// Which frames of a segment cover stream bytes `[start, end)` (relative to the segment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameSpan {
    /// Byte range of those frames within the object.
    pub object_range: std::ops::Range<u64>,
    /// Decompressed offset (within the segment) of the first covered frame.
    pub first_offset: u64,
    /// The covered frames, in order.
    pub frames: Vec<FrameEntry>,
}

/// The frames covering `[start, end)`; empty when the range is empty or past the segment.
pub fn covering(frames: &[FrameEntry], start: u64, end: u64) -> FrameSpan {
    let (mut c, mut d) = (0u64, 0u64);
    let mut span = FrameSpan { object_range: 0..0, first_offset: 0, frames: Vec::new() };
    for f in frames {
        let (fc, fd) = (u64::from(f.compressed), u64::from(f.decompressed));
        if d + fd > start && d < end {
            if span.frames.is_empty() {
                span.object_range.start = c;
                span.first_offset = d;
            }
            span.object_range.end = c + fc;
            span.frames.push(*f);
        }
        c += fc;
        d += fd;
    }
    span
}

/// Decompresses consecutive frames (the bytes of a [`FrameSpan`]'s object range) into one
/// buffer, with one decompression context for all of them.
pub fn decompress_frames(bytes: &[u8], frames: &[FrameEntry]) -> Result<Vec<u8>, SegmentError> {
    let total: usize = frames.iter().map(|f| f.decompressed as usize).sum();
    // Each frame lands after the last in the buffer's spare capacity: nothing is zero-filled.
    let mut out = std::io::Cursor::new(Vec::with_capacity(total));
    let mut pos = 0usize;
    for f in frames {
        let end = pos + f.compressed as usize;
        let frame = bytes.get(pos..end).ok_or_else(|| SegmentError::Corrupt("frame extends past the fetched range".into()))?;
        let want = f.decompressed as usize;
        out.set_position(out.get_ref().len() as u64);
        let n = with_decompressor(|d| d.decompress_to_buffer(frame, &mut out))?;
        if n != want {
            return Err(SegmentError::Corrupt(format!("frame decompressed to {n} bytes, table says {want}")));
        }
        pos = end;
    }
    Ok(out.into_inner())
}

/// Where a read of `[start, end)` should stop so that it ends on a frame boundary: the last
/// boundary inside the range, or `end` when the range lies within one frame. Sequential readers
/// then start each read on a boundary and decompress every frame once.
pub fn frame_aligned_end(frames: &[FrameEntry], start: u64, end: u64) -> u64 {
    let mut at = 0u64;
    let mut cut = end;
    for f in frames {
        at += u64::from(f.decompressed);
        if at >= end {
            break;
        }
        if at > start {
            cut = at;
        }
    }
    cut
}

/// Newlines in `bytes` (a frame's entry in the line index), counted in runs of 255 with
/// byte-wide sums, which vectorise (the `segment/count_newlines` bench).
pub fn count_newlines(bytes: &[u8]) -> usize {
    bytes.chunks(255).map(|c| c.iter().fold(0u8, |n, &b| n.wrapping_add(u8::from(b == b'\n'))) as usize).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_cut_at_the_last_frame_boundary_inside_them() {
        let frames: Vec<FrameEntry> = (0..4).map(|_| FrameEntry { compressed: 10, decompressed: 100 }).collect();
        assert_eq!(frame_aligned_end(&frames, 0, 100), 100, "one whole frame");
        assert_eq!(frame_aligned_end(&frames, 50, 150), 100, "the rest of the first frame");
        assert_eq!(frame_aligned_end(&frames, 100, 200), 200);
        assert_eq!(frame_aligned_end(&frames, 100, 350), 300, "whole frames only");
        assert_eq!(frame_aligned_end(&frames, 120, 180), 180, "inside one frame");
        assert_eq!(frame_aligned_end(&frames, 350, 400), 400, "the last frame");
    }

    #[test]
    fn newlines_are_counted_across_runs_of_255() {
        for len in [0usize, 1, 254, 255, 256, 1000, 70_000] {
            let bytes: Vec<u8> = (0..len).map(|i| if i % 3 == 0 || i % 255 == 254 { b'\n' } else { b'x' }).collect();
            assert_eq!(count_newlines(&bytes), bytes.iter().filter(|&&b| b == b'\n').count(), "{len} bytes");
        }
        assert_eq!(count_newlines(&[b'\n'; 1000]), 1000);
    }

    fn encode(input: &[u8]) -> (Vec<u8>, Vec<FrameEntry>) {
        let mut object = Vec::new();
        let mut frames = Vec::new();
        for chunk in input.chunks(FRAME_INPUT) {
            let (c, e) = compress_frame(chunk, 3).unwrap();
            object.extend_from_slice(&c);
            frames.push(e);
        }
        object.extend_from_slice(&seek_table(&frames));
        (object, frames)
    }

    #[test]
    fn a_segment_decodes_whole_and_by_range() {
        let input: Vec<u8> = (0..(FRAME_INPUT * 3 + 1234)).map(|i| (i % 251) as u8 ^ (i / 7919) as u8).collect();
        let (object, frames) = encode(&input);
        assert_eq!(parse_seek_table(&object).unwrap(), frames);
        // The whole object, skippable seek table included, is a valid zstd stream.
        assert_eq!(zstd::stream::decode_all(&object[..]).unwrap(), input);
        for (start, end) in [(0u64, 10u64), (FRAME_INPUT as u64 - 5, FRAME_INPUT as u64 + 5), (700_000, 787_000), (input.len() as u64 - 1, input.len() as u64)] {
            let span = covering(&frames, start, end);
            let r = span.object_range.clone();
            let plain = decompress_frames(&object[r.start as usize..r.end as usize], &span.frames).unwrap();
            let s = (start - span.first_offset) as usize;
            assert_eq!(&plain[s..s + (end - start) as usize], &input[start as usize..end as usize]);
            assert!(span.frames.len() <= 2, "a small range touches at most two frames");
        }
        assert!(covering(&frames, input.len() as u64, input.len() as u64 + 5).frames.is_empty());
    }

    #[test]
    fn corrupt_tables_are_refused() {
        assert!(parse_seek_table(b"short").is_err());
        let (mut object, _) = encode(b"hello");
        let n = object.len();
        object[n - 1] ^= 0xff;
        assert!(parse_seek_table(&object).is_err());
        let (mut object, _) = encode(b"hello");
        object[n - FOOTER] = 200; // claims 200 frames
        assert!(parse_seek_table(&object).is_err());
    }
}
