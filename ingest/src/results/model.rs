//! What a test-result file parses to: tests with their attempts, and a report of what the parser
//! noticed on the way.

use serde::{Deserialize, Serialize};

/// The result of one attempt of a test (CircleCI's `result` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TestResult {
    Success,
    Failure,
    Error,
    Skipped,
}

impl TestResult {
    pub fn as_str(self) -> &'static str {
        match self {
            TestResult::Success => "success",
            TestResult::Failure => "failure",
            TestResult::Error => "error",
            TestResult::Skipped => "skipped",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "success" | "passed" | "pass" => TestResult::Success,
            "failure" | "failed" | "fail" => TestResult::Failure,
            "error" => TestResult::Error,
            "skipped" | "skip" => TestResult::Skipped,
            _ => return None,
        })
    }

    pub fn is_failed(self) -> bool {
        matches!(self, TestResult::Failure | TestResult::Error)
    }
}

/// One run of a test: the first, a retry, or a rerun.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub result: TestResult,
    /// Seconds, when the file says (retries inside one `<testcase>` share its time, which is
    /// given to its final attempt).
    pub time: Option<f64>,
    /// The failure, error or skip message (attribute, then body), truncated to
    /// [`super::junit::JunitLimits::max_message`].
    pub message: Option<String>,
}

/// One test and all its attempts in the file, in the order they ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestCase {
    /// Enclosing suite names, outermost first, joined with `/`.
    pub suite: String,
    pub classname: String,
    pub name: String,
    pub file: Option<String>,
    /// The verdict the tool reported: the last `<testcase>`'s own result (its reruns, if any,
    /// are attempts, but the verdict stays what the tool said).
    pub result: TestResult,
    pub attempts: Vec<Attempt>,
}

impl TestCase {
    /// The verdict.
    pub fn result(&self) -> TestResult {
        self.result
    }

    /// Passed in the end after failing at least once (a retry made it pass).
    pub fn is_flaky(&self) -> bool {
        self.result() == TestResult::Success && self.attempts.iter().any(|a| a.result.is_failed())
    }

    /// Total seconds over all attempts that say how long they took.
    pub fn time(&self) -> Option<f64> {
        let times: Vec<f64> = self.attempts.iter().filter_map(|a| a.time).collect();
        (!times.is_empty()).then(|| times.iter().sum())
    }
}

/// Counts of a parsed file, by each test's final result.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub tests: u64,
    pub success: u64,
    pub failure: u64,
    pub error: u64,
    pub skipped: u64,
    pub flaky: u64,
    pub attempts: u64,
}

/// A parsed file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Parsed {
    pub tests: Vec<TestCase>,
    /// What the parser noticed and how it decided: declared totals that disagree with the test
    /// cases, unreadable times, invalid UTF-8 replaced, messages truncated.
    pub warnings: Vec<String>,
}

impl Parsed {
    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for t in &self.tests {
            c.tests += 1;
            c.attempts += t.attempts.len() as u64;
            match t.result() {
                TestResult::Success => c.success += 1,
                TestResult::Failure => c.failure += 1,
                TestResult::Error => c.error += 1,
                TestResult::Skipped => c.skipped += 1,
            }
            c.flaky += u64::from(t.is_flaky());
        }
        c
    }
}
