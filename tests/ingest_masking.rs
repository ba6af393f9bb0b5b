//! Masking at ingest: a job registered with a secret's digest (`job create --mask-env`) gets that
//! secret stored as `*` of the same length even from an agent that does not mask — also when it
//! is split across two chunks — while the step still ends verified against what the agent sent,
//! including after a server restart mid-step (then by length). The digests are never served.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::*;

const SECRET: &str = "deploy-KEY-0123456789";

fn create_masked_job(server: &Server) -> (String, String) {
    let out = Command::new(BIN)
        .args(["job", "create", "--server", &server.url(), "--project", "gh/acme/app", "--json", "--mask-env", "DEPLOY_KEY"])
        .env("TAILRACE_TOKEN", server.admin_token())
        .env("DEPLOY_KEY", SECRET)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (v["job_id"].as_str().unwrap().to_string(), v["token"].as_str().unwrap().to_string())
}

fn stars() -> String {
    "*".repeat(SECRET.len())
}

#[test]
fn a_registered_secret_is_masked_at_ingest_whole_and_split_and_the_step_verifies() {
    let mut server = Server::start();
    let (job, token) = create_masked_job(&server);
    let (a, b) = SECRET.split_at(7);

    // Whole, twice on a line, and split across two chunks (the agent sends the first half and
    // waits at a gate before printing the rest).
    let gate = server.dir.path().join("gate");
    let script = format!(
        "printf 'start %s and %s\\n' '{SECRET}' '{SECRET}'; printf 'split=%s' '{a}'; while [ ! -e {g} ]; do sleep 0.05; done; printf '%s end\\n' '{b}'",
        g = gate.display()
    );
    let run = Watched::spawn(agent(&server.url(), &token, &job, "s", &["--quiet"], &["sh", "-c", &script]));
    let first = format!("start {s} and {s}\nsplit={a}", s = stars());
    wait_until("first chunk stored", 30, || server.step_len(&job, "s") == first.len() as u64);
    assert_eq!(server.output(&job, "s", None).body, first.as_bytes(), "whole secrets masked before anyone can read them");
    std::fs::write(&gate, b"").unwrap();
    let out = run.finish(60);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let expected = format!("start {s} and {s}\nsplit={s} end\n", s = stars());
    assert_eq!(String::from_utf8_lossy(&server.output(&job, "s", None).body), expected);
    assert_eq!(server.step(&job, "s").unwrap()["status"], "success");
    assert!(metric(&server, "tailrace_ingest_masked_chunks_total") >= 2);

    // A restart mid-step (kill -9): the stored bytes are masked, so END is verified by length;
    // the job's audit record was written before its creation was answered, so it survives.
    let gate2 = server.dir.path().join("gate2");
    let script = format!("printf 'a %s\\n' '{SECRET}'; while [ ! -e {g} ]; do sleep 0.05; done; printf 'b %s\\n' '{SECRET}'", g = gate2.display());
    let run = Watched::spawn(agent(&server.url(), &token, &job, "r", &["--quiet"], &["sh", "-c", &script]));
    wait_until("masked bytes stored", 30, || server.step_len(&job, "r") == (SECRET.len() + 3) as u64);
    server.restart();
    std::fs::write(&gate2, b"").unwrap();
    let out = run.finish(120);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&server.output(&job, "r", None).body), format!("a {s}\nb {s}\n", s = stars()));
    assert!(server.log().contains("END verified by length only"));

    // Nothing stored or served holds the secret; the job never shows its digests.
    wait_until("archived", 60, || archived(&server, &job, "s") && archived(&server, &job, "r"));
    let job_json = String::from_utf8_lossy(&http_get(&server.url(), &format!("/api/v1/jobs/{job}"), Some(&token), None).unwrap().body).into_owned();
    assert!(!job_json.contains("sha256") && !job_json.contains("secrets"), "{job_json}");
    let log = server.log();
    assert!(!log.contains(SECRET));
    let audit: String = server.audit().iter().map(|e| e.to_string()).collect();
    assert!(!audit.contains(SECRET), "{audit}");
    let created: Vec<_> = server.audit().into_iter().filter(|e| e["event"] == "job_created").collect();
    assert_eq!(created.len(), 1, "{created:?}");
    assert_eq!(created[0]["secret_digests"], 1, "{created:?}");
}

#[test]
fn jobs_refuse_malformed_secret_digests() {
    let server = Server::start();
    for body in [
        r#"{"project":"gh/a/b","secrets":[{"length":2,"rolling":1,"sha256":"00"}]}"#,
        r#"{"project":"gh/a/b","secrets":[{"length":8,"rolling":1,"sha256":"not-hex"}]}"#,
    ] {
        let r = http_call(&server.url(), "POST", "/api/v1/jobs", Some(&server.admin_token()), &[("content-type", "application/json")], body.as_bytes()).unwrap();
        assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
        assert!(String::from_utf8_lossy(&r.body).contains("secrets:"));
    }
}
