//! `tailrace store-artifacts`: uploads a file or a directory tree as a job's artifacts, like
//! CircleCI's `store_artifacts` — names checked before anything is sent, files in parallel, a
//! progress bar on a terminal (plain progress lines otherwise), and every file resumed from what
//! the server already holds after a dropped connection or a server restart.

use std::collections::{HashSet, VecDeque};
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use parking_lot::Mutex;
use tailrace_agent::client::Server;
use tailrace_agent::upload::{file_sha256, read_small, Content, PutAnswer, Uploader, SMALL};
use tailrace_protocol::artifact_path;

use crate::cli::ClientArgs;

#[derive(Debug, Args)]
pub struct StoreArtifactsArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The job the artifacts belong to (with its job token).
    #[arg(long, env = "TAILRACE_JOB")]
    pub job: String,
    /// A file, or a directory whose files are all uploaded (symbolic links to files are
    /// followed; links to directories are skipped).
    pub path: PathBuf,
    /// Artifact path prefix for a directory, or the artifact's name for a file.
    /// [default: PATH as given, without a leading `/`]
    #[arg(long)]
    pub destination: Option<String>,
    /// Files uploaded at once.
    #[arg(long, default_value_t = 4)]
    pub parallel: usize,
    /// Attempts per file after a failure (connection lost, server unavailable) before giving
    /// up; each resumes from what the server holds.
    #[arg(long, default_value_t = 10)]
    pub retries: u32,
}

/// One file to upload.
#[derive(Debug, Clone)]
struct Entry {
    name: String,
    file: PathBuf,
    size: u64,
}

/// Every file under `root` (or `root` itself), with its artifact name.
fn collect(root: &Path, destination: Option<&str>) -> Result<Vec<Entry>, String> {
    let shown = root.display().to_string();
    let meta = std::fs::metadata(root).map_err(|e| format!("{shown}: {e}"))?;
    let default_prefix = shown.trim_start_matches('/').to_string();
    let prefix = destination.map(str::to_string).unwrap_or(default_prefix);
    let named = |rel: &str| {
        artifact_path::join(Some(&prefix), rel).map_err(|e| format!("{e} (choose another name with --destination)"))
    };
    if meta.is_file() {
        return Ok(vec![Entry { name: named("")?, file: root.to_path_buf(), size: meta.len() }]);
    }
    let mut out = Vec::new();
    let mut dirs = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel)) = dirs.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&dir).and_then(|r| r.collect::<Result<_, _>>()).map_err(|e| format!("{}: {e}", dir.display()))?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            let name = e.file_name().into_string().map_err(|n| format!("{}: the name {n:?} is not UTF-8; rename it", dir.display()))?;
            let rel = if rel.is_empty() { name } else { format!("{rel}/{name}") };
            let ty = e.file_type().map_err(|err| format!("{}: {err}", p.display()))?;
            let target = if ty.is_symlink() { std::fs::metadata(&p).ok() } else { None };
            if ty.is_dir() {
                dirs.push((p, rel));
            } else if ty.is_file() || target.as_ref().is_some_and(|m| m.is_file()) {
                let size = target.map(|m| m.len()).map_or_else(|| e.metadata().map(|m| m.len()), Ok).map_err(|err| format!("{}: {err}", p.display()))?;
                out.push(Entry { name: named(&rel)?, file: p, size });
            } else {
                eprintln!("tailrace: skipping {} (not a regular file)", p.display());
            }
        }
    }
    Ok(out)
}

/// Names that would collide on the server: the same name twice, or a name that is another's folder.
fn collisions(entries: &[Entry]) -> Vec<String> {
    let names: HashSet<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for e in entries {
        if !seen.insert(e.name.as_str()) {
            out.push(format!("{} is named {} like another file", e.file.display(), e.name));
        }
        let mut folder = e.name.as_str();
        while let Some((parent, _)) = folder.rsplit_once('/') {
            if names.contains(parent) {
                out.push(format!("{} would be stored under {parent}, which is also a file", e.file.display()));
            }
            folder = parent;
        }
    }
    out
}

