//! Each node's follower: one Redis pub/sub connection subscribed to the notify channel of every
//! step a reader here follows. `h<hwm>` raises the step's durable length; `d<start>:<bytes>`
//! raises it and hands over the bytes appended at `start`, which are kept (at most [`RECENT`]
//! bytes per followed step) so this node's readers of the live edge get them without a Redis
//! command (a node keeps its own large appends the same way, at most [`KEPT_MAX`] bytes of them
//! in all); `r<upto>` (a prefix released) wakes the step's appends waiting for room; `o` (bytes
//! overwritten) stops keeping bytes for the step; `x` (released) and `e` (ended) read its
//! progress again. A step's waiting appends are also woken when its subscription is confirmed
//! and on every resubscription. After a reconnect it resubscribes and reads every followed
//! step's progress again, so a message lost while disconnected costs nothing (the kept bytes
//! start over at the next push, a waiting append tries again). Steps nobody follows any more
//! are dropped.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use redis::aio::PubSubSink;
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch, Notify};
use tracing::{debug, warn};

use super::{key_of, RedisTier};
use crate::live::{Progress, StepKey};

/// Most steps one SUBSCRIBE asks for.
const SUBSCRIBE_BATCH: usize = 256;
/// Times a step's progress is read before its readers are left to wait for a notification.
const REFRESH_ATTEMPTS: u32 = 30;
/// Bytes kept per followed step: what its readers at the live edge have not read yet (at least
/// this much, and always the last push whole: for a large append of this node's, up to one
/// ingest batch).
const RECENT: usize = 16 * 1024;
/// Most bytes of its own large appends a node keeps for its readers, over all steps: past it,
/// readers read them back from Redis.
const KEPT_MAX: usize = 64 << 20;

/// Bytes counted against [`KEPT_MAX`] while they are kept.
struct Charge {
    n: usize,
    total: Arc<AtomicUsize>,
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.total.fetch_sub(self.n, Relaxed);
    }
}

/// The last bytes pushed for a followed step, contiguous, ending at the last push.
#[derive(Default)]
struct Recent {
    /// Offset of the first kept byte.
    start: u64,
    /// The kept bytes, each with its charge against [`KEPT_MAX`] (a node's own large append).
    chunks: VecDeque<(Bytes, Option<Charge>)>,
    len: usize,
    /// The step's bytes were overwritten or released here: keep nothing more.
    stopped: bool,
}

impl Recent {
    fn end(&self) -> u64 {
        self.start + self.len as u64
    }

    fn clear(&mut self) {
        self.chunks.clear();
        self.len = 0;
    }

    /// Bytes appended at `at`; a push that does not continue the kept bytes starts them over.
    /// Bytes already kept are not kept twice: a node's own appends are pushed when Redis
    /// answers them, and again when their notification arrives.
    fn push(&mut self, mut at: u64, mut bytes: Bytes, charge: Option<Charge>) {
        if self.stopped || bytes.is_empty() {
            return;
        }
        if !self.chunks.is_empty() && at < self.end() {
            if at + bytes.len() as u64 <= self.end() {
                return;
            }
            if at >= self.start {
                bytes = bytes.slice((self.end() - at) as usize..);
                at = self.end();
            }
        }
        if at != self.end() || self.chunks.is_empty() {
            self.clear();
            self.start = at;
        }
        self.len += bytes.len();
        self.chunks.push_back((bytes, charge));
        while self.len > RECENT && self.chunks.len() > 1 {
            let old = self.chunks.pop_front().map_or(0, |(b, _)| b.len());
            self.len -= old;
            self.start += old as u64;
        }
    }

