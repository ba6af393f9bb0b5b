//! `tailrace serve --check-config`: every check passes on a usable configuration (the embedded
//! defaults, and a real S3 server), and each broken piece — a port in use, an object store that
//! is down or refuses the credentials, a TLS key that does not match its certificate, a Redis
//! live tier without the persistence acks rely on — is named with what to do, exit 1.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Output};

use common::*;

fn check(data: &std::path::Path, http: u16, quic: u16, env: &[(String, String)]) -> (Output, String) {
    let out = Command::new(BIN)
        .args(["serve", "--check-config", "--http-addr", &format!("127.0.0.1:{http}"), "--quic-addr", &format!("127.0.0.1:{quic}")])
        .arg("--data-dir")
        .arg(data)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (out, text)
}

fn line<'a>(text: &'a str, name: &str) -> &'a str {
    text.lines().find(|l| l.contains(&format!(" {name}: "))).unwrap_or_else(|| panic!("no {name} line in {text}"))
}

#[test]
fn embedded_defaults_pass_and_a_port_in_use_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (http, quic) = (free_port(), free_port());
    let (out, text) = check(&dir.path().join("data"), http, quic, &[]);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("configuration is usable"), "{text}");
    assert!(line(&text, "object store").starts_with("ok"), "{text}");
    assert!(line(&text, "signing keys").contains("will be created"), "{text}");

    // A server on the same addresses and data directory: the ports are taken, the rest is fine,
    // and the check leaves the running server's files alone.
    let server = Server::start();
    let (out, text) = check(&server.data_dir(), server.http, server.quic, &[]);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(line(&text, "HTTP address").starts_with("FAIL") && line(&text, "HTTP address").contains("set http_addr"), "{text}");
    assert!(line(&text, "QUIC address").starts_with("FAIL"), "{text}");
    assert!(line(&text, "signing keys").contains("key 1 signs"), "{text}");
    assert!(line(&text, "metadata store").starts_with("ok"), "{text}");

    // TLS files that do not belong together.
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let pair = |d: &std::path::Path| {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        std::fs::write(d.join("c.pem"), ck.cert.pem()).unwrap();
        std::fs::write(d.join("k.pem"), ck.key_pair.serialize_pem()).unwrap();
    };
    pair(a.path());
    pair(b.path());
    let env = vec![
        ("TAILRACE_HTTP_TLS_CERT".to_string(), a.path().join("c.pem").display().to_string()),
        ("TAILRACE_HTTP_TLS_KEY".to_string(), b.path().join("k.pem").display().to_string()),
    ];
    let (out, text) = check(&dir.path().join("data"), free_port(), free_port(), &env);
    assert_eq!(out.status.code(), Some(1));
    assert!(line(&text, "HTTP TLS").contains("does not belong to the certificate"), "{text}");
}

#[test]
fn an_s3_store_is_probed_for_real() {
    let _one_at_a_time = S3_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let mut s3 = S3Server::start();
    let dir = tempfile::tempdir().unwrap();
    let env = s3.serve_env();
    let (out, text) = check(&dir.path().join("data"), free_port(), free_port(), &env);
    assert!(out.status.success(), "{text}");
    assert!(line(&text, "object store").contains("write, read and delete work"), "{text}");

    // Wrong credentials: refused, and said so.
    let bad: Vec<(String, String)> =
        env.iter().map(|(k, v)| if k == "AWS_SECRET_ACCESS_KEY" { (k.clone(), "wrong".into()) } else { (k.clone(), v.clone()) }).collect();
    let (out, text) = check(&dir.path().join("data"), free_port(), free_port(), &bad);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(line(&text, "object store").starts_with("FAIL") && line(&text, "object store").contains("cannot write"), "{text}");

    // The server is down.
    s3.stop();
    let (out, text) = check(&dir.path().join("data"), free_port(), free_port(), &env);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(line(&text, "object store").contains(&s3.endpoint), "{text}");
}

#[test]
fn object_store_requests_go_through_the_outbound_proxy() {
    let _one_at_a_time = S3_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let s3 = S3Server::start();
    // A forwarding hop that only relays bytes: SeaweedFS answers the proxy-form requests
    // (`PUT http://host/bucket/key`) reqwest sends to an HTTP proxy.
    let s3_addr: std::net::SocketAddr = s3.endpoint.trim_start_matches("http://").parse().unwrap();
    let proxy = TcpBalancer::start(vec![s3_addr]);
    let dir = tempfile::tempdir().unwrap();
    let with = |extra: &[(&str, String)]| {
        let mut env = s3.serve_env();
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
        check(&dir.path().join("data"), free_port(), free_port(), &env)
    };

    let (out, text) = with(&[("TAILRACE_ARCHIVE_PROXY_URL", proxy.url())]);
    assert!(out.status.success(), "{text}");
    let through = proxy.accepted.load(std::sync::atomic::Ordering::Relaxed);
    assert!(through > 0, "the probe object did not go through the proxy");

    // The usual variables work too: a proxy that is down fails the check…
    let dead = format!("http://127.0.0.1:{}", free_port());
    let (out, text) = with(&[("HTTP_PROXY", dead.clone())]);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(line(&text, "object store").starts_with("FAIL"), "{text}");
    // …unless NO_PROXY exempts the store's host.
    let (out, text) = with(&[("HTTP_PROXY", dead), ("NO_PROXY", "127.0.0.1".into())]);
    assert!(out.status.success(), "{text}");
    assert_eq!(proxy.accepted.load(std::sync::atomic::Ordering::Relaxed), through, "only the first check used the relay");
}

#[test]
fn a_redis_that_could_lose_acknowledged_output_fails_the_check_with_what_to_change() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let env = vec![("TAILRACE_LIVE_URL".to_string(), redis.url())];
    let (out, text) = check(&dir.path().join("data"), free_port(), free_port(), &env);
    assert!(out.status.success(), "{text}");
    let live = line(&text, "live tier");
    assert!(live.starts_with("ok") && live.contains("append, read and release work") && live.contains("auto-aof-rewrite-min-size"), "{text}");

    assert_eq!(redis.command("CONFIG SET appendonly no"), "+OK");
    let (out, text) = check(&dir.path().join("data"), free_port(), free_port(), &env);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let live = line(&text, "live tier");
    assert!(live.starts_with("FAIL") && live.contains("appendonly no") && live.contains("appendfsync always"), "{text}");
}
