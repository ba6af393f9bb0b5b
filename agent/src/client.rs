//! A small HTTP/1.1 JSON client for the server's API (job creation, ingest discovery), and the
//! parsing of `--server` URLs.

use bytes::Bytes;
pub use http::Method;
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use std::sync::Arc;

use crate::net::{Alpn, Io, TlsClient};

/// Why a call to the server failed; messages say what to check.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error("invalid server URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("could not connect to {addr}: {source} (is `tailrace serve` running there?)")]
    Connect { addr: String, source: std::io::Error },
    #[error("HTTP error talking to {addr}: {0}", addr = .1)]
    Http(String, String),
    #[error("server answered {status}: {message}")]
    Status { status: StatusCode, message: String },
    #[error("unexpected answer from server: {0}")]
    Decode(String),
}

/// A parsed `http://host:port` or `https://host:port` server address.
#[derive(Debug, Clone)]
pub struct Server {
    pub host: String,
    pub port: u16,
    /// `host:port` for connecting and for the Host header.
    pub authority: String,
    /// TLS settings for an `https://` server.
    pub tls: Option<Arc<TlsClient>>,
}

impl Server {
    pub fn parse(url: &str) -> Result<Self, ClientError> {
        let bad = |reason: &str| ClientError::BadUrl { url: url.into(), reason: reason.into() };
        let uri: Uri = url.parse().map_err(|_| bad("not a URL"))?;
        let tls = match uri.scheme_str() {
            Some("http") => None,
            Some("https") => Some(Arc::new(TlsClient::from_env().map_err(|e| bad(&e))?)),
            Some(other) => return Err(bad(&format!("scheme {other} is not supported; use http:// or https://"))),
            None => return Err(bad("missing scheme; expected http://HOST:PORT or https://HOST:PORT")),
        };
        let host = uri.host().ok_or_else(|| bad("missing host"))?.trim_start_matches('[').trim_end_matches(']').to_string();
        let port = uri.port_u16().unwrap_or(if tls.is_some() { 443 } else { 80 });
        let authority = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
        Ok(Self { host, port, authority, tls })
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// Opens a connection that will speak `alpn`, over TLS for an `https://` server.
    pub async fn connect(&self, alpn: Alpn) -> Result<Box<dyn Io>, ClientError> {
        crate::net::connect(&self.authority, &self.host, self.tls.as_deref(), alpn)
            .await
            .map_err(|source| ClientError::Connect { addr: self.authority.clone(), source })
    }

    /// Sends one request and decodes a JSON answer; non-2xx answers become `Status` errors
    /// carrying the server's message.
    pub async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> Result<T, ClientError> {
        self.call(method, path, token, body.map(|v| ("application/json", Bytes::from(v.to_string())))).await
    }

    /// Sends one request with a body of the given content type and decodes a JSON answer, like
    /// [`Server::json`].
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<(&str, Bytes)>,
    ) -> Result<T, ClientError> {
        let (status, bytes) = self.request(method, path, token, body).await?;
        if !status.is_success() {
            return Err(ClientError::Status { status, message: error_message(&bytes) });
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// Sends one request without a token or body and returns the status and the body as
    /// text, whatever the status (health probes).
    pub async fn text(&self, method: Method, path: &str) -> Result<(StatusCode, String), ClientError> {
        let (status, bytes) = self.request(method, path, None, None).await?;
        Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<(&str, Bytes)>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let http_err = |e: &dyn std::fmt::Display| ClientError::Http(e.to_string(), self.authority.clone());
        let io = self.connect(Alpn::Http1).await?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await.map_err(|e| http_err(&e))?;
        tokio::spawn(conn);
        let mut req = Request::builder().method(method).uri(path).header(http::header::HOST, &self.authority);
        if let Some(t) = token {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let body = match body {
            Some((content_type, bytes)) => {
                req = req.header(http::header::CONTENT_TYPE, content_type);
                bytes
            }
            None => Bytes::new(),
        };
        let req = req.body(Full::new(body)).map_err(|e| http_err(&e))?;
        let resp = send.send_request(req).await.map_err(|e| http_err(&e))?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await.map_err(|e| http_err(&e))?.to_bytes();
        Ok((status, bytes))
    }
}

/// The `message` of a JSON error answer, or the body as text.
pub(crate) fn error_message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string())
}

/// The server's QUIC discovery document (`GET /api/v1/ingest/info`).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct IngestInfo {
    pub quic_addr: Option<String>,
    pub alpn: String,
    pub cert_sha256: Option<String>,
    pub http2_path: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls() {
        let s = Server::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!((s.host.as_str(), s.port, s.authority.as_str()), ("127.0.0.1", 8080, "127.0.0.1:8080"));
        let s = Server::parse("http://[::1]:9/").unwrap();
        assert_eq!(s.authority, "[::1]:9");
        assert!(Server::parse("ftp://x").unwrap_err().to_string().contains("not supported"));
        assert!(Server::parse("localhost:80").is_err());
    }
}
