//! Tailrace as a cluster on real Redis (live tier) and SecantusDB (MongoDB protocol, metadata):
//! two ingest nodes and one query+archiver node, sharing an object-store folder and signing
//! keys. An agent behind a load balancer survives `kill -9` of its ingest node; two clients
//! racing one step's bytes through both ingest nodes make one stream; a tailer on the query node
//! sees every byte once; Redis restarted mid-step loses nothing; a running step that holds
//! `live_hold_max_mib` in Redis waits, losing nothing, until an archiver takes some.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use common::*;
use tailrace_agent::client::Server as ServerUrl;
use tailrace_agent::transport::{Connector, TransportChoice};
use tailrace_protocol::{Data, Decoder, End, EndReason, Frame, JobId, Open, StepId, StreamHasher, StreamTag};
use tokio::io::AsyncReadExt;

struct Cluster {
    redis: RedisServer,
    mongo: MongoServer,
    shared: tempfile::TempDir,
    /// Ingest nodes first, then the query (+archiver) node.
    nodes: Vec<Server>,
}

impl Cluster {
    fn start(ingest_nodes: usize) -> Self {
        Self::start_with(ingest_nodes, "query,archiver", "")
    }

    /// A cluster whose last node runs `query_roles`, all with `config` added to the shared
    /// configuration file.
    fn start_with(ingest_nodes: usize, query_roles: &str, config: &str) -> Self {
        let redis = RedisServer::start();
        let mongo = MongoServer::start();
        let shared = tempfile::tempdir().unwrap();
        let objects = shared.path().join("objects").display().to_string();
        std::fs::write(shared.path().join("tailrace.toml"), format!("archive_dir = {objects:?}\narchive_sweep_secs = 1\n{config}")).unwrap();
        let mut c = Cluster { redis, mongo, shared, nodes: Vec::new() };
        // The query node first: it creates the shared signing keys.
        let query = c.node(query_roles);
        c.nodes = (0..ingest_nodes).map(|_| c.node("ingest")).collect();
        c.nodes.push(query);
        c
    }

