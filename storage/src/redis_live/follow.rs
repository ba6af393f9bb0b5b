//! Each node's follower: one Redis pub/sub connection subscribed to the notify channel of every
//! step a reader here follows. `h<hwm>` raises the step's durable length, `e` reads its end.
//! After a reconnect it resubscribes and reads every followed step's progress again, so a
//! message lost while disconnected costs nothing. Steps nobody follows any more are dropped.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};
use tracing::{debug, warn};

use super::{key_of, RedisTier};
use crate::live::{Progress, StepKey};

/// A followed step and its readers' `watch`.
type Followed = (StepKey, watch::Sender<Progress>);

/// The `watch` of every followed step, by notify channel.
#[derive(Clone, Default)]
pub(super) struct Watchers(Arc<Mutex<HashMap<String, Followed>>>);

impl Watchers {
    /// A receiver of an already followed step.
    pub(super) fn receiver(&self, key: &StepKey) -> Option<watch::Receiver<Progress>> {
        self.0.lock().get(&key_of(key, "n")).map(|(_, tx)| tx.subscribe())
    }

    /// Follows a step from `progress`; `true` if it was not followed before.
    pub(super) fn insert(&self, key: &StepKey, progress: Progress) -> (watch::Receiver<Progress>, bool) {
        let mut map = self.0.lock();
        let mut new = false;
        let (_, tx) = map.entry(key_of(key, "n")).or_insert_with(|| {
            new = true;
            (key.clone(), watch::channel(progress).0)
        });
        (tx.subscribe(), new)
    }

    fn update(&self, channel: &str, f: impl FnOnce(&mut Progress) -> bool) {
        if let Some((_, tx)) = self.0.lock().get(channel) {
            tx.send_if_modified(f);
        }
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
        self.0.lock().iter().map(|(c, (k, _))| (c.clone(), k.clone())).collect()
    }

    /// Forgets steps without receivers; returns their channels.
    fn sweep(&self) -> Vec<String> {
        let mut map = self.0.lock();
        let idle: Vec<String> = map.iter().filter(|(_, (_, tx))| tx.receiver_count() == 0).map(|(c, _)| c.clone()).collect();
        for c in &idle {
            map.remove(c);
        }
        idle
    }
}

/// Reads a step's progress from Redis into its watch.
async fn refresh(tier: &Weak<RedisTier>, watchers: &Watchers, key: StepKey) {
    let Some(tier) = tier.upgrade() else { return };
    match tier.progress(&key).await {
        Ok(Some(p)) => watchers.set(&key, p),
        Ok(None) => {}
        Err(e) => debug!(step = %key, error = %e, "could not read step progress"),
    }
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
        let mut ok = true;
        for (channel, _) in &followed {
            ok &= sink.subscribe(channel).await.is_ok();
        }
        for (_, key) in followed {
            refresh(&tier, &watchers, key).await;
        }
        let mut sweep = tokio::time::interval(Duration::from_secs(10));
        while ok {
            tokio::select! {
                msg = stream.next() => {
                    let Some(msg) = msg else { break };
                    let channel = msg.get_channel_name().to_string();
                    let payload = msg.get_payload_bytes();
                    if let Some(hwm) = payload.strip_prefix(b"h").and_then(|h| std::str::from_utf8(h).ok()?.parse::<u64>().ok()) {
                        watchers.update(&channel, |p| {
                            let raise = hwm > p.durable;
                            if raise {
                                p.durable = hwm;
                            }
                            raise
                        });
                    } else if let Some((_, key)) = watchers.keys().into_iter().find(|(c, _)| *c == channel) {
                        tokio::spawn({
                            let (tier, watchers) = (tier.clone(), watchers.clone());
                            async move { refresh(&tier, &watchers, key).await }
                        });
                    }
                }
                key = follow.recv() => {
                    let Some(key) = key else { return };
                    ok = sink.subscribe(key_of(&key, "n")).await.is_ok();
                    refresh(&tier, &watchers, key).await;
                }
                _ = sweep.tick() => {
                    for channel in watchers.sweep() {
                        let _ = sink.unsubscribe(channel).await;
                    }
                }
            }
        }
    }
}
