//! End to end through real processes: `tailrace run` → `tailrace serve` → `tailrace tail` and
//! the ranged GET, with awkward bytes, server crashes, cut connections and cancelled commands.

// Test helpers fail the test by panicking, like the tests themselves.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Stdio;

use common::*;

/// ≥ 100 MB of awkward output with silences, read back by a tail started mid-stream and by
/// ranged GETs: every byte identical.
#[test]
fn a_large_awkward_step_reads_back_byte_for_byte() {
    let server = Server::start();
    let (job, token) = server.create_job();
    let tmp = tempfile::tempdir().unwrap();
    let data = awkward_bytes(7, 104 << 20);
    let parts = write_parts(tmp.path(), &data, 3);
    let script = cat_with_pauses(&parts, 1.5);
    let run = agent(&server.url(), &token, &job, "big", &["--quiet"], &["sh", "-c", &script])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Start the tail once the step is under way, from byte 0.
    wait_until("first bytes", 60, || server.step_len(&job, "big") > 0);
    let tail_out = tmp.path().join("tail.out");
    let tail = std::process::Command::new(BIN)
        .args(["tail", "--server", &server.url(), "--job", &job, "--step", "big", "--from", "0"])
        .env("TAILRACE_TOKEN", server.admin_token())
        .stdout(std::fs::File::create(&tail_out).unwrap())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_output(run, 300);
    assert!(out.status.success(), "agent failed: {}", String::from_utf8_lossy(&out.stderr));
    let tail = wait_output(tail, 120);
    assert!(tail.status.success(), "tail failed: {}", String::from_utf8_lossy(&tail.stderr));
    let tailed = std::fs::read(&tail_out).unwrap();
    assert_eq!(tailed.len(), data.len());
    assert!(tailed == data, "tail output differs from what the command wrote");

    let step = server.step(&job, "big").unwrap();
    assert_eq!(step["status"], "success");
    assert_eq!(step["length"].as_u64(), Some(data.len() as u64));
    let whole = server.output(&job, "big", None);
    assert_eq!(whole.status, 200);
    assert!(whole.body == data, "GET output differs");
    let mut rng = 0x9e3779b97f4a7c15u64;
    for _ in 0..40 {
        rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let start = (rng >> 11) as usize % data.len();
        let len = 1 + (rng >> 40) as usize % (1 << 20);
        let end = (start + len).min(data.len());
        let r = server.output(&job, "big", Some(&format!("bytes={start}-{}", end - 1)));
        assert_eq!(r.status, 206);
        assert_eq!(r.header("content-range"), Some(format!("bytes {start}-{}/{}", end - 1, data.len()).as_str()));
        assert!(r.body == data[start..end], "range {start}-{end} differs");
    }
    let r = server.output(&job, "big", Some(&format!("bytes={}-", data.len())));
    assert_eq!(r.status, 416);
}

/// `kill -9` of the server while a step streams; restart on the same data dir; the agent resumes
/// and the step ends verified with exactly the command's bytes.
fn survives_server_kill(transport: &str) {
    let mut server = Server::start();
    let (job, token) = server.create_job();
    let tmp = tempfile::tempdir().unwrap();
    let data = awkward_bytes(11, 48 << 20);
    let parts = write_parts(tmp.path(), &data, 4);
    let script = cat_with_pauses(&parts, 1.0);
    let run = agent(&server.url(), &token, &job, "s", &["--quiet", "--transport", transport, "--idle-timeout", "3s"], &["sh", "-c", &script])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("first bytes", 60, || server.step_len(&job, "s") > 0);
    let held = server.step_len(&job, "s");
    server.kill9();
    server.restart();
    let out = wait_output(run, 300);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "agent failed: {stderr}");
    assert!(held < data.len() as u64, "server was killed after the step ended ({held} bytes); test proves nothing");
    assert!(stderr.contains("will resume"), "agent never noticed the crash: {stderr}");
    let step = server.step(&job, "s").unwrap();
    assert_eq!(step["status"], "success", "{step}");
    assert!(server.output(&job, "s", None).body == data, "output differs after crash and resume");
}

#[test]
fn kill_9_of_the_server_loses_nothing_over_quic() {
    survives_server_kill("quic");
}

#[test]
fn kill_9_of_the_server_loses_nothing_over_http2() {
    survives_server_kill("http2");
}

