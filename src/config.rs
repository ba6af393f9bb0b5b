//! Server configuration: a TOML file, then `TAILRACE_*` environment variables, then flags.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tailrace_storage::Durability;

/// Default HTTP listen address: API, websocket tail, HTTP/2 ingest, metrics.
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:8520";
/// Default QUIC (UDP) listen address for agents.
pub const DEFAULT_QUIC_ADDR: &str = "127.0.0.1:8521";

/// Everything `tailrace serve` can be told. Unknown keys are an error, so typos are caught.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    /// Where staging files, the SQLite database, TLS material and tokens live.
    pub data_dir: PathBuf,
    /// The metadata store: unset for SQLite in `<data_dir>/meta.db`, or a MongoDB URI
    /// (`mongodb://…` or `mongodb+srv://…`; the database is the URI's, else `tailrace`).
    pub meta_url: Option<String>,
    /// The live tier: unset for staging files in `<data_dir>/live`, or a Redis URL
    /// (`redis://[user:pass@]host:port[/db]`) shared by every node.
    pub live_url: Option<String>,
    /// Redis keys of a step expire this long after its last append (abandoned steps).
    pub live_ttl_hours: u64,
    /// Redis replicas each ack waits for (`WAIT`); 0 trusts the primary's persistence.
    pub live_wait_replicas: u32,
    /// Most MiB of a running step Redis holds that the archiver has not released: past it,
    /// the step's output waits unacknowledged (agents keep it) until the archiver catches up.
    /// 0: no limit. At least twice `archive_live_mib` (with `live_url`; staging files are on
    /// disk and have no such limit).
    pub live_hold_max_mib: u64,
    /// What this process does: `all`, or any of `ingest` (QUIC and HTTP/2 ingest), `query` (the
    /// HTTP API and live tails) and `archiver` (archiving and expiry, under leases). Roles other
    /// than `all` need the shared backends (`live_url`, `meta_url`).
    pub roles: Vec<Role>,
    /// HTTP listen address (API, websocket tail, HTTP/2 ingest, `/metrics`).
    pub http_addr: SocketAddr,
    /// QUIC listen address (UDP); the HTTP API publishes it at `/api/v1/ingest/info`.
    pub quic_addr: SocketAddr,
    /// QUIC address agents should dial, when it differs from `quic_addr` (NAT, load balancer,
    /// proxy). Published at `/api/v1/ingest/info`.
    pub quic_public_addr: Option<SocketAddr>,
    /// Step streams one QUIC connection may have open at once (`tailrace run` needs one; an agent
    /// multiplexing many steps needs more). Each allowed stream costs memory per connection.
    pub quic_streams_per_connection: u32,
    /// QUIC connections at once (one per running `tailrace run`); more wait before the handshake.
    pub quic_max_connections: usize,
    /// Requests per second each token (or, for requests without a valid token, each client
    /// address) may make, sustained; 0 turns rate limits off. Ingest streams are not counted.
    pub rate_limit_rps: u32,
    /// Requests a caller may make at once above the sustained rate.
    pub rate_limit_burst: u32,
    /// When bytes count as durable and are acknowledged: `fsync` (default) or `os`.
    pub durability: Durability,
    /// Largest ingest frame payload in bytes. Memory per ingest stream is about this much.
    pub max_frame: usize,
    /// Lifetime of job tokens, in seconds.
    pub job_token_ttl_secs: u64,
    /// The signing-key file (JSON, mode 0600; `tailrace keys rotate` adds a key). Reloaded when
    /// it changes. Default: `<data_dir>/signing-keys.json`, created on first start.
    pub signing_keys_file: Option<PathBuf>,
    /// Steps one token may stream at once; more are refused until one ends. 0: no limit.
    pub ingest_steps_per_token: u32,
    /// Output bytes per second (MiB) one token may stream, over all its steps; a faster agent
    /// is slowed down (its spool holds the rest), not refused. 0: no limit.
    pub ingest_mib_per_sec_per_token: u64,
    /// PEM certificate chain for the HTTP listener; with `http_tls_key`, the API, websocket tail
    /// and HTTP/2 ingest are served over TLS only. Both files are reloaded when they change.
    pub http_tls_cert: Option<PathBuf>,
    /// PEM private key for the HTTP listener.
    pub http_tls_key: Option<PathBuf>,
    /// PEM certificate chain for QUIC; with `tls_key`. Default: self-signed in `<data_dir>/tls`.
    /// Both files are reloaded when they change (agents pin the fingerprint the server
    /// publishes, which follows).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for QUIC.
    pub tls_key: Option<PathBuf>,
    /// Log format: `text` or `json`.
    pub log_format: String,
    /// Archive ended steps to the object store (and release them from the live tier).
    pub archive: bool,
    /// Where archived segments go: `local` (a folder), `s3`, `gcs` or `azure`.
    pub archive_store: ArchiveStore,
    /// Folder of the `local` store. Default: `<data_dir>/objects`.
    pub archive_dir: Option<PathBuf>,
    /// Bucket (S3, GCS) or container (Azure).
    pub archive_bucket: Option<String>,
    /// Endpoint of an S3-compatible server, e.g. `http://127.0.0.1:9000`.
    pub archive_endpoint: Option<String>,
    /// S3 region (default from `AWS_REGION`/`AWS_DEFAULT_REGION`).
    pub archive_region: Option<String>,
    /// Outbound HTTP proxy for object-store requests (S3, GCS, Azure), e.g.
    /// `http://proxy.internal:3128`. Default: `HTTPS_PROXY` (`HTTP_PROXY` for an `http://`
    /// endpoint), else `ALL_PROXY`, from the environment.
    pub archive_proxy_url: Option<String>,
    /// Hosts that bypass the proxy, comma-separated as in `NO_PROXY` (the default).
    pub archive_proxy_excludes: Option<String>,
    /// PEM CA certificate of a TLS-intercepting proxy, trusted for object-store requests.
    pub archive_proxy_ca_file: Option<PathBuf>,
    /// zstd level of archived segments; on Redis also of the frames large appends are stored
    /// as (the archiver writes those as they are).
    pub archive_level: i32,
    /// Stream bytes per segment object, in MiB.
    pub archive_segment_mib: u64,
    /// A running step's output is archived (and dropped from the live tier) in segments of this
    /// many MiB as soon as that much waits; so the live tier holds about this much per running
    /// step.
    pub archive_live_mib: u64,
    /// A running step's waiting output is archived once its oldest byte is this many seconds
    /// old, however little there is. Unset: 600 on staging files; 30 on Redis, where memory is
    /// dearer and an AOF rewrite writes out all Redis holds (see [`Self::live_age_secs`]).
    pub archive_live_age_secs: Option<u64>,
    /// How often the archiver looks for work it was not told about (failed attempts, restarts,
    /// old output of running steps), in seconds.
    pub archive_sweep_secs: u64,
    /// Days to keep step output after the step ended; unset keeps it forever (the default, as in
    /// CircleCI Server). Expired output is deleted from the archive and the live tier, and
    /// readers get `410 Gone`.
    pub retention_logs_days: Option<u32>,
    /// Days to keep raw test-result files (`test-results/` in the object store), by the day
    /// they were uploaded; unset keeps them forever. Parsed runs and insights rollups stay.
    pub retention_test_results_days: Option<u32>,
    /// Days to keep artifacts, by the day their upload began; unset keeps them forever.
    /// Expired artifacts answer `410 Gone`.
    pub retention_artifacts_days: Option<u32>,
    /// How often `serve` runs the expiry sweep, in seconds.
    pub expiry_sweep_secs: u64,
    /// Largest single artifact, in MiB.
    pub artifacts_max_file_mib: u64,
    /// Largest total of one job's artifacts, in MiB.
    pub artifacts_max_job_mib: u64,
    /// Artifacts are stored in parts of this many MiB; a dropped upload resends at most one part,
    /// and each receiving upload holds at most one part in memory.
    pub artifacts_part_mib: u64,
    /// Uploads receiving at once; more wait. Memory for uploads is at most this many parts.
    pub artifacts_uploads: usize,
    /// Serve HTML, SVG, XML and JavaScript artifacts as their real types (sandboxed: scripts
    /// run in an opaque origin) instead of as inert text attachments. Prefer a separate origin
    /// (`artifacts_url`) when turning this on.
    pub artifacts_serve_active: bool,
    /// Base URL of artifact links in listings, e.g. `https://artifacts.ci.example.com` (a separate
    /// origin routed to this server). Default: this server, as the request reached it.
    pub artifacts_url: Option<String>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("tailrace-data"),
            meta_url: None,
            live_url: None,
            live_ttl_hours: 7 * 24,
            live_wait_replicas: 0,
            live_hold_max_mib: 256,
            roles: vec![Role::All],
            http_addr: DEFAULT_HTTP_ADDR.parse().unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 8520))),
            quic_addr: DEFAULT_QUIC_ADDR.parse().unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 8521))),
            quic_public_addr: None,
            quic_streams_per_connection: 64,
            rate_limit_rps: 150,
            rate_limit_burst: 300,
            quic_max_connections: 16384,
            durability: Durability::Fsync,
            max_frame: tailrace_protocol::DEFAULT_MAX_FRAME,
            job_token_ttl_secs: 24 * 3600,
            signing_keys_file: None,
            ingest_steps_per_token: 256,
            ingest_mib_per_sec_per_token: 0,
            http_tls_cert: None,
            http_tls_key: None,
            tls_cert: None,
            tls_key: None,
            log_format: "text".into(),
            archive: true,
            archive_store: ArchiveStore::Local,
            archive_dir: None,
            archive_bucket: None,
            archive_endpoint: None,
            archive_region: None,
            archive_proxy_url: None,
            archive_proxy_excludes: None,
            archive_proxy_ca_file: None,
            archive_level: 1,
            archive_segment_mib: 256,
            archive_live_mib: 64,
            archive_live_age_secs: None,
            archive_sweep_secs: 10,
            retention_logs_days: None,
            retention_test_results_days: None,
            retention_artifacts_days: None,
            expiry_sweep_secs: 3600,
            artifacts_max_file_mib: 10 * 1024,
            artifacts_max_job_mib: 50 * 1024,
            artifacts_part_mib: 8,
            artifacts_uploads: 8,
            artifacts_serve_active: false,
            artifacts_url: None,
        }
    }
}

