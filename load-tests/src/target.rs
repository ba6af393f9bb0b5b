//! The server under load: one already running (a URL, the admin token, its process ids for
//! `/proc` readings), or a `tailrace serve` this run starts on a fresh data directory.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where the load goes.
#[derive(Debug)]
pub struct Target {
    /// `http://host:port` of the server's HTTP listener.
    pub url: String,
    /// Admin token: creates the jobs and reads every step.
    pub admin_token: String,
    /// Server processes whose CPU and memory the report reads from `/proc` (may be empty).
    pub pids: Vec<u32>,
    spawned: Option<Spawned>,
}

#[derive(Debug)]
struct Spawned {
    child: Child,
    dir: tempfile::TempDir,
}

impl Target {
    pub fn external(url: String, admin_token: String, pids: Vec<u32>) -> Self {
        Self {
            url,
            admin_token,
            pids,
            spawned: None,
        }
    }

    /// Starts `bin serve` on loopback with a fresh data directory (removed afterwards) and
    /// waits until it is healthy. `config` is passed as `--config`; the data directory is made
    /// under `parent` (the system's temporary folder by default).
    pub fn spawn(bin: &Path, config: Option<&Path>, parent: Option<&Path>) -> Result<Self, String> {
        let dir = match parent {
            Some(p) => tempfile::tempdir_in(p),
            None => tempfile::tempdir(),
        }
        .map_err(|e| format!("could not make a data directory: {e}"))?;
        let http = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?;
        let quic = UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .map_err(|e| e.to_string())?;
        let log = std::fs::File::create(dir.path().join("serve.log")).map_err(|e| e.to_string())?;
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--http-addr")
            .arg(http.to_string())
            .arg("--quic-addr")
            .arg(quic.to_string())
            .env(
                "TAILRACE_LOG",
                std::env::var("TAILRACE_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(c) = config {
            cmd.arg("--config").arg(c);
        }
        let child = cmd.spawn().map_err(|e| {
            format!(
                "could not start {}: {e} (build it: cargo build --release)",
                bin.display()
            )
        })?;
        let pid = child.id();
        let mut t = Self {
            url: format!("http://{http}"),
            admin_token: String::new(),
            pids: vec![pid],
            spawned: Some(Spawned { child, dir }),
        };
        let started = Instant::now();
        while !healthy(&http.to_string()) {
            if let Some(s) = t.spawned.as_mut()
                && let Ok(Some(status)) = s.child.try_wait()
            {
                return Err(format!(
                    "tailrace serve exited ({status}): {}",
                    t.server_log()
                ));
            }
            if started.elapsed() > Duration::from_secs(60) {
                return Err(format!(
                    "tailrace serve not healthy after 60 s: {}",
                    t.server_log()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let token_file = t
            .data_dir()
            .map(|d| d.join("admin-token"))
            .ok_or("no data dir")?;
        t.admin_token = std::fs::read_to_string(&token_file)
            .map_err(|e| format!("could not read {}: {e}", token_file.display()))?
            .trim()
            .to_string();
        Ok(t)
    }

    fn data_dir(&self) -> Option<PathBuf> {
        self.spawned.as_ref().map(|s| s.dir.path().join("data"))
    }

    /// The spawned server's log (empty for an external server).
    pub fn server_log(&self) -> String {
        self.spawned
            .as_ref()
            .and_then(|s| std::fs::read_to_string(s.dir.path().join("serve.log")).ok())
            .unwrap_or_default()
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(s) = self.spawned.as_mut() {
            // SAFETY: kill has no memory-safety preconditions; the pid is our own child's.
            unsafe { libc::kill(s.child.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && matches!(s.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = s.child.kill();
            let _ = s.child.wait();
        }
    }
}

fn healthy(authority: &str) -> bool {
    let Ok(mut s) = TcpStream::connect(authority) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(
        format!("GET /healthz HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}
