//! Tailrace wire protocol: frames, their codec, ids, the offset rule and signed tokens. No I/O.
//!
//! Every transport (QUIC stream, HTTP/2 request body) carries the same byte stream of frames,
//! so the agent and the ingest core speak one protocol whatever the network allows.

pub mod artifact_path;
pub mod codec;
pub mod frame;
pub mod ids;
pub mod offset;
pub mod secret;
pub mod token;

pub use codec::{Decoder, FrameError};
pub use frame::{Accept, Data, End, EndReason, ErrorFrame, ErrorKind, Frame, Open, StreamTag};
pub use ids::{IdError, JobId, StepId};
pub use offset::{apply_offset_rule, OffsetDecision, StreamHasher};

/// ALPN protocol id for QUIC, and the value of the `tailrace-protocol` HTTP header.
pub const ALPN: &[u8] = b"tailrace/1";
/// The protocol version carried in the HTTP header.
pub const PROTOCOL_VERSION: &str = "1";
/// Largest DATA payload an agent sends in one frame.
pub const MAX_CHUNK: usize = 256 * 1024;
/// Default limit on a frame's payload, enforced by the decoder.
pub const DEFAULT_MAX_FRAME: usize = 1024 * 1024;