/// Shared counters the progress display reads.
#[derive(Default)]
struct Progress {
    total_bytes: u64,
    total_files: usize,
    /// Body bytes read from files and sent (resent bytes count again).
    sent: Arc<AtomicU64>,
    /// Bytes of files complete.
    done_bytes: AtomicU64,
    done_files: AtomicUsize,
}

fn mib(b: u64) -> f64 {
    b as f64 / 1048576.0
}

/// Draws a bar on a terminal, or prints a line every 5 s, until `stop`.
async fn show_progress(p: Arc<Progress>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let start = Instant::now();
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(p.total_bytes);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let every = if bar.is_some() { Duration::from_millis(100) } else { Duration::from_secs(5) };
    loop {
        let stopped = tokio::time::timeout(every, stop.changed()).await.is_ok();
        let sent = p.sent.load(Relaxed);
        let files = p.done_files.load(Relaxed);
        match &bar {
            Some(bar) => {
                bar.set_position(sent.min(p.total_bytes));
                bar.set_message(format!("{files}/{} files", p.total_files));
            }
            None if !stopped => {
                let secs = start.elapsed().as_secs_f64().max(0.001);
                eprintln!(
                    "tailrace: artifacts: {:.1} of {:.1} MiB sent, {files} of {} files stored, {:.1} MiB/s",
                    mib(sent),
                    mib(p.total_bytes),
                    p.total_files,
                    mib(sent) / secs
                );
            }
            None => {}
        }
        if stopped {
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            return;
        }
    }
}

/// Uploads one file, resuming after failures; returns whether it was new.
async fn upload_one(up: &mut Uploader, e: &Entry, p: &Progress, retries: u32) -> Result<bool, String> {
    let file = e.file.clone();
    // A small file is read once and sent from memory; a large one is hashed, then streamed.
    let (size, sha256, memory) = tokio::task::spawn_blocking(move || {
        if std::fs::metadata(&file)?.len() <= SMALL {
            read_small(&file).map(|(b, d)| (b.len() as u64, d, Some(b)))
        } else {
            file_sha256(&file).map(|(n, d)| (n, d, None))
        }
    })
    .await
    .map_err(|err| err.to_string())?
    .map_err(|err| format!("{}: {err}", e.file.display()))?;
    let content = || match &memory {
        Some(b) => Content::Memory(b.clone()),
        None => Content::File(&e.file),
    };
    if size != e.size {
        return Err(format!("{} changed size while being read; upload it when it is complete", e.file.display()));
    }
    let mut offset = 0;
    let mut failures = 0;
    let mut pause = Duration::from_millis(200);
    loop {
        let answer = up.put(&e.name, content(), size, &sha256, offset, p.sent.clone()).await;
        let why = match answer {
            Ok(PutAnswer::Done { new }) => return Ok(new),
            Ok(PutAnswer::Resume { offset: o }) => {
                offset = o;
                continue;
            }
            Ok(PutAnswer::Refused { status, message }) => return Err(format!("{}: {message} ({status})", e.name)),
            Ok(PutAnswer::Busy) => "another upload of it is still receiving".to_string(),
            Err(err) => err.to_string(),
        };
        failures += 1;
        if failures > retries {
            return Err(format!("{}: giving up after {retries} retries: {why}", e.name));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(10));
        match up.offset(&e.name).await {
            Ok(o) => {
                eprintln!("tailrace: {}: {why}; resuming at byte {o} of {size} (the server holds {o})", e.name);
                offset = o;
            }
            Err(err) => eprintln!("tailrace: {}: {why}; the server cannot be asked yet ({err}), retrying", e.name),
        }
    }
}

