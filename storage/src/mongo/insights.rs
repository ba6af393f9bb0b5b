//! MongoDB documents for test runs and the insights rollups, folded in one transaction per
//! uploaded result file (a fixed number of round trips, however many tests it holds):
//!
//! * `test_runs`: one per test run of a job, numbered per job (`job`, `seq`).
//! * `tests`: each test of a project once (`_id` a digest of project, classname, name, file),
//!   with its flaky record.
//! * `test_rollups`: per test, day, workflow and branch — runs, failed, flaky events, the
//!   duration histogram and its p95.
//! * `test_commits`: per test and commit — whether it passed and failed there.
//! * `workflow_test_runs`: per workflow run — test counts by result.

use std::collections::HashMap;

use futures_util::FutureExt;
use mongodb::bson::{doc, Document};
use mongodb::{ClientSession, Database};
use sha2::{Digest, Sha256};
use tailrace_protocol::JobId;

use super::{abort, all, all_in, backend, binary, get_binary, get_f64, get_str, get_u64, int, opt_str, opt_u64, MongoMeta};
use crate::insights::{
    bucket, classify, hist_from_blob, hist_merge, hist_to_blob, p95, pick_tests, slowest, CommitRecord, FlakyTest, MetricsQuery, TestDay,
    TestMetric, TestMetrics, Totals, WorkflowTestRun, DAY_MS, HIST_BUCKETS,
};
use crate::meta::{Job, MetaError};
use crate::test_runs::TestRun;

/// Secondary indexes of these collections.
pub(super) static INDEXES: std::sync::LazyLock<Vec<(&'static str, Document)>> = std::sync::LazyLock::new(|| {
    vec![
        ("tests", doc! { "project": 1, "times_flaked": 1 }),
        ("test_rollups", doc! { "project": 1, "workflow": 1, "day": 1 }),
        ("test_rollups", doc! { "test": 1, "day": 1 }),
        ("workflow_test_runs", doc! { "project": 1, "workflow": 1, "created_at_ms": 1 }),
    ]
});

/// Update statements per `update` command (MongoDB accepts up to 100,000).
const BATCH: usize = 1000;

/// A short, stable `_id` for a tuple of strings: 128 bits of SHA-256 over the length-prefixed parts.
fn key_of(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    h.finalize()[..16].iter().map(|b| format!("{b:02x}")).collect()
}

fn test_key(project: &str, r: &TestRun) -> String {
    key_of(&[project, &r.classname, &r.name, r.file.as_deref().unwrap_or("")])
}

/// What one upload changes in a test's record.
struct TestChange<'r> {
    run: &'r TestRun,
    times_flaked: i64,
    time_wasted: f64,
}

/// A rollup row's state: read inside the transaction, folded, written back whole.
struct Rollup {
    test: String,
    runs: u64,
    failed: u64,
    flaky: u64,
    hist: Vec<u32>,
}

/// Runs `update` commands with one statement per document.
async fn write(db: &Database, s: &mut ClientSession, coll: &str, updates: Vec<Document>) -> mongodb::error::Result<()> {
    for chunk in updates.chunks(BATCH) {
        let r = db.run_command(doc! { "update": coll, "updates": chunk.to_vec(), "ordered": true }).session(&mut *s).await?;
        if let Ok(errors) = r.get_array("writeErrors")
            && !errors.is_empty()
        {
            return Err(abort(MetaError::Backend(format!("writing {coll}: {errors:?}"))));
        }
    }
    Ok(())
}

fn upsert(id: &str, update: Document) -> Document {
    doc! { "q": { "_id": id }, "u": update, "upsert": true }
}

fn run_doc(job: &JobId, seq: u64, r: &TestRun) -> Document {
    let mut d = doc! {
        "job": job.as_str(),
        "seq": int(seq),
        "classname": &r.classname,
        "name": &r.name,
        "source": &r.source,
        "result": &r.result,
        "attempts": i64::from(r.attempts),
        "flaky": r.flaky,
        "wasted_time": r.wasted_time,
    };
    super::set_opt(&mut d, "file", r.file.clone());
    super::set_opt(&mut d, "run_time", r.run_time);
    super::set_opt(&mut d, "message", r.message.clone());
    d
}

fn run_from_doc(d: &Document) -> TestRun {
    TestRun {
        classname: get_str(d, "classname"),
        name: get_str(d, "name"),
        file: opt_str(d, "file"),
        source: get_str(d, "source"),
        result: get_str(d, "result"),
        run_time: d.get_f64("run_time").ok(),
        message: opt_str(d, "message"),
        attempts: get_u64(d, "attempts") as u32,
        flaky: d.get_bool("flaky").unwrap_or(false),
        wasted_time: get_f64(d, "wasted_time"),
    }
}