/// `url` with its password, if any, replaced by `****`: for logs and the audit log.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let auth_end = rest.find(['/', '?']).unwrap_or(rest.len());
    match rest[..auth_end].rfind('@') {
        Some(at) => {
            let user = rest[..at].split(':').next().unwrap_or("");
            format!("{scheme}://{user}:****{}", &rest[at..])
        }
        None => url.to_string(),
    }
}

/// A part of the work a `tailrace serve` process does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    All,
    Ingest,
    Query,
    Archiver,
}

impl Role {
    /// `ingest,query`-style lists.
    pub fn parse_list(v: &str) -> Result<Vec<Role>, String> {
        v.split(',')
            .map(|r| match r.trim() {
                "all" => Ok(Role::All),
                "ingest" => Ok(Role::Ingest),
                "query" => Ok(Role::Query),
                "archiver" => Ok(Role::Archiver),
                other => Err(format!("unknown role {other:?}: expected all, ingest, query or archiver (comma-separated)")),
            })
            .collect()
    }
}

/// Kinds of object store for the archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArchiveStore {
    Local,
    S3,
    Gcs,
    Azure,
}

/// The start of the first day kept `days` days back from `now_ms`; `None` for unlimited.
fn cutoff_ms(days: Option<u32>, now_ms: u64) -> Option<u64> {
    const DAY: u64 = 86_400_000;
    let days = u64::from(days?);
    Some((now_ms.saturating_sub(days * DAY) / DAY) * DAY)
}

