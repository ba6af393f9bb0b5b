//! The audit log: security-relevant events (jobs and tokens issued, revocations, key rotations,
//! scrubs, failed authentication, configuration, expiry deletions) as JSON lines, batched into
//! objects under `audit/YYYY/MM/DD/` of the object store.
//!
//! Records name tokens by their id, never by value, and carry no secrets. Events wait in a
//! bounded queue for the writer, which puts one object per batch (at most `batch` events or
//! `flush_every` old) and retries while the object store is down. Rare administrative actions
//! (jobs, tokens, scrubs, keys) use [`AuditLog::record_durable`], which answers once their batch
//! is in the object store (or after `DURABLE_WAIT`, leaving it queued), so a crash right after
//! them does not lose their record; failed authentication, which a flood can make frequent,
//! never waits.
//! When the queue is full (a failed-auth flood during an object-store outage) further events are
//! counted as dropped (`tailrace_audit_dropped_total`) and a warning is logged.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use serde::Serialize;
use serde_json::{Map, Value};
use tailrace_protocol::token::Claims;
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use crate::meta::now_ms;

/// How long [`AuditLog::record_durable`] waits for the object store.
pub const DURABLE_WAIT: Duration = Duration::from_secs(2);

/// Folder of audit objects in the object store.
pub const PREFIX: &str = "audit";

/// How the writer batches.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// Most events per object.
    pub batch: usize,
    /// Longest an event waits before its batch is written.
    pub flush_every: Duration,
    /// Events waiting at most; more are dropped and counted.
    pub queue: usize,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self { batch: 1000, flush_every: Duration::from_secs(1), queue: 100_000 }
    }
}

/// Who did it: a token named by id and scope.
#[derive(Debug, Clone, Serialize)]
pub struct Actor {
    pub token_id: String,
    pub scope: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
}

impl From<&Claims> for Actor {
    fn from(c: &Claims) -> Self {
        use tailrace_protocol::token::Scope;
        let (project, job) = match &c.scope {
            Scope::Job { job, project } => (Some(project.clone()), Some(job.clone())),
            Scope::Project { project } => (Some(project.clone()), None),
            Scope::Admin => (None, None),
        };
        Self { token_id: c.id.clone(), scope: c.scope.kind(), project, job }
    }
}

enum Msg {
    Event(Value),
    Flush(oneshot::Sender<()>),
}

/// Counters, rendered as `tailrace_audit_*`.
#[derive(Debug, Default)]
pub struct AuditMetrics {
    pub events: AtomicU64,
    pub written: AtomicU64,
    pub dropped: AtomicU64,
    pub failures: AtomicU64,
}

