//! Fan-out peers: the same stream (corpus slices, same sizes, same rate) published to NATS or
//! Redis pub/sub and received by N subscribers, measured like Tailrace's tailers — latency from
//! publishing a message to each subscriber receiving it, delivered MB/s, and a byte-exact check
//! of what every subscriber got. Minimal clients of each text protocol, so the peers are
//! measured without a client library's own costs.
//!
//! Neither peer does what Tailrace does for a tailer: no durability, no history (a subscriber
//! sees only what is published after it subscribed), and slow subscribers are dropped rather
//! than served at their own pace. The comparison is of the fan-out work alone.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use hdrhistogram::Histogram;
use tailrace_protocol::StreamHasher;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::procstat;
use crate::report::{Latency, Report, ServerCost, Verification};
use crate::tailer::{Timeline, histogram};

/// Which pub/sub server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Peer {
    Nats,
    Redis,
}

/// What to publish and to how many subscribers.
#[derive(Debug, Clone)]
pub struct FanoutSpec {
    pub peer: Peer,
    /// `host:port` of the server.
    pub addr: String,
    pub subscribers: u32,
    pub bytes: u64,
    /// Bytes per second; 0 = as fast as possible.
    pub rate: u64,
    pub write_bytes: u64,
    pub seed: u64,
    /// Server process ids for CPU and memory.
    pub pids: Vec<u32>,
}

const SUBJECT: &str = "tailrace.load";

/// Publishes and receives; the report has one "step" (the published stream) and one tailer per
/// subscriber.
pub async fn run(spec: FanoutSpec) -> Result<Report, String> {
    let corpus = Bytes::from(crate::corpus::generate(
        spec.seed,
        spec.bytes.clamp(1 << 20, 64 << 20) as usize,
    ));
    let timeline = Arc::new(Timeline::default());
    let delivered = Arc::new(AtomicU64::new(0));
    let mut subs = Vec::new();
    for _ in 0..spec.subscribers {
        let (stream, rest) = subscribe(&spec).await?;
        let (tl, d, total, peer) = (timeline.clone(), delivered.clone(), spec.bytes, spec.peer);
        subs.push(tokio::spawn(async move {
            receive(peer, stream, rest, total, &tl, &d).await
        }));
    }
    let cpu_before: f64 = spec
        .pids
        .iter()
        .filter_map(|&p| procstat::cpu_seconds(p))
        .sum();
    let rss_before: u64 = spec
        .pids
        .iter()
        .filter_map(|&p| procstat::status_kib(p, "VmRSS"))
        .sum();
    let gen_before = procstat::self_cpu_seconds();
    let started = Instant::now();
    let (sent, writes, publisher) = publish(&spec, &corpus, &timeline).await?;
    let publish_secs = started.elapsed().as_secs_f64();
    let mut failures = Vec::new();
    let mut exact = 0;
    let mut latency = histogram();
    for s in subs {
        match tokio::time::timeout(Duration::from_secs(120), s).await {
            Ok(Ok(Ok((len, sum, h)))) => {
                if (len, &sum) == (sent.len(), &sent.hex()) {
                    exact += 1;
                } else {
                    failures.push(format!("a subscriber got {len} bytes (xxh3 {sum}); {} were published (xxh3 {})", sent.len(), sent.hex()));
                }
                latency.add(&h).map_err(|e| e.to_string())?;
            }
            Ok(Ok(Err(e))) => failures.push(e),
            Ok(Err(e)) => failures.push(e.to_string()),
            Err(_) => failures.push("a subscriber did not receive everything within 120 s (dropped as a slow consumer?)".into()),
        }
    }
    let all_secs = started.elapsed().as_secs_f64();
    publisher.1.abort();
    drop(publisher);
    let cpu: f64 = spec
        .pids
        .iter()
        .filter_map(|&p| procstat::cpu_seconds(p))
        .sum::<f64>()
        - cpu_before;
    let peak: u64 = spec
        .pids
        .iter()
        .filter_map(|&p| procstat::status_kib(p, "VmHWM"))
        .sum();
    let tail_bytes = delivered.load(Relaxed);
    Ok(Report {
        scenario: format!("fanout via {:?}", spec.peer),
        purpose: format!(
            "{} subscribers of one stream published at {} B/s",
            spec.subscribers, spec.rate
        ),
        transport: format!("{:?}", spec.peer).to_lowercase(),
        steps: 1,
        tailers: u64::from(spec.subscribers),
        bytes: sent.len(),
        writes,
        ingest_seconds: publish_secs,
        ingest_mb_per_s: sent.len() as f64 / 1e6 / publish_secs,
        writes_per_s: writes as f64 / publish_secs,
        tail_bytes,
        tail_seconds: all_secs,
        tail_mb_per_s: tail_bytes as f64 / 1e6 / all_secs,
        latency: Latency::from(&latency),
        archive_wait_seconds: None,
        server: (!spec.pids.is_empty()).then(|| {
            let (cpu_seconds_per_gb, cpu_seconds_per_tailed_gb) =
                ServerCost::per_gb(cpu, sent.len(), tail_bytes);
            ServerCost {
                cpu_seconds_total: cpu,
                cpu_seconds_per_gb,
                cpu_seconds_per_tailed_gb,
                rss_before_mib: rss_before as f64 / 1024.0,
                peak_rss_mib: peak as f64 / 1024.0,
                rss_per_open_step_kib: None,
            }
        }),
        generator_cpu_seconds: procstat::self_cpu_seconds() - gen_before,
        verification: Verification {
            steps_verified: 1,
            tailers_byte_exact: exact,
            tail_reconnects: 0,
            archive_byte_exact: 0,
            archive_checked: false,
            failures,
        },
    })
}

