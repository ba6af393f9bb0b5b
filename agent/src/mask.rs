//! Secret masking in the agent: secrets are replaced by `***` before output leaves the runner —
//! also when a secret is split across writes, and in its common encodings (base64 at every
//! alignment, standard and URL-safe; URL encoding; JSON string escaping; shell escaping). A step
//! can add secrets at run time by printing a line `::add-mask::VALUE`; that line is never sent.
//!
//! Bytes are held back only while they could be the start of a secret (at most the longest
//! pattern less one byte), or the start of an `::add-mask::` line (at most 12 bytes, or the line
//! itself, up to [`MAX_COMMAND_LINE`]).

use aho_corasick::{AhoCorasick, MatchKind};
use base64::Engine as _;
use bytes::Bytes;
use tracing::warn;

/// Secrets shorter than this are not masked (CircleCI's rule): masking `abc` would garble most
/// output and protect nothing.
pub use tailrace_protocol::secret::MIN_SECRET;
/// The longest `::add-mask::` line honoured; longer ones are dropped (not sent) with a warning.
pub const MAX_COMMAND_LINE: usize = 4096;
const ADD_MASK: &[u8] = b"::add-mask::";
const MASK: &[u8] = b"***";

/// The patterns to replace: every secret in every encoding.
#[derive(Clone)]
pub struct Patterns {
    list: Vec<Vec<u8>>,
    /// All of `list`, leftmost-longest: at the first position where any pattern matches, the
    /// longest one wins.
    matcher: Option<AhoCorasick>,
    first: [bool; 256],
    longest: usize,
}

impl std::fmt::Debug for Patterns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secrets themselves.
        f.debug_struct("Patterns").field("count", &self.list.len()).finish()
    }
}

impl Default for Patterns {
    fn default() -> Self {
        Self { list: Vec::new(), matcher: None, first: [false; 256], longest: 0 }
    }
}

impl Patterns {
    /// Adds a secret and its encodings; `false` (and nothing added) when it is shorter than
    /// [`MIN_SECRET`].
    pub fn add(&mut self, secret: &[u8]) -> bool {
        if secret.len() < MIN_SECRET {
            return false;
        }
        for p in encodings(secret) {
            if p.len() >= MIN_SECRET && !self.list.contains(&p) {
                self.first[p[0] as usize] = true;
                self.longest = self.longest.max(p.len());
                self.list.push(p);
            }
        }
        self.matcher = AhoCorasick::builder().match_kind(MatchKind::LeftmostLongest).build(&self.list).ok();
        true
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// `s` is a proper prefix of some pattern (more bytes could complete a secret).
    fn partial_at(&self, s: &[u8]) -> bool {
        self.first[s[0] as usize] && s.len() < self.longest && self.list.iter().any(|p| p.len() > s.len() && p.starts_with(s))
    }
}

/// The secret as it appears raw and in its common encodings.
pub fn encodings(secret: &[u8]) -> Vec<Vec<u8>> {
    let mut out = vec![secret.to_vec()];
    for engine in [&base64::engine::general_purpose::STANDARD_NO_PAD, &base64::engine::general_purpose::URL_SAFE_NO_PAD] {
        // Inside a longer base64 text the secret starts at any offset mod 3; keep the characters
        // that depend on the secret's bytes alone.
        for k in 0..3usize {
            let mut input = vec![0u8; k];
            input.extend_from_slice(secret);
            let enc = engine.encode(&input);
            let (from, to) = ((8 * k).div_ceil(6), (8 * (k + secret.len())) / 6);
            if to > from {
                out.push(enc.as_bytes()[from..to].to_vec());
            }
        }
    }
    let url: Vec<u8> = secret
        .iter()
        .flat_map(|&b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) { vec![b] } else { format!("%{b:02X}").into_bytes() }
        })
        .collect();
    out.push(url);
    if let Ok(s) = std::str::from_utf8(secret) {
        let json = serde_json::to_string(s).unwrap_or_default();
        if json.len() >= 2 {
            out.push(json.as_bytes()[1..json.len() - 1].to_vec());
        }
        out.push(s.replace('\'', r"'\''").into_bytes());
        let mut shell = String::new();
        for c in s.chars() {
            if " \"'\\$`!*?[]{}()<>|&;#~".contains(c) {
                shell.push('\\');
            }
            shell.push(c);
        }
        out.push(shell.into_bytes());
    }
    out.sort();
    out.dedup();
    out
}

/// Masks one output stream (stdout, stderr or a pty) as it is written.
#[derive(Debug, Default)]
pub struct StreamMasker {
    /// Bytes held back: a possible secret prefix, or a possible `::add-mask::` line.
    pending: Vec<u8>,
    /// `pending[..line_scan]` has passed the line filter and waits only for masking.
    line_scan: usize,
    at_line_start: bool,
    in_command: bool,
    dropping_long_command: bool,
}

impl StreamMasker {
    pub fn new() -> Self {
        Self { at_line_start: true, ..Self::default() }
    }

    /// Takes the next bytes of the stream; returns what may be sent now.
    pub fn push(&mut self, patterns: &mut Patterns, bytes: &Bytes) -> Bytes {
        if let Some(out) = self.pass_through(patterns, bytes) {
            return out;
        }
        self.pending.extend_from_slice(bytes);
        let mut out = self.filter_commands(patterns, false);
        out.extend_from_slice(&self.drain(patterns, false));
        Bytes::from(out)
    }

