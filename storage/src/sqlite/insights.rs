//! SQLite rollups for test insights: updated in the transaction that records a job's test runs,
//! read by the flaky-tests and test-metrics queries.
//!
//! * `test_rollups`: per project, workflow, branch, day and test — runs, failed runs, flaky
//!   events and a duration histogram.
//! * `test_commits`: per project, test and commit — whether it passed and failed there (the
//!   moment both are true is a flaky event).
//! * `flaky_tests`: per project and test — times flaked, time wasted, the job it last flaked in.
//! * `workflow_test_runs`: per workflow run — test counts by result.

use std::collections::HashMap;

use rusqlite::{params, OptionalExtension, Transaction};

use super::backend;
use crate::insights::{bucket, p95, FlakyTest, MetricsQuery, TestDay, TestMetric, TestMetrics, WorkflowTestRun, HIST_BUCKETS};
use crate::meta::{Job, MetaError};
use crate::test_runs::TestRun;

pub(super) const SCHEMA: &str = r#"
CREATE TABLE test_rollups (
    project TEXT NOT NULL, workflow TEXT NOT NULL, branch TEXT NOT NULL, day INTEGER NOT NULL,
    classname TEXT NOT NULL, name TEXT NOT NULL, file TEXT NOT NULL,
    source TEXT NOT NULL, job_name TEXT NOT NULL,
    runs INTEGER NOT NULL, failed INTEGER NOT NULL, flaky INTEGER NOT NULL, hist BLOB NOT NULL,
    PRIMARY KEY (project, workflow, day, branch, classname, name, file)
);
CREATE TABLE test_commits (
    project TEXT NOT NULL, classname TEXT NOT NULL, name TEXT NOT NULL, file TEXT NOT NULL, commit_sha TEXT NOT NULL,
    passed INTEGER NOT NULL, failed INTEGER NOT NULL, failed_time REAL NOT NULL,
    PRIMARY KEY (project, classname, name, file, commit_sha)
);
CREATE TABLE flaky_tests (
    project TEXT NOT NULL, classname TEXT NOT NULL, name TEXT NOT NULL, file TEXT NOT NULL,
    source TEXT NOT NULL, times_flaked INTEGER NOT NULL, time_wasted REAL NOT NULL, last_job_id TEXT NOT NULL,
    PRIMARY KEY (project, classname, name, file)
);
CREATE TABLE workflow_test_runs (
    project TEXT NOT NULL, workflow TEXT NOT NULL, run_id TEXT NOT NULL, branch TEXT NOT NULL,
    pipeline_number INTEGER, created_at_ms INTEGER NOT NULL,
    success INTEGER NOT NULL, failure INTEGER NOT NULL, error INTEGER NOT NULL, skipped INTEGER NOT NULL,
    PRIMARY KEY (project, workflow, run_id)
);
CREATE INDEX workflow_test_runs_recent ON workflow_test_runs (project, workflow, created_at_ms);
CREATE INDEX test_rollups_by_test ON test_rollups (project, classname, name, file, day);
"#;

const DAY_MS: u64 = 86_400_000;

fn hist_from_blob(b: &[u8]) -> Vec<u32> {
    let mut h: Vec<u32> = b.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    h.resize(HIST_BUCKETS, 0);
    h
}

fn hist_to_blob(h: &[u32]) -> Vec<u8> {
    h.iter().flat_map(|n| n.to_le_bytes()).collect()
}

