//! Test results: JUnit XML (every dialect real tools write) parsed into tests with attempts.

pub mod junit;
pub mod model;

pub use junit::{parse as parse_junit, JunitError, JunitLimits};
pub use model::{Attempt, Counts, Parsed, TestCase, TestResult};
