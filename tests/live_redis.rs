//! The live tier on Redis Streams (a real `redis-server`): the same conformance suite as the
//! staging files; two nodes racing one step's bytes (a resend storm, in small appends, large ones
//! or both) produce one correct stream, followed live on one of them; a node's readers at the
//! live edge are served the pushed bytes (and a node's readers its own large appends) without
//! reading the stream, and see an overwrite made on another node; many steps' small appends are
//! committed by one script call, each under its own offset rule; large appends are stored as
//! zstd frames and every read path gives back exactly what was sent; a step holding its most
//! unreleased bytes takes more only after a release, woken by the release's notification or,
//! were that lost, by its follower's reconnecting; Redis's persistence settings are checked; and
//! a Redis `kill -9` mid-stream loses nothing acknowledged, with readers following again.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use tailrace_protocol::{JobId, StepId, StreamHasher};
use tailrace_storage::live::conformance;
use tailrace_storage::{AppendOutcome, LiveError, LiveTier, RedisConfig, RedisTier, StepKey};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

fn config(server: &RedisServer) -> RedisConfig {
    RedisConfig { url: server.url(), ttl: Duration::from_secs(3600), wait_replicas: 0, hold_max_bytes: 0, level: 1 }
}

fn key(job: &str, step: &str) -> StepKey {
    StepKey::new(JobId::new(job).unwrap(), StepId::new(step).unwrap())
}

/// Two nodes' tiers on one Redis.
async fn two_nodes(server: &RedisServer) -> (Arc<RedisTier>, Arc<RedisTier>) {
    (RedisTier::connect(config(server)).await.unwrap(), RedisTier::connect(config(server)).await.unwrap())
}

/// The `len` bytes at `from`, in as many reads as it takes.
async fn read_all(tier: &RedisTier, k: &StepKey, from: u64, len: usize) -> Vec<u8> {
    let mut got = Vec::new();
    while got.len() < len {
        got.extend_from_slice(&tier.read(k, from + got.len() as u64, 1 << 20).await.unwrap());
    }
    got
}

#[test]
fn redis_passes_the_live_tier_conformance_suite() {
    let server = RedisServer::start();
    runtime().block_on(async {
        let tier = RedisTier::connect(config(&server)).await.unwrap();
        conformance::run(tier.as_ref(), "conformance").await;
    });
}

/// `--check-config` and the start-up log read Redis's persistence settings: a Redis that could
/// lose acknowledged output is refused with what to change, AOF rewrites from a small file on
/// get a note, and the recommended settings pass silently.
#[test]
fn redis_persistence_settings_are_checked() {
    let server = RedisServer::start();
    runtime().block_on(async {
        let tier = RedisTier::connect(config(&server)).await.unwrap();
        let notes = tier.settings().await.unwrap();
        assert!(notes.len() == 1 && notes[0].contains("auto-aof-rewrite-min-size"), "{notes:?}");
        assert_eq!(server.command("CONFIG SET appendfsync everysec"), "+OK");
        let refused = tier.settings().await.unwrap_err();
        assert!(refused.contains("appendfsync everysec") && refused.contains("live_wait_replicas"), "{refused}");
        // Waiting for replicas is the other way to durability.
        let waiting = RedisTier::connect(RedisConfig { wait_replicas: 1, ..config(&server) }).await.unwrap();
        assert!(waiting.settings().await.is_ok());
        assert_eq!(server.command("CONFIG SET appendfsync always"), "+OK");
        assert_eq!(server.command("CONFIG SET auto-aof-rewrite-min-size 1gb"), "+OK");
        assert_eq!(tier.settings().await.unwrap(), Vec::<String>::new());
    });
}