    /// Up to `max` kept bytes from `offset`; `None` when `offset` is not kept.
    fn read(&self, offset: u64, max: usize) -> Option<Bytes> {
        if offset < self.start || offset >= self.end() || max == 0 {
            return None;
        }
        let mut at = self.start;
        let mut pieces: Vec<Bytes> = Vec::new();
        let mut left = max;
        for (chunk, _) in &self.chunks {
            let end = at + chunk.len() as u64;
            if end > offset && left > 0 {
                let from = offset.saturating_sub(at) as usize;
                let take = (chunk.len() - from).min(left);
                pieces.push(chunk.slice(from..from + take));
                left -= take;
            }
            at = end;
        }
        Some(if pieces.len() == 1 { pieces.remove(0) } else { Bytes::from(pieces.concat()) })
    }
}

/// A followed step: its readers' `watch`, the bytes last pushed for it, and its appends waiting
/// for the archiver to release a prefix.
struct Followed {
    key: StepKey,
    tx: watch::Sender<Progress>,
    recent: Recent,
    released: Arc<Notify>,
}

/// Every followed step, by notify channel; and the bytes of this node's own large appends kept.
#[derive(Clone, Default)]
pub(super) struct Watchers(Arc<Mutex<HashMap<String, Followed>>>, Arc<AtomicUsize>);

impl Watchers {
    /// A receiver of an already followed step.
    pub(super) fn receiver(&self, key: &StepKey) -> Option<watch::Receiver<Progress>> {
        self.0.lock().get(&key_of(key, "n")).map(|f| f.tx.subscribe())
    }

    /// Follows a step from `progress`; `true` if it was not followed before.
    pub(super) fn insert(&self, key: &StepKey, progress: Progress) -> (watch::Receiver<Progress>, bool) {
        let mut map = self.0.lock();
        let mut new = false;
        let f = map.entry(key_of(key, "n")).or_insert_with(|| {
            new = true;
            Followed { key: key.clone(), tx: watch::channel(progress).0, recent: Recent::default(), released: Arc::default() }
        });
        (f.tx.subscribe(), new)
    }

    /// Up to `max` bytes from `offset` of a followed step, if they were pushed here.
    pub(super) fn recent(&self, key: &StepKey, offset: u64, max: usize) -> Option<Bytes> {
        self.0.lock().get(&key_of(key, "n"))?.recent.read(offset, max)
    }

    /// What a followed step's appends waiting for room wait on: woken when a prefix is released
    /// and whenever a message may have been missed (see the module's text).
    pub(super) fn released(&self, key: &StepKey) -> Option<Arc<Notify>> {
        self.0.lock().get(&key_of(key, "n")).map(|f| f.released.clone())
    }

    fn wake(&self, channel: &str) {
        if let Some(f) = self.0.lock().get(channel) {
            f.released.notify_waiters();
        }
    }

    /// Drops the bytes kept for a step (a prefix of it was released).
    pub(super) fn forget_bytes(&self, key: &StepKey) {
        if let Some(f) = self.0.lock().get_mut(&key_of(key, "n")) {
            f.recent.clear();
        }
    }

    /// Drops the bytes kept for a step and keeps no more (overwritten or released).
    pub(super) fn stop_bytes(&self, key: &StepKey) {
        if let Some(f) = self.0.lock().get_mut(&key_of(key, "n")) {
            f.recent.clear();
            f.recent.stopped = true;
        }
    }

    fn update(&self, channel: &str, f: impl FnOnce(&mut Progress) -> bool) {
        if let Some(followed) = self.0.lock().get(channel) {
            followed.tx.send_if_modified(f);
        }
    }

    /// Bytes appended at `at` (from a notification, or from this node's own append when Redis
    /// answers it): kept, then the durable length raised (so a woken reader finds them).
    /// `bytes` is called only for a step followed here.
    pub(super) fn pushed(&self, channel: &str, at: u64, bytes: impl FnOnce() -> Bytes) {
        self.keep(channel, at, || Some((bytes(), None)));
    }

    /// This node's own large append of `len` bytes at `at` (not published): kept as pushed
    /// bytes are while the node keeps at most [`KEPT_MAX`] such bytes; else its readers read it
    /// back once told of it.
    pub(super) fn kept(&self, channel: &str, at: u64, len: usize, bytes: impl FnOnce() -> Bytes) {
        self.keep(channel, at, || self.charge(len).map(|c| (bytes(), Some(c))));
    }

