//! The archive: ended steps move to seekable zstd segments in the object store; every read
//! (ranged GET, tail from any offset) returns exactly the original bytes from there; `zstd -d`
//! reads the segments as plain files; a `kill -9` mid-archive is repaired by the restart.

mod common;

use std::process::Stdio;

use common::*;

#[test]
fn an_archived_step_reads_back_exactly_and_zstd_can_read_its_segments() {
    let cfg = tempfile::NamedTempFile::new().unwrap();
    // Small segments so that a 110 MB step spans several objects, all written when it ends
    // (incremental archiving of running steps is tests/archive_running.rs).
    std::fs::write(cfg.path(), "archive_segment_mib = 32\narchive_live_mib = 1024\n").unwrap();
    let server = Server::start_with(vec![("TAILRACE_CONFIG".into(), cfg.path().display().to_string())]);
    let (job, token) = server.create_job();
    let data = awkward_bytes(41, 110 << 20);
    stream_step(&server, &job, &token, "big", &data);
    wait_until("step archived", 120, || archived(&server, &job, "big"));
    // The archived mark is committed first, then the live bytes are released.
    wait_until("live bytes released", 60, || !server.data_dir().join(format!("live/{job}/big.log")).exists());

    let segments = segment_files(&server, &job, "big");
    assert_eq!(segments.len(), 4, "{segments:?}");
    let stored: u64 = segments.iter().map(|p| std::fs::metadata(p).unwrap().len()).sum();
    assert!(stored < data.len() as u64, "segments should be compressed: {stored} bytes");
    let mut zstd = std::process::Command::new("zstd");
    zstd.arg("-dc").args(&segments).stdout(Stdio::piped());
    let decoded = zstd.output().expect("zstd CLI (apt-get install zstd)");
    assert!(decoded.status.success(), "{}", String::from_utf8_lossy(&decoded.stderr));
    assert!(decoded.stdout == data, "zstd -dc over the segments differs from the original");

    assert!(server.output(&job, "big", None).body == data, "whole GET from the archive differs");
    let mut rng = 0x2545f4914f6cdd1du64;
    for i in 0..300 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let start = (rng % data.len() as u64) as usize;
        // Mostly small reads, some that cross frame and segment boundaries.
        let len = if i % 10 == 0 { 1 + (rng >> 20) as usize % (3 << 20) } else { 1 + (rng >> 20) as usize % 65536 };
        let end = (start + len).min(data.len());
        let r = server.output(&job, "big", Some(&format!("bytes={start}-{}", end - 1)));
        assert_eq!(r.status, 206);
        assert!(r.body == data[start..end], "range {start}-{end} differs");
    }
    let seg_boundary = 32usize << 20;
    let r = server.output(&job, "big", Some(&format!("bytes={}-{}", seg_boundary - 10, seg_boundary + 9)));
    assert_eq!(r.body, data[seg_boundary - 10..seg_boundary + 10]);

    // A tail from any offset of an archived step gets the rest, then the end.
    let tail = std::process::Command::new(BIN)
        .args(["tail", "--server", &server.url(), "--job", &job, "--step", "big", "--from", "12345"])
        .env("TAILRACE_TOKEN", server.admin_token())
        .output()
        .unwrap();
    assert!(tail.status.success(), "{}", String::from_utf8_lossy(&tail.stderr));
    assert!(tail.stdout == data[12345..], "tail of the archived step differs");
    let metrics = String::from_utf8(http_get(&server.url(), "/metrics", None, None).unwrap().body).unwrap();
    assert!(metrics.contains(&format!("tailrace_archive_raw_bytes_total {}", data.len())), "{metrics}");
}

#[test]
fn kill_9_during_archiving_is_repaired_by_the_restart() {
    let mut server = Server::start();
    let (job, token) = server.create_job();
    let data = awkward_bytes(43, 64 << 20);
    stream_step(&server, &job, &token, "s", &data);
    // The step is verified; kill the server once the archiver has started writing its segment.
    wait_until("archiving started", 60, || !segment_files(&server, &job, "s").is_empty() || archived(&server, &job, "s"));
    let was_archived = archived(&server, &job, "s");
    server.kill9();
    server.restart();
    wait_until("step archived after restart", 120, || archived(&server, &job, "s"));
    assert!(server.output(&job, "s", None).body == data, "output differs after an interrupted archive");
    // Exactly one set of segments, no leftovers of the interrupted attempt.
    let segments = segment_files(&server, &job, "s");
    assert_eq!(segments.len(), 1, "{segments:?}");
    let decoded = std::process::Command::new("zstd").arg("-dc").args(&segments).output().expect("zstd CLI");
    assert!(decoded.stdout == data);
    wait_until("live bytes released", 60, || !server.data_dir().join(format!("live/{job}/s.log")).exists());
    eprintln!("archived before the kill: {was_archived}");
}

