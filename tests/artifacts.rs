//! Artifacts end to end through real processes: `tailrace store-artifacts` uploads a tree with
//! a 3 GiB sparse file and thousands of small files (byte-identical downloads, bounded server
//! memory), uploads cut by a proxy or by `kill -9` of the server resume without resending stored
//! parts, ranges and conditional requests, names, limits, digests, safe serving and expiry.

// Test helpers fail the test by panicking, like the tests themselves.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::process::Command;

use common::*;
use rand::{Rng, RngCore, SeedableRng};

const MIB: u64 = 1 << 20;

fn store_cmd(url: &str, job: &str, token: &str, path: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.arg("store-artifacts").arg(path).args(extra).env("TAILRACE_SERVER", url).env("TAILRACE_JOB", job).env("TAILRACE_TOKEN", token);
    c
}

fn get(server: &Server, token: &str, job: &str, name: &str, headers: &[(&str, &str)]) -> HttpResponse {
    http_call(&server.url(), "GET", &format!("/api/v1/jobs/{job}/artifacts/{name}"), Some(token), headers, b"").expect("GET artifact")
}

/// A sparse file of `size` bytes with random 1 MiB blocks at its start, middle and end.
fn sparse_file(path: &Path, size: u64, seed: u64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut f = std::fs::File::create(path).unwrap();
    f.set_len(size).unwrap();
    let mut block = vec![0u8; MIB as usize];
    for at in [0, size / 2 + 12_345, size - MIB] {
        rng.fill_bytes(&mut block);
        f.seek(SeekFrom::Start(at)).unwrap();
        f.write_all(&block).unwrap();
    }
}

fn random_file(path: &Path, size: usize, seed: u64) -> Vec<u8> {
    let mut data = vec![0u8; size];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut data);
    std::fs::write(path, &data).unwrap();
    data
}

