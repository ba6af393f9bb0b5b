//! The JUnit XML and JSON test-result parsers on arbitrary bytes: errors, never panics, and
//! never keeps a message longer than the limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tailrace_ingest::results::{parse_json, parse_junit, JunitLimits};

fuzz_target!(|data: &[u8]| {
    let limits = JunitLimits { max_event: 1 << 16, max_depth: 16, max_message: 256, max_tests: 1000 };
    if let Ok(parsed) = parse_junit(data, &limits) {
        for t in &parsed.tests {
            for a in &t.attempts {
                assert!(a.message.as_ref().is_none_or(|m| m.len() <= limits.max_message));
            }
        }
    }
    let _ = parse_json(data, &limits);
});
