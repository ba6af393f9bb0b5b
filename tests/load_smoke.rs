//! The load generator's smoke case against a real `tailrace serve`, over QUIC and HTTP/2: the
//! instrument runs end to end and its byte-exact checks (server END, every tailer, the archive)
//! pass. Not a timed test: only what was delivered is asserted.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use tailrace_load::{run, RunOptions, Scenario, Target};

fn smoke(transport: &str) {
    let mut scenario = Scenario::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("load-tests/cases/smoke.toml")).unwrap();
    scenario.transport = transport.into();
    let target = Target::spawn(Path::new(env!("CARGO_BIN_EXE_tailrace")), None, None).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let report = rt.block_on(run(scenario.clone(), &target, RunOptions::default())).unwrap();
    let table = report.table();
    assert!(report.passed(), "{table}\n{}", target.server_log());
    assert_eq!(report.bytes, scenario.total_bytes(), "{table}");
    assert_eq!(report.verification.steps_verified, 8, "{table}");
    assert_eq!(report.verification.tailers_byte_exact, 8 + 3, "{table}");
    assert_eq!(report.verification.archive_byte_exact, 8, "{table}");
    assert_eq!(report.tail_bytes, report.bytes + 3 * scenario.step_bytes, "every tailer got its step once: {table}");
    assert_eq!(report.latency.samples, report.writes + 3 * (scenario.step_bytes / scenario.write_bytes), "{table}");
    let server = report.server.as_ref().unwrap();
    assert!(server.cpu_seconds_total > 0.0 && server.peak_rss_mib > 1.0, "{table}");
    assert!(table.contains("PASS"));
}

#[test]
fn smoke_case_over_quic_verifies_every_byte() {
    smoke("quic");
}

#[test]
fn smoke_case_over_http2_verifies_every_byte() {
    smoke("http2");
}
