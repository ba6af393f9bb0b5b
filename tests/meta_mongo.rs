//! The metadata store on MongoDB (SecantusDB, a real server speaking its wire protocol): the same
//! conformance suite as SQLite; two nodes racing on one job never double-count; and
//! `tailrace serve` on it end to end — steps, test results, a restart, a MongoDB outage
//! mid-step, and `--check-config`.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
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

fn check_config(server: &Server, env: &[(String, String)]) -> String {
    let out = Command::new(BIN)
        .args(["serve", "--check-config", "--http-addr", "127.0.0.1:0", "--quic-addr", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(server.data_dir())
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines().find(|l| l.contains(" metadata store: ")).unwrap_or_else(|| panic!("no metadata store line in {text}")).to_string()
}

#[test]
fn serve_on_mongodb_keeps_steps_and_results_across_a_restart_and_an_outage() {
    let mut mongo = MongoServer::start();
    let env = vec![("TAILRACE_META_URL".to_string(), mongo.uri("tailrace"))];
    let mut server = Server::start_with(env.clone());
    assert!(server.log().contains("MongoDB at mongodb://127.0.0.1"), "{}", server.log());
    assert!(!server.data_dir().join("meta.db").exists(), "no SQLite database beside MongoDB");
    let (job, token) = server.create_job();
    let data = awkward_bytes(7, 3 << 20);
    stream_step(&server, &job, &token, "first", &data);
    assert_eq!(server.output(&job, "first", None).body, data);
    let junit = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/junit/quick-junit/crates__quick-junit-tests__tests__fixtures__basic_report.xml");
    let out = Command::new(BIN)
        .args(["store-test-results", "--server", &server.url(), "--job", &job])
        .arg(&junit)
        .env("TAILRACE_TOKEN", &token)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let tests = |server: &Server| {
        let r = http_get(&server.url(), &format!("/api/v1/jobs/{job}/tests"), Some(&server.admin_token()), None).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        v["items"].as_array().map_or(0, Vec::len)
    };
    assert_eq!(tests(&server), 8);
    assert!(check_config(&server, &env).contains("ok") && check_config(&server, &env).contains("transactions work"));

    // MongoDB goes away while a step runs: its bytes keep landing in the live tier, its end
    // cannot be recorded and is refused (the agent retries), /readyz says why.
    let gated = GatedStep::new(&[b"before the outage\n", b"after the outage\n"]);
    let agent = Watched::spawn(gated.agent(&server, &token, &job, "second"));
    wait_until("first part durable", 30, || server.step_len(&job, "second") == 18);
    mongo.stop();
    let ready = http_get(&server.url(), "/readyz", None, None).unwrap();
    assert_eq!(ready.status, 503);
    assert!(String::from_utf8_lossy(&ready.body).contains("metadata store unavailable"));
    assert!(check_config(&server, &env).starts_with("FAIL"), "a stopped MongoDB fails the check");
    gated.open(1);
    agent.wait_for("could not record step", 60);

    // Back: the agent's retry records the end; nothing was lost or doubled.
    mongo.start_again();
    let out = agent.finish(120);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(server.output(&job, "second", None).body, b"before the outage\nafter the outage\n");
    assert_eq!(server.step(&job, "second").unwrap()["status"], "success");
    wait_until("/readyz ok again", 30, || http_get(&server.url(), "/readyz", None, None).is_ok_and(|r| r.status == 200));

    // A restarted server finds everything in MongoDB.
    server.restart();
    assert_eq!(server.output(&job, "first", None).body, data);
    assert_eq!(server.step(&job, "second").unwrap()["status"], "success");
    assert_eq!(tests(&server), 8);
    let (job2, _) = server.create_job();
    let numbers = http_get(&server.url(), &format!("/api/v1/jobs/{job2}"), Some(&server.admin_token()), None).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&numbers.body).unwrap();
    assert_eq!(v["number"], 2, "job numbers continue from MongoDB");
}
