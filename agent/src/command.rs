//! Runs the step's command: stdout and stderr (or one pseudo-terminal) read in arrival order into
//! the spool and echoed to the agent's own output; stopped cleanly on cancel or timeout.
//!
//! The command runs in its own process group (its own session under `--pty`) so that stopping it
//! reaches everything it started: SIGTERM to the group, then SIGKILL after the grace period.
//! Every byte it printed before it died is still read and spooled.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tailrace_protocol::{EndReason, StreamTag};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tracing::warn;

use crate::now_us;
use crate::mask::{Patterns, StreamMasker};
use crate::spool::Spool;

/// What to run and how.
#[derive(Debug, Clone)]
pub struct CommandSpec {
    pub argv: Vec<String>,
    /// Run under a pseudo-terminal so tools keep colours and progress bars.
    pub pty: bool,
    pub timeout: Option<Duration>,
    /// Time between SIGTERM and SIGKILL when stopping the command.
    pub kill_grace: Duration,
    /// Copy output to the agent's own stdout/stderr too.
    pub echo: bool,
    /// Values replaced by `***` before output is spooled or echoed (see [`crate::mask`]); the
    /// command may add more with `::add-mask::VALUE` lines.
    pub secrets: Vec<Vec<u8>>,
}

/// How the command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandResult {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub reason: EndReason,
    pub duration: Duration,
}

/// How long to keep reading the pipes after the command exited, for output of processes it left
/// running in the background that still hold them open.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(5);
const READ_CHUNK: usize = 64 * 1024;

/// Runs the command to its end; `cancel` turning true stops it (reason `cancelled`).
pub async fn run_command(spec: &CommandSpec, spool: Arc<Spool>, mut cancel: watch::Receiver<bool>) -> CommandResult {
    let started = Instant::now();
    let (tx, rx) = mpsc::channel::<(StreamTag, Bytes)>(8);
    let child = if spec.pty { spawn_pty(&spec.argv, tx) } else { spawn_pipes(&spec.argv, tx) };
    let mut patterns = crate::mask::Patterns::default();
    for secret in &spec.secrets {
        if !patterns.add(secret) {
            warn!(len = secret.len(), "a secret shorter than {} characters is not masked", crate::mask::MIN_SECRET);
        }
    }
    let pump = tokio::spawn(pump(rx, spool.clone(), spec.echo, patterns));
    let Started { mut child, readers } = match child {
        Ok(c) => c,
        Err(e) => {
            let msg = format!("tailrace: could not start {:?}: {e}\n", spec.argv.first().map(String::as_str).unwrap_or(""));
            eprint!("{msg}");
            let _ = pump.await;
            let _ = spool.append(StreamTag::Stderr, now_us(), Bytes::from(msg)).await;
            return CommandResult { exit_code: Some(127), signal: None, reason: EndReason::FailedToStart, duration: started.elapsed() };
        }
    };
    let pgid = child.id().map(|p| p as i32);
    let mut reason = EndReason::Exited;
    let deadline = spec.timeout.map(|t| tokio::time::Instant::now() + t);
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            _ = cancel.changed(), if reason == EndReason::Exited => {
                if *cancel.borrow() {
                    reason = EndReason::Cancelled;
                    stop_group(pgid, spec.kill_grace);
                }
            }
            _ = sleep_until(deadline), if reason == EndReason::Exited => {
                reason = EndReason::TimedOut;
                stop_group(pgid, spec.kill_grace);
            }
        }
    };
    let duration = started.elapsed();
    // Read the pipes to their end; if something the command left behind keeps them open, stop
    // reading after a while. Either way every chunk already read is spooled: the pump ends
    // only once the readers are gone and the channel is empty.
    let aborts: Vec<_> = readers.iter().map(|r| r.abort_handle()).collect();
    if tokio::time::timeout(DRAIN_AFTER_EXIT, futures_util::future::join_all(readers)).await.is_err() {
        warn!("output pipes still open {DRAIN_AFTER_EXIT:?} after the command exited (a background process?); stopped reading them");
        aborts.iter().for_each(|a| a.abort());
    }
    let _ = pump.await;
    use std::os::unix::process::ExitStatusExt;
    let (exit_code, signal) = match status {
        Ok(s) => (s.code(), s.signal()),
        Err(e) => {
            warn!(error = %e, "could not wait for the command");
            (None, None)
        }
    };
    CommandResult { exit_code, signal, reason, duration }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// SIGTERM to the command's process group now, SIGKILL after `grace` unless it is gone.