    /// Keeps the bytes `bytes` gives (with their charge), if the step is followed here and it
    /// gives any, and raises the step's durable length to their end.
    fn keep(&self, channel: &str, at: u64, bytes: impl FnOnce() -> Option<(Bytes, Option<Charge>)>) {
        if let Some(f) = self.0.lock().get_mut(channel) {
            let Some((bytes, charge)) = bytes() else { return };
            let hwm = at + bytes.len() as u64;
            f.recent.push(at, bytes, charge);
            f.tx.send_if_modified(|p| raise(p, hwm));
        }
    }

    /// `n` bytes counted against [`KEPT_MAX`]; `None` when they do not fit.
    fn charge(&self, n: usize) -> Option<Charge> {
        if self.1.fetch_add(n, Relaxed) + n > KEPT_MAX {
            self.1.fetch_sub(n, Relaxed);
            return None;
        }
        Some(Charge { n, total: self.1.clone() })
    }

    fn set(&self, key: &StepKey, p: Progress) {
        self.update(&key_of(key, "n"), |cur| {
            let changed = p.durable > cur.durable || (p.end.is_some() && cur.end.is_none());
            if changed {
                cur.durable = cur.durable.max(p.durable);
                if cur.end.is_none() {
                    cur.end = p.end;
                }
            }
            changed
        });
    }

    fn keys(&self) -> Vec<(String, StepKey)> {
        self.0.lock().iter().map(|(c, f)| (c.clone(), f.key.clone())).collect()
    }

    fn key(&self, channel: &str) -> Option<StepKey> {
        self.0.lock().get(channel).map(|f| f.key.clone())
    }

    /// Forgets steps without receivers; returns their channels.
    fn sweep(&self) -> Vec<String> {
        let mut map = self.0.lock();
        let idle: Vec<String> = map.iter().filter(|(_, f)| f.tx.receiver_count() == 0).map(|(c, _)| c.clone()).collect();
        for c in &idle {
            map.remove(c);
        }
        idle
    }
}

/// Raises the durable length to `hwm`; `true` if it grew.
fn raise(p: &mut Progress, hwm: u64) -> bool {
    let grew = hwm > p.durable;
    if grew {
        p.durable = hwm;
    }
    grew
}

/// `d<start>:<bytes>`: the start and the bytes.
fn parse_push(payload: &[u8]) -> Option<(u64, &[u8])> {
    let rest = payload.strip_prefix(b"d")?;
    let colon = rest.iter().position(|&b| b == b':')?;
    let start = std::str::from_utf8(&rest[..colon]).ok()?.parse().ok()?;
    Some((start, &rest[colon + 1..]))
}

/// Reads a step's progress from Redis into its watch, in a task of its own.
fn spawn_refresh(tier: &Weak<RedisTier>, watchers: &Watchers, key: StepKey) {
    let (tier, watchers) = (tier.clone(), watchers.clone());
    tokio::spawn(async move { refresh(&tier, &watchers, key).await });
}

/// Reads a step's progress from Redis into its watch, trying again for a while when Redis does
/// not answer: a command connection that has not noticed Redis restart fails once before it
/// reconnects, and the notification this read stands in for may be gone.
async fn refresh(tier: &Weak<RedisTier>, watchers: &Watchers, key: StepKey) {
    for attempt in 1..=REFRESH_ATTEMPTS {
        let Some(t) = tier.upgrade() else { return };
        match t.progress(&key).await {
            Ok(Some(p)) => return watchers.set(&key, p),
            Ok(None) => return,
            Err(e) => debug!(step = %key, error = %e, attempt, "could not read step progress"),
        }
        drop(t);
        tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt).min(10))).await;
    }
    warn!(step = %key, "could not read step progress from Redis; its readers wait for its next notification");
}