/// Cut every HTTP/2 connection twice mid-stream: the agent reconnects and resumes.
#[test]
fn a_cut_http2_connection_resumes_exactly() {
    let server = Server::start();
    let proxy = TcpProxy::start(format!("127.0.0.1:{}", server.http).parse().unwrap());
    let (job, token) = server.create_job();
    let tmp = tempfile::tempdir().unwrap();
    let data = awkward_bytes(13, 32 << 20);
    let parts = write_parts(tmp.path(), &data, 4);
    let script = cat_with_pauses(&parts, 1.0);
    let via = format!("http://127.0.0.1:{}", proxy.port);
    let run = agent(&via, &token, &job, "s", &["--quiet", "--transport", "http2"], &["sh", "-c", &script])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut cuts = 0;
    for _ in 0..2 {
        let before = server.step_len(&job, "s");
        wait_until("more bytes", 60, || server.step_len(&job, "s") > before);
        cuts += proxy.cut_all();
    }
    let out = wait_output(run, 300);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "agent failed: {stderr}");
    assert!(cuts >= 1 && stderr.contains("will resume"), "no connection was cut ({cuts}): {stderr}");
    assert_eq!(server.step(&job, "s").unwrap()["status"], "success");
    assert!(server.output(&job, "s", None).body == data, "output differs after cuts");
}

/// Black-hole the QUIC path until the agent's connection times out; it reconnects and resumes.
#[test]
fn a_lost_quic_connection_resumes_exactly() {
    let quic_target = free_port();
    let proxy = UdpProxy::start(format!("127.0.0.1:{quic_target}").parse().unwrap());
    let mut server = Server::start_with(vec![("TAILRACE_QUIC_PUBLIC_ADDR".into(), format!("127.0.0.1:{}", proxy.port))]);
    // Rebind the server's QUIC listener to the port the proxy forwards to.
    server.quic = quic_target;
    server.restart();
    let (job, token) = server.create_job();
    let tmp = tempfile::tempdir().unwrap();
    let data = awkward_bytes(17, 24 << 20);
    let parts = write_parts(tmp.path(), &data, 3);
    let script = cat_with_pauses(&parts, 2.0);
    let run = Watched::spawn(agent(&server.url(), &token, &job, "s", &["--quiet", "--transport", "quic", "--idle-timeout", "1s"], &["sh", "-c", &script]));
    wait_until("first bytes", 60, || server.step_len(&job, "s") > 0);
    proxy.blackhole.store(true, std::sync::atomic::Ordering::SeqCst);
    // Keep the path dark until the agent has given up on the connection.
    run.wait_for("will resume", 60);
    proxy.blackhole.store(false, std::sync::atomic::Ordering::SeqCst);
    let out = run.finish(300);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "agent failed: {stderr}");
    assert!(stderr.contains("will resume"), "the connection was never lost: {stderr}");
    assert_eq!(server.step(&job, "s").unwrap()["status"], "success");
    assert!(server.output(&job, "s", None).body == data, "output differs after the outage");
}

