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