/// Runs until the tier is dropped.
pub(super) async fn run(client: redis::Client, tier: Weak<RedisTier>, watchers: Watchers, mut follow: mpsc::UnboundedReceiver<StepKey>) {
    let mut failures = 0u32;
    while tier.strong_count() > 0 {
        let pubsub = match client.get_async_pubsub().await {
            Ok(p) => p,
            Err(e) => {
                failures += 1;
                if failures == 1 || failures.is_multiple_of(30) {
                    warn!(error = %e, "live tier: cannot reach Redis for notifications; readers wait for it");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if failures > 0 {
            warn!("live tier: Redis notifications are back");
        }
        failures = 0;
        let (mut sink, mut stream) = pubsub.split();
        let followed = watchers.keys();
        for (_, key) in &followed {
            // A message missed while disconnected may have been an overwrite.
            watchers.forget_bytes(key);
        }
        // Subscriptions in flight: messages keep being handled while Redis answers them.
        let mut subscribing = FuturesUnordered::new();
        if !followed.is_empty() {
            subscribing.push(subscribe(sink.clone(), tier.clone(), watchers.clone(), followed.into_iter().map(|(_, k)| k).collect()));
        }
        let mut sweep = tokio::time::interval(Duration::from_secs(10));
        let mut ok = true;
        while ok {
            tokio::select! {
                msg = stream.next() => {
                    let Some(msg) = msg else { break };
                    let channel = msg.get_channel_name();
                    let payload = msg.get_payload_bytes();
                    if let Some((at, bytes)) = parse_push(payload) {
                        watchers.pushed(channel, at, || Bytes::copy_from_slice(bytes));
                    } else if let Some(hwm) = payload.strip_prefix(b"h").and_then(|h| std::str::from_utf8(h).ok()?.parse::<u64>().ok()) {
                        watchers.update(channel, |p| raise(p, hwm));
                    } else if payload.starts_with(b"r") {
                        watchers.wake(channel);
                    } else if let Some(key) = watchers.key(channel) {
                        if matches!(payload, b"o" | b"x") {
                            watchers.stop_bytes(&key);
                        }
                        spawn_refresh(&tier, &watchers, key);
                    }
                }
                Some(done) = subscribing.next() => ok = done,
                key = follow.recv() => {
                    let Some(key) = key else { return };
                    // Readers that arrive together (a page of tails opening) share one SUBSCRIBE.
                    let mut keys = vec![key];
                    while keys.len() < SUBSCRIBE_BATCH {
                        match follow.try_recv() {
                            Ok(k) => keys.push(k),
                            Err(_) => break,
                        }
                    }
                    subscribing.push(subscribe(sink.clone(), tier.clone(), watchers.clone(), keys));
                }
                _ = sweep.tick() => {
                    let idle = watchers.sweep();
                    if !idle.is_empty() {
                        let _ = sink.unsubscribe(idle).await;
                    }
                }
            }
        }
    }
}

/// Subscribes to the steps' channels, then reads their progress and wakes their waiting appends
/// (so nothing published before the subscription is missed); `false` if Redis refused or the
/// connection broke.
async fn subscribe(mut sink: PubSubSink, tier: Weak<RedisTier>, watchers: Watchers, keys: Vec<StepKey>) -> bool {
    let channels: Vec<String> = keys.iter().map(|k| key_of(k, "n")).collect();
    if sink.subscribe(&channels).await.is_err() {
        return false;
    }
    for (key, channel) in keys.into_iter().zip(&channels) {
        watchers.wake(channel);
        spawn_refresh(&tier, &watchers, key);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn kept_bytes_are_served_by_offset_and_bounded() {
        let mut r = Recent::default();
        assert_eq!(r.read(0, 10), None);
        r.push(100, b("hello "), None);
        r.push(106, b("world"), None);
        assert_eq!(r.read(100, 100).as_deref(), Some(&b"hello world"[..]));
        assert_eq!(r.read(104, 4).as_deref(), Some(&b"o wo"[..]));
        assert_eq!(r.read(106, 100).as_deref(), Some(&b"world"[..]));
        assert_eq!(r.read(99, 10), None, "before the kept bytes");
        assert_eq!(r.read(111, 10), None, "at the end");
        // This node's own append is pushed twice (when Redis answers it, and by its
        // notification): bytes already kept are not kept again, an overlap is trimmed.
        r.push(106, b("world"), None);
        r.push(104, b("o world"), None);
        assert_eq!(r.read(100, 100).as_deref(), Some(&b"hello world"[..]));
        r.push(108, b("rld!"), None);
        assert_eq!(r.read(100, 100).as_deref(), Some(&b"hello world!"[..]));
        r.push(111, b("!"), None);
        assert_eq!(r.end(), 112);
        // A push that leaves a hole (a missed message) starts over.
        r.push(200, b("again"), None);
        assert_eq!(r.read(100, 10), None);
        assert_eq!(r.read(202, 10).as_deref(), Some(&b"ain"[..]));
        // At most RECENT bytes, whole chunks dropped from the front.
        let chunk = Bytes::from(vec![b'x'; 10_000]);
        let mut at = 205;
        for _ in 0..20 {
            r.push(at, chunk.clone(), None);
            at += 10_000;
        }
        assert!(r.len <= RECENT && r.len > RECENT - 10_000, "{}", r.len);
        assert_eq!(r.end(), at);
        assert_eq!(r.read(at - 1, 10).as_deref(), Some(&b"x"[..]));
        assert_eq!(r.read(205, 10), None);
        // Stopped: nothing kept, nothing served.
        r.clear();
        r.stopped = true;
        r.push(at, b("late"), None);
        assert_eq!(r.read(at, 10), None);
    }

    #[test]
    fn a_nodes_own_large_appends_are_kept_within_the_nodes_budget() {
        use tailrace_protocol::{JobId, StepId};
        let w = Watchers::default();
        let (a, b) = (StepKey::new(JobId::new("j").unwrap(), StepId::new("a").unwrap()), StepKey::new(JobId::new("j").unwrap(), StepId::new("b").unwrap()));
        let half = KEPT_MAX / 2;
        for k in [&a, &b] {
            w.insert(k, Progress { durable: 0, end: None });
        }
        let (ca, cb) = (key_of(&a, "n"), key_of(&b, "n"));
        w.kept(&ca, 0, half, || Bytes::from(vec![b'a'; half]));
        assert_eq!(w.recent(&a, half as u64 - 1, 10).as_deref(), Some(&b"a"[..]));
        assert_eq!(w.receiver(&a).unwrap().borrow().durable, half as u64, "readers are told at once");
        w.kept(&cb, 0, half + 1, || Bytes::from(vec![b'b'; half + 1]));
        assert_eq!(w.recent(&b, 0, 10), None, "past the budget nothing is kept");
        assert_eq!(w.1.load(Relaxed), half);
        // The next append of a replaces what a kept, and gives back its charge.
        w.kept(&ca, half as u64, 100, || Bytes::from(vec![b'A'; 100]));
        assert_eq!(w.1.load(Relaxed), 100);
        w.kept(&cb, 0, half + 1, || Bytes::from(vec![b'b'; half + 1]));
        assert_eq!(w.recent(&b, 0, 1).as_deref(), Some(&b"b"[..]));
        w.forget_bytes(&b);
        assert_eq!(w.1.load(Relaxed), 100, "bytes no longer kept are no longer counted");
        w.kept(&key_of(&StepKey::new(JobId::new("j").unwrap(), StepId::new("c").unwrap()), "n"), 0, 10, || unreachable!("a step nobody follows keeps nothing"));
    }

    #[test]
    fn pushes_parse_and_anything_else_does_not() {
        assert_eq!(parse_push(b"d42:a:b\n"), Some((42, &b"a:b\n"[..])));
        assert_eq!(parse_push(b"d0:"), Some((0, &b""[..])));
        for bad in [&b"h42"[..], b"d42", b"dx:1", b"d:1", b""] {
            assert_eq!(parse_push(bad), None, "{bad:?}");
        }
    }
}
