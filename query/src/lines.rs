//! Line numbers of step output: `?lines=A-B` (where line A starts and line B ends) and
//! `GET …/steps/{step}/line-number?offset=N` (the line a byte is on). Archived steps use the
//! sparse line index (newlines per 256 KiB frame) to read only the frame holding the line;
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

/// Where the sparse line index lets a scan start.
enum Skip {
    /// The frame wanted starts at `.0`, with `.1` newlines before it.
    Frame(u64, u64),
    /// No frame is the one wanted; the output holds `.0` newlines in all.
    Past(u64),
    /// The bytes are not (all) archived with the index: scan from the beginning.
    Unindexed,
}

/// Walks the archived frames until `stop(frame_start, frame_len, newlines_before, newlines_in)`.
fn frame_skip(source: &Source, stop: impl Fn(u64, u64, u64, u64) -> bool) -> Skip {
    let Source::Archived { segments, .. } = source else { return Skip::Unindexed };
    if !segments.iter().all(|s| s.frame_lines.len() == s.frames.len()) {
        return Skip::Unindexed;
    }
    let mut seen = 0u64;
    for seg in segments {
        let mut at = seg.start;
        for (f, &n) in seg.frames.iter().zip(&seg.frame_lines) {
            if stop(at, u64::from(f.decompressed), seen, u64::from(n)) {
                return Skip::Frame(at, seen);
            }
            seen += u64::from(n);
            at += u64::from(f.decompressed);
        }
    }
    Skip::Past(seen)
}

/// The offset just past the `k`-th newline, where line `k + 1` starts; `None` if the output
/// has fewer newlines. `k = 0` is offset 0.
pub async fn after_newline(state: &AppState, key: &StepKey, source: &mut Source, k: u64) -> Result<Option<u64>, ApiError> {
    if k == 0 {
        return Ok(Some(0));
    }
    // Skip whole frames with the index, then scan from the one frame holding the newline.
    let (mut pos, mut seen) = match frame_skip(source, |_, _, before, n| before + n >= k) {
        Skip::Frame(at, before) => (at, before),
        Skip::Past(_) => return Ok(None),
        Skip::Unindexed => (0, 0),
    };
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

/// How many newlines the first `offset` bytes hold: the byte at `offset` is on line that plus
/// one. Archived steps count whole frames from the index and scan at most one frame.
pub async fn newlines_before(state: &AppState, key: &StepKey, source: &mut Source, offset: u64) -> Result<u64, ApiError> {
    let (mut pos, mut seen) = match frame_skip(source, |at, len, _, _| at + len > offset) {
        Skip::Frame(at, before) => (at, before),
        Skip::Past(total) => return Ok(total),
        Skip::Unindexed => (0, 0),
    };
    while pos < offset {
        let want = ((offset - pos) as usize).min(SCAN_CHUNK);
        let chunk = source.read(state, key, pos, want).await?;
        if chunk.is_empty() {
            break;
        }
        seen += memchr::memchr_iter(b'\n', &chunk).count() as u64;
        pos += chunk.len() as u64;
    }
    Ok(seen)
}

#[derive(Debug, serde::Deserialize)]
pub struct LineNumberQuery {
    pub offset: u64,
}

/// Answer of `GET …/steps/{step}/line-number?offset=N`.
#[derive(Debug, serde::Serialize)]
pub struct LineNumber {
    pub offset: u64,
    /// The line (from 1) that the byte at `offset` is on; at the end of the output, the line
    /// that would come next.
    pub line: u64,
    /// The step's readable length when asked.
    pub length: u64,
}

/// `GET /api/v1/jobs/{job}/steps/{step}/line-number?offset=N`: for a viewer that opens a long
/// step in the middle or at its end and must number the lines it shows.
pub async fn line_number(
    axum::extract::State(state): axum::extract::State<std::sync::Arc<AppState>>,
    caller: crate::auth::Caller,
    axum::extract::Path((job, step)): axum::extract::Path<(String, String)>,
    axum::extract::Query(q): axum::extract::Query<LineNumberQuery>,
) -> Result<axum::Json<LineNumber>, ApiError> {
    let key = crate::output::readable_step(&state, &caller, &job, &step).await?;
    let mut source = Source::open(&state, &key).await?;
    let (length, _) = source.snapshot();
    if q.offset > length {
        return Err(ApiError::RangeNotSatisfiable(format!("offset {} is past the end of the output ({length} bytes)", q.offset), length));
    }
    let line = newlines_before(&state, &key, &mut source, q.offset).await? + 1;
    Ok(axum::Json(LineNumber { offset: q.offset, line, length }))
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
