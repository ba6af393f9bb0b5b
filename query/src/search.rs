//! `GET /api/v1/jobs/{job}/steps/{step}/search?q=TEXT[&limit=N]`: the lines of a step's output
//! that contain TEXT (bytes, case-sensitive), found on the server wherever the bytes are (live
//! tier or archive), so that a browser never downloads a huge log to search it.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::output::readable_step;
use crate::source::Source;
use crate::AppState;

/// Bytes read per turn.
const CHUNK: usize = 1 << 20;
/// Bytes of a matching line returned (the line itself may be longer).
const SHOWN: usize = 500;

#[derive(Debug, Deserialize)]
pub struct SearchQuery {
    pub q: String,
    pub limit: Option<usize>,
}

#[derive(Debug, Serialize)]
pub struct Match {
    /// Line number, from 1.
    pub line: u64,
    /// Offset of the line's first byte.
    pub offset: u64,
    /// The line's start (at most 500 bytes, as UTF-8 with replacement characters).
    pub text: String,
}

#[derive(Debug, Serialize)]
pub struct SearchAnswer {
    pub matches: Vec<Match>,
    /// More lines match than `limit`; search for something longer.
    pub truncated: bool,
    /// Bytes searched: the step's length when the search began.
    pub searched: u64,
}

pub async fn search(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((job, step)): Path<(String, String)>,
    Query(q): Query<SearchQuery>,
) -> Result<Json<SearchAnswer>, ApiError> {
    if q.q.is_empty() || q.q.len() > 1024 {
        return Err(ApiError::BadRequest("q must be 1 to 1024 bytes of text to find".into()));
    }
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let key = readable_step(&state, &caller, &job, &step).await?;
    let mut source = Source::open(&state, &key).await?;
    let (len, _) = source.snapshot();
    let needle = q.q.as_bytes();
    let finder = memchr::memmem::Finder::new(needle);
    let mut found = Lines { matches: Vec::new(), limit, truncated: false };
    // The current line: its number, start, first bytes (for the answer), whether it matched,
    // and its last needle-1 bytes (a match may span two chunks).
    let mut line = Line { number: 1, start: 0, head: Vec::new(), matched: false, tail: Vec::new() };
    let mut off = 0;
    while off < len && !found.truncated {
        let chunk = source.read(&state, &key, off, CHUNK.min((len - off) as usize)).await?;
        if chunk.is_empty() {
            break;
        }
        let mut rest: &[u8] = &chunk;
        let mut at = off;
        while !rest.is_empty() {
            let (part, newline) = match memchr::memchr(b'\n', rest) {
                Some(i) => (&rest[..i], true),
                None => (rest, false),
            };
            line.feed(part, needle, &finder);
            at += part.len() as u64;
            if newline {
                found.end_line(&line);
                line = Line { number: line.number + 1, start: at + 1, head: Vec::new(), matched: false, tail: Vec::new() };
                at += 1;
                rest = &rest[part.len() + 1..];
            } else {
                rest = &[];
            }
        }
        off += chunk.len() as u64;
    }
    if !found.truncated && (!line.head.is_empty() || line.matched) {
        found.end_line(&line);
    }
    Ok(Json(SearchAnswer { matches: found.matches, truncated: found.truncated, searched: len }))
}

struct Line {
    number: u64,
    start: u64,
    head: Vec<u8>,
    matched: bool,
    tail: Vec<u8>,
}

impl Line {
    /// Adds bytes of this line (no newline among them).
    fn feed(&mut self, part: &[u8], needle: &[u8], finder: &memchr::memmem::Finder<'_>) {
        if self.head.len() < SHOWN {
            self.head.extend_from_slice(&part[..part.len().min(SHOWN - self.head.len())]);
        }
        if !self.matched {
            // The end of what came before joined to this part: a match across the seam.
            let mut seam = std::mem::take(&mut self.tail);
            seam.extend_from_slice(&part[..part.len().min(needle.len().saturating_sub(1))]);
            self.matched = finder.find(&seam).is_some() || finder.find(part).is_some();
            let keep = needle.len().saturating_sub(1);
            self.tail = if part.len() >= keep { part[part.len() - keep..].to_vec() } else { seam[seam.len().saturating_sub(keep)..].to_vec() };
        }
    }
}

struct Lines {
    matches: Vec<Match>,
    limit: usize,
    truncated: bool,
}

impl Lines {
    fn end_line(&mut self, line: &Line) {
        if !line.matched {
            return;
        }
        if self.matches.len() == self.limit {
            self.truncated = true;
            return;
        }
        self.matches.push(Match { line: line.number, offset: line.start, text: String::from_utf8_lossy(&line.head).into_owned() });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find_in(parts: &[&[u8]], needle: &[u8]) -> bool {
        let finder = memchr::memmem::Finder::new(needle);
        let mut line = Line { number: 1, start: 0, head: Vec::new(), matched: false, tail: Vec::new() };
        for p in parts {
            line.feed(p, needle, &finder);
        }
        line.matched
    }

    #[test]
    fn a_match_across_chunk_seams_is_found() {
        assert!(find_in(&[b"abc ERR", b"OR def"], b"ERROR"));
        assert!(find_in(&[b"E", b"R", b"R", b"O", b"R"], b"ERROR"));
        assert!(find_in(&[b"xxERROR"], b"ERROR"));
        assert!(!find_in(&[b"ERR", b"xOR"], b"ERROR"));
        assert!(!find_in(&[b"", b""], b"E"));
    }
}
