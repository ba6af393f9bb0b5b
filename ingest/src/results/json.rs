//! The JSON test-result format: one record per test run, as JSON Lines (or any whitespace-
//! separated JSON objects), for tools without a JUnit reporter:
//!
//! ```json
//! {"name": "parses dates", "classname": "calendar", "file": "src/cal.rs", "result": "failure", "run_time": 0.02, "message": "expected 1, got 2"}
//! {"name": "parses dates", "classname": "calendar", "file": "src/cal.rs", "result": "success", "run_time": 0.01}
//! ```
//!
//! `name` and `result` (`success`, `failure`, `error`, `skipped`; also `passed`, `failed`) are
//! required. Records of the same test (classname, name, file) are its attempts, in order; the
//! last one is the verdict. The JUnit limits apply (test count, message length).

use std::collections::HashMap;

use serde::Deserialize;

use super::junit::JunitLimits;
use super::model::{Attempt, Parsed, TestCase, TestResult};

#[derive(Debug, Deserialize)]
struct Record {
    name: String,
    #[serde(default)]
    classname: String,
    #[serde(default)]
    file: Option<String>,
    result: String,
    #[serde(default)]
    run_time: Option<f64>,
    #[serde(default)]
    message: Option<String>,
}

/// Why a JSON result file was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JsonError {
    #[error("record {record}: {message} (expected one JSON object per test run with \"name\" and \"result\")")]
    Record { record: usize, message: String },
    #[error("record {record}: unknown result {result:?}; use success, failure, error or skipped")]
    Result { record: usize, result: String },
    #[error("more than {0} test runs in one file")]
    TooMany(usize),
}

/// Parses JSON test-run records.
pub fn parse(bytes: &[u8], limits: &JunitLimits) -> Result<Parsed, JsonError> {
    let mut tests: Vec<TestCase> = Vec::new();
    let mut index: HashMap<(String, String, Option<String>), usize> = HashMap::new();
    let mut warnings = Vec::new();
    for (i, record) in serde_json::Deserializer::from_slice(bytes).into_iter::<Record>().enumerate() {
        let n = i + 1;
        if n > limits.max_tests {
            return Err(JsonError::TooMany(limits.max_tests));
        }
        let r = record.map_err(|e| JsonError::Record { record: n, message: e.to_string() })?;
        let result = TestResult::parse(&r.result).ok_or_else(|| JsonError::Result { record: n, result: r.result.clone() })?;
        let time = r.run_time.filter(|t| t.is_finite() && *t >= 0.0);
        if r.run_time.is_some() && time.is_none() {
            warnings.push(format!("record {n}: unreadable run_time, left empty"));
        }
        let mut message = r.message.filter(|m| !m.is_empty());
        if let Some(m) = message.as_mut().filter(|m| m.len() > limits.max_message) {
            let mut cut = limits.max_message;
            while !m.is_char_boundary(cut) {
                cut -= 1;
            }
            m.truncate(cut);
        }
        let attempt = Attempt { result, time, message };
        let key = (r.classname.clone(), r.name.clone(), r.file.clone());
        match index.get(&key) {
            Some(&t) => {
                tests[t].attempts.push(attempt);
                tests[t].result = result;
            }
            None => {
                index.insert(key, tests.len());
                tests.push(TestCase { suite: String::new(), classname: r.classname, name: r.name, file: r.file, result, attempts: vec![attempt] });
            }
        }
    }
    Ok(Parsed { tests, warnings })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_become_tests_with_attempts() {
        let input = br#"{"name": "a", "classname": "c", "result": "failure", "run_time": 0.5, "message": "boom"}
            {"name": "a", "classname": "c", "result": "success", "run_time": 0.25}
            {"name": "b", "result": "skipped"}"#;
        let parsed = parse(input, &JunitLimits::default()).expect("parses");
        let c = parsed.counts();
        assert_eq!((c.tests, c.success, c.skipped, c.flaky, c.attempts), (2, 1, 1, 1, 3));
        assert_eq!(parsed.tests[0].time(), Some(0.75));
        assert_eq!(parsed.tests[0].attempts[0].message.as_deref(), Some("boom"));
    }

    #[test]
    fn bad_records_say_which_and_why() {
        let err = parse(b"{\"name\": \"a\", \"result\": \"ok\"}", &JunitLimits::default()).unwrap_err();
        assert!(err.to_string().contains("record 1: unknown result \"ok\""), "{err}");
        let err = parse(b"{\"name\": \"a\", \"result\": \"success\"}\n{\"result\": \"success\"}", &JunitLimits::default()).unwrap_err();
        assert!(err.to_string().starts_with("record 2: missing field `name`"), "{err}");
        let err = parse(b"<testsuite/>", &JunitLimits::default()).unwrap_err();
        assert!(err.to_string().contains("record 1"), "{err}");
    }
}
