//! The archive against a real S3 server (SeaweedFS): byte-exact round trips, an outage of the
//! S3 server in the middle of archiving that loses nothing, and a running step archived as it
//! grows that readers see as one stream.

// Test helpers fail the test by panicking, like the tests themselves.
#![allow(clippy::unwrap_used)]

mod common;


use common::*;
use futures_util::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt};


/// The step's segment objects in the bucket, concatenated in key order and decoded with zstd.
fn decoded_objects(s3: &S3Server, job: &str, step: &str) -> (usize, Vec<u8>) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = s3.client();
        let mut keys: Vec<_> = client.list(None).map_ok(|m| m.location).try_collect::<Vec<_>>().await.unwrap();
        keys.retain(|k| k.as_ref().contains(&format!("/{job}/{step}/")));
        keys.sort();
        let mut all = Vec::new();
        for k in &keys {
            let bytes = client.get(k).await.unwrap().bytes().await.unwrap();
            all.extend_from_slice(&zstd::stream::decode_all(&bytes[..]).unwrap());
        }
        (keys.len(), all)
    })
}

#[test]
fn s3_archive_round_trips_and_survives_an_outage() {
    let _one_at_a_time = S3_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let mut s3 = S3Server::start();
    let cfg = tempfile::NamedTempFile::new().unwrap();
    // Segments written when steps end (running steps: tests/archive_running.rs).
    std::fs::write(cfg.path(), "archive_segment_mib = 48\narchive_live_mib = 1024\n").unwrap();
    let mut env = s3.serve_env();
    env.push(("TAILRACE_CONFIG".into(), cfg.path().display().to_string()));
    let server = Server::start_with(env);
    let (job, token) = server.create_job();

    // Round trip: ≥ 100 MB through S3, multipart segments, ranged reads.
    let data = awkward_bytes(53, 104 << 20);
    stream_step(&server, &job, &token, "big", &data);
    wait_until("step archived to S3", 180, || archived(&server, &job, "big"));
    let (objects, decoded) = decoded_objects(&s3, &job, "big");
    assert_eq!(objects, 3);
    assert!(decoded == data, "zstd over the S3 objects differs from the original");
    let mut rng = 0x853c49e6748fea9bu64;
    for _ in 0..200 {
        rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1);
        let start = (rng >> 17) as usize % data.len();
        let end = (start + 1 + (rng >> 40) as usize % 300_000).min(data.len());
        let r = server.output(&job, "big", Some(&format!("bytes={start}-{}", end - 1)));
        assert!(r.status == 206 && r.body == data[start..end], "range {start}-{end} differs");
    }

    // Outage: S3 goes away right as the next step ends. Nothing is lost, readers are served from
    // the live tier meanwhile, and the backlog drains when S3 is back.
    let data2 = awkward_bytes(59, 24 << 20);
    s3.stop();
    stream_step(&server, &job, &token, "during-outage", &data2);
    wait_until("a failed archive attempt", 120, || metric(&server, "tailrace_archive_failures_total") > 0);
    assert!(!archived(&server, &job, "during-outage"));
    assert!(server.output(&job, "during-outage", None).body == data2, "live tier must serve while S3 is down");
    assert!(server.log().contains("archiving failed"), "the outage is not in the logs");
    s3.start_again();
    wait_until("backlog archived after S3 came back", 180, || archived(&server, &job, "during-outage"));
    assert!(server.output(&job, "during-outage", None).body == data2);
    let (objects, decoded) = decoded_objects(&s3, &job, "during-outage");
    assert_eq!(objects, 1);
    assert!(decoded == data2);
    // The first step is still readable after the S3 restart.
    assert!(server.output(&job, "big", Some("bytes=0-99")).body == data[..100]);

    // S3 dies in the middle of an upload: the attempt fails, nothing is recorded half-done, and
    // the retry after S3 is back archives the step exactly once.
    let failures = |server: &Server| metric(server, "tailrace_archive_failures_total");
    let before = failures(&server);
    let segments_before = metric(&server, "tailrace_archive_segments_total");
    let data3 = awkward_bytes(61, 96 << 20);
    stream_step(&server, &job, &token, "cut", &data3);
    // Stop S3 once the first of the step's three segments is uploaded: mid-archive.
    wait_until("first segment uploaded", 120, || metric(&server, "tailrace_archive_segments_total") > segments_before);
    let was_archived = archived(&server, &job, "cut");
    s3.stop();
    wait_until("the interrupted upload to fail", 120, || was_archived || failures(&server) > before);
    s3.start_again();
    wait_until("step archived after the interruption", 180, || archived(&server, &job, "cut"));
    assert!(server.output(&job, "cut", None).body == data3, "output differs after an interrupted upload");
    let (objects, decoded) = decoded_objects(&s3, &job, "cut");
    assert_eq!(objects, data3.len().div_ceil(48 << 20), "one object per 48 MiB segment, no leftovers");
    assert!(decoded == data3);
    eprintln!("archived before S3 was stopped: {was_archived}");
}

#[test]
fn s3_a_running_step_archived_as_it_grows_reads_as_one_stream() {
    let _one_at_a_time = S3_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let s3 = S3Server::start();
    let mut env = s3.serve_env();
    env.push(("TAILRACE_ARCHIVE_LIVE_MIB".into(), "5".into()));
    let server = Server::start_with(env);
    let (job, token) = server.create_job();
    let data = awkward_bytes(67, 24 << 20);
    let cut = (15 << 20) + 4321;
    let step = GatedStep::new(&[&data[..cut], &data[cut..]]);
    let agent = spawn_detached(step.agent(&server, &token, &job, "grow"));
    // S3 multipart parts are at least 5 MiB: three 5 MiB segments while the step waits.
    wait_until("running prefix archived to S3", 120, || metric(&server, "tailrace_archive_running_bytes_total") >= 15 << 20);
    assert!(server.step(&job, "grow").is_some_and(|s| s["status"] == "running"));
    let seam = 15usize << 20;
    let r = server.output(&job, "grow", Some(&format!("bytes={}-{}", seam - 100, seam + 100)));
    assert!(r.body == data[seam - 100..seam + 101], "GET across the S3/live seam differs");
    let tail = tail_from(&server, &job, "grow", 0);
    step.open(1);
    assert!(wait_output(agent, 120).status.success());
    let out = wait_output(tail, 180);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout == data, "tail from 0 across the S3/live seam differs");
    wait_until("step archived to S3", 180, || archived(&server, &job, "grow"));
    let (_, decoded) = decoded_objects(&s3, &job, "grow");
    assert!(decoded == data, "zstd over the S3 objects differs from the original");
    assert!(server.output(&job, "grow", None).body == data);
}
