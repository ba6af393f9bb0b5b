//! Ingest counters, rendered in the Prometheus text format as `tailrace_ingest_*`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use tailrace_storage::histogram::Histogram;

/// Counters of the ingest path. Cheap to bump from any task.
#[derive(Debug, Default)]
pub struct IngestMetrics {
    pub streams_opened: AtomicU64,
    pub streams_active: AtomicU64,
    pub bytes_written: AtomicU64,
    pub bytes_resent: AtomicU64,
    pub data_frames: AtomicU64,
    pub acks_sent: AtomicU64,
    pub steps_verified: AtomicU64,
    pub errors_bad_frame: AtomicU64,
    pub errors_unauthorized: AtomicU64,
    pub errors_gap: AtomicU64,
    pub errors_mismatch: AtomicU64,
    pub errors_storage: AtomicU64,
    pub errors_quota: AtomicU64,
    /// DATA chunks in which a registered secret was masked.
    pub masked_chunks: AtomicU64,
    /// Microseconds streams were paced by per-token byte limits.
    pub throttled_us: AtomicU64,
    /// Time the live tier took to take one batch of output.
    pub append_seconds: Histogram,
    /// Time the live tier took to make written bytes durable before they were acknowledged.
    pub sync_seconds: Histogram,
}

impl IngestMetrics {
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Relaxed);
    }

    /// Appends the metrics in Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let counters: [(&str, &str, &AtomicU64); 7] = [
            ("tailrace_ingest_masked_chunks_total", "DATA chunks in which ingest masked a registered secret.", &self.masked_chunks),
            ("tailrace_ingest_streams_opened_total", "Step streams opened by agents.", &self.streams_opened),
            ("tailrace_ingest_bytes_total", "New output bytes written to the live tier.", &self.bytes_written),
            ("tailrace_ingest_resent_bytes_total", "Bytes received again and trimmed by the offset rule.", &self.bytes_resent),
            ("tailrace_ingest_data_frames_total", "DATA frames received.", &self.data_frames),
            ("tailrace_ingest_acks_total", "ACK frames sent for durable bytes.", &self.acks_sent),
            ("tailrace_ingest_steps_verified_total", "Steps whose END matched length and checksum.", &self.steps_verified),
        ];
        for (name, help, c) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}", c.load(Relaxed));
        }
        let _ = writeln!(
            out,
            "# HELP tailrace_ingest_streams_active Step streams open now.\n# TYPE tailrace_ingest_streams_active gauge\ntailrace_ingest_streams_active {}",
            self.streams_active.load(Relaxed)
        );
        let _ = writeln!(out, "# HELP tailrace_ingest_errors_total Streams refused or failed, by kind.\n# TYPE tailrace_ingest_errors_total counter");
        for (kind, c) in [
            ("bad_frame", &self.errors_bad_frame),
            ("unauthorized", &self.errors_unauthorized),
            ("gap", &self.errors_gap),
            ("mismatch", &self.errors_mismatch),
            ("storage", &self.errors_storage),
            ("quota", &self.errors_quota),
        ] {
            let _ = writeln!(out, "tailrace_ingest_errors_total{{kind=\"{kind}\"}} {}", c.load(Relaxed));
        }
        let _ = writeln!(
            out,
            "# HELP tailrace_ingest_throttled_seconds_total Time streams were paced by per-token byte limits.\n# TYPE tailrace_ingest_throttled_seconds_total counter\ntailrace_ingest_throttled_seconds_total {}",
            self.throttled_us.load(Relaxed) as f64 / 1e6
        );
        let name = "tailrace_ingest_live_write_seconds";
        let help = "Live-tier latency of ingest writes: op=append takes a batch of output, op=sync makes it durable before the ACK (no wait on Redis, whose appends are durable when answered).";
        self.append_seconds.render(out, name, help, "op=\"append\"", true);
        self.sync_seconds.render(out, name, help, "op=\"sync\"", false);
    }
}
