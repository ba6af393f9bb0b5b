//! TLS material: for the QUIC listener, the operator's certificate or a self-signed one created
//! in the data directory on first start, published by its SHA-256 fingerprint so agents can pin
//! it; for the HTTP listener, the operator's certificate, reloaded when its files change.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

/// A certificate chain and key ready for rustls.
#[derive(Debug)]
pub struct TlsMaterial {
    pub certs: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// SHA-256 of the end-entity certificate (DER), lowercase hex.
    pub fingerprint: String,
}

/// Why TLS set-up failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error("could not read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("could not write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{path} holds no usable PEM {what}")]
    Pem { path: PathBuf, what: &'static str },
    #[error("could not generate a self-signed certificate: {0}")]
    Generate(String),
    #[error("invalid TLS configuration: {0}")]
    Config(String),
}

/// SHA-256 fingerprint of a DER certificate, lowercase hex.
pub fn fingerprint(cert: &[u8]) -> String {
    Sha256::digest(cert).iter().map(|b| format!("{b:02x}")).collect()
}

/// Loads `cert`/`key` PEM files if given; otherwise loads or creates the self-signed pair under
/// `dir` (`cert.pem`, `key.pem` with mode 0600).
pub fn load_or_create(cert: Option<&Path>, key: Option<&Path>, dir: &Path) -> Result<TlsMaterial, TlsError> {
    let (cert_path, key_path) = pair_or_create(cert, key, dir)?;
    let read = |p: &Path| std::fs::read(p).map_err(|source| TlsError::Read { path: p.to_path_buf(), source });
    let cert_pem = read(&cert_path)?;
    let key_pem = read(&key_path)?;
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile_certs(&cert_pem);
    let key = rustls_pemfile_key(&key_pem).ok_or(TlsError::Pem { path: key_path, what: "private key" })?;
    let first = certs.first().ok_or(TlsError::Pem { path: cert_path, what: "certificate" })?;
    let fingerprint = fingerprint(first);
    Ok(TlsMaterial { certs, key, fingerprint })
}

/// The QUIC certificate, following its files like the HTTP one: `cert`/`key` if given (an
/// operator's certificate, renewed in place), else the self-signed pair under `dir`.
pub fn quic_cert(cert: Option<&Path>, key: Option<&Path>, dir: &Path) -> Result<Arc<ReloadingCert>, TlsError> {
    let (cert_path, key_path) = pair_or_create(cert, key, dir)?;
    Ok(Arc::new(ReloadingCert::load(&cert_path, &key_path)?))
}

/// The certificate and key files: the given pair, or the self-signed one under `dir`, created
/// on first use.
fn pair_or_create(cert: Option<&Path>, key: Option<&Path>, dir: &Path) -> Result<(PathBuf, PathBuf), TlsError> {
    match (cert, key) {
        (Some(c), Some(k)) => Ok((c.to_path_buf(), k.to_path_buf())),
        (None, None) => {
            let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
            if !c.exists() || !k.exists() {
                generate(dir, &c, &k)?;
            }
            Ok((c, k))
        }
        _ => Err(TlsError::Config("set both tls_cert and tls_key, or neither".into())),
    }
}

fn generate(dir: &Path, cert_path: &Path, key_path: &Path) -> Result<(), TlsError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Write { path: dir.to_path_buf(), source })?;
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
    let ck = rcgen::generate_simple_self_signed(names).map_err(|e| TlsError::Generate(e.to_string()))?;
    let write = |path: &Path, bytes: &[u8], mode: u32| {
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(path)
            .and_then(|mut f| f.write_all(bytes).and_then(|_| f.sync_all()))
            .map_err(|source| TlsError::Write { path: path.to_path_buf(), source })
    };
    write(key_path, ck.key_pair.serialize_pem().as_bytes(), 0o600)?;
    write(cert_path, ck.cert.pem().as_bytes(), 0o644)
}

fn rustls_pemfile_certs(pem: &[u8]) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem).filter_map(Result::ok).collect()
}

fn rustls_pemfile_key(pem: &[u8]) -> Option<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem).ok()
}

/// A rustls server configuration for QUIC: TLS 1.3, the tailrace ALPN, the certificate from
/// `cert` (swapped in place when its files are renewed).
pub fn quic_server_config(cert: Arc<ReloadingCert>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    cfg.alpn_protocols = vec![tailrace_protocol::ALPN.to_vec()];
    Ok(Arc::new(cfg))
}

