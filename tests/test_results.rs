//! Test results end to end: `tailrace store-test-results` uploads real JUnit files (and JSON
//! records) from a directory to a running job; hostile files are refused with the reason while
//! the others are kept; the tests come back through Tailrace's and CircleCI's API shapes, paged;
//! tokens of other jobs and read tokens cannot upload.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/junit").join(name)
}

fn store(server: &Server, job: &str, token: &str, paths: &[&Path]) -> std::process::Output {
    Command::new(BIN)
        .args(["store-test-results", "--server", &server.url(), "--job", job])
        .args(paths)
        .env("TAILRACE_TOKEN", token)
        .output()
        .expect("store-test-results")
}

fn get_json(server: &Server, path: &str, token: &str) -> serde_json::Value {
    let r = http_get(&server.url(), path, Some(token), None).expect("GET");
    assert_eq!(r.status, 200, "{path}: {}", String::from_utf8_lossy(&r.body));
    serde_json::from_slice(&r.body).expect("json")
}

/// Every item of a paged listing, following `next_page_token`.
fn all_pages(server: &Server, path: &str, token: &str) -> (Vec<serde_json::Value>, usize) {
    let (mut items, mut pages, mut next) = (Vec::new(), 0, None::<String>);
    loop {
        let url = match &next {
            Some(t) => format!("{path}?page-token={t}"),
            None => path.to_string(),
        };
        let v = get_json(server, &url, token);
        items.extend(v["items"].as_array().expect("items").iter().cloned());
        pages += 1;
        match v["next_page_token"].as_str() {
            Some(t) => next = Some(t.to_string()),
            None => return (items, pages),
        }
    }
}

#[test]
fn results_uploaded_from_a_directory_answer_both_api_shapes() {
    let server = Server::start();
    let (job, token) = server.create_job();
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("nested/deeper");
    std::fs::create_dir_all(&sub).unwrap();
    std::fs::copy(fixture("quick-junit/crates__quick-junit-tests__tests__fixtures__basic_report.xml"), dir.path().join("nextest.xml")).unwrap();
    std::fs::copy(fixture("action-junit-report/test_results__maven_surefire_flaky__surefire-report.xml"), sub.join("TEST-surefire.xml")).unwrap();
    std::fs::write(
        sub.join("custom.json"),
        "{\"name\": \"a\", \"classname\": \"c\", \"result\": \"failure\", \"run_time\": 0.5, \"message\": \"boom\"}\n\
         {\"name\": \"a\", \"classname\": \"c\", \"result\": \"success\", \"run_time\": 0.25}\n\
         {\"name\": \"b\", \"result\": \"skipped\"}\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a result file").unwrap();
    let laughs = "<?xml version=\"1.0\"?><!DOCTYPE l [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;&a;\">]><testsuite name=\"&b;\"/>";
    std::fs::write(dir.path().join("laughs.xml"), laughs).unwrap();

    let out = store(&server, &job, &token, &[dir.path()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "a refused file makes the command fail; stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stderr.contains("laughs.xml") && stderr.contains("entity declarations are refused"), "{stderr}");
    assert!(stdout.contains("nextest.xml: 8 tests, 4 failed, 1 skipped, 1 flaky"), "{stdout}");
    assert!(stdout.contains("TEST-surefire.xml: 1 tests, 0 failed, 0 skipped, 1 flaky"), "{stdout}");
    assert!(stdout.contains("custom.json: 2 tests, 0 failed, 1 skipped, 1 flaky"), "{stdout}");
    assert!(!stdout.contains("notes.txt") && !stderr.contains("notes.txt"));

    // Tailrace's listing: every test once, with attempts and flakiness.
    let (items, _) = all_pages(&server, &format!("/api/v1/jobs/{job}/tests"), &server.admin_token());
    assert_eq!(items.len(), 11);
    let find = |name: &str| items.iter().find(|t| t["name"] == name).unwrap_or_else(|| panic!("{name} missing"));
    assert_eq!((find("testcase4")["attempts"].as_u64(), find("testcase4")["flaky"].as_bool()), (Some(3), Some(true)));
    assert_eq!(find("testcase5")["result"], "failure");
    assert_eq!(find("createWebhook")["flaky"], true);
    assert_eq!((find("a")["run_time"].as_f64(), find("a")["source"].as_str()), (Some(0.75), Some("custom.json")));

    // CircleCI's shape, by project slug and job number.
    let number = get_json(&server, &format!("/api/v1/jobs/{job}"), &server.admin_token())["number"].as_u64().unwrap();
    let v = get_json(&server, &format!("/api/v2/project/gh/acme/app/{number}/tests"), &server.admin_token());
    let circle = v["items"].as_array().unwrap();
    assert_eq!(circle.len(), 11);
    assert!(v["next_page_token"].is_null());
    let t1 = circle.iter().find(|t| t["name"] == "testcase1").unwrap();
    let keys: std::collections::BTreeSet<&str> = t1.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["classname", "file", "message", "name", "result", "run_time", "source"].into());
    assert_eq!((t1["result"].as_str(), t1["run_time"].as_f64(), t1["source"].as_str()), (Some("failure"), Some(4.242), Some("nextest.xml")));
    assert!(t1["message"].as_str().unwrap().starts_with("testcase1-message"));

    // The raw files are kept in the object store; the refused one is not.
    let raw: Vec<String> = walk_files(&server.data_dir().join("objects/test-results"));
    assert_eq!(raw.len(), 3, "{raw:?}");
    assert!(raw.iter().any(|p| p.ends_with("-nextest.xml")), "{raw:?}");

    // Retention of raw files: kept today, gone for a sweep eight days on; the tests stay listed.
    let cfg = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(cfg.path(), "retention_test_results_days = 7\n").unwrap();
    let gc = |days_on: u64, extra: &[&str]| {
        let as_of = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + days_on * 86_400;
        let out = Command::new(BIN)
            .args(["gc", "--data-dir", server.data_dir().to_str().unwrap(), "--config", cfg.path().to_str().unwrap()])
            .args(["--as-of", &as_of.to_string()])
            .args(extra)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    assert!(gc(0, &[]).contains("expired 0 test-result files"));
    assert!(gc(8, &["--dry-run"]).contains("would expire 3 test-result files"));
    assert_eq!(walk_files(&server.data_dir().join("objects/test-results")).len(), 3, "a dry run deletes nothing");
    assert!(gc(8, &[]).contains("expired 3 test-result files"));
    assert!(walk_files(&server.data_dir().join("objects/test-results")).is_empty());
    assert_eq!(all_pages(&server, &format!("/api/v1/jobs/{job}/tests"), &server.admin_token()).0.len(), 11);
}

fn walk_files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            out.extend(walk_files(&e.path()));
        } else {
            out.push(e.path().display().to_string());
        }
    }
    out
}

