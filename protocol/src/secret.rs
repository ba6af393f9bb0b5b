//! Secret digests: what a job registers at creation so that ingest can mask secrets it is never
//! told in clear (a second line behind the agent's own masking, for agents that do not mask).
//!
//! A digest is the secret's length, a 32-bit rolling hash (polynomial, base [`BASE`], wrapping)
//! and its SHA-256. [`DigestSet::find`] rolls the hash over every window of each registered
//! length, filters candidates through a bit table, and confirms them with SHA-256, so random
//! output costs a multiply-add and a bit test per byte and length.

use std::collections::HashMap;
use std::ops::Range;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Base of the rolling hash.
pub const BASE: u32 = 0x0100_0193;
/// Shortest secret that is masked anywhere (agent, ingest, scrub): masking every `abc` would
/// garble output and hide nothing (CircleCI refuses secrets under 4 characters too).
pub const MIN_SECRET: usize = 4;
/// Longest secret a digest may be registered for; bounds the bytes ingest looks back.
pub const MAX_SECRET: usize = 4096;
const TABLE_BITS: u32 = 16;

/// What ingest is told about one secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretDigest {
    pub length: u32,
    /// The rolling hash of the secret's bytes: Σ b[i]·BASE^(len−1−i), wrapping at 2^32.
    pub rolling: u32,
    /// SHA-256 of the secret's bytes, lowercase hex.
    pub sha256: String,
}

impl SecretDigest {
    /// The digest of `secret`.
    pub fn of(secret: &[u8]) -> Self {
        Self {
            length: secret.len() as u32,
            rolling: rolling(secret),
            sha256: Sha256::digest(secret).iter().map(|b| format!("{b:02x}")).collect(),
        }
    }

    /// Checks the shape: length within bounds, a 64-digit hex SHA-256.
    pub fn validate(&self) -> Result<(), String> {
        let len = self.length as usize;
        if !(MIN_SECRET..=MAX_SECRET).contains(&len) {
            return Err(format!("secret digests are for secrets of {MIN_SECRET} to {MAX_SECRET} bytes, not {len}"));
        }
        if self.sha256.len() != 64 || !self.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("sha256 must be 64 hex digits".into());
        }
        Ok(())
    }
}

/// Replaces every byte of `bytes` but newlines with `*`, so a masked secret keeps its length and
/// the line structure around it; returns whether anything changed.
pub fn star(bytes: &mut [u8]) -> bool {
    let mut changed = false;
    for b in bytes.iter_mut().filter(|b| **b != b'\n' && **b != b'*') {
        *b = b'*';
        changed = true;
    }
    changed
}

fn rolling(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0u32, |h, &b| h.wrapping_mul(BASE).wrapping_add(u32::from(b)))
}

/// The registered digests of one length.
#[derive(Debug)]
struct ByLength {
    len: usize,
    /// BASE^len, to drop the byte leaving the window.
    out: u32,
    /// Bit per low `TABLE_BITS` bits of a registered rolling hash.
    table: Vec<u64>,
    digests: HashMap<u32, Vec<[u8; 32]>>,
}

/// A job's digests, ready to search output.
#[derive(Debug, Default)]
pub struct DigestSet {
    lengths: Vec<ByLength>,
}

impl DigestSet {
    /// Builds the set; invalid digests are refused.
    pub fn new(digests: &[SecretDigest]) -> Result<Self, String> {
        let mut lengths: Vec<ByLength> = Vec::new();
        for d in digests {
            d.validate()?;
            let mut sha = [0u8; 32];
            for (i, b) in sha.iter_mut().enumerate() {
                *b = u8::from_str_radix(&d.sha256[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
            }
            let len = d.length as usize;
            let i = match lengths.iter().position(|l| l.len == len) {
                Some(i) => i,
                None => {
                    let out = (0..len).fold(1u32, |p, _| p.wrapping_mul(BASE));
                    lengths.push(ByLength { len, out, table: vec![0; (1 << TABLE_BITS) / 64], digests: HashMap::new() });
                    lengths.len() - 1
                }
            };
            let l = &mut lengths[i];
            let slot = (d.rolling & ((1 << TABLE_BITS) - 1)) as usize;
            l.table[slot / 64] |= 1 << (slot % 64);
            l.digests.entry(d.rolling).or_default().push(sha);
        }
        Ok(Self { lengths })
    }

    pub fn is_empty(&self) -> bool {
        self.lengths.is_empty()
    }

    /// The longest registered secret (how far back a search must look).
    pub fn longest(&self) -> usize {
        self.lengths.iter().map(|l| l.len).max().unwrap_or(0)
    }

    /// Every window of `data` that is a registered secret, in order of start (overlaps kept).
    pub fn find(&self, data: &[u8]) -> Vec<Range<usize>> {
        let mut found = Vec::new();
        for l in &self.lengths {
            if data.len() < l.len {
                continue;
            }
            let mut h = rolling(&data[..l.len]);
            let mut start = 0;
            loop {
                let slot = (h & ((1 << TABLE_BITS) - 1)) as usize;
                if l.table[slot / 64] & (1 << (slot % 64)) != 0
                    && let Some(shas) = l.digests.get(&h)
                {
                    let sha: [u8; 32] = Sha256::digest(&data[start..start + l.len]).into();
                    if shas.contains(&sha) {
                        found.push(start..start + l.len);
                    }
                }
                if start + l.len == data.len() {
                    break;
                }
                h = h
                    .wrapping_mul(BASE)
                    .wrapping_add(u32::from(data[start + l.len]))
                    .wrapping_sub(u32::from(data[start]).wrapping_mul(l.out));
                start += 1;
            }
        }
        found.sort_by_key(|r| r.start);
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn digests_find_their_secrets_and_nothing_else() {
        let set = DigestSet::new(&[SecretDigest::of(b"hunter2!"), SecretDigest::of(b"tok-ABCDEFGH")]).unwrap();
        assert_eq!(set.longest(), 12);
        let text = b"x hunter2! y tok-ABCDEFGH hunter2!hunter2 hunter3!";
        assert_eq!(set.find(text), vec![2..10, 13..25, 26..34]);
        assert!(set.find(b"hunt").is_empty());
        assert!(DigestSet::new(&[SecretDigest::of(b"abc")]).is_err(), "too short");
        let mut bad = SecretDigest::of(b"abcd");
        bad.sha256 = "zz".into();
        assert!(DigestSet::new(&[bad]).is_err());
    }

    proptest! {
        #[test]
        fn every_planted_secret_is_found(
            secret in proptest::collection::vec(any::<u8>(), MIN_SECRET..64),
            filler in proptest::collection::vec(any::<u8>(), 0..2000),
            at in any::<prop::sample::Index>(),
        ) {
            let set = DigestSet::new(&[SecretDigest::of(&secret)]).unwrap();
            let pos = at.index(filler.len() + 1);
            let mut data = filler[..pos].to_vec();
            data.extend_from_slice(&secret);
            data.extend_from_slice(&filler[pos..]);
            let found = set.find(&data);
            prop_assert!(found.contains(&(pos..pos + secret.len())));
            for r in found {
                prop_assert_eq!(&data[r], &secret[..]);
            }
        }
    }
}
