//! Per-token ingest quotas, over every transport: steps streaming at once (refused beyond the
//! limit, and the agent retries) and output bytes per second (a faster agent is paced, its spool
//! holding the rest). Requests are not counted here; ingest is limited by what it costs.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Usage of every token streaming now, by token id. An entry lives while the token has a
/// stream open, so the map is bounded by the streams open.
#[derive(Debug, Default)]
pub struct TokenQuotas {
    usage: Mutex<HashMap<String, Usage>>,
}

#[derive(Debug)]
struct Usage {
    streams: u32,
    /// Bytes the token may still send now; negative is debt its streams wait out.
    allowance: f64,
    /// When the allowance was last computed; `None` before the first charge.
    at: Option<Instant>,
}

/// One open stream of a token; dropping it frees its place.
#[derive(Debug)]
pub struct StreamPermit<'a> {
    quotas: &'a TokenQuotas,
    id: String,
}

impl Drop for StreamPermit<'_> {
    fn drop(&mut self) {
        let mut usage = self.quotas.usage.lock();
        if let Some(u) = usage.get_mut(&self.id) {
            u.streams -= 1;
            if u.streams == 0 {
                usage.remove(&self.id);
            }
        }
    }
}

impl TokenQuotas {
    /// Takes a stream place for token `id`, unless it already has `limit` (0: no limit); the
    /// error is how many it has.
    pub fn open(&self, id: &str, limit: u32) -> Result<StreamPermit<'_>, u32> {
        let mut usage = self.usage.lock();
        let u = usage.entry(id.to_string()).or_insert_with(|| Usage { streams: 0, allowance: 0.0, at: None });
        if limit > 0 && u.streams >= limit {
            return Err(u.streams);
        }
        u.streams += 1;
        Ok(StreamPermit { quotas: self, id: id.to_string() })
    }

    /// Charges `bytes` to the permit's token at `rate` bytes per second (0: no limit) and says
    /// how long the stream should wait before taking more. The allowance refills at `rate` up
    /// to one second's worth, so short bursts pass at once.
    pub fn charge(&self, permit: &StreamPermit<'_>, bytes: u64, rate: u64, now: Instant) -> Duration {
        if rate == 0 {
            return Duration::ZERO;
        }
        let mut usage = self.usage.lock();
        let Some(u) = usage.get_mut(&permit.id) else { return Duration::ZERO };
        let rate = rate as f64;
        let elapsed = u.at.map_or(0.0, |at| now.saturating_duration_since(at).as_secs_f64());
        u.at = Some(u.at.map_or(now, |at| now.max(at)));
        u.allowance = (u.allowance + elapsed * rate).min(rate) - bytes as f64;
        if u.allowance >= 0.0 { Duration::ZERO } else { Duration::from_secs_f64(-u.allowance / rate) }
    }

    /// Streams token `id` has open.
    pub fn streams(&self, id: &str) -> u32 {
        self.usage.lock().get(id).map_or(0, |u| u.streams)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_places_are_limited_and_freed() {
        let q = TokenQuotas::default();
        let a = q.open("t", 2).unwrap();
        let b = q.open("t", 2).unwrap();
        assert_eq!(q.open("t", 2).unwrap_err(), 2);
        assert!(q.open("other", 2).is_ok(), "another token is not affected");
        drop(a);
        let _c = q.open("t", 2).unwrap();
        drop(b);
        assert_eq!(q.streams("t"), 1);
        assert!(q.open("t", 0).is_ok(), "0 is no limit");
    }

    #[test]
    fn bytes_are_paced_at_the_rate_over_all_streams() {
        let q = TokenQuotas::default();
        let (a, b) = (q.open("t", 0).unwrap(), q.open("t", 0).unwrap());
        let t0 = Instant::now();
        // Nothing saved up at first: 1,000 bytes at 1,000/s is one second of debt.
        assert_eq!(q.charge(&a, 1000, 1000, t0), Duration::from_secs(1));
        // The second stream of the same token shares the debt.
        assert_eq!(q.charge(&b, 500, 1000, t0), Duration::from_millis(1500));
        // 1.5 s later the debt is paid; a second's allowance at most builds up after that.
        let later = t0 + Duration::from_secs(10);
        assert_eq!(q.charge(&a, 1000, 1000, later), Duration::ZERO);
        assert_eq!(q.charge(&a, 1, 1000, later), Duration::from_millis(1));
        assert_eq!(q.charge(&a, 1_000_000, 0, later), Duration::ZERO, "0 is no limit");
    }
}