#[test]
fn empty_steps_archive_and_read_back_empty() {
    let server = Server::start();
    let (job, token) = server.create_job();
    let out = agent(&server.url(), &token, &job, "e", &["--quiet"], &["true"]).output().unwrap();
    assert!(out.status.success());
    wait_until("empty step archived", 60, || archived(&server, &job, "e"));
    let r = server.output(&job, "e", None);
    assert_eq!((r.status, r.body.len()), (200, 0));
    let tail = std::process::Command::new(BIN)
        .args(["tail", "--server", &server.url(), "--job", &job, "--step", "e"])
        .env("TAILRACE_TOKEN", server.admin_token())
        .output()
        .unwrap();
    assert!(tail.status.success() && tail.stdout.is_empty(), "{}", String::from_utf8_lossy(&tail.stderr));
}

/// Retention: a sweep deletes the archived output of steps past it (objects and manifest), the
/// API answers 410 for them, and running or recent steps stay.
#[test]
fn expired_output_is_deleted_and_answers_410() {
    let cfg = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(cfg.path(), "retention_logs_days = 7\n").unwrap();
    let server = Server::start_with(vec![("TAILRACE_CONFIG".into(), cfg.path().display().to_string())]);
    let (job, token) = server.create_job();
    let data = awkward_bytes(61, 1 << 20);
    stream_step(&server, &job, &token, "old", &data);
    wait_until("archived", 60, || archived(&server, &job, "old"));
    assert_eq!(segment_files(&server, &job, "old").len(), 1);
    // A step that is still running when the sweep comes.
    let held = GatedStep::new(&[b"still here\n", b""]);
    let running = spawn_detached(held.agent(&server, &token, &job, "running"));
    wait_until("running step", 60, || server.step_len(&job, "running") > 0);

    let day = 86_400u64;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let gc = |as_of: u64, extra: &[&str]| {
        let out = std::process::Command::new(BIN)
            .args(["gc", "--data-dir", server.data_dir().to_str().unwrap(), "--config", cfg.path().to_str().unwrap()])
            .args(["--as-of", &as_of.to_string()])
            .args(extra)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    // Three days on, nothing is past seven days of retention.
    assert!(gc(now + 3 * day, &[]).contains("expired 0 steps"));
    // Ten days on: a dry run lists the ended step and deletes nothing.
    let dry = gc(now + 10 * day, &["--dry-run"]);
    assert!(dry.contains(&format!("would expire {job}/old")) && dry.contains("would expire 1 steps"), "{dry}");
    assert_eq!(server.output(&job, "old", None).body, data);
    // The real sweep deletes it; the running step stays.
    let swept = gc(now + 10 * day, &[]);
    assert!(swept.contains(&format!("expired {job}/old ({} bytes)", data.len())), "{swept}");
    assert!(segment_files(&server, &job, "old").is_empty(), "segment objects were not deleted");
    let r = server.output(&job, "old", None);
    assert_eq!(r.status, 410);
    assert!(String::from_utf8_lossy(&r.body).contains("expired"), "{}", String::from_utf8_lossy(&r.body));
    let tail = std::process::Command::new(BIN)
        .args(["tail", "--server", &server.url(), "--job", &job, "--step", "old"])
        .env("TAILRACE_TOKEN", server.admin_token())
        .output()
        .unwrap();
    assert!(!tail.status.success() && String::from_utf8_lossy(&tail.stderr).contains("410"), "{}", String::from_utf8_lossy(&tail.stderr));
    assert_eq!(server.output(&job, "running", None).body, b"still here\n");
    held.open(1);
    assert!(wait_output(running, 60).status.success());
}

/// The whole-job download concatenates every step (archived or running) under a header line;
/// `?offset=&length=` reads a range like the Range header does.
#[test]
fn whole_job_download_and_query_ranges() {
    let server = Server::start();
    let (job, token) = server.create_job();
    stream_step(&server, &job, &token, "first", b"one\ntwo\n");
    wait_until("archived", 60, || archived(&server, &job, "first"));
    let held = GatedStep::new(&[b"three\n", b""]);
    let running = spawn_detached(held.agent(&server, &token, &job, "second"));
    wait_until("second step output", 60, || server.step_len(&job, "second") == 6);
    let r = http_get(&server.url(), &format!("/api/v1/jobs/{job}/output"), Some(&server.admin_token()), None).unwrap();
    assert_eq!(r.status, 200);
    let text = String::from_utf8(r.body).unwrap();
    let name = |step: &str| server.step(&job, step).unwrap()["name"].as_str().unwrap().to_string();
    assert_eq!(
        text,
        format!("==> step first ({}): success, 8 bytes <==\none\ntwo\n\n==> step second ({}): running, 6 bytes <==\nthree\n\n", name("first"), name("second"))
    );
    let path = format!("/api/v1/jobs/{job}/steps/first/output?offset=4&length=3");
    let r = http_get(&server.url(), &path, Some(&server.admin_token()), None).unwrap();
    assert_eq!((r.status, r.body.as_slice()), (206, &b"two"[..]));
    let path = format!("/api/v1/jobs/{job}/steps/first/output?offset=9");
    assert_eq!(http_get(&server.url(), &path, Some(&server.admin_token()), None).unwrap().status, 416);
    held.open(1);
    assert!(wait_output(running, 60).status.success());
}

/// `?lines=A-B` returns whole lines, from the live tier (by scanning) and from the archive (by
/// the per-frame line index), with the byte offset of the first line in `tailrace-offset`; and
/// `line-number?offset=N` answers which line a byte is on, both ways.
#[test]
fn lines_are_served_from_live_and_archived_output() {
    let server = Server::start();
    let (job, token) = server.create_job();
    // ~3.9 MB of numbered lines of varying length: many 256 KiB frames.
    let mut text = String::new();
    for i in 1..=200_000u32 {
        text.push_str(&format!("line {i} {}\n", "x".repeat((i % 17) as usize)));
    }
    let step = GatedStep::new(&[text.as_bytes(), b""]);
    let run = spawn_detached(step.agent(&server, &token, &job, "s"));
    wait_until("all lines streamed", 60, || server.step_len(&job, "s") == text.len() as u64);
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let check = |spec: &str, first: usize, last: usize| {
        let path = format!("/api/v1/jobs/{job}/steps/s/output?lines={spec}");
        let r = http_get(&server.url(), &path, Some(&server.admin_token()), None).unwrap();
        assert_eq!(r.status, 200, "{spec}: {}", String::from_utf8_lossy(&r.body));
        let expected: String = lines[first - 1..last].concat();
        assert!(r.body == expected.as_bytes(), "lines {spec} differ");
        let offset: usize = lines[..first - 1].iter().map(|l| l.len()).sum();
        assert_eq!(r.header("tailrace-offset"), Some(offset.to_string().as_str()));
    };
    let all = lines.len();
    let mut cases = vec![("1-3".to_string(), 1, 3), ("7".into(), 7, 7), ("199990-".into(), 199_990, all), (format!("1-{}", all + 5), 1, all)];
    // Lines around every frame boundary of the first few frames.
    let mut offset = 0usize;
    for (n, l) in lines.iter().enumerate() {
        if offset / (256 * 1024) != (offset + l.len()) / (256 * 1024) && n < 60_000 {
            cases.push((format!("{}-{}", n, n + 2), n, n + 2));
        }
        offset += l.len();
    }
    // Offsets to number: line starts, mid-line bytes, frame edges, the end.
    let mut offsets = vec![0u64, 1, text.len() as u64 - 1, text.len() as u64];
    for k in 1..40u64 {
        offsets.extend([k * 256 * 1024 - 1, k * 256 * 1024, k * 97_531].into_iter().filter(|&o| o <= text.len() as u64));
    }
    let line_of = |offset: u64| 1 + text.as_bytes()[..offset as usize].iter().filter(|&&b| b == b'\n').count() as u64;
    let check_numbers = || {
        for &offset in &offsets {
            let path = format!("/api/v1/jobs/{job}/steps/s/line-number?offset={offset}");
            let r = http_get(&server.url(), &path, Some(&server.admin_token()), None).unwrap();
            assert_eq!(r.status, 200, "{offset}: {}", String::from_utf8_lossy(&r.body));
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(v["line"].as_u64(), Some(line_of(offset)), "line of byte {offset}");
            assert_eq!(v["length"].as_u64(), Some(text.len() as u64));
        }
        let past = format!("/api/v1/jobs/{job}/steps/s/line-number?offset={}", text.len() + 1);
        assert_eq!(http_get(&server.url(), &past, Some(&server.admin_token()), None).unwrap().status, 416);
    };
    check_numbers(); // live tier
    for (spec, a, b) in &cases {
        check(spec, *a, *b); // live tier
    }
    let path = format!("/api/v1/jobs/{job}/steps/s/output?lines={}", all + 1);
    assert_eq!(http_get(&server.url(), &path, Some(&server.admin_token()), None).unwrap().status, 416);
    step.open(1);
    let out = wait_output(run, 60);
    assert!(out.status.success());
    wait_until("archived", 60, || archived(&server, &job, "s"));
    for (spec, a, b) in &cases {
        check(spec, *a, *b); // archive
    }
    check_numbers(); // archive, by the index
}

/// An agent that lost the END confirmation reconnects after its step was archived: the server
/// confirms a matching END from the record, refuses other content, and never recreates the
/// step in the live tier.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_after_archiving_is_answered_from_the_record() {
    use bytes::{Bytes, BytesMut};
    use tailrace_agent::client::Server as ApiServer;
    use tailrace_agent::transport::{Connector, TransportChoice};
    use tailrace_protocol::{Accept, Data, Decoder, End, EndReason, ErrorKind, Frame, JobId, Open, StepId, StreamHasher, StreamTag};
    use tokio::io::AsyncReadExt;

    let server = Server::start();
    let (job, token) = server.create_job();
    tokio::task::block_in_place(|| stream_step(&server, &job, &token, "s", b"hello\n"));
    let (srv, j) = (&server, job.clone());
    tokio::task::block_in_place(|| wait_until("archived", 60, || archived(srv, &j, "s")));
    let mut h = StreamHasher::new();
    h.update(b"hello\n");
    let end = |checksum: String| Frame::End(End { exit_code: Some(0), reason: EndReason::Exited, duration_ms: 1, length: 6, checksum });
    let open = Frame::Open(Open { job: JobId::new(job.clone()).unwrap(), step: StepId::new("s").unwrap(), name: String::new(), token: token.clone() });
    let exchange = |frames: Vec<Frame>| {
        let url = server.url();
        async move {
            let mut c = Connector::new(ApiServer::parse(&url).unwrap(), TransportChoice::Http2, None);
            let mut s = c.open().await.unwrap();
            let mut wire: Vec<Bytes> = frames.iter().map(Frame::to_bytes).collect();
            s.tx.send(&mut wire).await.unwrap();
            s.tx.finish();
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            loop {
                while let Ok(Some(f)) = Decoder::default().decode(&mut buf) {
                    got.push(f);
                }
                if s.rx.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                    return got;
                }
            }
        }
    };
    let ok = exchange(vec![open.clone(), end(h.hex())]).await;
    assert_eq!(ok.first(), Some(&Frame::Accept(Accept { hwm: 6, ended: true })));
    assert!(matches!(ok.last(), Some(Frame::End(_))), "{ok:?}");
    let wrong = exchange(vec![open.clone(), end("0000000000000000".into())]).await;
    assert!(matches!(wrong.last(), Some(Frame::Error(e)) if e.kind == ErrorKind::Conflict), "{wrong:?}");
    let more = Frame::Data(Data { offset: 6, timestamp_us: 0, stream: StreamTag::Stdout, bytes: Bytes::from_static(b"more") });
    let extra = exchange(vec![open, more]).await;
    assert!(matches!(extra.last(), Some(Frame::Error(e)) if e.kind == ErrorKind::Conflict), "{extra:?}");
    assert!(!server.data_dir().join(format!("live/{job}/s.log")).exists(), "the released step was recreated in the live tier");
    assert_eq!(server.output(&job, "s", None).body, b"hello\n");
}

