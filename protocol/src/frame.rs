//! The frames of the ingest protocol and their payloads.
//!
//! Layout of every frame: `kind: u8`, `len: u32 big-endian`, then `len` payload bytes.
//! DATA is binary (`offset: u64`, `timestamp_us: u64`, `stream: u8`, bytes) because it is the hot
//! path; the rare control frames carry JSON so they can grow fields without a new version.

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::ids::{JobId, StepId};

/// Frame kind bytes on the wire.
pub(crate) mod kind {
    pub const OPEN: u8 = 1;
    pub const ACCEPT: u8 = 2;
    pub const DATA: u8 = 3;
    pub const ACK: u8 = 4;
    pub const END: u8 = 5;
    pub const ERROR: u8 = 6;
}

/// Bytes before a frame's payload.
pub const FRAME_HEADER: usize = 5;
/// Bytes of a DATA payload before its output bytes.
pub const DATA_HEADER: usize = 17;

/// One protocol frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Agent → server: first frame on a stream; names the step and proves the right to write it.
    Open(Open),
    /// Server → agent: the step is open; resend from `hwm`.
    Accept(Accept),
    /// Agent → server: output bytes starting at `offset`.
    Data(Data),
    /// Server → agent: every byte below `durable` is held durably and may be dropped by the agent.
    Ack { durable: u64 },
    /// Agent → server: the step is over; verify length and checksum.
    End(End),
    /// Either way: something went wrong; `hwm` tells the agent where to resume.
    Error(ErrorFrame),
}

/// Opens (or resumes) one step's stream.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Open {
    pub job: JobId,
    pub step: StepId,
    /// Human-readable step name, shown in the UI.
    #[serde(default)]
    pub name: String,
    /// The runner's job-scoped token.
    pub token: String,
}

impl std::fmt::Debug for Open {
    // The token is a credential: never print it, not even in debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Open")
            .field("job", &self.job)
            .field("step", &self.step)
            .field("name", &self.name)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// The server's answer to OPEN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accept {
    /// Bytes the server already holds durably for this step.
    pub hwm: u64,
    /// True when the step already ended and was verified (a resend of END is answered with ACK).
    #[serde(default)]
    pub ended: bool,
}

/// Which of the command's outputs a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamTag {
    Stdout,
    Stderr,
    /// A pseudo-terminal merges both.
    Pty,
}

impl StreamTag {
    pub fn to_byte(self) -> u8 {
        match self {
            StreamTag::Stdout => 1,
            StreamTag::Stderr => 2,
            StreamTag::Pty => 3,
        }
    }
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(StreamTag::Stdout),
            2 => Some(StreamTag::Stderr),
            3 => Some(StreamTag::Pty),
            _ => None,
        }
    }
}

/// A chunk of output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Data {
    /// Byte offset of `bytes[0]` within the step's stream.
    pub offset: u64,
    /// When the agent read the bytes, in microseconds since the Unix epoch.
    pub timestamp_us: u64,
    pub stream: StreamTag,
    pub bytes: Bytes,
}

/// Why a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// The command exited by itself (with any exit code).
    Exited,
    /// The agent was told to stop (SIGTERM/SIGINT) and stopped the command.
    Cancelled,
    /// The agent's `--timeout` ran out.
    TimedOut,
    /// The command could not be started.
    FailedToStart,
}

/// The end of a step's stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct End {
    /// The command's exit code; `None` when it was killed by a signal.
    pub exit_code: Option<i32>,
    pub reason: EndReason,
    pub duration_ms: u64,
    /// Total bytes of the stream.
    pub length: u64,
    /// xxh3-64 of the whole stream, as 16 lowercase hex digits.
    pub checksum: String,
}

/// What went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// The frame could not be decoded; the stream is closed.
    BadFrame,
    /// The frame is larger than the limit.
    TooLarge,
    /// The token is missing, forged, expired or for another job.
    Unauthorized,
    /// A DATA frame started above the hwm; resend from `hwm`.
    Gap,
    /// END did not match what the server holds.
    Mismatch,
    /// The step already ended with different content.
    Conflict,
    /// A frame arrived that is not valid in the stream's state.
    Protocol,
    /// The server could not store the bytes; retry later.
    Unavailable,
}

/// An error report; the stream is closed after it unless `kind` is `Gap`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorFrame {
    pub kind: ErrorKind,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hwm: Option<u64>,
}

impl Frame {
    /// Appends this frame to `dst`. DATA payloads are copied here; the zero-copy path for DATA is
    /// [`write_data_header`] followed by the payload itself.
    pub fn encode(&self, dst: &mut BytesMut) {
        match self {
            Frame::Open(o) => encode_json(kind::OPEN, o, dst),
            Frame::Accept(a) => encode_json(kind::ACCEPT, a, dst),
            Frame::End(e) => encode_json(kind::END, e, dst),
            Frame::Error(e) => encode_json(kind::ERROR, e, dst),
            Frame::Ack { durable } => {
                dst.put_u8(kind::ACK);
                dst.put_u32(8);
                dst.put_u64(*durable);
            }
            Frame::Data(d) => {
                write_data_header(d.offset, d.timestamp_us, d.stream, d.bytes.len(), dst);
                dst.extend_from_slice(&d.bytes);
            }
        }
    }

    /// Encodes into a fresh buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut b = BytesMut::new();
        self.encode(&mut b);
        b.freeze()
    }
}

/// Writes the frame header and DATA header for a payload of `len` bytes; the caller writes the
/// payload right after, so output bytes are never copied into a frame buffer.
pub fn write_data_header(offset: u64, timestamp_us: u64, stream: StreamTag, len: usize, dst: &mut BytesMut) {
    dst.reserve(FRAME_HEADER + DATA_HEADER);
    dst.put_u8(kind::DATA);
    // A DATA payload is at most MAX_CHUNK (256 KiB) in practice; the encoder of a larger one
    // produces a frame that the peer's decoder refuses with TooLarge, which is the right outcome.
    dst.put_u32((DATA_HEADER + len) as u32);
    dst.put_u64(offset);
    dst.put_u64(timestamp_us);
    dst.put_u8(stream.to_byte());
}

fn encode_json<T: Serialize>(k: u8, v: &T, dst: &mut BytesMut) {
    // Serializing these plain structs into a Vec cannot fail: no maps with non-string keys,
    // no custom Serialize impls that error.
    let body = serde_json::to_vec(v).unwrap_or_default();
    dst.put_u8(k);
    dst.put_u32(body.len() as u32);
    dst.extend_from_slice(&body);
}