/// Racers, each sending the whole stream through one node in chunks of its own size and
/// resending from an earlier offset whenever another got ahead (what agents failing over do),
/// while a reader on node b follows live; the stream ends up as sent, once.
async fn race(a: &Arc<RedisTier>, b: &Arc<RedisTier>, k: &StepKey, racers: &[(&Arc<RedisTier>, usize)]) {
    a.open(k).await.unwrap();
    let mut rx = b.subscribe(k).await.unwrap();
    let data: Arc<Vec<u8>> = Arc::new(awkward_bytes(11, 2 << 20));
    let send = |tier: Arc<RedisTier>, chunk: usize, seed: u64| {
        let (data, k) = (data.clone(), k.clone());
        tokio::spawn(async move {
            let mut off = 0usize;
            let mut rng = seed;
            while off < data.len() {
                rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let back = (rng >> 33) as usize % 5000;
                let from = off.saturating_sub(back);
                let end = (from + chunk).min(data.len());
                match tier.append(&k, from as u64, 0, Bytes::copy_from_slice(&data[from..end])).await.unwrap() {
                    AppendOutcome::Written { hwm } | AppendOutcome::Gap { hwm } => off = hwm as usize,
                    AppendOutcome::Ended { .. } => unreachable!("nobody ends it"),
                }
            }
        })
    };
    let len = data.len() as u64;
    // The reader on node b is served the bytes pushed to b, and reads the rest back.
    let follower = {
        let (b, k) = (b.clone(), k.clone());
        tokio::spawn(async move {
            let mut got = Vec::new();
            while (got.len() as u64) < len {
                let durable = rx.borrow_and_update().durable;
                while (got.len() as u64) < durable {
                    got.extend_from_slice(&b.read(&k, got.len() as u64, 1 << 20).await.unwrap());
                }
                if (got.len() as u64) < len {
                    tokio::time::timeout(Duration::from_secs(10), rx.changed()).await.unwrap().unwrap();
                }
            }
            got
        })
    };
    let senders: Vec<_> = racers.iter().zip(1..).map(|((tier, chunk), seed)| send(Arc::clone(tier), *chunk, seed)).collect();
    for s in senders {
        s.await.unwrap();
    }
    let live = follower.await.unwrap();
    assert!(live == *data, "{k}: the live reader on node b read a different stream");
    assert!(read_all(a, k, 0, data.len()).await == *data, "{k}: the stream differs from what was sent");
    let mut h = StreamHasher::new();
    h.update(&data);
    assert_eq!(b.checksum(k).await.unwrap(), (len, h.hex()));
}

/// Small appends go through the append script and large ones (over 64 KiB) through
/// `WATCH`/`MULTI`/`EXEC`: racing each other as well as their own kind, they make one stream.
#[test]
fn two_nodes_racing_one_step_produce_one_stream() {
    let server = RedisServer::start();
    runtime().block_on(async {
        let (a, b) = two_nodes(&server).await;
        race(&a, &b, &key("race", "small"), &[(&a, 7_001), (&b, 12_345)]).await;
        assert_eq!(server.calls("watch"), 0, "small appends watched the step");
        race(&a, &b, &key("race", "large"), &[(&a, 300_001), (&b, 70_001)]).await;
        // 2 MiB in chunks of at most 300,001 bytes: at least 7 appends, each watching.
        assert!(server.calls("watch") >= 7, "large appends did not watch the step");
        race(&a, &b, &key("race", "mixed"), &[(&a, 9_001), (&b, 300_001), (&b, 5_000)]).await;
    });
}

