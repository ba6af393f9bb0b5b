//! Runs a scenario against a target: creates a job per agent, runs the agents' steps, samples the
//! server from `/proc`, prints a progress line, verifies the archive, and builds the report.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::Deserialize;
use tailrace_agent::client::{Method, Server};
use tailrace_agent::transport::TransportChoice;
use tokio::sync::{Semaphore, watch};

use crate::procstat;
use crate::report::{Latency, Report, ServerCost, Verification};
use crate::scenario::Scenario;
use crate::step::{self, Sent};
use crate::tailer::histogram;
use crate::target::Target;
use crate::verify;

/// How a run is made, beside the scenario.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Print a progress line to stderr every second.
    pub progress: bool,
    /// Folder for the agents' spool files (temporary by default).
    pub spool_dir: Option<PathBuf>,
}

/// State every simulated agent and tailer shares.
pub struct Shared {
    pub scenario: Scenario,
    pub url: String,
    pub admin_token: String,
    pub transport: TransportChoice,
    pub endpoint: Option<quinn::Endpoint>,
    pub corpus: Bytes,
    pub spool_dir: PathBuf,
    pub spool_max: u64,
    /// Where `hold_open` steps wait for each other.
    pub open_gate: Option<OpenGate>,
    /// Bounds steps between connecting and being accepted (`connect_concurrency`).
    pub connecting: Semaphore,
    pids: Vec<u32>,
    written: AtomicU64,
    writes: AtomicU64,
    tail_bytes: AtomicU64,
    steps_done: AtomicU64,
    pub tailers_checked: AtomicU64,
    pub tail_reconnects: AtomicU64,
    pub latency: Mutex<Histogram<u64>>,
    rss_all_open_kib: AtomicU64,
    started: Instant,
    /// Microseconds from `started` to the latest verified END.
    last_end_us: AtomicU64,
}

impl Shared {
    pub fn count_write(&self, n: u64) {
        self.written.fetch_add(n, Relaxed);
        self.writes.fetch_add(1, Relaxed);
    }

    pub fn count_tail(&self, n: u64) {
        self.tail_bytes.fetch_add(n, Relaxed);
    }

    /// A step's END was verified by the server now.
    pub fn mark_end(&self) {
        self.last_end_us
            .fetch_max(self.started.elapsed().as_micros() as u64, Relaxed);
    }

    pub fn sample_open_rss(&self) {
        self.rss_all_open_kib.store(rss_kib(&self.pids), Relaxed);
    }
}

/// Steps of a `hold_open` run arrive here once the server holds all they wrote; when every step
/// has arrived or failed, the server's RSS is read once and they all go on to end.
pub struct OpenGate {
    expected: u64,
    arrived: AtomicU64,
    done: watch::Sender<bool>,
}

impl OpenGate {
    fn new(expected: u64) -> Self {
        Self {
            expected,
            arrived: AtomicU64::new(0),
            done: watch::Sender::new(false),
        }
    }

    /// A ticket for one step; dropping it unused (the step failed) counts as arriving.
    pub fn ticket<'a>(&'a self, sh: &'a Shared) -> GateTicket<'a> {
        GateTicket {
            gate: self,
            sh,
            used: false,
        }
    }

    fn count(&self, sh: &Shared) {
        if self.arrived.fetch_add(1, Relaxed) + 1 == self.expected {
            sh.sample_open_rss();
            self.done.send_replace(true);
        }
    }
}

pub struct GateTicket<'a> {
    gate: &'a OpenGate,
    sh: &'a Shared,
    used: bool,
}

impl GateTicket<'_> {
    /// Arrives and waits until every step has.
    pub async fn arrive(mut self) {
        self.used = true;
        self.gate.count(self.sh);
        let _ = self.gate.done.subscribe().wait_for(|d| *d).await;
    }
}

impl Drop for GateTicket<'_> {
    fn drop(&mut self) {
        if !self.used {
            self.gate.count(self.sh);
        }
    }
}

fn rss_kib(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|&p| procstat::status_kib(p, "VmRSS"))
        .sum()
}

fn cpu_seconds(pids: &[u32]) -> f64 {
    pids.iter().filter_map(|&p| procstat::cpu_seconds(p)).sum()
}

#[derive(Debug, Deserialize)]
struct CreatedJob {
    job_id: String,
    token: String,
}

