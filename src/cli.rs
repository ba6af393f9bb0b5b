//! Command-line interface: every command, its flags, and what `--help` says about them.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tailrace_agent::client::Server;
use tailrace_agent::command::CommandSpec;
use tailrace_agent::run::EXIT_REFUSED;
use tailrace_agent::transport::{TransportChoice, Trust};
use tailrace_agent::{run_step, RunOptions};

use crate::config::ServeConfig;
use tailrace_agent::units::{parse_duration, parse_size};

/// Tailrace streams CI step output from runners to storage and to anyone watching it live.
///
/// Start a server with `tailrace serve`, create a job with `tailrace job create`, stream a
/// command's output into it with `tailrace run`, and watch it with `tailrace tail`.
#[derive(Debug, Parser)]
#[command(name = "tailrace", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server: ingest (QUIC and HTTP/2), the HTTP API, live tail and metrics, all in one
    /// process with embedded storage under the data directory — or, with --role and shared
    /// backends (live_url: Redis, meta_url: MongoDB), one node of a cluster.
    ///
    /// On first start it creates `<data-dir>/admin-token` (mode 0600) — the token for
    /// `tailrace job create` — and a self-signed QUIC certificate whose fingerprint agents pin
    /// automatically. Settings come from --config, then TAILRACE_* variables, then flags.
    Serve(ServeArgs),
    /// Run a command as one step of a job and stream its output to the server.
    ///
    /// stdout and stderr are merged in arrival order (or one pseudo-terminal with --pty) and
    /// echoed to this terminal too. Output is spooled on disk until the server acknowledges it,
    /// so a slow or restarting server never loses a byte: the agent reconnects and resumes. On
    /// SIGTERM/SIGINT or --timeout the command is stopped (SIGTERM, then SIGKILL after
    /// --kill-grace) and everything it printed is still delivered. Exits with the command's exit
    /// code (128+N if killed by signal N); 75 if the command succeeded but its output could not
    /// be delivered; 2 if the server refused the step (bad token, unknown job).
    Run(RunArgs),
    /// Follow a step's output live, from any byte offset, writing the raw bytes to stdout.
    /// Exits when the step ends; reconnects by itself without gaps or repeats.
    Tail(TailArgs),
    /// Jobs: the unit that steps belong to.
    #[command(subcommand)]
    Job(JobCommand),
    /// Delete step output past its retention (`retention_logs_days`) from the archive and the
    /// live tier, forgetting its manifests, and raw test-result files past
    /// `retention_test_results_days`. `serve` does the same every `expiry_sweep_secs`;
    /// this runs one sweep now, against the same data directory and config.
    Gc(GcArgs),
    /// Tokens for readers (dashboards, people, `tailrace tail`), and revocation of any token.
    #[command(subcommand)]
    Token(TokenCommand),
    /// The server's token-signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Remove a secret from a job's stored output after the fact: every occurrence in every
    /// step, archived or live, is overwritten with `*` of the same length (newlines kept), so
    /// offsets and line numbers stay valid. Needs the admin token. The secret is read from
    /// stdin (`--secret -`) or a file, never from the command line (where `ps` shows it). The
    /// scrub is recorded in the audit log without the secret. Tailers already connected have
    /// seen the bytes; rotate the secret as well.
    Scrub(ScrubArgs),
    /// Upload test results (JUnit XML, or JSON records) to a job: files, or directories
    /// searched recursively for *.xml and *.json, as CircleCI's store_test_results does. Use the
    /// job's token; results may be uploaded while the job still runs. Prints each file's counts
    /// and the parser's notes; exits 1 if any file was refused (with the reason).
    StoreTestResults(crate::test_results::StoreTestResultsArgs),
    /// Upload a file or a directory tree as artifacts of a job, as CircleCI's store_artifacts
    /// does. Use the job's token. Names are checked before anything is sent (no `..`, absolute
    /// paths, backslashes or collisions); files go up in parallel with a progress display, each
    /// verified by its SHA-256 on arrival and resumed after a dropped connection without
    /// resending what the server holds. Exits 1 if any file failed, 2 on bad names.
    StoreArtifacts(crate::artifacts::StoreArtifactsArgs),
    /// Probe a server for a health check (container HEALTHCHECK, scripts): GET `/healthz` (the
    /// process answers) or, with --ready, `/readyz` (it can serve: metadata store and live tier
    /// answer). Prints the answer; exits 0 on 200, 1 otherwise.
    Health(HealthArgs),
}

