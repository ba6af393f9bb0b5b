//! Shared harness of the end-to-end tests: real `tailrace` processes on loopback ports, a TCP and
//! a UDP proxy that can cut or black-hole connections, awkward test output, and small HTTP helpers.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_tailrace");

/// Fails the test (instead of hanging CI) when `cond` does not hold within `secs`.
pub fn wait_until(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out after {secs}s waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `kill -9` of a harness process, if it runs, and waits for it.
pub fn kill_child(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// A loopback port free for both TCP and UDP right now.
pub fn free_port() -> u16 {
    loop {
        let tcp = TcpListener::bind("127.0.0.1:0").expect("bind tcp");
        let port = tcp.local_addr().expect("addr").port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A real `tailrace serve` process.
pub struct Server {
    pub child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub http: u16,
    pub quic: u16,
    pub env: Vec<(String, String)>,
}

impl Server {
    pub fn start() -> Self {
        Self::start_with(vec![])
    }

    pub fn start_with(env: Vec<(String, String)>) -> Self {
        let mut s = Server { child: None, dir: tempfile::tempdir().expect("tempdir"), http: free_port(), quic: free_port(), env };
        s.spawn();
        s
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn spawn(&mut self) {
        let starts_before = self.log().matches("tailrace serve ready").count();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("serve.log")).expect("log");
        let child = Command::new(BIN)
            .args(["serve", "--http-addr", &format!("127.0.0.1:{}", self.http), "--quic-addr", &format!("127.0.0.1:{}", self.quic)])
            .arg("--data-dir")
            .arg(self.data_dir())
            .env("TAILRACE_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn serve");
        self.child = Some(child);
        if self.env.iter().any(|(k, _)| k == "TAILRACE_HTTP_TLS_CERT") {
            // The harness speaks plain HTTP only: wait for this start's "ready" line instead.
            wait_until("server ready (TLS)", 30, || self.log().matches("tailrace serve ready").count() > starts_before);
            return;
        }
        let url = self.url();
        wait_until("server /healthz", 30, || http_get(&url, "/healthz", None, None).map(|r| r.status == 200).unwrap_or(false));
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http)
    }

    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.data_dir().join("admin-token")).expect("admin token").trim().to_string()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// `kill -9`, no goodbye.
    pub fn kill9(&mut self) {
        kill_child(&mut self.child);
    }

    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }

    /// Every audit record written so far (`<data>/objects/audit/**.jsonl`), oldest object first.
    pub fn audit(&self) -> Vec<serde_json::Value> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                } else if p.extension().is_some_and(|x| x == "jsonl") {
                    out.push(p);
                }
            }
        }
        let mut files = Vec::new();
        walk(&self.data_dir().join("objects").join("audit"), &mut files);
        files.sort();
        let text: String = files.iter().map(|f| std::fs::read_to_string(f).unwrap_or_default()).collect();
        text.lines().map(|l| serde_json::from_str(l).expect("audit line is JSON")).collect()
    }

    /// Creates a job; returns (job id, job token).
    pub fn create_job(&self) -> (String, String) {
        let out = Command::new(BIN)
            .args(["job", "create", "--server", &self.url(), "--project", "gh/acme/app", "--json"])
            .env("TAILRACE_TOKEN", self.admin_token())
            .output()
            .expect("job create");
        assert!(out.status.success(), "job create failed: {}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        (v["job_id"].as_str().expect("id").to_string(), v["token"].as_str().expect("token").to_string())
    }

    /// A step as listed by the API.
    pub fn step(&self, job: &str, step: &str) -> Option<serde_json::Value> {
        let r = http_get(&self.url(), &format!("/api/v1/jobs/{job}/steps"), Some(&self.admin_token()), None).ok()?;
        let v: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
        v["items"].as_array()?.iter().find(|s| s["step"] == step).cloned()
    }

    /// Bytes the server holds durably for a step (0 if unknown yet).
    pub fn step_len(&self, job: &str, step: &str) -> u64 {
        self.step(job, step).and_then(|s| s["length"].as_u64()).unwrap_or(0)
    }

    /// The whole output of a step via the ranged-read endpoint.
    pub fn output(&self, job: &str, step: &str, range: Option<&str>) -> HttpResponse {
        http_get(&self.url(), &format!("/api/v1/jobs/{job}/steps/{step}/output"), Some(&self.admin_token()), range).expect("GET output")
    }

    /// Resident memory of the server process in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// `tailrace run` against `server` with `token`, quiet, with extra flags, running `cmd`.
pub fn agent(server: &str, token: &str, job: &str, step: &str, flags: &[&str], cmd: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(["run", "--server", server, "--job", job, "--step", step])
        .args(flags)
        .arg("--")
        .args(cmd)
        .env("TAILRACE_TOKEN", token)
        .env("TAILRACE_LOG", "info")
        // Never inherit the test's own stdout (see `spawn_detached`); pipe it to read it.
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    c
}

/// Has the step's output moved to the archive?
pub fn archived(server: &Server, job: &str, step: &str) -> bool {
    server.step(job, step).is_some_and(|s| s["archived_at_ms"].is_u64())
}

/// Streams `data` as one step through `tailrace run` and waits until it is verified.
pub fn stream_step(server: &Server, job: &str, token: &str, step: &str, data: &[u8]) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("out");
    std::fs::write(&file, data).expect("write");
    let out = agent(&server.url(), token, job, step, &["--quiet"], &["cat", file.to_str().expect("utf-8 path")]).output().expect("run agent");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Starts an agent whose output nobody reads. It must not inherit the test's own output: an
/// agent outliving a failed test (it keeps retrying delivery) would hold the runner's pipes.
pub fn spawn_detached(mut c: Command) -> Child {
    c.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn agent")
}

/// Waits for a child with a deadline, killing it on timeout. Its stdout and stderr (if piped)
/// are read while it runs, so a chatty child never blocks on a full pipe.
pub fn wait_output(mut child: Child, secs: u64) -> Output {
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = drain(child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>));
    let err = drain(child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = err.join().unwrap_or_default();
            panic!("process did not finish within {secs}s; stderr:\n{}", String::from_utf8_lossy(&stderr));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output { status, stdout: out.join().unwrap_or_default(), stderr: err.join().unwrap_or_default() }
}

/// A child whose stderr is collected while it runs, so a test can wait for what it says.
pub struct Watched {
    child: Child,
    err: Arc<std::sync::Mutex<Vec<u8>>>,
    reader: std::thread::JoinHandle<()>,
}

impl Watched {
    pub fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd.stderr(Stdio::piped()).spawn().expect("spawn");
        let err: Arc<std::sync::Mutex<Vec<u8>>> = Arc::default();
        let mut pipe = child.stderr.take().expect("piped stderr");
        let sink = err.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().expect("lock").extend_from_slice(&buf[..n]);
            }
        });
        Watched { child, err, reader }
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.err.lock().expect("lock")).into_owned()
    }

    /// Waits until the child's stderr contains `needle`.
    pub fn wait_for(&self, needle: &str, secs: u64) {
        wait_until(&format!("stderr saying {needle:?}"), secs, || self.stderr().contains(needle));
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the child like [`wait_output`], with the stderr collected so far.
    pub fn finish(self, secs: u64) -> Output {
        let mut out = wait_output(self.child, secs);
        let _ = self.reader.join();
        out.stderr = self.err.lock().expect("lock").clone();
        out
    }
}