/// Runs `scenario` against `target` and reports; verification failures are in the report
/// (`Report::passed`), errors that stop the run are `Err`.
pub async fn run(scenario: Scenario, target: &Target, opts: RunOptions) -> Result<Report, String> {
    scenario.check()?;
    let spool_tmp = match &opts.spool_dir {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir(),
    }
    .map_err(|e| format!("could not make a spool folder: {e}"))?;
    let transport = scenario.transport_choice()?;
    let endpoint = match transport {
        TransportChoice::Http2 => None,
        _ => Some(
            quinn::Endpoint::client("0.0.0.0:0".parse().map_err(|_| "bind address")?)
                .map_err(|e| format!("could not open a UDP socket: {e}"))?,
        ),
    };
    // One corpus for the run; every step streams a different window of it (zero-copy slices).
    let corpus_len = scenario.total_bytes().clamp(1 << 20, 64 << 20) as usize;
    let corpus = Bytes::from(crate::corpus::generate(scenario.seed, corpus_len));
    let concurrent = scenario.agents as usize;
    let rss_before = rss_kib(&target.pids);
    let cpu_before = cpu_seconds(&target.pids);
    let gen_cpu_before = procstat::self_cpu_seconds();
    let sh = Arc::new(Shared {
        corpus,
        open_gate: scenario.hold_open.then(|| OpenGate::new(concurrent as u64)),
        connecting: Semaphore::new(scenario.connect_concurrency.max(1) as usize),
        url: target.url.clone(),
        admin_token: target.admin_token.clone(),
        transport,
        endpoint,
        spool_dir: spool_tmp.path().to_path_buf(),
        spool_max: 64 << 20,
        pids: target.pids.clone(),
        written: AtomicU64::new(0),
        writes: AtomicU64::new(0),
        tail_bytes: AtomicU64::new(0),
        steps_done: AtomicU64::new(0),
        tailers_checked: AtomicU64::new(0),
        tail_reconnects: AtomicU64::new(0),
        latency: Mutex::new(histogram()),
        rss_all_open_kib: AtomicU64::new(0),
        started: Instant::now(),
        last_end_us: AtomicU64::new(0),
        scenario,
    });
    let server = Server::parse(&sh.url).map_err(|e| e.to_string())?;

    let peak_rss = Arc::new(AtomicU64::new(rss_before));
    let running = Arc::new(AtomicBool::new(true));
    let sampler = tokio::spawn(sample_rss(sh.clone(), peak_rss.clone(), running.clone()));
    let progress = opts
        .progress
        .then(|| tokio::spawn(print_progress(sh.clone(), running.clone())));

    let agents = (0..sh.scenario.agents).map(|a| {
        let sh = sh.clone();
        let server = server.clone();
        tokio::spawn(async move { agent(&sh, &server, a).await })
    });
    let mut sent = Vec::new();
    let mut failures = Vec::new();
    for h in agents.collect::<Vec<_>>() {
        match h.await {
            Ok(Ok(s)) => sent.extend(s),
            Ok(Err(e)) => failures.push(e),
            Err(e) => failures.push(format!("agent task failed: {e}")),
        }
    }
    let ingest_secs = (sh.last_end_us.load(Relaxed) as f64 / 1e6).max(1e-6);
    let tail_secs = sh.started.elapsed().as_secs_f64();

    let mut archive_ok = 0;
    let mut archive_secs = None;
    let mut cpu_total = cpu_seconds(&sh.pids) - cpu_before;
    if sh.scenario.verify_archive && failures.is_empty() {
        match verify::wait_archived(&server, &sh.admin_token, &sent).await {
            Ok(()) => {
                archive_secs = Some(sh.started.elapsed().as_secs_f64() - ingest_secs);
                cpu_total = cpu_seconds(&sh.pids) - cpu_before;
                let checks = stream::iter(
                    sent.iter()
                        .map(|s| verify::read_back(&server, &sh.admin_token, s)),
                )
                .buffer_unordered(8);
                let results: Vec<Result<(), String>> = checks.collect().await;
                for r in results {
                    match r {
                        Ok(()) => archive_ok += 1,
                        Err(e) => failures.push(e),
                    }
                }
            }
            Err(e) => failures.push(e),
        }
    }
    running.store(false, Relaxed);
    let _ = sampler.await;
    if let Some(p) = progress {
        let _ = p.await;
    }

    let sc = &sh.scenario;
    let bytes = sh.written.load(Relaxed);
    let steps = sc.steps();
    let latency = Latency::from(&*sh.latency.lock());
    let open_rss = sh.rss_all_open_kib.load(Relaxed);
    Ok(Report {
        scenario: sc.name.clone(),
        purpose: sc.purpose.clone(),
        transport: sc.transport.clone(),
        steps,
        tailers: u64::from(sc.tailers_per_step) * steps + u64::from(sc.hot_step_tailers),
        bytes,
        writes: sh.writes.load(Relaxed),
        ingest_seconds: ingest_secs,
        ingest_mb_per_s: bytes as f64 / 1e6 / ingest_secs,
        writes_per_s: sh.writes.load(Relaxed) as f64 / ingest_secs,
        tail_bytes: sh.tail_bytes.load(Relaxed),
        tail_seconds: tail_secs,
        tail_mb_per_s: sh.tail_bytes.load(Relaxed) as f64 / 1e6 / tail_secs,
        latency,
        archive_wait_seconds: archive_secs,
        server: (!sh.pids.is_empty()).then(|| {
            let (cpu_seconds_per_gb, cpu_seconds_per_tailed_gb) =
                ServerCost::per_gb(cpu_total, bytes, sh.tail_bytes.load(Relaxed));
            ServerCost {
                cpu_seconds_total: cpu_total,
                cpu_seconds_per_gb,
                cpu_seconds_per_tailed_gb,
                rss_before_mib: rss_before as f64 / 1024.0,
                peak_rss_mib: peak_rss.load(Relaxed) as f64 / 1024.0,
                rss_per_open_step_kib: (sc.hold_open && open_rss > 0)
                    .then(|| (open_rss.saturating_sub(rss_before)) as f64 / steps as f64),
            }
        }),
        generator_cpu_seconds: procstat::self_cpu_seconds() - gen_cpu_before,
        verification: Verification {
            steps_verified: sent.len() as u64,
            tailers_byte_exact: sh.tailers_checked.load(Relaxed),
            tail_reconnects: sh.tail_reconnects.load(Relaxed),
            archive_byte_exact: archive_ok,
            archive_checked: sc.verify_archive,
            failures,
        },
    })
}

