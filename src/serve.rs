//! `tailrace serve`: wires the live tier, metadata store, ingest listeners and HTTP API into one
//! process on embedded defaults, and shuts down gracefully on SIGTERM/SIGINT.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tailrace_ingest::quic::QuicLimits;
use tailrace_ingest::{tls, Archiving, IngestCore, IngestLimits, IngestMetrics};
use tailrace_protocol::token::Keyring;
use tailrace_query::server::HttpLimits;
use tailrace_query::{AppState, IngestInfo, QueryMetrics, Surface};
use object_store::ObjectStore;
use tailrace_storage::{Archive, ArchiveConfig, AuditConfig, AuditLog, ArtifactConfig, Artifacts, LiveTier, MetaStore, MongoMeta, RedisConfig, RedisTier, SqliteMeta, StagingTier};
use tokio::signal::unix::{signal, SignalKind};
use tracing::info;

use crate::config::{Role, ServeConfig};

pub async fn serve(cfg: ServeConfig) -> Result<(), String> {
    raise_fd_limit();
    let data = &cfg.data_dir;
    std::fs::create_dir_all(data).map_err(|e| format!("could not create data dir {}: {e}", data.display()))?;
    let store = crate::store::build(&cfg)?;
    crate::store::clean_local_leftovers(&cfg)?;
    let node: [u8; 6] = rand::random();
    let node: String = node.iter().map(|b| format!("{b:02x}")).collect();
    let audit = AuditLog::start(store.clone(), &node, AuditConfig::default());
    record_config(&cfg, &audit);
    let key_path = crate::keys::path(&cfg);
    let keys = Arc::new(Keyring::new(crate::keys::load_or_create(&key_path, data)?).map_err(|e| format!("{}: {e}", key_path.display()))?);
    let admin_path = data.join("admin-token");
    crate::keys::ensure_admin_token(&admin_path, &keys, &audit)?;
    // The configuration and admin-token records reach the object store before serving starts.
    audit.flush_for_a_while().await;
    tokio::spawn(crate::keys::watch(key_path, admin_path.clone(), keys.clone(), audit.clone()));
    let (live, meta) = open_storage(&cfg).await?;
    match live.settings().await {
        Ok(notes) => notes.iter().for_each(|n| tracing::warn!(live = %live_location(&cfg), "{n}")),
        Err(e) => tracing::error!(live = %live_location(&cfg), "{e}"),
    }
    info!(meta = %meta_location(&cfg), "metadata store ready");
    tokio::spawn(refresh_revocations(meta.clone(), keys.clone()));
    let (archive, archiving, artifacts) = if cfg.archive {
        let archive = open_archive(&cfg, store.clone(), &live, &meta, &node);
        let artifacts = Arc::new(open_artifacts(&cfg, store, &meta));
        // Every node reads the archive; archiver nodes also write it and expire what is due.
        let queue = cfg.runs(Role::Archiver).then(|| {
            let (tx, rx) = tokio::sync::mpsc::channel(1024);
            tokio::spawn(archive.clone().run(rx));
            info!(level = cfg.archive_level, live_mib = cfg.archive_live_mib, live_age_secs = cfg.live_age_secs(), "archiving steps as they run and end");
            if cfg.retention_logs_days.is_some() || cfg.retention_test_results_days.is_some() || cfg.retention_artifacts_days.is_some() {
                tokio::spawn(expiry_loop(cfg.clone(), archive.clone(), artifacts.clone(), audit.clone(), node.clone()));
            }
            tx
        });
        (Some(archive.clone()), Some(Archiving { queue, archive }), Some(artifacts))
    } else {
        (None, None, None)
    };
    let core = Arc::new(IngestCore {
        live,
        meta,
        keys,
        limits: IngestLimits {
            max_frame: cfg.max_frame,
            steps_per_token: cfg.ingest_steps_per_token,
            bytes_per_sec_per_token: cfg.ingest_mib_per_sec_per_token.saturating_mul(1 << 20),
            ..Default::default()
        },
        metrics: IngestMetrics::default(),
        archiving,
        audit: audit.clone(),
        tokens: Default::default(),
    });

    let quic_cert = tls::quic_cert(cfg.tls_cert.as_deref(), cfg.tls_key.as_deref(), &data.join("tls")).map_err(|e| format!("QUIC TLS: {e}"))?;
    let limits = QuicLimits {
        max_streams_per_connection: cfg.quic_streams_per_connection.max(1),
        max_connections: cfg.quic_max_connections.max(1),
        ..QuicLimits::default()
    };
    let endpoint = match cfg.runs(Role::Ingest) {
        true => {
            follow_cert(quic_cert.clone(), "QUIC", audit.clone());
            Some(tailrace_ingest::quic::bind(cfg.quic_addr, quic_cert.clone(), &limits).map_err(|e| e.to_string())?)
        }
        false => None,
    };
    let quic_addr = endpoint.as_ref().map(|e| e.local_addr()).transpose().map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind(cfg.http_addr)
        .await
        .map_err(|e| format!("could not listen on {}: {e} (is another tailrace running? use --http-addr)", cfg.http_addr))?;
    let http_addr = listener.local_addr().map_err(|e| e.to_string())?;

    // Before "ready": a TLS pair that does not load stops the start with its reason.
    let http_tls = http_tls(&cfg, &audit)?;
    let state = Arc::new(AppState {
        core: core.clone(),
        info: IngestInfo {
            quic_addr: quic_addr.map(|a| cfg.quic_public_addr.unwrap_or(a).to_string()),
            alpn: String::from_utf8_lossy(tailrace_protocol::ALPN).into_owned(),
            cert_sha256: Some(quic_cert.fingerprint()),
            http2_path: tailrace_ingest::http2::INGEST_PATH.into(),
        },
        quic_cert: endpoint.is_some().then(|| quic_cert.clone()),
        metrics: QueryMetrics::default(),
        job_token_ttl: Duration::from_secs(cfg.job_token_ttl_secs),
        rate_limit: tailrace_query::rate_limit::RateLimiter::new(cfg.rate_limit_rps, cfg.rate_limit_burst),
        archive,
        artifacts,
        artifact_serving: tailrace_query::artifacts_api::ArtifactServing {
            serve_active: cfg.artifacts_serve_active,
            base_url: cfg.artifacts_url.clone(),
        },
        jobs: Default::default(),
    });
    if let Some(endpoint) = &endpoint {
        tokio::spawn(tailrace_ingest::quic::serve(endpoint.clone(), core, limits));
    }
    // Where people open the web UI (a wildcard listen address is shown as loopback).
    let web_ui = if cfg.runs(Role::Query) {
        let host = if http_addr.ip().is_unspecified() { std::net::SocketAddr::new([127, 0, 0, 1].into(), http_addr.port()) } else { http_addr };
        format!("{}://{host}/", if http_tls.is_some() { "https" } else { "http" })
    } else {
        "off (not a query node)".to_string()
    };
    info!(
        http = %http_addr,
        web_ui = %web_ui,
        quic = %quic_addr.map_or_else(|| "off (not an ingest node)".to_string(), |a| a.to_string()),
        roles = ?cfg.roles,
        node = %node,
        live = %live_location(&cfg),
        meta = %meta_location(&cfg),
        data_dir = %data.display(),
        admin_token_file = %admin_path.display(),
        cert_sha256 = %quic_cert.fingerprint(),
        durability = ?cfg.durability,
        "tailrace serve ready"
    );
    let app = tailrace_query::router(state, Surface { api: cfg.runs(Role::Query), ingest: cfg.runs(Role::Ingest) });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(tailrace_query::server::serve(listener, app, HttpLimits::default(), http_tls, stop_rx));
    shutdown_signal().await;
    info!("shutting down: no new connections; open streams get 10s to finish (agents resume elsewhere)");
    let _ = stop_tx.send(true);
    if let Some(endpoint) = &endpoint {
        endpoint.close(0u32.into(), b"server shutting down");
    }
    let _ = server.await;
    audit.flush().await;
    Ok(())
}