/// A counter or gauge from the server's `/metrics` (0 when absent).
pub fn metric(server: &Server, name: &str) -> u64 {
    let body = http_get(&server.url(), "/metrics", None, None).map(|r| r.body).unwrap_or_default();
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// Deterministic output that exercises every awkward case: ANSI colours, `\r` progress lines,
/// CRLF, invalid UTF-8, NUL and binary noise, and one single line of 4 MiB.
pub fn awkward_bytes(seed: u64, size: usize) -> Vec<u8> {
    let mut rng = seed | 1;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut out = Vec::with_capacity(size + 4096);
    let mut long_line_done = false;
    while out.len() < size {
        match next() % 8 {
            0 => out.extend_from_slice(format!("\x1b[1;31merror[E{:04}]\x1b[0m: mismatched types at src/lib.rs:{}:{}\n", next() % 9999, next() % 999, next() % 99).as_bytes()),
            1 => {
                for pct in (0..=100).step_by(20) {
                    out.extend_from_slice(format!("\rDownloading crates ... {pct:>3}% [{:<20}]", "#".repeat(pct / 5)).as_bytes());
                }
                out.extend_from_slice(b"\x1b[K\n");
            }
            2 => out.extend_from_slice(format!("test tests::case_{} ... ok\r\n", next() % 100_000).as_bytes()),
            3 => {
                let n = (next() % 64) as usize;
                out.extend((0..n).map(|_| 0x80 | (next() as u8 & 0x7f)));
                out.push(b'\n');
            }
            4 => {
                let n = (next() % 256) as usize;
                out.extend((0..n).map(|_| next() as u8));
            }
            5 if !long_line_done && out.len() > size / 3 => {
                long_line_done = true;
                out.extend((0..4 << 20).map(|i| b'a' + (i % 26) as u8));
                out.push(b'\n');
            }
            _ => out.extend_from_slice(format!("\x1b[32m   Compiling\x1b[0m crate-{} v0.{}.{} (/work/crate)\n", next() % 500, next() % 20, next() % 10).as_bytes()),
        }
    }
    out
}

/// Writes `data` into `n` part files under `dir`; returns their paths.
pub fn write_parts(dir: &Path, data: &[u8], n: usize) -> Vec<PathBuf> {
    let size = data.len().div_ceil(n);
    data.chunks(size)
        .enumerate()
        .map(|(i, part)| {
            let p = dir.join(format!("part{i}"));
            std::fs::write(&p, part).expect("write part");
            p
        })
        .collect()
}

/// A shell command that prints the parts with `pause` seconds of silence between them.
pub fn cat_with_pauses(parts: &[PathBuf], pause: f32) -> String {
    parts.iter().map(|p| format!("cat '{}'", p.display())).collect::<Vec<_>>().join(&format!("; sleep {pause}; "))
}

pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// A minimal blocking HTTP/1.1 GET (connection: close), enough for tests.
pub fn http_get(base: &str, path: &str, token: Option<&str>, range: Option<&str>) -> std::io::Result<HttpResponse> {
    let range: Vec<(&str, &str)> = range.map(|r| ("Range", r)).into_iter().collect();
    http_call(base, "GET", path, token, &range, b"")
}

/// Writes one request (connection: close) and returns the stream positioned after its head,
/// with the status and headers.
fn http_send(base: &str, method: &str, path: &str, token: Option<&str>, headers: &[(&str, &str)], body: &[u8]) -> std::io::Result<(TcpStream, Vec<u8>, usize)> {
    let authority = base.trim_start_matches("http://");
    let mut s = TcpStream::connect(authority)?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    // A server may answer (e.g. 413) and close before reading the whole body: read its answer.
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok((s, raw, split));
        }
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::Error::other("connection closed before the response head"));
        }
        raw.extend_from_slice(&buf[..n]);
    }
}