#[derive(Debug, Args)]
pub struct HealthArgs {
    /// Server HTTP URL (inside a container: the listen port on loopback).
    #[arg(long, env = "TAILRACE_SERVER", default_value = "http://127.0.0.1:8520")]
    pub server: String,
    /// Probe readiness (`/readyz`) instead of liveness (`/healthz`).
    #[arg(long)]
    pub ready: bool,
}

#[derive(Debug, Args)]
pub struct GcArgs {
    #[command(flatten)]
    pub server: ServerFiles,
    /// List what would be deleted; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Sweep as if it were this time (YYYY-MM-DD, or seconds since the epoch), e.g. to see what
    /// a future sweep will delete.
    #[arg(long, value_parser = parse_as_of)]
    pub as_of: Option<u64>,
}

/// `YYYY-MM-DD`, RFC 3339 (`…T…Z`) or Unix seconds → Unix milliseconds.
fn parse_as_of(s: &str) -> Result<u64, String> {
    tailrace_storage::time::parse_timestamp_ms(s, 1000)
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Issue a token that may read every job of one project (needs the admin token). Prints it.
    Create(TokenCreateArgs),
    /// Revoke a token on every node at once: with --id, any token (needs the admin token; ids
    /// are printed when tokens are issued and recorded in the audit log); without, the token
    /// given by --token / TAILRACE_TOKEN itself (e.g. a job token that leaked).
    Revoke(TokenRevokeArgs),
}

#[derive(Debug, Args)]
pub struct TokenRevokeArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Id of the token to revoke.
    #[arg(long)]
    pub id: Option<String>,
}

#[derive(Debug, Args)]
pub struct ScrubArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Job id.
    #[arg(long)]
    pub job: String,
    /// Where the secret is: `-` for stdin, or a file path. One trailing newline is dropped.
    #[arg(long)]
    pub secret: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Add a new signing key that signs every token from now on. Tokens signed by the previous
    /// key stay valid for --grace, then are refused. Edits the key file in place; a running
    /// server reloads it within seconds and rewrites its admin-token file. In a cluster, run it
    /// against the shared key file (`signing_keys_file`). Without a key file yet, creates one
    /// with a first key (e.g. to put in a Kubernetes Secret before any node starts).
    Rotate(KeysRotateArgs),
}

/// The files of a server that a command works on directly (not through its API).
#[derive(Debug, Args)]
pub struct ServerFiles {
    /// Data directory of the server. [default: ./tailrace-data]
    #[arg(long, env = "TAILRACE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The server's TOML config file (retention, object store, `signing_keys_file`, …).
    #[arg(long, env = "TAILRACE_CONFIG")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct KeysRotateArgs {
    #[command(flatten)]
    pub server: ServerFiles,
    /// How long tokens of the previous key stay valid, e.g. 24h; 0s refuses them at once
    /// (after a key leaked).
    #[arg(long, value_parser = parse_duration, default_value = "24h")]
    pub grace: Duration,
}

#[derive(Debug, Args)]
pub struct TokenCreateArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Project slug, e.g. gh/acme/app.
    #[arg(long)]
    pub project: String,
    /// Lifetime, e.g. 12h or 30m.
    #[arg(long, value_parser = parse_duration, default_value = "720h")]
    pub ttl: Duration,
    /// Print the whole answer as JSON (with the token's id and expiry).
    #[arg(long)]
    pub json: bool,
}

