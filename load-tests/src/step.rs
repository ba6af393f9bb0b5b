//! One simulated step: the agent's own spool and sender (`tailrace_agent`), fed by a "command"
//! that writes slices of the corpus at the scenario's rate, with its tailers listening from
//! byte 0. Ends with the server's verified END and every tailer's byte-exact check.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use tailrace_agent::client::Server;
use tailrace_agent::sender::{DeliveryState, EndMeta, deliver};
use tailrace_agent::spool::Spool;
use tailrace_agent::transport::Connector;
use tailrace_protocol::{EndReason, JobId, Open, StepId, StreamTag};
use tokio::sync::{oneshot, watch};

use crate::run::Shared;
use crate::tailer::{TailSpec, Timeline, follow};

/// A step that ended verified: what was sent.
#[derive(Debug, Clone)]
pub struct Sent {
    pub job: String,
    pub step: String,
    pub length: u64,
    pub checksum: String,
}

/// Runs step `step` of `job` with `tailers` tailers; `index` picks where in the corpus its bytes
/// start, so steps differ.
pub async fn run(
    sh: &Arc<Shared>,
    job: &str,
    token: &str,
    step: &str,
    index: u64,
    tailers: u32,
) -> Result<Sent, String> {
    let sc = &sh.scenario;
    let ticket = sh.open_gate.as_ref().map(|g| g.ticket(sh));
    let connecting = sh.connecting.acquire().await.map_err(|e| e.to_string())?;
    let spool = Arc::new(
        Spool::create(&sh.spool_dir, sh.spool_max, sc.spool_mem as usize)
            .map_err(|e| format!("could not create a spool: {e}"))?,
    );
    let open = Open {
        job: JobId::new(job).map_err(|e| e.to_string())?,
        step: StepId::new(step).map_err(|e| e.to_string())?,
        name: format!("load {step}"),
        token: token.to_string(),
    };
    let server = Server::parse(&sh.url).map_err(|e| e.to_string())?;
    let mut connector = Connector::new(server.clone(), sh.transport, None)
        .with_idle_timeout(Duration::from_secs(30));
    if let Some(ep) = &sh.endpoint {
        connector = connector.with_endpoint(ep.clone());
    }
    let (end_tx, end_rx) = watch::channel(None);
    let (state_tx, mut state_rx) = watch::channel(DeliveryState::Connecting);
    let sender = tokio::spawn(deliver(
        connector,
        spool.clone(),
        open,
        end_rx,
        Duration::from_secs(600),
        state_tx,
    ));
    let accepted = state_rx
        .wait_for(|s| !matches!(s, DeliveryState::Connecting | DeliveryState::Retrying))
        .await
        .map(|s| s.clone());
    drop(connecting);
    if let Ok(DeliveryState::Failed(msg)) = accepted {
        return Err(format!("{job}/{step}: server refused the step: {msg}"));
    }

    // Tailers connect before the first byte is written, so they see the whole step live.
    let timeline = Arc::new(Timeline::default());
    let mut tails = Vec::new();
    for _ in 0..tailers {
        let spec = TailSpec {
            authority: server.authority.clone(),
            token: sh.admin_token.clone(),
            job: job.to_string(),
            step: step.to_string(),
            pause: Duration::from_millis(sc.tailer_pause_ms),
        };
        let (tx, rx) = oneshot::channel();
        let counters = sh.clone();
        let tl = timeline.clone();
        tails.push((
            rx,
            tokio::spawn(async move { follow(spec, tl, tx, |n| counters.count_tail(n)).await }),
        ));
    }
    let mut handles = Vec::new();
    for (rx, h) in tails {
        let _ = rx.await;
        handles.push(h);
    }

    let started = Instant::now();
    write(sh, &spool, &timeline, index, started).await?;
    if let Some(t) = ticket {
        hold_open(&spool, t).await;
    }
    spool.close();
    let _ = end_tx.send(Some(EndMeta {
        exit_code: Some(0),
        reason: EndReason::Exited,
        duration_ms: started.elapsed().as_millis() as u64,
    }));
    let _ = sender.await;
    let state = state_rx.borrow().clone();
    if state != DeliveryState::Verified {
        return Err(format!("{job}/{step}: delivery ended {state:?}"));
    }
    sh.mark_end();
    let (length, checksum) = spool.checksum();
    let sent = Sent {
        job: job.to_string(),
        step: step.to_string(),
        length,
        checksum,
    };
    let mut latency: Option<Histogram<u64>> = None;
    for h in handles {
        let t = h.await.map_err(|e| format!("tailer task failed: {e}"))??;
        sh.tailers_checked
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        crate::verify::check(&sent, t.length, &t.checksum, "a tailer")?;
        sh.tail_reconnects.fetch_add(
            u64::from(t.reconnects),
            std::sync::atomic::Ordering::Relaxed,
        );
        match latency.as_mut() {
            Some(l) => l.add(&t.latency).map_err(|e| e.to_string())?,
            None => latency = Some(t.latency),
        }
    }
    if let Some(l) = latency {
        sh.latency.lock().add(&l).map_err(|e| e.to_string())?;
    }
    Ok(sent)
}

/// The simulated command: writes `step_bytes` of the corpus in `write_bytes` pieces, paced to
/// `rate` when one is set. Each write's time is taken before it may wait for spool room, so in
/// as-fast-as-possible runs latency includes the time the command was blocked by backpressure.
async fn write(
    sh: &Shared,
    spool: &Spool,
    timeline: &Timeline,
    index: u64,
    started: Instant,
) -> Result<(), String> {
    let sc = &sh.scenario;
    let corpus: &Bytes = &sh.corpus;
    let mut at = (index.wrapping_mul(7_919_993) % corpus.len() as u64) as usize;
    let mut written = 0u64;
    while written < sc.step_bytes {
        let n = (sc.write_bytes.min(sc.step_bytes - written) as usize).min(corpus.len() - at);
        if sc.rate > 0 {
            let due = started + Duration::from_secs_f64(written as f64 / sc.rate as f64);
            tokio::time::sleep_until(due.into()).await;
        }
        let chunk = corpus.slice(at..at + n);
        timeline.push(written + n as u64, Instant::now());
        spool
            .append(StreamTag::Stdout, tailrace_agent::now_us(), chunk)
            .await
            .map_err(|e| format!("spool append failed: {e}"))?;
        written += n as u64;
        at = (at + n) % corpus.len();
        sh.count_write(n as u64);
    }
    Ok(())
}

/// Waits until the server holds every byte, then until every step of the run does, so the
/// server's memory can be read with all of them open.
async fn hold_open(spool: &Spool, ticket: crate::run::GateTicket<'_>) {
    spool.wait_acked(spool.written().len).await;
    ticket.arrive().await;
}