fn parse_head(head: &[u8]) -> (u16, Vec<(String, String)>) {
    let head = String::from_utf8_lossy(head).to_string();
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|c| c.parse().ok()).unwrap_or(0);
    let headers = lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).collect();
    (status, headers)
}

/// Any blocking HTTP/1.1 request with extra headers and a body; the whole answer in memory.
pub fn http_call(base: &str, method: &str, path: &str, token: Option<&str>, headers: &[(&str, &str)], body: &[u8]) -> std::io::Result<HttpResponse> {
    let (mut s, mut raw, split) = http_send(base, method, path, token, headers, body)?;
    if method != "HEAD" {
        s.read_to_end(&mut raw)?;
    }
    let (status, headers) = parse_head(&raw[..split]);
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    Ok(HttpResponse { status, headers, body })
}

/// A GET whose body is hashed as it arrives (for bodies too large to hold): status, bytes, SHA-256.
pub fn http_get_sha256(base: &str, path: &str, token: Option<&str>) -> std::io::Result<(u16, u64, String)> {
    use sha2::Digest;
    let (mut s, raw, split) = http_send(base, "GET", path, token, &[], b"")?;
    let (status, _) = parse_head(&raw[..split]);
    let mut h = sha2::Sha256::new();
    let mut n = (raw.len() - split - 4) as u64;
    h.update(&raw[split + 4..]);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let r = s.read(&mut buf)?;
        if r == 0 {
            break;
        }
        h.update(&buf[..r]);
        n += r as u64;
    }
    Ok((status, n, hex(&h.finalize())))
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// SHA-256 of a file, read in 1 MiB blocks (the uploader's own function).
pub fn sha256_file(p: &Path) -> String {
    tailrace_agent::upload::file_sha256(p).expect("hash file").1
}

