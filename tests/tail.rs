//! The websocket tail: exact bytes from any offset, reconnecting without gap or duplicate, and
//! only for callers whose token may read the job.

// Test helpers fail the test by panicking, like the tests themselves.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Stdio;

use common::*;
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(server: &Server, job: &str, step: &str, offset: u64, token: &str) -> Result<Ws, String> {
    let url = format!("ws://127.0.0.1:{}/api/v1/jobs/{job}/steps/{step}/tail?offset={offset}", server.http);
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    // A fixed, small receive buffer (the kernel would grow it to tens of MiB on loopback), so
    // a tail that stops reading stops the server's sending soon: a stalled reader leaves
    // most of a step still to be read, as a browser over a real network would.
    let socket = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
    socket.set_recv_buffer_size(64 * 1024).map_err(|e| e.to_string())?;
    let tcp = socket.connect(([127, 0, 0, 1], server.http).into()).await.map_err(|e| e.to_string())?;
    tokio_tungstenite::client_async(req, tokio_tungstenite::MaybeTlsStream::Plain(tcp)).await.map(|(ws, _)| ws).map_err(|e| e.to_string())
}

/// Reads up to `max_messages` data messages (or to the end); returns (bytes, ended).
async fn read(ws: &mut Ws, offset: &mut u64, out: &mut Vec<u8>, max_messages: usize) -> bool {
    let mut n = 0;
    while let Some(msg) = ws.next().await {
        match msg.expect("websocket error") {
            Message::Binary(b) => {
                let at = u64::from_be_bytes(b[..8].try_into().unwrap());
                assert_eq!(at, *offset, "message offset must continue exactly where the last one ended");
                out.extend_from_slice(&b[8..]);
                *offset += (b.len() - 8) as u64;
                n += 1;
                if n == max_messages {
                    return false;
                }
            }
            Message::Text(t) => {
                let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                assert_eq!(v["type"], "end");
                assert_eq!(v["length"].as_u64(), Some(*offset));
                return true;
            }
            Message::Close(_) => return false,
            _ => {}
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tail_reconnects_with_its_offset_and_misses_nothing() {
    let server = Server::start();
    let (job, token) = server.create_job();
    let tmp = tempfile::tempdir().unwrap();
    let data = awkward_bytes(23, 24 << 20);
    let parts = write_parts(tmp.path(), &data, 3);
    let script = cat_with_pauses(&parts, 1.0);
    let run = agent(&server.url(), &token, &job, "s", &["--quiet"], &["sh", "-c", &script]).stderr(Stdio::piped()).spawn().unwrap();
    let (s, j) = (&server, job.clone());
    tokio::task::block_in_place(|| wait_until("first bytes", 60, || s.step_len(&j, "s") > 0));

    let admin = server.admin_token();
    let (mut offset, mut got) = (0u64, Vec::new());
    let mut reconnects = 0;
    loop {
        let mut ws = connect(&server, &job, "s", offset, &admin).await.unwrap();
        // Read a few messages, then drop the connection without a goodbye.
        if read(&mut ws, &mut offset, &mut got, 3).await {
            break;
        }
        drop(ws);
        reconnects += 1;
    }
    assert!(reconnects >= 3, "the test should have reconnected several times, did {reconnects}");
    assert_eq!(got.len(), data.len());
    assert!(got == data, "reassembled tail differs");
    let out = tokio::task::block_in_place(|| wait_output(run, 120));
    assert!(out.status.success());

    // A tail from the middle of an ended step gets exactly the rest, then the end.
    let start = data.len() as u64 / 2 + 12345;
    let mut ws = connect(&server, &job, "s", start, &admin).await.unwrap();
    let (mut offset, mut rest) = (start, Vec::new());
    assert!(read(&mut ws, &mut offset, &mut rest, usize::MAX).await);
    assert!(rest == data[start as usize..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tails_need_a_token_that_can_read_the_job() {
    let server = Server::start();
    let (job_a, token_a) = server.create_job();
    let (job_b, _) = server.create_job();
    let out = agent(&server.url(), &token_a, &job_a, "s", &["--quiet"], &["echo", "hi"]).output().unwrap();
    assert!(out.status.success());
    // The job's own token may read it.
    let mut ws = connect(&server, &job_a, "s", 0, &token_a).await.unwrap();
    let (mut offset, mut got) = (0, Vec::new());
    assert!(read(&mut ws, &mut offset, &mut got, usize::MAX).await);
    assert_eq!(got, b"hi\n");
    // Another job's token, a forged token and no token are refused before the upgrade.
    let err = connect(&server, &job_b, "s", 0, &token_a).await.unwrap_err();
    assert!(err.contains("404"), "{err}");
    let err = connect(&server, &job_a, "s", 0, "tr2.1.e30.AAAA").await.unwrap_err();
    assert!(err.contains("401"), "{err}");
    let r = http_get(&server.url(), &format!("/api/v1/jobs/{job_a}/steps/s/output"), None, None).unwrap();
    assert_eq!(r.status, 401);
    assert!(String::from_utf8_lossy(&r.body).contains("missing token"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn project_tokens_read_their_project_only() {
    let server = Server::start();
    let (job, token) = server.create_job();
    let out = agent(&server.url(), &token, &job, "s", &["--quiet"], &["echo", "hi"]).output().unwrap();
    assert!(out.status.success());
    let issue = |project: &str| {
        let out = std::process::Command::new(BIN)
            .args(["token", "create", "--server", &server.url(), "--project", project])
            .env("TAILRACE_TOKEN", server.admin_token())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let mine = issue("gh/acme/app");
    let theirs = issue("gh/other/app");
    let path = format!("/api/v1/jobs/{job}/steps/s/output");
    assert_eq!(http_get(&server.url(), &path, Some(&mine), None).unwrap().body, b"hi\n");
    assert_eq!(http_get(&server.url(), &path, Some(&theirs), None).unwrap().status, 404);
    // A read token cannot create jobs or write output.
    let out = std::process::Command::new(BIN)
        .args(["job", "create", "--server", &server.url(), "--project", "gh/acme/app"])
        .env("TAILRACE_TOKEN", &mine)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs the admin token"));
    let out = agent(&server.url(), &mine, &job, "w", &["--quiet"], &["echo", "x"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not allow writing"));
}

/// The live → archive seam: a tail started at byte 0 reads slowly while the step ends and the
/// archiver moves (and releases) the very bytes it is reading; ranged GETs run meanwhile.
/// Every byte arrives once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_tail_crosses_the_archive_seam_without_a_gap() {
    let server = Server::start();
    let (job, token) = server.create_job();
    let tmp = tempfile::tempdir().unwrap();
    let data = awkward_bytes(67, 16 << 20);
    let parts = write_parts(tmp.path(), &data, 2);
    let script = cat_with_pauses(&parts, 0.5);
    let run = agent(&server.url(), &token, &job, "s", &["--quiet"], &["sh", "-c", &script]).stderr(Stdio::piped()).spawn().unwrap();
    let (s, j) = (&server, job.clone());
    tokio::task::block_in_place(|| wait_until("first bytes", 60, || s.step_len(&j, "s") > 0));
    let mut ws = connect(&server, &job, "s", 0, &server.admin_token()).await.unwrap();
    let (mut offset, mut got) = (0u64, Vec::new());
    // Read a few messages, then stall until the step is archived under us.
    assert!(!read(&mut ws, &mut offset, &mut got, 4).await);
    let out = tokio::task::block_in_place(|| wait_output(run, 120));
    assert!(out.status.success());
    tokio::task::block_in_place(|| wait_until("archived", 60, || archived(s, &j, "s")));
    assert!((offset as usize) < data.len(), "the tail must still be mid-way when the archive takes over");
    // Ranged reads during and after the move agree too.
    let r = server.output(&job, "s", Some(&format!("bytes={offset}-{}", offset + 99_999)));
    assert!(r.body == data[offset as usize..offset as usize + 100_000]);
    assert!(read(&mut ws, &mut offset, &mut got, usize::MAX).await);
    assert!(got == data, "the tail across the seam differs");
    let from_archive = metric(&server, "tailrace_archive_read_bytes_total");
    assert!(from_archive > 100_000, "the tail never read from the archive ({from_archive} bytes): the seam was not crossed");
}