/// Where the server is and the token to use.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// Server HTTP URL.
    #[arg(long, env = "TAILRACE_SERVER", default_value = "http://127.0.0.1:8520")]
    pub server: String,
    /// Token: a job token for `run`, a project/admin token to read, the admin token to create jobs.
    #[arg(long, env = "TAILRACE_TOKEN", hide_env_values = true)]
    pub token: String,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Data directory (staging files, SQLite, TLS material, tokens). [default: ./tailrace-data]
    #[arg(long, env = "TAILRACE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// HTTP address: API, websocket tail, HTTP/2 ingest, /metrics. [default: 127.0.0.1:8520]
    #[arg(long)]
    pub http_addr: Option<std::net::SocketAddr>,
    /// QUIC (UDP) address for agents. [default: 127.0.0.1:8521]
    #[arg(long)]
    pub quic_addr: Option<std::net::SocketAddr>,
    /// TOML config file; see README for the keys.
    #[arg(long, env = "TAILRACE_CONFIG")]
    pub config: Option<PathBuf>,
    /// What this process does: all, or a comma-separated list of ingest (agents stream here),
    /// query (HTTP API, live tails) and archiver (archiving and expiry). Split roles need
    /// live_url (Redis) and meta_url (MongoDB). [default: all]
    #[arg(long, env = "TAILRACE_ROLES")]
    pub role: Option<String>,
    /// Check the configuration instead of serving: data directory, listen addresses, TLS files,
    /// signing keys, live tier (on Redis a probe step is appended, read and released), metadata
    /// store (on MongoDB: indexes and a transaction) and object store (a probe object is
    /// written, read and deleted). Prints one line per check; exits 1 if any failed.
    #[arg(long)]
    pub check_config: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Job id (from `tailrace job create`).
    #[arg(long, env = "TAILRACE_JOB")]
    pub job: String,
    /// Step id, unique within the job: letters, digits, '-', '_', '.'.
    #[arg(long)]
    pub step: String,
    /// Display name of the step. [default: the command line]
    #[arg(long, default_value = "")]
    pub name: String,
    /// Run the command under a pseudo-terminal, so tools keep colours and progress bars.
    #[arg(long)]
    pub pty: bool,
    /// Stop the command after this long (e.g. 30m); the step ends as timed_out.
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Time between SIGTERM and SIGKILL when stopping the command.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub kill_grace: Duration,
    /// Transport: auto (QUIC, falling back to HTTP/2 when UDP is blocked), quic or http2.
    #[arg(long, default_value = "auto")]
    pub transport: TransportChoice,
    /// Trust the QUIC server certificate by this CA (PEM) instead of pinning the fingerprint
    /// the server publishes.
    #[arg(long)]
    pub ca_cert: Option<PathBuf>,
    /// Pin this SHA-256 certificate fingerprint (hex) instead of the one the server publishes.
    #[arg(long, conflicts_with = "ca_cert")]
    pub cert_sha256: Option<String>,
    /// Directory for the spool file (unlinked, removed on exit). [default: system temp dir]
    #[arg(long, env = "TAILRACE_SPOOL_DIR")]
    pub spool_dir: Option<PathBuf>,
    /// Most output kept unacknowledged by the server (the first 8 MiB in memory, the rest spilled
    /// to a file in --spool-dir); when reached, the command blocks
    /// on its next write until the server catches up (output is never dropped).
    #[arg(long, value_parser = parse_size, default_value = "1GiB")]
    pub spool_max: u64,
    /// After the command ends, keep trying to deliver its output for this long.
    #[arg(long, value_parser = parse_duration, default_value = "10m")]
    pub delivery_timeout: Duration,
    /// Silence after which a QUIC connection counts as lost and the agent reconnects.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub idle_timeout: Duration,
    /// Do not echo the command's output to this terminal.
    #[arg(long, short)]
    pub quiet: bool,
    /// Mask the value of this environment variable: it is replaced by *** (also base64-, URL-,
    /// JSON- and shell-encoded, and when split across writes) before output leaves this machine.
    /// Repeatable. Values shorter than 4 characters are not masked (with a warning). The command
    /// can add secrets itself by printing a line `::add-mask::VALUE`, which is not sent.
    #[arg(long = "mask-env", value_name = "NAME")]
    pub mask_env: Vec<String>,
    /// Mask every line of this file as a secret (like --mask-env). Repeatable.
    #[arg(long = "mask-file", value_name = "PATH")]
    pub mask_file: Vec<PathBuf>,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct TailArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[arg(long)]
    pub job: String,
    #[arg(long)]
    pub step: String,
    /// Byte offset to start from.
    #[arg(long, default_value_t = 0)]
    pub from: u64,
}

