//! Connections to ingest: QUIC (one bidirectional stream per step, server certificate pinned
//! by fingerprint or verified against a CA) or HTTP/2 cleartext (one POST per step, full duplex).
//! `Auto` tries QUIC and falls back to HTTP/2 for the rest of the run when UDP does not get through.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame as BodyFrame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use quinn::crypto::rustls::QuicClientConfig;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};
use tokio::io::AsyncRead;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::client::{IngestInfo, Server};

/// Which transport to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportChoice {
    /// QUIC, falling back to HTTP/2 when the QUIC handshake does not complete.
    Auto,
    Quic,
    Http2,
}

impl std::str::FromStr for TransportChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "quic" => Ok(Self::Quic),
            "http2" => Ok(Self::Http2),
            other => Err(format!("unknown transport {other:?}: expected auto, quic or http2")),
        }
    }
}

/// How to trust the QUIC server's certificate.
#[derive(Debug, Clone)]
pub enum Trust {
    /// Pin this SHA-256 fingerprint (hex); by default the one the server publishes.
    Fingerprint(String),
    /// Verify against the CA certificates in this PEM file.
    CaFile(PathBuf),
}

/// One step's duplex frame stream.
pub struct StepStream {
    pub tx: FrameTx,
    pub rx: Box<dyn AsyncRead + Send + Unpin>,
    pub via: &'static str,
}

/// The sending half of a step stream.
pub enum FrameTx {
    Quic(quinn::SendStream),
    Http2(mpsc::Sender<Result<BodyFrame<Bytes>, std::io::Error>>),
}

impl FrameTx {
    /// Sends buffers in order without copying them. Cancel-safe only at buffer boundaries: a
    /// cancelled send may have sent a prefix, which the offset rule makes harmless after a resend.
    pub async fn send(&mut self, bufs: &mut [Bytes]) -> std::io::Result<()> {
        match self {
            FrameTx::Quic(s) => s.write_all_chunks(bufs).await.map_err(std::io::Error::other),
            FrameTx::Http2(tx) => {
                for b in bufs.iter_mut() {
                    let b = std::mem::take(b);
                    tx.send(Ok(BodyFrame::data(b))).await.map_err(|_| std::io::Error::other("HTTP/2 request body closed"))?;
                }
                Ok(())
            }
        }
    }

    /// Ends the sending side.
    pub fn finish(&mut self) {
        if let FrameTx::Quic(s) = self {
            let _ = s.finish();
        }
        // HTTP/2: dropping the sender ends the body; the caller drops the stream when done.
    }
}

/// Opens step streams to one server, reusing the QUIC connection across steps and reconnects.
pub struct Connector {
    server: Server,
    choice: TransportChoice,
    trust: Option<Trust>,
    info: Option<IngestInfo>,
    quic_failed: bool,
    endpoint: Option<quinn::Endpoint>,
    quic_conn: Option<quinn::Connection>,
    connect_timeout: Duration,
    idle_timeout: Duration,
}

impl Connector {
    pub fn new(server: Server, choice: TransportChoice, trust: Option<Trust>) -> Self {
        Self {
            server,
            choice,
            trust,
            info: None,
            quic_failed: false,
            endpoint: None,
            quic_conn: None,
            connect_timeout: Duration::from_secs(3),
            idle_timeout: Duration::from_secs(30),
        }
    }

    /// How long a QUIC connection may hear nothing from the server before it counts as lost
    /// (and the agent reconnects). Keep-alives go out at a third of it.
    pub fn with_idle_timeout(mut self, t: Duration) -> Self {
        self.idle_timeout = t;
        self
    }

    /// Dials QUIC from this endpoint instead of opening a UDP socket of its own, so many
    /// connectors in one process (the load generator's simulated agents) share one socket.
    pub fn with_endpoint(mut self, endpoint: quinn::Endpoint) -> Self {
        self.endpoint = Some(endpoint);
        self
    }