/// Small appends of many steps that queue while a call is out are committed by one call of the
/// append script, each under its own step's offset rule: fresh bytes, a resent prefix, a whole
/// resend, a gap and a continuation side by side in one call.
#[test]
fn small_appends_of_many_steps_are_committed_together_each_under_its_own_offset_rule() {
    let server = RedisServer::start();
    // One thread: every append of a round is queued before the appenders' tasks run, so each
    // round is at most one call per command connection.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let tier = RedisTier::connect(config(&server)).await.unwrap();
        let steps: Vec<(StepKey, Vec<u8>, usize)> =
            (0..200u64).map(|i| (key("batch", &format!("s{i}")), awkward_bytes(i + 1, 2000), 100 + (i as usize * 7) % 900)).collect();
        for (k, _, _) in &steps {
            tier.open(k).await.unwrap();
        }
        let server = &server;
        let round = |appends: Vec<(StepKey, u64, Bytes)>| {
            let tier = tier.clone();
            async move {
                let calls = server.calls("evalsha");
                // The tasks run in the order spawned, each queueing its append, before the
                // appender's task (woken by the first) gets its turn.
                let tasks_len = appends.len();
                let tasks: Vec<_> = appends
                    .into_iter()
                    .map(|(k, off, b)| {
                        let tier = tier.clone();
                        tokio::spawn(async move { tier.append(&k, off, 0, b).await.unwrap() })
                    })
                    .collect();
                let mut outcomes = Vec::new();
                for t in tasks {
                    outcomes.push(t.await.unwrap());
                }
                let took = server.calls("evalsha") - calls;
                assert!(took <= RedisTier::CONNECTIONS as u64, "{} small appends took {took} calls", tasks_len);
                outcomes
            }
        };
        let first = round(steps.iter().map(|(k, d, n)| (k.clone(), 0, Bytes::copy_from_slice(&d[..*n]))).collect()).await;
        for ((_, _, n), got) in steps.iter().zip(first) {
            assert_eq!(got, AppendOutcome::Written { hwm: *n as u64 });
        }
        let second: Vec<(StepKey, u64, Bytes)> = steps
            .iter()
            .enumerate()
            .map(|(i, (k, d, n))| {
                let (from, to) = match i % 4 {
                    0 => (n - 50, n + 100),
                    1 => (n + 10, n + 20),
                    2 => (0, *n),
                    _ => (*n, n + 300),
                };
                (k.clone(), from as u64, Bytes::copy_from_slice(&d[from..to]))
            })
            .collect();
        let outcomes = round(second).await;
        for (i, ((k, d, n), got)) in steps.iter().zip(outcomes).enumerate() {
            let (want, len) = match i % 4 {
                0 => (AppendOutcome::Written { hwm: *n as u64 + 100 }, n + 100),
                1 => (AppendOutcome::Gap { hwm: *n as u64 }, *n),
                2 => (AppendOutcome::Written { hwm: *n as u64 }, *n),
                _ => (AppendOutcome::Written { hwm: *n as u64 + 300 }, n + 300),
            };
            assert_eq!(got, want, "step {i}");
            assert!(read_all(&tier, k, 0, len).await == d[..len], "step {i}'s stream differs from what was sent");
            let mut h = StreamHasher::new();
            h.update(&d[..len]);
            assert_eq!(tier.checksum(k).await.unwrap(), (len as u64, h.hex()), "step {i}");
        }
    });
}

