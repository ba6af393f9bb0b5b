//! Tailrace agent: the runner side. Runs a command, keeps its output in a bounded on-disk spool,
//! streams it to ingest over QUIC or HTTP/2, resumes from the server's hwm after any failure, and
//! ends the step with a verified END. Also the HTTP client used by the CLI (jobs, tail) and
//! artifact uploads.

pub mod client;
pub mod command;
pub mod mask;
pub mod net;
pub mod run;
pub mod sender;
pub mod spool;
pub mod tail;
pub mod transport;
pub mod units;
pub mod upload;

pub use run::{run_step, RunOptions, RunOutcome};

/// Microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}
