//! The audit log: each security-relevant action (configuration at start and its changes, tokens
//! issued and revoked, jobs created, failed authentication over HTTP and ingest, key rotation,
//! expiry deletions) is written as a JSON line to the object store; no token, nor the signature
//! of one, appears in any audit line or in the server's log.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Stdio};

use common::*;

fn events(server: &Server, name: &str) -> Vec<serde_json::Value> {
    server.audit().into_iter().filter(|e| e["event"] == name).collect()
}

#[test]
fn every_security_event_is_audited_and_no_token_is_written() {
    let mut server = Server::start_with(vec![("TAILRACE_LOG".into(), "debug".into())]);
    let admin = server.admin_token();
    wait_until("config and admin token audited", 30, || !events(&server, "config_loaded").is_empty() && !events(&server, "token_created").is_empty());
    let boot = &events(&server, "token_created")[0];
    assert_eq!(boot["scope"], "admin");

    let created = Command::new(BIN)
        .args(["job", "create", "--server", &server.url(), "--project", "gh/acme/app", "--json"])
        .env("TAILRACE_TOKEN", &admin)
        .output()
        .unwrap();
    let created: serde_json::Value = serde_json::from_slice(&created.stdout).unwrap();
    let (job, job_token) = (created["job_id"].as_str().unwrap().to_string(), created["token"].as_str().unwrap().to_string());
    let read = Command::new(BIN)
        .args(["token", "create", "--server", &server.url(), "--project", "gh/acme/app", "--json"])
        .env("TAILRACE_TOKEN", &admin)
        .output()
        .unwrap();
    let read: serde_json::Value = serde_json::from_slice(&read.stdout).unwrap();
    let read_token = read["token"].as_str().unwrap().to_string();
    // Failed authentication: a forged token over HTTP, another job's token over ingest.
    let forged = format!("{}x", &read_token[..read_token.len() - 1]);
    assert_eq!(http_get(&server.url(), &format!("/api/v1/jobs/{job}"), Some(&forged), None).unwrap().status, 401);
    let (other_job, _) = server.create_job();
    let run = agent(&server.url(), &job_token, &other_job, "s", &["--quiet"], &["echo", "x"]).stderr(Stdio::piped()).output().unwrap();
    assert_eq!(run.status.code(), Some(2));
    let revoke = Command::new(BIN).args(["token", "revoke", "--server", &server.url()]).env("TAILRACE_TOKEN", &read_token).output().unwrap();
    assert!(revoke.status.success());
    let rotate = Command::new(BIN).args(["keys", "rotate"]).arg("--data-dir").arg(server.data_dir()).output().unwrap();
    assert!(rotate.status.success());
    wait_until("rotation seen", 30, || server.admin_token().starts_with("tr2.2."));

    wait_until("every event written", 30, || {
        ["job_created", "token_revoked", "signing_keys_loaded"].iter().all(|e| !events(&server, e).is_empty())
            && events(&server, "auth_failed").len() >= 2
            && events(&server, "token_created").len() >= 3
    });
    let job_created = &events(&server, "job_created")[0];
    assert_eq!(job_created["job"], job.as_str());
    assert_eq!(job_created["token_id"], created["token_id"]);
    assert_eq!(job_created["actor"]["scope"], "admin");
    assert_eq!(job_created["actor"]["token_id"], boot["token_id"], "the actor is named by token id");
    let issued = events(&server, "token_created");
    assert!(issued.iter().any(|e| e["token_id"] == read["token_id"] && e["project"] == "gh/acme/app"));
    assert!(issued.iter().any(|e| e["scope"] == "admin" && e["key"] == 2), "admin token re-issued after rotation");
    let revoked = &events(&server, "token_revoked")[0];
    assert_eq!(revoked["token_id"], read["token_id"]);
    assert_eq!(revoked["actor"]["token_id"], read["token_id"], "the holder revoked it");
    let failed = events(&server, "auth_failed");
    assert!(failed.iter().any(|e| e["via"] == "http" && e["path"] == format!("/api/v1/jobs/{job}") && e["reason"].as_str().unwrap().contains("signature")));
    assert!(failed.iter().any(|e| e["via"] == "ingest" && e["job"] == other_job.as_str()));
    assert_eq!(events(&server, "signing_keys_loaded")[0]["current_key"], 2);

    // A restart with a changed setting records what changed.
    server.env.push(("TAILRACE_RATE_LIMIT_RPS".into(), "77".into()));
    server.env.push(("TAILRACE_RETENTION_LOGS_DAYS".into(), "1".into()));
    server.restart();
    wait_until("config change audited", 30, || !events(&server, "config_changed").is_empty());
    let changed = &events(&server, "config_changed")[0];
    let keys: Vec<&str> = changed["changed"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(keys, ["rate_limit_rps", "retention_logs_days"]);
    assert_eq!(changed["config"]["rate_limit_rps"], 77);

    // Expiry deletions, by `tailrace gc` as if a year had passed.
    let (job2, token2) = server.create_job();
    stream_step(&server, &job2, &token2, "old", b"expire me\n");
    let gc = Command::new(BIN)
        .args(["gc", "--as-of", "2100-01-01"])
        .arg("--data-dir")
        .arg(server.data_dir())
        .env("TAILRACE_RETENTION_LOGS_DAYS", "1")
        .output()
        .unwrap();
    assert!(gc.status.success(), "{}", String::from_utf8_lossy(&gc.stderr));
    let expired = events(&server, "expired");
    assert_eq!(expired.len(), 1, "{expired:?}");
    assert_eq!(expired[0]["steps"], 1);
    assert!(expired[0]["step_ids"].as_array().unwrap().iter().any(|s| s == &format!("{job2}/old")));

    // No token, nor its signature, anywhere in the audit log or the (debug-level) server log.
    let audit_text: String = server.audit().iter().map(|e| e.to_string()).collect();
    let log = server.log();
    for t in [&admin, &server.admin_token(), &job_token, &read_token, &forged, &token2] {
        let sig = t.rsplit('.').next().unwrap();
        assert!(!audit_text.contains(sig), "a token's signature is in the audit log");
        assert!(!log.contains(sig), "a token's signature is in the server log");
    }
}
