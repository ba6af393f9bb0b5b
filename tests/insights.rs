//! Insights end to end: a scripted history — several commits and branches, a workflow rerun, a
//! retried test, a test that flips on one commit, one that always fails, a slow one — stored
//! through `tailrace store-test-results` against `tailrace serve`, answers CircleCI's flaky-tests
//! and test-metrics endpoints correctly, and Tailrace's per-test history by day.

mod common;

use std::process::Command;

use common::*;
use serde_json::Value;

/// Creates a job of `gh/acme/app`'s `build` workflow; returns (job id, job token).
fn job(server: &Server, branch: &str, commit: &str, pipeline: u64, workflow_id: &str) -> (String, String) {
    let out = Command::new(BIN)
        .args(["job", "create", "--server", &server.url(), "--project", "gh/acme/app", "--workflow", "build", "--name", "test"])
        .args(["--branch", branch, "--commit", commit, "--pipeline-number", &pipeline.to_string(), "--workflow-id", workflow_id, "--json"])
        .env("TAILRACE_TOKEN", server.admin_token())
        .output()
        .expect("job create");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    (v["job_id"].as_str().expect("id").to_string(), v["token"].as_str().expect("token").to_string())
}

/// One JSON record per test run.
fn record(classname: &str, name: &str, result: &str, secs: f64) -> String {
    format!("{{\"classname\": \"{classname}\", \"name\": \"{name}\", \"file\": \"{classname}.rs\", \"result\": \"{result}\", \"run_time\": {secs}}}\n")
}