/// Documents of `coll` with the given `_id`s, by `_id`, read in the transaction.
async fn by_id(db: &Database, s: &mut ClientSession, coll: &str, ids: Vec<String>) -> mongodb::error::Result<HashMap<String, Document>> {
    let cursor = db.collection::<Document>(coll).find(doc! { "_id": { "$in": ids } }).session(&mut *s).await;
    let docs = all_in(s, cursor).await?;
    Ok(docs.into_iter().map(|d| (get_str(&d, "_id"), d)).collect())
}

/// Appends `runs` to the job's test runs and folds them into every rollup, in one transaction.
pub(super) async fn record(m: &MongoMeta, job: &Job, runs: &[TestRun]) -> Result<(), MetaError> {
    m.transaction((m.db.clone(), job, runs), |s, (db, job, runs)| {
        async move {
            let (job, runs): (&Job, &[TestRun]) = (job, runs);
            let n = runs.len() as u64;
            let numbered = db
                .collection::<Document>("jobs")
                .find_one_and_update(doc! { "_id": job.id.as_str() }, doc! { "$inc": { "test_runs": int(n) } })
                .return_document(mongodb::options::ReturnDocument::After)
                .session(&mut *s)
                .await?
                .ok_or_else(|| abort(MetaError::JobNotFound(job.id.to_string())))?;
            let first = get_u64(&numbered, "test_runs").saturating_sub(n);
            if runs.is_empty() {
                return Ok(());
            }
            let docs: Vec<Document> = runs.iter().enumerate().map(|(i, r)| run_doc(&job.id, first + i as u64, r)).collect();
            db.collection::<Document>("test_runs").insert_many(docs).session(&mut *s).await?;
            fold(db, s, job, runs).await
        }
        .boxed()
    })
    .await
}

async fn fold(db: &Database, s: &mut ClientSession, job: &Job, runs: &[TestRun]) -> mongodb::error::Result<()> {
    let workflow = job.workflow.clone().unwrap_or_default();
    let branch = job.branch.clone().unwrap_or_default();
    let day = job.created_at_ms / DAY_MS;
    let keys: Vec<String> = runs.iter().map(|r| test_key(&job.project, r)).collect();
    let commit_key = |t: &str| job.commit.as_deref().map(|c| key_of(&[t, c]));
    let rollup_key = |t: &str| key_of(&[t, &day.to_string(), &workflow, &branch]);

    let mut commits: HashMap<String, CommitRecord> = by_id(db, s, "test_commits", keys.iter().filter_map(|t| commit_key(t)).collect())
        .await?
        .into_iter()
        .map(|(id, d)| {
            let rec = CommitRecord { passed: d.get_bool("passed").unwrap_or(false), failed: d.get_bool("failed").unwrap_or(false), failed_time: get_f64(&d, "failed_time") };
            (id, rec)
        })
        .collect();
    let mut rollups: HashMap<String, Rollup> = by_id(db, s, "test_rollups", keys.iter().map(|t| rollup_key(t)).collect())
        .await?
        .into_iter()
        .map(|(id, d)| {
            let r = Rollup {
                test: get_str(&d, "test"),
                runs: get_u64(&d, "runs"),
                failed: get_u64(&d, "failed"),
                flaky: get_u64(&d, "flaky"),
                hist: hist_from_blob(&get_binary(&d, "hist")),
            };
            (id, r)
        })
        .collect();

    let mut tests: HashMap<&str, TestChange<'_>> = HashMap::new();
    let mut counts = [0i64; 4];
    for (r, key) in runs.iter().zip(&keys) {
        let (kind, passed, failed) = classify(&r.result);
        counts[kind] += 1;
        let change = tests.entry(key).or_insert(TestChange { run: r, times_flaked: 0, time_wasted: 0.0 });
        change.run = r;
        // Flaky: a retry made it pass, or it both passed and failed on this commit.
        let mut wasted = r.flaky.then_some(r.wasted_time);
        if let (Some(ck), true) = (commit_key(key), passed || failed) {
            let rec = commits.entry(ck).or_default();
            let (next, flaked) = rec.fold(passed, failed, r.run_time);
            *rec = next;
            if let Some(t) = flaked {
                wasted = Some(wasted.unwrap_or(0.0) + t);
            }
        }
        if let Some(w) = wasted {
            change.times_flaked += 1;
            change.time_wasted += w;
        }
        if r.result == "skipped" {
            continue;
        }
        let roll = rollups
            .entry(rollup_key(key))
            .or_insert_with(|| Rollup { test: key.clone(), runs: 0, failed: 0, flaky: 0, hist: vec![0; HIST_BUCKETS] });
        roll.runs += 1;
        roll.failed += u64::from(failed);
        roll.flaky += u64::from(wasted.is_some());
        roll.hist[bucket(r.run_time.unwrap_or(0.0))] += 1;
    }

    let job_name = job.name.clone().unwrap_or_default();
    let test_updates = tests
        .iter()
        .map(|(key, c)| {
            let mut set = doc! {
                "project": &job.project,
                "classname": &c.run.classname,
                "name": &c.run.name,
                "file": c.run.file.as_deref().unwrap_or(""),
                "source": &c.run.source,
                "job_name": &job_name,
            };
            if c.times_flaked > 0 {
                set.insert("last_flaky_job", job.id.as_str());
            }
            upsert(key, doc! { "$set": set, "$inc": { "times_flaked": c.times_flaked, "time_wasted": c.time_wasted } })
        })
        .collect();
    write(db, s, "tests", test_updates).await?;
    let commit_updates = commits
        .iter()
        .map(|(id, c)| upsert(id, doc! { "$set": { "passed": c.passed, "failed": c.failed, "failed_time": c.failed_time } }))
        .collect();
    write(db, s, "test_commits", commit_updates).await?;
    let rollup_updates = rollups
        .iter()
        .map(|(id, r)| {
            upsert(id, doc! { "$set": {
                "project": &job.project,
                "workflow": &workflow,
                "day": int(day),
                "branch": &branch,
                "test": &r.test,
                "runs": int(r.runs),
                "failed": int(r.failed),
                "flaky": int(r.flaky),
                "p95_ms": p95(&r.hist) * 1000.0,
                "hist": binary(hist_to_blob(&r.hist)),
            } })
        })
        .collect();
    write(db, s, "test_rollups", rollup_updates).await?;

    let run_id = job.workflow_id.clone().unwrap_or_else(|| job.id.to_string());
    let mut on_insert = doc! { "project": &job.project, "workflow": &workflow, "run_id": &run_id, "branch": &branch, "created_at_ms": int(job.created_at_ms) };
    super::set_opt(&mut on_insert, "pipeline_number", job.pipeline_number.map(int));
    let update = doc! {
        "$setOnInsert": on_insert,
        "$inc": { "success": counts[0], "failure": counts[1], "error": counts[2], "skipped": counts[3] },
    };
    write(db, s, "workflow_test_runs", vec![upsert(&key_of(&[&job.project, &workflow, &run_id]), update)]).await
}

