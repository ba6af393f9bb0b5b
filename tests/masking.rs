//! Secret masking end to end: `tailrace run --mask-env/--mask-file` and `::add-mask::` lines
//! keep secrets (raw, encoded, split across writes) out of what reaches the server and out of
//! the agent's own echo, and leave the rest of the output unchanged.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Stdio;

use common::*;

#[test]
fn secrets_never_reach_the_server_or_the_echo() {
    let server = Server::start();
    let (job, token) = server.create_job();
    let tmp = tempfile::tempdir().unwrap();
    let secret_file = tmp.path().join("secrets");
    std::fs::write(&secret_file, "file-secret-42\n").unwrap();
    // The test opens each gate once the server shows the output before it: so the split secret
    // arrives in two chunks, and stderr's line comes after all of stdout in the stored stream.
    let (gate1, gate2) = (tmp.path().join("gate1"), tmp.path().join("gate2"));
    let script = format!(
        r#"
        printf 'env=%s\n' "$DEPLOY_KEY"
        printf 'b64=%s\n' "$(printf 'user:%s' "$DEPLOY_KEY" | base64)"
        printf 'split=hunt'; {}; printf 'er-two-9!\n'
        printf 'url=hunter-two-9%%21 file=file-secret-42\n'
        printf '::add-mask::late-secret-77\n'
        printf 'late=late-secret-77 short=abc\n'
        {}; echo done >&2
    "#,
        gate_wait(&gate1),
        gate_wait(&gate2)
    );
    let child = agent(&server.url(), &token, &job, "mask", &["--mask-env", "DEPLOY_KEY", "--mask-file", secret_file.to_str().unwrap()], &["sh", "-c", &script])
        .env("DEPLOY_KEY", "hunter-two-9!")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stored_has = |s: &str| String::from_utf8_lossy(&server.output(&job, "mask", None).body).contains(s);
    wait_until("output up to the split secret", 30, || server.step_len(&job, "mask") > 0 && stored_has("split="));
    std::fs::write(&gate1, b"").unwrap();
    wait_until("stdout complete", 30, || stored_has("short=abc\n"));
    std::fs::write(&gate2, b"").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stored = server.output(&job, "mask", None).body;
    let stored = String::from_utf8(stored).unwrap();
    let echoed = String::from_utf8(out.stdout).unwrap();
    for text in [&stored, &echoed] {
        for s in ["hunter-two-9", "hunter", "file-secret-42", "late-secret-77", "add-mask"] {
            assert!(!text.contains(s), "{s:?} leaked into {text:?}");
        }
        assert!(text.contains("env=***\n"), "{text}");
        assert!(text.contains("split=***\n"), "{text}");
        assert!(text.contains("url=*** file=***\n"), "{text}");
        assert!(text.contains("late=*** short=abc\n"), "{text}");
        assert!(text.contains("b64=dXNlcjp"), "the base64 around the secret stays: {text}");
    }
    assert!(stored.contains("done\n"), "stderr is still delivered: {stored}");
}

#[test]
fn a_missing_mask_variable_refuses_to_run() {
    let server = Server::start();
    let (job, token) = server.create_job();
    let out = agent(&server.url(), &token, &job, "m2", &["--mask-env", "NO_SUCH_VAR_FOR_TAILRACE"], &["echo", "hi"])
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("NO_SUCH_VAR_FOR_TAILRACE"));
}
