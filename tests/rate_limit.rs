//! Rate limits against a real server: a flood of reads from one token gets `429` with
//! `Retry-After` while another token, the admin token and health probes are served normally;
//! requests without a valid token are limited per client address. The flood is 40 requests
//! against a bucket of 5 refilled at 1 per second, so it runs out whatever the machine's speed.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::*;

fn read_token(server: &Server) -> String {
    let out = Command::new(BIN)
        .args(["token", "create", "--server", &server.url(), "--project", "gh/acme/app"])
        .env("TAILRACE_TOKEN", server.admin_token())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn a_flooding_token_is_limited_and_others_are_not() {
    let server = Server::start_with(vec![
        ("TAILRACE_RATE_LIMIT_RPS".into(), "1".into()),
        ("TAILRACE_RATE_LIMIT_BURST".into(), "5".into()),
    ]);
    let (job, job_token) = server.create_job();
    let flooder = read_token(&server);
    let path = format!("/api/v1/jobs/{job}");
    let statuses: Vec<HttpResponse> = (0..40).map(|_| http_get(&server.url(), &path, Some(&flooder), None).unwrap()).collect();
    let ok = statuses.iter().filter(|r| r.status == 200).count();
    let limited: Vec<&HttpResponse> = statuses.iter().filter(|r| r.status == 429).collect();
    assert_eq!(ok + limited.len(), 40);
    assert!((5..40).contains(&ok), "{ok} of 40 served");
    let first = limited[0];
    assert!(first.header("retry-after").is_some_and(|v| v.parse::<u64>().is_ok_and(|s| s >= 1)));
    assert!(String::from_utf8_lossy(&first.body).contains("rate limit"), "{}", String::from_utf8_lossy(&first.body));

    // Everyone else is served as usual.
    assert_eq!(http_get(&server.url(), &path, Some(&job_token), None).unwrap().status, 200);
    for _ in 0..20 {
        assert_eq!(http_get(&server.url(), &path, Some(&server.admin_token()), None).unwrap().status, 200);
        assert_eq!(http_get(&server.url(), "/healthz", None, None).unwrap().status, 200);
    }
    // The flooding token is still limited, and the refusals are counted.
    assert_eq!(http_get(&server.url(), &path, Some(&flooder), None).unwrap().status, 429);
    assert!(metric(&server, "tailrace_http_rate_limited_total") >= limited.len() as u64);
}

#[test]
fn requests_without_a_valid_token_are_limited_by_address() {
    let server = Server::start_with(vec![
        ("TAILRACE_RATE_LIMIT_RPS".into(), "1".into()),
        ("TAILRACE_RATE_LIMIT_BURST".into(), "5".into()),
    ]);
    let (job, job_token) = server.create_job();
    let path = format!("/api/v1/jobs/{job}");
    // Forged tokens each look new, but they share the address's bucket.
    let statuses: Vec<u16> =
        (0..40).map(|i| http_get(&server.url(), &path, Some(&format!("forged-{i}")), None).unwrap().status).collect();
    assert!(statuses.iter().filter(|&&s| s == 401).count() >= 5, "{statuses:?}");
    assert!(statuses.contains(&429), "{statuses:?}");
    // A valid token from the same address has its own bucket.
    assert_eq!(http_get(&server.url(), &path, Some(&job_token), None).unwrap().status, 200);
}
