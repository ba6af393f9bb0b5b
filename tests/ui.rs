//! The web UI in a real browser (Debian's Chromium through playwright-core, `tests/ui/`): the
//! job page of a real `tailrace serve` signs in with a token (kept in an HttpOnly cookie, never
//! in a URL), shows a step's output live with ANSI colours as styled spans and a `\r` progress
//! bar collapsed to its last state, shows new output that arrives while it is open, and
//! resumes after its connections are cut with no line missing or doubled.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use common::*;
use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

#[test]
fn the_job_page_follows_a_step_live_with_colours_and_progress_bars() {
    let ui = Path::new(ROOT).join("tests/ui");
    assert!(ui.join("node_modules/playwright-core").exists(), "run `npm ci` in tests/ui (scripts/test.sh does)");
    let server = Server::start();
    let (job, job_token) = server.create_job();
    let read = Command::new(BIN)
        .args(["token", "create", "--project", "gh/acme/app", "--server", &server.url()])
        .env("TAILRACE_TOKEN", server.admin_token())
        .output()
        .unwrap();
    assert!(read.status.success(), "{}", String::from_utf8_lossy(&read.stderr));
    let read_token = String::from_utf8(read.stdout).unwrap().trim().to_string();

    // What a build prints: colours, a progress bar redrawn with \r and erased with ESC[K, then
    // (when the browser lets it out) more output.
    let mut first = Vec::new();
    first.extend_from_slice(b"\x1b[1mCompiling\x1b[0m tailrace v0.1.0\n");
    for pct in [0, 25, 50, 75, 100] {
        first.extend_from_slice(format!("\rDownloading [{:<10}] {pct:>3}%\x1b[K", "#".repeat(pct / 10)).as_bytes());
    }
    first.extend_from_slice(b"\n\x1b[31mFAILED\x1b[0m tests::flaky (\x1b[38;5;208mretrying\x1b[0m)\n");
    first.extend_from_slice("caf\u{e9} \u{2713} first part done\n".as_bytes());
    let second = b"\x1b[32mok\x1b[0m second part arrived\n";
    let third = b"third part after the cut\n";
    let step = GatedStep::new(&[&first, second, third]);
    let cmd: Vec<String> = step.cmd();
    let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
    let agent = spawn_detached(agent(&server.url(), &job_token, &job, "build", &["--quiet", "--name", "cargo build"], &cmd));
    wait_until("first part stored", 30, || server.step_len(&job, "build") >= first.len() as u64);

    // The browser reaches the server through a TCP proxy that the test can cut.
    let proxy = TcpProxy::start(([127, 0, 0, 1], server.http).into());
    let shots = Path::new(ROOT).join("target/ui-screenshots");
    let mut node = Command::new("node")
        .arg(ui.join("job_page.mjs"))
        .args([&format!("http://127.0.0.1:{}", proxy.port), &read_token, &job, "build"])
        .args([step.gate(1), step.gate(2), shots.clone()])
        .current_dir(&ui)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(node.stdout.take().unwrap());
    let mut line = String::new();
    while line.trim() != "CUT" {
        line.clear();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "the browser script ended before the cut");
    }
    assert!(proxy.cut_all() > 0, "the page had no connection to cut");
    node.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let mut report = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut report).unwrap();
    let out = node.wait_with_output().unwrap();
    assert!(out.status.success(), "browser run failed: {}", String::from_utf8_lossy(&out.stderr));
    assert!(wait_output(agent, 60).status.success());
    let shown: Value = serde_json::from_str(&report).unwrap_or_else(|e| panic!("{e}: {report}"));
    eprintln!("page: {shown:#}");

    let lines: Vec<&str> = shown["lines"].as_array().unwrap().iter().map(|l| l.as_str().unwrap()).collect();
    assert_eq!(
        lines,
        [
            "Compiling tailrace v0.1.0",
            "Downloading [##########] 100%",
            "FAILED tests::flaky (retrying)",
            "caf\u{e9} \u{2713} first part done",
            "ok second part arrived",
            "third part after the cut",
        ],
        "the progress bar collapses to its last state and every line is there once, across the cut"
    );
    assert!(shown["websockets"].as_u64().unwrap() >= 2, "the page did not reconnect after the cut");
    let spans: Vec<(String, String)> =
        shown["spans"].as_array().unwrap().iter().map(|s| (s["cls"].as_str().unwrap().to_string(), s["text"].as_str().unwrap().to_string())).collect();
    for (cls, text) in [("b", "Compiling"), ("fg1", "FAILED"), ("fg11", "retrying"), ("fg2", "ok")] {
        assert!(spans.iter().any(|(c, t)| c == cls && t == text), "no <span class={cls}>{text}</span> in {spans:?}");
    }
    assert!(!spans.iter().any(|(_, t)| t.contains('\u{1b}') || t.contains("[0m")), "escape codes leaked into the text");
    assert_eq!(shown["anchors"][0], "#build-L1", "line numbers link to their line");
    assert_eq!(shown["offset"].as_u64().unwrap(), (first.len() + second.len() + third.len()) as u64);
    assert_eq!(shown["ended"], "exited", "the end message arrived");
    assert_eq!(shown["linesBeforeRelease"].as_u64().unwrap(), 4, "the page showed the first part before the second existed");
    // The token: an HttpOnly cookie the page's script cannot read, and in no URL requested.
    assert_eq!(shown["cookieHttpOnly"], true);
    assert_eq!(shown["cookieVisibleToScript"], false);
    assert_eq!(shown["tokenInUrls"], 0);
    assert_eq!(shown["errors"].as_array().unwrap().len(), 0, "script errors on the page");
    assert_eq!(shown["loginVisible"], false, "the sign-in form is gone once signed in");
    assert!(shown["steps"][0].as_str().unwrap().contains("cargo build"), "{}", shown["steps"]);
    assert!(shots.join("job-page.png").exists());
    eprintln!("new line on screen {} ms after it was printed", shown["newLineMs"]);
}
