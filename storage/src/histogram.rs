//! A Prometheus histogram of durations: fixed buckets counted without locks, rendered in the
//! text exposition format (`_bucket{le=…}`, `_sum`, `_count`).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds of the buckets, in seconds: 1 ms to 10 s, the range tail and write latencies
/// live in (dashboards read p50/p99 from these with `histogram_quantile`).
pub const BOUNDS_S: [f64; 13] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Durations observed, by bucket.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last one is `+Inf`.
    buckets: [AtomicU64; BOUNDS_S.len() + 1],
    sum_us: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = BOUNDS_S.iter().position(|&b| s <= b).unwrap_or(BOUNDS_S.len());
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(d.as_micros().min(u64::MAX as u128) as u64, Relaxed);
    }

    /// Appends the histogram as metric `name`, with `labels` (e.g. `op="append"`, or empty) on
    /// every sample. `help` and the type line are written only when `header` is set, so several
    /// label sets can share one metric.
    pub fn render(&self, out: &mut String, name: &str, help: &str, labels: &str, header: bool) {
        if header {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        }
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            cumulative += b.load(Relaxed);
            let le = BOUNDS_S.get(i).map_or_else(|| "+Inf".to_string(), |b| b.to_string());
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}");
        }
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum_us.load(Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count{braces} {cumulative}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_count_matches() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(30));
        h.observe(Duration::from_millis(30));
        h.observe(Duration::from_secs(60));
        let mut out = String::new();
        h.render(&mut out, "t_seconds", "Test.", "op=\"x\"", true);
        assert!(out.starts_with("# HELP t_seconds Test.\n# TYPE t_seconds histogram\n"));
        assert!(out.contains("t_seconds_bucket{op=\"x\",le=\"0.001\"} 1\n"));
        assert!(out.contains("t_seconds_bucket{op=\"x\",le=\"0.025\"} 1\n"));
        assert!(out.contains("t_seconds_bucket{op=\"x\",le=\"0.05\"} 3\n"));
        assert!(out.contains("t_seconds_bucket{op=\"x\",le=\"10\"} 3\n"));
        assert!(out.contains("t_seconds_bucket{op=\"x\",le=\"+Inf\"} 4\n"));
        assert!(out.contains("t_seconds_count{op=\"x\"} 4\n"));
        assert!(out.contains("t_seconds_sum{op=\"x\"} 60.0605\n"), "{out}");
        let mut plain = String::new();
        Histogram::default().render(&mut plain, "u_seconds", "U.", "", false);
        assert!(plain.starts_with("u_seconds_bucket{le=\"0.001\"} 0\n"));
        assert!(plain.contains("u_seconds_count 0\n"));
    }
}
