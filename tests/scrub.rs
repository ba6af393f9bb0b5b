//! `tailrace scrub`: a secret is removed from a job's stored output after the fact — archived
//! segments (including an occurrence split across two segments and one across two zstd frames)
//! and a running step's live bytes — by same-length replacement; nothing else changes, the
//! running step still ends verified, and the scrub is audited without the secret.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write as _;
use std::process::{Command, Stdio};

use common::*;

const SECRET: &[u8] = b"hunter2-SECRET-value";
const MIB: usize = 1 << 20;

fn mask(data: &mut [u8], at: usize) {
    data[at..at + SECRET.len()].fill(b'*');
}

fn scrub(server: &Server, job: &str, token: &str, secret: &[u8]) -> std::process::Output {
    let mut child = Command::new(BIN)
        .args(["scrub", "--server", &server.url(), "--job", job, "--secret", "-"])
        .env("TAILRACE_TOKEN", token)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&[secret, b"\n"].concat()).unwrap();
    child.wait_with_output().unwrap()
}

/// Every archived segment object of the server, decompressed.
fn archived_bytes(server: &Server) -> Vec<Vec<u8>> {
    fn walk(dir: &std::path::Path, out: &mut Vec<Vec<u8>>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "zst") {
                out.push(zstd::decode_all(&std::fs::read(&p).unwrap()[..]).unwrap());
            }
        }
    }
    let mut out = Vec::new();
    walk(&server.data_dir().join("objects").join("logs"), &mut out);
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn a_secret_is_scrubbed_from_archive_and_live_tier_and_nothing_else_changes() {
    let server = Server::start_with(vec![("TAILRACE_ARCHIVE_SEGMENT_MIB".into(), "1".into())]);
    let (job, token) = server.create_job();

    // An ended, archived step of 2.5 MiB in three segments, the secret at the start, across
    // a frame boundary, across the segment boundary, twice in a row, and at the very end.
    let mut data: Vec<u8> = awkward_bytes(7, 5 * MIB / 2).iter().map(|&b| if b == b'*' { b'+' } else { b }).collect();
    let n = SECRET.len();
    let at = [0, 256 * 1024 - 3, MIB - 7, MIB + 100, MIB + 100 + n, data.len() - n];
    for &a in &at {
        data[a..a + n].copy_from_slice(SECRET);
    }
    stream_step(&server, &job, &token, "build", &data);
    wait_until("step archived", 60, || archived(&server, &job, "build"));

    // A running step that printed the secret and waits.
    let gate = server.dir.path().join("gate");
    let script = format!("printf 'token=%s\\n' '{}'; while [ ! -e {} ]; do sleep 0.05; done; printf 'after\\n'", String::from_utf8_lossy(SECRET), gate.display());
    let running = Watched::spawn(agent(&server.url(), &token, &job, "deploy", &["--quiet"], &["sh", "-c", &script]));
    let printed = [b"token=".as_slice(), SECRET, b"\n"].concat();
    wait_until("running step holds the secret", 30, || server.step_len(&job, "deploy") == printed.len() as u64);

    // Only the admin may scrub; a too-short secret is refused.
    let out = scrub(&server, &job, &token, SECRET);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("admin"));
    let out = scrub(&server, &job, &server.admin_token(), b"abc");
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("shorter than 4"));

    let out = scrub(&server, &job, &server.admin_token(), SECRET);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("scrubbed 7 occurrences from 2 steps"), "{said}");
    assert!(said.contains("(3 archived segments rewritten, 1 in the live tier)"), "{said}");

    // The archived step reads back with exactly the occurrences masked, whole and by range.
    let mut expected = data.clone();
    for &a in &at {
        mask(&mut expected, a);
    }
    assert_eq!(server.output(&job, "build", None).body, expected);
    let r = server.output(&job, "build", Some(&format!("bytes={}-{}", MIB - 20, MIB + 20)));
    assert_eq!(r.body, &expected[MIB - 20..=MIB + 20]);
    // The running step too; then it ends verified (its checksum is of what the agent sent).
    let mut expected_live = printed.clone();
    mask(&mut expected_live, 6);
    assert_eq!(server.output(&job, "deploy", None).body, expected_live);
    std::fs::write(&gate, b"").unwrap();
    assert!(running.finish(60).status.success());
    wait_until("running step archived", 60, || archived(&server, &job, "deploy"));
    assert_eq!(server.output(&job, "deploy", None).body, [expected_live, b"after\n".to_vec()].concat());

    // No stored copy holds the secret: archived objects (old ones deleted) and staging files.
    let objects = archived_bytes(&server);
    assert!(objects.len() >= 4, "{} segment objects", objects.len());
    assert!(objects.iter().all(|o| !contains(o, SECRET)), "an archived object still holds the secret");
    for e in std::fs::read_dir(server.data_dir().join("live")).into_iter().flatten().flatten() {
        assert!(!contains(&std::fs::read(e.path()).unwrap_or_default(), SECRET), "{} holds the secret", e.path().display());
    }

    // Audited, without the secret; and the secret is not in the server's log.
    wait_until("scrub audited", 30, || server.audit().iter().any(|e| e["event"] == "scrub"));
    let event = server.audit().into_iter().find(|e| e["event"] == "scrub").unwrap();
    assert_eq!(event["job"], job.as_str());
    assert_eq!(event["occurrences"], 7);
    assert_eq!(event["secret_length"], SECRET.len());
    let audit_text: String = server.audit().iter().map(|e| e.to_string()).collect();
    let secret = String::from_utf8_lossy(SECRET);
    assert!(!audit_text.contains(&*secret) && !server.log().contains(&*secret));
}
