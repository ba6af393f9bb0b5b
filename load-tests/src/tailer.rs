//! A websocket tailer: follows one step from byte 0 to its end, checks that every byte arrives
//! once and in order, and records for each write of the simulated command how long it took from
//! the write to the tailer receiving its last byte.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hdrhistogram::Histogram;
use parking_lot::RwLock;
use tailrace_protocol::StreamHasher;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// When each write of a step was made: `(end offset, instant)`, in offset order.
#[derive(Debug, Default)]
pub struct Timeline(RwLock<Vec<(u64, Instant)>>);

impl Timeline {
    pub fn push(&self, end: u64, at: Instant) {
        self.0.write().push((end, at));
    }

    /// Records into `hist` the latency of every write from index `*next` whose last byte is below
    /// `received`, as seen at `now`; advances `*next`.
    pub fn record_until(
        &self,
        next: &mut usize,
        received: u64,
        now: Instant,
        hist: &mut Histogram<u64>,
    ) {
        let writes = self.0.read();
        while let Some(&(end, at)) = writes.get(*next) {
            if end > received {
                break;
            }
            hist.saturating_record(now.saturating_duration_since(at).as_micros() as u64);
            *next += 1;
        }
    }
}

/// A new latency histogram in microseconds (1 µs to 1 h, 3 significant figures).
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant bounds are valid")
}

/// What one tailer saw.
#[derive(Debug)]
pub struct Tailed {
    pub length: u64,
    pub checksum: String,
    pub latency: Histogram<u64>,
    pub reconnects: u32,
}

/// Where to tail and how.
#[derive(Debug, Clone)]
pub struct TailSpec {
    pub authority: String,
    pub token: String,
    pub job: String,
    pub step: String,
    /// Pause after each message: a slow reader.
    pub pause: Duration,
}

/// Follows the step to its end. `connected` fires once the first websocket is open, so the step
/// can start writing with every tailer listening.
pub async fn follow(
    spec: TailSpec,
    timeline: Arc<Timeline>,
    connected: oneshot::Sender<()>,
    counter: impl Fn(u64),
) -> Result<Tailed, String> {
    let mut connected = Some(connected);
    let mut hasher = StreamHasher::new();
    let mut latency = histogram();
    let mut next_write = 0usize;
    let mut offset = 0u64;
    let mut reconnects = 0u32;
    loop {
        let url = format!(
            "ws://{}/api/v1/jobs/{}/steps/{}/tail?offset={offset}",
            spec.authority, spec.job, spec.step
        );
        let mut req = url.into_client_request().map_err(|e| e.to_string())?;
        let auth = format!("Bearer {}", spec.token)
            .parse()
            .map_err(|_| "token is not a header value".to_string())?;
        req.headers_mut().insert(http::header::AUTHORIZATION, auth);
        let mut ws = match tokio_tungstenite::connect_async(req).await {
            Ok((ws, _)) => ws,
            Err(e) if reconnects < 20 => {
                reconnects += 1;
                tracing::warn!(error = %e, step = %spec.step, "tail connect failed; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Err(e) => return Err(format!("tail of {}/{}: {e}", spec.job, spec.step)),
        };
        if let Some(c) = connected.take() {
            let _ = c.send(());
        }
        while let Some(msg) = ws.next().await {
            let msg = match msg {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, step = %spec.step, offset, "tail interrupted; reconnecting");
                    break;
                }
            };
            match msg {
                Message::Binary(b) => {
                    let now = Instant::now();
                    let at = b
                        .get(..8)
                        .and_then(|h| h.try_into().ok())
                        .map(u64::from_be_bytes)
                        .ok_or("tail message shorter than its offset")?;
                    let data = &b[8..];
                    if at != offset {
                        return Err(format!(
                            "tail of {}/{} got bytes at {at}, expected {offset}: a gap or a duplicate",
                            spec.job, spec.step
                        ));
                    }
                    hasher.update(data);
                    offset += data.len() as u64;
                    counter(data.len() as u64);
                    timeline.record_until(&mut next_write, offset, now, &mut latency);
                    if !spec.pause.is_zero() {
                        tokio::time::sleep(spec.pause).await;
                    }
                }
                Message::Text(t) => {
                    let v: serde_json::Value =
                        serde_json::from_str(&t).map_err(|e| format!("bad tail status: {e}"))?;
                    if v.get("type").and_then(|t| t.as_str()) == Some("end") {
                        return Ok(Tailed {
                            length: hasher.len(),
                            checksum: hasher.hex(),
                            latency,
                            reconnects,
                        });
                    }
                }
                Message::Close(_) => break,
                _ => {}
            }
        }
        reconnects += 1;
        if reconnects > 20 {
            return Err(format!(
                "tail of {}/{} gave up after {reconnects} reconnects at offset {offset}",
                spec.job, spec.step
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_is_counted_once_per_write_when_its_last_byte_arrives() {
        let t0 = Instant::now();
        let tl = Timeline::default();
        tl.push(10, t0);
        tl.push(20, t0 + Duration::from_millis(5));
        tl.push(30, t0 + Duration::from_millis(6));
        let mut h = histogram();
        let mut next = 0;
        tl.record_until(&mut next, 15, t0 + Duration::from_millis(10), &mut h);
        assert_eq!((next, h.len()), (1, 1));
        assert!(h.max() >= 9_990 && h.max() <= 10_010, "{}", h.max());
        tl.record_until(&mut next, 30, t0 + Duration::from_millis(26), &mut h);
        assert_eq!((next, h.len()), (3, 3));
        assert_eq!(h.count_between(19_990, 21_010), 2, "max {}", h.max());
        tl.record_until(&mut next, 30, t0 + Duration::from_millis(99), &mut h);
        assert_eq!(h.len(), 3, "nothing counted twice");
    }
}