#[test]
fn a_redis_restart_loses_nothing_acknowledged_and_readers_resume() {
    let mut server = RedisServer::start();
    let rt = runtime();
    let tier = rt.block_on(RedisTier::connect(config(&server))).unwrap();
    let k = key("restart", "s");
    let data = awkward_bytes(5, 1 << 20);
    let half = data.len() / 2;
    let mut rx = rt.block_on(async {
        tier.open(&k).await.unwrap();
        let rx = tier.subscribe(&k).await.unwrap();
        tier.append(&k, 0, 0, Bytes::copy_from_slice(&data[..half])).await.unwrap();
        assert_eq!(tier.sync(&k).await.unwrap(), half as u64);
        rx
    });
    server.stop();
    // Down: appends fail with an error (ingest refuses, agents keep their spool); nothing is lost.
    let down = rt.block_on(tier.append(&k, half as u64, 0, Bytes::copy_from_slice(&data[half..])));
    assert!(matches!(down, Err(LiveError::Io { .. })), "{down:?}");
    server.start_again();
    rt.block_on(async {
        // The connection comes back by itself; the resend is applied once.
        let mut outcome = None;
        for _ in 0..100 {
            match tier.append(&k, half as u64, 0, Bytes::copy_from_slice(&data[half..])).await {
                Ok(o) => {
                    outcome = Some(o);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        assert_eq!(outcome, Some(AppendOutcome::Written { hwm: data.len() as u64 }));
        let len = data.len() as u64;
        tokio::time::timeout(Duration::from_secs(20), rx.wait_for(|p| p.durable == len)).await.expect("readers follow again").unwrap();
        assert!(read_all(&tier, &k, 0, data.len()).await == data, "bytes differ after the restart");
    });
    // Restarted again with no append in between: the next large append, whose pooled
    // connection is stale, is made on a new one instead of failing.
    server.stop();
    server.start_again();
    let more = awkward_bytes(6, 200_000);
    let len = (data.len() + more.len()) as u64;
    let outcome = rt.block_on(tier.append(&k, data.len() as u64, 0, Bytes::copy_from_slice(&more)));
    assert_eq!(outcome.unwrap(), AppendOutcome::Written { hwm: len });
    assert!(rt.block_on(read_all(&tier, &k, data.len() as u64, more.len())) == more[..]);
}

#[test]
fn readers_at_the_live_edge_are_served_pushed_bytes_and_see_overwrites_from_other_nodes() {
    let server = RedisServer::start();
    runtime().block_on(async {
        let (a, b) = two_nodes(&server).await;
        let k = key("push", "edge");
        a.open(&k).await.unwrap();
        let mut rx = b.subscribe(&k).await.unwrap();
        // Node a's own reader: served each append's bytes as soon as Redis answered it.
        let _rx_a = a.subscribe(&k).await.unwrap();
        let data = awkward_bytes(3, 200 * 1000);
        // Node a appends lines of 1,000 bytes; node b's reader reads each as it is told of it,
        // node a's at once. The first may be announced before b's follower subscribed (then b
        // reads it back).
        let mut got = Vec::new();
        let mut reads_before = 0;
        for (i, chunk) in data.chunks(1000).enumerate() {
            let at = got.len() as u64;
            a.append(&k, at, 0, Bytes::copy_from_slice(chunk)).await.unwrap();
            assert_eq!(&a.read(&k, at, 1 << 20).await.unwrap()[..], chunk, "node a's reader at {at}");
            let want = at + chunk.len() as u64;
            tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|p| p.durable >= want)).await.unwrap().unwrap();
            got.extend_from_slice(&b.read(&k, at, 1 << 20).await.unwrap());
            if i == 0 {
                reads_before = server.calls("xrange");
            }
        }
        assert!(got == data, "bytes read at the live edge differ");
        assert_eq!(server.calls("xrange"), reads_before, "reads at the live edge read the stream");

        // An append larger than a push is announced by length only: the reader reads it back.
        let big = awkward_bytes(4, 300 * 1024);
        let at = data.len() as u64;
        a.append(&k, at, 0, Bytes::copy_from_slice(&big)).await.unwrap();
        let end = at + big.len() as u64;
        tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|p| p.durable == end)).await.unwrap().unwrap();
        assert!(read_all(&b, &k, at, big.len()).await == big);
        assert!(server.calls("xrange") > reads_before, "a large append is read from the stream");
        // Node a's own reader is served it from what a kept when Redis answered.
        let reads = server.calls("xrange");
        assert!(read_all(&a, &k, at, big.len()).await == big);
        assert_eq!(server.calls("xrange"), reads, "node a read its own large append back from the stream");

        // Reads of an entry's size end on entry boundaries: a sequential reader starting inside
        // an entry reads to its end, then whole entries, each in one round trip without
        // looking back for the entry holding its offset.
        let mib = awkward_bytes(6, 1 << 20)[..1 << 20].to_vec();
        let at = end;
        a.append(&k, at, 0, Bytes::copy_from_slice(&mib)).await.unwrap();
        let end = at + mib.len() as u64;
        tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|p| p.durable == end)).await.unwrap().unwrap();
        let first = b.read(&k, at + 1000, 256 * 1024).await.unwrap();
        assert_eq!(first.len(), 256 * 1024 - 1000, "the first read ends where its entry ends");
        let mut got = first.to_vec();
        let lookbacks = server.calls("xrevrange");
        while (got.len() as u64) < mib.len() as u64 - 1000 {
            let chunk = b.read(&k, at + 1000 + got.len() as u64, 256 * 1024).await.unwrap();
            assert_eq!(chunk.len(), 256 * 1024, "whole entries");
            got.extend_from_slice(&chunk);
        }
        assert!(got == mib[1000..]);
        assert_eq!(server.calls("xrevrange"), lookbacks, "aligned reads looked back");
        // Small reads are filled exactly, across entries.
        assert_eq!(&b.read(&k, at + 256 * 1024 - 10, 20).await.unwrap()[..], &mib[256 * 1024 - 10..256 * 1024 + 10]);

        // Node a overwrites bytes node b was pushed: b's readers get the new bytes once told.
        a.append(&k, end, 0, Bytes::from_static(b"token=abcd\n")).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|p| p.durable == end + 11)).await.unwrap().unwrap();
        assert_eq!(&b.read(&k, end, 100).await.unwrap()[..], b"token=abcd\n");
        a.overwrite(&k, end + 6, Bytes::from_static(b"****")).await.unwrap();
        let mut seen = Vec::new();
        for _ in 0..200 {
            seen = b.read(&k, end, 100).await.unwrap().to_vec();
            if seen == b"token=****\n" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(String::from_utf8_lossy(&seen), "token=****\n", "node b still serves the overwritten bytes");
        // And a's own readers at once.
        assert_eq!(&a.read(&k, end, 100).await.unwrap()[..], b"token=****\n");
    });
}