/// Folds `runs` of `job` into every rollup.
pub(super) fn update(tx: &Transaction<'_>, job: &Job, runs: &[TestRun]) -> Result<(), MetaError> {
    let workflow = job.workflow.clone().unwrap_or_default();
    let branch = job.branch.clone().unwrap_or_default();
    let day = job.created_at_ms / DAY_MS;
    let job_name = job.name.clone().unwrap_or_default();
    let run_id = job.workflow_id.clone().unwrap_or_else(|| job.id.to_string());
    let mut counts = [0u64; 4];
    let mut get_rollup = tx
        .prepare_cached(
            "SELECT runs, failed, flaky, hist FROM test_rollups
             WHERE project = ?1 AND workflow = ?2 AND day = ?3 AND branch = ?4 AND classname = ?5 AND name = ?6 AND file = ?7",
        )
        .map_err(backend)?;
    let mut put_rollup = tx.prepare_cached("INSERT OR REPLACE INTO test_rollups VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)").map_err(backend)?;
    let mut get_commit = tx
        .prepare_cached("SELECT passed, failed, failed_time FROM test_commits WHERE project = ?1 AND classname = ?2 AND name = ?3 AND file = ?4 AND commit_sha = ?5")
        .map_err(backend)?;
    let mut put_commit = tx.prepare_cached("INSERT OR REPLACE INTO test_commits VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)").map_err(backend)?;
    let mut flaked = tx
        .prepare_cached(
            "INSERT INTO flaky_tests VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6, ?7)
             ON CONFLICT DO UPDATE SET times_flaked = times_flaked + 1, time_wasted = time_wasted + excluded.time_wasted,
                 source = excluded.source, last_job_id = excluded.last_job_id",
        )
        .map_err(backend)?;
    for r in runs {
        let file = r.file.clone().unwrap_or_default();
        let failed = r.result == "failure" || r.result == "error";
        let passed = r.result == "success";
        counts[match r.result.as_str() {
            "success" => 0,
            "failure" => 1,
            "error" => 2,
            _ => 3,
        }] += 1;
        // Flaky: a retry made it pass, or it both passed and failed on this commit.
        let mut wasted = r.flaky.then_some(r.wasted_time);
        if let (Some(commit), true) = (job.commit.as_deref(), passed || failed) {
            let prior: Option<(bool, bool, f64)> = get_commit
                .query_row(params![job.project, r.classname, r.name, file, commit], |x| Ok((x.get(0)?, x.get(1)?, x.get(2)?)))
                .optional()
                .map_err(backend)?;
            let (was_passed, was_failed, failed_time) = prior.unwrap_or((false, false, 0.0));
            let failed_time = failed_time + if failed { r.run_time.unwrap_or(0.0) } else { 0.0 };
            let (now_passed, now_failed) = (was_passed || passed, was_failed || failed);
            if now_passed && now_failed && !(was_passed && was_failed) {
                wasted = Some(wasted.unwrap_or(0.0) + failed_time);
            }
            put_commit.execute(params![job.project, r.classname, r.name, file, commit, now_passed, now_failed, failed_time]).map_err(backend)?;
        }
        if let Some(w) = wasted {
            flaked.execute(params![job.project, r.classname, r.name, file, r.source, w, job.id.as_str()]).map_err(backend)?;
        }
        if r.result == "skipped" {
            continue;
        }
        let key = params![job.project, workflow, day, branch, r.classname, r.name, file];
        let prior: Option<(u64, u64, u64, Vec<u8>)> =
            get_rollup.query_row(key, |x| Ok((x.get(0)?, x.get(1)?, x.get(2)?, x.get(3)?))).optional().map_err(backend)?;
        let (runs_n, failed_n, flaky_n, blob) = prior.unwrap_or((0, 0, 0, Vec::new()));
        let mut hist = hist_from_blob(&blob);
        hist[bucket(r.run_time.unwrap_or(0.0))] += 1;
        put_rollup
            .execute(params![
                job.project,
                workflow,
                branch,
                day,
                r.classname,
                r.name,
                file,
                r.source,
                job_name,
                runs_n + 1,
                failed_n + u64::from(failed),
                flaky_n + u64::from(wasted.is_some()),
                hist_to_blob(&hist)
            ])
            .map_err(backend)?;
    }
    tx.execute(
        "INSERT INTO workflow_test_runs VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
         ON CONFLICT DO UPDATE SET success = success + excluded.success, failure = failure + excluded.failure,
             error = error + excluded.error, skipped = skipped + excluded.skipped",
        params![job.project, workflow, run_id, branch, job.pipeline_number, job.created_at_ms, counts[0], counts[1], counts[2], counts[3]],
    )
    .map_err(backend)?;
    Ok(())
}