impl ServeConfig {
    /// Whether this process does `role`'s work.
    pub fn runs(&self, role: Role) -> bool {
        self.roles.contains(&Role::All) || self.roles.contains(&role)
    }

    /// `archive_live_age_secs`, or its default for the live tier: on Redis every running step
    /// then holds at most ~30 s of output plus the sweep's period, which keeps Redis's memory and
    /// its AOF rewrites (a forked child writing out all Redis holds) small.
    pub fn live_age_secs(&self) -> u64 {
        self.archive_live_age_secs.unwrap_or(if self.live_url.is_some() { 30 } else { 600 })
    }

    /// Refuses settings that cannot work together.
    pub fn validate(&self) -> Result<(), String> {
        if self.roles.is_empty() {
            return Err("roles is empty: use all, or some of ingest, query, archiver".into());
        }
        if !self.runs(Role::All) && (self.live_url.is_none() || self.meta_url.is_none()) {
            return Err(format!(
                "roles {:?} split the work between processes, which then need shared backends: set live_url (Redis) and meta_url (MongoDB)",
                self.roles
            ));
        }
        if self.live_url.is_some() && self.live_hold_max_mib != 0 && self.live_hold_max_mib < 2 * self.archive_live_mib.max(1) {
            return Err(format!(
                "live_hold_max_mib ({}) must be 0 (no limit) or at least twice archive_live_mib ({}): the archiver takes a running step's output {} MiB at a time",
                self.live_hold_max_mib, self.archive_live_mib, self.archive_live_mib
            ));
        }
        Ok(())
    }

