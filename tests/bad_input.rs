//! Hostile and broken input against a real server: each gets a clear error, nothing panics, and
//! a healthy step on the same server is unaffected.

// Test helpers fail the test by panicking, like the tests themselves.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};

use bytes::{Bytes, BytesMut};
use common::*;
use tailrace_agent::client::Server as ApiServer;
use tailrace_agent::transport::{Connector, StepStream, TransportChoice};
use tailrace_protocol::{Decoder, ErrorKind, Frame, JobId, Open, StepId};
use tokio::io::AsyncReadExt;

async fn replies(stream: &mut StepStream) -> Vec<Frame> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    loop {
        while let Ok(Some(f)) = Decoder::default().decode(&mut buf) {
            out.push(f);
        }
        match tokio::time::timeout(std::time::Duration::from_secs(30), stream.rx.read_buf(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return out,
        }
    }
}

async fn send_raw(server: &Server, transport: TransportChoice, wire: Vec<Bytes>) -> Vec<Frame> {
    let mut c = Connector::new(ApiServer::parse(&server.url()).unwrap(), transport, None);
    let mut s = c.open().await.unwrap();
    let mut wire = wire;
    s.tx.send(&mut wire).await.unwrap();
    s.tx.finish();
    replies(&mut s).await
}

fn error_of(frames: &[Frame]) -> (ErrorKind, String) {
    frames
        .iter()
        .find_map(|f| if let Frame::Error(e) = f { Some((e.kind, e.message.clone())) } else { None })
        .unwrap_or_else(|| panic!("no ERROR frame in {frames:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_bad_frames_get_clear_errors_on_both_transports() {
    let server = Server::start();
    let (job, token) = server.create_job();
    let open = |step: &str, token: &str| {
        Frame::Open(Open { job: JobId::new(job.clone()).unwrap(), step: StepId::new(step).unwrap(), name: String::new(), token: token.into() })
            .to_bytes()
    };
    for transport in [TransportChoice::Quic, TransportChoice::Http2] {
        let garbage = Bytes::from_static(b"\x00\xffGET / HTTP/1.1\r\nthis is not a frame at all");
        let (kind, msg) = error_of(&send_raw(&server, transport, vec![garbage]).await);
        assert_eq!(kind, ErrorKind::BadFrame, "{transport:?}: {msg}");
        assert!(msg.contains("unknown frame kind"), "{msg}");

        let oversize = Bytes::from_static(&[3, 0x10, 0, 0, 0]);
        let (kind, msg) = error_of(&send_raw(&server, transport, vec![open("big", &token), oversize]).await);
        assert_eq!(kind, ErrorKind::TooLarge, "{transport:?}: {msg}");
        assert!(msg.contains("over the limit"), "{msg}");

        let forged = "tr2.1.eyJraW5kIjoiYWRtaW4iLCJpZCI6IjAwIn0.c2lnbmF0dXJl";
        let (kind, msg) = error_of(&send_raw(&server, transport, vec![open("s", forged)]).await);
        assert_eq!(kind, ErrorKind::Unauthorized, "{transport:?}: {msg}");
        assert!(msg.contains("signature is invalid"), "{msg}");
    }

    // Raw junk at the listeners themselves.
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..200u32 {
        let junk: Vec<u8> = (0..1200).map(|j| (i.wrapping_mul(31) ^ j) as u8).collect();
        udp.send_to(&junk, ("127.0.0.1", server.quic)).unwrap();
    }
    let mut tcp = TcpStream::connect(("127.0.0.1", server.http)).unwrap();
    tcp.write_all(b"\x16\x03\x01garbage\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = tcp.read_to_end(&mut answer);
    // An HTTP/1.1 POST to the ingest path without the protocol header is told what to use.
    let mut tcp = TcpStream::connect(("127.0.0.1", server.http)).unwrap();
    tcp.write_all(b"POST /api/v1/ingest HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc").unwrap();
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400") && answer.contains("tailrace-protocol"), "{answer}");

    // The server is unharmed: a normal step still streams and verifies.
    let out = agent(&server.url(), &token, &job, "fine", &["--quiet"], &["echo", "still fine"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(server.output(&job, "fine", None).body, b"still fine\n");
    assert!(!server.log().contains("panicked"), "server panicked:\n{}", server.log());
}

#[test]
fn bad_tokens_are_refused_by_the_cli_with_what_to_do() {
    let server = Server::start();
    let (job_a, token_a) = server.create_job();
    let (job_b, _) = server.create_job();
    let check_on = |server: &Server, job: &str, token: &str, expected: &str| {
        let out = agent(&server.url(), token, job, "s", &[], &["echo", "should not run"]).stdout(std::process::Stdio::piped()).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(expected), "{stderr:?} does not say {expected:?}");
        assert!(out.stdout.is_empty(), "the command ran despite the refusal");
    };
    let check = |job: &str, token: &str, expected: &str| check_on(&server, job, token, expected);
    check(&job_b, &token_a, "does not allow writing job");
    check(&job_a, "tr2.1.eyJraW5kIjoiYWRtaW4iLCJpZCI6IjAwIn0.c2lnbmF0dXJl", "signature is invalid");
    check(&job_a, "not-a-token", "malformed");
    check("nonexistent-job", &server.admin_token(), "does not exist");
    // A server whose job tokens expire as they are issued.
    let cfg = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(cfg.path(), "job_token_ttl_secs = 0\n").unwrap();
    let short = Server::start_with(vec![("TAILRACE_CONFIG".into(), cfg.path().display().to_string())]);
    let (job_c, token_c) = short.create_job();
    check_on(&short, &job_c, &token_c, "expired");
    // Tokens never reach the logs.
    let log = server.log();
    assert!(!log.contains(&token_a) && !log.contains(&server.admin_token()), "a token was logged");
}