    /// The common case without copies: no secrets, nothing held, no `::add-mask::` in the chunk
    /// and its last line cannot be the start of one — the chunk goes out as it came in.
    fn pass_through(&mut self, patterns: &Patterns, bytes: &Bytes) -> Option<Bytes> {
        if !patterns.is_empty() || !self.pending.is_empty() || self.in_command || memchr::memmem::find(bytes, ADD_MASK).is_some() {
            return None;
        }
        let (last_line, at_line_start) = match memchr::memrchr(b'\n', bytes) {
            Some(nl) => (&bytes[nl + 1..], true),
            None => (&bytes[..], self.at_line_start),
        };
        if at_line_start && !last_line.is_empty() && ADD_MASK.starts_with(last_line) {
            return None;
        }
        self.at_line_start = at_line_start && last_line.is_empty();
        Some(bytes.clone())
    }

    /// The stream ended: everything held back, masked.
    pub fn finish(&mut self, patterns: &mut Patterns) -> Bytes {
        let mut out = self.filter_commands(patterns, true);
        out.extend_from_slice(&self.drain(patterns, true));
        Bytes::from(out)
    }

    /// Removes `::add-mask::` lines from `pending[line_scan..]`, adding their values. Output
    /// before such a line is released first, masked with the secrets known before it, so a
    /// value masks only what follows it however the bytes were cut.
    fn filter_commands(&mut self, patterns: &mut Patterns, eof: bool) -> Vec<u8> {
        let mut out = Vec::new();
        while self.line_scan < self.pending.len() {
            let rest = &self.pending[self.line_scan..];
            if self.in_command {
                match rest.iter().position(|&b| b == b'\n') {
                    Some(nl) => {
                        out.extend_from_slice(&self.drain(patterns, true));
                        let line = self.pending.drain(..nl + 1).collect::<Vec<u8>>();
                        if !std::mem::take(&mut self.dropping_long_command) {
                            add_command_value(patterns, &line[ADD_MASK.len()..]);
                        }
                        self.in_command = false;
                        self.at_line_start = true;
                    }
                    None if eof => {
                        out.extend_from_slice(&self.drain(patterns, true));
                        let line = std::mem::take(&mut self.pending);
                        if !self.dropping_long_command {
                            add_command_value(patterns, &line[ADD_MASK.len()..]);
                        }
                        self.in_command = false;
                    }
                    None => {
                        if rest.len() > MAX_COMMAND_LINE {
                            if !self.dropping_long_command {
                                warn!("an ::add-mask:: line longer than {MAX_COMMAND_LINE} bytes was dropped, not sent");
                            }
                            self.dropping_long_command = true;
                            // Keep only the marker so the line end is still found.
                            self.pending.truncate(self.line_scan + ADD_MASK.len());
                        }
                        return out;
                    }
                }
            } else if self.at_line_start {
                let n = rest.len().min(ADD_MASK.len());
                if rest[..n] != ADD_MASK[..n] {
                    self.at_line_start = false;
                } else if n == ADD_MASK.len() {
                    self.in_command = true;
                } else if eof {
                    self.at_line_start = false;
                } else {
                    return out;
                }
            } else {
                match rest.iter().position(|&b| b == b'\n') {
                    Some(nl) => {
                        self.line_scan += nl + 1;
                        self.at_line_start = true;
                    }
                    None => self.line_scan = self.pending.len(),
                }
            }
        }
        out
    }

    /// Masks and releases `pending[..line_scan]`, keeping a tail that could still become a
    /// secret (all of it at `eof`).
    fn drain(&mut self, patterns: &Patterns, eof: bool) -> Bytes {
        let end = self.line_scan;
        let buf = &self.pending[..end];
        let mut out = Vec::with_capacity(end);
        // The earliest position from which the rest could still grow into a secret: held back.
        // Only the last `longest - 1` bytes can be such a position.
        let hold = if eof || patterns.is_empty() {
            end
        } else {
            (end.saturating_sub(patterns.longest - 1)..end).find(|&j| patterns.partial_at(&buf[j..])).unwrap_or(end)
        };
        let mut emitted = 0usize;
        if let Some(m) = &patterns.matcher {
            // A match starting before `hold` is final: were a longer secret still possible at its
            // start, that start would be a held position.
            for found in m.find_iter(buf).take_while(|f| f.start() < hold) {
                out.extend_from_slice(&buf[emitted..found.start()]);
                out.extend_from_slice(MASK);
                emitted = found.end();
            }
        }
        let i = hold.max(emitted);
        out.extend_from_slice(&buf[emitted..i]);
        self.pending.drain(..i);
        self.line_scan -= i;
        Bytes::from(out)
    }
}

fn add_command_value(patterns: &mut Patterns, value: &[u8]) {
    let value = value.strip_suffix(b"\n").unwrap_or(value);
    let value = value.strip_suffix(b"\r").unwrap_or(value);
    if !patterns.add(value) {
        warn!(len = value.len(), "::add-mask:: value shorter than {MIN_SECRET} characters is not masked");
    }
}

#[cfg(test)]
mod tests;