/// TLS for the HTTP listener when `http_tls_cert`/`http_tls_key` are set, with the files
/// watched for renewals.
fn http_tls(cfg: &ServeConfig, audit: &Arc<AuditLog>) -> Result<Option<Arc<rustls::ServerConfig>>, String> {
    let (cert, key) = match (&cfg.http_tls_cert, &cfg.http_tls_key) {
        (Some(c), Some(k)) => (c, k),
        (None, None) => return Ok(None),
        _ => return Err("set both http_tls_cert and http_tls_key (TAILRACE_HTTP_TLS_CERT/KEY), or neither".into()),
    };
    let reloading = Arc::new(tls::ReloadingCert::load(cert, key).map_err(|e| format!("HTTP TLS: {e}"))?);
    info!(cert = %cert.display(), cert_sha256 = %reloading.fingerprint(), "HTTP listener serves TLS only");
    let config = tls::http_server_config(reloading.clone()).map_err(|e| e.to_string())?;
    follow_cert(reloading, "HTTP", audit.clone());
    Ok(Some(config))
}

/// Follows a listener's certificate files: a renewal (e.g. a Kubernetes Secret updated by
/// cert-manager) is in use within seconds and recorded in the audit log; unusable new files
/// keep the certificate in use and say why.
fn follow_cert(cert: Arc<tls::ReloadingCert>, listener: &'static str, audit: Arc<AuditLog>) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(2));
        loop {
            every.tick().await;
            match cert.reload_if_changed() {
                Ok(false) => {}
                Ok(true) => {
                    info!(listener, cert_sha256 = %cert.fingerprint(), "TLS certificate reloaded");
                    audit.record_durable("tls_certificate_loaded", None, serde_json::json!({"listener": listener, "cert_sha256": cert.fingerprint()})).await;
                }
                Err(e) => tracing::warn!(listener, error = %e, "TLS certificate files changed but are not usable; keeping the certificate in use"),
            }
        }
    });
}

