//! The QUIC ingest transport: one connection per agent, one bidirectional stream per step.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use quinn::crypto::rustls::QuicServerConfig;
use tokio::sync::{mpsc, Semaphore};
use tracing::{debug, info, warn};

use crate::core::IngestCore;
use crate::tls::{self, ReloadingCert, TlsError};

/// Flow-control and concurrency settings of the QUIC listener.
#[derive(Debug, Clone)]
pub struct QuicLimits {
    /// Concurrent step streams per connection. quinn keeps a map entry per allowed stream from
    /// the start, so this costs memory on every connection (1,024 cost ~75 KiB each).
    pub max_streams_per_connection: u32,
    /// Concurrent agent connections; more wait before the handshake.
    pub max_connections: usize,
    /// Bytes an agent may have in flight on one stream (memory bound per step: this window,
    /// held by quinn until the core reads it).
    pub stream_window: u32,
    /// Bytes in flight across all streams of a connection.
    pub connection_window: u32,
    pub idle_timeout: Duration,
}

impl Default for QuicLimits {
    fn default() -> Self {
        Self {
            max_streams_per_connection: 64,
            max_connections: 16384,
            stream_window: 2 * 1024 * 1024,
            connection_window: 16 * 1024 * 1024,
            idle_timeout: Duration::from_secs(30),
        }
    }
}

/// Binds the QUIC endpoint.
pub fn bind(addr: SocketAddr, cert: Arc<ReloadingCert>, limits: &QuicLimits) -> Result<quinn::Endpoint, TlsError> {
    let crypto = tls::quic_server_config(cert)?;
    let crypto = QuicServerConfig::try_from(crypto).map_err(|e| TlsError::Config(e.to_string()))?;
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(limits.max_streams_per_connection.into())
        .max_concurrent_uni_streams(0u8.into())
        .stream_receive_window(limits.stream_window.into())
        .receive_window(limits.connection_window.into())
        .send_window(u64::from(limits.connection_window))
        .keep_alive_interval(Some(Duration::from_secs(5)));
    if let Ok(t) = limits.idle_timeout.try_into() {
        transport.max_idle_timeout(Some(t));
    }
    cfg.transport_config(Arc::new(transport));
    quinn::Endpoint::server(cfg, addr).map_err(|e| TlsError::Config(format!("could not bind QUIC on {addr}: {e}")))
}

/// Accepts connections until the endpoint is closed.
pub async fn serve(endpoint: quinn::Endpoint, core: Arc<IngestCore>, limits: QuicLimits) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    while let Some(incoming) = endpoint.accept().await {
        // Limit connections before the handshake costs anything.
        let Ok(permit) = slots.clone().acquire_owned().await else { break };
        let core = core.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let conn = match incoming.await {
                Ok(c) => c,
                Err(e) => {
                    debug!(error = %e, "QUIC handshake failed");
                    return;
                }
            };
            let peer = conn.remote_address().to_string();
            debug!(%peer, "agent connected over QUIC");
            loop {
                match conn.accept_bi().await {
                    Ok((send, recv)) => {
                        tokio::spawn(serve_bi(core.clone(), send, recv, peer.clone()));
                    }
                    Err(quinn::ConnectionError::ApplicationClosed(_) | quinn::ConnectionError::LocallyClosed) => break,
                    Err(e) => {
                        debug!(%peer, error = %e, "QUIC connection ended");
                        break;
                    }
                }
            }
        });
    }
    info!("QUIC listener stopped");
}

async fn serve_bi(core: Arc<IngestCore>, mut send: quinn::SendStream, recv: quinn::RecvStream, peer: String) {
    let (tx, mut rx) = mpsc::channel::<Bytes>(32);
    let writer = tokio::spawn(async move {
        while let Some(b) = rx.recv().await {
            if send.write_all(&b).await.is_err() {
                return;
            }
        }
        let _ = send.finish();
        // Give the peer a moment to read the last frames before the stream state is dropped.
        let _ = tokio::time::timeout(Duration::from_secs(5), send.stopped()).await;
    });
    core.serve_stream(recv, tx, &peer).await;
    if writer.await.is_err() {
        warn!(%peer, "QUIC writer task failed");
    }
}