#[test]
fn large_files_page_and_tokens_are_scoped() {
    let server = Server::start();
    let (job, token) = server.create_job();
    let (other_job, other_token) = server.create_job();
    let huge = fixture("junit-plugin/src__test__resources__hudson__tasks__junit__junit-report-huge.xml");
    let out = store(&server, &job, &token, &[&huge]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("7580 tests"), "{}", String::from_utf8_lossy(&out.stdout));
    let number = get_json(&server, &format!("/api/v1/jobs/{job}"), &server.admin_token())["number"].as_u64().unwrap();
    let (items, pages) = all_pages(&server, &format!("/api/v2/project/gh/acme/app/{number}/tests"), &server.admin_token());
    assert_eq!(items.len(), 7580);
    assert_eq!(pages, 7580usize.div_ceil(250));
    let names: std::collections::HashSet<(String, String)> =
        items.iter().map(|t| (t["classname"].as_str().unwrap().to_string(), t["name"].as_str().unwrap().to_string())).collect();
    assert!(names.len() >= 7579, "pages repeat or skip tests: {} distinct", names.len());

    // Another job's token cannot upload here; a project read token cannot upload at all.
    let small = fixture("action-junit-report/test_results__maven_surefire_flaky__surefire-report.xml");
    let out = store(&server, &job, &other_token, &[&small]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot write job"), "{}", String::from_utf8_lossy(&out.stderr));
    let read = Command::new(BIN)
        .args(["token", "create", "--server", &server.url(), "--project", "gh/acme/app"])
        .env("TAILRACE_TOKEN", server.admin_token())
        .output()
        .unwrap();
    let read_token = String::from_utf8(read.stdout).unwrap().trim().to_string();
    assert_eq!(store(&server, &other_job, &read_token, &[&small]).status.code(), Some(1));
    let v = get_json(&server, &format!("/api/v1/jobs/{other_job}/tests"), &read_token);
    assert!(v["items"].as_array().unwrap().is_empty(), "nothing was recorded for the refused uploads");
    // Garbage gets a clear 422, not a 500.
    let out = {
        let f = tempfile::NamedTempFile::with_suffix(".xml").unwrap();
        std::fs::write(f.path(), "this is not xml").unwrap();
        store(&server, &other_job, &other_token, &[f.path()])
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("422") && stderr.contains("not an XML file"), "{stderr}");
}
