//! The report of a run: a table for people, JSON for machines.

use std::fmt::Write;

use hdrhistogram::Histogram;
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct Report {
    pub scenario: String,
    pub purpose: String,
    pub transport: String,
    pub steps: u64,
    pub tailers: u64,
    /// Output bytes the simulated commands wrote (all delivered and verified when `passed`).
    pub bytes: u64,
    pub writes: u64,
    /// From the first job created to the last step's END verified by the server (tailers may
    /// still be catching up).
    pub ingest_seconds: f64,
    pub ingest_mb_per_s: f64,
    pub writes_per_s: f64,
    pub tail_bytes: u64,
    /// From the first job created to the last tailer receiving the end of its step.
    pub tail_seconds: f64,
    pub tail_mb_per_s: f64,
    /// Agent write → tailer receive of its last byte.
    pub latency: Latency,
    /// From the last END to every step archived.
    pub archive_wait_seconds: Option<f64>,
    pub server: Option<ServerCost>,
    pub generator_cpu_seconds: f64,
    pub verification: Verification,
}

/// Percentiles in milliseconds.
#[derive(Debug, Serialize)]
pub struct Latency {
    pub samples: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl From<&Histogram<u64>> for Latency {
    fn from(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            samples: h.len(),
            p50_ms: ms(h.value_at_quantile(0.5)),
            p90_ms: ms(h.value_at_quantile(0.9)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

/// Read from `/proc/<pid>` of the server processes.
#[derive(Debug, Serialize)]
pub struct ServerCost {
    /// CPU seconds from the start until every tailer finished and every step was archived
    /// (ingest, fan-out, archiving; not the read-back).
    pub cpu_seconds_total: f64,
    /// Per GB ingested (written by the agents or published).
    pub cpu_seconds_per_gb: f64,
    /// Per GB delivered to tailers or subscribers (the fan-out cost).
    pub cpu_seconds_per_tailed_gb: Option<f64>,
    pub rss_before_mib: f64,
    pub peak_rss_mib: f64,
    /// (RSS with every step open − RSS before) / steps, for `hold_open` scenarios.
    pub rss_per_open_step_kib: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Verification {
    /// Steps whose END the server verified (length and xxh3 equal to the agent's).
    pub steps_verified: u64,
    /// Tailers that received exactly the bytes sent, once, in order.
    pub tailers_byte_exact: u64,
    pub tail_reconnects: u64,
    /// Steps read back whole from the archive equal to what was sent.
    pub archive_byte_exact: u64,
    pub archive_checked: bool,
    pub failures: Vec<String>,
}

impl ServerCost {
    /// `cpu` seconds spent moving `ingested` bytes in and `tailed` bytes out.
    pub fn per_gb(cpu: f64, ingested: u64, tailed: u64) -> (f64, Option<f64>) {
        let gb = |b: u64| (b as f64 / 1e9).max(1e-9);
        (cpu / gb(ingested), (tailed > 0).then(|| cpu / gb(tailed)))
    }
}

impl Report {
    /// Every step verified by the server, every tailer and (when checked) every archived step
    /// byte-exact.
    pub fn passed(&self) -> bool {
        let v = &self.verification;
        v.failures.is_empty()
            && v.steps_verified == self.steps
            && v.tailers_byte_exact == self.tailers
            && (!v.archive_checked || v.archive_byte_exact == self.steps)
    }

    pub fn table(&self) -> String {
        let mut t = String::new();
        let l = &self.latency;
        let v = &self.verification;
        let _ = writeln!(t, "scenario      {} ({})", self.scenario, self.transport);
        let _ = writeln!(t, "purpose       {}", self.purpose);
        let _ = writeln!(
            t,
            "steps         {} steps, {} tailers",
            self.steps, self.tailers
        );
        let _ = writeln!(
            t,
            "ingest        {:.1} MB in {:.2} s: {:.1} MB/s, {:.0} writes/s",
            self.bytes as f64 / 1e6,
            self.ingest_seconds,
            self.ingest_mb_per_s,
            self.writes_per_s
        );
        let _ = writeln!(
            t,
            "tailed        {:.1} MB in {:.2} s: {:.1} MB/s",
            self.tail_bytes as f64 / 1e6,
            self.tail_seconds,
            self.tail_mb_per_s
        );
        let _ = writeln!(
            t,
            "tail latency  p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms  ({} writes)",
            l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms, l.samples
        );
        if let Some(a) = self.archive_wait_seconds {
            let _ = writeln!(t, "archived      {a:.2} s after the last END");
        }
        if let Some(s) = &self.server {
            let _ = writeln!(
                t,
                "server        {:.2} CPU-s until tailed and archived = {:.2} CPU-s per GB ingested{}; RSS {:.1} MiB before, {:.1} MiB peak",
                s.cpu_seconds_total,
                s.cpu_seconds_per_gb,
                s.cpu_seconds_per_tailed_gb
                    .map(|c| format!(", {c:.2} per GB tailed"))
                    .unwrap_or_default(),
                s.rss_before_mib,
                s.peak_rss_mib
            );
            if let Some(k) = s.rss_per_open_step_kib {
                let _ = writeln!(t, "open steps    {k:.1} KiB of server RSS per open step");
            }
        }
        let _ = writeln!(t, "generator     {:.2} CPU-s", self.generator_cpu_seconds);
        let archive = if v.archive_checked {
            format!("{}/{}", v.archive_byte_exact, self.steps)
        } else {
            "not checked".into()
        };
        let _ = writeln!(
            t,
            "verified      END {}/{}, tailers byte-exact {}/{} ({} reconnects), archive byte-exact {archive}: {}",
            v.steps_verified,
            self.steps,
            v.tailers_byte_exact,
            self.tailers,
            v.tail_reconnects,
            if self.passed() { "PASS" } else { "FAIL" }
        );
        for f in v.failures.iter().take(10) {
            let _ = writeln!(t, "  failure: {f}");
        }
        if v.failures.len() > 10 {
            let _ = writeln!(t, "  … and {} more failures", v.failures.len() - 10);
        }
        t
    }
}
