//! The web UI in a real browser (Debian's Chromium through playwright-core, `tests/ui/`): the
//! job page of a real `tailrace serve` signs in with a token (kept in an HttpOnly cookie, never
//! in a URL), shows a step's output live with ANSI colours as styled spans and a `\r` progress
//! bar collapsed to its last state, per-line timestamps from the time index on request, shows
//! new output that arrives while it is open, and
//! resumes after its connections are cut with no line missing or doubled; its tests tab lists
//! uploaded results failures first with flaky tests marked, its artifacts tab the uploaded
//! files with working links; the project's page lists its jobs and shows its flaky, most failed
//! and slowest tests; the start page lists the projects; axe-core finds no WCAG 2.1 A/AA
//! violation on any of the three pages. A 208 MB archived step opens at its end (the time to
//! first lines reported), scrolls up by fetched turns (the first by keyboard), opens at a linked
//! line, at the slider's middle, at its start and end, with every line on screen numbered right
//! and a bounded window held (its memory measured); search finds lines on the server and opens
//! them; a running step printing 20,000 lines is followed to its end.

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
    let created = Command::new(BIN)
        .args(["job", "create", "--project", "gh/acme/app", "--commit", "c0ffee", "--branch", "main", "--workflow", "build-and-test", "--json", "--server", &server.url()])
        .env("TAILRACE_TOKEN", server.admin_token())
        .output()
        .unwrap();
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let created: Value = serde_json::from_slice(&created.stdout).unwrap();
    let (job, job_token) = (created["job_id"].as_str().unwrap().to_string(), created["token"].as_str().unwrap().to_string());
    upload_results_and_artifact(&server, &job, &job_token);
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
    // Timestamps from the step's time index (its first point is at byte 0), one per line.
    assert!(shown["timePoints"].as_u64().unwrap() >= 1);
    let stamps = shown["stamps"].as_array().unwrap();
    assert_eq!(stamps.len(), lines.len());
    assert!(stamps.iter().all(|t| t.as_str().is_some_and(|t| t.len() == 8 && t.as_bytes()[2] == b':')), "{stamps:?}");
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

    // Tests: failures first with their message; the test that failed and then passed on the
    // same commit is marked flaky.
    let tests = shown["tests"].as_array().unwrap();
    let row = |i: usize| (tests[i]["result"].as_str().unwrap(), tests[i]["name"].as_str().unwrap(), tests[i]["flaky"].as_bool().unwrap());
    assert_eq!(tests.len(), 4, "{tests:?}");
    assert_eq!(row(0), ("failure", "pkg.Cart › adds items", true));
    assert!(tests[0]["message"].as_str().unwrap().contains("expected 2 items, got 1"));
    assert_eq!(row(1).0, "success");
    assert!(tests.iter().filter(|t| t["flaky"] == true).count() == 2, "both runs of the flaky test are marked: {tests:?}");
    assert_eq!(shown["testsSummary"], "4 tests, 1 failed");
    // The project's insights page for the job's workflow: the flaky test, the most failed and
    // the slowest tests.
    let insights = &shown["insights"];
    assert_eq!(insights["url"], "/ui/projects/gh/acme/app?workflow=build-and-test");
    assert_eq!(insights["flaky"][0][0], "pkg.Cart › adds items", "{insights}");
    assert_eq!(insights["flaky"][0][1], "1");
    assert_eq!(insights["failed"][0][0], "pkg.Cart › adds items");
    assert_eq!(insights["failed"][0][1], "1");
    assert_eq!(insights["failed"][0][2], "2");
    assert_eq!(insights["slowest"][0][0], "pkg.Cart › adds items", "the 12 ms run makes it the slowest");
    // The project's page lists its jobs (this one, ended) linked to their pages; the start page
    // lists the project; following both links leads back to this job.
    assert_eq!(insights["jobs"].as_array().unwrap().len(), 1, "{insights}");
    assert_eq!(insights["jobs"][0][0], "#1");
    assert_eq!(insights["jobs"][0][1], "success");
    assert_eq!(insights["jobs"][0][2], "build-and-test");
    assert_eq!(insights["jobs"][0][3], "main");
    assert_eq!(insights["jobs"][0][4], "c0ffee");
    assert_eq!(insights["jobLinks"][0], format!("/ui/jobs/{job}"));
    assert_eq!(shown["projects"], serde_json::json!([["gh/acme/app", "/ui/projects/gh/acme/app"]]));
    assert_eq!(shown["backToJob"], format!("/ui/jobs/{job}"));
    // Accessibility: axe-core finds no WCAG 2.1 A/AA violation (contrast, names, roles) on the
    // job page, the project's page or the start page.
    for page in ["job", "project", "home"] {
        assert_eq!(shown["a11y"][page]["violations"], serde_json::json!([]), "{page} page: {:#}", shown["a11y"][page]);
        let passed = shown["a11y"][page]["passed"].as_array().unwrap();
        assert!(passed.iter().any(|p| p == "color-contrast"), "{page} page: the contrast rule did not run: {passed:?}");
    }
    // Artifacts: listed with their size, and the link downloads the file.
    assert_eq!(shown["artifacts"][0]["path"], "reports/coverage.txt");
    assert_eq!(shown["artifacts"][0]["size"], "24 B");
    assert_eq!(shown["artifactBody"], "coverage: 87.5% of lines");
    let raw = [first.as_slice(), second, third].concat();
    assert_eq!(shown["raw"].as_str().unwrap().as_bytes(), raw.as_slice(), "the raw-output link serves the bytes as printed");
    eprintln!("new line on screen {} ms after it was printed", shown["newLineMs"]);
}

