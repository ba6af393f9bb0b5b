//! SQLite statements for test runs (the `test_runs` table).

use rusqlite::{params, Connection};

use super::backend;
use crate::meta::MetaError;
use crate::test_runs::TestRun;

/// Appends `runs` to the job's test runs, numbered after those already stored.
pub(super) fn record(tx: &Connection, job: &str, runs: &[TestRun]) -> Result<(), MetaError> {
    let next: u64 = tx
        .query_row("SELECT COALESCE(MAX(seq), -1) + 1 FROM test_runs WHERE job_id = ?1", [job], |r| r.get(0))
        .map_err(backend)?;
    {
        let mut insert = tx.prepare_cached("INSERT INTO test_runs VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)").map_err(backend)?;
        for (i, t) in runs.iter().enumerate() {
            insert
                .execute(params![
                    job,
                    next + i as u64,
                    t.classname,
                    t.name,
                    t.file,
                    t.source,
                    t.result,
                    t.run_time,
                    t.message,
                    t.attempts,
                    t.flaky,
                    t.wasted_time
                ])
                .map_err(backend)?;
        }
    }
    Ok(())
}

/// The job's test runs with `seq >= from`, in upload order, at most `limit`.
pub(super) fn list(c: &Connection, job: &str, from: u64, limit: usize) -> Result<Vec<(u64, TestRun)>, MetaError> {
    let mut stmt = c
        .prepare_cached(
            "SELECT seq, classname, name, file, source, result, run_time, message, attempts, flaky, wasted_time FROM test_runs
             WHERE job_id = ?1 AND seq >= ?2 ORDER BY seq LIMIT ?3",
        )
        .map_err(backend)?;
    let rows = stmt
        .query_map(params![job, from, limit as i64], |r| {
            Ok((
                r.get(0)?,
                TestRun {
                    classname: r.get(1)?,
                    name: r.get(2)?,
                    file: r.get(3)?,
                    source: r.get(4)?,
                    result: r.get(5)?,
                    run_time: r.get(6)?,
                    message: r.get(7)?,
                    attempts: r.get(8)?,
                    flaky: r.get(9)?,
                    wasted_time: r.get(10)?,
                },
            ))
        })
        .map_err(backend)?;
    rows.collect::<Result<_, _>>().map_err(backend)
}