#[test]
fn the_end_checksum_is_the_appending_nodes_hash_until_another_node_appends() {
    let server = RedisServer::start();
    runtime().block_on(async {
        let (a, b) = two_nodes(&server).await;
        let k = key("hash", "s");
        a.open(&k).await.unwrap();
        let data = awkward_bytes(8, 600 * 1000);
        // Node a appends everything, resending a little of each chunk (trimmed by the script);
        // one chunk is stored masked: the hash is of what was received.
        let mut at = 0usize;
        for (i, size) in [1000usize, 70_000, 300 * 1024, 5, 200_000].into_iter().cycle().enumerate() {
            if at >= data.len() {
                break;
            }
            let from = at.saturating_sub(17);
            let end = (at + size).min(data.len());
            let sent = Bytes::copy_from_slice(&data[from..end]);
            let stored = (i == 2).then(|| Bytes::from(vec![b'*'; sent.len()]));
            a.append_stored(&k, from as u64, 0, sent, stored).await.unwrap();
            at = end;
        }
        let mut h = StreamHasher::new();
        h.update(&data);
        let reads = server.calls("xrange") + server.calls("evalsha");
        assert_eq!(a.checksum(&k).await.unwrap(), (data.len() as u64, h.hex()));
        assert_eq!(server.calls("xrange") + server.calls("evalsha"), reads, "the checksum read the step back");

        // Node b appends the next bytes: a's hash no longer covers the step, so a reads it back
        // (and the masked chunk makes it checkable by length only).
        let more = b"tail from node b\n";
        b.append(&k, data.len() as u64, 0, Bytes::from_static(more)).await.unwrap();
        let len = (data.len() + more.len()) as u64;
        match a.checksum(&k).await {
            Err(LiveError::Unverifiable { len: l, .. }) => assert_eq!(l, len),
            other => panic!("expected a length-only check, got {other:?}"),
        }
        // An unmasked step appended by two nodes is read back and hashed.
        let j = key("hash", "t");
        a.open(&j).await.unwrap();
        a.append(&j, 0, 0, Bytes::copy_from_slice(&data[..1000])).await.unwrap();
        b.append(&j, 1000, 0, Bytes::copy_from_slice(&data[1000..])).await.unwrap();
        assert_eq!(a.checksum(&j).await.unwrap(), (data.len() as u64, h.hex()));
    });
}

/// Until an archiver releases them: the value of the tier's gauge of appends that waited.
async fn full_waits(tier: &RedisTier) -> f64 {
    tier.gauges().await.unwrap().iter().find(|g| g.0 == "tailrace_live_redis_full_waits_total").expect("the gauge").2
}

/// A running step holds at most `hold_max_bytes` (plus one append) above its released prefix:
/// past it, small and large appends alike wait until the archiver releases a prefix, then go
/// in; what is acknowledged is exactly what was sent.
#[test]
fn a_step_holding_its_most_unreleased_bytes_takes_more_only_after_a_release() {
    let server = RedisServer::start();
    runtime().block_on(async {
        let tier = RedisTier::connect(RedisConfig { hold_max_bytes: 1 << 20, ..config(&server) }).await.unwrap();
        // Another node: the archiver releasing through it wakes this node's waiting append.
        let other = RedisTier::connect(config(&server)).await.unwrap();
        let k = key("hold", "s");
        tier.open(&k).await.unwrap();
        let data = Arc::new(awkward_bytes(3, 4 << 20));
        let append = |from: usize, to: usize| {
            let (tier, k, data) = (tier.clone(), k.clone(), data.clone());
            tokio::spawn(async move { tier.append(&k, from as u64, 0, Bytes::copy_from_slice(&data[from..to])).await.unwrap() })
        };
        let mib = 1 << 20;
        assert_eq!(append(0, mib).await.unwrap(), AppendOutcome::Written { hwm: mib as u64 });
        // Small (the script) and then large (WATCH/MULTI/EXEC) appends past the limit.
        for (round, (from, to, release)) in [(mib, mib + 4096, 4096), (mib + 4096, 2 * mib + 100_000, mib)].into_iter().enumerate() {
            let waiting = append(from, to);
            let waited = async {
                while full_waits(&tier).await < (round + 1) as f64 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            };
            tokio::time::timeout(Duration::from_secs(30), waited).await.expect("the append never found the step full");
            assert!(!waiting.is_finished(), "round {round}: the append went past the limit");
            // The archiver releases what it archived, on this node or another: the append goes in.
            let archiver = if round == 0 { &tier } else { &other };
            archiver.release_prefix(&k, release as u64).await.unwrap();
            let woken = tokio::time::timeout(Duration::from_secs(30), waiting).await.expect("the release did not wake the waiting append");
            assert_eq!(woken.unwrap(), AppendOutcome::Written { hwm: to as u64 }, "round {round}");
        }
        // A resend of held bytes is answered at once, full or not.
        assert_eq!(append(mib, 2 * mib).await.unwrap(), AppendOutcome::Written { hwm: 2 * mib as u64 + 100_000 });
        let end = 2 * mib + 100_000;
        assert!(read_all(&tier, &k, mib as u64 + 4096, end - mib - 4096).await == data[mib + 4096..end], "the held bytes differ from what was sent");
    });
}