/// A project's flaky tests, most flaked first.
pub(super) fn flaky_tests(c: &rusqlite::Connection, project: &str) -> Result<Vec<FlakyTest>, MetaError> {
    let mut stmt = c
        .prepare_cached(
            "SELECT f.classname, f.name, f.file, f.source, f.times_flaked, f.time_wasted,
                    j.name, j.number, j.pipeline_number, j.workflow_id, j.id, j.workflow, j.created_at_ms
             FROM flaky_tests f JOIN jobs j ON j.id = f.last_job_id
             WHERE f.project = ?1 ORDER BY f.times_flaked DESC, f.time_wasted DESC, f.classname, f.name",
        )
        .map_err(backend)?;
    let rows = stmt
        .query_map([project], |r| {
            Ok(FlakyTest {
                classname: r.get(0)?,
                name: r.get(1)?,
                file: r.get(2)?,
                source: r.get(3)?,
                times_flaked: r.get(4)?,
                time_wasted: r.get(5)?,
                job_name: r.get(6)?,
                job_number: r.get(7)?,
                pipeline_number: r.get(8)?,
                workflow_id: r.get::<_, Option<String>>(9)?.map_or_else(|| r.get(10), Ok)?,
                workflow_name: r.get(11)?,
                workflow_created_at_ms: r.get(12)?,
            })
        })
        .map_err(backend)?;
    rows.collect::<Result<_, _>>().map_err(backend)
}

