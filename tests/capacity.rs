//! Memory per open step: 1,000 steps open at once on one server, measured from the server's RSS.

// Test helpers fail the test by panicking, like the tests themselves.
#![allow(clippy::unwrap_used)]

mod common;

use bytes::{Bytes, BytesMut};
use common::*;
use tailrace_agent::client::Server as ApiServer;
use tailrace_agent::transport::{Connector, StepStream, TransportChoice};
use tailrace_protocol::{Data, Decoder, Frame, JobId, Open, StepId, StreamTag};
use tokio::io::AsyncReadExt;

const STEPS: usize = 1000;

/// Opens a step, sends 4 KiB, and waits for the ACK; the stream stays open.
async fn open_step(c: &mut Connector, job: &str, token: &str, i: usize) -> StepStream {
    let mut s = c.open().await.unwrap();
    let open = Frame::Open(Open { job: JobId::new(job).unwrap(), step: StepId::new(format!("s{i}")).unwrap(), name: String::new(), token: token.into() });
    let data = Frame::Data(Data { offset: 0, timestamp_us: 0, stream: StreamTag::Stdout, bytes: Bytes::from(vec![b'x'; 4096]) });
    s.tx.send(&mut [open.to_bytes(), data.to_bytes()]).await.unwrap();
    let mut buf = BytesMut::new();
    loop {
        if let Some(f) = Decoder::default().decode(&mut buf).unwrap() {
            if f == (Frame::Ack { durable: 4096 }) {
                return s;
            }
            continue;
        }
        assert!(s.rx.read_buf(&mut buf).await.unwrap() > 0, "stream {i} closed early");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_open_steps_cost_bounded_memory() {
    // One connection carries all thousand steps of one job here, so it must allow that many
    // streams, and the job token that many steps at once.
    let server = Server::start_with(vec![
        ("TAILRACE_QUIC_STREAMS_PER_CONNECTION".into(), "1024".into()),
        ("TAILRACE_INGEST_STEPS_PER_TOKEN".into(), "0".into()),
    ]);
    let (job, token) = server.create_job();
    let mut c = Connector::new(ApiServer::parse(&server.url()).unwrap(), TransportChoice::Quic, None);
    let mut streams = Vec::with_capacity(STEPS);
    // Warm up allocator pools and the connection, then measure the rest.
    for i in 0..20 {
        streams.push(open_step(&mut c, &job, &token, i).await);
    }
    let before = server.rss_kib();
    for i in 20..STEPS {
        streams.push(open_step(&mut c, &job, &token, i).await);
    }
    let after = server.rss_kib();
    let per_step = (after.saturating_sub(before) as f64) / (STEPS - 20) as f64;
    println!("server RSS {before} KiB -> {after} KiB with {STEPS} open steps: {per_step:.1} KiB per open step");
    // The bound: the read buffer and state of a step are a few tens of KiB; far less than the
    // 1 MiB frame limit a step could in principle buffer.
    assert!(per_step < 256.0, "{per_step:.1} KiB per open step is over the 256 KiB bound");
    let steps = server.step(&job, "s999").unwrap();
    assert_eq!(steps["status"], "running");
    assert_eq!(steps["length"].as_u64(), Some(4096));
    drop(streams);
}
