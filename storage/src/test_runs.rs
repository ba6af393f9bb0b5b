//! Test runs as the metadata store keeps them: one record per test per uploaded result file of a
//! job, with its verdict, time, message and how many attempts it took.

use serde::{Deserialize, Serialize};

/// One test's run in a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestRun {
    pub classname: String,
    pub name: String,
    pub file: Option<String>,
    /// The result file (or upload) it came from.
    pub source: String,
    /// `success`, `failure`, `error` or `skipped`: the verdict.
    pub result: String,
    /// Seconds over all attempts, when known.
    pub run_time: Option<f64>,
    pub message: Option<String>,
    pub attempts: u32,
    /// Passed after a failed attempt.
    pub flaky: bool,
    /// Seconds spent in failed attempts of a test that passed in the end (CircleCI's
    /// `time-wasted`); 0 otherwise.
    pub wasted_time: f64,
}