/// SIGTERM to the agent while the command prints: the command is stopped, every byte it printed
/// (including what its TERM trap prints last) is delivered, and the step ends as cancelled.
#[test]
fn sigterm_delivers_every_printed_byte_and_cancels_the_step() {
    let server = Server::start();
    let (job, token) = server.create_job();
    let script = r#"trap 'echo last-words; exit 7' TERM; i=0; while :; do echo "line $i"; i=$((i+1)); done"#;
    let run = agent(&server.url(), &token, &job, "s", &[], &["sh", "-c", script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("output flowing", 60, || server.step_len(&job, "s") > 10_000);
    // SAFETY: plain kill(2) of our own child.
    unsafe { libc::kill(run.id() as i32, libc::SIGTERM) };
    let out = wait_output(run, 120);
    assert_eq!(out.status.code(), Some(7), "agent exits with the command's code; stderr: {}", String::from_utf8_lossy(&out.stderr));
    let step = server.step(&job, "s").unwrap();
    assert_eq!(step["status"], "cancelled", "{step}");
    assert_eq!(step["reason"], "cancelled");
    assert_eq!(step["exit_code"], 7);
    let stored = server.output(&job, "s", None).body;
    assert!(stored.ends_with(b"last-words\n"), "the last line is missing: {:?}", String::from_utf8_lossy(&stored[stored.len().saturating_sub(80)..]));
    // Every line the command printed, in order, none missing: what the agent echoed locally.
    assert!(stored == out.stdout, "stored output differs from what the command printed");
    let text = String::from_utf8(stored).unwrap();
    for (i, line) in text.lines().take_while(|l| l.starts_with("line ")).enumerate() {
        assert_eq!(line, format!("line {i}"));
    }
}

/// `--timeout` stops the command and the step ends as timed out, with its output.
#[test]
fn a_timeout_ends_the_step_as_timed_out() {
    let server = Server::start();
    let (job, token) = server.create_job();
    let run = agent(&server.url(), &token, &job, "s", &["--quiet", "--timeout", "1s"], &["sh", "-c", "echo started; sleep 30"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_output(run, 60);
    assert_eq!(out.status.code(), Some(128 + libc::SIGTERM), "{}", String::from_utf8_lossy(&out.stderr));
    let step = server.step(&job, "s").unwrap();
    assert_eq!(step["status"], "timed_out");
    assert_eq!(server.output(&job, "s", None).body, b"started\n");
}

/// The command's exit code passes through; a command that cannot start ends the step as failed.
#[test]
fn exit_codes_pass_through() {
    let server = Server::start();
    let (job, token) = server.create_job();
    let out = agent(&server.url(), &token, &job, "a", &["--quiet"], &["sh", "-c", "echo out; echo err >&2; exit 42"]).output().unwrap();
    assert_eq!(out.status.code(), Some(42));
    assert_eq!(server.step(&job, "a").unwrap()["status"], "failed");
    let stored = server.output(&job, "a", None).body;
    assert_eq!(stored.len(), 8, "both streams stored: {stored:?}");
    let out = agent(&server.url(), &token, &job, "b", &["--quiet"], &["/no/such/program"]).output().unwrap();
    assert_eq!(out.status.code(), Some(127));
    let step = server.step(&job, "b").unwrap();
    assert_eq!((step["status"].as_str(), step["reason"].as_str()), (Some("failed"), Some("failed_to_start")));
    assert!(String::from_utf8_lossy(&server.output(&job, "b", None).body).contains("could not start"));
}

/// Under `--pty` the command sees a terminal (so tools keep their colours).
#[test]
fn pty_mode_gives_the_command_a_terminal() {
    let server = Server::start();
    let (job, token) = server.create_job();
    let out = agent(&server.url(), &token, &job, "p", &["--quiet", "--pty"], &["sh", "-c", "if [ -t 1 ]; then echo tty; else echo notty; fi"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(server.output(&job, "p", None).body, b"tty\r\n");
}

/// The server is down when the step starts and stays down while the command prints more than
/// the spool may hold: the command runs anyway, blocks at the spool bound, and once the server is
/// back every byte arrives. Counters on `/metrics` account for the bytes.
#[test]
fn a_server_that_is_down_at_the_start_loses_nothing() {
    let mut server = Server::start();
    let (job, token) = server.create_job();
    server.kill9();
    let tmp = tempfile::tempdir().unwrap();
    let data = awkward_bytes(29, 3 << 20);
    let file = tmp.path().join("out");
    std::fs::write(&file, &data).unwrap();
    let script = format!("echo started; cat '{}'", file.display());
    let run = Watched::spawn(agent(&server.url(), &token, &job, "s", &["--quiet", "--spool-max", "256KiB"], &["sh", "-c", &script]));
    run.wait_for("running the command and spooling", 60);
    server.restart();
    let out = run.finish(120);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("running the command and spooling"), "{stderr}");
    let mut expected = b"started\n".to_vec();
    expected.extend_from_slice(&data);
    assert!(server.output(&job, "s", None).body == expected, "output differs");
    assert_eq!(metric(&server, "tailrace_ingest_bytes_total"), expected.len() as u64);
    assert_eq!(metric(&server, "tailrace_ingest_steps_verified_total"), 1);
}

/// The agent can trust the QUIC certificate through a CA file instead of the published
/// fingerprint; a wrong pin is never accepted and the agent says why.
#[test]
fn quic_trust_by_ca_file_and_by_pin() {
    let server = Server::start();
    let (job, token) = server.create_job();
    let ca = server.data_dir().join("tls/cert.pem");
    let out = agent(&server.url(), &token, &job, "ca", &["--quiet", "--transport", "quic", "--ca-cert", ca.to_str().unwrap()], &["echo", "trusted"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(server.output(&job, "ca", None).body, b"trusted\n");
    let wrong = "ab".repeat(32);
    let out = agent(&server.url(), &token, &job, "pin", &["--quiet", "--transport", "quic", "--cert-sha256", &wrong, "--delivery-timeout", "1s"], &["echo", "x"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{stderr}");
    assert!(stderr.contains(&format!("is not the pinned {wrong}")), "{stderr}");
    assert!(server.step(&job, "pin").is_none(), "nothing reached the server");
}

/// SIGTERM to the server while a step streams: it shuts down cleanly, and after a restart the
/// agent finishes the step with every byte.
#[test]
fn a_graceful_server_restart_loses_nothing() {
    let mut server = Server::start();
    let (job, token) = server.create_job();
    let tmp = tempfile::tempdir().unwrap();
    let data = awkward_bytes(31, 16 << 20);
    let parts = write_parts(tmp.path(), &data, 4);
    let script = cat_with_pauses(&parts, 1.0);
    let run = agent(&server.url(), &token, &job, "s", &["--quiet"], &["sh", "-c", &script]).stderr(Stdio::piped()).spawn().unwrap();
    wait_until("first bytes", 60, || server.step_len(&job, "s") > 0);
    let mut child = server.child.take().unwrap();
    // SAFETY: plain kill(2) of our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "server did not shut down cleanly: {status:?}\n{}", server.log());
    assert!(server.log().contains("shutting down"));
    server.restart();
    let out = wait_output(run, 120);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(server.output(&job, "s", None).body == data);
}
