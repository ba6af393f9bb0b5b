//! Connections to the server's HTTP listener: plain TCP for `http://` URLs, TLS (rustls) for
//! `https://`, trusting the system's CA certificates plus those in the PEM file named by
//! `TAILRACE_CA_CERT` (for a private CA or a self-signed server certificate).

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// A byte stream to the server, over TLS or not.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// Which protocol a connection will speak, offered by ALPN.
#[derive(Debug, Clone, Copy)]
pub enum Alpn {
    Http1,
    Http2,
}

/// TLS settings for `https://` servers: one config per ALPN offer.
#[derive(Debug)]
pub struct TlsClient {
    http1: Arc<ClientConfig>,
    http2: Arc<ClientConfig>,
}

impl TlsClient {
    /// The system's roots plus `TAILRACE_CA_CERT`, if set.
    pub fn from_env() -> Result<Self, String> {
        let mut roots = RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for cert in native.certs {
            let _ = roots.add(cert);
        }
        if let Some(path) = std::env::var_os("TAILRACE_CA_CERT").filter(|p| !p.is_empty()) {
            let pem = std::fs::read(&path).map_err(|e| format!("TAILRACE_CA_CERT={}: {e}", path.to_string_lossy()))?;
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok).collect();
            if certs.is_empty() {
                return Err(format!("TAILRACE_CA_CERT={} holds no PEM certificate", path.to_string_lossy()));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| format!("TAILRACE_CA_CERT={}: {e}", path.to_string_lossy()))?;
            }
        }
        if roots.is_empty() {
            return Err("no trusted CA certificates: install the system's CA bundle or set TAILRACE_CA_CERT".into());
        }
        let config = |alpn: &[u8]| -> Result<Arc<ClientConfig>, String> {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut c = ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots.clone())
                .with_no_client_auth();
            c.alpn_protocols = vec![alpn.to_vec()];
            Ok(Arc::new(c))
        };
        Ok(Self { http1: config(b"http/1.1")?, http2: config(b"h2")? })
    }
}

/// Connects to `authority` (`host:port`), with TLS for `host` when `tls` is given.
pub async fn connect(authority: &str, host: &str, tls: Option<&TlsClient>, alpn: Alpn) -> std::io::Result<Box<dyn Io>> {
    let tcp = TcpStream::connect(authority).await?;
    let _ = tcp.set_nodelay(true);
    let Some(tls) = tls else { return Ok(Box::new(tcp)) };
    let config = match alpn {
        Alpn::Http1 => tls.http1.clone(),
        Alpn::Http2 => tls.http2.clone(),
    };
    let name = ServerName::try_from(host.to_string()).map_err(|e| std::io::Error::other(format!("bad TLS server name {host:?}: {e}")))?;
    let stream = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await?;
    Ok(Box::new(stream))
}