/// A project's flaky tests, most flaked first, with the job each last flaked in.
pub(super) async fn flaky_tests(m: &MongoMeta, project: &str) -> Result<Vec<FlakyTest>, MetaError> {
    let coll = m.coll("tests");
    let find = coll
        .find(doc! { "project": project, "times_flaked": { "$gt": 0 } })
        .sort(doc! { "times_flaked": -1, "time_wasted": -1, "classname": 1, "name": 1 });
    let tests = all(find).await?;
    let job_ids: Vec<String> = tests.iter().map(|t| get_str(t, "last_flaky_job")).collect();
    let jobs: HashMap<String, Document> =
        all(m.coll("jobs").find(doc! { "_id": { "$in": job_ids } })).await?.into_iter().map(|d| (get_str(&d, "_id"), d)).collect();
    Ok(tests
        .iter()
        .filter_map(|t| {
            let j = jobs.get(&get_str(t, "last_flaky_job"))?;
            Some(FlakyTest {
                classname: get_str(t, "classname"),
                name: get_str(t, "name"),
                file: get_str(t, "file"),
                source: get_str(t, "source"),
                times_flaked: get_u64(t, "times_flaked"),
                time_wasted: get_f64(t, "time_wasted"),
                job_name: opt_str(j, "name"),
                job_number: get_u64(j, "number"),
                pipeline_number: opt_u64(j, "pipeline_number"),
                workflow_id: opt_str(j, "workflow_id").unwrap_or_else(|| get_str(j, "_id")),
                workflow_name: opt_str(j, "workflow"),
                workflow_created_at_ms: get_u64(j, "created_at_ms"),
            })
        })
        .collect())
}