fn stop_group(pgid: Option<i32>, grace: Duration) {
    let Some(pgid) = pgid else { return };
    // SAFETY: kill(2) with a negative pid signals a process group; it has no memory effects.
    unsafe { libc::kill(-pgid, libc::SIGTERM) };
    tokio::spawn(async move {
        tokio::time::sleep(grace).await;
        // SAFETY: as above. If the group is gone this fails with ESRCH, which is fine.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
    });
}

/// Bytes the local echo may lag behind the spool before it skips output.
const ECHO_BACKLOG: usize = 8 * 1024 * 1024;

/// A chunk for the local echo, holding its share of the echo's byte budget until written.
type EchoChunk = (StreamTag, Bytes, tokio::sync::OwnedSemaphorePermit);

/// Moves chunks into the spool, in arrival order. The local echo runs beside it and never holds
/// spooling up: if the agent's own stdout is slower than the command by more than
/// `ECHO_BACKLOG` bytes (a slow terminal, a full pipe), the echo skips output and says so — the
/// server holds every byte regardless.
async fn pump(mut rx: mpsc::Receiver<(StreamTag, Bytes)>, spool: Arc<Spool>, echo: bool, mut patterns: Patterns) {
    let budget = Arc::new(tokio::sync::Semaphore::new(ECHO_BACKLOG));
    let (echo_tx, echo_task) = if echo {
        let (tx, rx) = mpsc::unbounded_channel::<EchoChunk>();
        (Some(tx), Some(tokio::spawn(echo_out(rx))))
    } else {
        (None, None)
    };
    let mut skipped = 0u64;
    // One masker per stream: a secret split across writes is found within its own stream.
    let mut maskers: Vec<(StreamTag, StreamMasker)> = Vec::new();
    loop {
        let (tag, bytes) = match rx.recv().await {
            Some((tag, raw)) => {
                let i = match maskers.iter().position(|(t, _)| *t == tag) {
                    Some(i) => i,
                    None => {
                        maskers.push((tag, StreamMasker::new()));
                        maskers.len() - 1
                    }
                };
                (tag, maskers[i].1.push(&mut patterns, &raw))
            }
            // The command is done: release what the maskers held back, then stop.
            None => match maskers.pop() {
                Some((tag, mut m)) => (tag, m.finish(&mut patterns)),
                None => break,
            },
        };
        if bytes.is_empty() {
            continue;
        }
        if let Err(e) = spool.append(tag, now_us(), bytes.clone()).await {
            // The spool is the only copy: without it nothing can be delivered. Say so loudly.
            eprintln!("tailrace: could not write the output spool: {e}");
            warn!(error = %e, "spool write failed; output is being lost");
        }
        if let Some(tx) = &echo_tx {
            let len = bytes.len();
            match budget.clone().try_acquire_many_owned(len.min(ECHO_BACKLOG) as u32) {
                Ok(permit) => {
                    let _ = tx.send((tag, bytes, permit));
                }
                Err(_) => {
                    if skipped == 0 {
                        warn!("local echo cannot keep up; skipping echoed output (the server still gets every byte)");
                    }
                    skipped += len as u64;
                }
            }
        }
    }
    drop(echo_tx);
    if let Some(t) = echo_task {
        let _ = t.await;
    }
    if skipped > 0 {
        eprintln!("tailrace: {skipped} bytes were not echoed locally because this terminal was too slow; the server has them all");
    }
}