#[test]
fn a_tree_with_a_3gib_file_and_thousands_of_small_files_round_trips_in_bounded_memory() {
    // The read-back below is 2,000 GETs as fast as the test can make them with one job token;
    // request rate limits are tested on their own (tests/rate_limit.rs).
    let server = Server::start_with(vec![("TAILRACE_RATE_LIMIT_RPS".into(), "0".into())]);
    let (job, token) = server.create_job();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("tree");
    std::fs::create_dir_all(root.join("big")).unwrap();
    let big = root.join("big/disk.img");
    sparse_file(&big, 3 << 30, 1);
    let mut rng = rand::rngs::StdRng::seed_from_u64(2);
    let mut small = Vec::new();
    for i in 0..2000 {
        let rel = format!("small/d{}/e{}/f{i}.txt", i % 7, i % 3);
        std::fs::create_dir_all(root.join(&rel).parent().unwrap()).unwrap();
        let mut data = vec![0u8; rng.random_range(0..4096)];
        rng.fill_bytes(&mut data);
        std::fs::write(root.join(&rel), &data).unwrap();
        small.push((rel, data));
    }

    let out = store_cmd(&server.url(), &job, &token, &root, &["--destination", "tree"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("stored 2001 artifacts"), "{stdout}");

    for (rel, data) in &small {
        let r = get(&server, &token, &job, &format!("tree/{rel}"), &[]);
        assert_eq!(r.status, 200, "{rel}");
        assert!(r.body == *data, "{rel} differs");
    }
    let (status, len, digest) = http_get_sha256(&server.url(), &format!("/api/v1/jobs/{job}/artifacts/tree/big/disk.img"), Some(&token)).unwrap();
    assert_eq!((status, len), (200, 3 << 30));
    assert_eq!(digest, sha256_file(&big), "the 3 GiB file comes back byte-identical");

    // Listing: every artifact once, in pages of 1000, with the digest it was verified against.
    let mut seen = Vec::new();
    let mut token_q = String::new();
    loop {
        let r = http_get(&server.url(), &format!("/api/v1/jobs/{job}/artifacts{token_q}"), Some(&token), None).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        seen.extend(v["items"].as_array().unwrap().iter().map(|i| (i["path"].as_str().unwrap().to_string(), i["sha256"].as_str().unwrap().to_string())));
        match v["next_page_token"].as_str() {
            Some(t) => token_q = format!("?page-token={}", tailrace_protocol::artifact_path::encode_component(t)),
            None => break,
        }
    }
    assert_eq!(seen.len(), 2001);
    assert!(seen.contains(&("tree/big/disk.img".to_string(), sha256_file(&big))));

    // Memory: uploads hold at most `artifacts_uploads` (8) parts of 8 MiB; downloads a few
    // 256 KiB reads. Peak RSS over the whole run stays far below the 3 GiB that went through.
    let peak = peak_rss_kib(server.pid());
    eprintln!("server peak RSS after 3 GiB + 2000 files up and down: {} MiB", peak / 1024);
    assert!(peak < 120 * 1024, "server peak RSS {peak} KiB; the bound is 8 uploads × 8 MiB parts plus the server's ~30 MiB base");
    assert_eq!(metric(&server, "tailrace_artifact_completed_total"), 2001);
}

/// Starts an upload of a 1 GiB file with one worker; returns it and the file's digest.
fn start_big_upload(url: &str, job: &str, token: &str, dir: &Path) -> (Watched, std::path::PathBuf) {
    let file = dir.join("big.bin");
    sparse_file(&file, 1 << 30, 3);
    let w = Watched::spawn(store_cmd(url, job, token, &file, &["--destination", "big.bin", "--parallel", "1"]));
    (w, file)
}

#[test]
fn an_upload_cut_by_the_network_resumes_without_resending_stored_parts() {
    let server = Server::start();
    let (job, token) = server.create_job();
    let proxy = TcpProxy::start(format!("127.0.0.1:{}", server.http).parse().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let (upload, file) = start_big_upload(&format!("http://127.0.0.1:{}", proxy.port), &job, &token, dir.path());
    wait_until("64 MiB stored", 60, || metric(&server, "tailrace_artifact_stored_bytes_total") >= 64 * MIB);
    assert!(proxy.cut_all() > 0);
    let out = upload.finish(120);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("resuming at byte"), "{stderr}");
    let received = metric(&server, "tailrace_artifact_received_bytes_total");
    let size = 1u64 << 30;
    assert!(received < size + 8 * MIB, "received {received}: more than the one part in flight was resent");
    assert_eq!(metric(&server, "tailrace_artifact_stored_bytes_total"), size, "every part stored once");
    let (status, len, digest) = http_get_sha256(&server.url(), &format!("/api/v1/jobs/{job}/artifacts/big.bin"), Some(&token)).unwrap();
    assert_eq!((status, len, digest), (200, size, sha256_file(&file)));
}

#[test]
fn an_upload_survives_kill_9_of_the_server() {
    let mut server = Server::start();
    let (job, token) = server.create_job();
    let dir = tempfile::tempdir().unwrap();
    let (upload, file) = start_big_upload(&server.url(), &job, &token, dir.path());
    wait_until("64 MiB stored", 60, || metric(&server, "tailrace_artifact_stored_bytes_total") >= 64 * MIB);
    server.restart();
    let out = upload.finish(180);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // The last resume is the one after the restart (a loaded machine may show earlier ones).
    let resumed_at: u64 = stderr
        .lines()
        .rev()
        .filter_map(|l| l.split("resuming at byte ").nth(1))
        .find_map(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no resume in {stderr}"));
    assert!(resumed_at >= 64 * MIB && resumed_at.is_multiple_of(8 * MIB), "resumed at {resumed_at}: a part boundary after what was stored");
    let received = metric(&server, "tailrace_artifact_received_bytes_total");
    assert!(received <= (1 << 30) - resumed_at + 8 * MIB, "the restarted server received {received}");
    let (status, _, digest) = http_get_sha256(&server.url(), &format!("/api/v1/jobs/{job}/artifacts/big.bin"), Some(&token)).unwrap();
    assert_eq!((status, digest), (200, sha256_file(&file)));
}

/// Splits a `multipart/byteranges` body into (Content-Range, bytes) parts.
fn byteranges(body: &[u8], boundary: &str) -> Vec<(String, Vec<u8>)> {
    let delim = format!("--{boundary}");
    let mut out = Vec::new();
    let mut rest = body;
    while let Some(at) = rest.windows(delim.len()).position(|w| w == delim.as_bytes()) {
        rest = &rest[at + delim.len()..];
        if rest.starts_with(b"--") {
            break;
        }
        let head_end = rest.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = String::from_utf8_lossy(&rest[..head_end]).to_string();
        let range = head.lines().find_map(|l| l.strip_prefix("Content-Range: bytes ")).unwrap().to_string();
        let (a, b) = range.split('/').next().unwrap().split_once('-').unwrap();
        let n = b.parse::<usize>().unwrap() - a.parse::<usize>().unwrap() + 1;
        out.push((range.clone(), rest[head_end + 4..head_end + 4 + n].to_vec()));
        rest = &rest[head_end + 4 + n..];
    }
    out
}

#[test]
fn ranges_and_conditional_requests_match_the_file() {
    // 1 MiB parts, so that ranges cross part objects.
    let server = Server::start_with(vec![("TAILRACE_ARTIFACTS_PART_MIB".into(), "1".into())]);
    let (job, token) = server.create_job();
    let dir = tempfile::tempdir().unwrap();
    let n = 5 * MIB as usize + 333;
    let data = random_file(&dir.path().join("data.bin"), n, 4);
    let out = store_cmd(&server.url(), &job, &token, &dir.path().join("data.bin"), &["--destination", "data.bin"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let m = MIB as usize;
    for (range, want) in [
        ("bytes=0-0", &data[..1]),
        (&format!("bytes={}-{}", n / 2, n / 2) as &str, &data[n / 2..n / 2 + 1]),
        (&format!("bytes={}-{}", n - 1, n - 1), &data[n - 1..]),
        ("bytes=-1000", &data[n - 1000..]),
        (&format!("bytes={}-", 3 * m - 5), &data[3 * m - 5..]),
        (&format!("bytes={}-{}", m - 10, 2 * m + 10), &data[m - 10..2 * m + 11]),
        (&format!("bytes=100-{}", 10 * n), &data[100..]),
    ] {
        let r = get(&server, &token, &job, "data.bin", &[("Range", range)]);
        assert_eq!(r.status, 206, "{range}");
        assert_eq!(r.header("content-length").unwrap().parse::<usize>().unwrap(), want.len(), "{range}");
        assert!(r.body == want, "{range}: bytes differ");
        assert!(r.header("content-range").unwrap().ends_with(&format!("/{n}")));
    }
    let r = get(&server, &token, &job, "data.bin", &[("Range", &format!("bytes=0-9,{}-{},-5", m - 3, m + 3))]);
    assert_eq!(r.status, 206);
    let boundary = r.header("content-type").unwrap().split("boundary=").nth(1).unwrap().to_string();
    assert_eq!(r.header("content-length").unwrap().parse::<usize>().unwrap(), r.body.len());
    let parts = byteranges(&r.body, &boundary);
    assert_eq!(parts.len(), 3);
    assert_eq!(parts[0], (format!("0-9/{n}"), data[..10].to_vec()));
    assert_eq!(parts[1], (format!("{}-{}/{n}", m - 3, m + 3), data[m - 3..m + 4].to_vec()));
    assert_eq!(parts[2], (format!("{}-{}/{n}", n - 5, n - 1), data[n - 5..].to_vec()));

    let r = get(&server, &token, &job, "data.bin", &[("Range", &format!("bytes={n}-"))]);
    assert_eq!((r.status, r.header("content-range")), (416, Some(format!("bytes */{n}").as_str())));
    let whole = get(&server, &token, &job, "data.bin", &[]);
    assert_eq!(whole.status, 200);
    assert!(whole.body == data);
    let etag = whole.header("etag").unwrap().to_string();
    assert_eq!(etag, format!("\"{}\"", sha256_file(&dir.path().join("data.bin"))));
    assert_eq!(get(&server, &token, &job, "data.bin", &[("If-None-Match", &etag)]).status, 304);
    let lm = whole.header("last-modified").unwrap().to_string();
    assert_eq!(get(&server, &token, &job, "data.bin", &[("If-Modified-Since", &lm)]).status, 304);
    let stale = get(&server, &token, &job, "data.bin", &[("Range", "bytes=0-0"), ("If-Range", "\"other\"")]);
    assert_eq!((stale.status, stale.body.len()), (200, n), "a stale If-Range gets the whole file");
    let head = http_call(&server.url(), "HEAD", &format!("/api/v1/jobs/{job}/artifacts/data.bin"), Some(&token), &[], b"").unwrap();
    assert_eq!((head.status, head.header("content-length").map(str::to_string), head.body.len()), (200, Some(n.to_string()), 0));
}

fn put(server: &Server, token: &str, job: &str, name: &str, body: &[u8], sha: &str) -> HttpResponse {
    let len = body.len().to_string();
    http_call(&server.url(), "PUT", &format!("/api/v1/jobs/{job}/artifacts/{name}"), Some(token), &[("Upload-Length", &len), ("X-Tailrace-Sha256", sha)], body)
        .expect("PUT")
}

fn sha(b: &[u8]) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(b))
}

#[test]
fn bad_names_collisions_limits_and_digests_are_refused_and_harm_nothing() {
    let server = Server::start_with(vec![("TAILRACE_ARTIFACTS_MAX_FILE_MIB".into(), "1".into()), ("TAILRACE_ARTIFACTS_MAX_JOB_MIB".into(), "2".into())]);
    let (job, token) = server.create_job();
    let body = b"hello";
    for (name, why) in [
        ("..%2Fescape", "contains `..`"),
        ("a/%2E%2E/%2E%2E/escape", "contains `..`"),
        ("%2Fetc%2Fpasswd", "is absolute"),
        ("a%5C..%5Cb", "backslash"),
        ("a%00b", "NUL or control"),
        ("C:%2Fwin", "drive letter"),
    ] {
        let r = put(&server, &token, &job, name, body, &sha(body));
        assert_eq!(r.status, 400, "{name}: {}", String::from_utf8_lossy(&r.body));
        assert!(String::from_utf8_lossy(&r.body).contains(why), "{name}: {}", String::from_utf8_lossy(&r.body));
    }
    assert_eq!(put(&server, &token, &job, "a/b", body, &sha(body)).status, 201);
    assert_eq!(put(&server, &token, &job, ".%2Fa%2F%2Fb", body, &sha(body)).status, 200, "the same artifact, same content: idempotent");
    let r = put(&server, &token, &job, "a/b", b"other", &sha(b"other"));
    assert_eq!(r.status, 409, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(put(&server, &token, &job, "a/b/c", body, &sha(body)).status, 409, "a/b is a file");
    assert_eq!(put(&server, &token, &job, "a", body, &sha(body)).status, 409, "a is a folder");
    // Digest: a wrong one stores nothing.
    let r = put(&server, &token, &job, "d.txt", body, &sha(b"not this"));
    assert_eq!(r.status, 422, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(http_get(&server.url(), &format!("/api/v1/jobs/{job}/artifact-uploads/d.txt"), Some(&token), None).unwrap().status, 404);
    assert_eq!(get(&server, &token, &job, "d.txt", &[]).status, 404);
    // Limits: 1 MiB per file, 2 MiB per job.
    let mib = vec![7u8; MIB as usize];
    assert_eq!(put(&server, &token, &job, "big", &[&mib[..], b"!"].concat(), &sha(&[&mib[..], b"!"].concat())).status, 413);
    assert_eq!(put(&server, &token, &job, "m1", &mib, &sha(&mib)).status, 201);
    assert_eq!(put(&server, &token, &job, "m2", &mib, &sha(&mib)).status, 413, "the job's total would pass 2 MiB");
    // Tokens: another job's token cannot write here; no token at all is refused.
    let (_, other_token) = server.create_job();
    assert_eq!(put(&server, &other_token, &job, "x", body, &sha(body)).status, 403);
    assert_eq!(http_call(&server.url(), "PUT", &format!("/api/v1/jobs/{job}/artifacts/x"), None, &[], body).unwrap().status, 401);

    // The CLI refuses bad names before sending anything.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ok.txt"), b"ok").unwrap();
    std::fs::write(dir.path().join("evil\\..\\name"), b"x").unwrap();
    let out = store_cmd(&server.url(), &job, &token, dir.path(), &["--destination", "cli"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "bad names: nothing sent");
    assert!(String::from_utf8_lossy(&out.stderr).contains("backslash"), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(get(&server, &token, &job, "cli/ok.txt", &[]).status, 404, "nothing was uploaded");

    // Everything refused left the server healthy and the good artifact intact.
    assert_eq!(get(&server, &token, &job, "a/b", &[]).body, body);
    assert!(!server.log().contains("panicked"));
}

#[test]
fn html_is_served_inert_by_default_and_as_html_when_the_operator_allows() {
    let page = b"<html><script>document.title='pwned'</script></html>";
    for (serve_active, want_type) in [(false, "text/plain; charset=utf-8"), (true, "text/html; charset=utf-8")] {
        let server = Server::start_with(vec![("TAILRACE_ARTIFACTS_SERVE_ACTIVE".into(), serve_active.to_string())]);
        let (job, token) = server.create_job();
        assert_eq!(put(&server, &token, &job, "report/index.html", page, &sha(page)).status, 201);
        assert_eq!(put(&server, &token, &job, "logo.svg", b"<svg/>", &sha(b"<svg/>")).status, 201);
        let r = get(&server, &token, &job, "report/index.html", &[]);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some(want_type));
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
        let csp = r.header("content-security-policy").unwrap();
        assert!(csp.contains("sandbox") && !csp.contains("allow-same-origin"), "{csp}");
        if serve_active {
            assert!(r.header("content-disposition").unwrap().starts_with("inline"));
        } else {
            assert!(r.header("content-disposition").unwrap().starts_with("attachment"));
            assert!(!csp.contains("allow-scripts"));
            assert_eq!(get(&server, &token, &job, "logo.svg", &[]).header("content-type"), Some("text/plain; charset=utf-8"));
        }
        // Listings in both shapes point at the download.
        let v: serde_json::Value = serde_json::from_slice(&http_get(&server.url(), "/api/v2/project/gh/acme/app/1/artifacts", Some(&token), None).unwrap().body).unwrap();
        assert_eq!(v["items"][1]["path"], "report/index.html");
        assert_eq!(v["items"][1]["node_index"], 0);
        assert_eq!(v["items"][1]["url"], format!("{}/api/v1/jobs/{job}/artifacts/report/index.html", server.url()));
    }
}

#[test]
fn artifacts_expire_with_their_retention() {
    let server = Server::start();
    let (job, token) = server.create_job();
    assert_eq!(put(&server, &token, &job, "keep.txt", b"k", &sha(b"k")).status, 201);
    let objects = || {
        let mut n = 0;
        let mut dirs = vec![server.data_dir().join("objects/artifacts")];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                if e.file_type().unwrap().is_dir() { dirs.push(e.path()) } else { n += 1 }
            }
        }
        n
    };
    assert_eq!(objects(), 1);
    let cfg = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(cfg.path(), "retention_artifacts_days = 30\n").unwrap();
    let now = tailrace_storage::meta::now_ms() / 1000;
    let gc = |days: u64| {
        let out = Command::new(BIN)
            .args(["gc", "--data-dir", server.data_dir().to_str().unwrap(), "--config", cfg.path().to_str().unwrap()])
            .args(["--as-of", &(now + days * 86_400).to_string()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert!(gc(10).contains("expired 0 artifacts"));
    assert!(gc(40).contains("expired 1 artifacts"));
    assert_eq!(objects(), 0);
    let r = get(&server, &token, &job, "keep.txt", &[]);
    assert_eq!(r.status, 410, "{}", String::from_utf8_lossy(&r.body));
}

#[test]
fn artifacts_on_s3_round_trip_and_resume_after_a_cut() {
    use futures_util::TryStreamExt;
    use object_store::ObjectStore;
    let _one_at_a_time = S3_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let s3 = S3Server::start();
    let mut env = s3.serve_env();
    env.push(("TAILRACE_ARTIFACTS_PART_MIB".into(), "5".into()));
    let server = Server::start_with(env);
    let (job, token) = server.create_job();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("out");
    std::fs::create_dir_all(root.join("nested/deeper")).unwrap();
    let big = random_file(&root.join("big.bin"), 96 * MIB as usize + 7, 5);
    let mut small = Vec::new();
    for i in 0..200 {
        let rel = format!("nested/{}f{i}.log", if i % 2 == 0 { "deeper/" } else { "" });
        small.push((rel.clone(), random_file(&root.join(&rel), i * 37, i as u64)));
    }
    // Through a proxy that is cut once 20 MiB are in the bucket.
    let proxy = TcpProxy::start(format!("127.0.0.1:{}", server.http).parse().unwrap());
    let upload = Watched::spawn(store_cmd(&format!("http://127.0.0.1:{}", proxy.port), &job, &token, &root, &["--destination", "out"]));
    wait_until("20 MiB stored", 60, || metric(&server, "tailrace_artifact_stored_bytes_total") >= 20 * MIB);
    proxy.cut_all();
    let out = upload.finish(180);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let total: u64 = big.len() as u64 + small.iter().map(|(_, d)| d.len() as u64).sum::<u64>();
    assert_eq!(metric(&server, "tailrace_artifact_stored_bytes_total"), total, "every part stored once");
    assert!(metric(&server, "tailrace_artifact_received_bytes_total") < total + 4 * 5 * MIB, "at most one part per upload in flight was resent");

    let (status, len, digest) = http_get_sha256(&server.url(), &format!("/api/v1/jobs/{job}/artifacts/out/big.bin"), Some(&token)).unwrap();
    assert_eq!((status, len, digest), (200, big.len() as u64, sha(&big)));
    for (rel, data) in &small {
        assert!(get(&server, &token, &job, &format!("out/{rel}"), &[]).body == *data, "{rel}");
    }
    let m = 5 * MIB as usize;
    let r = get(&server, &token, &job, "out/big.bin", &[("Range", &format!("bytes={}-{},-3", m - 2, 3 * m + 1))]);
    let boundary = r.header("content-type").unwrap().split("boundary=").nth(1).unwrap().to_string();
    let parts = byteranges(&r.body, &boundary);
    assert!(parts[0].1 == big[m - 2..3 * m + 2] && parts[1].1 == big[big.len() - 3..], "ranges across part objects");

    // The bucket holds the parts: 20 for the big file, one per non-empty small file.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let keys: Vec<_> = rt.block_on(s3.client().list(None).map_ok(|m| m.location.to_string()).try_collect::<Vec<_>>()).unwrap();
    let parts = keys.iter().filter(|k| k.starts_with("artifacts/") && k.contains(&job)).count();
    assert_eq!(parts, 20 + small.iter().filter(|(_, d)| !d.is_empty()).count());
}
