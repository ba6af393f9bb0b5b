//! The scope table of README's "HTTP API", enforced endpoint by endpoint: each endpoint is called
//! with every kind of token — admin, the job's own, another job's, the project's read token,
//! another project's, forged, expired, revoked, none — and must answer 2xx exactly to the tokens its
//! row allows, 401 to invalid ones and 403/404 to valid tokens without the scope. Then no
//! token appears in the server's debug log or the agent's output.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Stdio};

use common::*;
use tailrace_protocol::token::{Claims, KeySet, Keyring, Scope};

fn cli_json(server: &Server, args: &[&str]) -> serde_json::Value {
    let out = Command::new(BIN).args(args).args(["--server", &server.url(), "--json"]).env("TAILRACE_TOKEN", server.admin_token()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn read_token(server: &Server, project: &str) -> String {
    let out = Command::new(BIN)
        .args(["token", "create", "--server", &server.url(), "--project", project])
        .env("TAILRACE_TOKEN", server.admin_token())
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Who {
    Admin,
    OwnJob,
    OtherJob,
    ProjectRead,
    OtherProjectRead,
    Forged,
    Expired,
    Revoked,
    Nobody,
}
use Who::*;
const EVERYONE: [Who; 9] = [Admin, OwnJob, OtherJob, ProjectRead, OtherProjectRead, Forged, Expired, Revoked, Nobody];
const READ: &[Who] = &[Admin, OwnJob, ProjectRead];
const PROJECT_READ: &[Who] = &[Admin, ProjectRead];
const JOB_WRITE: &[Who] = &[Admin, OwnJob];
const ADMIN: &[Who] = &[Admin];
const ANY_VALID: &[Who] = &[Admin, OwnJob, OtherJob, ProjectRead, OtherProjectRead];
const OF_THE_PROJECT: &[Who] = &[Admin, OwnJob, OtherJob, ProjectRead];

#[test]
fn every_endpoint_answers_exactly_the_scopes_of_its_row_and_no_token_is_logged() {
    let server = Server::start_with(vec![("TAILRACE_LOG".into(), "debug".into()), ("TAILRACE_RATE_LIMIT_RPS".into(), "0".into())]);
    let a = cli_json(&server, &["job", "create", "--project", "gh/acme/app", "--workflow", "build"]);
    let (job, own) = (a["job_id"].as_str().unwrap().to_string(), a["token"].as_str().unwrap().to_string());
    let number = a["job_number"].as_u64().unwrap();
    let (_, other_job) = server.create_job();
    let other = cli_json(&server, &["job", "create", "--project", "gh/other/lib"]);
    let other_project_job = other["job_id"].as_str().unwrap().to_string();
    let project_read = read_token(&server, "gh/acme/app");
    let other_project_read = read_token(&server, "gh/other/lib");
    let keys: KeySet = serde_json::from_slice(&std::fs::read(server.data_dir().join("signing-keys.json")).unwrap()).unwrap();
    let keys = Keyring::new(keys).unwrap();
    let expired = keys.sign(&Claims::new(Scope::Job { job: job.clone(), project: "gh/acme/app".into() }, Some(1)));
    // An admin token signed with another key: the shape is right, the signature is not.
    let forged = Keyring::new(KeySet::single([7; 32])).unwrap().sign(&Claims::new(Scope::Admin, None));
    // A read token of the project, revoked by its holder.
    let revoked = read_token(&server, "gh/acme/app");
    let body = serde_json::json!({ "token": revoked }).to_string();
    let r = http_call(&server.url(), "POST", "/api/v1/tokens/revoke", None, &[("content-type", "application/json")], body.as_bytes()).unwrap();
    assert_eq!(r.status, 401, "revoking needs a token to authenticate with");
    let r = http_call(&server.url(), "POST", "/api/v1/tokens/revoke", Some(&revoked), &[("content-type", "application/json")], body.as_bytes()).unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let admin = server.admin_token();
    let token = |w: Who| -> Option<String> {
        match w {
            Admin => Some(admin.clone()),
            OwnJob => Some(own.clone()),
            OtherJob => Some(other_job.clone()),
            ProjectRead => Some(project_read.clone()),
            OtherProjectRead => Some(other_project_read.clone()),
            Forged => Some(forged.clone()),
            Expired => Some(expired.clone()),
            Revoked => Some(revoked.clone()),
            Nobody => None,
        }
    };

    // Something to read: a step, a test result, an artifact.
    let run = agent(&server.url(), &own, &job, "s", &["--quiet"], &["echo", "hello"]).stderr(Stdio::piped()).output().unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let junit = br#"<testsuite name="t"><testcase classname="c" name="n" time="0.1"/></testsuite>"#;
    let r = http_call(&server.url(), "POST", &format!("/api/v1/jobs/{job}/tests"), Some(&own), &[("content-type", "application/xml")], junit).unwrap();
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let sha = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"; // sha256("hello")
    let put = |path: &str, t: Option<&str>| {
        http_call(&server.url(), "PUT", &format!("/api/v1/jobs/{job}/artifacts/{path}"), t, &[("upload-length", "5"), ("x-tailrace-sha256", sha)], b"hello").unwrap()
    };
    assert_eq!(put("f.txt", Some(&own)).status, 201);

    let reads: Vec<(String, &[Who])> = vec![
        (format!("/api/v1/jobs/{job}"), READ),
        (format!("/api/v1/jobs/{job}/steps"), READ),
        (format!("/api/v1/jobs/{job}/steps/s/output"), READ),
        (format!("/api/v1/jobs/{job}/steps/s/line-number?offset=3"), READ),
        (format!("/api/v1/jobs/{job}/steps/s/times"), READ),
        (format!("/api/v1/jobs/{job}/steps/s/search?q=hello"), READ),
        ("/api/v1/projects".into(), ANY_VALID),
        ("/api/v1/projects/gh/acme/app/jobs".into(), OF_THE_PROJECT),
        (format!("/api/v1/jobs/{job}/output"), READ),
        (format!("/api/v1/jobs/{job}/tests"), READ),
        (format!("/api/v2/project/gh/acme/app/{number}/tests"), READ),
        (format!("/api/v1/jobs/{job}/artifacts"), READ),
        (format!("/api/v1/jobs/{job}/artifacts/f.txt"), READ),
        (format!("/api/v1/jobs/{job}/artifact-uploads/f.txt"), READ),
        (format!("/api/v2/project/gh/acme/app/{number}/artifacts"), READ),
        ("/api/v2/insights/gh/acme/app/flaky-tests".into(), PROJECT_READ),
        ("/api/v1/projects/gh/acme/app/tests/history?name=n&classname=c".into(), PROJECT_READ),
        ("/api/v2/insights/gh/acme/app/workflows/build/test-metrics".into(), PROJECT_READ),
    ];
    let mut checked = 0;
    for (path, allowed) in &reads {
        for who in EVERYONE {
            let r = http_call(&server.url(), "GET", path, token(who).as_deref(), &[], b"").unwrap();
            expect(&r, who, allowed.contains(&who), &format!("GET {path}"));
            checked += 1;
        }
    }
    for (i, who) in EVERYONE.into_iter().enumerate() {
        let t = token(who);
        let t = t.as_deref();
        let r = http_call(&server.url(), "POST", "/api/v1/jobs", t, &[("content-type", "application/json")], br#"{"project":"gh/acme/app"}"#).unwrap();
        expect(&r, who, ADMIN.contains(&who), "POST /api/v1/jobs");
        let r = http_call(&server.url(), "POST", "/api/v1/tokens", t, &[("content-type", "application/json")], br#"{"project":"gh/acme/app"}"#).unwrap();
        expect(&r, who, ADMIN.contains(&who), "POST /api/v1/tokens");
        let r = http_call(&server.url(), "POST", &format!("/api/v1/jobs/{job}/tests"), t, &[("content-type", "application/xml")], junit).unwrap();
        expect(&r, who, JOB_WRITE.contains(&who), "POST tests");
        let r = put(&format!("w{i}.txt"), t);
        expect(&r, who, JOB_WRITE.contains(&who), "PUT artifact");
        // Revoking by id is the admin's; a throwaway token is the target.
        let target = http_call(&server.url(), "POST", "/api/v1/tokens", Some(&admin), &[("content-type", "application/json")], br#"{"project":"gh/acme/app"}"#).unwrap();
        let target: serde_json::Value = serde_json::from_slice(&target.body).unwrap();
        let body = serde_json::json!({ "token_id": target["token_id"] }).to_string();
        let r = http_call(&server.url(), "POST", "/api/v1/tokens/revoke", t, &[("content-type", "application/json")], body.as_bytes()).unwrap();
        expect(&r, who, ADMIN.contains(&who), "POST /api/v1/tokens/revoke by id");
        checked += 5;
    }
    // The lists show each token only what it reads: every project to the admin, its own project
    // to the others; a job token sees its own job in the project's list, not its neighbours.
    let list = |path: &str, who: Who, field: &str| -> Vec<String> {
        let r = http_call(&server.url(), "GET", path, token(who).as_deref(), &[], b"").unwrap();
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        v["items"].as_array().unwrap().iter().map(|i| i[field].to_string().trim_matches('"').to_string()).collect()
    };
    assert_eq!(list("/api/v1/projects", Admin, "slug"), ["gh/acme/app", "gh/other/lib"]);
    assert_eq!(list("/api/v1/projects", ProjectRead, "slug"), ["gh/acme/app"]);
    assert_eq!(list("/api/v1/projects", OwnJob, "slug"), ["gh/acme/app"]);
    // gh/acme/app: this job, the other job, and the one the admin created above.
    assert_eq!(list("/api/v1/projects/gh/acme/app/jobs", Admin, "number"), ["3", "2", "1"], "newest first");
    assert_eq!(list("/api/v1/projects/gh/acme/app/jobs", ProjectRead, "number"), ["3", "2", "1"]);
    assert_eq!(list("/api/v1/projects/gh/acme/app/jobs", OwnJob, "id"), std::slice::from_ref(&job));
    let first = list("/api/v1/projects/gh/acme/app/jobs?limit=1", Admin, "number");
    let r = http_call(&server.url(), "GET", "/api/v1/projects/gh/acme/app/jobs?limit=1", Some(&admin), &[], b"").unwrap();
    let page: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let next = page["next_page_token"].as_str().unwrap();
    let second = list(&format!("/api/v1/projects/gh/acme/app/jobs?limit=1&page-token={next}"), Admin, "number");
    assert_eq!((first, second), (vec!["3".to_string()], vec!["2".to_string()]), "pages of one");
    let r = http_call(&server.url(), "GET", "/api/v1/projects/gh/acme/app/jobs?page-token=x", Some(&admin), &[], b"").unwrap();
    assert_eq!(r.status, 400);
    // A token cannot read or write a job of another project, whatever the path says.
    for path in [format!("/api/v1/jobs/{other_project_job}"), format!("/api/v1/jobs/{other_project_job}/steps")] {
        let r = http_call(&server.url(), "GET", &path, Some(&project_read), &[], b"").unwrap();
        expect(&r, ProjectRead, false, &path);
    }
    // Ingest: another job's token cannot write this job's output.
    let run = agent(&server.url(), &other_job, &job, "intruder", &["--quiet"], &["echo", "x"]).stderr(Stdio::piped()).output().unwrap();
    assert_eq!(run.status.code(), Some(2), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(server.step(&job, "intruder").is_none());
    assert!(checked > 130);

    // No token, nor the signature part of one, in the server's debug log or the agent's output.
    let log = server.log();
    assert!(log.contains("DEBUG"), "the log was at debug level");
    let outputs = [log, String::from_utf8_lossy(&run.stderr).into_owned()];
    for t in [&admin, &own, &other_job, &project_read, &other_project_read, &forged, &expired, &revoked] {
        let sig = t.rsplit('.').next().unwrap();
        for text in &outputs {
            assert!(!text.contains(t.as_str()) && !text.contains(sig), "a token leaked into the logs");
        }
    }
}

fn expect(r: &HttpResponse, who: Who, allowed: bool, what: &str) {
    let body = String::from_utf8_lossy(&r.body);
    match (allowed, who) {
        (true, _) => assert!((200..300).contains(&r.status), "{what} as {who:?}: {} {body}", r.status),
        (false, Forged | Expired | Revoked | Nobody) => assert_eq!(r.status, 401, "{what} as {who:?}: {body}"),
        (false, _) => assert!(matches!(r.status, 403 | 404), "{what} as {who:?}: {} {body}", r.status),
    }
}
