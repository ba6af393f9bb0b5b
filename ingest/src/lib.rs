//! Tailrace ingest: takes step output over QUIC or HTTP/2, applies the offset rule, writes it to
//! the live tier and acknowledges only durable bytes.
//!
//! Both transports hand each step's byte stream of frames to one [`IngestCore::serve_stream`],
//! so everything the protocol promises holds whichever transport an agent could use.

pub mod core;
pub mod http2;
pub mod metrics;
pub mod mask;
pub mod quic;
pub mod quota;
pub mod results;
pub mod tls;

pub use crate::core::{Archiving, IngestCore, IngestLimits};
pub use crate::metrics::IngestMetrics;
