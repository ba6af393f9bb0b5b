//! In-process tests of the ingest core over an in-memory duplex pipe.

use bytes::BytesMut;
use tailrace_protocol::token::{KeySet, Scope};
use tailrace_protocol::{Decoder, EndReason, JobId, StepId, StreamHasher, StreamTag};
use tailrace_storage::{Durability, NewJob, SqliteMeta, StagingTier};
use tokio::io::{AsyncWriteExt, DuplexStream};

use super::*;

struct Harness {
    core: Arc<IngestCore>,
    job: JobId,
    token: String,
    _dir: tempfile::TempDir,
}

async fn harness() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let live = Arc::new(StagingTier::new(dir.path().join("live"), Durability::Fsync).unwrap());
    let meta = Arc::new(SqliteMeta::in_memory().unwrap());
    let job = meta.create_job(NewJob { project: "gh/a/b".into(), ..Default::default() }).await.unwrap();
    let keys = Arc::new(Keyring::new(KeySet::single([1; 32])).unwrap());
    let token = keys.sign(&Claims::new(Scope::Job { job: job.id.to_string(), project: "gh/a/b".into() }, None));
    let core = Arc::new(IngestCore {
        live,
        meta,
        keys,
        limits: IngestLimits { max_frame: 4096, ..Default::default() },
        metrics: IngestMetrics::default(),
        archiving: None,
        audit: AuditLog::start(Arc::new(object_store::memory::InMemory::new()), "test", Default::default()),
        tokens: Default::default(),
    });
    Harness { core, job: job.id, token, _dir: dir }
}

/// Starts a stream; returns the agent's end of the pipe and the server's outgoing frames.
fn start(h: &Harness) -> (DuplexStream, mpsc::Receiver<Bytes>) {
    let (agent, server) = tokio::io::duplex(64 * 1024);
    let (tx, rx) = mpsc::channel(64);
    let core = h.core.clone();
    tokio::spawn(async move { core.serve_stream(server, tx, "test").await });
    (agent, rx)
}

fn open(h: &Harness, step: &str, token: &str) -> Frame {
    Frame::Open(Open { job: h.job.clone(), step: StepId::new(step).unwrap(), name: step.into(), token: token.into() })
}

fn data(offset: u64, bytes: &'static [u8]) -> Frame {
    Frame::Data(Data { offset, timestamp_us: 0, stream: StreamTag::Stdout, bytes: Bytes::from_static(bytes) })
}

fn end(bytes: &[u8]) -> Frame {
    let mut h = StreamHasher::new();
    h.update(bytes);
    Frame::End(End { exit_code: Some(0), reason: EndReason::Exited, duration_ms: 1, length: bytes.len() as u64, checksum: h.hex() })
}

async fn send(agent: &mut DuplexStream, frames: &[Frame]) {
    for f in frames {
        agent.write_all(&f.to_bytes()).await.unwrap();
    }
}

/// Every frame the server sends until it closes the stream.
async fn replies(mut rx: mpsc::Receiver<Bytes>) -> Vec<Frame> {
    let mut buf = BytesMut::new();
    while let Some(b) = rx.recv().await {
        buf.extend_from_slice(&b);
    }
    let mut out = Vec::new();
    while let Some(f) = Decoder::default().decode(&mut buf).unwrap() {
        out.push(f);
    }
    out
}

fn error_kinds(frames: &[Frame]) -> Vec<ErrorKind> {
    frames.iter().filter_map(|f| if let Frame::Error(e) = f { Some(e.kind) } else { None }).collect()
}

#[tokio::test]
async fn a_step_streams_resends_and_verifies() {
    let h = harness().await;
    let (mut agent, rx) = start(&h);
    send(&mut agent, &[open(&h, "s", &h.token), data(0, b"hello "), data(3, b"lo world"), end(b"hello world")]).await;
    let frames = replies(rx).await;
    assert_eq!(frames.first(), Some(&Frame::Accept(Accept { hwm: 0, ended: false })));
    assert_eq!(frames.iter().rev().find(|f| matches!(f, Frame::Ack { .. })), Some(&Frame::Ack { durable: 11 }));
    assert!(matches!(frames.last(), Some(Frame::End(_))), "{frames:?}");
    // Reopening an ended step says so, and a resent END is confirmed again.
    let (mut agent, rx) = start(&h);
    send(&mut agent, &[open(&h, "s", &h.token), end(b"hello world")]).await;
    let frames = replies(rx).await;
    assert_eq!(frames.first(), Some(&Frame::Accept(Accept { hwm: 11, ended: true })));
    assert!(matches!(frames.last(), Some(Frame::End(_))));
}