async fn connect(addr: &str) -> Result<TcpStream, String> {
    let s = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("could not connect to {addr}: {e}"))?;
    let _ = s.set_nodelay(true);
    Ok(s)
}

/// Connects a subscriber and waits until the server confirms the subscription; returns the
/// stream and any bytes read past the confirmation.
async fn subscribe(spec: &FanoutSpec) -> Result<(TcpStream, BytesMut), String> {
    let mut s = connect(&spec.addr).await?;
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let (cmd, confirm): (String, &[u8]) = match spec.peer {
        // PONG comes after the SUB is processed.
        Peer::Nats => (
            format!(
                "CONNECT {{\"verbose\":false,\"pedantic\":false}}\r\nSUB {SUBJECT} 1\r\nPING\r\n"
            ),
            b"PONG\r\n",
        ),
        Peer::Redis => (
            format!(
                "*2\r\n$9\r\nSUBSCRIBE\r\n${}\r\n{SUBJECT}\r\n",
                SUBJECT.len()
            ),
            b":1\r\n",
        ),
    };
    s.write_all(cmd.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    loop {
        if let Some(i) = find(&buf, confirm) {
            buf.advance(i + confirm.len());
            return Ok((s, buf));
        }
        if s.read_buf(&mut buf).await.map_err(|e| e.to_string())? == 0 {
            return Err(format!(
                "{:?} closed the connection before confirming the subscription",
                spec.peer
            ));
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The publisher's connection, kept open (and its replies drained) until the subscribers are done.
type Publisher = (tokio::net::tcp::OwnedWriteHalf, tokio::task::JoinHandle<()>);

/// Publishes `spec.bytes` of the corpus in `write_bytes` messages at `rate`.
async fn publish(
    spec: &FanoutSpec,
    corpus: &Bytes,
    timeline: &Timeline,
) -> Result<(StreamHasher, u64, Publisher), String> {
    let mut s = connect(&spec.addr).await?;
    if spec.peer == Peer::Nats {
        s.write_all(b"CONNECT {\"verbose\":false,\"pedantic\":false}\r\n")
            .await
            .map_err(|e| e.to_string())?;
    }
    let (mut rd, mut wr) = s.into_split();
    // Drain replies (Redis answers every PUBLISH with a count; NATS sends INFO and PINGs).
    let drain = tokio::spawn(async move {
        let mut b = vec![0u8; 64 * 1024];
        while matches!(rd.read(&mut b).await, Ok(n) if n > 0) {}
    });
    let mut hasher = StreamHasher::new();
    let (mut at, mut written, mut writes) = (0usize, 0u64, 0u64);
    let started = Instant::now();
    let mut frame = Vec::with_capacity(spec.write_bytes as usize + 128);
    while written < spec.bytes {
        let n = (spec.write_bytes.min(spec.bytes - written) as usize).min(corpus.len() - at);
        if spec.rate > 0 {
            tokio::time::sleep_until(
                (started + Duration::from_secs_f64(written as f64 / spec.rate as f64)).into(),
            )
            .await;
        }
        let payload = &corpus[at..at + n];
        frame.clear();
        match spec.peer {
            Peer::Nats => frame.extend_from_slice(format!("PUB {SUBJECT} {n}\r\n").as_bytes()),
            Peer::Redis => frame.extend_from_slice(
                format!(
                    "*3\r\n$7\r\nPUBLISH\r\n${}\r\n{SUBJECT}\r\n${n}\r\n",
                    SUBJECT.len()
                )
                .as_bytes(),
            ),
        }
        frame.extend_from_slice(payload);
        frame.extend_from_slice(b"\r\n");
        timeline.push(written + n as u64, Instant::now());
        wr.write_all(&frame)
            .await
            .map_err(|e| format!("publish failed: {e}"))?;
        hasher.update(payload);
        written += n as u64;
        writes += 1;
        at = (at + n) % corpus.len();
    }
    wr.flush().await.map_err(|e| e.to_string())?;
    Ok((hasher, writes, (wr, drain)))
}

/// Reads messages until `total` payload bytes arrived; returns length, xxh3 and latencies.
async fn receive(
    peer: Peer,
    mut s: TcpStream,
    mut buf: BytesMut,
    total: u64,
    timeline: &Timeline,
    delivered: &AtomicU64,
) -> Result<(u64, String, Histogram<u64>), String> {
    let mut hasher = StreamHasher::new();
    let mut latency = histogram();
    let mut next = 0usize;
    while hasher.len() < total {
        match parse(peer, &mut buf)? {
            Some(Msg::Payload(p)) => {
                hasher.update(&p);
                delivered.fetch_add(p.len() as u64, Relaxed);
                timeline.record_until(&mut next, hasher.len(), Instant::now(), &mut latency);
            }
            Some(Msg::Ping) => s.write_all(b"PONG\r\n").await.map_err(|e| e.to_string())?,
            Some(Msg::Other) => {}
            None => {
                if s.read_buf(&mut buf).await.map_err(|e| e.to_string())? == 0 {
                    return Err(format!(
                        "{peer:?} closed a subscriber after {} of {total} bytes (slow consumer?)",
                        hasher.len()
                    ));
                }
            }
        }
    }
    Ok((hasher.len(), hasher.hex(), latency))
}

enum Msg {
    Payload(Bytes),
    Ping,
    Other,
}

/// One complete message from the front of `buf`, or `None` when more bytes are needed.
fn parse(peer: Peer, buf: &mut BytesMut) -> Result<Option<Msg>, String> {
    let Some(eol) = find(buf, b"\r\n") else {
        return Ok(None);
    };
    let line = std::str::from_utf8(&buf[..eol])
        .map_err(|_| "non-text protocol line")?
        .to_string();
    match peer {
        Peer::Nats => {
            if let Some(rest) = line.strip_prefix("MSG ") {
                let n: usize = rest
                    .rsplit(' ')
                    .next()
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| format!("bad MSG line {line:?}"))?;
                if buf.len() < eol + 2 + n + 2 {
                    return Ok(None);
                }
                buf.advance(eol + 2);
                let p = buf.split_to(n).freeze();
                buf.advance(2);
                return Ok(Some(Msg::Payload(p)));
            }
            buf.advance(eol + 2);
            if line.starts_with("-ERR") {
                return Err(format!("NATS: {line}"));
            }
            Ok(Some(if line == "PING" {
                Msg::Ping
            } else {
                Msg::Other
            }))
        }
        Peer::Redis => {
            // *3 $7 message $N subject $M payload
            if line != "*3" {
                buf.advance(eol + 2);
                return Ok(Some(Msg::Other));
            }
            let mut pos = eol + 2;
            let mut parts = Vec::with_capacity(3);
            for _ in 0..3 {
                let Some(e) = find(&buf[pos..], b"\r\n") else {
                    return Ok(None);
                };
                let head =
                    std::str::from_utf8(&buf[pos..pos + e]).map_err(|_| "bad bulk header")?;
                let n: usize = head
                    .strip_prefix('$')
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| format!("bad bulk header {head:?}"))?;
                let start = pos + e + 2;
                if buf.len() < start + n + 2 {
                    return Ok(None);
                }
                parts.push((start, n));
                pos = start + n + 2;
            }
            let (ps, pn) = parts[2];
            let is_message = &buf[parts[0].0..parts[0].0 + parts[0].1] == b"message";
            let payload = Bytes::copy_from_slice(&buf[ps..ps + pn]);
            buf.advance(pos);
            Ok(Some(if is_message {
                Msg::Payload(payload)
            } else {
                Msg::Other
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_split_messages_of_both_protocols() {
        let mut b = BytesMut::from(&b"INFO {}\r\nMSG tailrace.load 1 5\r\nhel"[..]);
        assert!(matches!(parse(Peer::Nats, &mut b), Ok(Some(Msg::Other))));
        assert!(matches!(parse(Peer::Nats, &mut b), Ok(None)));
        b.extend_from_slice(b"lo\r\nPING\r\n");
        assert!(
            matches!(parse(Peer::Nats, &mut b), Ok(Some(Msg::Payload(p))) if &p[..] == b"hello")
        );
        assert!(matches!(parse(Peer::Nats, &mut b), Ok(Some(Msg::Ping))));
        let mut r =
            BytesMut::from(&b"*3\r\n$7\r\nmessage\r\n$13\r\ntailrace.load\r\n$4\r\na\r\nb"[..]);
        assert!(matches!(parse(Peer::Redis, &mut r), Ok(None)));
        r.extend_from_slice(b"\r\n");
        assert!(
            matches!(parse(Peer::Redis, &mut r), Ok(Some(Msg::Payload(p))) if &p[..] == b"a\r\nb")
        );
        assert!(r.is_empty());
    }
}
