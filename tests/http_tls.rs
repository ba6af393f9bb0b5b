//! TLS on the HTTP listener: the API, HTTP/2 ingest and the websocket tail work over
//! `https://` with the server's CA trusted through `TAILRACE_CA_CERT`; plain HTTP and untrusted
//! clients are refused; a renewed certificate is picked up without a restart by the HTTP and
//! the QUIC listener (sharing the files, as on Kubernetes), and a half-written renewal (new
//! certificate, old key) does not break handshakes.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

#[test]
fn the_api_ingest_and_tail_work_over_tls_and_a_renewed_certificate_is_picked_up() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path, ca_path) = (dir.path().join("tls.crt"), dir.path().join("tls.key"), dir.path().join("ca.pem"));
    let (cert1, key1, fp1) = ca.leaf();
    write(&cert_path, &cert1);
    write(&key_path, &key1);
    write(&ca_path, &ca.cert.pem());
    let server = Server::start_with(vec![
        ("TAILRACE_HTTP_TLS_CERT".into(), cert_path.to_str().unwrap().into()),
        ("TAILRACE_HTTP_TLS_KEY".into(), key_path.to_str().unwrap().into()),
        ("TAILRACE_TLS_CERT".into(), cert_path.to_str().unwrap().into()),
        ("TAILRACE_TLS_KEY".into(), key_path.to_str().unwrap().into()),
    ]);
    let url = format!("https://localhost:{}", server.http);
    let admin = server.admin_token();
    let cli = |args: &[&str], token: &str| {
        // `--server` goes before a `--` that starts the step's command.
        let split = args.iter().position(|a| *a == "--").unwrap_or(args.len());
        Command::new(BIN).args(&args[..split]).args(["--server", &url]).args(&args[split..]).env("TAILRACE_TOKEN", token).env("TAILRACE_CA_CERT", &ca_path).output().unwrap()
    };

    // Plain HTTP gets no answer; a client that does not trust the CA is refused with a reason.
    assert!(http_get(&server.url(), "/healthz", None, None).map(|r| r.status != 200).unwrap_or(true));
    let untrusted = Command::new(BIN).args(["job", "create", "--project", "gh/acme/app", "--server", &url]).env("TAILRACE_TOKEN", &admin).output().unwrap();
    assert!(!untrusted.status.success());
    assert!(String::from_utf8_lossy(&untrusted.stderr).to_lowercase().contains("certificate"), "{}", String::from_utf8_lossy(&untrusted.stderr));

    // Job creation (HTTP/1.1), a step over HTTP/2 ingest and one over QUIC, tails over wss.
    let created = cli(&["job", "create", "--project", "gh/acme/app", "--json"], &admin);
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let created: serde_json::Value = serde_json::from_slice(&created.stdout).unwrap();
    let (job, token) = (created["job_id"].as_str().unwrap(), created["token"].as_str().unwrap());
    for (step, transport) in [("h2", "http2"), ("quic", "quic")] {
        let run = cli(&["run", "--job", job, "--step", step, "--transport", transport, "--quiet", "--", "printf", "over tls\\n"], token);
        assert!(run.status.success(), "{transport}: {}", String::from_utf8_lossy(&run.stderr));
        let tail = cli(&["tail", "--job", job, "--step", step], token);
        assert!(tail.status.success(), "{}", String::from_utf8_lossy(&tail.stderr));
        assert_eq!(tail.stdout, b"over tls\n");
    }
    assert_eq!(presented(server.http, &ca.cert.pem()), fp1);

    // Renewal: the key is replaced first (a mismatched pair: the old certificate stays in use),
    // then the certificate; the server switches without a restart.
    let (cert2, key2, fp2) = ca.leaf();
    write(&key_path, &key2);
    wait_until("the half renewal noticed", 30, || server.log().contains("keeping the certificate in use"));
    assert_eq!(presented(server.http, &ca.cert.pem()), fp1);
    write(&cert_path, &cert2);
    wait_until("renewed certificate presented", 30, || presented(server.http, &ca.cert.pem()) == fp2);
    let run = cli(&["run", "--job", job, "--step", "after", "--transport", "http2", "--quiet", "--", "echo", "renewed"], token);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let audited = |listener: &str| {
        server.audit().iter().any(|e| e["event"] == "tls_certificate_loaded" && e["listener"] == listener && e["cert_sha256"] == fp2.as_str())
    };
    wait_until("renewal audited", 30, || audited("HTTP") && audited("QUIC"));
    let (_, info) = https_exchange(server.http, &ca.cert.pem(), Some("/api/v1/ingest/info"));
    assert!(info.contains(&format!("\"cert_sha256\":\"{fp2}\"")), "ingest info does not publish the renewed certificate: {info}");
    // QUIC follows too: the agent pins the fingerprint the server now publishes (the renewed
    // one), so the handshake only succeeds if the QUIC listener presents the new certificate.
    let run = cli(&["run", "--job", job, "--step", "after-quic", "--transport", "quic", "--quiet", "--", "echo", "renewed"], token);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let tail = cli(&["tail", "--job", job, "--step", "after-quic"], token);
    assert_eq!(tail.stdout, b"renewed\n");
}
