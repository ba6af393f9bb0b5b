//! `tailrace-load`: run a load scenario against Tailrace, or write the corpus it streams.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tailrace_agent::units::parse_size;
use tailrace_load::{RunOptions, Scenario, Target, run};

/// Load generator for Tailrace: simulated agents stream realistic CI output while websocket
/// tailers follow it; reports MB/s, tail latency percentiles, server CPU and memory, and checks
/// every byte at the server, at every tailer and in the archive.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run a scenario (a TOML file, see load-tests/cases/). Exit status 1 when any byte was lost,
    /// duplicated or differs.
    ///
    /// By default starts its own `tailrace serve` (the `tailrace` binary next to this one) on a
    /// fresh data directory; with --server it loads a server that is already running.
    Run {
        /// Scenario file, e.g. load-tests/cases/burst-1000-steps.toml.
        case: PathBuf,
        /// Load a running server at this URL instead of starting one (needs --admin-token).
        #[arg(long, requires = "admin_token")]
        server: Option<String>,
        /// Admin token of the running server (its data dir's admin-token file).
        #[arg(long, env = "TAILRACE_TOKEN", hide_env_values = true)]
        admin_token: Option<String>,
        /// Process id of a running server process, for CPU and memory figures (repeatable).
        #[arg(long = "server-pid")]
        server_pids: Vec<u32>,
        /// The `tailrace` binary to start. [default: next to this binary]
        #[arg(long)]
        tailrace: Option<PathBuf>,
        /// Config file for the started server (`tailrace serve --config`).
        #[arg(long)]
        server_config: Option<PathBuf>,
        /// Folder for the started server's data directory and the agents' spools. [default: $TMPDIR]
        #[arg(long)]
        work_dir: Option<PathBuf>,
        /// Multiply each step's output by this factor (e.g. 0.1 for a quick run of a big case).
        #[arg(long, default_value_t = 1.0)]
        scale: f64,
        /// Override the scenario's transport: quic, http2 or auto.
        #[arg(long)]
        transport: Option<String>,
        /// Also write the report as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
        /// No progress line.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Fan the same kind of stream out through NATS or Redis pub/sub to N subscribers, measured
    /// like Tailrace's tailers (latency, delivered MB/s, byte-exact check): the fan-out peers.
    Fanout {
        /// nats or redis.
        #[arg(long)]
        peer: tailrace_load::fanout::Peer,
        /// Server address, host:port.
        #[arg(long)]
        addr: String,
        #[arg(long, default_value_t = 1000)]
        subscribers: u32,
        /// Bytes to publish, e.g. 2MB.
        #[arg(long, default_value = "2MB", value_parser = parse_size)]
        bytes: u64,
        /// Bytes per second (0 = as fast as possible), e.g. 100KB.
        #[arg(long, default_value = "100KB", value_parser = parse_size)]
        rate: u64,
        /// Bytes per message.
        #[arg(long, default_value = "8KiB", value_parser = parse_size)]
        write_bytes: u64,
        /// Server process id for CPU and memory (repeatable).
        #[arg(long = "server-pid")]
        server_pids: Vec<u32>,
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Write the deterministic CI-output corpus (the bytes the scenarios stream) for other tools.
    Corpus {
        /// Seed: the same seed always gives the same bytes.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// How much to write, e.g. 64MiB.
        #[arg(long, default_value = "64MiB", value_parser = parse_size)]
        size: u64,
        /// Output file. [default: stdout]
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TAILRACE_LOG")
                .unwrap_or_else(|_| "error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Cmd::Corpus { seed, size, output } => {
            let bytes = tailrace_load::corpus::generate(seed, size as usize);
            let r = match output {
                Some(p) => std::fs::write(&p, &bytes)
                    .map_err(|e| format!("could not write {}: {e}", p.display())),
                None => std::io::stdout()
                    .lock()
                    .write_all(&bytes)
                    .map_err(|e| e.to_string()),
            };
            match r {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e),
            }
        }
        Cmd::Fanout {
            peer,
            addr,
            subscribers,
            bytes,
            rate,
            write_bytes,
            server_pids,
            json,
        } => {
            let spec = tailrace_load::fanout::FanoutSpec {
                peer,
                addr,
                subscribers,
                bytes,
                rate,
                write_bytes,
                seed: 1,
                pids: server_pids,
            };
            match block_on(tailrace_load::fanout::run(spec)) {
                Ok(report) => finish(&report, json.as_deref()),
                Err(e) => fail(&e),
            }
        }
        Cmd::Run {
            case,
            server,
            admin_token,
            server_pids,
            tailrace,
            server_config,
            work_dir,
            scale,
            transport,
            json,
            quiet,
        } => {
            let mut scenario = match Scenario::load(&case) {
                Ok(s) => s,
                Err(e) => return fail(&e),
            };
            if scale != 1.0 {
                scenario.scale_bytes(scale);
            }
            if let Some(t) = transport {
                scenario.transport = t;
            }
            let target = match server {
                Some(url) => Ok(Target::external(
                    url,
                    admin_token.unwrap_or_default(),
                    server_pids,
                )),
                None => {
                    let bin = tailrace.unwrap_or_else(|| sibling("tailrace"));
                    Target::spawn(&bin, server_config.as_deref(), work_dir.as_deref())
                }
            };
            let target = match target {
                Ok(t) => t,
                Err(e) => return fail(&e),
            };
            let opts = RunOptions {
                progress: !quiet,
                spool_dir: work_dir,
            };
            let report = match block_on(run(scenario, &target, opts)) {
                Ok(r) => r,
                Err(e) => return fail(&format!("{e}\n{}", target.server_log())),
            };
            finish(&report, json.as_deref())
        }
    }
}

/// Prints the table, writes the JSON, and exits 1 unless every check passed.
fn finish(report: &tailrace_load::Report, json: Option<&std::path::Path>) -> ExitCode {
    print!("{}", report.table());
    if let Some(p) = json {
        let text = serde_json::to_string_pretty(report).unwrap_or_default();
        if let Err(e) = std::fs::write(p, text + "\n") {
            return fail(&format!("could not write {}: {e}", p.display()));
        }
    }
    if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Runs a load future on a fresh runtime.
fn block_on(f: impl std::future::Future<Output = Result<tailrace_load::Report, String>>) -> Result<tailrace_load::Report, String> {
    tokio::runtime::Runtime::new().map_err(|e| format!("could not start the runtime: {e}"))?.block_on(f)
}

/// A binary next to this one (both are built into the same target folder).
fn sibling(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join(name)))
        .unwrap_or_else(|| PathBuf::from(name))
}

fn fail(msg: &str) -> ExitCode {
    eprintln!("tailrace-load: {msg}");
    ExitCode::from(2)
}
