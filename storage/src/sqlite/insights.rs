//! SQLite rollups for test insights: updated in the transaction that records a job's test runs,
//! read by the flaky-tests, test-metrics and history queries. Queries scan narrow rows only.
//!
//! * `tests`: each test of a project once (interned id), with its flaky record — times flaked,
//!   time wasted, the job it last flaked in.
//! * `test_rollups`: per project, workflow, day, branch and test — runs, failed runs, flaky events
//!   and that row's p95 (integers and a float: what test metrics scan).
//! * `test_hists`: the duration histogram of each rollup row, keyed by test first, read only for
//!   the tests a query lists.
//! * `test_commits`: per test and commit — whether it passed and failed there (the moment both
//!   are true is a flaky event).
//! * `workflow_test_runs`: per workflow run — test counts by result.

use std::collections::HashMap;

use rusqlite::{params, Connection, OptionalExtension};

use super::backend;
use crate::insights::{
    bucket, classify, hist_from_blob, hist_merge, hist_to_blob, p95, pick_tests, slowest, CommitRecord, FlakyTest, MetricsQuery, TestDay,
    TestMetric, TestMetrics, Totals, WorkflowTestRun, DAY_MS, HIST_BUCKETS,
};
use crate::meta::{Job, MetaError};
use crate::test_runs::TestRun;

pub(super) const SCHEMA: &str = r#"
CREATE TABLE tests (
    id INTEGER PRIMARY KEY,
    project TEXT NOT NULL, classname TEXT NOT NULL, name TEXT NOT NULL, file TEXT NOT NULL,
    source TEXT NOT NULL, job_name TEXT NOT NULL,
    times_flaked INTEGER NOT NULL DEFAULT 0, time_wasted REAL NOT NULL DEFAULT 0, last_flaky_job TEXT,
    UNIQUE (project, classname, name, file)
);
CREATE INDEX tests_flaky ON tests (project) WHERE times_flaked > 0;
CREATE TABLE test_rollups (
    project TEXT NOT NULL, workflow TEXT NOT NULL, day INTEGER NOT NULL, branch TEXT NOT NULL, test INTEGER NOT NULL,
    runs INTEGER NOT NULL, failed INTEGER NOT NULL, flaky INTEGER NOT NULL, p95_ms REAL NOT NULL,
    PRIMARY KEY (project, workflow, day, branch, test)
) WITHOUT ROWID;
CREATE INDEX test_rollups_by_test ON test_rollups (test, day);
CREATE TABLE test_hists (
    test INTEGER NOT NULL, day INTEGER NOT NULL, workflow TEXT NOT NULL, branch TEXT NOT NULL, hist BLOB NOT NULL,
    PRIMARY KEY (test, day, workflow, branch)
) WITHOUT ROWID;
CREATE TABLE test_commits (
    test INTEGER NOT NULL, commit_sha TEXT NOT NULL,
    passed INTEGER NOT NULL, failed INTEGER NOT NULL, failed_time REAL NOT NULL,
    PRIMARY KEY (test, commit_sha)
) WITHOUT ROWID;
CREATE TABLE workflow_test_runs (
    project TEXT NOT NULL, workflow TEXT NOT NULL, run_id TEXT NOT NULL, branch TEXT NOT NULL,
    pipeline_number INTEGER, created_at_ms INTEGER NOT NULL,
    success INTEGER NOT NULL, failure INTEGER NOT NULL, error INTEGER NOT NULL, skipped INTEGER NOT NULL,
    PRIMARY KEY (project, workflow, run_id)
);
CREATE INDEX workflow_test_runs_recent ON workflow_test_runs (project, workflow, created_at_ms);
"#;