    /// The start of the first day whose output is kept at `now_ms`: output of steps that ended
    /// before it is expired. `None` when retention is unlimited.
    pub fn logs_cutoff_ms(&self, now_ms: u64) -> Option<u64> {
        cutoff_ms(self.retention_logs_days, now_ms)
    }

    /// The same for raw test-result files, by upload day.
    pub fn test_results_cutoff_ms(&self, now_ms: u64) -> Option<u64> {
        cutoff_ms(self.retention_test_results_days, now_ms)
    }

    /// The same for artifacts, by the day their upload began.
    pub fn artifacts_cutoff_ms(&self, now_ms: u64) -> Option<u64> {
        cutoff_ms(self.retention_artifacts_days, now_ms)
    }

    /// Reads the file (if any) and applies environment overrides from `env`.
    pub fn load(file: Option<&Path>, env: &HashMap<String, String>) -> Result<Self, String> {
        let mut cfg = match file {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| format!("could not read config {}: {e}", p.display()))?;
                toml::from_str(&text).map_err(|e| format!("invalid config {}: {e}", p.display()))?
            }
            None => ServeConfig::default(),
        };
        let get = |k: &str| env.get(k).filter(|v| !v.is_empty());
        if let Some(v) = get("TAILRACE_DATA_DIR") {
            cfg.data_dir = v.into();
        }
        if let Some(v) = get("TAILRACE_META_URL") {
            cfg.meta_url = Some(v.clone());
        }
        if let Some(v) = get("TAILRACE_LIVE_URL") {
            cfg.live_url = Some(v.clone());
        }
        if let Some(v) = get("TAILRACE_ROLES") {
            cfg.roles = Role::parse_list(v)?;
        }
        if let Some(v) = get("TAILRACE_HTTP_ADDR") {
            cfg.http_addr = v.parse().map_err(|_| format!("TAILRACE_HTTP_ADDR={v:?} is not HOST:PORT"))?;
        }
        if let Some(v) = get("TAILRACE_QUIC_ADDR") {
            cfg.quic_addr = v.parse().map_err(|_| format!("TAILRACE_QUIC_ADDR={v:?} is not HOST:PORT"))?;
        }
        if let Some(v) = get("TAILRACE_QUIC_PUBLIC_ADDR") {
            cfg.quic_public_addr = Some(v.parse().map_err(|_| format!("TAILRACE_QUIC_PUBLIC_ADDR={v:?} is not HOST:PORT"))?);
        }
        if let Some(v) = get("TAILRACE_DURABILITY") {
            cfg.durability = match v.as_str() {
                "fsync" => Durability::Fsync,
                "os" => Durability::Os,
                _ => return Err(format!("TAILRACE_DURABILITY={v:?}: expected fsync or os")),
            };
        }
        if let Some(v) = get("TAILRACE_ARCHIVE_STORE") {
            cfg.archive_store = match v.as_str() {
                "local" => ArchiveStore::Local,
                "s3" => ArchiveStore::S3,
                "gcs" => ArchiveStore::Gcs,
                "azure" => ArchiveStore::Azure,
                _ => return Err(format!("TAILRACE_ARCHIVE_STORE={v:?}: expected local, s3, gcs or azure")),
            };
        }
        if let Some(v) = get("TAILRACE_ARCHIVE_BUCKET") {
            cfg.archive_bucket = Some(v.clone());
        }
        if let Some(v) = get("TAILRACE_ARCHIVE_ENDPOINT") {
            cfg.archive_endpoint = Some(v.clone());
        }
        if let Some(v) = get("TAILRACE_ARCHIVE_PROXY_URL") {
            cfg.archive_proxy_url = Some(v.clone());
        }
        if cfg.archive_proxy_url.is_none() {
            // The conventional proxy variables, as curl and the cloud CLIs read them.
            let plain = cfg.archive_endpoint.as_deref().is_some_and(|e| e.starts_with("http://"));
            let names = if plain { ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"] } else { ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"] };
            cfg.archive_proxy_url = names.iter().find_map(|n| get(n)).cloned();
        }
        if cfg.archive_proxy_excludes.is_none() {
            cfg.archive_proxy_excludes = get("NO_PROXY").or_else(|| get("no_proxy")).cloned();
        }
        if let Some(v) = get("TAILRACE_SIGNING_KEYS_FILE") {
            cfg.signing_keys_file = Some(v.into());
        }
        if let Some(v) = get("TAILRACE_HTTP_TLS_CERT") {
            cfg.http_tls_cert = Some(v.into());
        }
        if let Some(v) = get("TAILRACE_HTTP_TLS_KEY") {
            cfg.http_tls_key = Some(v.into());
        }
        if let Some(v) = get("TAILRACE_TLS_CERT") {
            cfg.tls_cert = Some(v.into());
        }
        if let Some(v) = get("TAILRACE_TLS_KEY") {
            cfg.tls_key = Some(v.into());
        }
        if let Some(v) = get("TAILRACE_RETENTION_LOGS_DAYS") {
            cfg.retention_logs_days = Some(v.parse().map_err(|_| format!("TAILRACE_RETENTION_LOGS_DAYS={v:?} is not a number of days"))?);
        }
        let num = |k: &str| -> Result<Option<u64>, String> {
            get(k).map(|v| v.parse::<u64>().map_err(|_| format!("{k}={v:?} is not a whole number"))).transpose()
        };
        if let Some(n) = num("TAILRACE_RATE_LIMIT_RPS")? {
            cfg.rate_limit_rps = u32::try_from(n).map_err(|_| "TAILRACE_RATE_LIMIT_RPS is too large")?;
        }
        if let Some(n) = num("TAILRACE_RATE_LIMIT_BURST")? {
            cfg.rate_limit_burst = u32::try_from(n).map_err(|_| "TAILRACE_RATE_LIMIT_BURST is too large")?;
        }
        if let Some(n) = num("TAILRACE_INGEST_STEPS_PER_TOKEN")? {
            cfg.ingest_steps_per_token = u32::try_from(n).map_err(|_| "TAILRACE_INGEST_STEPS_PER_TOKEN is too large")?;
        }
        if let Some(n) = num("TAILRACE_INGEST_MIB_PER_SEC_PER_TOKEN")? {
            cfg.ingest_mib_per_sec_per_token = n;
        }
        if let Some(n) = num("TAILRACE_QUIC_STREAMS_PER_CONNECTION")? {
            cfg.quic_streams_per_connection = u32::try_from(n).map_err(|_| "TAILRACE_QUIC_STREAMS_PER_CONNECTION is too large")?;
        }
        if let Some(n) = num("TAILRACE_ARCHIVE_SEGMENT_MIB")? {
            cfg.archive_segment_mib = n;
        }
        if let Some(n) = num("TAILRACE_LIVE_HOLD_MAX_MIB")? {
            cfg.live_hold_max_mib = n;
        }
        if let Some(n) = num("TAILRACE_ARCHIVE_LIVE_MIB")? {
            cfg.archive_live_mib = n;
        }
        if let Some(n) = num("TAILRACE_ARCHIVE_LIVE_AGE_SECS")? {
            cfg.archive_live_age_secs = Some(n);
        }
        if let Some(n) = num("TAILRACE_ARCHIVE_SWEEP_SECS")? {
            cfg.archive_sweep_secs = n;
        }
        if let Some(n) = num("TAILRACE_RETENTION_TEST_RESULTS_DAYS")? {
            cfg.retention_test_results_days = Some(u32::try_from(n).map_err(|_| "TAILRACE_RETENTION_TEST_RESULTS_DAYS is too large".to_string())?);
        }
        if let Some(n) = num("TAILRACE_RETENTION_ARTIFACTS_DAYS")? {
            cfg.retention_artifacts_days = Some(u32::try_from(n).map_err(|_| "TAILRACE_RETENTION_ARTIFACTS_DAYS is too large".to_string())?);
        }
        if let Some(n) = num("TAILRACE_ARTIFACTS_MAX_FILE_MIB")? {
            cfg.artifacts_max_file_mib = n;
        }
        if let Some(n) = num("TAILRACE_ARTIFACTS_MAX_JOB_MIB")? {
            cfg.artifacts_max_job_mib = n;
        }
        if let Some(n) = num("TAILRACE_ARTIFACTS_PART_MIB")? {
            cfg.artifacts_part_mib = n;
        }
        if let Some(v) = get("TAILRACE_ARTIFACTS_SERVE_ACTIVE") {
            cfg.artifacts_serve_active = match v.as_str() {
                "true" | "1" => true,
                "false" | "0" => false,
                _ => return Err(format!("TAILRACE_ARTIFACTS_SERVE_ACTIVE={v:?}: expected true or false")),
            };
        }
        if let Some(v) = get("TAILRACE_ARTIFACTS_URL") {
            cfg.artifacts_url = Some(v.clone());
        }
        if let Some(v) = get("TAILRACE_LOG_FORMAT") {
            cfg.log_format = v.clone();
        }
        cfg.validate()?;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_and_split_roles_need_shared_backends() {
        assert_eq!(Role::parse_list("ingest, query").unwrap(), [Role::Ingest, Role::Query]);
        assert!(Role::parse_list("ingest,reader").unwrap_err().contains("unknown role \"reader\""));
        let env: HashMap<String, String> = [("TAILRACE_ROLES".to_string(), "archiver".to_string())].into();
        assert!(ServeConfig::load(None, &env).unwrap_err().contains("set live_url (Redis) and meta_url (MongoDB)"));
        let mut env = env;
        env.insert("TAILRACE_LIVE_URL".into(), "redis://r/".into());
        env.insert("TAILRACE_META_URL".into(), "mongodb://m/".into());
        let cfg = ServeConfig::load(None, &env).unwrap();
        assert!(cfg.runs(Role::Archiver) && !cfg.runs(Role::Ingest));
        assert!(ServeConfig::default().runs(Role::Ingest));
    }

    #[test]
    fn redis_holds_at_least_two_archive_segments_of_a_running_step() {
        let mut env: HashMap<String, String> = [("TAILRACE_LIVE_HOLD_MAX_MIB".to_string(), "100".to_string())].into();
        assert_eq!(ServeConfig::load(None, &env).unwrap().live_hold_max_mib, 100, "staging files have no such limit");
        env.insert("TAILRACE_LIVE_URL".into(), "redis://r/".into());
        let e = ServeConfig::load(None, &env).unwrap_err();
        assert!(e.contains("live_hold_max_mib (100)") && e.contains("archive_live_mib (64)"), "{e}");
        env.insert("TAILRACE_LIVE_HOLD_MAX_MIB".into(), "0".into());
        assert_eq!(ServeConfig::load(None, &env).unwrap().live_hold_max_mib, 0);
        env.remove("TAILRACE_LIVE_HOLD_MAX_MIB");
        assert_eq!(ServeConfig::load(None, &env).unwrap().live_hold_max_mib, 256);
    }

    #[test]
    fn running_steps_are_archived_sooner_on_redis_unless_told() {
        let mut env: HashMap<String, String> = HashMap::new();
        assert_eq!(ServeConfig::load(None, &env).unwrap().live_age_secs(), 600);
        env.insert("TAILRACE_LIVE_URL".into(), "redis://r/".into());
        assert_eq!(ServeConfig::load(None, &env).unwrap().live_age_secs(), 30);
        env.insert("TAILRACE_ARCHIVE_LIVE_AGE_SECS".into(), "900".into());
        assert_eq!(ServeConfig::load(None, &env).unwrap().live_age_secs(), 900);
        let file: ServeConfig = toml::from_str("archive_live_age_secs = 5").unwrap();
        assert_eq!(file.live_age_secs(), 5);
    }

    #[test]
    fn object_store_proxy_comes_from_the_config_or_the_usual_variables() {
        let env = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<HashMap<_, _>>();
        let cfg = ServeConfig::load(None, &env(&[("HTTPS_PROXY", "http://p:3128"), ("NO_PROXY", "10.0.0.1,.internal")])).unwrap();
        assert_eq!(cfg.archive_proxy_url.as_deref(), Some("http://p:3128"));
        assert_eq!(cfg.archive_proxy_excludes.as_deref(), Some("10.0.0.1,.internal"));
        // An http:// endpoint goes through HTTP_PROXY, as curl would.
        let plain = env(&[("HTTPS_PROXY", "http://s:1"), ("http_proxy", "http://h:2"), ("TAILRACE_ARCHIVE_ENDPOINT", "http://minio:9000")]);
        assert_eq!(ServeConfig::load(None, &plain).unwrap().archive_proxy_url.as_deref(), Some("http://h:2"));
        let explicit = env(&[("HTTPS_PROXY", "http://s:1"), ("TAILRACE_ARCHIVE_PROXY_URL", "http://t:3")]);
        assert_eq!(ServeConfig::load(None, &explicit).unwrap().archive_proxy_url.as_deref(), Some("http://t:3"));
        assert_eq!(ServeConfig::load(None, &env(&[])).unwrap().archive_proxy_url, None);
    }

    #[test]
    fn passwords_in_urls_are_redacted() {
        assert_eq!(redact_url("mongodb://app:s3cr@t@db1:27017,db2/tr?replicaSet=rs0"), "mongodb://app:****@db1:27017,db2/tr?replicaSet=rs0");
        assert_eq!(redact_url("mongodb+srv://app@cluster.example.net/"), "mongodb+srv://app:****@cluster.example.net/");
        assert_eq!(redact_url("mongodb://127.0.0.1:27017/x?a=b@c"), "mongodb://127.0.0.1:27017/x?a=b@c");
        assert_eq!(redact_url("not a url"), "not a url");
    }

    #[test]
    fn file_then_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.toml");
        std::fs::write(&file, "data_dir = \"/x\"\ndurability = \"os\"\n").unwrap();
        let env: HashMap<String, String> = [("TAILRACE_HTTP_ADDR".to_string(), "0.0.0.0:1".to_string())].into();
        let cfg = ServeConfig::load(Some(&file), &env).unwrap();
        assert_eq!(cfg.data_dir, PathBuf::from("/x"));
        assert_eq!(cfg.durability, Durability::Os);
        assert_eq!(cfg.http_addr.port(), 1);
        std::fs::write(&file, "data_dri = \"/x\"\n").unwrap();
        let err = ServeConfig::load(Some(&file), &HashMap::new()).unwrap_err();
        assert!(err.contains("unknown field"), "{err}");
        let bad: HashMap<String, String> = [("TAILRACE_DURABILITY".to_string(), "maybe".to_string())].into();
        assert!(ServeConfig::load(None, &bad).unwrap_err().contains("expected fsync or os"));
    }
}

#[cfg(test)]
mod retention_tests {
    use super::*;

    #[test]
    fn cutoff_is_the_start_of_the_oldest_kept_day() {
        let mut cfg = ServeConfig::default();
        assert_eq!(cfg.logs_cutoff_ms(1_000_000_000_000), None, "unlimited by default");
        cfg.retention_logs_days = Some(7);
        let day = 86_400_000;
        let now = 20_000 * day + 5 * 3_600_000;
        assert_eq!(cfg.logs_cutoff_ms(now), Some(19_993 * day));
    }
}