/// Records the configuration in the audit log at every start, with the settings that changed
/// since the previous start (remembered in `<data_dir>/last-config.json`).
fn record_config(cfg: &ServeConfig, audit: &AuditLog) {
    let mut now = serde_json::to_value(cfg).unwrap_or_default();
    // URLs may carry passwords: the audit log and last-config.json get them redacted.
    for (key, url) in [("meta_url", &cfg.meta_url), ("live_url", &cfg.live_url), ("archive_proxy_url", &cfg.archive_proxy_url)] {
        if let Some(url) = url {
            now[key] = crate::config::redact_url(url).into();
        }
    }
    let last_path = cfg.data_dir.join("last-config.json");
    let last: Option<serde_json::Value> = std::fs::read(&last_path).ok().and_then(|b| serde_json::from_slice(&b).ok());
    let changed: Vec<String> = match (&now, &last) {
        (serde_json::Value::Object(n), Some(serde_json::Value::Object(l))) => {
            n.iter().filter(|(k, v)| l.get(*k) != Some(*v)).map(|(k, _)| k.clone()).collect()
        }
        _ => Vec::new(),
    };
    let event = if last.is_some() && !changed.is_empty() { "config_changed" } else { "config_loaded" };
    audit.record(event, None, serde_json::json!({"config": now, "changed": changed, "version": env!("CARGO_PKG_VERSION")}));
    if let Err(e) = write_private_atomic(&last_path, now.to_string().as_bytes()) {
        tracing::warn!(error = %e, "could not remember the configuration for the next start's audit record");
    }
}

/// Keeps the keyring's revoked token ids in step with the metadata store, where every node
/// records revocations.
async fn refresh_revocations(meta: Arc<dyn MetaStore>, keys: Arc<Keyring>) {
    let mut every = tokio::time::interval(Duration::from_secs(5));
    loop {
        every.tick().await;
        match meta.revoked_tokens(tailrace_storage::meta::now_ms() / 1000).await {
            Ok(ids) => keys.add_revoked(ids),
            Err(e) => tracing::warn!(error = %e, "could not load revoked tokens; keeping the last known list"),
        }
    }
}

/// The live tier and the metadata store of a deployment.
pub type Storage = (Arc<dyn LiveTier>, Arc<dyn MetaStore>);

/// The live tier under the data directory and the configured metadata store.
pub async fn open_storage(cfg: &ServeConfig) -> Result<Storage, String> {
    Ok((open_live(cfg).await?, open_meta(cfg).await?))
}

