//! Test insights answered from rollups kept at ingest time — flaky tests, most failed, slowest
//! (p95) and per-workflow-run counts — so queries never scan raw test runs.
//!
//! Durations are kept as a histogram per test per day: four buckets per doubling from 1 ms
//! (bucket 0 holds everything up to 1 ms, the last everything over ~17 min), so a p95 read from
//! it is at most 19% above the true value, and merging days is adding counts.

use serde::{Deserialize, Serialize};

/// Buckets of a duration histogram.
pub const HIST_BUCKETS: usize = 82;

/// The bucket of a duration in seconds.
pub fn bucket(seconds: f64) -> usize {
    let ms = seconds * 1000.0;
    // Also NaN: no duration goes to the first bucket.
    if ms.is_nan() || ms <= 1.0 {
        return 0;
    }
    ((ms.log2() * 4.0).ceil() as usize).min(HIST_BUCKETS - 1)
}

/// The largest duration (seconds) bucket `i` holds.
pub fn bucket_upper(i: usize) -> f64 {
    2f64.powf(i as f64 / 4.0) / 1000.0
}

/// The 95th percentile of a histogram, as its bucket's upper bound; 0 when empty.
pub fn p95(hist: &[u32]) -> f64 {
    let total: u64 = hist.iter().map(|&n| u64::from(n)).sum();
    if total == 0 {
        return 0.0;
    }
    let want = (total * 95).div_ceil(100);
    let mut seen = 0u64;
    for (i, &n) in hist.iter().enumerate() {
        seen += u64::from(n);
        if seen >= want {
            return bucket_upper(i);
        }
    }
    bucket_upper(hist.len().saturating_sub(1))
}

/// Milliseconds in a day: rollups are kept per day since the epoch.
pub const DAY_MS: u64 = 86_400_000;

/// How a test run counts: its index in workflow-run counts (success, failure, error, skipped),
/// and whether it passed or failed.
pub fn classify(result: &str) -> (usize, bool, bool) {
    match result {
        "success" => (0, true, false),
        "failure" => (1, false, true),
        "error" => (2, false, true),
        _ => (3, false, false),
    }
}

/// A histogram as stored: little-endian `u32` counts.
pub fn hist_to_blob(h: &[u32]) -> Vec<u8> {
    h.iter().flat_map(|n| n.to_le_bytes()).collect()
}

/// A stored histogram, padded to [`HIST_BUCKETS`].
pub fn hist_from_blob(b: &[u8]) -> Vec<u32> {
    let mut h: Vec<u32> = b.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    h.resize(HIST_BUCKETS, 0);
    h
}

/// Adds histogram `b` into `a`.
pub fn hist_merge(a: &mut [u32], b: &[u32]) {
    for (x, y) in a.iter_mut().zip(b) {
        *x += y;
    }
}

/// A test's totals over a window, summed from its rollup rows.
#[derive(Debug, Default)]
pub struct Totals {
    pub runs: u64,
    pub failed: u64,
    pub flaky: bool,
    /// The largest p95 of any one of its rows: a merged p95 is never above it, so it ranks the
    /// candidates for "slowest".
    pub max_p95_ms: f64,
}

impl Totals {
    /// Adds one rollup row.
    pub fn add(&mut self, runs: u64, failed: u64, flaky: u64, p95_ms: f64) {
        self.runs += runs;
        self.failed += failed;
        self.flaky |= flaky > 0;
        self.max_p95_ms = self.max_p95_ms.max(p95_ms);
    }
}

/// The tests whose exact figures a metrics answer needs: the most failed (at most `limit`) and
/// the candidates for slowest (`3 × limit` by their largest row p95), ties broken by id.
pub fn pick_tests<K: Ord + Clone>(by_test: &std::collections::HashMap<K, Totals>, limit: usize) -> (Vec<K>, Vec<K>) {
    let mut ids: Vec<(&K, &Totals)> = by_test.iter().collect();
    ids.sort_by(|a, b| b.1.failed.cmp(&a.1.failed).then(a.0.cmp(b.0)));
    let most_failed = ids.iter().filter(|(_, t)| t.failed > 0).take(limit).map(|(id, _)| (*id).clone()).collect();
    ids.sort_by(|a, b| b.1.max_p95_ms.total_cmp(&a.1.max_p95_ms).then(a.0.cmp(b.0)));
    let candidates = ids.iter().take(limit * 3).map(|(id, _)| (*id).clone()).collect();
    (most_failed, candidates)
}