#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Create a job (needs the admin token) and print its id, number and a job-scoped token
    /// that lets a runner write this job's output only.
    Create(JobCreateArgs),
}

#[derive(Debug, Args)]
pub struct JobCreateArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Project slug, e.g. gh/acme/app. Job numbers count up per project.
    #[arg(long)]
    pub project: String,
    #[arg(long)]
    pub branch: Option<String>,
    #[arg(long)]
    pub commit: Option<String>,
    #[arg(long)]
    pub workflow: Option<String>,
    #[arg(long)]
    pub name: Option<String>,
    /// The CI system's pipeline number (shown by insights as `pipeline-number`).
    #[arg(long)]
    pub pipeline_number: Option<u64>,
    /// The workflow run this job belongs to; give every job of one run the same id.
    #[arg(long)]
    pub workflow_id: Option<String>,
    /// Print JSON `{"job_id":…,"job_number":…,"token":…}` instead of `export` lines for `eval`.
    #[arg(long)]
    pub json: bool,
    /// Register the secret in this environment variable with the job (repeatable): only its
    /// digest is sent, and the server masks it in output that agents did not mask.
    #[arg(long = "mask-env", value_name = "NAME")]
    pub mask_env: Vec<String>,
    /// Register each line of this file as a secret of the job, like --mask-env (repeatable).
    #[arg(long = "mask-file", value_name = "PATH")]
    pub mask_file: Vec<PathBuf>,
}