/// Writes echoed chunks to the agent's stdout/stderr, coalescing whatever is queued.
async fn echo_out(mut rx: mpsc::UnboundedReceiver<EchoChunk>) {
    let mut stdout = tokio::io::stdout();
    let mut stderr = tokio::io::stderr();
    let mut batch = BytesMut::new();
    while let Some(first) = rx.recv().await {
        let mut tag = first.0;
        let mut held = vec![first];
        // Coalesce queued chunks of the same stream into one write.
        while let Ok(next) = rx.try_recv() {
            if next.0 != tag {
                write_batch(&mut stdout, &mut stderr, tag, &mut batch, &mut held).await;
                tag = next.0;
            }
            held.push(next);
        }
        write_batch(&mut stdout, &mut stderr, tag, &mut batch, &mut held).await;
    }
    let _ = stdout.flush().await;
    let _ = stderr.flush().await;
}

async fn write_batch(
    stdout: &mut tokio::io::Stdout,
    stderr: &mut tokio::io::Stderr,
    tag: StreamTag,
    batch: &mut BytesMut,
    held: &mut Vec<EchoChunk>,
) {
    batch.clear();
    for (_, b, _) in held.iter() {
        batch.extend_from_slice(b);
    }
    // A closed stdout (e.g. `| head`) must not stop the step: keep draining.
    let _ = if tag == StreamTag::Stderr { stderr.write_all(batch).await } else { stdout.write_all(batch).await };
    // Dropping the chunks returns their bytes to the echo budget.
    held.clear();
}

async fn read_into(mut r: impl AsyncRead + Unpin, tag: StreamTag, tx: mpsc::Sender<(StreamTag, Bytes)>) {
    loop {
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        match r.read_buf(&mut buf).await {
            Ok(0) => return,
            Ok(_) => {
                if tx.send((tag, buf.freeze())).await.is_err() {
                    return;
                }
            }
            // EIO is how a pty master reports that the terminal side closed.
            Err(_) => return,
        }
    }
}

/// A started command and the tasks reading its output.
struct Started {
    child: tokio::process::Child,
    readers: Vec<tokio::task::JoinHandle<()>>,
}

fn spawn_pipes(argv: &[String], tx: mpsc::Sender<(StreamTag, Bytes)>) -> std::io::Result<Started> {
    let (prog, args) = argv.split_first().ok_or_else(|| std::io::Error::other("no command given"))?;
    let mut child = tokio::process::Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(false)
        .spawn()?;
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        readers.push(tokio::spawn(read_into(out, StreamTag::Stdout, tx.clone())));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(tokio::spawn(read_into(err, StreamTag::Stderr, tx)));
    }
    Ok(Started { child, readers })
}

fn spawn_pty(argv: &[String], tx: mpsc::Sender<(StreamTag, Bytes)>) -> std::io::Result<Started> {
    let (prog, args) = argv.split_first().ok_or_else(|| std::io::Error::other("no command given"))?;
    let (master, slave) = open_pty()?;
    let mut cmd = tokio::process::Command::new(prog);
    cmd.args(args)
        .stdin(Stdio::from(slave.try_clone()?))
        .stdout(Stdio::from(slave.try_clone()?))
        .stderr(Stdio::from(slave))
        .env("TERM", std::env::var("TERM").unwrap_or_else(|_| "xterm-256color".into()));
    // SAFETY: between fork and exec only async-signal-safe calls: setsid and ioctl.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    // The parent's copies of the slave were moved into the Command and are closed with it, so
    // the master sees EIO once the command and its children close the terminal.
    drop(cmd);
    let file = tokio::fs::File::from_std(std::fs::File::from(master));
    let reader = tokio::spawn(read_into(file, StreamTag::Pty, tx));
    Ok(Started { child, readers: vec![reader] })
}

fn open_pty() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut master = -1;
    let mut slave = -1;
    let size = libc::winsize { ws_row: 50, ws_col: 160, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: openpty writes two fds into the provided ints; name and termios may be null.
    let rc = unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), &size) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: openpty succeeded, so both are fresh fds owned by nobody else.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    // SAFETY: fcntl on an fd we own.
    unsafe { libc::fcntl(master.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    Ok((master, slave))
}