/// Uploads everything; returns 0 if every file is stored, 1 if any failed, 2 if nothing was sent
/// (bad or colliding names, unreadable paths).
pub async fn store_artifacts(a: StoreArtifactsArgs) -> i32 {
    let server = match Server::parse(&a.client.server) {
        Ok(s) => s,
        Err(e) => return crate::cli::fail(&e.to_string()),
    };
    let mut entries = match collect(&a.path, a.destination.as_deref()) {
        Ok(e) if e.is_empty() => return crate::cli::fail(&format!("{} holds no files", a.path.display())),
        Ok(e) => e,
        Err(e) => {
            eprintln!("tailrace: {e}\ntailrace: nothing was uploaded");
            return 2;
        }
    };
    let clashes = collisions(&entries);
    if !clashes.is_empty() {
        for c in &clashes {
            eprintln!("tailrace: {c}");
        }
        eprintln!("tailrace: nothing was uploaded; rename these files or pick another --destination");
        return 2;
    }
    // Large files first, so that one big file does not start last and run alone.
    entries.sort_by_key(|e| std::cmp::Reverse(e.size));
    let progress = Arc::new(Progress {
        total_bytes: entries.iter().map(|e| e.size).sum(),
        total_files: entries.len(),
        ..Default::default()
    });
    let queue = Arc::new(Mutex::new(VecDeque::from(entries)));
    let failed = Arc::new(Mutex::new(Vec::new()));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let shown = tokio::spawn(show_progress(progress.clone(), stop_rx));
    let start = Instant::now();
    let existing = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..a.parallel.max(1))
        .map(|_| {
            let (queue, failed, progress, existing) = (queue.clone(), failed.clone(), progress.clone(), existing.clone());
            let mut up = Uploader::new(server.clone(), a.client.token.clone(), a.job.clone());
            let retries = a.retries;
            tokio::spawn(async move {
                loop {
                    let Some(e) = queue.lock().pop_front() else { return };
                    match upload_one(&mut up, &e, &progress, retries).await {
                        Ok(new) => {
                            if !new {
                                existing.fetch_add(1, Relaxed);
                            }
                            progress.done_bytes.fetch_add(e.size, Relaxed);
                            progress.done_files.fetch_add(1, Relaxed);
                        }
                        Err(err) => failed.lock().push(err),
                    }
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.await;
    }
    let _ = stop_tx.send(true);
    let _ = shown.await;
    let secs = start.elapsed().as_secs_f64().max(0.001);
    let (files, bytes) = (progress.done_files.load(Relaxed), progress.done_bytes.load(Relaxed));
    let already = existing.load(Relaxed);
    println!(
        "stored {files} artifacts ({:.1} MiB) in {secs:.1} s, {:.1} MiB/s{}",
        mib(bytes),
        mib(bytes) / secs,
        if already > 0 { format!("; {already} were already stored") } else { String::new() }
    );
    let failed = failed.lock();
    for f in failed.iter() {
        eprintln!("tailrace: {f}");
    }
    i32::from(!failed.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str) -> Entry {
        Entry { name: name.into(), file: PathBuf::from(name), size: 0 }
    }

    #[test]
    fn names_from_a_tree() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("a/b/c.txt"), b"c").unwrap();
        std::fs::write(dir.path().join("top.bin"), b"tt").unwrap();
        let got = collect(dir.path(), Some("out")).unwrap();
        let mut names: Vec<_> = got.iter().map(|e| (e.name.as_str(), e.size)).collect();
        names.sort();
        assert_eq!(names, [("out/a/b/c.txt", 1), ("out/top.bin", 2)]);
        let one = collect(&dir.path().join("top.bin"), Some("renamed.bin")).unwrap();
        assert_eq!(one[0].name, "renamed.bin");
        assert!(collect(dir.path(), Some("../up")).unwrap_err().contains("--destination"));
    }

    #[test]
    fn collisions_are_found_before_uploading() {
        assert!(collisions(&[entry("a/b"), entry("a/c")]).is_empty());
        assert_eq!(collisions(&[entry("a/b"), entry("a/b")]).len(), 1);
        assert_eq!(collisions(&[entry("a"), entry("a/b/c")]).len(), 1);
    }
}