    /// Opens a new step stream on the best transport that works now.
    pub async fn open(&mut self) -> Result<StepStream, String> {
        if self.info.is_none() {
            let info: IngestInfo = self
                .server
                .json(http::Method::GET, "/api/v1/ingest/info", None, None)
                .await
                .map_err(|e| e.to_string())?;
            self.info = Some(info);
        }
        let want_quic = match self.choice {
            TransportChoice::Http2 => false,
            TransportChoice::Quic => true,
            TransportChoice::Auto => !self.quic_failed,
        };
        if want_quic {
            match self.open_quic().await {
                Ok(s) => return Ok(s),
                Err(e) if self.choice == TransportChoice::Quic => {
                    // The server may have moved or rotated its certificate: ask again next time.
                    self.info = None;
                    return Err(e);
                }
                Err(e) if self.choice == TransportChoice::Auto => {
                    warn!(error = %e, "QUIC unavailable; falling back to HTTP/2 for this run");
                    self.quic_failed = true;
                }
                Err(e) => return Err(e),
            }
        }
        self.open_http2().await
    }

    async fn open_quic(&mut self) -> Result<StepStream, String> {
        let conn = match self.quic_conn.as_ref().filter(|c| c.close_reason().is_none()) {
            Some(c) => c.clone(),
            None => {
                let c = tokio::time::timeout(self.connect_timeout, self.connect_quic())
                    .await
                    .map_err(|_| format!("QUIC handshake timed out after {:?} (UDP blocked?)", self.connect_timeout))??;
                self.quic_conn = Some(c.clone());
                c
            }
        };
        let (send, recv) = conn.open_bi().await.map_err(|e| format!("could not open QUIC stream: {e}"))?;
        Ok(StepStream { tx: FrameTx::Quic(send), rx: Box::new(recv), via: "quic" })
    }