/// Folds `runs` of `job` into every rollup.
pub(super) fn update(tx: &Connection, job: &Job, runs: &[TestRun]) -> Result<(), MetaError> {
    let workflow = job.workflow.clone().unwrap_or_default();
    let branch = job.branch.clone().unwrap_or_default();
    let day = job.created_at_ms / DAY_MS;
    let job_name = job.name.clone().unwrap_or_default();
    let run_id = job.workflow_id.clone().unwrap_or_else(|| job.id.to_string());
    let mut counts = [0u64; 4];
    let mut test_id = tx
        .prepare_cached(
            "INSERT INTO tests (project, classname, name, file, source, job_name) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT DO UPDATE SET source = excluded.source, job_name = excluded.job_name RETURNING id",
        )
        .map_err(backend)?;
    let mut get_hist = tx
        .prepare_cached("SELECT hist FROM test_hists WHERE test = ?1 AND day = ?2 AND workflow = ?3 AND branch = ?4")
        .map_err(backend)?;
    let mut put_hist = tx.prepare_cached("INSERT OR REPLACE INTO test_hists VALUES (?1, ?2, ?3, ?4, ?5)").map_err(backend)?;
    let mut put_rollup = tx
        .prepare_cached(
            "INSERT INTO test_rollups VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6, ?7, ?8)
             ON CONFLICT DO UPDATE SET runs = runs + 1, failed = failed + excluded.failed, flaky = flaky + excluded.flaky,
                 p95_ms = excluded.p95_ms",
        )
        .map_err(backend)?;
    let mut get_commit = tx
        .prepare_cached("SELECT passed, failed, failed_time FROM test_commits WHERE test = ?1 AND commit_sha = ?2")
        .map_err(backend)?;
    let mut put_commit = tx.prepare_cached("INSERT OR REPLACE INTO test_commits VALUES (?1, ?2, ?3, ?4, ?5)").map_err(backend)?;
    let mut flaked = tx
        .prepare_cached("UPDATE tests SET times_flaked = times_flaked + 1, time_wasted = time_wasted + ?2, last_flaky_job = ?3 WHERE id = ?1")
        .map_err(backend)?;
    for r in runs {
        let file = r.file.clone().unwrap_or_default();
        let (kind, passed, failed) = classify(&r.result);
        counts[kind] += 1;
        let id: i64 = test_id
            .query_row(params![job.project, r.classname, r.name, file, r.source, job_name], |x| x.get(0))
            .map_err(backend)?;
        // Flaky: a retry made it pass, or it both passed and failed on this commit.
        let mut wasted = r.flaky.then_some(r.wasted_time);
        if let (Some(commit), true) = (job.commit.as_deref(), passed || failed) {
            let prior: Option<CommitRecord> = get_commit
                .query_row(params![id, commit], |x| Ok(CommitRecord { passed: x.get(0)?, failed: x.get(1)?, failed_time: x.get(2)? }))
                .optional()
                .map_err(backend)?;
            let (now, flaked) = prior.unwrap_or_default().fold(passed, failed, r.run_time);
            if let Some(failed_time) = flaked {
                wasted = Some(wasted.unwrap_or(0.0) + failed_time);
            }
            put_commit.execute(params![id, commit, now.passed, now.failed, now.failed_time]).map_err(backend)?;
        }
        if let Some(w) = wasted {
            flaked.execute(params![id, w, job.id.as_str()]).map_err(backend)?;
        }
        if r.result == "skipped" {
            continue;
        }
        let blob: Option<Vec<u8>> = get_hist.query_row(params![id, day, workflow, branch], |x| x.get(0)).optional().map_err(backend)?;
        let mut hist = hist_from_blob(&blob.unwrap_or_default());
        hist[bucket(r.run_time.unwrap_or(0.0))] += 1;
        put_hist.execute(params![id, day, workflow, branch, hist_to_blob(&hist)]).map_err(backend)?;
        put_rollup
            .execute(params![job.project, workflow, day, branch, id, u64::from(failed), u64::from(wasted.is_some()), p95(&hist) * 1000.0])
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
            "SELECT t.classname, t.name, t.file, t.source, t.times_flaked, t.time_wasted,
                    j.name, j.number, j.pipeline_number, j.workflow_id, j.id, j.workflow, j.created_at_ms
             FROM tests t JOIN jobs j ON j.id = t.last_flaky_job
             WHERE t.project = ?1 AND t.times_flaked > 0 ORDER BY t.times_flaked DESC, t.time_wasted DESC, t.classname, t.name",
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

/// Test metrics of one workflow: narrow rollup rows are scanned and summed by test id; exact
/// p95s come from the histograms of the listed tests (and the slowest-test candidates) only.
pub(super) fn test_metrics(c: &rusqlite::Connection, project: &str, q: &MetricsQuery) -> Result<TestMetrics, MetaError> {
    let since_day = q.since_ms / DAY_MS;
    let mut by_test: HashMap<i64, Totals> = HashMap::new();
    {
        let mut stmt = c
            .prepare_cached(
                "SELECT test, runs, failed, flaky, p95_ms FROM test_rollups
                 WHERE project = ?1 AND workflow = ?2 AND day >= ?3 AND (?4 IS NULL OR branch = ?4)",
            )
            .map_err(backend)?;
        let mut rows = stmt.query(params![project, q.workflow, since_day, q.branch]).map_err(backend)?;
        while let Some(r) = rows.next().map_err(backend)? {
            by_test.entry(r.get(0).map_err(backend)?).or_default().add(
                r.get(1).map_err(backend)?,
                r.get(2).map_err(backend)?,
                r.get(3).map_err(backend)?,
                r.get(4).map_err(backend)?,
            );
        }
    }
    let total = by_test.values().map(|t| t.runs).sum();
    let (most_failed, candidates) = pick_tests(&by_test, q.limit);

    let mut hist = c
        .prepare_cached("SELECT hist FROM test_hists WHERE test = ?1 AND day >= ?2 AND workflow = ?3 AND (?4 IS NULL OR branch = ?4)")
        .map_err(backend)?;
    let mut names = c.prepare_cached("SELECT classname, name, file, source, job_name FROM tests WHERE id = ?1").map_err(backend)?;
    let mut metric = |id: i64| -> Result<TestMetric, MetaError> {
        let mut merged = vec![0u32; HIST_BUCKETS];
        let mut rows = hist.query(params![id, since_day, q.workflow, q.branch]).map_err(backend)?;
        while let Some(r) = rows.next().map_err(backend)? {
            hist_merge(&mut merged, &hist_from_blob(&r.get::<_, Vec<u8>>(0).map_err(backend)?));
        }
        let t = &by_test[&id];
        names
            .query_row([id], |r| {
                Ok(TestMetric {
                    classname: r.get(0)?,
                    name: r.get(1)?,
                    file: r.get(2)?,
                    source: r.get(3)?,
                    job_name: r.get(4)?,
                    failed_runs: t.failed,
                    total_runs: t.runs,
                    flaky: t.flaky,
                    p95_duration: p95(&merged),
                })
            })
            .map_err(backend)
    };
    let most_failed = most_failed.into_iter().map(&mut metric).collect::<Result<Vec<_>, _>>()?;
    let slowest = slowest(candidates.into_iter().map(&mut metric).collect::<Result<Vec<_>, _>>()?, q.limit);

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
    let id: Option<i64> = c
        .query_row("SELECT id FROM tests WHERE project = ?1 AND classname = ?2 AND name = ?3 AND file = ?4", params![project, test.0, test.1, test.2], |r| r.get(0))
        .optional()
        .map_err(backend)?;
    let Some(id) = id else { return Ok(Vec::new()) };
    let since_day = since_ms / DAY_MS;
    let mut days: Vec<(TestDay, Vec<u32>)> = Vec::new();
    let mut stmt = c
        .prepare_cached("SELECT day, SUM(runs), SUM(failed), SUM(flaky) FROM test_rollups WHERE test = ?1 AND day >= ?2 GROUP BY day ORDER BY day")
        .map_err(backend)?;
    let mut rows = stmt.query(params![id, since_day]).map_err(backend)?;
    while let Some(r) = rows.next().map_err(backend)? {
        let d = TestDay {
            day: r.get(0).map_err(backend)?,
            runs: r.get(1).map_err(backend)?,
            failed_runs: r.get(2).map_err(backend)?,
            flaky_runs: r.get(3).map_err(backend)?,
            p95_duration: 0.0,
        };
        days.push((d, vec![0; HIST_BUCKETS]));
    }
    let mut stmt = c.prepare_cached("SELECT day, hist FROM test_hists WHERE test = ?1 AND day >= ?2").map_err(backend)?;
    let mut rows = stmt.query(params![id, since_day]).map_err(backend)?;
    while let Some(r) = rows.next().map_err(backend)? {
        let day: u64 = r.get(0).map_err(backend)?;
        if let Some((_, h)) = days.iter_mut().find(|(d, _)| d.day == day) {
            hist_merge(h, &hist_from_blob(&r.get::<_, Vec<u8>>(1).map_err(backend)?));
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
