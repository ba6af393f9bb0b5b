//! The metadata store on MongoDB (SecantusDB, a real server speaking its wire protocol): the same
//! conformance suite as SQLite; two nodes racing on one job never double-count; and
//! `tailrace serve` on it end to end — steps, test results, a restart, a MongoDB outage
//! mid-step, and `--check-config`.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;
use std::sync::Arc;

use common::*;
use tailrace_protocol::{EndReason, StepId};
use tailrace_storage::live::{StepEnd, StepStatus};
use tailrace_storage::meta::conformance;
use tailrace_storage::{Artifact, MetaError, MetaStore, MongoMeta, NewJob, TestRun};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

#[test]
fn mongodb_passes_the_conformance_suite() {
    let server = MongoServer::start();
    runtime().block_on(async {
        let meta = MongoMeta::connect(&server.uri("conformance")).await.expect("connect");
        conformance::run(&meta).await;
    });
}

fn run(name: &str, result: &str) -> TestRun {
    TestRun {
        classname: "c".into(),
        name: name.into(),
        file: None,
        source: "junit.xml".into(),
        result: result.into(),
        run_time: Some(0.01),
        message: None,
        attempts: 1,
        flaky: false,
        wasted_time: 0.0,
    }
}

#[test]
fn two_nodes_racing_on_one_job_never_double_count() {
    let server = MongoServer::start();
    runtime().block_on(async {
        // Two clients with their own connection pools: two nodes of a cluster.
        let a = Arc::new(MongoMeta::connect(&server.uri("race")).await.unwrap());
        let b = Arc::new(MongoMeta::connect(&server.uri("race")).await.unwrap());
        let nodes = [a.clone(), b.clone()];

        // Job numbers: 2 × 20 creates at once, every number once.
        let creates = (0..40).map(|i| {
            let m = nodes[i % 2].clone();
            tokio::spawn(async move { m.create_job(NewJob { project: "gh/acme/race".into(), commit: Some("c1".into()), ..Default::default() }).await })
        });
        let mut numbers: Vec<u64> = Vec::new();
        let mut jobs = Vec::new();
        for h in creates {
            let job = h.await.unwrap().unwrap();
            numbers.push(job.number);
            jobs.push(job);
        }
        numbers.sort_unstable();
        assert_eq!(numbers, (1..=40).collect::<Vec<_>>());
        let job = jobs.swap_remove(0);

        // One step opened by both nodes at once (an agent failing over): one record.
        let step = StepId::new("build").unwrap();
        let opens = (0..10).map(|i| {
            let (m, job, step) = (nodes[i % 2].clone(), job.id.clone(), step.clone());
            tokio::spawn(async move { m.open_step(&job, &step, "Build").await })
        });
        let mut seqs = Vec::new();
        for h in opens {
            seqs.push(h.await.unwrap().unwrap().started_at_ms);
        }
        assert!(seqs.windows(2).all(|w| w[0] == w[1]), "every open returns the same record");
        assert_eq!(a.steps(&job.id).await.unwrap().len(), 1);
        let end = StepEnd { status: StepStatus::Success, reason: EndReason::Exited, exit_code: Some(0), length: 3, checksum: "x".into(), duration_ms: 1, ended_at_ms: 2 };
        let (e1, e2) = tokio::join!(a.finish_step(&job.id, &step, &end), b.finish_step(&job.id, &step, &end));
        e1.unwrap();
        e2.unwrap();
        assert_eq!(b.step(&job.id, &step).await.unwrap().unwrap().status, StepStatus::Success);

        // Test results uploaded through both nodes at once: numbered without gaps or repeats,
        // and the rollups count every run exactly once.
        let uploads = (0..16).map(|i| {
            let (m, job) = (nodes[i % 2].clone(), job.clone());
            tokio::spawn(async move {
                let verdict = if i % 2 == 0 { "success" } else { "failure" };
                m.record_test_runs(&job, &[run("shared", verdict), run(&format!("own{i}"), "success"), run("skipped", "skipped")]).await
            })
        });
        for h in uploads {
            h.await.unwrap().unwrap();
        }
        let runs = a.test_runs(&job.id, 0, 1000).await.unwrap();
        assert_eq!(runs.iter().map(|(n, _)| *n).collect::<Vec<_>>(), (0..48).collect::<Vec<_>>());
        let q = tailrace_storage::insights::MetricsQuery { workflow: String::new(), branch: None, since_ms: 0, limit: 100 };
        let m = b.test_metrics("gh/acme/race", &q).await.unwrap();
        assert_eq!(m.total_test_runs, 32, "16 uploads × 2 counted runs");
        let shared = m.most_failed.iter().find(|t| t.name == "shared").expect("shared test");
        assert_eq!((shared.total_runs, shared.failed_runs, shared.flaky), (16, 8, true));
        let counts: Vec<_> = m.runs.iter().map(|r| (r.success, r.failure, r.skipped)).collect();
        assert_eq!(counts, [(24, 8, 16)], "one workflow run (the job), every run counted once");
        let flaky = a.flaky_tests("gh/acme/race").await.unwrap();
        assert_eq!(flaky.iter().map(|f| (f.name.as_str(), f.times_flaked)).collect::<Vec<_>>(), [("shared", 1)], "flaky once per commit");

        // Artifacts racing for a job's byte budget: never past it.
        let art = |i: usize| Artifact {
            id: format!("art{i}"),
            job: job.id.clone(),
            path: format!("f{i}"),
            size: 100,
            sha256: "ab".repeat(32),
            content_type: "text/plain".into(),
            part_size: 64,
            parts_done: 0,
            hash_state: Vec::new(),
            created_ms: 1,
            completed_ms: None,
            expired_ms: None,
        };
        let inserts = (0..20).map(|i| {
            let (m, a) = (nodes[i % 2].clone(), art(i));
            tokio::spawn(async move { m.insert_artifact(&a, 1000).await })
        });
        let (mut stored, mut refused) = (0, 0);
        for h in inserts {
            match h.await.unwrap() {
                Ok(_) => stored += 1,
                Err(MetaError::Limit(_)) => refused += 1,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!((stored, refused), (10, 10));
        let (x, y) = tokio::join!(a.advance_artifact("art0", 0, &[1], None), b.advance_artifact("art0", 0, &[2], None));
        assert!(x.unwrap() ^ y.unwrap(), "exactly one node advances a part");
    });
}