/// Peak resident memory of a process in KiB (`VmHWM`).
pub fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok()).unwrap_or(0)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else { return out };
        let n = usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + n]);
        b = &b[eol + 2 + n + 2..];
    }
}

/// A TCP proxy whose connections can be cut at will.
pub struct TcpProxy {
    pub port: u16,
    cut: Arc<std::sync::Mutex<Vec<TcpStream>>>,
}

impl TcpProxy {
    pub fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let cut: Arc<std::sync::Mutex<Vec<TcpStream>>> = Arc::default();
        let conns = cut.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(upstream) = TcpStream::connect(target) else { continue };
                let _ = client.set_nodelay(true);
                let _ = upstream.set_nodelay(true);
                if let (Ok(c2), Ok(u2)) = (client.try_clone(), upstream.try_clone()) {
                    conns.lock().expect("lock").extend([c2, u2]);
                }
                let (mut c_r, mut u_w) = (client.try_clone().expect("clone"), upstream.try_clone().expect("clone"));
                let (mut u_r, mut c_w) = (upstream, client);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c_r, &mut u_w);
                    let _ = u_w.shutdown(std::net::Shutdown::Both);
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut u_r, &mut c_w);
                    let _ = c_w.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        TcpProxy { port, cut }
    }

    /// Cuts every connection through the proxy (both directions, both ends).
    pub fn cut_all(&self) -> usize {
        let mut conns = self.cut.lock().expect("lock");
        let n = conns.len() / 2;
        for c in conns.drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
        n
    }
}

/// A UDP relay for QUIC that can black-hole every packet for a while.
pub struct UdpProxy {
    pub port: u16,
    pub blackhole: Arc<AtomicBool>,
}

impl UdpProxy {
    pub fn start(target: SocketAddr) -> Self {
        let front = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let port = front.local_addr().expect("addr").port();
        let blackhole = Arc::new(AtomicBool::new(false));
        let back = UdpSocket::bind("127.0.0.1:0").expect("bind");
        back.connect(target).expect("connect");
        let client: Arc<std::sync::Mutex<Option<SocketAddr>>> = Arc::default();
        {
            let (front, back, client, hole) = (front.try_clone().expect("clone"), back.try_clone().expect("clone"), client.clone(), blackhole.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                while let Ok((n, from)) = front.recv_from(&mut buf) {
                    *client.lock().expect("lock") = Some(from);
                    if !hole.load(Ordering::SeqCst) {
                        let _ = back.send(&buf[..n]);
                    }
                }
            });
        }
        {
            let hole = blackhole.clone();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                while let Ok(n) = back.recv(&mut buf) {
                    let to = *client.lock().expect("lock");
                    if let (Some(to), false) = (to, hole.load(Ordering::SeqCst)) {
                        let _ = front.send_to(&buf[..n], to);
                    }
                }
            });
        }
        UdpProxy { port, blackhole }
    }
}

