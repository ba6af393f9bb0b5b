//! Incremental archiving: a running step's output moves to the archive by size and by age and
//! leaves the live tier while the step still runs; readers (ranged GET, tails from any offset)
//! see one stream across the archive→live seam; a `kill -9` after part of a running step was
//! archived loses nothing, and the step still verifies against the agent's checksum.

mod common;

use std::os::unix::fs::MetadataExt as _;
use std::path::PathBuf;
use std::process::Command;

use common::*;

const MIB: usize = 1 << 20;

fn running(server: &Server, job: &str, step: &str) -> bool {
    server.step(job, step).is_some_and(|s| s["status"] == "running")
}

fn live_log(server: &Server, job: &str, step: &str) -> PathBuf {
    server.data_dir().join(format!("live/{job}/{step}.log"))
}

fn zstd_dc(files: &[PathBuf]) -> Vec<u8> {
    let out = Command::new("zstd").arg("-dc").args(files).output().expect("zstd CLI (apt-get install zstd)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

#[test]
fn a_running_step_moves_to_the_archive_by_size_and_readers_see_one_stream() {
    let server = Server::start_with(vec![("TAILRACE_ARCHIVE_LIVE_MIB".into(), "1".into())]);
    let (job, token) = server.create_job();
    let data = awkward_bytes(71, 14 * MIB + 777);
    let cut = 6 * MIB + 1000;
    let step = GatedStep::new(&[&data[..cut], &data[cut..]]);
    let agent = spawn_detached(step.agent(&server, &token, &job, "s"));

    // The first 6 MiB are archived in 1 MiB segments while the step waits at the gate.
    wait_until("running prefix archived", 60, || metric(&server, "tailrace_archive_running_bytes_total") >= 6 * MIB as u64);
    assert!(running(&server, &job, "s"), "the step must still be running");
    let log = std::fs::metadata(live_log(&server, &job, "s")).unwrap();
    assert_eq!(log.len(), cut as u64, "the staging file keeps every offset");
    assert!(log.blocks() * 512 < 2 * MIB as u64, "the archived prefix still takes {} bytes of disk", log.blocks() * 512);
    assert_eq!(segment_files(&server, &job, "s").len(), 6);

    // Readers of the running step cross the archive→live seam at 6 MiB.
    let r = server.output(&job, "s", Some(&format!("bytes=0-{}", cut - 1)));
    assert_eq!(r.status, 206);
    assert!(r.body == data[..cut], "GET across the seam differs");
    let seam = 6 * MIB;
    let r = server.output(&job, "s", Some(&format!("bytes={}-{}", seam - 5, seam + 5)));
    assert_eq!(r.body, data[seam - 5..seam + 6]);
    let lines = String::from_utf8_lossy(&data[..cut]).matches('\n').count();
    assert!(lines > 10);
    let from_zero = tail_from(&server, &job, "s", 0);
    let from_mid = tail_from(&server, &job, "s", 3 * MIB as u64 + 5);

    step.open(1);
    let out = wait_output(agent, 120);
    assert!(out.status.success());
    wait_until("step archived", 120, || archived(&server, &job, "s"));
    // The archived mark is committed first, then the live bytes are released.
    wait_until("live bytes released", 60, || !live_log(&server, &job, "s").exists());

    for (tail, from) in [(from_zero, 0), (from_mid, 3 * MIB + 5)] {
        let out = wait_output(tail, 120);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(out.stdout == data[from..], "tail from {from} differs ({} bytes, want {})", out.stdout.len(), data.len() - from);
    }
    assert!(server.output(&job, "s", None).body == data, "GET of the archived step differs");
    let segments = segment_files(&server, &job, "s");
    assert!(segments.len() > 6, "{segments:?}");
    assert!(zstd_dc(&segments) == data, "zstd -dc over the segments differs from the original");
    assert_eq!(metric(&server, "tailrace_archive_raw_bytes_total"), data.len() as u64, "each byte archived exactly once");
}

#[test]
fn a_quiet_running_step_moves_to_the_archive_by_age() {
    let server = Server::start_with(vec![
        ("TAILRACE_ARCHIVE_LIVE_AGE_SECS".into(), "1".into()),
        ("TAILRACE_ARCHIVE_SWEEP_SECS".into(), "1".into()),
    ]);
    let (job, token) = server.create_job();
    let data = awkward_bytes(72, 300_000);
    let cut = 100_000;
    let step = GatedStep::new(&[&data[..cut], &data[cut..]]);
    let agent = spawn_detached(step.agent(&server, &token, &job, "q"));
    // Far below the size threshold (64 MiB), but older than a second.
    wait_until("old output archived", 60, || metric(&server, "tailrace_archive_running_bytes_total") == cut as u64);
    assert!(running(&server, &job, "q"));
    assert!(server.output(&job, "q", Some(&format!("bytes=0-{}", cut - 1))).body == data[..cut]);
    step.open(1);
    assert!(wait_output(agent, 60).status.success());
    wait_until("step archived", 60, || archived(&server, &job, "q"));
    assert!(server.output(&job, "q", None).body == data);
    assert!(zstd_dc(&segment_files(&server, &job, "q")) == data);
}

#[test]
fn kill_9_after_a_running_step_was_partly_archived_loses_nothing() {
    let mut server = Server::start_with(vec![("TAILRACE_ARCHIVE_LIVE_MIB".into(), "1".into())]);
    let (job, token) = server.create_job();
    let data = awkward_bytes(73, 9 * MIB + 12345);
    let cut = 4 * MIB + 99;
    let step = GatedStep::new(&[&data[..cut], &data[cut..]]);
    let agent = Watched::spawn(step.agent(&server, &token, &job, "k"));
    wait_until("running prefix archived", 60, || metric(&server, "tailrace_archive_running_bytes_total") >= 4 * MIB as u64);

    server.kill9();
    server.restart();
    // The restarted live tier no longer has the hash of the archived prefix; END is verified
    // against the archive's bytes plus the live ones.
    step.open(1);
    let out = agent.finish(180);
    assert!(out.status.success(), "agent: {}", String::from_utf8_lossy(&out.stderr));
    wait_until("step archived after restart", 120, || archived(&server, &job, "k"));
    assert!(server.output(&job, "k", None).body == data, "output differs after the restart");
    assert!(zstd_dc(&segment_files(&server, &job, "k")) == data, "segments differ after the restart");
}
