//! `deploy/cluster.sh` starts what it says — Redis, SeaweedFS, SecantusDB, two ingest nodes and
//! a query+archiver node — and the commands it prints work: a step streamed to ingest node A is
//! read back from node C and archived to S3. Stopping the script stops everything.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use common::*;

/// A base port with the 30 after it free, and SeaweedFS's gRPC ports (+10000) too.
fn free_base() -> u16 {
    'search: for base in (20_000..44_000).step_by(97) {
        let mut held = Vec::new();
        for p in (base..base + 30).chain((base + 10..base + 15).map(|p| p + 10_000)) {
            match TcpListener::bind(("127.0.0.1", p)) {
                Ok(l) => held.push(l),
                Err(_) => continue 'search,
            }
        }
        return base;
    }
    panic!("no free port range");
}

#[test]
fn the_local_cluster_script_runs_a_step_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let base = free_base();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let venv = |bin: &str, var: &str| std::env::var(var).unwrap_or_else(|_| root.join(".venv-services/bin").join(bin).display().to_string());
    let mut script = Command::new("bash")
        .arg(root.join("deploy/cluster.sh"))
        .arg(dir.path().join("cluster"))
        .env("TAILRACE_BIN", BIN)
        .env("CLUSTER_PORT_BASE", base.to_string())
        .env("TAILRACE_WEED_BIN", venv("weed", "TAILRACE_WEED_BIN"))
        .env("TAILRACE_SECANTUS_BIN", venv("secantusd-py", "TAILRACE_SECANTUS_BIN"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // However the test ends, the script gets SIGTERM and stops what it started.
    struct StopOnDrop(u32);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            unsafe { libc::kill(self.0 as i32, libc::SIGTERM) };
        }
    }
    let _stop = StopOnDrop(script.id());
    let said = Arc::new(Mutex::new(String::new()));
    for pipe in [Box::new(script.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>, Box::new(script.stderr.take().unwrap())] {
        let said = said.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                said.lock().unwrap().push_str(&(line + "\n"));
            }
        });
    }
    let text = || said.lock().unwrap().clone();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    while !text().contains("cluster ready") {
        assert!(script.try_wait().unwrap().is_none(), "cluster.sh exited:\n{}", text());
        assert!(std::time::Instant::now() < deadline, "cluster not ready in 180 s:\n{}", text());
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let (a, c) = (format!("http://127.0.0.1:{}", base + 20), format!("http://127.0.0.1:{}", base + 24));
    assert!(text().contains(&a) && text().contains(&c), "{}", text());

    // What the script prints: a job on C, a step streamed to A, read back on C.
    let admin = std::fs::read_to_string(dir.path().join("cluster/c/admin-token")).unwrap();
    let out = Command::new(BIN).args(["job", "create", "--server", &c, "--project", "gh/demo/app", "--json"]).env("TAILRACE_TOKEN", admin.trim()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (job, token) = (v["job_id"].as_str().unwrap(), v["token"].as_str().unwrap());
    let data = awkward_bytes(51, 1 << 20);
    let file = dir.path().join("out");
    std::fs::write(&file, &data).unwrap();
    let run = agent(&a, token, job, "hello", &["--quiet"], &["cat", file.to_str().unwrap()]).output().unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let read = |range: Option<&str>| http_get(&c, &format!("/api/v1/jobs/{job}/steps/hello/output"), Some(admin.trim()), range).unwrap();
    assert!(read(None).body == data, "output read on C differs");
    let steps = || {
        let r = http_get(&c, &format!("/api/v1/jobs/{job}/steps"), Some(admin.trim()), None).unwrap();
        serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["items"][0].clone()
    };
    wait_until("archived to S3", 60, || steps()["archived_at_ms"].is_u64());
    assert!(read(Some("bytes=1000-1999")).body == data[1000..2000], "ranged read from the archive differs");
    let c_log = std::fs::read_to_string(dir.path().join("cluster/c.log")).unwrap();
    assert!(c_log.contains("step archived") && c_log.contains("archive: S3"), "{c_log}");

    // Ctrl-C (SIGTERM here) stops every process it started: the ports are free again.
    unsafe { libc::kill(script.id() as i32, libc::SIGTERM) };
    let status = script.wait().unwrap();
    wait_until("cluster stopped", 30, || text().contains("cluster stopped"));
    let _ = status;
    for port in [base, base + 1, base + 13, base + 20, base + 22, base + 24] {
        wait_until(&format!("port {port} free"), 30, || TcpListener::bind(("127.0.0.1", port)).is_ok());
    }
}