/// A real S3 server (SeaweedFS `weed mini`) for archive tests, on free loopback ports.
/// Its binary comes from `TAILRACE_WEED_BIN` or `.venv-services/bin/weed` (scripts/test.sh
/// installs it). SeaweedFS also binds two fixed ports, so callers hold `S3_LOCK` while one runs.
pub struct S3Server {
    child: Option<Child>,
    dir: tempfile::TempDir,
    ports: [u16; 5],
    pub endpoint: String,
}

pub static S3_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
pub const S3_BUCKET: &str = "testbucket";
pub const S3_KEY: &str = "ciuser";
pub const S3_SECRET: &str = "cisecret123";

fn weed_bin() -> PathBuf {
    if let Ok(p) = std::env::var("TAILRACE_WEED_BIN") {
        return p.into();
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-services/bin/weed");
    assert!(p.exists(), "S3 tests need SeaweedFS: run scripts/test.sh (it installs it), or set TAILRACE_WEED_BIN");
    p
}

/// A port free for TCP along with port + 10000 (SeaweedFS's gRPC port).
fn free_port_pair() -> u16 {
    loop {
        let p = free_port();
        if p < 55_000 && TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok() {
            return p;
        }
    }
}

impl S3Server {
    /// A fresh server. Its ports are only checked free, not held, until it binds them, so
    /// another process of the test run can take one meanwhile: a start that does not come up
    /// is retried on new ports (with what its log said).
    pub fn start() -> Self {
        for attempt in 1.. {
            let ports = [free_port_pair(), free_port_pair(), free_port_pair(), free_port_pair(), free_port_pair()];
            let mut s = S3Server { child: None, dir: tempfile::tempdir().expect("tempdir"), ports, endpoint: format!("http://127.0.0.1:{}", ports[3]) };
            if s.spawn(60) || attempt == 3 {
                assert!(s.child.is_some(), "SeaweedFS did not come up in 3 attempts");
                return s;
            }
            let log = std::fs::read_to_string(s.dir.path().join("weed.log")).unwrap_or_default();
            eprintln!("SeaweedFS not ready after 60 s (attempt {attempt}); retrying on new ports. Its log ends:\n{}", &log[log.len().saturating_sub(2000)..]);
        }
        unreachable!()
    }

    /// Starts the server (again) on the same ports and data.
    pub fn start_again(&mut self) {
        assert!(self.spawn(60), "SeaweedFS did not come up again within 60 s");
    }

    /// Starts the process and waits up to `secs` for its bucket; stops it if it is not ready.
    fn spawn(&mut self, secs: u64) -> bool {
        let [master, volume, filer, s3, admin] = self.ports;
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("weed.log")).expect("log");
        let child = Command::new(weed_bin())
            .args(["mini", &format!("-dir={}", self.dir.path().join("data").display()), "-ip=127.0.0.1", "-ip.bind=127.0.0.1"])
            .arg(format!("-master.port={master}"))
            .arg(format!("-volume.port={volume}"))
            .arg(format!("-filer.port={filer}"))
            .arg(format!("-s3.port={s3}"))
            .arg(format!("-admin.port={admin}"))
            // No listener on a fixed default port (Iceberg 8181, Lance 9101, admin 23646): two
            // servers of one test run would collide there.
            .args(["-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false", "-master.telemetry=false"])
            .env("AWS_ACCESS_KEY_ID", S3_KEY)
            .env("AWS_SECRET_ACCESS_KEY", S3_SECRET)
            .env("S3_BUCKET", S3_BUCKET)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn weed");
        self.child = Some(child);
        // The S3 gateway answers before the bucket is ready: ready once a HEAD says "not found".
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let client = self.client();
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            use object_store::ObjectStoreExt;
            if TcpStream::connect(("127.0.0.1", s3)).is_ok()
                && matches!(rt.block_on(client.head(&object_store::path::Path::from("readiness-probe"))), Err(object_store::Error::NotFound { .. }))
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        kill_child(&mut self.child);
        false
    }

    /// Stops the server (kill -9), keeping its data.
    pub fn stop(&mut self) {
        kill_child(&mut self.child);
    }

    /// Environment that points `tailrace serve` at this server.
    pub fn serve_env(&self) -> Vec<(String, String)> {
        [
            ("TAILRACE_ARCHIVE_STORE", "s3"),
            ("TAILRACE_ARCHIVE_BUCKET", S3_BUCKET),
            ("TAILRACE_ARCHIVE_ENDPOINT", &self.endpoint),
            ("AWS_ACCESS_KEY_ID", S3_KEY),
            ("AWS_SECRET_ACCESS_KEY", S3_SECRET),
            ("AWS_REGION", "us-east-1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// An `object_store` client for checking what the server holds.
    pub fn client(&self) -> object_store::aws::AmazonS3 {
        object_store::aws::AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_virtual_hosted_style_request(false)
            .with_region("us-east-1")
            .with_bucket_name(S3_BUCKET)
            .with_access_key_id(S3_KEY)
            .with_secret_access_key(S3_SECRET)
            .build()
            .expect("s3 client")
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A step that prints `parts[0]`, then each further part once the test opens its gate
/// ([`GatedStep::open`]`(i)` lets `parts[i]` out): the test, not the clock, decides when the step
/// goes on. An empty last part keeps the step running until its gate opens.
/// A shell line that waits until the file `gate` exists: the test, not the clock, decides when a
/// script goes on.
pub fn gate_wait(gate: &Path) -> String {
    format!("while [ ! -e '{}' ]; do sleep 0.05; done", gate.display())
}

pub struct GatedStep {
    dir: tempfile::TempDir,
    cmd: Vec<String>,
}

impl GatedStep {
    pub fn new(parts: &[&[u8]]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut script = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            let file = dir.path().join(format!("part{i}"));
            std::fs::write(&file, part).expect("write");
            if i > 0 {
                script.push(gate_wait(&dir.path().join(format!("gate{i}"))));
            }
            script.push(format!("cat '{}'", file.display()));
        }
        GatedStep { cmd: vec!["sh".into(), "-c".into(), script.join("; ")], dir }
    }

    pub fn agent(&self, server: &Server, token: &str, job: &str, step: &str) -> Command {
        let cmd: Vec<&str> = self.cmd.iter().map(String::as_str).collect();
        agent(&server.url(), token, job, step, &["--quiet"], &cmd)
    }

    /// The step's command line.
    pub fn cmd(&self) -> Vec<String> {
        self.cmd.clone()
    }

    /// The file whose creation lets `parts[i]` out (for a process other than the test to open).
    pub fn gate(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("gate{i}"))
    }

    /// Lets `parts[i]` out.
    pub fn open(&self, i: usize) {
        std::fs::write(self.dir.path().join(format!("gate{i}")), b"").expect("write gate");
    }
}

/// `tailrace tail` of a step from byte `from`, its stdout and stderr piped.
pub fn tail_from(server: &Server, job: &str, step: &str, from: u64) -> std::process::Child {
    Command::new(BIN)
        .args(["tail", "--server", &server.url(), "--job", job, "--step", step, "--from", &from.to_string()])
        .env("TAILRACE_TOKEN", server.admin_token())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tail")
}

/// Every segment object of a step under the local store, in key order.
pub fn segment_files(server: &Server, job: &str, step: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else {
                out.push(p);
            }
        }
    }
    let mut all = Vec::new();
    walk(&server.data_dir().join("objects/logs"), &mut all);
    let needle = format!("/{job}/{step}/");
    let mut mine: Vec<PathBuf> = all.into_iter().filter(|p| p.to_string_lossy().contains(&needle)).collect();
    mine.sort();
    mine
}

/// A real MongoDB-protocol server (SecantusDB, on MongoDB's WiredTiger engine) on a free loopback
/// port, in memory. Its launcher comes from `TAILRACE_SECANTUS_BIN` or
/// `.venv-services/bin/secantusd-py` (scripts/test.sh installs it).
pub struct MongoServer {
    child: Option<Child>,
    dir: tempfile::TempDir,
    pub port: u16,
}

impl MongoServer {
    pub fn start() -> Self {
        let mut s = MongoServer { child: None, dir: tempfile::tempdir().expect("tempdir"), port: free_port() };
        s.start_again();
        s
    }

    /// Starts the server (again) on the same port and data directory.
    pub fn start_again(&mut self) {
        let bin = std::env::var("TAILRACE_SECANTUS_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-services/bin/secantusd-py"));
        assert!(bin.exists(), "MongoDB tests need SecantusDB: run scripts/test.sh (it installs it), or set TAILRACE_SECANTUS_BIN");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("mongo.log")).expect("log");
        let child = Command::new(bin)
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string(), "--sync-on-commit", "--storage-path"])
            .arg(self.dir.path().join("data"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn secantusd-py");
        self.child = Some(child);
        let port = self.port;
        wait_until("SecantusDB port", 60, || TcpStream::connect(("127.0.0.1", port)).is_ok());
    }

    /// A URI for database `db` on this server.
    pub fn uri(&self, db: &str) -> String {
        format!("mongodb://127.0.0.1:{}/{db}", self.port)
    }

    /// Stops the server (kill -9), keeping its data.
    pub fn stop(&mut self) {
        kill_child(&mut self.child);
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mongo.log")).unwrap_or_default()
    }
}