    /// Starts a node of this cluster with `roles` (not added to `nodes`).
    fn node(&self, roles: &str) -> Server {
        let shared = self.shared.path();
        let env = [
            ("TAILRACE_LIVE_URL", self.redis.url()),
            ("TAILRACE_META_URL", self.mongo.uri("cluster")),
            ("TAILRACE_ROLES", roles.to_string()),
            ("TAILRACE_SIGNING_KEYS_FILE", shared.join("signing-keys.json").display().to_string()),
            ("TAILRACE_CONFIG", shared.join("tailrace.toml").display().to_string()),
        ];
        Server::start_with(env.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
    }

    fn query(&self) -> &Server {
        self.nodes.last().unwrap()
    }

    fn http(&self, i: usize) -> SocketAddr {
        format!("127.0.0.1:{}", self.nodes[i].http).parse().unwrap()
    }
}

/// What a `tailrace tail` printed, once it exits (after the step's end).
fn read_all(child: std::process::Child) -> Vec<u8> {
    let out = wait_output(child, 120);
    assert!(out.status.success(), "tail failed: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

#[test]
fn an_agent_fails_over_when_its_ingest_node_is_killed() {
    let mut c = Cluster::start(2);
    assert!(c.query().log().contains("[Query, Archiver]"), "{}", c.query().log());
    let r = http_get(&c.nodes[0].url(), "/api/v1/jobs/x", None, None).unwrap();
    assert_eq!(r.status, 404, "ingest nodes serve no API");
    assert!(String::from_utf8_lossy(&r.body).contains("send API requests to a query node"));
    let (job, token) = c.query().create_job();
    let balancer = TcpBalancer::start(vec![c.http(0), c.http(1)]);
    let first = awkward_bytes(21, 3 << 20);
    let second = awkward_bytes(22, 2 << 20);
    let gated = GatedStep::new(&[&first, &second]);
    let cmd = gated.cmd();
    let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
    let agent = Watched::spawn(agent(&balancer.url(), &token, &job, "build", &["--transport", "http2", "--quiet"], &cmd));
    wait_until("step opened", 60, || c.query().step(&job, "build").is_some());
    let tail = tail_from(c.query(), &job, "build", 0);
    // The first part is held by Redis (read through the query node), then node A dies.
    wait_until("first part durable", 60, || c.query().step_len(&job, "build") >= first.len() as u64);
    assert!(metric(&c.nodes[0], "tailrace_ingest_bytes_total") >= first.len() as u64, "the balancer sent the agent to node A");
    assert_eq!(metric(&c.nodes[1], "tailrace_ingest_bytes_total"), 0);
    c.nodes[0].kill9();
    gated.open(1);
    let out = agent.finish(180);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(metric(&c.nodes[1], "tailrace_ingest_bytes_total") >= second.len() as u64, "node B took the rest");
    let mut want = first.clone();
    want.extend_from_slice(&second);
    let step = c.query().step(&job, "build").unwrap();
    assert_eq!(step["status"], "success");
    assert_eq!(step["length"], want.len() as u64);
    assert!(c.query().output(&job, "build", None).body == want, "output differs");
    assert!(read_all(tail) == want, "the tailer on the query node saw every byte once");
    // The archiver node archives it and releases Redis; reads then come from the archive.
    wait_until("archived", 60, || archived(c.query(), &job, "build"));
    assert!(c.query().output(&job, "build", None).body == want, "archived output differs");
    let keys: u64 = redis_keys(&c.redis);
    assert_eq!(keys, 0, "Redis holds nothing of an archived step");
}

fn redis_keys(r: &RedisServer) -> u64 {
    let out = std::process::Command::new("redis-cli").args(["-p", &r.port.to_string(), "--raw", "EVAL", "return #redis.call('KEYS', 'tr:{*')", "0"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// Sends `data` as step `step` through ingest node `url` over HTTP/2, every frame resending
/// up to 5000 bytes before where the last one ended — one side of a resend storm — then END.
async fn storm(url: String, job: String, step: String, token: String, data: std::sync::Arc<Vec<u8>>, chunk: usize, seed: u64) -> Frame {
    let mut connector = Connector::new(ServerUrl::parse(&url).unwrap(), TransportChoice::Http2, None);
    let mut s = connector.open().await.unwrap();
    let open = Open { job: JobId::new(job).unwrap(), step: StepId::new(step).unwrap(), name: "storm".into(), token };
    s.tx.send(&mut [Frame::Open(open).to_bytes()]).await.unwrap();
    let (frames_tx, mut frames) = tokio::sync::mpsc::unbounded_channel();
    let mut rx = s.rx;
    tokio::spawn(async move {
        let (decoder, mut buf) = (Decoder::default(), BytesMut::new());
        loop {
            while let Ok(Some(f)) = decoder.decode(&mut buf) {
                let _ = frames_tx.send(f);
            }
            if rx.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                return;
            }
        }
    });
    let Some(Frame::Accept(accept)) = frames.recv().await else { panic!("no ACCEPT") };
    let (mut off, mut rng) = (accept.hwm as usize, seed);
    while off < data.len() {
        rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let from = off.saturating_sub((rng >> 33) as usize % 5000);
        let end = (from + chunk).min(data.len());
        let frame = Frame::Data(Data { offset: from as u64, timestamp_us: 0, stream: StreamTag::Stdout, bytes: Bytes::copy_from_slice(&data[from..end]) });
        s.tx.send(&mut [frame.to_bytes()]).await.unwrap();
        off = end;
    }
    let mut h = StreamHasher::new();
    h.update(&data);
    let end = End { exit_code: Some(0), reason: EndReason::Exited, duration_ms: 1, length: data.len() as u64, checksum: h.hex() };
    s.tx.send(&mut [Frame::End(end).to_bytes()]).await.unwrap();
    loop {
        match frames.recv().await {
            Some(Frame::Ack { .. }) => continue,
            Some(f) => return f,
            None => panic!("stream closed before END was answered"),
        }
    }
}

#[test]
fn two_clients_racing_one_step_through_two_ingest_nodes_make_one_stream() {
    let c = Cluster::start(2);
    let (job, token) = c.query().create_job();
    let data = std::sync::Arc::new(awkward_bytes(31, 4 << 20));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let a = rt.spawn(storm(c.nodes[0].url(), job.clone(), "storm".into(), token.clone(), data.clone(), 64 * 1024 + 7, 1));
    let b = rt.spawn(storm(c.nodes[1].url(), job.clone(), "storm".into(), token.clone(), data.clone(), 100_003, 2));
    // A tail from byte 0 on the query node, once the step exists.
    wait_until("step opened", 30, || c.query().step(&job, "storm").is_some());
    let tail = tail_from(c.query(), &job, "storm", 0);
    let (a, b) = rt.block_on(async { (a.await.unwrap(), b.await.unwrap()) });
    assert!(matches!(a, Frame::End(_)) && matches!(b, Frame::End(_)), "both ENDs verified: {a:?} {b:?}");
    assert_eq!(c.query().step(&job, "storm").unwrap()["status"], "success");
    assert!(c.query().output(&job, "storm", None).body == *data, "output differs");
    assert!(read_all(tail) == *data, "the tailer saw every byte once");
}

#[test]
fn redis_restarted_mid_step_loses_nothing() {
    let mut c = Cluster::start(1);
    let (job, token) = c.query().create_job();
    let first = awkward_bytes(41, 1 << 20);
    let second = awkward_bytes(42, 1 << 20);
    let gated = GatedStep::new(&[&first, &second]);
    let agent = Watched::spawn(gated.agent(&c.nodes[0], &token, &job, "s"));
    wait_until("step opened", 60, || c.query().step(&job, "s").is_some());
    let tail = tail_from(c.query(), &job, "s", 0);
    wait_until("first part durable", 60, || c.query().step_len(&job, "s") >= first.len() as u64);
    c.redis.stop();
    // Degraded, and said so: /readyz names the live tier on every node.
    for node in &c.nodes {
        let r = http_get(&node.url(), "/readyz", None, None).unwrap();
        assert_eq!(r.status, 503);
        assert!(String::from_utf8_lossy(&r.body).contains("live tier unavailable"), "{}", String::from_utf8_lossy(&r.body));
    }
    gated.open(1);
    agent.wait_for("output stream interrupted", 60);
    c.redis.start_again();
    let out = agent.finish(180);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut want = first.clone();
    want.extend_from_slice(&second);
    assert!(c.query().output(&job, "s", None).body == want, "output differs after the Redis restart");
    assert!(read_all(tail) == want, "the tailer resumed and saw every byte once");
    wait_until("ready again", 30, || http_get(&c.nodes[0].url(), "/readyz", None, None).is_ok_and(|r| r.status == 200));
}

/// With no archiver running, a fast step fills its `live_hold_max_mib` in Redis and its output
/// waits there (unacknowledged, in the agent's spool) instead of growing Redis; an archiver
/// node started later takes it segment by segment, and the step ends byte-exact.
#[test]
fn a_step_waits_for_the_archiver_when_redis_holds_its_most() {
    let c = Cluster::start_with(1, "query", "archive_live_mib = 1\nlive_hold_max_mib = 2\n");
    let (job, token) = c.query().create_job();
    let data = awkward_bytes(51, 8 << 20);
    let gated = GatedStep::new(&[&data]);
    let agent = Watched::spawn(gated.agent(&c.nodes[0], &token, &job, "s"));
    wait_until("an append waited", 60, || metric(&c.nodes[0], "tailrace_live_redis_full_waits_total") >= 1);
    // At most the limit plus one append (2 MiB) is held, and nothing was released.
    let held = c.query().step_len(&job, "s");
    assert!((2 << 20..=4 << 20).contains(&held), "Redis holds {held} bytes of the step");
    let archiver = c.node("archiver");
    let out = agent.finish(180);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(c.query().output(&job, "s", None).body == data, "output differs");
    wait_until("archived", 60, || archived(c.query(), &job, "s"));
    assert!(c.query().output(&job, "s", None).body == data, "archived output differs");
    // The appends that waited went in large, as zstd frames the archiver wrote as they were.
    assert!(metric(&archiver, "tailrace_archive_frames_reused_total") >= 1, "no stored frame was reused");
    assert_eq!(redis_keys(&c.redis), 0, "Redis holds nothing of an archived step");
}