fn init_logs(default: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TAILRACE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Runs the command; returns the process exit code.
pub async fn dispatch(cli: Cli) -> i32 {
    match cli.command {
        Command::Serve(a) => {
            let mut cfg = match load_config(a.config.as_deref(), a.data_dir) {
                Ok(c) => c,
                Err(e) => return fail(&e),
            };
            if let Some(h) = a.http_addr {
                cfg.http_addr = h;
            }
            if let Some(q) = a.quic_addr {
                cfg.quic_addr = q;
            }
            if let Some(r) = a.role {
                match crate::config::Role::parse_list(&r) {
                    Ok(roles) => cfg.roles = roles,
                    Err(e) => return fail(&e),
                }
                if let Err(e) = cfg.validate() {
                    return fail(&e);
                }
            }
            if a.check_config {
                init_logs("warn", false);
                return crate::check::check_config(&cfg).await;
            }
            init_logs("info", cfg.log_format == "json");
            match crate::serve::serve(cfg).await {
                Ok(()) => 0,
                Err(e) => fail(&e),
            }
        }
        Command::Run(a) => {
            init_logs("warn", false);
            let secrets = match secrets(&a.mask_env, &a.mask_file) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("tailrace run: {e}");
                    return EXIT_REFUSED;
                }
            };
            let trust = match (a.ca_cert, a.cert_sha256) {
                (Some(ca), _) => Some(Trust::CaFile(ca)),
                (None, Some(fp)) => Some(Trust::Fingerprint(fp)),
                (None, None) => None,
            };
            let opts = RunOptions {
                server: a.client.server,
                token: a.client.token,
                job: a.job,
                step: a.step,
                name: a.name,
                command: CommandSpec { argv: a.command, pty: a.pty, timeout: a.timeout, kill_grace: a.kill_grace, echo: !a.quiet, secrets },
                transport: a.transport,
                trust,
                spool_dir: a.spool_dir.unwrap_or_else(std::env::temp_dir),
                spool_max: a.spool_max,
                delivery_timeout: a.delivery_timeout,
                idle_timeout: a.idle_timeout,
            };
            match run_step(opts).await {
                Ok(outcome) => outcome.exit_code,
                Err(e) => {
                    eprintln!("tailrace run: {e}");
                    EXIT_REFUSED
                }
            }
        }
        Command::Tail(a) => {
            init_logs("warn", false);
            let server = match Server::parse(&a.client.server) {
                Ok(s) => s,
                Err(e) => return fail(&e.to_string()),
            };
            let mut out = tokio::io::stdout();
            match tailrace_agent::tail::follow(&server, &a.client.token, &a.job, &a.step, a.from, &mut out).await {
                Ok(end) => {
                    let status = end.get("status").and_then(|s| s.as_str()).unwrap_or("?");
                    let length = end.get("length").and_then(|s| s.as_u64()).unwrap_or(0);
                    eprintln!("tailrace tail: step ended: {status}, {length} bytes");
                    0
                }
                Err(e) => fail(&e),
            }
        }
        Command::Token(TokenCommand::Create(a)) => token_create(a).await,
        Command::Token(TokenCommand::Revoke(a)) => token_revoke(a).await,
        Command::Scrub(a) => scrub(a).await,
        Command::Keys(KeysCommand::Rotate(a)) => {
            init_logs("warn", false);
            let cfg = match load_config(a.server.config.as_deref(), a.server.data_dir) {
                Ok(c) => c,
                Err(e) => return fail(&e),
            };
            match crate::keys::rotate(&crate::keys::path(&cfg), a.grace) {
                Ok(msg) => {
                    println!("{msg}");
                    0
                }
                Err(e) => fail(&e),
            }
        }
        Command::Gc(a) => gc(a).await,
        Command::Health(a) => health(a).await,
        Command::StoreArtifacts(a) => {
            init_logs("warn", false);
            crate::artifacts::store_artifacts(a).await
        }
        Command::StoreTestResults(a) => {
            init_logs("warn", false);
            crate::test_results::store_test_results(a).await
        }
        Command::Job(JobCommand::Create(a)) => {
            init_logs("warn", false);
            let server = match Server::parse(&a.client.server) {
                Ok(s) => s,
                Err(e) => return fail(&e.to_string()),
            };
            let secrets = match secrets(&a.mask_env, &a.mask_file) {
                Ok(s) => s,
                Err(e) => return fail(&e),
            };
            let min = tailrace_protocol::secret::MIN_SECRET;
            let max = tailrace_protocol::secret::MAX_SECRET;
            let (usable, skipped): (Vec<_>, Vec<_>) = secrets.iter().partition(|s| (min..=max).contains(&s.len()));
            if !skipped.is_empty() {
                eprintln!("tailrace: {} secret(s) not registered: shorter than {min} or longer than {max} bytes", skipped.len());
            }
            let digests: Vec<_> = usable.iter().map(|s| tailrace_protocol::secret::SecretDigest::of(s)).collect();
            let body = serde_json::json!({
                "project": a.project, "branch": a.branch, "commit": a.commit, "workflow": a.workflow, "name": a.name,
                "pipeline_number": a.pipeline_number, "workflow_id": a.workflow_id, "secrets": digests,
            });
            let created: serde_json::Value =
                match server.json(http_method_post(), "/api/v1/jobs", Some(&a.client.token), Some(body)).await {
                    Ok(v) => v,
                    Err(e) => return fail(&e.to_string()),
                };
            if a.json {
                println!("{created}");
            } else {
                let s = |k: &str| created.get(k).map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string)).unwrap_or_default();
                println!("export TAILRACE_JOB={}\nexport TAILRACE_JOB_NUMBER={}\nexport TAILRACE_TOKEN={}", s("job_id"), s("job_number"), s("token"));
            }
            0
        }
    }
}

