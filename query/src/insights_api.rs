//! Test insights in CircleCI API v2's shapes, answered from the rollups (never from raw runs):
//! `GET /api/v2/insights/{slug}/flaky-tests` and
//! `GET /api/v2/insights/{slug}/workflows/{workflow}/test-metrics?branch=&all-branches=`; and
//! Tailrace's per-test history by day, `GET /api/v1/projects/{slug}/tests/history`.
//!
//! Test metrics cover the last 90 days. Without `branch` (or with `all-branches=true`) they
//! cover every branch: Tailrace does not know a project's default branch.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use tailrace_storage::insights::{MetricsQuery, TestMetric};
use tailrace_storage::meta::now_ms;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::AppState;

/// Days of history test metrics cover.
const WINDOW_DAYS: u64 = 90;
/// Tests per list and workflow runs listed.
const LIMIT: usize = 10;

fn project_reader(claims: &tailrace_protocol::token::Claims, vcs: &str, org: &str, repo: &str) -> Result<String, ApiError> {
    let project = format!("{vcs}/{org}/{repo}");
    // Insights span jobs: a project read token or the admin token, not a job token.
    if !claims.can_read(&project, "") {
        return Err(ApiError::NotFound(format!("project {project} not found, or your token cannot read it (use a project read token)")));
    }
    Ok(project)
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct CircleFlakyTest {
    pub classname: String,
    pub file: String,
    pub job_name: Option<String>,
    pub job_number: u64,
    pub pipeline_number: Option<u64>,
    pub source: String,
    pub test_name: String,
    pub time_wasted: f64,
    pub times_flaked: u64,
    pub workflow_created_at: String,
    pub workflow_id: String,
    pub workflow_name: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct FlakyTests {
    pub flaky_tests: Vec<CircleFlakyTest>,
    pub total_flaky_tests: usize,
}

pub async fn flaky_tests(
    State(state): State<Arc<AppState>>,
    Caller(claims): Caller,
    Path((vcs, org, repo)): Path<(String, String, String)>,
) -> Result<Json<FlakyTests>, ApiError> {
    let project = project_reader(&claims, &vcs, &org, &repo)?;
    let flaky: Vec<CircleFlakyTest> = state
        .core
        .meta
        .flaky_tests(&project)
        .await?
        .into_iter()
        .map(|f| CircleFlakyTest {
            classname: f.classname,
            file: f.file,
            job_name: f.job_name,
            job_number: f.job_number,
            pipeline_number: f.pipeline_number,
            source: f.source,
            test_name: f.name,
            time_wasted: f.time_wasted,
            times_flaked: f.times_flaked,
            workflow_created_at: tailrace_storage::time::rfc3339(f.workflow_created_at_ms),
            workflow_id: f.workflow_id,
            workflow_name: f.workflow_name,
        })
        .collect();
    Ok(Json(FlakyTests { total_flaky_tests: flaky.len(), flaky_tests: flaky }))
}

#[derive(Debug, Deserialize)]
pub struct MetricsParams {
    pub branch: Option<String>,
    #[serde(rename = "all-branches")]
    pub all_branches: Option<bool>,
}

#[derive(Debug, Serialize)]
pub struct CircleTestMetric {
    pub test_name: String,
    pub classname: String,
    pub file: String,
    pub source: String,
    pub job_name: String,
    pub failed_runs: u64,
    pub total_runs: u64,
    pub flaky: bool,
    pub p95_duration: f64,
}

impl From<TestMetric> for CircleTestMetric {
    fn from(m: TestMetric) -> Self {
        Self {
            test_name: m.name,
            classname: m.classname,
            file: m.file,
            source: m.source,
            job_name: m.job_name,
            failed_runs: m.failed_runs,
            total_runs: m.total_runs,
            flaky: m.flaky,
            p95_duration: m.p95_duration,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct TestCounts {
    pub error: u64,
    pub failure: u64,
    pub skipped: u64,
    pub success: u64,
    pub total: u64,
}

#[derive(Debug, Serialize)]
pub struct CircleTestRun {
    pub pipeline_number: Option<u64>,
    pub workflow_id: String,
    pub success_rate: f64,
    pub test_counts: TestCounts,
}

#[derive(Debug, Serialize)]
pub struct TestMetricsAnswer {
    pub average_test_count: u64,
    pub most_failed_tests: Vec<CircleTestMetric>,
    pub slowest_tests: Vec<CircleTestMetric>,
    pub total_test_runs: u64,
    pub test_runs: Vec<CircleTestRun>,
}

pub async fn test_metrics(
    State(state): State<Arc<AppState>>,
    Caller(claims): Caller,
    Path((vcs, org, repo, workflow)): Path<(String, String, String, String)>,
    Query(p): Query<MetricsParams>,
) -> Result<Json<TestMetricsAnswer>, ApiError> {
    let project = project_reader(&claims, &vcs, &org, &repo)?;
    let branch = if p.all_branches == Some(true) { None } else { p.branch };
    let query = MetricsQuery { workflow, branch, since_ms: now_ms().saturating_sub(WINDOW_DAYS * 86_400_000), limit: LIMIT };
    let m = state.core.meta.test_metrics(&project, &query).await?;
    let test_runs = m
        .runs
        .into_iter()
        .map(|r| {
            let total = r.success + r.failure + r.error + r.skipped;
            let ran = total - r.skipped;
            CircleTestRun {
                pipeline_number: r.pipeline_number,
                workflow_id: r.workflow_id,
                success_rate: if ran == 0 { 0.0 } else { r.success as f64 / ran as f64 },
                test_counts: TestCounts { error: r.error, failure: r.failure, skipped: r.skipped, success: r.success, total },
            }
        })
        .collect();
    Ok(Json(TestMetricsAnswer {
        average_test_count: m.total_test_runs.checked_div(m.workflow_runs).unwrap_or(0),
        most_failed_tests: m.most_failed.into_iter().map(Into::into).collect(),
        slowest_tests: m.slowest.into_iter().map(Into::into).collect(),
        total_test_runs: m.total_test_runs,
        test_runs,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryParams {
    pub name: String,
    #[serde(default)]
    pub classname: String,
    #[serde(default)]
    pub file: String,
    /// Days back from today (default 30, at most 365).
    pub days: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct HistoryDay {
    /// `YYYY-MM-DD` (UTC).
    pub date: String,
    pub runs: u64,
    pub failed_runs: u64,
    pub flaky_runs: u64,
    pub success_rate: f64,
    pub p95_duration: f64,
}

#[derive(Debug, Serialize)]
pub struct TestHistory {
    pub classname: String,
    pub name: String,
    pub file: String,
    pub total_runs: u64,
    pub failed_runs: u64,
    pub flaky_runs: u64,
    /// Days with runs, oldest first.
    pub days: Vec<HistoryDay>,
}

/// `GET /api/v1/projects/{vcs}/{org}/{repo}/tests/history?name=&classname=&file=&days=`: one
/// test's runs, failures, flaky runs and p95 per day over every workflow and branch.
pub async fn test_history(
    State(state): State<Arc<AppState>>,
    Caller(claims): Caller,
    Path((vcs, org, repo)): Path<(String, String, String)>,
    Query(p): Query<HistoryParams>,
) -> Result<Json<TestHistory>, ApiError> {
    let project = project_reader(&claims, &vcs, &org, &repo)?;
    let days = p.days.unwrap_or(30).clamp(1, 365);
    let since = (now_ms() / 86_400_000).saturating_sub(days - 1) * 86_400_000;
    let rows = state.core.meta.test_history(&project, (&p.classname, &p.name, &p.file), since).await?;
    let days: Vec<HistoryDay> = rows
        .into_iter()
        .map(|d| {
            let (y, m, dd) = tailrace_storage::time::civil_date(d.day * 86_400_000);
            HistoryDay {
                date: format!("{y:04}-{m:02}-{dd:02}"),
                runs: d.runs,
                failed_runs: d.failed_runs,
                flaky_runs: d.flaky_runs,
                success_rate: if d.runs == 0 { 0.0 } else { (d.runs - d.failed_runs) as f64 / d.runs as f64 },
                p95_duration: d.p95_duration,
            }
        })
        .collect();
    Ok(Json(TestHistory {
        total_runs: days.iter().map(|d| d.runs).sum(),
        failed_runs: days.iter().map(|d| d.failed_runs).sum(),
        flaky_runs: days.iter().map(|d| d.flaky_runs).sum(),
        classname: p.classname,
        name: p.name,
        file: p.file,
        days,
    }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(tailrace_storage::time::rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(tailrace_storage::time::rfc3339(1_764_300_000_123), "2025-11-28T03:20:00.123Z");
    }
}