/// The live tier: staging files under the data directory, or Redis at `live_url`.
pub async fn open_live(cfg: &ServeConfig) -> Result<Arc<dyn LiveTier>, String> {
    match &cfg.live_url {
        None => Ok(Arc::new(StagingTier::new(cfg.data_dir.join("live"), cfg.durability).map_err(|e| e.to_string())?)),
        Some(url) => {
            let redis = RedisConfig {
                url: url.clone(),
                ttl: Duration::from_secs(cfg.live_ttl_hours.max(1) * 3600),
                wait_replicas: cfg.live_wait_replicas,
                hold_max_bytes: cfg.live_hold_max_mib * 1024 * 1024,
                level: cfg.archive_level,
            };
            let tier = RedisTier::connect(redis).await.map_err(|e| format!("Redis at {}: {e}", crate::config::redact_url(url)))?;
            Ok(tier)
        }
    }
}

/// Where the live tier is, for messages (no password).
pub fn live_location(cfg: &ServeConfig) -> String {
    match &cfg.live_url {
        None => format!("staging files in {}", cfg.data_dir.join("live").display()),
        Some(url) => format!("Redis at {}", crate::config::redact_url(url)),
    }
}

/// The metadata store: SQLite under the data directory, or MongoDB at `meta_url`.
pub async fn open_meta(cfg: &ServeConfig) -> Result<Arc<dyn MetaStore>, String> {
    match &cfg.meta_url {
        None => {
            let path = cfg.data_dir.join("meta.db");
            Ok(Arc::new(SqliteMeta::open(&path).map_err(|e| format!("SQLite at {}: {e}", path.display()))?))
        }
        Some(url) => {
            let meta = MongoMeta::connect(url).await.map_err(|e| format!("MongoDB at {}: {e}", crate::config::redact_url(url)))?;
            Ok(Arc::new(meta))
        }
    }
}

/// Where the metadata store is, for messages (no password).
pub fn meta_location(cfg: &ServeConfig) -> String {
    match &cfg.meta_url {
        None => format!("SQLite at {}", cfg.data_dir.join("meta.db").display()),
        Some(url) => format!("MongoDB at {}", crate::config::redact_url(url)),
    }
}

/// The archive on the configured object store.
pub fn open_archive(cfg: &ServeConfig, store: Arc<dyn ObjectStore>, live: &Arc<dyn LiveTier>, meta: &Arc<dyn MetaStore>, node: &str) -> Arc<Archive> {
    let archive_cfg = ArchiveConfig {
        level: cfg.archive_level,
        segment_bytes: cfg.archive_segment_mib.max(1) * 1024 * 1024,
        live_bytes: cfg.archive_live_mib.max(1) * 1024 * 1024,
        live_age: Duration::from_secs(cfg.live_age_secs()),
        sweep_every: Duration::from_secs(cfg.archive_sweep_secs.max(1)),
        node: node.to_string(),
        ..Default::default()
    };
    Arc::new(Archive::new(store, live.clone(), meta.clone(), archive_cfg))
}

/// Artifact storage on the configured object store.
pub fn open_artifacts(cfg: &ServeConfig, store: Arc<dyn ObjectStore>, meta: &Arc<dyn MetaStore>) -> Artifacts {
    let mib = 1u64 << 20;
    Artifacts::new(
        store,
        meta.clone(),
        ArtifactConfig {
            part_size: cfg.artifacts_part_mib.max(1) * mib,
            max_file: cfg.artifacts_max_file_mib.saturating_mul(mib),
            max_job: cfg.artifacts_max_job_mib.saturating_mul(mib),
            uploads: cfg.artifacts_uploads.max(1),
        },
    )
}

/// What one expiry sweep deleted (or, dry, would delete).
#[derive(Debug, Default)]
pub struct Swept {
    /// Steps whose output expired, with their length in bytes.
    pub steps: Vec<(tailrace_storage::StepKey, u64)>,
    /// Raw test-result objects deleted.
    pub test_results: Vec<String>,
    /// Artifacts deleted: (job, path, size).
    pub artifacts: Vec<(String, String, u64)>,
}

