//! `?lines=A-B` on step output: finds where line A starts and line B ends. Archived steps use
//! the sparse line index (newlines per 256 KiB frame) to read only the frame holding the line;
//! steps still in the live tier, and segments written without the index, are scanned.

use tailrace_storage::StepKey;

use crate::error::ApiError;
use crate::source::Source;
use crate::AppState;

const SCAN_CHUNK: usize = 256 * 1024;

/// Lines `first..=last` (1-based); `last` `None` means to the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineRange {
    pub first: u64,
    pub last: Option<u64>,
}

/// Parses `A-B`, `A-` or `A`.
pub fn parse_lines(s: &str) -> Result<LineRange, String> {
    let num = |v: &str| v.trim().parse::<u64>().ok().filter(|&n| n >= 1).ok_or_else(|| format!("invalid line number {v:?}: lines count from 1"));
    let r = match s.split_once('-') {
        Some((a, "")) => LineRange { first: num(a)?, last: None },
        Some((a, b)) => LineRange { first: num(a)?, last: Some(num(b)?) },
        None => {
            let n = num(s)?;
            LineRange { first: n, last: Some(n) }
        }
    };
    if r.last.is_some_and(|l| l < r.first) {
        return Err(format!("invalid lines {s:?}: the last line is before the first"));
    }
    Ok(r)
}

/// Position of the `k`-th newline (1-based) within `bytes`, given `seen` newlines before them.
fn nth_newline_in(bytes: &[u8], seen: u64, k: u64) -> Result<usize, u64> {
    let mut count = seen;
    for (i, _) in bytes.iter().enumerate().filter(|(_, b)| **b == b'\n') {
        count += 1;
        if count == k {
            return Ok(i);
        }
    }
    Err(count)
}

/// The offset just past the `k`-th newline, where line `k + 1` starts; `None` if the output
/// has fewer newlines. `k = 0` is offset 0.
pub async fn after_newline(state: &AppState, key: &StepKey, source: &mut Source, k: u64) -> Result<Option<u64>, ApiError> {
    if k == 0 {
        return Ok(Some(0));
    }
    let (mut pos, mut seen) = (0u64, 0u64);
    if let Source::Archived { segments, .. } = &*source
        && segments.iter().all(|s| s.frame_lines.len() == s.frames.len()) {
            // Skip whole frames with the index, then scan the one frame holding the newline.
            let mut found = None;
            'outer: for seg in segments {
                let mut at = seg.start;
                for (f, &n) in seg.frames.iter().zip(&seg.frame_lines) {
                    if seen + u64::from(n) >= k {
                        found = Some(at);
                        break 'outer;
                    }
                    seen += u64::from(n);
                    at += u64::from(f.decompressed);
                }
            }
            match found {
                Some(at) => pos = at,
                None => return Ok(None),
            }
        }
    loop {
        let chunk = source.read(state, key, pos, SCAN_CHUNK).await?;
        if chunk.is_empty() {
            return Ok(None);
        }
        match nth_newline_in(&chunk, seen, k) {
            Ok(i) => return Ok(Some(pos + i as u64 + 1)),
            Err(count) => {
                seen = count;
                pos += chunk.len() as u64;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_ranges_parse() {
        assert_eq!(parse_lines("3-7"), Ok(LineRange { first: 3, last: Some(7) }));
        assert_eq!(parse_lines("10-"), Ok(LineRange { first: 10, last: None }));
        assert_eq!(parse_lines("4"), Ok(LineRange { first: 4, last: Some(4) }));
        assert!(parse_lines("0-3").is_err());
        assert!(parse_lines("5-2").is_err());
        assert!(parse_lines("x").is_err());
    }

    #[test]
    fn newlines_are_counted_across_chunks() {
        assert_eq!(nth_newline_in(b"a\nb\nc\n", 0, 2), Ok(3));
        assert_eq!(nth_newline_in(b"a\nb\n", 5, 7), Ok(3));
        assert_eq!(nth_newline_in(b"abc", 2, 3), Err(2));
    }
}