impl Drop for MongoServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A real Redis server (Debian's `redis-server`, installed by scripts/test.sh) on a free loopback
/// port, persisting with an fsync'd append-only file so a `kill -9` loses nothing it acknowledged.
pub struct RedisServer {
    child: Option<Child>,
    dir: tempfile::TempDir,
    pub port: u16,
}

impl RedisServer {
    pub fn start() -> Self {
        let mut s = RedisServer { child: None, dir: tempfile::tempdir().expect("tempdir"), port: free_port() };
        s.start_again();
        s
    }

    /// Starts the server (again) on the same port and data directory.
    pub fn start_again(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("redis.log")).expect("log");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server (scripts/test.sh installs it)");
        self.child = Some(child);
        let port = self.port;
        wait_until("redis ping", 30, || {
            let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { return false };
            let mut buf = [0u8; 64];
            s.write_all(b"PING\r\n").is_ok() && s.read(&mut buf).is_ok_and(|n| buf[..n].starts_with(b"+PONG"))
        });
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Stops the server (kill -9), keeping its append-only file.
    pub fn stop(&mut self) {
        kill_child(&mut self.child);
    }

    /// Sends one inline command (e.g. `CONFIG SET appendfsync everysec`) and returns the first
    /// line of the answer.
    pub fn command(&self, line: &str) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to redis");
        s.write_all(format!("{line}\r\n").as_bytes()).expect("send command");
        let mut reply = Vec::new();
        let mut buf = [0u8; 1024];
        while !reply.ends_with(b"\r\n") {
            let n = s.read(&mut buf).expect("read answer");
            assert!(n > 0, "redis closed the connection");
            reply.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&reply).lines().next().unwrap_or_default().to_string()
    }

    /// How many times Redis ran `command` (lower case), from `INFO commandstats`.
    pub fn calls(&self, command: &str) -> u64 {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to redis");
        s.write_all(b"INFO commandstats\r\n").expect("send INFO");
        let mut reply = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        // A bulk string: `$<len>\r\n<len bytes>\r\n`.
        loop {
            let n = s.read(&mut buf).expect("read INFO");
            assert!(n > 0, "redis closed the connection");
            reply.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&reply);
            let Some((head, body)) = text.strip_prefix('$').and_then(|t| t.split_once("\r\n")) else { continue };
            let len: usize = head.parse().expect("bulk length");
            if body.len() >= len {
                let prefix = format!("cmdstat_{command}:calls=");
                return body
                    .lines()
                    .find_map(|l| l.strip_prefix(&prefix)?.split(',').next()?.parse().ok())
                    .unwrap_or(0);
            }
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A TCP load balancer with passive health checks: each connection goes to the first target
/// that accepts it, so a dead node's share moves to the next one.
pub struct TcpBalancer {
    pub port: u16,
    /// Connections accepted so far.
    pub accepted: Arc<std::sync::atomic::AtomicU64>,
}

impl TcpBalancer {
    pub fn start(targets: Vec<SocketAddr>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let accepted = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = accepted.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                counter.fetch_add(1, Ordering::Relaxed);
                let Some(upstream) = targets.iter().find_map(|t| TcpStream::connect_timeout(t, Duration::from_secs(1)).ok()) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = upstream.set_nodelay(true);
                let (mut c_r, mut u_w) = (client.try_clone().expect("clone"), upstream.try_clone().expect("clone"));
                let (mut u_r, mut c_w) = (upstream, client);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c_r, &mut u_w);
                    let _ = u_w.shutdown(std::net::Shutdown::Both);
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut u_r, &mut c_w);
                    let _ = c_w.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        TcpBalancer { port, accepted }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// A private CA for TLS tests, issuing `localhost` certificates.
pub struct Ca {
    pub cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl Ca {
    pub fn new() -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("TLS test helper");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().expect("TLS test helper");
        Ca { cert: params.self_signed(&key).expect("TLS test helper"), key }
    }

    /// A `localhost` server certificate: (cert PEM, key PEM, SHA-256 of its DER).
    pub fn leaf(&self) -> (String, String, String) {
        let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("TLS test helper");
        let key = rcgen::KeyPair::generate().expect("TLS test helper");
        let cert = params.signed_by(&key, &self.cert, &self.key).expect("TLS test helper");
        (cert.pem(), key.serialize_pem(), hex(&<sha2::Sha256 as sha2::Digest>::digest(cert.der())))
    }
}

/// The SHA-256 of the certificate the server presents in a handshake trusting `ca_pem`.
pub fn presented(port: u16, ca_pem: &str) -> String {
    https_exchange(port, ca_pem, None).0
}

/// A TLS handshake trusting `ca_pem`, then (if given) one HTTP/1.1 GET of `path`: the SHA-256
/// of the presented certificate and the raw response.
pub fn https_exchange(port: u16, ca_pem: &str, path: Option<&str>) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("TLS test helper");
    rt.block_on(async {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(rustls::pki_types::CertificateDer::from(pem_der(ca_pem))).expect("TLS test helper");
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("TLS test helper")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("TLS test helper");
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("TLS test helper");
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.expect("TLS test helper");
        let fp = hex(&<sha2::Sha256 as sha2::Digest>::digest(&tls.get_ref().1.peer_certificates().expect("TLS test helper")[0]));
        let mut response = String::new();
        if let Some(path) = path {
            tls.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes()).await.expect("TLS test helper");
            let mut bytes = Vec::new();
            let _ = tls.read_to_end(&mut bytes).await;
            response = String::from_utf8_lossy(&bytes).into_owned();
        }
        (fp, response)
    })
}

/// The DER of the first PEM block.
pub fn pem_der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).expect("TLS test helper").to_vec()
}