/// `redis-cli` against the test's server: its answer.
fn cli(server: &RedisServer, args: &[&str]) -> String {
    let out = std::process::Command::new("redis-cli").args(["-p", &server.port.to_string()]).args(args).output().unwrap();
    assert!(out.status.success(), "redis-cli {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The script calls (`EVALSHA`) Redis has run, from `INFO commandstats`.
fn script_calls(server: &RedisServer) -> u64 {
    let info = cli(server, &["INFO", "commandstats"]);
    let line = info.lines().find(|l| l.starts_with("cmdstat_evalsha:")).unwrap_or("");
    line.split(['=', ',']).nth(1).and_then(|n| n.parse().ok()).unwrap_or(0)
}

/// A release whose notification never arrives (here: made without one, as if published while
/// the follower was disconnected) still wakes a waiting append once the follower reconnects:
/// it wakes every followed step's waiting appends when it subscribes again.
#[test]
fn an_append_waiting_for_room_is_woken_when_its_follower_reconnects() {
    let server = RedisServer::start();
    runtime().block_on(async {
        let tier = RedisTier::connect(RedisConfig { hold_max_bytes: 1 << 20, ..config(&server) }).await.unwrap();
        let k = key("lost", "s");
        tier.open(&k).await.unwrap();
        let mib = 1 << 20;
        let mut data = awkward_bytes(5, mib + 4096);
        data.truncate(mib + 4096);
        assert_eq!(tier.append(&k, 0, 0, Bytes::copy_from_slice(&data[..mib])).await.unwrap(), AppendOutcome::Written { hwm: mib as u64 });
        // The waiting append is small: it goes through the append script.
        let before = script_calls(&server);
        let waiting = {
            let (tier, k, tail) = (tier.clone(), k.clone(), Bytes::copy_from_slice(&data[mib..]));
            tokio::spawn(async move { tier.append(&k, mib as u64, 0, tail).await.unwrap() })
        };
        // Found full, followed the step, found full again: now it waits for a wake-up.
        let parked = async {
            while script_calls(&server) < before + 2 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(30), parked).await.expect("the append never tried twice");
        assert!(!waiting.is_finished(), "the append went past the limit");
        // The archiver's release, without its notification; then the follower's connection drops.
        cli(&server, &["HSET", "tr:{lost/s}:m", "rel", "65536"]);
        cli(&server, &["CLIENT", "KILL", "TYPE", "pubsub"]);
        let woken = tokio::time::timeout(Duration::from_secs(30), waiting).await.expect("the reconnected follower did not wake the waiting append");
        assert_eq!(woken.unwrap(), AppendOutcome::Written { hwm: (mib + 4096) as u64 });
        assert!(read_all(&tier, &k, mib as u64, 4096).await == data[mib..], "the appended bytes differ from what was sent");
    });
}

/// The fields (`d`: as sent, `z`: a zstd frame) of a step's stream entries, in order.
fn entry_fields(server: &RedisServer, stream: &str) -> Vec<String> {
    let out = cli(server, &["--no-raw", "XRANGE", stream, "-", "+"]);
    out.lines().filter_map(|l| l.split_once(") \"")).map(|(_, f)| f.trim_end_matches('"').to_string()).filter(|f| f == "d" || f == "z").collect()
}

/// A large append is stored as zstd frames (an entry that would not shrink as it is), and every
/// read gives back exactly the bytes sent: from inside an entry, through the script for a
/// masked step, and after an overwrite across frames, which go into the overlay first. The
/// archiver's reads return whole entries with their frames, a cut one without.
#[test]
fn large_appends_are_stored_as_frames_and_read_back_exactly() {
    let server = RedisServer::start();
    runtime().block_on(async {
        let tier = RedisTier::connect(config(&server)).await.unwrap();
        let k = key("frames", "s");
        tier.open(&k).await.unwrap();
        let text = awkward_bytes(61, 600 << 10);
        let text = &text[..600 << 10];
        // Bytes that do not compress: stored as they are.
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let noise: Vec<u8> = (0..300 << 10)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect();
        let mut want = text.to_vec();
        want.extend_from_slice(&noise);
        assert_eq!(tier.append(&k, 0, 0, Bytes::copy_from_slice(text)).await.unwrap(), AppendOutcome::Written { hwm: 600 << 10 });
        assert_eq!(tier.append(&k, 600 << 10, 0, Bytes::from(noise)).await.unwrap(), AppendOutcome::Written { hwm: want.len() as u64 });
        assert_eq!(entry_fields(&server, "tr:{frames/s}:s"), ["z", "z", "z", "d", "d"]);
        assert!(read_all(&tier, &k, 0, want.len()).await == want, "whole reads differ");
        for (at, len) in [(1u64, 10usize), (100_000, 300_000), ((256 << 10) - 1, 2), (599 << 10, 100 << 10)] {
            // A read may end short, on an entry's boundary.
            let got = tier.read(&k, at, len).await.unwrap();
            assert!(!got.is_empty() && got.len() <= len && got[..] == want[at as usize..at as usize + got.len()], "a read of {len} at {at} differs");
        }
        let pieces = tier.read_stored(&k, 0, 4 << 20).await.unwrap();
        let framed: Vec<bool> = pieces.iter().map(|p| p.frame.is_some()).collect();
        assert_eq!(framed, [true, true, true, false, false]);
        assert!(pieces.iter().flat_map(|p| p.raw.iter().copied()).eq(want.iter().copied()));
        let cut = tier.read_stored(&k, 1000, 4 << 20).await.unwrap();
        assert!(cut[0].frame.is_none() && cut[1].frame.is_some(), "a piece cut from an entry keeps no frame");

        // An overwrite across the first two frames; reads then go through the script.
        let patch = vec![b'*'; 20_000];
        tier.overwrite(&k, 250_000, Bytes::from(patch.clone())).await.unwrap();
        want[250_000..270_000].copy_from_slice(&patch);
        assert!(read_all(&tier, &k, 0, want.len()).await == want, "reads after the overwrite differ");
        let got = tier.read(&k, 560_000, 100_000).await.unwrap();
        assert!(!got.is_empty() && got[..] == want[560_000..560_000 + got.len()], "a read inside an untouched frame of a marked step");
        assert_eq!(cli(&server, &["HLEN", "tr:{frames/s}:o"]).trim(), "2", "only the frames the overwrite touched went into the overlay");

        // A masked large append: the stored bytes are the masked ones, read back through the script.
        let m = key("frames", "masked");
        tier.open(&m).await.unwrap();
        let sent = Bytes::copy_from_slice(&text[..300 << 10]);
        let mut stored = sent.to_vec();
        stored[1000..1010].copy_from_slice(b"**********");
        assert!(matches!(tier.append_stored(&m, 0, 0, sent, Some(Bytes::from(stored.clone()))).await.unwrap(), AppendOutcome::Written { .. }));
        assert_eq!(entry_fields(&server, "tr:{frames/masked}:s"), ["z", "z"]);
        assert!(read_all(&tier, &m, 0, stored.len()).await == stored, "masked bytes read back differ");
        assert!(tier.read(&m, 270_000, 5).await.unwrap()[..] == stored[270_000..270_005], "a read inside a frame of a masked step");
    });
}