/// The server's configuration: the file, then `TAILRACE_*` variables, then `--data-dir`.
/// The values to mask: named environment variables (unset or empty ones are an error, so a typo
/// does not silently leave a secret unmasked) and the lines of secret files.
fn secrets(env_names: &[String], files: &[PathBuf]) -> Result<Vec<Vec<u8>>, String> {
    use std::os::unix::ffi::OsStrExt as _;
    let mut out = Vec::new();
    for name in env_names {
        match std::env::var_os(name) {
            Some(v) if !v.is_empty() => out.push(v.as_bytes().to_vec()),
            _ => return Err(format!("--mask-env {name}: the variable is not set or empty, so there is nothing to mask; check its name")),
        }
    }
    for f in files {
        let text = std::fs::read(f).map_err(|e| format!("--mask-file {}: {e}", f.display()))?;
        out.extend(text.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l)).filter(|l| !l.is_empty()).map(<[u8]>::to_vec));
    }
    Ok(out)
}

fn load_config(file: Option<&std::path::Path>, data_dir: Option<PathBuf>) -> Result<ServeConfig, String> {
    let env: HashMap<String, String> = std::env::vars().filter(|(k, _)| k.starts_with("TAILRACE_")).collect();
    let mut cfg = ServeConfig::load(file, &env)?;
    if let Some(d) = data_dir {
        cfg.data_dir = d;
    }
    Ok(cfg)
}

async fn gc(a: GcArgs) -> i32 {
    init_logs("warn", false);
    let cfg = match load_config(a.server.config.as_deref(), a.server.data_dir) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    let now = a.as_of.unwrap_or_else(tailrace_storage::meta::now_ms);
    if cfg.retention_logs_days.is_none() && cfg.retention_test_results_days.is_none() && cfg.retention_artifacts_days.is_none() {
        println!("retention is unlimited (none of retention_logs_days, retention_test_results_days, retention_artifacts_days is set): nothing to delete");
        return 0;
    }
    if cfg.meta_url.is_none() && !cfg.data_dir.join("meta.db").exists() {
        return fail(&format!("{} holds no tailrace data (no meta.db); pass --data-dir", cfg.data_dir.display()));
    }
    let result = async {
        let (live, meta) = crate::serve::open_storage(&cfg).await?;
        let store = crate::store::build(&cfg)?;
        let archive = crate::serve::open_archive(&cfg, store.clone(), &live, &meta, &format!("gc-{}", std::process::id()));
        let artifacts = crate::serve::open_artifacts(&cfg, store.clone(), &meta);
        let swept = crate::serve::sweep(&cfg, &archive, &artifacts, now, a.dry_run).await?;
        if !a.dry_run && !swept.is_empty() {
            let audit = tailrace_storage::AuditLog::start(store, &format!("gc{}", std::process::id()), Default::default());
            audit.record("expired", None, swept.audit_fields());
            audit.flush().await;
        }
        Ok::<_, String>(swept)
    }
    .await;
    match result {
        Ok(swept) => {
            let verb = if a.dry_run { "would expire" } else { "expired" };
            for (key, len) in &swept.steps {
                println!("{verb} {key} ({len} bytes)");
            }
            for key in &swept.test_results {
                println!("{verb} {key}");
            }
            if let Some(cutoff) = cfg.logs_cutoff_ms(now) {
                let total: u64 = swept.steps.iter().map(|(_, l)| l).sum();
                println!("{verb} {} steps, {total} bytes of output that ended before {cutoff} ms", swept.steps.len());
            }
            for (job, path, size) in &swept.artifacts {
                println!("{verb} artifact {job}/{path} ({size} bytes)");
            }
            if let Some(cutoff) = cfg.test_results_cutoff_ms(now) {
                println!("{verb} {} test-result files stored before {cutoff} ms", swept.test_results.len());
            }
            if let Some(cutoff) = cfg.artifacts_cutoff_ms(now) {
                let total: u64 = swept.artifacts.iter().map(|a| a.2).sum();
                println!("{verb} {} artifacts, {total} bytes, uploaded before {cutoff} ms", swept.artifacts.len());
            }
            0
        }
        Err(e) => fail(&e),
    }
}