#[tokio::test]
async fn a_gap_is_reported_once_with_the_hwm() {
    let h = harness().await;
    let (mut agent, rx) = start(&h);
    send(&mut agent, &[open(&h, "s", &h.token), data(0, b"abc"), data(10, b"x"), data(11, b"y"), data(3, b"d"), end(b"abcd")]).await;
    let frames = replies(rx).await;
    let gaps: Vec<_> = frames.iter().filter_map(|f| if let Frame::Error(e) = f { Some(e.clone()) } else { None }).collect();
    assert_eq!(gaps.len(), 1, "{frames:?}");
    assert_eq!(gaps[0].hwm, Some(3));
    assert!(gaps[0].message.contains("resend from 3"));
    assert!(matches!(frames.last(), Some(Frame::End(_))));
}

#[tokio::test]
async fn bad_input_is_refused_with_a_clear_error() {
    let h = harness().await;
    let other_job = h.core.meta.create_job(NewJob { project: "gh/a/b".into(), ..Default::default() }).await.unwrap();
    let foreign = h.core.keys.sign(&Claims::new(Scope::Job { job: other_job.id.to_string(), project: "gh/a/b".into() }, None));
    let expired = h.core.keys.sign(&Claims::new(Scope::Job { job: h.job.to_string(), project: "gh/a/b".into() }, Some(1)));
    let forged = Keyring::new(KeySet::single([2; 32])).unwrap().sign(&Claims::new(Scope::Admin, None));
    let reader = h.core.keys.sign(&Claims::new(Scope::Project { project: "gh/a/b".into() }, None));
    let revoked_claims = Claims::new(Scope::Job { job: h.job.to_string(), project: "gh/a/b".into() }, None);
    let revoked = h.core.keys.sign(&revoked_claims);
    h.core.keys.revoke(&revoked_claims.id);

    async fn check(h: &Harness, wire: Vec<u8>, expected: ErrorKind, message: &str) {
        let (mut agent, rx) = start(h);
        agent.write_all(&wire).await.unwrap();
        agent.shutdown().await.unwrap();
        let frames = replies(rx).await;
        assert_eq!(error_kinds(&frames), vec![expected], "{frames:?}");
        let Some(Frame::Error(e)) = frames.last() else { panic!("no error in {frames:?}") };
        assert!(e.message.contains(message), "{:?} does not contain {message:?}", e.message);
    }
    let wire = |frames: &[Frame]| frames.iter().flat_map(|f| f.to_bytes().to_vec()).collect::<Vec<u8>>();

    check(&h, wire(&[open(&h, "s", &foreign)]), ErrorKind::Unauthorized, "does not allow writing job").await;
    check(&h, wire(&[open(&h, "s", &expired)]), ErrorKind::Unauthorized, "expired").await;
    check(&h, wire(&[open(&h, "s", &forged)]), ErrorKind::Unauthorized, "signature is invalid").await;
    check(&h, wire(&[open(&h, "s", &revoked)]), ErrorKind::Unauthorized, "revoked").await;
    check(&h, wire(&[open(&h, "s", &reader)]), ErrorKind::Unauthorized, "does not allow writing").await;
    check(&h, wire(&[open(&h, "s", "garbage")]), ErrorKind::Unauthorized, "malformed").await;
    check(&h, wire(&[data(0, b"x")]), ErrorKind::Protocol, "first frame must be OPEN").await;
    check(&h, b"GET / HTTP/1.1\r\n\r\n".to_vec(), ErrorKind::BadFrame, "unknown frame kind").await;
    let mut big = wire(&[open(&h, "big", &h.token)]);
    big.extend_from_slice(&[3, 0, 1, 0, 0]);
    check(&h, big, ErrorKind::TooLarge, "over the limit of 4096").await;
    check(&h, wire(&[open(&h, "sum", &h.token), data(0, b"abc"), end(b"abd")]), ErrorKind::Mismatch, "does not match").await;
    check(&h, wire(&[open(&h, "len", &h.token), data(0, b"abc"), end(b"abcd")]), ErrorKind::Mismatch, "server holds 3 bytes").await;

    // None of that touched a healthy step on the same server.
    let (mut agent, rx) = start(&h);
    send(&mut agent, &[open(&h, "ok", &h.token), data(0, b"fine"), end(b"fine")]).await;
    assert!(matches!(replies(rx).await.last(), Some(Frame::End(_))));
    // The mismatched step is still running: its output is intact and it can end correctly.
    let (mut agent, rx) = start(&h);
    send(&mut agent, &[open(&h, "sum", &h.token), end(b"abc")]).await;
    assert!(matches!(replies(rx).await.last(), Some(Frame::End(_))));
}