/// `?since=T` serves the output read at or after T, from the live tier's time index and from
/// the archive's per-frame times; it never misses output from after T.
#[test]
fn since_serves_output_from_a_point_in_time() {
    let server = Server::start();
    let (job, token) = server.create_job();
    let before = awkward_bytes(71, 600 << 10);
    let after = awkward_bytes(73, 600 << 10);
    // The second part waits for a gate; the third (empty) keeps the step live for the checks.
    let step = GatedStep::new(&[&before, &after, b""]);
    let run = step.agent(&server, &token, &job, "s").stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    wait_until("first part", 60, || server.step_len(&job, "s") == before.len() as u64);
    // A moment inside the pause, a second after the first part was read and a second before
    // the second part is let out.
    let now_ms = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
    let t = now_ms() + 1000;
    wait_until("a second past t", 10, || now_ms() >= t + 1000);
    step.open(1);
    let total = (before.len() + after.len()) as u64;
    wait_until("second part", 60, || server.step_len(&job, "s") == total);
    let since = |t: u128| {
        let r = http_get(&server.url(), &format!("/api/v1/jobs/{job}/steps/s/output?since={t}"), Some(&server.admin_token()), None).unwrap();
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let offset: usize = r.header("tailrace-offset").unwrap().parse().unwrap();
        (offset, r.body)
    };
    // Live: the pause makes a time point exactly where the second part starts.
    let (offset, body) = since(t);
    assert_eq!(offset, before.len(), "exact at a pause");
    assert!(body == after);
    let (offset, _) = since(t - 60_000);
    assert_eq!(offset, 0, "a time before the step gives everything");
    step.open(2);
    let out = wait_output(run, 60);
    assert!(out.status.success());
    wait_until("archived", 60, || archived(&server, &job, "s"));
    // Archived: frame resolution (256 KiB), never later than the second part.
    let (offset, body) = since(t);
    assert!(offset <= before.len() && before.len() - offset <= 256 << 10, "offset {offset}");
    assert!(body.ends_with(&after) && body.len() == after.len() + before.len() - offset);
    let r = http_get(&server.url(), &format!("/api/v1/jobs/{job}/steps/s/output?since=soon"), Some(&server.admin_token()), None).unwrap();
    assert_eq!(r.status, 400);
}

