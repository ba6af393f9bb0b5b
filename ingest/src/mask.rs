//! Masking at ingest, the second line behind the agent's masking: the job's registered secret
//! digests (`protocol::secret`) are searched in every chunk, together with the bytes stored
//! just before it so that a secret split across chunks is found too, and each matching byte
//! but newlines is stored as `*` — same length, so offsets hold. The step's checksum stays that
//! of the bytes the agent sent.
//!
//! A secret split across chunks is found when its last byte arrives; its first part was stored
//! (and may have been read by a tailer) with the chunk before, and is overwritten then. Readers
//! that come later never see it.

use std::ops::Range;

use bytes::Bytes;
use tailrace_protocol::secret::{star, DigestSet};

/// What to store for one chunk.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Masked {
    /// The chunk as stored, when it differs from what arrived.
    pub stored: Option<Bytes>,
    /// Bytes already stored before the chunk to overwrite: (offset, new bytes).
    pub before: Option<(u64, Vec<u8>)>,
}

/// Masks `chunk`, to be stored at `at`, given `before`: the stored bytes that end at `at` (up to
/// the longest secret's length less one).
pub fn mask_chunk(set: &DigestSet, before: &[u8], at: u64, chunk: &Bytes) -> Masked {
    // Search the chunk in place, and the seam (`before` and the chunk's first bytes) apart, so a
    // chunk without secrets is never copied. Seam matches must start in `before`: the others
    // are in the chunk, and those wholly inside `before` were masked with the chunk before.
    let b = before.len();
    let mut seam = before.to_vec();
    seam.extend_from_slice(&chunk[..chunk.len().min(set.longest().saturating_sub(1))]);
    let mut found: Vec<Range<usize>> = set.find(&seam).into_iter().filter(|r| r.start < b && r.end > b).collect();
    found.extend(set.find(chunk).into_iter().map(|r| r.start + b..r.end + b));
    if found.is_empty() {
        return Masked::default();
    }
    let mut joined = Vec::with_capacity(b + chunk.len());
    joined.extend_from_slice(before);
    joined.extend_from_slice(chunk);
    for r in &found {
        star(&mut joined[r.clone()]);
    }
    let touches_before = found.iter().any(|r| r.start < before.len());
    let (head, tail) = joined.split_at(before.len());
    Masked {
        stored: Some(Bytes::copy_from_slice(tail)),
        before: touches_before.then(|| (at - before.len() as u64, head.to_vec())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tailrace_protocol::secret::SecretDigest;

    #[test]
    fn secrets_are_masked_within_and_across_chunks() {
        let set = DigestSet::new(&[SecretDigest::of(b"pass\nword")]).unwrap();
        let m = mask_chunk(&set, b"", 0, &Bytes::from_static(b"a pass\nword b"));
        assert_eq!(m.stored.as_deref(), Some(&b"a ****\n**** b"[..]));
        assert_eq!(m.before, None);
        // Split: "pa" stored before at 10..12, "ss\nword" arrives at 12.
        let m = mask_chunk(&set, b"xxxxpa", 12, &Bytes::from_static(b"ss\nword!"));
        assert_eq!(m.stored.as_deref(), Some(&b"**\n****!"[..]));
        assert_eq!(m.before, Some((6, b"xxxx**".to_vec())));
        assert_eq!(mask_chunk(&set, b"pass\nword", 9, &Bytes::from_static(b"clean")), Masked::default(), "already masked before");
    }
}
