//! `tailrace store-test-results`: uploads JUnit XML (and JSON record) files to a job, like
//! CircleCI's `store_test_results` — files, or directories searched recursively for `*.xml` and
//! `*.json` — and prints what the server recorded for each.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use clap::Args;
use tailrace_agent::client::{Method, Server};

use crate::cli::ClientArgs;

#[derive(Debug, Args)]
pub struct StoreTestResultsArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The job the results belong to (with its job token). May be uploaded while the job runs.
    #[arg(long, env = "TAILRACE_JOB")]
    pub job: String,
    /// Result files, or directories searched recursively for *.xml and *.json.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

/// Every result file under `paths`, sorted per directory; an error names a path that is neither.
fn result_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
        let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            if e.file_type()?.is_dir() {
                walk(&p, out)?;
            } else if p.extension().is_some_and(|x| x == "xml" || x == "json") {
                out.push(p);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).map_err(|e| format!("{}: {e}", p.display()))?;
        if meta.is_dir() {
            walk(p, &mut out).map_err(|e| format!("{}: {e}", p.display()))?;
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// Uploads each file; returns 0 if all were recorded, 1 if any was refused or failed.
pub async fn store_test_results(a: StoreTestResultsArgs) -> i32 {
    let server = match Server::parse(&a.client.server) {
        Ok(s) => s,
        Err(e) => return crate::cli::fail(&e.to_string()),
    };
    let files = match result_files(&a.paths) {
        Ok(f) if f.is_empty() => return crate::cli::fail("no *.xml or *.json result files found under the given paths"),
        Ok(f) => f,
        Err(e) => return crate::cli::fail(&e),
    };
    let mut failed = 0;
    for file in &files {
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let body = match std::fs::read(file) {
            Ok(b) => Bytes::from(b),
            Err(e) => {
                eprintln!("tailrace: {}: {e}", file.display());
                failed += 1;
                continue;
            }
        };
        let content_type = if name.ends_with(".json") { "application/json" } else { "application/xml" };
        let path = format!("/api/v1/jobs/{}/tests?source={}", a.job, percent_encode(&name));
        match server.call::<serde_json::Value>(Method::POST, &path, Some(&a.client.token), Some((content_type, body))).await {
            Ok(r) => {
                let n = |k: &str| r.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
                println!(
                    "{}: {} tests, {} failed, {} skipped, {} flaky",
                    file.display(),
                    n("tests"),
                    n("failure") + n("error"),
                    n("skipped"),
                    n("flaky")
                );
                for w in r.get("warnings").and_then(|w| w.as_array()).into_iter().flatten() {
                    println!("  note: {}", w.as_str().unwrap_or_default());
                }
            }
            Err(e) => {
                eprintln!("tailrace: {}: {e}", file.display());
                failed += 1;
            }
        }
    }
    i32::from(failed > 0)
}

/// Percent-encodes everything but `[A-Za-z0-9._-]` for a query value.
fn percent_encode(s: &str) -> String {
    s.bytes().map(|b| if b.is_ascii_alphanumeric() || b"._-".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}