impl Swept {
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty() && self.test_results.is_empty() && self.artifacts.is_empty()
    }

    /// What the audit log records of a sweep: counts, bytes, and the first 1,000 names of each.
    pub fn audit_fields(&self) -> serde_json::Value {
        const MAX: usize = 1000;
        serde_json::json!({
            "steps": self.steps.len(),
            "step_bytes": self.steps.iter().map(|(_, n)| n).sum::<u64>(),
            "step_ids": self.steps.iter().take(MAX).map(|(k, _)| k.to_string()).collect::<Vec<_>>(),
            "test_result_files": self.test_results.len(),
            "test_result_keys": self.test_results.iter().take(MAX).collect::<Vec<_>>(),
            "artifacts": self.artifacts.len(),
            "artifact_paths": self.artifacts.iter().take(MAX).map(|(j, p, _)| format!("{j}/{p}")).collect::<Vec<_>>(),
        })
    }
}

/// One expiry sweep as of `now_ms`: step output past `retention_logs_days`, raw test-result
/// files past `retention_test_results_days`, artifacts past `retention_artifacts_days`.
pub async fn sweep(cfg: &ServeConfig, archive: &Archive, artifacts: &Artifacts, now_ms: u64, dry_run: bool) -> Result<Swept, String> {
    let mut swept = Swept::default();
    if let Some(cutoff) = cfg.logs_cutoff_ms(now_ms) {
        swept.steps = archive.expire(cutoff, dry_run).await.map_err(|e| e.to_string())?;
    }
    if let Some(cutoff) = cfg.test_results_cutoff_ms(now_ms) {
        swept.test_results = archive.expire_kind("test-results", cutoff, dry_run).await.map_err(|e| e.to_string())?;
    }
    if let Some(cutoff) = cfg.artifacts_cutoff_ms(now_ms) {
        let gone = artifacts.expire(cutoff, dry_run).await.map_err(|e| e.to_string())?;
        swept.artifacts = gone.into_iter().map(|a| (a.job.to_string(), a.path, a.size)).collect();
    }
    Ok(swept)
}

/// Runs the expiry sweep every `expiry_sweep_secs`.
async fn expiry_loop(cfg: ServeConfig, archive: Arc<Archive>, artifacts: Arc<Artifacts>, audit: Arc<AuditLog>, node: String) {
    let period = Duration::from_secs(cfg.expiry_sweep_secs.max(1));
    let mut every = tokio::time::interval(period);
    loop {
        every.tick().await;
        // One archiver node sweeps per period: the lease outlives the sweep and is not renewed.
        let now = tailrace_storage::meta::now_ms();
        match archive.meta().lease("expiry-sweep", &node, now + period.as_millis() as u64 * 9 / 10, now).await {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                archive.metrics.expiry_sweeps.fetch_add(1, Relaxed);
                archive.metrics.expiry_failures.fetch_add(1, Relaxed);
                tracing::warn!(error = %e, "could not take the expiry lease; will retry");
                continue;
            }
        }
        archive.metrics.expiry_sweeps.fetch_add(1, Relaxed);
        match sweep(&cfg, &archive, &artifacts, tailrace_storage::meta::now_ms(), false).await {
            Ok(s) => {
                archive.metrics.expiry_last_success_ms.store(tailrace_storage::meta::now_ms(), Relaxed);
                if !s.is_empty() {
                    info!(steps = s.steps.len(), test_result_files = s.test_results.len(), artifacts = s.artifacts.len(), "expired data past retention");
                    audit.record_durable("expired", None, s.audit_fields()).await;
                }
            }
            Err(e) => {
                archive.metrics.expiry_failures.fetch_add(1, Relaxed);
                tracing::warn!(error = %e, "expiry sweep failed; will retry");
            }
        }
    }
}

async fn shutdown_signal() {
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
}

/// Writes `bytes` to `path` readable by its owner only, atomically (a temporary file, synced,
/// renamed over it).
pub fn write_private_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|_| f.sync_all()))
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| format!("could not write {}: {e}", path.display()))
}

/// Each open step holds a staging file; lift the soft limit on open files to the hard limit.
fn raise_fd_limit() {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit write/read the struct we pass; no other memory is touched.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
