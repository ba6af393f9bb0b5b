//! A SHA-256 whose state can be saved between the parts of an upload and resumed by any
//! process: the eight state words and the length hashed so far, at 64-byte block boundaries.
//! Artifact uploads use it to verify a whole file's digest without ever reading stored parts back.

use sha2::digest::generic_array::GenericArray;

const INIT: [u32; 8] = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];

/// SHA-256 in progress. `update` takes any lengths; `save` needs a block boundary.
#[derive(Clone)]
pub struct ResumableSha256 {
    state: [u32; 8],
    /// Bytes hashed, including those waiting in `buf`.
    len: u64,
    buf: [u8; 64],
    buf_len: usize,
}

impl Default for ResumableSha256 {
    fn default() -> Self {
        Self { state: INIT, len: 0, buf: [0; 64], buf_len: 0 }
    }
}

/// Size of a saved state: eight big-endian words and the byte count.
pub const SAVED_LEN: usize = 40;

impl ResumableSha256 {
    /// Resumes from a [`save`](Self::save)d state; an empty slice is the start.
    pub fn resume(saved: &[u8]) -> Option<Self> {
        if saved.is_empty() {
            return Some(Self::default());
        }
        if saved.len() != SAVED_LEN {
            return None;
        }
        let mut state = [0u32; 8];
        for (w, c) in state.iter_mut().zip(saved.chunks_exact(4)) {
            *w = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
        }
        let len = u64::from_be_bytes(saved[32..40].try_into().ok()?);
        (len % 64 == 0).then_some(Self { state, len, buf: [0; 64], buf_len: 0 })
    }

    /// The state to store, or `None` unless the bytes hashed so far end on a 64-byte boundary.
    pub fn save(&self) -> Option<Vec<u8>> {
        if self.buf_len != 0 {
            return None;
        }
        let mut out = Vec::with_capacity(SAVED_LEN);
        for w in self.state {
            out.extend_from_slice(&w.to_be_bytes());
        }
        out.extend_from_slice(&self.len.to_be_bytes());
        Some(out)
    }

    pub fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if self.buf_len > 0 {
            let n = (64 - self.buf_len).min(data.len());
            self.buf[self.buf_len..self.buf_len + n].copy_from_slice(&data[..n]);
            self.buf_len += n;
            data = &data[n..];
            if self.buf_len < 64 {
                return;
            }
            sha2::compress256(&mut self.state, &[GenericArray::clone_from_slice(&self.buf)]);
            self.buf_len = 0;
        }
        let mut blocks = data.chunks_exact(64);
        for b in &mut blocks {
            sha2::compress256(&mut self.state, std::slice::from_ref(GenericArray::from_slice(b)));
        }
        let rest = blocks.remainder();
        self.buf[..rest.len()].copy_from_slice(rest);
        self.buf_len = rest.len();
    }

    /// The digest, as lowercase hex.
    pub fn finish_hex(mut self) -> String {
        let bits = self.len.wrapping_mul(8);
        let mut pad = vec![0x80u8];
        let fill = (64 + 56 - (self.buf_len + 1) % 64) % 64;
        pad.resize(1 + fill, 0);
        pad.extend_from_slice(&bits.to_be_bytes());
        let len = self.len;
        self.update(&pad);
        self.len = len;
        self.state.iter().map(|w| format!("{w:08x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    fn hex(d: &[u8]) -> String {
        d.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn equals_sha256_for_any_split_and_resume() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        for len in [0, 1, 55, 56, 63, 64, 65, 119, 120, 128, 1000, 10_000] {
            let want = hex(&Sha256::digest(&data[..len]));
            for split in [1usize, 7, 64, 300] {
                let mut h = ResumableSha256::default();
                let mut at = 0;
                for c in data[..len].chunks(split) {
                    h.update(c);
                    at += c.len();
                    if at % 64 == 0 {
                        // Save and resume wherever a block ends, as an upload does between parts.
                        h = ResumableSha256::resume(&h.save().unwrap()).unwrap();
                    }
                }
                assert_eq!(h.finish_hex(), want, "len {len} split {split}");
            }
        }
    }

    #[test]
    fn saved_states_are_checked() {
        let mut h = ResumableSha256::default();
        h.update(b"abc");
        assert!(h.save().is_none());
        assert!(ResumableSha256::resume(&[0; 3]).is_none());
        let mut odd = ResumableSha256::default().save().unwrap();
        odd[39] = 5;
        assert!(ResumableSha256::resume(&odd).is_none());
    }
}
