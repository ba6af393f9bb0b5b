//! Incremental frame decoder over `BytesMut`: complete frames out, payloads as `Bytes` slices.

use bytes::{Buf, BytesMut};
use serde::de::DeserializeOwned;

use crate::frame::{kind, Data, Frame, StreamTag, DATA_HEADER, FRAME_HEADER};

/// Why bytes could not be decoded into a frame. After any of these the stream is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    #[error("frame of {len} bytes is over the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("malformed {what} frame: {detail}")]
    Malformed { what: &'static str, detail: String },
}

/// Decodes frames from a growing buffer. Holds no state but the limit, so it is cheap to create.
#[derive(Debug, Clone, Copy)]
pub struct Decoder {
    max_payload: usize,
}

impl Decoder {
    /// A decoder that refuses frames whose payload is over `max_payload` bytes.
    pub fn new(max_payload: usize) -> Self {
        Self { max_payload }
    }

    /// The payload limit.
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// Takes one complete frame off the front of `buf`. `Ok(None)` means "need more bytes"; the
    /// buffer never has to hold more than one maximal frame. The DATA payload is split off the
    /// buffer without copying.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if buf.len() < FRAME_HEADER {
            return Ok(None);
        }
        let k = buf[0];
        let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        if !matches!(k, kind::OPEN..=kind::ERROR) {
            return Err(FrameError::UnknownKind(k));
        }
        if len > self.max_payload {
            return Err(FrameError::TooLarge { len, max: self.max_payload });
        }
        if buf.len() < FRAME_HEADER + len {
            buf.reserve(FRAME_HEADER + len - buf.len());
            return Ok(None);
        }
        buf.advance(FRAME_HEADER);
        let mut payload = buf.split_to(len);
        let frame = match k {
            kind::OPEN => Frame::Open(json("OPEN", &payload)?),
            kind::ACCEPT => Frame::Accept(json("ACCEPT", &payload)?),
            kind::END => Frame::End(json("END", &payload)?),
            kind::ERROR => Frame::Error(json("ERROR", &payload)?),
            kind::ACK => {
                if len != 8 {
                    return Err(malformed("ACK", format!("payload is {len} bytes, expected 8")));
                }
                Frame::Ack { durable: payload.get_u64() }
            }
            kind::DATA => {
                if len < DATA_HEADER {
                    return Err(malformed("DATA", format!("payload is {len} bytes, shorter than its header")));
                }
                let offset = payload.get_u64();
                let timestamp_us = payload.get_u64();
                let tag = payload.get_u8();
                let stream = StreamTag::from_byte(tag)
                    .ok_or_else(|| malformed("DATA", format!("unknown stream tag {tag}")))?;
                if offset.checked_add(payload.len() as u64).is_none() {
                    return Err(malformed("DATA", "offset + length overflows".into()));
                }
                Frame::Data(Data { offset, timestamp_us, stream, bytes: payload.freeze() })
            }
            other => return Err(FrameError::UnknownKind(other)),
        };
        Ok(Some(frame))
    }
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new(crate::DEFAULT_MAX_FRAME)
    }
}

fn malformed(what: &'static str, detail: String) -> FrameError {
    FrameError::Malformed { what, detail }
}

fn json<T: DeserializeOwned>(what: &'static str, payload: &[u8]) -> Result<T, FrameError> {
    serde_json::from_slice(payload).map_err(|e| malformed(what, e.to_string()))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use proptest::prelude::*;

    use super::*;
    use crate::frame::*;
    use crate::ids::{JobId, StepId};

    fn sample_frames() -> Vec<Frame> {
        vec![
            Frame::Open(Open {
                job: JobId::new("j1").unwrap(),
                step: StepId::new("s1").unwrap(),
                name: "build".into(),
                token: "tok".into(),
            }),
            Frame::Accept(Accept { hwm: 42, ended: false }),
            Frame::Data(Data {
                offset: 7,
                timestamp_us: 99,
                stream: StreamTag::Stderr,
                bytes: Bytes::from_static(b"\x1b[31mred\r\n\xff"),
            }),
            Frame::Ack { durable: 1 << 40 },
            Frame::End(End {
                exit_code: Some(3),
                reason: EndReason::Cancelled,
                duration_ms: 5,
                length: 10,
                checksum: "00".into(),
            }),
            Frame::Error(ErrorFrame { kind: ErrorKind::Gap, message: "gap".into(), hwm: Some(3) }),
        ]
    }

    #[test]
    fn frames_round_trip_through_any_split() {
        let frames = sample_frames();
        let mut wire = BytesMut::new();
        for f in &frames {
            f.encode(&mut wire);
        }
        let wire = wire.freeze();
        // Feed the encoded stream in every possible pair of pieces.
        for cut in 0..wire.len() {
            let mut buf = BytesMut::new();
            let mut out = Vec::new();
            for piece in [&wire[..cut], &wire[cut..]] {
                buf.extend_from_slice(piece);
                while let Some(f) = Decoder::default().decode(&mut buf).unwrap() {
                    out.push(f);
                }
            }
            assert_eq!(out, frames, "cut at {cut}");
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn oversize_frame_is_refused_before_it_is_buffered() {
        let mut buf = BytesMut::from(&[kind::DATA, 0x7f, 0xff, 0xff, 0xff][..]);
        let err = Decoder::new(1024).decode(&mut buf).unwrap_err();
        assert_eq!(err, FrameError::TooLarge { len: 0x7fff_ffff, max: 1024 });
    }

    #[test]
    fn malformed_frames_get_clear_errors() {
        fn check(bytes: &[u8], expected: &str) {
            let err = Decoder::default().decode(&mut BytesMut::from(bytes)).unwrap_err();
            assert!(err.to_string().contains(expected), "{err} does not contain {expected}");
        }
        check(&[9, 0, 0, 0, 0], "unknown frame kind 9");
        check(&[kind::ACK, 0, 0, 0, 1, 0], "ACK");
        check(&[kind::DATA, 0, 0, 0, 1, 0], "shorter than its header");
        check(&[kind::OPEN, 0, 0, 0, 2, b'{', b'}'], "malformed OPEN frame");
        let mut data = vec![kind::DATA, 0, 0, 0, 17];
        data.extend_from_slice(&[0; 16]);
        data.push(9);
        check(&data, "unknown stream tag 9");
        let mut data = vec![kind::DATA, 0, 0, 0, 18];
        data.extend_from_slice(&[0xff; 8]);
        data.extend_from_slice(&[0; 8]);
        data.extend_from_slice(&[1, b'x']);
        check(&data, "overflows");
    }

    proptest! {
        // Random bytes never panic the decoder, and it never consumes more than it was given.
        #[test]
        fn random_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let mut buf = BytesMut::from(&input[..]);
            let decoder = Decoder::new(2048);
            while let Ok(Some(_)) = decoder.decode(&mut buf) {}
        }

        // Random bytes after a valid frame header prefix also never panic.
        #[test]
        fn random_payloads_never_panic(k in 0u8..8, payload in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut buf = BytesMut::new();
            buf.extend_from_slice(&[k]);
            buf.extend_from_slice(&(payload.len() as u32).to_be_bytes());
            buf.extend_from_slice(&payload);
            let _ = Decoder::default().decode(&mut buf);
        }
    }
}
