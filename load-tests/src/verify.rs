//! After the run: waits until the server has archived every step, then reads each step back
//! whole (`GET …/output`, served from the archive) and compares length and xxh3 with what the
//! agent sent.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tailrace_agent::client::{Method, Server};
use tailrace_protocol::StreamHasher;

use crate::step::Sent;

#[derive(Debug, Deserialize)]
struct Steps {
    items: Vec<StepRow>,
}

#[derive(Debug, Deserialize)]
struct StepRow {
    step: String,
    archived_at_ms: Option<u64>,
}

/// Waits until every sent step is archived: at most 2 minutes plus 5 s per 100 MB.
pub async fn wait_archived(server: &Server, token: &str, sent: &[Sent]) -> Result<(), String> {
    let mut by_job: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for s in sent {
        by_job.entry(&s.job).or_default().push(&s.step);
    }
    let bytes: u64 = sent.iter().map(|s| s.length).sum();
    let deadline = Instant::now() + Duration::from_secs(120 + bytes / 20_000_000);
    for (job, steps) in by_job {
        loop {
            let list: Steps = server
                .json(
                    Method::GET,
                    &format!("/api/v1/jobs/{job}/steps"),
                    Some(token),
                    None,
                )
                .await
                .map_err(|e| format!("could not list steps of {job}: {e}"))?;
            let pending: Vec<&str> = steps
                .iter()
                .copied()
                .filter(|s| {
                    !list
                        .items
                        .iter()
                        .any(|r| r.step == *s && r.archived_at_ms.is_some())
                })
                .collect();
            if pending.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "job {job}: steps {pending:?} not archived in time; is the archiver running?"
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// Reads the step's whole output back and compares it with what was sent.
pub async fn read_back(server: &Server, token: &str, s: &Sent) -> Result<(), String> {
    let path = format!("/api/v1/jobs/{}/steps/{}/output", s.job, s.step);
    let (length, checksum) = get_xxh3(server, token, &path)
        .await
        .map_err(|e| format!("reading back {}/{}: {e}", s.job, s.step))?;
    check(s, length, &checksum, "the archive")
}

/// Compares what a reader got with what was sent.
pub fn check(s: &Sent, length: u64, checksum: &str, reader: &str) -> Result<(), String> {
    if (length, checksum) != (s.length, s.checksum.as_str()) {
        return Err(format!(
            "{}/{}: {reader} holds {length} bytes (xxh3 {checksum}) but the agent sent {} (xxh3 {})",
            s.job, s.step, s.length, s.checksum
        ));
    }
    Ok(())
}

/// Streams a GET body through xxh3 without holding it.
async fn get_xxh3(server: &Server, token: &str, path: &str) -> Result<(u64, String), String> {
    let tcp = tokio::net::TcpStream::connect(&server.authority)
        .await
        .map_err(|e| e.to_string())?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = http::Request::builder()
        .uri(path)
        .header(http::header::HOST, &server.authority)
        .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("server answered {}", resp.status()));
    }
    let mut body = resp.into_body();
    let mut h = StreamHasher::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.map_err(|e| e.to_string())?.into_data() {
            h.update(&data);
        }
    }
    Ok((h.len(), h.hex()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_difference_in_length_or_digest_is_a_failure() {
        let s = Sent {
            job: "j".into(),
            step: "s".into(),
            length: 3,
            checksum: "abc".into(),
        };
        assert!(check(&s, 3, "abc", "x").is_ok());
        assert!(
            check(&s, 3, "abd", "x")
                .unwrap_err()
                .contains("x holds 3 bytes")
        );
        assert!(check(&s, 4, "abc", "x").is_err());
    }
}