/// Two uploads of JUnit results (a test fails, then passes on a rerun of the same commit) and
/// one artifact, through the CLI with the job's token.
fn upload_results_and_artifact(server: &Server, job: &str, token: &str) {
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str, failing: bool| {
        let case = if failing {
            r#"<testcase classname="pkg.Cart" name="adds items" time="0.012"><failure message="expected 2 items, got 1">expected 2 items, got 1</failure></testcase>"#
        } else {
            r#"<testcase classname="pkg.Cart" name="adds items" time="0.010"/>"#
        };
        let xml = format!(r#"<testsuite name="pkg" tests="2"><testcase classname="pkg.Cart" name="totals" time="0.003"/>{case}</testsuite>"#);
        let path = dir.path().join(name);
        std::fs::write(&path, xml).unwrap();
        let out = Command::new(BIN).args(["store-test-results", "--server", &server.url(), "--job", job]).arg(&path).env("TAILRACE_TOKEN", token).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    run("first.xml", true);
    run("rerun.xml", false);
    let reports = dir.path().join("reports");
    std::fs::create_dir(&reports).unwrap();
    std::fs::write(reports.join("coverage.txt"), "coverage: 87.5% of lines").unwrap();
    let out = Command::new(BIN)
        .current_dir(dir.path())
        .args(["store-artifacts", "reports", "--server", &server.url(), "--job", job])
        .env("TAILRACE_TOKEN", token)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Lines of the huge step: `line N` and a pad of 0–63 bytes, ~45 bytes on average (208 MB).
const HUGE_LINES: u64 = 4_600_000;
const PAD: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_";

#[test]
fn a_huge_archived_step_opens_at_its_end_and_scrolls_anywhere() {
    let ui = Path::new(ROOT).join("tests/ui");
    let server = Server::start();
    let (job, token) = server.create_job();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("huge.txt");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
    for i in 1..=HUGE_LINES {
        writeln!(out, "line {i} {}", &PAD[..(i % 64) as usize]).unwrap();
    }
    out.into_inner().unwrap().sync_all().unwrap();
    let size = std::fs::metadata(&file).unwrap().len();
    assert!(size >= 200_000_000, "{size} bytes");
    let path = file.to_str().unwrap();
    let began = std::time::Instant::now();
    let out = agent(&server.url(), &token, &job, "huge", &["--quiet"], &["cat", path]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = agent(&server.url(), &token, &job, "small", &["--quiet"], &["seq", "-f", "line %.0f", "1", "30000"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_until("the huge step archived", 300, || archived(&server, &job, "huge"));
    eprintln!("{size} bytes streamed and archived in {:?}", began.elapsed());
    // A step that prints 1,000 lines, then (when the browser opens the gate) 20,000 more while
    // the page follows it.
    let lines = |from: u64, to: u64| (from..=to).map(|n| format!("line {n} {}\n", &PAD[..(n % 64) as usize])).collect::<String>();
    let (first, rest) = (lines(1, 1_000), lines(1_001, 21_000));
    let live = GatedStep::new(&[first.as_bytes(), rest.as_bytes()]);
    let live_agent = spawn_detached(live.agent(&server, &token, &job, "live"));
    wait_until("the live step's first part stored", 60, || server.step_len(&job, "live") >= first.len() as u64);

    let linked = 2_500_000u64;
    let shots = Path::new(ROOT).join("target/ui-screenshots");
    let out = Command::new("node")
        .arg(ui.join("huge_step.mjs"))
        .args([&server.url(), &server.admin_token(), &job, "huge", "small", "live", &linked.to_string()])
        .arg(&shots)
        .arg(live.gate(1))
        .current_dir(&ui)
        .output()
        .unwrap();
    assert!(out.status.success(), "browser run failed: {}", String::from_utf8_lossy(&out.stderr));
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert!(wait_output(live_agent, 60).status.success());
    let screen = |stop: &str| -> Vec<(u64, String)> {
        shown[stop]["onScreen"].as_array().unwrap().iter().map(|l| (l[0].as_u64().unwrap(), l[1].as_str().unwrap().to_string())).collect()
    };
    let text = |n: u64| format!("line {n} {}", &PAD[..(n % 64) as usize]);
    // Every line on screen, at every stop, is the line its number says.
    for stop in ["atEnd", "scrolledUp", "linked", "scrolledDown", "middle", "start", "end", "live"] {
        let lines = screen(stop);
        assert!(!lines.is_empty(), "{stop}: nothing on screen");
        for (n, t) in &lines {
            assert_eq!(*t, text(*n), "{stop}: line {n}");
        }
        let held = shown[stop]["held"].as_u64().unwrap();
        assert!(held <= 11_000, "{stop}: the page holds {held} lines");
    }
    // Opened at the end, following; scrolling up leaves following and fetches earlier lines.
    assert_eq!(screen("atEnd").last().unwrap().0, HUGE_LINES);
    assert_eq!(shown["atEnd"]["following"], true);
    assert_eq!(shown["scrolledUp"]["following"], false);
    assert!(screen("scrolledUp")[0].0 < HUGE_LINES - 4 * 2_000, "four turns up reach earlier lines: {:?}", screen("scrolledUp")[0]);
    // The linked line is on screen; the slider's middle is the middle (by bytes, so near it).
    assert!(screen("linked").iter().any(|(n, _)| *n == linked));
    let mid = screen("middle")[0].0 as f64 / HUGE_LINES as f64;
    assert!((0.45..0.55).contains(&mid), "the middle of the slider showed line {}", screen("middle")[0].0);
    assert_eq!(screen("start")[0].0, 1);
    assert_eq!(screen("end").last().unwrap().0, HUGE_LINES);
    // The live step: followed to its last line as it printed 20,000 more, the oldest dropped.
    assert_eq!(screen("live").last().unwrap().0, 21_000);
    assert_eq!(shown["live"]["following"], true);
    assert!(shown["live"]["held"].as_u64().unwrap() >= 10_000, "{}", shown["live"]["held"]);
    for stop in ["scrolledUp", "scrolledDown", "middle", "end", "live"] {
        assert_eq!(shown[stop]["numbered"], true, "{stop}: the lines held are numbered without gaps");
    }
    assert_eq!(shown["searchResults"], serde_json::json!([(linked - 1).to_string()]));
    assert_eq!(shown["errors"].as_array().unwrap().len(), 0);
    // Memory: the page holds a bounded window, so a 200 MB step costs it about what a small one
    // does. Reported (docs/PERFORMANCE.md), with a bound far below the step's size.
    let heap = |m: &str| shown[m]["jsHeapUsedMB"].as_f64().unwrap();
    assert!(heap("memoryHuge") < 100.0, "JS heap {} MB on the huge step", heap("memoryHuge"));
    let rss = |m: &str| shown[m]["rendererRssMB"].as_f64().unwrap();
    assert!(rss("memoryHuge") < 400.0, "the page's renderer holds {} MB on a {size}-byte step", rss("memoryHuge"));
    eprintln!(
        "huge step ({size} bytes, {HUGE_LINES} lines): first lines {} ms after signing in, {} ms after a reload; \
         renderer {} MB resident, JS heap {} MB, {} DOM nodes; small step ({} lines held): renderer {} MB, JS heap {} MB, {} DOM nodes",
        shown["signInToFirstLinesMs"],
        shown["reloadToFirstLinesMs"],
        rss("memoryHuge"),
        heap("memoryHuge"),
        shown["memoryHuge"]["nodes"],
        shown["small"]["held"],
        rss("memorySmall"),
        heap("memorySmall"),
        shown["memorySmall"]["nodes"]
    );
}
