//! Artifact uploads from the runner: a file's SHA-256, and a resumable `PUT` of the file from
//! any offset, streamed from disk in 256 KiB reads over one reused HTTP/1.1 connection per
//! uploader (memory stays a few reads, whatever the file's size).

use std::io::Read as _;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::TryStreamExt as _;
use http::{header, Method, Request, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::Frame;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use tailrace_protocol::artifact_path::encode_path;
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};

use crate::client::{error_message, ClientError, Server};

/// Bytes read from the file per body chunk.
const READ: usize = 256 * 1024;

/// Size and lowercase hex SHA-256 of a file (blocking; call from a blocking thread).
pub fn file_sha256(path: &Path) -> std::io::Result<(u64, String)> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let r = f.read(&mut buf)?;
        if r == 0 {
            break;
        }
        h.update(&buf[..r]);
        n += r as u64;
    }
    Ok((n, h.finalize().iter().map(|b| format!("{b:02x}")).collect()))
}

/// Files up to this size are read once into memory, hashed and sent from there.
pub const SMALL: u64 = 1 << 20;

/// A small file's bytes and their SHA-256 (blocking; call from a blocking thread).
pub fn read_small(path: &Path) -> std::io::Result<(Bytes, String)> {
    let data = std::fs::read(path)?;
    let digest = Sha256::digest(&data).iter().map(|b| format!("{b:02x}")).collect();
    Ok((Bytes::from(data), digest))
}

/// What a `PUT` sends: a file read from disk as it goes, or bytes already in memory.
#[derive(Debug, Clone)]
pub enum Content<'a> {
    File(&'a Path),
    Memory(Bytes),
}

/// How the server answered one `PUT`.
#[derive(Debug, PartialEq, Eq)]
pub enum PutAnswer {
    /// Stored; `new` is false when it was already (an earlier attempt completed it).
    Done { new: bool },
    /// The server holds `offset` bytes: send the rest from there.
    Resume { offset: u64 },
    /// Another upload of the same artifact is receiving; retry later.
    Busy,
    /// Refused for good (name, size, conflict, digest); the message says why.
    Refused { status: StatusCode, message: String },
}

/// One connection's worth of uploads to one job.
pub struct Uploader {
    server: Server,
    token: String,
    job: String,
    conn: Option<SendRequest<BoxBody<Bytes, std::io::Error>>>,
}

type Body = BoxBody<Bytes, std::io::Error>;

impl Uploader {
    pub fn new(server: Server, token: String, job: String) -> Self {
        Self { server, token, job, conn: None }
    }

    async fn send(&mut self, req: Request<Body>) -> Result<(StatusCode, http::HeaderMap, Bytes), ClientError> {
        let addr = self.server.authority.clone();
        let http_err = |e: &dyn std::fmt::Display| ClientError::Http(e.to_string(), addr.clone());
        let reusable = match self.conn.as_mut() {
            Some(c) => c.ready().await.is_ok(),
            None => false,
        };
        if !reusable {
            let io = self.server.connect(crate::net::Alpn::Http1).await?;
            let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await.map_err(|e| http_err(&e))?;
            tokio::spawn(conn);
            self.conn = Some(send);
        }
        let conn = self.conn.as_mut().ok_or_else(|| http_err(&"no connection"))?;
        let result = async {
            let resp = conn.send_request(req).await.map_err(|e| http_err(&e))?;
            let (parts, body) = resp.into_parts();
            let bytes = body.collect().await.map_err(|e| http_err(&e))?.to_bytes();
            Ok((parts.status, parts.headers, bytes))
        }
        .await;
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    fn request(&self, method: Method, path: &str) -> http::request::Builder {
        Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, &self.server.authority)
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token))
    }

    /// How many bytes of artifact `name` the server holds (0 if none).
    pub async fn offset(&mut self, name: &str) -> Result<u64, ClientError> {
        let path = format!("/api/v1/jobs/{}/artifact-uploads/{}", self.job, encode_path(name));
        let req = self.request(Method::GET, &path).body(Empty::new().map_err(|e| match e {}).boxed()).map_err(|e| ClientError::Decode(e.to_string()))?;
        let (status, _, body) = self.send(req).await?;
        match status {
            StatusCode::NOT_FOUND => Ok(0),
            s if s.is_success() => serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("offset").and_then(|o| o.as_u64()))
                .ok_or_else(|| ClientError::Decode("upload status without an offset".into())),
            status => Err(ClientError::Status { status, message: error_message(&body) }),
        }
    }

    /// Sends `content` from `offset` to its end as artifact `name`; `sent` counts body bytes as
    /// they are sent.
    pub async fn put(&mut self, name: &str, content: Content<'_>, size: u64, sha256: &str, offset: u64, sent: Arc<AtomicU64>) -> Result<PutAnswer, ClientError> {
        let body: Body = match content {
            Content::File(file) => {
                let io = |e: std::io::Error| ClientError::Http(format!("{}: {e}", file.display()), self.server.authority.clone());
                let mut f = tokio::fs::File::open(file).await.map_err(io)?;
                f.seek(std::io::SeekFrom::Start(offset)).await.map_err(io)?;
                let stream = tokio_util::io::ReaderStream::with_capacity(f.take(size - offset), READ).map_ok(move |b| {
                    sent.fetch_add(b.len() as u64, Relaxed);
                    Frame::data(b)
                });
                StreamBody::new(stream).boxed()
            }
            Content::Memory(bytes) => {
                let rest = bytes.slice((offset as usize).min(bytes.len())..);
                sent.fetch_add(rest.len() as u64, Relaxed);
                http_body_util::Full::new(rest).map_err(|e| match e {}).boxed()
            }
        };
        let path = format!("/api/v1/jobs/{}/artifacts/{}", self.job, encode_path(name));
        let req = self
            .request(Method::PUT, &path)
            .header(header::CONTENT_LENGTH, size - offset)
            .header("upload-length", size)
            .header("upload-offset", offset)
            .header("x-tailrace-sha256", sha256)
            .body(body)
            .map_err(|e| ClientError::Decode(e.to_string()))?;
        let (status, headers, body) = self.send(req).await?;
        let upload_offset = headers.get("upload-offset").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
        Ok(match (status, upload_offset) {
            (StatusCode::CREATED, _) => PutAnswer::Done { new: true },
            (StatusCode::OK, _) => PutAnswer::Done { new: false },
            (StatusCode::ACCEPTED | StatusCode::CONFLICT, Some(offset)) => PutAnswer::Resume { offset },
            (StatusCode::LOCKED, _) => PutAnswer::Busy,
            (s, _) if s.is_server_error() => return Err(ClientError::Status { status: s, message: error_message(&body) }),
            (status, _) => PutAnswer::Refused { status, message: error_message(&body) },
        })
    }
}