/// The audit log of one process.
pub struct AuditLog {
    tx: mpsc::Sender<Msg>,
    pub metrics: Arc<AuditMetrics>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Starts the writer on `store`; `node` names this process in object keys (so two processes
    /// never write the same key).
    pub fn start(store: Arc<dyn ObjectStore>, node: &str, cfg: AuditConfig) -> Arc<Self> {
        let (tx, rx) = mpsc::channel(cfg.queue.max(1));
        let metrics = Arc::new(AuditMetrics::default());
        tokio::spawn(write_loop(store, node.to_string(), cfg, rx, metrics.clone()));
        Arc::new(Self { tx, metrics })
    }

    /// Records `event` by `actor` with `fields` (an object; anything else is stored under
    /// `"detail"`). Never blocks; never pass tokens or secrets in `fields`.
    pub fn record(&self, event: &str, actor: Option<&Claims>, fields: Value) {
        let mut line = Map::new();
        line.insert("ts".into(), Value::String(crate::time::rfc3339(now_ms())));
        line.insert("event".into(), Value::String(event.into()));
        if let Some(actor) = actor {
            line.insert("actor".into(), serde_json::to_value(Actor::from(actor)).unwrap_or(Value::Null));
        }
        match fields {
            Value::Object(map) => line.extend(map),
            Value::Null => {}
            other => {
                line.insert("detail".into(), other);
            }
        }
        self.metrics.events.fetch_add(1, Relaxed);
        if self.tx.try_send(Msg::Event(Value::Object(line))).is_err() {
            let dropped = self.metrics.dropped.fetch_add(1, Relaxed);
            if dropped.is_power_of_two() {
                warn!(dropped = dropped + 1, event, "audit queue full (object store down or too slow); audit events dropped");
            }
        }
    }

    /// Records like [`AuditLog::record`], then waits (at most `DURABLE_WAIT`) until the event is
    /// in the object store. When the store is down the caller goes on and the event stays queued.
    pub async fn record_durable(&self, event: &str, actor: Option<&Claims>, fields: Value) {
        self.record(event, actor, fields);
        self.flush_for_a_while().await;
    }

    /// Writes everything recorded so far, waiting at most `DURABLE_WAIT`; what the object store
    /// did not take by then stays queued (and a warning says so).
    pub async fn flush_for_a_while(&self) {
        if tokio::time::timeout(DURABLE_WAIT, self.flush()).await.is_err() {
            warn!("audit events not yet written (object store slow or down); they stay queued");
        }
    }

    /// Writes everything recorded so far (retrying until the object store takes it); for
    /// shutdown and tests.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Msg::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }

    pub fn render(&self, out: &mut String) {
        let m = &self.metrics;
        for (name, help, v) in [
            ("tailrace_audit_events_total", "Audit events recorded.", &m.events),
            ("tailrace_audit_written_total", "Audit events written to the object store.", &m.written),
            ("tailrace_audit_dropped_total", "Audit events dropped because the queue was full.", &m.dropped),
            ("tailrace_audit_failures_total", "Failed attempts to write an audit batch (retried).", &m.failures),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}", v.load(Relaxed));
        }
    }
}

async fn write_loop(store: Arc<dyn ObjectStore>, node: String, cfg: AuditConfig, mut rx: mpsc::Receiver<Msg>, metrics: Arc<AuditMetrics>) {
    let mut seq = 0u64;
    loop {
        let mut batch = Vec::new();
        let mut waiters = Vec::new();
        match rx.recv().await {
            None => return,
            Some(Msg::Event(e)) => batch.push(e),
            Some(Msg::Flush(done)) => waiters.push(done),
        }
        let deadline = tokio::time::Instant::now() + cfg.flush_every;
        while batch.len() < cfg.batch && waiters.is_empty() {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(Msg::Event(e))) => batch.push(e),
                Ok(Some(Msg::Flush(done))) => waiters.push(done),
                Ok(None) | Err(_) => break,
            }
        }
        if !batch.is_empty() {
            seq += 1;
            put_batch(&*store, &node, seq, &batch, &metrics).await;
        }
        for w in waiters {
            let _ = w.send(());
        }
    }
}

/// Object key of a batch whose first event is at `ms`: sorted by time within a day's folder.
fn object_key(ms: u64, node: &str, seq: u64) -> String {
    let (y, m, d) = crate::time::civil_date(ms);
    format!("{PREFIX}/{y:04}/{m:02}/{d:02}/{ms:013}-{node}-{seq:08}.jsonl")
}

async fn put_batch(store: &dyn ObjectStore, node: &str, seq: u64, batch: &[Value], metrics: &AuditMetrics) {
    let mut body = Vec::with_capacity(batch.len() * 200);
    for e in batch {
        if serde_json::to_writer(&mut body, e).is_ok() {
            body.push(b'\n');
        }
    }
    let body = Bytes::from(body);
    let key = ObjectPath::from(object_key(now_ms(), node, seq));
    let mut backoff = Duration::from_millis(200);
    loop {
        match store.put(&key, body.clone().into()).await {
            Ok(_) => {
                metrics.written.fetch_add(batch.len() as u64, Relaxed);
                return;
            }
            Err(e) => {
                metrics.failures.fetch_add(1, Relaxed);
                warn!(error = %e, events = batch.len(), retry_in = ?backoff, "could not write audit batch; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

#[cfg(test)]
mod tests;