/// Test metrics of one workflow: narrow rollup fields are scanned and summed by test; exact
/// p95s come from the histograms of the listed tests (and slowest-test candidates) only.
pub(super) async fn test_metrics(m: &MongoMeta, project: &str, q: &MetricsQuery) -> Result<TestMetrics, MetaError> {
    let mut filter = doc! { "project": project, "workflow": &q.workflow, "day": { "$gte": int(q.since_ms / DAY_MS) } };
    if let Some(b) = &q.branch {
        filter.insert("branch", b);
    }
    let narrow = doc! { "test": 1, "runs": 1, "failed": 1, "flaky": 1, "p95_ms": 1 };
    let mut by_test: HashMap<String, Totals> = HashMap::new();
    for d in all(m.coll("test_rollups").find(filter.clone()).projection(narrow)).await? {
        by_test.entry(get_str(&d, "test")).or_default().add(get_u64(&d, "runs"), get_u64(&d, "failed"), get_u64(&d, "flaky"), get_f64(&d, "p95_ms"));
    }
    let total_test_runs = by_test.values().map(|t| t.runs).sum();
    let (most_failed, candidates) = pick_tests(&by_test, q.limit);

    let wanted: Vec<String> = most_failed.iter().chain(&candidates).cloned().collect();
    let mut hist_filter = filter.clone();
    hist_filter.insert("test", doc! { "$in": &wanted });
    let mut hists: HashMap<String, Vec<u32>> = HashMap::new();
    for d in all(m.coll("test_rollups").find(hist_filter).projection(doc! { "test": 1, "hist": 1 })).await? {
        let h = hists.entry(get_str(&d, "test")).or_insert_with(|| vec![0; HIST_BUCKETS]);
        hist_merge(h, &hist_from_blob(&get_binary(&d, "hist")));
    }
    let names: HashMap<String, Document> =
        all(m.coll("tests").find(doc! { "_id": { "$in": &wanted } })).await?.into_iter().map(|d| (get_str(&d, "_id"), d)).collect();
    let metric = |id: &String| -> Option<TestMetric> {
        let (t, n) = (by_test.get(id)?, names.get(id)?);
        Some(TestMetric {
            classname: get_str(n, "classname"),
            name: get_str(n, "name"),
            file: get_str(n, "file"),
            source: get_str(n, "source"),
            job_name: get_str(n, "job_name"),
            failed_runs: t.failed,
            total_runs: t.runs,
            flaky: t.flaky,
            p95_duration: hists.get(id).map_or(0.0, |h| p95(h)),
        })
    };
    let most_failed = most_failed.iter().filter_map(metric).collect();
    let slowest = slowest(candidates.iter().filter_map(metric).collect(), q.limit);

    let mut runs_filter = doc! { "project": project, "workflow": &q.workflow, "created_at_ms": { "$gte": int(q.since_ms) } };
    if let Some(b) = &q.branch {
        runs_filter.insert("branch", b);
    }
    let coll = m.coll("workflow_test_runs");
    let workflow_runs = coll.count_documents(runs_filter.clone()).await.map_err(backend)?;
    let recent = all(coll.find(runs_filter).sort(doc! { "created_at_ms": -1 }).limit(int(q.limit as u64))).await?;
    let runs = recent
        .iter()
        .map(|d| WorkflowTestRun {
            workflow_id: get_str(d, "run_id"),
            pipeline_number: opt_u64(d, "pipeline_number"),
            created_at_ms: get_u64(d, "created_at_ms"),
            success: get_u64(d, "success"),
            failure: get_u64(d, "failure"),
            error: get_u64(d, "error"),
            skipped: get_u64(d, "skipped"),
        })
        .collect();
    Ok(TestMetrics { total_test_runs, workflow_runs, most_failed, slowest, runs })
}

/// One test's days from `since_ms` on, oldest first, merged over workflows and branches.
pub(super) async fn test_history(m: &MongoMeta, project: &str, test: (&str, &str, &str), since_ms: u64) -> Result<Vec<TestDay>, MetaError> {
    let id = key_of(&[project, test.0, test.1, test.2]);
    let rows = all(m.coll("test_rollups").find(doc! { "test": id, "day": { "$gte": int(since_ms / DAY_MS) } })).await?;
    let mut days: std::collections::BTreeMap<u64, (TestDay, Vec<u32>)> = std::collections::BTreeMap::new();
    for d in &rows {
        let day = get_u64(d, "day");
        let (t, h) = days.entry(day).or_insert_with(|| {
            (TestDay { day, runs: 0, failed_runs: 0, flaky_runs: 0, p95_duration: 0.0 }, vec![0; HIST_BUCKETS])
        });
        t.runs += get_u64(d, "runs");
        t.failed_runs += get_u64(d, "failed");
        t.flaky_runs += get_u64(d, "flaky");
        hist_merge(h, &hist_from_blob(&get_binary(d, "hist")));
    }
    Ok(days
        .into_values()
        .map(|(mut d, h)| {
            d.p95_duration = p95(&h);
            d
        })
        .collect())
}

/// The job's test runs numbered `from` on, in upload order.
pub(super) async fn test_runs(m: &MongoMeta, job: &JobId, from: u64, limit: usize) -> Result<Vec<(u64, TestRun)>, MetaError> {
    let filter = doc! { "job": job.as_str(), "seq": { "$gte": int(from) } };
    let docs = all(m.coll("test_runs").find(filter).sort(doc! { "seq": 1 }).limit(int(limit as u64))).await?;
    Ok(docs.iter().map(|d| (get_u64(d, "seq"), run_from_doc(d))).collect())
}