/// The slowest `limit` of the candidates' exact figures.
pub fn slowest(mut candidates: Vec<TestMetric>, limit: usize) -> Vec<TestMetric> {
    candidates.sort_by(|a, b| b.p95_duration.total_cmp(&a.p95_duration));
    candidates.truncate(limit);
    candidates
}

/// What the store keeps per test and commit: whether it passed there, failed there, and the
/// seconds its failed runs took.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CommitRecord {
    pub passed: bool,
    pub failed: bool,
    pub failed_time: f64,
}

impl CommitRecord {
    /// Folds in one run (`passed`/`failed` by its result, `run_time` in seconds). Returns the
    /// new record and, when this run makes the test flaky on the commit (it has now both passed
    /// and failed there, for the first time), the seconds wasted by its failures.
    pub fn fold(self, passed: bool, failed: bool, run_time: Option<f64>) -> (Self, Option<f64>) {
        let failed_time = self.failed_time + if failed { run_time.unwrap_or(0.0) } else { 0.0 };
        let next = Self { passed: self.passed || passed, failed: self.failed || failed, failed_time };
        let flaked = next.passed && next.failed && !(self.passed && self.failed);
        (next, flaked.then_some(failed_time))
    }
}

/// A flaky test of a project: passed and failed on the same commit, or needed a retry to pass.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlakyTest {
    pub classname: String,
    pub name: String,
    pub file: String,
    pub source: String,
    pub times_flaked: u64,
    /// Seconds spent in the failed runs.
    pub time_wasted: f64,
    /// The job where it last flaked.
    pub job_name: Option<String>,
    pub job_number: u64,
    pub pipeline_number: Option<u64>,
    pub workflow_id: String,
    pub workflow_name: Option<String>,
    pub workflow_created_at_ms: u64,
}

/// One test's figures over a window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestMetric {
    pub classname: String,
    pub name: String,
    pub file: String,
    pub source: String,
    pub job_name: String,
    pub failed_runs: u64,
    pub total_runs: u64,
    pub flaky: bool,
    /// Seconds.
    pub p95_duration: f64,
}

/// One test's figures on one day (all workflows and branches).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestDay {
    /// Days since the Unix epoch.
    pub day: u64,
    pub runs: u64,
    pub failed_runs: u64,
    pub flaky_runs: u64,
    /// Seconds.
    pub p95_duration: f64,
}

/// Test counts of one workflow run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowTestRun {
    pub workflow_id: String,
    pub pipeline_number: Option<u64>,
    pub created_at_ms: u64,
    pub success: u64,
    pub failure: u64,
    pub error: u64,
    pub skipped: u64,
}

/// What to compute test metrics over.
#[derive(Debug, Clone)]
pub struct MetricsQuery {
    pub workflow: String,
    /// One branch; `None` for all.
    pub branch: Option<String>,
    /// Only runs from this time on (ms since the epoch).
    pub since_ms: u64,
    /// Tests per list (most failed, slowest) and workflow runs listed.
    pub limit: usize,
}

/// Test metrics of one workflow of a project.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TestMetrics {
    pub total_test_runs: u64,
    /// Workflow runs in the window (with at least one uploaded test).
    pub workflow_runs: u64,
    pub most_failed: Vec<TestMetric>,
    pub slowest: Vec<TestMetric>,
    /// The most recent workflow runs, newest first.
    pub runs: Vec<WorkflowTestRun>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p95_is_within_a_bucket_of_the_truth() {
        let mut hist = vec![0u32; HIST_BUCKETS];
        for i in 1..=1000u32 {
            hist[bucket(f64::from(i) / 100.0)] += 1; // 10 ms … 10 s
        }
        let p = p95(&hist);
        assert!((9.5..=9.5 * 1.19).contains(&p), "{p}");
        assert_eq!(bucket(0.0), 0);
        assert_eq!(bucket(f64::NAN), 0);
        assert_eq!(bucket(1e9), HIST_BUCKETS - 1);
        assert_eq!(p95(&[0; 4]), 0.0);
        for s in [0.002, 0.5, 3.0, 100.0] {
            assert!(bucket_upper(bucket(s)) >= s && bucket_upper(bucket(s)) <= s * 1.19 + 1e-9, "{s}");
        }
    }
}
