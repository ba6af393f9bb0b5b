//! Builds the archive's object store from the configuration: the local folder (embedded
//! default), S3 or an S3-compatible server, GCS, or Azure, all through `object_store`.
//! Credentials come from the usual environment variables of each cloud (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `GOOGLE_SERVICE_ACCOUNT`, `AZURE_STORAGE_ACCOUNT_NAME`, …).

use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::{ObjectStore, RetryConfig};
use tracing::info;

use crate::config::{ArchiveStore, ServeConfig};

/// Retries inside one request stay short: the archiver retries whole steps itself, and a
/// long-hanging request would hide an outage from the logs and metrics.
fn retry() -> RetryConfig {
    RetryConfig { max_retries: 3, retry_timeout: Duration::from_secs(20), ..Default::default() }
}

/// Removes the temporary files uploads cut short by a crash leave in the `local` store. Only
/// `serve` calls it, at start, before anything uploads (a `gc` or `--check-config` beside a
/// running server must not touch its uploads in flight).
pub fn clean_local_leftovers(cfg: &ServeConfig) -> Result<(), String> {
    if cfg.archive_store != ArchiveStore::Local {
        return Ok(());
    }
    let dir = cfg.archive_dir.clone().unwrap_or_else(|| cfg.data_dir.join("objects"));
    match tailrace_storage::remove_local_upload_leftovers(&dir) {
        Ok(0) => Ok(()),
        Ok(n) => {
            info!(removed = n, "removed temporary files of interrupted uploads");
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("could not clean archive dir {}: {e}", dir.display())),
    }
}

/// Applies the outbound proxy settings (`archive_proxy_*`) to a cloud store's builder; each
/// builder has the same three methods but no common trait.
macro_rules! with_proxy {
    ($b:expr, $cfg:expr) => {{
        let mut b = $b;
        if let Some(url) = &$cfg.archive_proxy_url {
            info!(proxy = %crate::config::redact_url(url), excludes = ?$cfg.archive_proxy_excludes, "archive: through a proxy");
            b = b.with_proxy_url(url);
            if let Some(excludes) = &$cfg.archive_proxy_excludes {
                b = b.with_proxy_excludes(excludes);
            }
            if let Some(path) = &$cfg.archive_proxy_ca_file {
                let pem = std::fs::read_to_string(path).map_err(|e| format!("could not read archive_proxy_ca_file {}: {e}", path.display()))?;
                b = b.with_proxy_ca_certificate(pem);
            }
        }
        b
    }};
}

pub fn build(cfg: &ServeConfig) -> Result<Arc<dyn ObjectStore>, String> {
    let bucket = || {
        cfg.archive_bucket
            .clone()
            .ok_or_else(|| format!("archive_store = {:?} needs archive_bucket (the bucket or container name)", cfg.archive_store))
    };
    let store: Arc<dyn ObjectStore> = match cfg.archive_store {
        ArchiveStore::Local => {
            let dir = cfg.archive_dir.clone().unwrap_or_else(|| cfg.data_dir.join("objects"));
            std::fs::create_dir_all(&dir).map_err(|e| format!("could not create archive dir {}: {e}", dir.display()))?;
            info!(dir = %dir.display(), "archive: local folder");
            Arc::new(
                object_store::local::LocalFileSystem::new_with_prefix(&dir)
                    .map_err(|e| format!("could not open archive dir {}: {e}", dir.display()))?,
            )
        }
        ArchiveStore::S3 => {
            let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket()?).with_retry(retry());
            if let Some(region) = &cfg.archive_region {
                b = b.with_region(region);
            }
            if let Some(endpoint) = &cfg.archive_endpoint {
                // S3-compatible servers (MinIO, SeaweedFS, Ceph) use path-style addressing.
                b = b.with_endpoint(endpoint).with_virtual_hosted_style_request(false).with_allow_http(endpoint.starts_with("http://"));
            }
            info!(bucket = ?cfg.archive_bucket, endpoint = ?cfg.archive_endpoint, "archive: S3");
            Arc::new(with_proxy!(b, cfg).build().map_err(|e| format!("invalid S3 archive settings: {e}"))?)
        }
        ArchiveStore::Gcs => {
            let b = GoogleCloudStorageBuilder::from_env().with_bucket_name(bucket()?).with_retry(retry());
            info!(bucket = ?cfg.archive_bucket, "archive: GCS");
            Arc::new(with_proxy!(b, cfg).build().map_err(|e| format!("invalid GCS archive settings: {e}"))?)
        }
        ArchiveStore::Azure => {
            let b = MicrosoftAzureBuilder::from_env().with_container_name(bucket()?).with_retry(retry());
            info!(container = ?cfg.archive_bucket, "archive: Azure");
            Arc::new(with_proxy!(b, cfg).build().map_err(|e| format!("invalid Azure archive settings: {e}"))?)
        }
    };
    Ok(store)
}