/// Test metrics of one workflow, merged over the window's days from the rollups.
pub(super) fn test_metrics(c: &rusqlite::Connection, project: &str, q: &MetricsQuery) -> Result<TestMetrics, MetaError> {
    let branch = q.branch.clone();
    let mut stmt = c
        .prepare_cached(
            "SELECT classname, name, file, source, job_name, runs, failed, flaky, hist FROM test_rollups
             WHERE project = ?1 AND workflow = ?2 AND day >= ?3 AND (?4 IS NULL OR branch = ?4)",
        )
        .map_err(backend)?;
    let mut tests: HashMap<(String, String, String), (TestMetric, Vec<u32>)> = HashMap::new();
    let mut total = 0u64;
    let mut rows = stmt.query(params![project, q.workflow, q.since_ms / DAY_MS, branch]).map_err(backend)?;
    while let Some(r) = rows.next().map_err(backend)? {
        let key: (String, String, String) = (r.get(0).map_err(backend)?, r.get(1).map_err(backend)?, r.get(2).map_err(backend)?);
        let (runs, failed, flaky): (u64, u64, u64) = (r.get(5).map_err(backend)?, r.get(6).map_err(backend)?, r.get(7).map_err(backend)?);
        let blob: Vec<u8> = r.get(8).map_err(backend)?;
        total += runs;
        let (source, job_name): (String, String) = (r.get(3).map_err(backend)?, r.get(4).map_err(backend)?);
        let e = tests.entry(key.clone()).or_insert_with(|| {
            (
                TestMetric {
                    classname: key.0,
                    name: key.1,
                    file: key.2,
                    source,
                    job_name,
                    failed_runs: 0,
                    total_runs: 0,
                    flaky: false,
                    p95_duration: 0.0,
                },
                vec![0; HIST_BUCKETS],
            )
        });
        e.0.total_runs += runs;
        e.0.failed_runs += failed;
        e.0.flaky |= flaky > 0;
        for (a, b) in e.1.iter_mut().zip(hist_from_blob(&blob)) {
            *a += b;
        }
    }
    let mut all: Vec<TestMetric> = tests.into_values().map(|(mut m, h)| {
        m.p95_duration = p95(&h);
        m
    }).collect();
    all.sort_by(|a, b| (&a.classname, &a.name, &a.file).cmp(&(&b.classname, &b.name, &b.file)));
    let mut most_failed: Vec<TestMetric> = all.iter().filter(|m| m.failed_runs > 0).cloned().collect();
    most_failed.sort_by_key(|m| std::cmp::Reverse(m.failed_runs));
    most_failed.truncate(q.limit);
    let mut slowest = all;
    slowest.sort_by(|a, b| b.p95_duration.total_cmp(&a.p95_duration));
    slowest.truncate(q.limit);

    let workflow_runs: u64 = c
        .query_row(
            "SELECT COUNT(*) FROM workflow_test_runs WHERE project = ?1 AND workflow = ?2 AND created_at_ms >= ?3 AND (?4 IS NULL OR branch = ?4)",
            params![project, q.workflow, q.since_ms, q.branch],
            |r| r.get(0),
        )
        .map_err(backend)?;
    let mut stmt = c
        .prepare_cached(
            "SELECT run_id, pipeline_number, created_at_ms, success, failure, error, skipped FROM workflow_test_runs
             WHERE project = ?1 AND workflow = ?2 AND created_at_ms >= ?3 AND (?4 IS NULL OR branch = ?4)
             ORDER BY created_at_ms DESC LIMIT ?5",
        )
        .map_err(backend)?;
    let runs = stmt
        .query_map(params![project, q.workflow, q.since_ms, q.branch, q.limit as i64], |r| {
            Ok(WorkflowTestRun {
                workflow_id: r.get(0)?,
                pipeline_number: r.get(1)?,
                created_at_ms: r.get(2)?,
                success: r.get(3)?,
                failure: r.get(4)?,
                error: r.get(5)?,
                skipped: r.get(6)?,
            })
        })
        .map_err(backend)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(backend)?;
    Ok(TestMetrics { total_test_runs: total, workflow_runs, most_failed, slowest, runs })
}

/// One test's days from `since_ms` on, oldest first, merged over workflows and branches.
pub(super) fn test_history(c: &rusqlite::Connection, project: &str, test: (&str, &str, &str), since_ms: u64) -> Result<Vec<TestDay>, MetaError> {
    let mut stmt = c
        .prepare_cached(
            "SELECT day, runs, failed, flaky, hist FROM test_rollups
             WHERE project = ?1 AND classname = ?2 AND name = ?3 AND file = ?4 AND day >= ?5 ORDER BY day",
        )
        .map_err(backend)?;
    let mut rows = stmt.query(params![project, test.0, test.1, test.2, since_ms / DAY_MS]).map_err(backend)?;
    let mut days: Vec<(TestDay, Vec<u32>)> = Vec::new();
    while let Some(r) = rows.next().map_err(backend)? {
        let day: u64 = r.get(0).map_err(backend)?;
        if days.last().is_none_or(|(d, _)| d.day != day) {
            days.push((TestDay { day, runs: 0, failed_runs: 0, flaky_runs: 0, p95_duration: 0.0 }, vec![0; HIST_BUCKETS]));
        }
        if let Some((d, h)) = days.last_mut() {
            d.runs += r.get::<_, u64>(1).map_err(backend)?;
            d.failed_runs += r.get::<_, u64>(2).map_err(backend)?;
            d.flaky_runs += r.get::<_, u64>(3).map_err(backend)?;
            for (a, b) in h.iter_mut().zip(hist_from_blob(&r.get::<_, Vec<u8>>(4).map_err(backend)?)) {
                *a += b;
            }
        }
    }
    Ok(days
        .into_iter()
        .map(|(mut d, h)| {
            d.p95_duration = p95(&h);
            d
        })
        .collect())
}