    async fn connect_quic(&mut self) -> Result<quinn::Connection, String> {
        let info = self.info.clone().ok_or("no ingest info")?;
        let addr = info.quic_addr.as_deref().ok_or("server does not offer QUIC")?;
        let addr = self.quic_target(addr)?;
        let trust = match (&self.trust, &info.cert_sha256) {
            (Some(t), _) => t.clone(),
            (None, Some(fp)) => Trust::Fingerprint(fp.clone()),
            (None, None) => return Err("server publishes no certificate fingerprint; pass --ca-cert".into()),
        };
        let crypto = client_crypto(&trust)?;
        let crypto = QuicClientConfig::try_from(crypto).map_err(|e| e.to_string())?;
        let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
        let mut transport = quinn::TransportConfig::default();
        transport.keep_alive_interval(Some(self.idle_timeout / 3));
        if let Ok(t) = self.idle_timeout.try_into() {
            transport.max_idle_timeout(Some(t));
        }
        transport.send_window(16 * 1024 * 1024);
        // Ask the server to acknowledge every 16th packet instead of every other one: fewer
        // packets and wake-ups on both ends for a one-way bulk stream.
        let mut ack = quinn::AckFrequencyConfig::default();
        ack.ack_eliciting_threshold(16u32.into());
        transport.ack_frequency_config(Some(ack));
        cfg.transport_config(Arc::new(transport));
        if self.endpoint.is_none() {
            let bind: SocketAddr = if addr.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" }.parse().map_err(|_| "bind addr")?;
            self.endpoint = Some(quinn::Endpoint::client(bind).map_err(|e| format!("could not open UDP socket: {e}"))?);
        }
        let endpoint = self.endpoint.as_ref().ok_or("no endpoint")?;
        let name = if self.server.host.parse::<std::net::IpAddr>().is_ok() { "localhost" } else { &self.server.host };
        let conn = endpoint
            .connect_with(cfg, addr, name)
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| format!("QUIC connection to {addr} failed: {e}"))?;
        info!(%addr, "connected over QUIC");
        Ok(conn)
    }

    /// The QUIC address to dial: the published one, with an unspecified host replaced by the
    /// host of the server URL.
    fn quic_target(&self, published: &str) -> Result<SocketAddr, String> {
        let sa: SocketAddr = published.parse().map_err(|_| format!("bad QUIC address {published:?} from server"))?;
        let host = if sa.ip().is_unspecified() { self.server.host.clone() } else { sa.ip().to_string() };
        let target = if host.contains(':') { format!("[{host}]:{}", sa.port()) } else { format!("{host}:{}", sa.port()) };
        target
            .to_socket_addrs()
            .map_err(|e| format!("could not resolve {target}: {e}"))?
            .next()
            .ok_or_else(|| format!("{target} resolves to nothing"))
    }

    async fn open_http2(&mut self) -> Result<StepStream, String> {
        let path = self.info.as_ref().map_or("/api/v1/ingest".to_string(), |i| i.http2_path.clone());
        let io = tokio::time::timeout(self.connect_timeout, self.server.connect(crate::net::Alpn::Http2))
            .await
            .map_err(|_| format!("connecting to {} timed out", self.server.authority))?
            .map_err(|e| e.to_string())?;
        let (mut send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .initial_stream_window_size(4 * 1024 * 1024)
            .initial_connection_window_size(8 * 1024 * 1024)
            .handshake(TokioIo::new(io))
            .await
            .map_err(|e| format!("HTTP/2 handshake failed: {e}"))?;
        tokio::spawn(conn);
        let (tx, rx) = mpsc::channel::<Result<BodyFrame<Bytes>, std::io::Error>>(16);
        let body = StreamBody::new(futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|f| (f, rx)) }));
        let req = http::Request::post(format!("{}://{}{path}", self.server.scheme(), self.server.authority))
            .header("tailrace-protocol", tailrace_protocol::PROTOCOL_VERSION)
            .header(http::header::CONTENT_TYPE, "application/vnd.tailrace.frames")
            .body(BodyExt::boxed(body))
            .map_err(|e| e.to_string())?;
        // The response head arrives once the server handler starts; the body streams replies.
        let resp_fut = send.send_request(req);
        let resp = resp_fut.await.map_err(|e| format!("HTTP/2 ingest request failed: {e}"))?;
        if !resp.status().is_success() {
            let status = resp.status();
            let body = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            return Err(format!("HTTP/2 ingest refused ({status}): {}", String::from_utf8_lossy(&body).trim()));
        }
        let stream = resp.into_body().into_data_stream();
        let reader = tokio_util_stream_reader(stream);
        Ok(StepStream { tx: FrameTx::Http2(tx), rx: reader, via: "http2" })
    }
}

fn tokio_util_stream_reader(
    stream: http_body_util::BodyDataStream<hyper::body::Incoming>,
) -> Box<dyn AsyncRead + Send + Unpin> {
    use futures_util::TryStreamExt;
    Box::new(tokio_util::io::StreamReader::new(stream.map_err(std::io::Error::other)))
}

fn client_crypto(trust: &Trust) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?;
    let mut cfg = match trust {
        Trust::Fingerprint(fp) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned { fingerprint: fp.to_lowercase(), provider }))
            .with_no_client_auth(),
        Trust::CaFile(path) => {
            use rustls::pki_types::pem::PemObject;
            let mut roots = rustls::RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(path).map_err(|e| format!("could not read {}: {e}", path.display()))?;
            for c in certs {
                roots.add(c.map_err(|e| format!("bad certificate in {}: {e}", path.display()))?).map_err(|e| e.to_string())?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    cfg.alpn_protocols = vec![tailrace_protocol::ALPN.to_vec()];
    Ok(cfg)
}

/// Accepts exactly the certificate whose SHA-256 is pinned; signatures are still verified, so
/// only the holder of that certificate's key can complete the handshake.
#[derive(Debug)]
struct Pinned {
    fingerprint: String,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let fp: String = Sha256::digest(end_entity.as_ref()).iter().map(|b| format!("{b:02x}")).collect();
        if fp == self.fingerprint {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!("server certificate fingerprint {fp} is not the pinned {}", self.fingerprint)))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
