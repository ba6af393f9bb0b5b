//! `tailrace run`: run one step's command and deliver its output, end to end.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tailrace_protocol::{JobId, Open, StepId};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::client::Server;
use crate::command::{run_command, CommandSpec};
use crate::sender::{deliver, DeliveryState, EndMeta};
use crate::spool::Spool;
use crate::transport::{Connector, TransportChoice, Trust};

/// Everything `tailrace run` needs.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub server: String,
    pub token: String,
    pub job: String,
    pub step: String,
    pub name: String,
    pub command: CommandSpec,
    pub transport: TransportChoice,
    pub trust: Option<Trust>,
    /// Where the spool file lives (unlinked; it vanishes with the agent).
    pub spool_dir: PathBuf,
    /// Bound on bytes the server has not acknowledged; at the bound the command blocks.
    pub spool_max: u64,
    /// How long to keep trying to deliver after the command ended.
    pub delivery_timeout: Duration,
    /// Silence after which a QUIC connection counts as lost.
    pub idle_timeout: Duration,
}

/// How the run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutcome {
    /// What the agent should exit with: the command's code (128+N for signal N), or 75 when the
    /// command succeeded but its output could not be delivered.
    pub exit_code: i32,
    pub delivered: bool,
}

/// Exit code when output could not be delivered (EX_TEMPFAIL).
pub const EXIT_UNDELIVERED: i32 = 75;
/// Exit code when the server refused the step before the command started.
pub const EXIT_REFUSED: i32 = 2;

pub async fn run_step(opts: RunOptions) -> Result<RunOutcome, String> {
    let job = JobId::new(opts.job.clone()).map_err(|e| e.to_string())?;
    let step = StepId::new(opts.step.clone()).map_err(|e| e.to_string())?;
    let server = Server::parse(&opts.server).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(&opts.spool_dir).map_err(|e| format!("could not create spool dir {}: {e}", opts.spool_dir.display()))?;
    let spool = Arc::new(
        Spool::create(&opts.spool_dir, opts.spool_max, crate::spool::DEFAULT_MEM_MAX)
            .map_err(|e| format!("could not create spool in {}: {e}", opts.spool_dir.display()))?,
    );
    let name = if opts.name.is_empty() { opts.command.argv.join(" ") } else { opts.name.clone() };
    let open = Open { job, step, name, token: opts.token.clone() };
    let connector = Connector::new(server, opts.transport, opts.trust.clone()).with_idle_timeout(opts.idle_timeout);

    let (end_tx, end_rx) = watch::channel(None);
    let (state_tx, mut state_rx) = watch::channel(DeliveryState::Connecting);
    let sender = tokio::spawn(deliver(connector, spool.clone(), open, end_rx, opts.delivery_timeout, state_tx));

    // Fail fast on a refusal (bad token, unknown job) before the command runs. If the first
    // attempt merely fails (server down, network out), run at once: the spool keeps the output
    // until the server is back, so the build is never held up by the output path.
    let first = tokio::time::timeout(Duration::from_secs(10), state_rx.wait_for(|s| *s != DeliveryState::Connecting))
        .await
        .ok()
        .and_then(|r| r.ok().map(|s| s.clone()));
    match first {
        Some(DeliveryState::Failed(msg)) => return Err(format!("server refused the step: {msg}")),
        Some(DeliveryState::Accepted | DeliveryState::Verified) => {}
        Some(_) | None => warn!("server not reachable yet; running the command and spooling its output"),
    }

    let (cancel_tx, cancel_rx) = watch::channel(false);
    let signals = tokio::spawn(async move {
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
            return;
        };
        tokio::select! {
            _ = term.recv() => info!("SIGTERM: stopping the command; its output will still be delivered"),
            _ = int.recv() => info!("SIGINT: stopping the command; its output will still be delivered"),
        }
        let _ = cancel_tx.send(true);
        // Stay subscribed so further signals do not kill the agent before delivery ends.
        loop {
            tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        }
    });

    let result = run_command(&opts.command, spool.clone(), cancel_rx).await;
    spool.close();
    let _ = end_tx.send(Some(EndMeta {
        exit_code: result.exit_code,
        reason: result.reason,
        duration_ms: result.duration.as_millis() as u64,
    }));
    let _ = sender.await;
    signals.abort();
    let command_code = match (result.exit_code, result.signal) {
        (Some(c), _) => c,
        (None, Some(sig)) => 128 + sig,
        (None, None) => 1,
    };
    let state = state_rx.borrow().clone();
    match state {
        DeliveryState::Verified => Ok(RunOutcome { exit_code: command_code, delivered: true }),
        DeliveryState::Failed(msg) => {
            error!(%msg, "output not delivered");
            eprintln!("tailrace: output not delivered: {msg}");
            let exit_code = if command_code == 0 { EXIT_UNDELIVERED } else { command_code };
            Ok(RunOutcome { exit_code, delivered: false })
        }
        other => Err(format!("delivery ended in state {other:?}")),
    }
}