async fn health(a: HealthArgs) -> i32 {
    let server = match Server::parse(&a.server) {
        Ok(s) => s,
        Err(e) => return fail(&e.to_string()),
    };
    let path = if a.ready { "/readyz" } else { "/healthz" };
    match server.text(tailrace_agent::client::Method::GET, path).await {
        Ok((status, body)) => {
            print!("{body}");
            if status.is_success() { 0 } else { fail(&format!("{path} answered {status}")) }
        }
        Err(e) => fail(&e.to_string()),
    }
}

async fn token_create(a: TokenCreateArgs) -> i32 {
    init_logs("warn", false);
    let server = match Server::parse(&a.client.server) {
        Ok(s) => s,
        Err(e) => return fail(&e.to_string()),
    };
    let body = serde_json::json!({ "project": a.project, "ttl_secs": a.ttl.as_secs() });
    match server.json::<serde_json::Value>(http_method_post(), "/api/v1/tokens", Some(&a.client.token), Some(body)).await {
        Ok(v) if a.json => {
            println!("{v}");
            0
        }
        Ok(v) => {
            println!("{}", v["token"].as_str().unwrap_or_default());
            0
        }
        Err(e) => fail(&e.to_string()),
    }
}

async fn scrub(a: ScrubArgs) -> i32 {
    use base64::Engine as _;
    use std::io::Read as _;
    init_logs("warn", false);
    let server = match Server::parse(&a.client.server) {
        Ok(s) => s,
        Err(e) => return fail(&e.to_string()),
    };
    let mut secret = Vec::new();
    let read = if a.secret.as_os_str() == "-" {
        std::io::stdin().read_to_end(&mut secret).map(drop)
    } else {
        std::fs::read(&a.secret).map(|b| secret = b)
    };
    if let Err(e) = read {
        return fail(&format!("could not read the secret from {}: {e}", a.secret.display()));
    }
    if secret.ends_with(b"\n") {
        secret.pop();
        if secret.ends_with(b"\r") {
            secret.pop();
        }
    }
    let body = serde_json::json!({ "secret_base64": base64::engine::general_purpose::STANDARD.encode(&secret) });
    let path = format!("/api/v1/jobs/{}/scrub", a.job);
    match server.json::<serde_json::Value>(http_method_post(), &path, Some(&a.client.token), Some(body)).await {
        Ok(v) => {
            let n = |k: &str| v[k].as_u64().unwrap_or(0);
            println!(
                "scrubbed {} occurrences from {} steps of job {} ({} archived segments rewritten, {} in the live tier)",
                n("occurrences"),
                n("steps"),
                a.job,
                n("segments_rewritten"),
                n("live_occurrences")
            );
            0
        }
        Err(e) => fail(&e.to_string()),
    }
}

async fn token_revoke(a: TokenRevokeArgs) -> i32 {
    init_logs("warn", false);
    let server = match Server::parse(&a.client.server) {
        Ok(s) => s,
        Err(e) => return fail(&e.to_string()),
    };
    let body = match &a.id {
        Some(id) => serde_json::json!({ "token_id": id }),
        None => serde_json::json!({ "token": a.client.token }),
    };
    match server.json::<serde_json::Value>(http_method_post(), "/api/v1/tokens/revoke", Some(&a.client.token), Some(body)).await {
        Ok(v) => {
            println!("revoked token {}", v["token_id"].as_str().unwrap_or_default());
            0
        }
        Err(e) => fail(&e.to_string()),
    }
}

fn http_method_post() -> tailrace_agent::client::Method {
    tailrace_agent::client::Method::POST
}

pub fn fail(msg: &str) -> i32 {
    eprintln!("tailrace: {msg}");
    1
}

#[cfg(test)]
mod tests {
    use super::parse_as_of;

    #[test]
    fn as_of_dates() {
        assert_eq!(parse_as_of("1970-01-02"), Ok(86_400_000));
        assert_eq!(parse_as_of("2026-11-28"), Ok(1_795_824_000_000));
        assert_eq!(parse_as_of("2000-03-01"), Ok(951_868_800_000));
        assert_eq!(parse_as_of("1700000000"), Ok(1_700_000_000_000));
        assert!(parse_as_of("2026-13-01").is_err());
    }
}
