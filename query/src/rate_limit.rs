//! Request rate limits: a token bucket per caller — per valid token, and per client address for
//! requests without one (or with an invalid one, so forged tokens cannot mint fresh buckets).
//! Over the limit the answer is `429` with `Retry-After`.
//!
//! Not counted: the admin token (the CI system's control plane creating jobs); uploads by valid
//! tokens (`PUT`/`POST` of artifacts and test results, bounded by bytes and concurrent uploads
//! instead); the ingest path and its discovery document (bounded by bytes and flow control);
//! health and metrics probes.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use parking_lot::Mutex;
use tailrace_storage::meta::now_ms;

use crate::AppState;

/// The client's address, set per connection by the listener.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// Who a request is counted against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Key {
    /// A valid token, by a hash of it (the token itself is never kept).
    Token(u64),
    Addr(IpAddr),
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets: `rate` requests per second sustained, bursts of `burst`.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<Key, Bucket>>,
    pub limited: AtomicU64,
}

/// Buckets kept before idle ones (full again) are dropped.
const SWEEP_AT: usize = 10_000;

impl RateLimiter {
    /// `None` when `rate` is 0 (limits off).
    pub fn new(rate: u32, burst: u32) -> Option<Self> {
        (rate > 0).then(|| Self {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
            limited: AtomicU64::new(0),
        })
    }

    /// Takes one request from `key`'s bucket at `now`; `Err(wait)` when it is empty.
    pub fn check(&self, key: Key, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock();
        if buckets.len() >= SWEEP_AT {
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, b| b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate < burst);
        }
        let b = buckets.entry(key).or_insert(Bucket { tokens: self.burst, at: now });
        b.tokens = (b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * self.rate).min(self.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            self.limited.fetch_add(1, Relaxed);
            Err(Duration::from_secs_f64((1.0 - b.tokens) / self.rate))
        }
    }
}

/// The middleware: counts the request against its caller, or answers `429`.
pub async fn limit(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let Some(limiter) = state.rate_limit.as_ref() else { return next.run(req).await };
    let path = req.uri().path();
    if path == tailrace_ingest::http2::INGEST_PATH || matches!(path, "/api/v1/ingest/info" | "/healthz" | "/readyz" | "/metrics") {
        return next.run(req).await;
    }
    let claims = crate::auth::token_of(req.headers()).and_then(|t| state.core.keys.verify(&t, now_ms() / 1000).ok());
    let key = match claims {
        Some(claims) if claims.is_admin() => return next.run(req).await,
        Some(_) if matches!(*req.method(), Method::PUT | Method::POST) => return next.run(req).await,
        Some(claims) => {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            claims.id.hash(&mut h);
            Key::Token(h.finish())
        }
        None => match req.extensions().get::<PeerAddr>() {
            Some(PeerAddr(a)) => Key::Addr(a.ip()),
            None => return next.run(req).await,
        },
    };
    match limiter.check(key, Instant::now()) {
        Ok(()) => next.run(req).await,
        Err(wait) => {
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            let who = if matches!(key, Key::Token(_)) { "this token" } else { "this address" };
            let msg = format!(
                "rate limit: {who} may make {} requests per second (bursts of {}); retry after {secs} s",
                limiter.rate, limiter.burst
            );
            let mut resp = (StatusCode::TOO_MANY_REQUESTS, Json(serde_json::json!({ "message": msg }))).into_response();
            resp.headers_mut().insert(axum::http::header::RETRY_AFTER, HeaderValue::from(secs));
            resp
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_refill_at_the_rate_up_to_the_burst_and_are_per_key() {
        let l = RateLimiter::new(10, 3).unwrap();
        let (a, b) = (Key::Token(1), Key::Addr([127, 0, 0, 1].into()));
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(l.check(a, t0).is_ok());
        }
        let wait = l.check(a, t0).unwrap_err();
        assert!(wait > Duration::from_millis(90) && wait <= Duration::from_millis(100), "{wait:?}");
        assert!(l.check(b, t0).is_ok(), "another caller has its own bucket");
        assert!(l.check(a, t0 + Duration::from_millis(100)).is_ok(), "one request back after 1/rate");
        assert!(l.check(a, t0 + Duration::from_millis(100)).is_err());
        for _ in 0..3 {
            assert!(l.check(a, t0 + Duration::from_secs(60)).is_ok(), "refilled, but only to the burst");
        }
        assert!(l.check(a, t0 + Duration::from_secs(60)).is_err());
        assert_eq!(l.limited.load(Relaxed), 3);
        assert!(RateLimiter::new(0, 300).is_none(), "0 turns limits off");
    }
}