/// One agent: a job, then its steps one after another.
async fn agent(sh: &Arc<Shared>, server: &Server, a: u32) -> Result<Vec<Sent>, String> {
    let sc = &sh.scenario;
    let body = serde_json::json!({ "project": format!("load/{}/run", sc.name), "name": format!("agent-{a}") });
    let job: CreatedJob = match server
        .json(
            Method::POST,
            "/api/v1/jobs",
            Some(&sh.admin_token),
            Some(body),
        )
        .await
    {
        Ok(j) => j,
        Err(e) => {
            // Its step will never reach the gate: count it there as failed.
            if let Some(g) = &sh.open_gate {
                drop(g.ticket(sh));
            }
            return Err(format!("could not create a job: {e}"));
        }
    };
    let mut sent = Vec::new();
    for s in 0..sc.steps_per_agent {
        let index = u64::from(a) * u64::from(sc.steps_per_agent) + u64::from(s);
        let hot = if index == 0 { sc.hot_step_tailers } else { 0 };
        let step = format!("s{s}");
        sent.push(
            step::run(
                sh,
                &job.job_id,
                &job.token,
                &step,
                index,
                sc.tailers_per_step + hot,
            )
            .await?,
        );
        sh.steps_done.fetch_add(1, Relaxed);
    }
    Ok(sent)
}

async fn sample_rss(sh: Arc<Shared>, peak: Arc<AtomicU64>, running: Arc<AtomicBool>) {
    while running.load(Relaxed) {
        peak.fetch_max(rss_kib(&sh.pids), Relaxed);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn print_progress(sh: Arc<Shared>, running: Arc<AtomicBool>) {
    let started = Instant::now();
    let total = sh.scenario.total_bytes() as f64 / 1e6;
    let mut last = (Instant::now(), 0u64);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if !running.load(Relaxed) {
            return;
        }
        let w = sh.written.load(Relaxed);
        let rate = (w - last.1) as f64 / 1e6 / last.0.elapsed().as_secs_f64();
        last = (Instant::now(), w);
        let p99 = sh.latency.lock().value_at_quantile(0.99) as f64 / 1000.0;
        eprintln!(
            "[{:6.1}s] steps {}/{} done, {:.1}/{total:.1} MB written ({rate:.1} MB/s now), {:.1} MB tailed, tail p99 so far {p99:.1} ms",
            started.elapsed().as_secs_f64(),
            sh.steps_done.load(Relaxed),
            sh.scenario.steps(),
            w as f64 / 1e6,
            sh.tail_bytes.load(Relaxed) as f64 / 1e6,
        );
    }
}
