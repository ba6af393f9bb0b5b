//! `tailrace-load`: a load generator for Tailrace. Simulates many agents (the agent crate's own
//! spool and sender, one connection per step as `tailrace run` makes) streaming realistic CI
//! output, and websocket tailers on their steps; reports throughput, tail latency percentiles,
//! the server's CPU and memory from `/proc`, and verifies every byte at the server's END, at
//! every tailer and in the archive.

pub mod corpus;
pub mod fanout;
pub mod procstat;
pub mod report;
pub mod run;
pub mod scenario;
pub mod step;
pub mod tailer;
pub mod target;
pub mod verify;

pub use report::Report;
pub use run::{RunOptions, run};
pub use scenario::Scenario;
pub use target::Target;