/// Uploads the job's results: the steady tests, plus `extra` records.
fn upload(server: &Server, job: &str, token: &str, ui_result: &str, extra: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut body = String::new();
    body.push_str(&record("math", "add", "success", 0.01));
    body.push_str(&record("db", "migrate", "failure", 0.5));
    body.push_str(&record("e2e", "checkout", "success", 30.0));
    body.push_str(&record("ui", "render", ui_result, 0.2));
    body.push_str(extra);
    std::fs::write(dir.path().join("results.json"), body).expect("write");
    let out = Command::new(BIN)
        .args(["store-test-results", "--server", &server.url(), "--job", job])
        .arg(dir.path())
        .env("TAILRACE_TOKEN", token)
        .output()
        .expect("store-test-results");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn get(server: &Server, path: &str, token: &str) -> (u16, Value) {
    let r = http_get(&server.url(), path, Some(token), None).expect("GET");
    (r.status, serde_json::from_slice(&r.body).unwrap_or(Value::Null))
}

#[test]
fn a_scripted_history_answers_flaky_tests_and_test_metrics() {
    let server = Server::start();
    let steady_retry = record("net", "retry", "success", 0.1);
    // Pipeline 1 on main, commit c1: ui/render passes; the workflow is rerun on the same commit
    // and ui/render fails there (flaky by commit).
    let (j1, t1) = job(&server, "main", "c1", 1, "w1");
    upload(&server, &j1, &t1, "success", &steady_retry);
    let (j2, t2) = job(&server, "main", "c1", 1, "w1-rerun");
    upload(&server, &j2, &t2, "failure", &steady_retry);
    // Pipeline 2 on main, commit c2: net/retry fails once and passes on a retry (flaky by retry).
    let (j3, t3) = job(&server, "main", "c2", 2, "w2");
    let retried = record("net", "retry", "failure", 0.3) + &record("net", "retry", "success", 0.1);
    upload(&server, &j3, &t3, "success", &retried);
    // Pipeline 3 on a feature branch.
    let (j4, t4) = job(&server, "dev", "c3", 3, "w3");
    upload(&server, &j4, &t4, "success", &steady_retry);

    let read = Command::new(BIN)
        .args(["token", "create", "--server", &server.url(), "--project", "gh/acme/app"])
        .env("TAILRACE_TOKEN", server.admin_token())
        .output()
        .expect("token create");
    let reader = String::from_utf8(read.stdout).expect("utf-8").trim().to_string();

    // Flaky tests: exactly the two, never the one that always fails.
    let (status, v) = get(&server, "/api/v2/insights/gh/acme/app/flaky-tests", &reader);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["total-flaky-tests"], 2, "{v}");
    let flaky = v["flaky-tests"].as_array().expect("list");
    let by_name = |n: &str| flaky.iter().find(|f| f["test-name"] == n).unwrap_or_else(|| panic!("{n} not flaky: {v}"));
    let ui = by_name("render");
    assert_eq!((ui["classname"].as_str(), ui["times-flaked"].as_u64(), ui["time-wasted"].as_f64()), (Some("ui"), Some(1), Some(0.2)));
    assert_eq!((ui["workflow-id"].as_str(), ui["pipeline-number"].as_u64(), ui["workflow-name"].as_str()), (Some("w1-rerun"), Some(1), Some("build")));
    assert_eq!((ui["job-name"].as_str(), ui["file"].as_str(), ui["source"].as_str()), (Some("test"), Some("ui.rs"), Some("results.json")));
    assert!(ui["workflow-created-at"].as_str().expect("time").ends_with('Z'));
    let retry = by_name("retry");
    assert_eq!((retry["times-flaked"].as_u64(), retry["time-wasted"].as_f64(), retry["workflow-id"].as_str()), (Some(1), Some(0.3), Some("w2")));
    let keys: std::collections::BTreeSet<&str> = ui.as_object().expect("object").keys().map(String::as_str).collect();
    let circle = ["classname", "file", "job-name", "job-number", "pipeline-number", "source", "test-name", "time-wasted", "times-flaked", "workflow-created-at", "workflow-id", "workflow-name"];
    assert_eq!(keys, circle.into());

    // Test metrics over every branch.
    let (status, m) = get(&server, "/api/v2/insights/gh/acme/app/workflows/build/test-metrics?all-branches=true", &reader);
    assert_eq!(status, 200, "{m}");
    assert_eq!((m["total_test_runs"].as_u64(), m["average_test_count"].as_u64()), (Some(20), Some(5)), "{m}");
    let most_failed = m["most_failed_tests"].as_array().expect("list");
    let first = &most_failed[0];
    assert_eq!((first["test_name"].as_str(), first["failed_runs"].as_u64(), first["total_runs"].as_u64(), first["flaky"].as_bool()), (Some("migrate"), Some(4), Some(4), Some(false)));
    let ui = most_failed.iter().find(|t| t["test_name"] == "render").expect("render failed once");
    assert_eq!((ui["failed_runs"].as_u64(), ui["flaky"].as_bool()), (Some(1), Some(true)));
    assert!(most_failed.iter().all(|t| t["test_name"] != "add" && t["test_name"] != "retry"), "{m}");
    let slowest = &m["slowest_tests"][0];
    assert_eq!(slowest["test_name"], "checkout");
    let p95 = slowest["p95_duration"].as_f64().expect("p95");
    assert!((30.0..=30.0 * 1.19).contains(&p95), "p95 {p95}");
    let runs = m["test_runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 4);
    let w2 = runs.iter().find(|r| r["workflow_id"] == "w2").expect("w2");
    assert_eq!(w2["pipeline_number"], 2);
    assert_eq!(w2["test_counts"], serde_json::json!({"error": 0, "failure": 1, "skipped": 0, "success": 4, "total": 5}));
    assert_eq!(w2["success_rate"].as_f64(), Some(0.8));

    // One branch only.
    let (_, dev) = get(&server, "/api/v2/insights/gh/acme/app/workflows/build/test-metrics?branch=dev", &reader);
    assert_eq!((dev["total_test_runs"].as_u64(), dev["test_runs"].as_array().map(Vec::len)), (Some(5), Some(1)), "{dev}");
    let (_, none) = get(&server, "/api/v2/insights/gh/acme/app/workflows/deploy/test-metrics", &reader);
    assert_eq!(none["total_test_runs"], 0);

    // Per-test history by day (all four jobs ran today).
    let (status, h) = get(&server, "/api/v1/projects/gh/acme/app/tests/history?classname=db&name=migrate&file=db.rs&days=7", &reader);
    assert_eq!(status, 200, "{h}");
    assert_eq!((h["total_runs"].as_u64(), h["failed_runs"].as_u64(), h["flaky_runs"].as_u64()), (Some(4), Some(4), Some(0)), "{h}");
    assert_eq!(h["days"].as_array().map(Vec::len), Some(1));
    assert_eq!(h["days"][0]["success_rate"].as_f64(), Some(0.0));
    let (_, h) = get(&server, "/api/v1/projects/gh/acme/app/tests/history?classname=ui&name=render&file=ui.rs", &reader);
    assert_eq!((h["total_runs"].as_u64(), h["failed_runs"].as_u64(), h["flaky_runs"].as_u64()), (Some(4), Some(1), Some(1)), "{h}");
    assert_eq!(h["days"][0]["success_rate"].as_f64(), Some(0.75));

    // Insights need a project read token: a job token is not enough.
    let (status, _) = get(&server, "/api/v2/insights/gh/acme/app/flaky-tests", &t1);
    assert_eq!(status, 404);
}