#[tokio::test]
async fn contiguous_frames_already_received_are_appended_as_one_batch() {
    let framed = |frames: &[Frame]| {
        let mut b = BytesMut::new();
        for f in frames {
            b.extend_from_slice(&f.to_bytes());
        }
        b
    };
    let at = |offset: u64, ts: u64, bytes: &'static [u8]| Frame::Data(Data { offset, timestamp_us: ts, stream: StreamTag::Stdout, bytes: Bytes::from_static(bytes) });
    let metrics = IngestMetrics::default();
    // Nothing more arrives while coalescing: it must not wait for the agent.
    let (_agent, mut idle) = tokio::io::duplex(1024);
    let mut buf = framed(&[at(3, 5, b"de"), at(5, 6, b"f"), at(9, 7, b"x"), end(b"abcdefghix")]);
    let (batch, next) = coalesce(&mut idle, &mut buf, &Decoder::default(), 0, 1, Bytes::from_static(b"abc"), &metrics).await;
    assert_eq!(&batch[..], b"abcdef");
    assert!(matches!(next, Some(Ok(Some(Frame::Data(Data { offset: 9, .. }))))), "a frame that does not continue the batch is kept for the next turn");
    assert_eq!(metrics.data_frames.load(Relaxed), 2);

    // A frame a second or more after the batch's first starts a new batch (a time-index point).
    let mut buf = framed(&[at(1, 1 + tailrace_storage::live::TIME_INDEX_GAP_US, b"b")]);
    let (batch, next) = coalesce(&mut idle, &mut buf, &Decoder::default(), 0, 1, Bytes::from_static(b"a"), &metrics).await;
    assert_eq!(&batch[..], b"a");
    assert!(matches!(next, Some(Ok(Some(Frame::Data(_))))));

    // A malformed frame after the batch is reported on the next turn, not lost.
    let mut buf = BytesMut::from(&[99u8, 0, 0, 0, 0][..]);
    let (batch, next) = coalesce(&mut idle, &mut buf, &Decoder::default(), 0, 1, Bytes::from_static(b"a"), &metrics).await;
    assert_eq!(&batch[..], b"a");
    assert!(matches!(next, Some(Err(ReadError::Frame(_)))));

    // Frames still arriving on the pipe are read without waiting for more, up to the batch limit.
    let (mut agent, mut pipe) = tokio::io::duplex(4 << 20);
    let chunk: &'static [u8] = Box::leak(vec![b'z'; 100_000].into_boxed_slice());
    for i in 0..25u64 {
        agent.write_all(&at(100_000 * (i + 1), 1, chunk).to_bytes()).await.unwrap();
    }
    let mut buf = BytesMut::new();
    let (batch, next) = coalesce(&mut pipe, &mut buf, &Decoder::new(1 << 20), 0, 1, Bytes::from_static(chunk), &metrics).await;
    assert_eq!(batch.len(), 2_000_000, "twenty frames make a batch under the 2 MiB limit");
    assert!(matches!(next, Some(Ok(Some(Frame::Data(Data { offset: 2_000_000, .. }))))));
}
