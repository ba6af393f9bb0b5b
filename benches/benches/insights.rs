//! Insights queries over a generated test history, answered from the rollups: flaky tests and
//! test metrics (all branches, one branch). The history is built once per run:
//! `TAILRACE_BENCH_RUNS` test runs (default 1,000,000) of 2,000 tests per job, spread over 90
//! days and three branches, pairs of jobs sharing a commit, ~2% failures and some retries.
//!
//! `TAILRACE_BENCH_RUNS=10000000 cargo bench -p tailrace-benches --bench insights`

use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use tailrace_storage::insights::MetricsQuery;
use tailrace_storage::meta::now_ms;
use tailrace_storage::{MetaStore, NewJob, SqliteMeta, TestRun};

const TESTS_PER_JOB: u64 = 2_000;
const DAY_MS: u64 = 86_400_000;

fn build(rt: &tokio::runtime::Runtime, runs: u64) -> (SqliteMeta, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("meta.db");
    let meta = SqliteMeta::open(&path).expect("open");
    let started = Instant::now();
    let jobs = runs / TESTS_PER_JOB;
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    rt.block_on(async {
        for j in 0..jobs {
            let branch = ["main", "dev", "feature"][(j % 3) as usize];
            let mut job = meta
                .create_job(NewJob {
                    project: "gh/bench/app".into(),
                    branch: Some(branch.into()),
                    commit: Some(format!("c{}", j / 2)),
                    workflow: Some("build".into()),
                    name: Some("test".into()),
                    pipeline_number: Some(j / 2),
                    workflow_id: Some(format!("w{j}")),
                    secrets: Vec::new(),
                })
                .await
                .expect("job");
            // Spread over the last 90 days (the rollups' day comes from the job's time).
            job.created_at_ms = now_ms() - (j % 90) * DAY_MS;
            let batch: Vec<TestRun> = (0..TESTS_PER_JOB)
                .map(|t| {
                    let r = next();
                    let failed = r % 50 == 0;
                    let retried = !failed && r % 499 == 1;
                    TestRun {
                        classname: format!("pkg{}.Suite{}", t / 100, t % 100 / 10),
                        name: format!("test_{t}"),
                        file: Some(format!("src/pkg{}/suite.rs", t / 100)),
                        source: "junit.xml".into(),
                        result: if failed { "failure" } else { "success" }.into(),
                        run_time: Some((r >> 20) as f64 % 5000.0 / 1000.0),
                        message: failed.then(|| "assertion failed".into()),
                        attempts: if retried { 2 } else { 1 },
                        flaky: retried,
                        wasted_time: if retried { 0.1 } else { 0.0 },
                    }
                })
                .collect();
            meta.record_test_runs(&job, &batch).await.expect("record");
        }
    });
    let secs = started.elapsed().as_secs_f64();
    let bytes: u64 = std::fs::read_dir(dir.path()).expect("dir").flatten().map(|e| e.metadata().map_or(0, |m| m.len())).sum();
    eprintln!(
        "history: {} runs in {jobs} jobs built in {secs:.1} s ({:.0} runs/s); database {:.1} MB ({:.1} bytes per run, raw runs and rollups)",
        jobs * TESTS_PER_JOB,
        (jobs * TESTS_PER_JOB) as f64 / secs,
        bytes as f64 / 1e6,
        bytes as f64 / (jobs * TESTS_PER_JOB) as f64
    );
    (meta, dir)
}

fn insights(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let runs = std::env::var("TAILRACE_BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000u64);
    let (meta, _dir) = build(&rt, runs);
    let all = MetricsQuery { workflow: "build".into(), branch: None, since_ms: now_ms() - 90 * DAY_MS, limit: 10 };
    let main = MetricsQuery { branch: Some("main".into()), ..all.clone() };
    let mut g = c.benchmark_group("insights");
    g.sample_size(10);
    g.bench_function("flaky_tests", |b| b.to_async(&rt).iter(|| async { meta.flaky_tests("gh/bench/app").await.expect("flaky").len() }));
    g.bench_function("test_metrics_all_branches", |b| b.to_async(&rt).iter(|| async { meta.test_metrics("gh/bench/app", &all).await.expect("metrics").total_test_runs }));
    g.bench_function("test_metrics_one_branch", |b| b.to_async(&rt).iter(|| async { meta.test_metrics("gh/bench/app", &main).await.expect("metrics").total_test_runs }));
    g.finish();
}

criterion_group!(benches, insights);
criterion_main!(benches);