#[test]
fn search_finds_lines_in_archived_output_across_frames() {
    let server = Server::start();
    let (job, token) = server.create_job();
    // 600,000 lines (about 7 MB, many 256 KiB frames); the needle is at both ends and once
    // in the middle, where it may straddle a frame boundary.
    let mut data = Vec::new();
    for i in 1..=600_000u32 {
        let line = match i {
            1 | 600_000 => format!("NEEDLE at {i}\n"),
            300_000 => format!("{}NEEDLE in the middle\n", "x".repeat(3000)),
            _ => format!("line {i}\n"),
        };
        data.extend_from_slice(line.as_bytes());
    }
    stream_step(&server, &job, &token, "big", &data);
    wait_until("step archived", 60, || archived(&server, &job, "big"));
    let r = http_get(&server.url(), &format!("/api/v1/jobs/{job}/steps/big/search?q=NEEDLE"), Some(&token), None).unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let answer: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let lines: Vec<u64> = answer["matches"].as_array().unwrap().iter().map(|m| m["line"].as_u64().unwrap()).collect();
    assert_eq!(lines, [1, 300_000, 600_000]);
    assert_eq!(answer["searched"].as_u64().unwrap(), data.len() as u64);
    let offset = answer["matches"][1]["offset"].as_u64().unwrap() as usize;
    assert!(data[offset..].starts_with(b"xxx") && data[offset - 1] == b'\n', "offset is the line's start");
    assert_eq!(answer["matches"][1]["text"].as_str().unwrap().len(), 500, "long lines are cut in the answer");
    // Limits and bad input.
    let r = http_get(&server.url(), &format!("/api/v1/jobs/{job}/steps/big/search?q=line&limit=5"), Some(&token), None).unwrap();
    let answer: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(answer["matches"].as_array().unwrap().len(), 5);
    assert_eq!(answer["truncated"], true);
    let r = http_get(&server.url(), &format!("/api/v1/jobs/{job}/steps/big/search?q="), Some(&token), None).unwrap();
    assert_eq!(r.status, 400);
}
