//! The token model end to end: revocation by id and by the holder, key rotation with a grace
//! period (reloaded by the running server, the admin token rewritten), and per-token ingest
//! limits (concurrent steps refused and retried; nothing lost).

#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Stdio};

use common::*;

fn get_job(server: &Server, job: &str, token: &str) -> HttpResponse {
    http_get(&server.url(), &format!("/api/v1/jobs/{job}"), Some(token), None).unwrap()
}

fn tailrace(server: &Server, token: &str, args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).args(["--server", &server.url()]).env("TAILRACE_TOKEN", token).output().unwrap()
}

#[test]
fn revoked_tokens_are_refused_everywhere_and_other_tokens_are_not() {
    let server = Server::start();
    let admin = server.admin_token();
    let created = tailrace(&server, &admin, &["job", "create", "--project", "gh/acme/app", "--json"]);
    let created: serde_json::Value = serde_json::from_slice(&created.stdout).unwrap();
    let (job, job_token) = (created["job_id"].as_str().unwrap(), created["token"].as_str().unwrap());
    let read = tailrace(&server, &admin, &["token", "create", "--project", "gh/acme/app", "--json"]);
    let read: serde_json::Value = serde_json::from_slice(&read.stdout).unwrap();
    let (read_token, read_id) = (read["token"].as_str().unwrap(), read["token_id"].as_str().unwrap());
    assert_eq!(get_job(&server, job, read_token).status, 200);

    // A reader cannot revoke by id; the admin can.
    let out = tailrace(&server, read_token, &["token", "revoke", "--id", created["token_id"].as_str().unwrap()]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("admin"));
    let out = tailrace(&server, &admin, &["token", "revoke", "--id", read_id]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r = get_job(&server, job, read_token);
    assert_eq!(r.status, 401);
    assert!(String::from_utf8_lossy(&r.body).contains("revoked"));
    assert_eq!(get_job(&server, job, job_token).status, 200, "the job token is untouched");

    // The job token's holder revokes it; then ingest refuses it too (exit 2: refused step).
    let out = tailrace(&server, job_token, &["token", "revoke"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let run = agent(&server.url(), job_token, job, "s", &["--quiet"], &["echo", "hi"]).stderr(Stdio::piped()).output().unwrap();
    assert_eq!(run.status.code(), Some(2), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(String::from_utf8_lossy(&run.stderr).contains("revoked"));

    // Revocations are kept by the metadata store: still refused after a restart.
    let mut server = server;
    server.restart();
    assert_eq!(get_job(&server, job, read_token).status, 401);
    assert_eq!(get_job(&server, job, &server.admin_token()).status, 200);
}

#[test]
fn key_rotation_keeps_old_tokens_for_the_grace_period_then_refuses_them() {
    let server = Server::start();
    let data = server.data_dir();
    let admin1 = server.admin_token();
    assert!(admin1.starts_with("tr2.1."));
    let (job, token1) = server.create_job();
    let rotate = |grace: &str| {
        let out = Command::new(BIN).args(["keys", "rotate", "--grace", grace]).arg("--data-dir").arg(&data).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let said = rotate("1h");
    assert!(said.contains("key 2 signs"), "{said}");
    // The running server reloads the file and rewrites its admin token with the new key.
    wait_until("admin token signed by key 2", 30, || server.admin_token().starts_with("tr2.2."));
    let admin2 = server.admin_token();
    assert_eq!(get_job(&server, &job, &token1).status, 200, "key 1 tokens valid during the grace period");
    assert_eq!(get_job(&server, &job, &admin1).status, 200);
    let (_, token2) = server.create_job();
    assert!(token2.starts_with("tr2.2."), "new tokens are signed by the new key");

    // Rotating with no grace retires key 2 at once (a leaked key); key 1 keeps its hour.
    rotate("0s");
    wait_until("key 2 tokens refused", 30, || get_job(&server, &job, &admin2).status == 401);
    let r = get_job(&server, &job, &admin2);
    assert!(String::from_utf8_lossy(&r.body).contains("retired key"), "{}", String::from_utf8_lossy(&r.body));
    // The server swaps its keys first and rewrites its admin token just after.
    wait_until("admin token signed by key 3", 30, || server.admin_token().starts_with("tr2.3."));
    assert_eq!(get_job(&server, &job, &server.admin_token()).status, 200);
    assert_eq!(get_job(&server, &job, &token1).status, 200);

    // A broken key file is refused by `keys rotate` and ignored by the server, which keeps its keys.
    std::fs::write(data.join("signing-keys.json"), b"{not json").unwrap();
    let out = Command::new(BIN).args(["keys", "rotate"]).arg("--data-dir").arg(&data).output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("not a signing-key file"));
    wait_until("the server noticed the broken file", 30, || server.log().contains("keeping the keys in use"));
    assert_eq!(get_job(&server, &job, &server.admin_token()).status, 200);
}

#[test]
fn a_token_streams_at_most_its_limit_of_steps_and_the_rest_wait_without_loss() {
    let server = Server::start_with(vec![("TAILRACE_INGEST_STEPS_PER_TOKEN".into(), "1".into())]);
    let (job, token) = server.create_job();
    let gate = server.dir.path().join("gate");
    let script = format!("printf 'first\\n'; while [ ! -e {} ]; do sleep 0.05; done; printf 'done\\n'", gate.display());
    let first = Watched::spawn(agent(&server.url(), &token, &job, "first", &["--quiet"], &["sh", "-c", &script]));
    wait_until("first step streaming", 30, || server.step_len(&job, "first") == 6);
    let second = Watched::spawn(agent(&server.url(), &token, &job, "second", &[], &["printf", "second step\\n"]));
    wait_until("second step refused for the quota", 30, || metric_line(&server, "tailrace_ingest_errors_total{kind=\"quota\"}") >= 1);
    second.wait_for("ingest_steps_per_token", 30);
    assert!(server.step(&job, "second").is_none(), "the second step did not start");
    // Another job's token is not limited by this one.
    let (job_b, token_b) = server.create_job();
    let run = agent(&server.url(), &token_b, &job_b, "b", &["--quiet"], &["echo", "other"]).output().unwrap();
    assert!(run.status.success());
    std::fs::write(&gate, b"").unwrap();
    assert!(first.finish(60).status.success());
    let out = second.finish(60);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(server.output(&job, "first", None).body, b"first\ndone\n");
    assert_eq!(server.output(&job, "second", None).body, b"second step\n");
}

/// The value of one exact metric line (name with labels).
fn metric_line(server: &Server, name: &str) -> u64 {
    let r = http_get(&server.url(), "/metrics", None, None).unwrap();
    String::from_utf8_lossy(&r.body)
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}
