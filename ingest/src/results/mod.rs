//! Test results: JUnit XML (every dialect real tools write) and the JSON record format, parsed
//! into tests with attempts.

pub mod json;
pub mod junit;
pub mod model;

pub use json::{parse as parse_json, JsonError};
pub use junit::{parse as parse_junit, JunitError, JunitLimits};
pub use model::{Attempt, Counts, Parsed, TestCase, TestResult};