/// A listener's certificate (HTTP or QUIC), following its files: [`ReloadingCert::reload_if_changed`]
/// swaps in a new certificate when the files change (a renewal), and keeps the one in use when
/// the new files are unreadable or do not match (e.g. half-written), so handshakes never fail
/// for a renewal in progress.
#[derive(Debug)]
pub struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    current: parking_lot::RwLock<(Arc<rustls::sign::CertifiedKey>, String)>,
    /// Modification times and sizes of the files as last loaded (or last failed).
    seen: parking_lot::Mutex<Stamp>,
}

type Stamp = Option<[(std::time::SystemTime, u64); 2]>;

impl ReloadingCert {
    /// Loads the pair; an error says which file is wrong.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let seen = stamp(cert, key);
        let current = certified(cert, key)?;
        Ok(Self { cert: cert.to_path_buf(), key: key.to_path_buf(), current: parking_lot::RwLock::new(current), seen: parking_lot::Mutex::new(seen) })
    }

    /// SHA-256 of the certificate in use.
    pub fn fingerprint(&self) -> String {
        self.current.read().1.clone()
    }

    /// Reloads when either file changed since the last look: `Ok(true)` when a new certificate
    /// is in use, `Ok(false)` when nothing changed, an error (once per change) when the new
    /// files are not usable and the old certificate stays.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let now = stamp(&self.cert, &self.key);
        {
            let mut seen = self.seen.lock();
            if *seen == now {
                return Ok(false);
            }
            *seen = now;
        }
        let loaded = certified(&self.cert, &self.key)?;
        *self.current.write() = loaded;
        Ok(true)
    }
}

impl rustls::server::ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.current.read().0.clone())
    }
}

fn stamp(cert: &Path, key: &Path) -> Stamp {
    let one = |p: &Path| std::fs::metadata(p).ok().and_then(|m| Some((m.modified().ok()?, m.len())));
    Some([one(cert)?, one(key)?])
}

fn certified(cert_path: &Path, key_path: &Path) -> Result<(Arc<rustls::sign::CertifiedKey>, String), TlsError> {
    let m = load_or_create(Some(cert_path), Some(key_path), Path::new(""))?;
    let provider = rustls::crypto::ring::default_provider();
    let signer = provider
        .key_provider
        .load_private_key(m.key)
        .map_err(|e| TlsError::Config(format!("{}: {e}", key_path.display())))?;
    let certified = rustls::sign::CertifiedKey::new(m.certs, signer);
    certified.keys_match().map_err(|e| {
        TlsError::Config(format!("{} does not belong to the certificate in {}: {e}", key_path.display(), cert_path.display()))
    })?;
    Ok((Arc::new(certified), m.fingerprint))
}

/// A rustls server configuration for the HTTP listener: TLS 1.2 and 1.3, HTTP/2 or HTTP/1.1 by
/// ALPN, the certificate from `cert`.
pub fn http_server_config(cert: Arc<ReloadingCert>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_material_is_created_once_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create(None, None, dir.path()).unwrap();
        let second = load_or_create(None, None, dir.path()).unwrap();
        assert_eq!(first.fingerprint, second.fingerprint);
        assert_eq!(first.fingerprint.len(), 64);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("key.pem")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let cert = quic_cert(None, None, dir.path()).unwrap();
        assert_eq!(cert.fingerprint(), first.fingerprint);
        quic_server_config(cert).unwrap();
    }

    #[test]
    fn the_http_certificate_follows_its_files_and_survives_a_bad_renewal() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let first = load_or_create(None, None, a.path()).unwrap();
        let second = load_or_create(None, None, b.path()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::copy(a.path().join("cert.pem"), &cert).unwrap();
        std::fs::copy(a.path().join("key.pem"), &key).unwrap();
        let r = ReloadingCert::load(&cert, &key).unwrap();
        assert_eq!(r.fingerprint(), first.fingerprint);
        assert!(!r.reload_if_changed().unwrap());
        // Half a renewal: the new certificate with the old key is refused; the old pair stays.
        std::fs::write(&cert, std::fs::read(b.path().join("cert.pem")).unwrap()).unwrap();
        let err = r.reload_if_changed().unwrap_err().to_string();
        assert!(err.contains("does not belong"), "{err}");
        assert_eq!(r.fingerprint(), first.fingerprint);
        std::fs::write(&key, std::fs::read(b.path().join("key.pem")).unwrap()).unwrap();
        assert!(r.reload_if_changed().unwrap());
        assert_eq!(r.fingerprint(), second.fingerprint);
        http_server_config(Arc::new(r)).unwrap();
    }
}
