//! The embedded metadata store: SQLite (bundled), WAL mode, schema versioned by `user_version`.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures_util::future::BoxFuture;
use rusqlite::{params, Connection, OptionalExtension, Row};
use tailrace_protocol::{JobId, StepId};

use crate::artifacts::Artifact;
use crate::insights::{FlakyTest, MetricsQuery, TestDay, TestMetrics};
use crate::live::{StepEnd, StepStatus};
use crate::meta::{now_ms, validate_project, Job, MetaError, MetaStore, NewJob, Segment, Step, StepEndFields, TestRun};
use crate::segment::FrameEntry;

/// Migrations, applied in order; `PRAGMA user_version` counts how many ran.
const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    project TEXT NOT NULL,
    number INTEGER NOT NULL,
    branch TEXT, commit_sha TEXT, workflow TEXT, name TEXT,
    created_at_ms INTEGER NOT NULL,
    UNIQUE (project, number)
);
CREATE TABLE steps (
    job_id TEXT NOT NULL REFERENCES jobs(id),
    step_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    started_at_ms INTEGER NOT NULL,
    end_json TEXT,
    length INTEGER,
    PRIMARY KEY (job_id, step_id)
);
"#, r#"
ALTER TABLE steps ADD COLUMN archived_at_ms INTEGER;
CREATE TABLE segments (
    job_id TEXT NOT NULL,
    step_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    start_offset INTEGER NOT NULL,
    length INTEGER NOT NULL,
    object_key TEXT NOT NULL,
    compressed INTEGER NOT NULL,
    checksum TEXT NOT NULL,
    frames BLOB NOT NULL,
    PRIMARY KEY (job_id, step_id, seq)
);
CREATE INDEX steps_to_archive ON steps (started_at_ms) WHERE end_json IS NOT NULL AND archived_at_ms IS NULL;
"#, r#"
ALTER TABLE steps ADD COLUMN ended_at_ms INTEGER;
ALTER TABLE steps ADD COLUMN expired_at_ms INTEGER;
UPDATE steps SET ended_at_ms = json_extract(end_json, '$.ended_at_ms') WHERE end_json IS NOT NULL;
CREATE INDEX steps_to_expire ON steps (ended_at_ms) WHERE expired_at_ms IS NULL;
"#, r#"
ALTER TABLE segments ADD COLUMN frame_lines BLOB;
"#, r#"
ALTER TABLE segments ADD COLUMN frame_times BLOB;
"#, r#"
CREATE TABLE test_runs (
    job_id TEXT NOT NULL REFERENCES jobs(id),
    seq INTEGER NOT NULL,
    classname TEXT NOT NULL,
    name TEXT NOT NULL,
    file TEXT,
    source TEXT NOT NULL,
    result TEXT NOT NULL,
    run_time REAL,
    message TEXT,
    attempts INTEGER NOT NULL,
    flaky INTEGER NOT NULL,
    wasted_time REAL NOT NULL,
    PRIMARY KEY (job_id, seq)
);
"#, r#"
ALTER TABLE jobs ADD COLUMN pipeline_number INTEGER;
ALTER TABLE jobs ADD COLUMN workflow_id TEXT;
"#, insights::SCHEMA, artifacts::SCHEMA, r#"
CREATE TABLE revoked_tokens (id TEXT PRIMARY KEY, until_s INTEGER NOT NULL);
"#, r#"
ALTER TABLE jobs ADD COLUMN secrets_json TEXT;
"#, r#"
CREATE TABLE leases (name TEXT PRIMARY KEY, holder TEXT NOT NULL, until_ms INTEGER NOT NULL);
"#];

mod artifacts;
mod insights;
mod test_runs;

/// Work for the connection's thread: runs, and returns how to answer once its group committed
/// (`Some(why)` when the commit failed).
type Work = Box<dyn FnOnce(&mut Connection) -> Reply + Send>;
type Reply = Box<dyn FnOnce(Option<&str>) + Send>;

/// Most calls one commit covers.
const GROUP_MAX: usize = 256;

/// SQLite owned by one thread; calls queue their work for it. One thread rather than a mutex
/// shared by blocking-pool threads: calls never contend for a lock (no spinning, no handoffs
/// between pool threads), and the queue keeps them in arrival order. Group commit: the calls
/// queued while one ran go into one transaction (each call's own writes are a savepoint in
/// it) and are answered after its one commit, so 1,000 steps opening at once cost a few
/// fsyncs, not 1,000.
#[derive(Clone)]
pub struct SqliteMeta {
    work: crossbeam_channel::Sender<Work>,
    /// Transactions committed by the connection's thread.
    commits: Arc<AtomicU64>,
}

fn backend(e: impl std::fmt::Display) -> MetaError {
    MetaError::Backend(e.to_string())
}

impl SqliteMeta {
    /// Opens (or creates) the database at `path` and runs pending migrations.
    pub fn open(path: &Path) -> Result<Self, MetaError> {
        let conn = Connection::open(path).map_err(backend)?;
        Self::init(conn)
    }

    /// An in-memory database, for tests.
    pub fn in_memory() -> Result<Self, MetaError> {
        Self::init(Connection::open_in_memory().map_err(backend)?)
    }

    fn init(mut conn: Connection) -> Result<Self, MetaError> {
        conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;")
            .map_err(backend)?;
        let version: usize = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(backend)?;
        if version > MIGRATIONS.len() {
            return Err(MetaError::Backend(format!(
                "database schema version {version} is newer than this binary knows ({}); upgrade tailrace",
                MIGRATIONS.len()
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
            let tx = conn.transaction().map_err(backend)?;
            tx.execute_batch(sql).map_err(backend)?;
            tx.pragma_update(None, "user_version", i + 1).map_err(backend)?;
            tx.commit().map_err(backend)?;
        }
        let (work, queue) = crossbeam_channel::unbounded::<Work>();
        let commits = Arc::new(AtomicU64::new(0));
        std::thread::Builder::new()
            .name("tailrace-sqlite".into())
            // Ends when the last handle is dropped.
            .spawn({
                let commits = commits.clone();
                move || {
                    while let Ok(first) = queue.recv() {
                        run_group(&mut conn, first, &queue, &commits);
                    }
                }
            })
            .map_err(backend)?;
        Ok(Self { work, commits })
    }

    /// Transactions committed so far: one per group of calls.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, MetaError> + Send + 'static,
    ) -> Result<T, MetaError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.work
            .send(Box::new(move |c| {
                let r = f(c);
                Box::new(move |failed: Option<&str>| {
                    let _ = tx.send(match failed {
                        Some(why) if r.is_ok() => Err(MetaError::Backend(format!("the metadata store could not commit: {why}"))),
                        _ => r,
                    });
                })
            }))
            .map_err(|_| MetaError::Backend("the metadata store's thread has stopped".into()))?;
        rx.await.map_err(|_| MetaError::Backend("the metadata store's thread stopped during a call".into()))?
    }
}

fn job_from_row(r: &Row<'_>) -> rusqlite::Result<(String, Job)> {
    let id: String = r.get(0)?;
    Ok((
        id.clone(),
        Job {
            id: JobId::new(id).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?,
            project: r.get(1)?,
            number: r.get(2)?,
            branch: r.get(3)?,
            commit: r.get(4)?,
            workflow: r.get(5)?,
            name: r.get(6)?,
            created_at_ms: r.get(7)?,
            pipeline_number: r.get(8)?,
            workflow_id: r.get(9)?,
            secrets: r
                .get::<_, Option<String>>(10)?
                .map(|j| serde_json::from_str(&j))
                .transpose()
                .map_err(|e| rusqlite::Error::FromSqlConversionFailure(10, rusqlite::types::Type::Text, Box::new(e)))?
                .unwrap_or_default(),
        },
    ))
}

fn step_from_row(job: &JobId, r: &Row<'_>) -> rusqlite::Result<Step> {
    let conv = |e: Box<dyn std::error::Error + Send + Sync>| rusqlite::Error::ToSqlConversionFailure(e);
    let status: String = r.get(2)?;
    let end_json: Option<String> = r.get(4)?;
    let end = match end_json {
        Some(j) => Some(serde_json::from_str::<StepEndFields>(&j).map_err(|e| conv(Box::new(e)))?),
        None => None,
    };
    Ok(Step {
        job: job.clone(),
        step: StepId::new(r.get::<_, String>(0)?).map_err(|e| conv(Box::new(e)))?,
        name: r.get(1)?,
        status: StepStatus::parse(&status).unwrap_or(StepStatus::Running),
        started_at_ms: r.get(3)?,
        length: r.get(5)?,
        archived_at_ms: r.get(6)?,
        expired_at_ms: r.get(7)?,
        end,
    })
}

const STEP_COLS: &str = "step_id, name, status, started_at_ms, end_json, length, archived_at_ms, expired_at_ms";

fn new_job_id() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn frames_to_blob(frames: &[FrameEntry]) -> Vec<u8> {
    frames.iter().flat_map(|f| f.compressed.to_le_bytes().into_iter().chain(f.decompressed.to_le_bytes())).collect()
}

fn frames_from_blob(blob: &[u8]) -> Vec<FrameEntry> {
    blob.chunks_exact(8)
        .map(|e| FrameEntry {
            compressed: u32::from_le_bytes([e[0], e[1], e[2], e[3]]),
            decompressed: u32::from_le_bytes([e[4], e[5], e[6], e[7]]),
        })
        .collect()
}

/// Runs a query whose rows are `(job_id, step_id)`.
fn step_keys(stmt: &mut rusqlite::Statement<'_>, params: impl rusqlite::Params) -> Result<Vec<(JobId, StepId)>, MetaError> {
    let rows = stmt.query_map(params, |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))).map_err(backend)?;
    let mut out = Vec::new();
    for row in rows {
        let (j, s) = row.map_err(backend)?;
        out.push((JobId::new(j).map_err(backend)?, StepId::new(s).map_err(backend)?));
    }
    Ok(out)
}

/// Runs `first` and the calls queued behind it (at most [`GROUP_MAX`]) in one transaction, then
/// answers them all. A call that fails rolls back only its own savepoint; if SQLite rolled the
/// whole transaction back (an I/O error, a full disk) the group ends there and every call in it
/// is answered with the failure, none having been kept.
fn run_group(conn: &mut Connection, first: Work, queue: &crossbeam_channel::Receiver<Work>, commits: &AtomicU64) {
    // A transaction left open (a failed commit whose rollback failed too; its calls were
    // answered with the failure) must not swallow this group's writes.
    if !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    let grouped = conn.execute_batch("BEGIN").is_ok();
    let mut replies = Vec::new();
    let mut next = Some(first);
    while let Some(w) = next.take() {
        replies.push(w(conn));
        if !grouped || conn.is_autocommit() || replies.len() >= GROUP_MAX {
            break;
        }
        next = queue.try_recv().ok();
    }
    let failed = match (grouped, conn.is_autocommit()) {
        (false, _) => None,
        (true, true) => Some("SQLite rolled the transaction back".to_string()),
        (true, false) => match conn.execute_batch("COMMIT") {
            Ok(()) => {
                commits.fetch_add(1, Ordering::Relaxed);
                None
            }
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                Some(e.to_string())
            }
        },
    };
    for reply in replies {
        reply(failed.as_deref());
    }
}

impl MetaStore for SqliteMeta {
    fn create_job(&self, new: NewJob) -> BoxFuture<'_, Result<Job, MetaError>> {
        Box::pin(async move {
            validate_project(&new.project)?;
            self.call(move |c| {
                let tx = c.savepoint().map_err(backend)?;
                let number: u64 = tx
                    .query_row("SELECT COALESCE(MAX(number), 0) + 1 FROM jobs WHERE project = ?1", [&new.project], |r| {
                        r.get(0)
                    })
                    .map_err(backend)?;
                let id = new_job_id();
                let created = now_ms();
                let secrets = (!new.secrets.is_empty()).then(|| serde_json::to_string(&new.secrets)).transpose().map_err(backend)?;
                tx.execute(
                    "INSERT INTO jobs VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                    params![id, new.project, number, new.branch, new.commit, new.workflow, new.name, created, new.pipeline_number, new.workflow_id, secrets],
                )
                .map_err(backend)?;
                tx.commit().map_err(backend)?;
                Ok(Job::from_new(new, JobId::new(id).map_err(backend)?, number, created))
            })
            .await
        })
    }

    fn job<'a>(&'a self, id: &'a JobId) -> BoxFuture<'a, Result<Option<Job>, MetaError>> {
        let id = id.to_string();
        Box::pin(self.call(move |c| {
            c.query_row("SELECT * FROM jobs WHERE id = ?1", [id], job_from_row)
                .optional()
                .map(|o| o.map(|(_, j)| j))
                .map_err(backend)
        }))
    }

    fn open_step<'a>(&'a self, job: &'a JobId, step: &'a StepId, name: &'a str) -> BoxFuture<'a, Result<Step, MetaError>> {
        let (job, step, name) = (job.clone(), step.clone(), name.to_string());
        Box::pin(self.call(move |c| {
            let tx = c.savepoint().map_err(backend)?;
            let exists: Option<i64> =
                tx.query_row("SELECT 1 FROM jobs WHERE id = ?1", [job.as_str()], |r| r.get(0)).optional().map_err(backend)?;
            if exists.is_none() {
                return Err(MetaError::JobNotFound(job.to_string()));
            }
            tx.execute(
                "INSERT OR IGNORE INTO steps (job_id, step_id, seq, name, status, started_at_ms)
                 VALUES (?1, ?2, (SELECT COUNT(*) FROM steps WHERE job_id = ?1), ?3, 'running', ?4)",
                params![job.as_str(), step.as_str(), name, now_ms()],
            )
            .map_err(backend)?;
            let s = tx
                .query_row(
                    &format!("SELECT {STEP_COLS} FROM steps WHERE job_id = ?1 AND step_id = ?2"),
                    [job.as_str(), step.as_str()],
                    |r| step_from_row(&job, r),
                )
                .map_err(backend)?;
            tx.commit().map_err(backend)?;
            Ok(s)
        }))
    }

    fn finish_step<'a>(&'a self, job: &'a JobId, step: &'a StepId, end: &'a StepEnd) -> BoxFuture<'a, Result<(), MetaError>> {
        let (job, step) = (job.clone(), step.clone());
        let status = end.status.as_str();
        let json = serde_json::to_string(&StepEndFields::from(end)).unwrap_or_default();
        let length = end.length;
        let ended_at = end.ended_at_ms;
        Box::pin(self.call(move |c| {
            c.execute(
                "UPDATE steps SET status = ?3, end_json = ?4, length = ?5, ended_at_ms = ?6 WHERE job_id = ?1 AND step_id = ?2",
                params![job.as_str(), step.as_str(), status, json, length, ended_at],
            )
            .map_err(backend)?;
            Ok(())
        }))
    }

    fn step<'a>(&'a self, job: &'a JobId, step: &'a StepId) -> BoxFuture<'a, Result<Option<Step>, MetaError>> {
        let (job, step) = (job.clone(), step.clone());
        Box::pin(self.call(move |c| {
            c.query_row(
                &format!("SELECT {STEP_COLS} FROM steps WHERE job_id = ?1 AND step_id = ?2"),
                [job.as_str(), step.as_str()],
                |r| step_from_row(&job, r),
            )
            .optional()
            .map_err(backend)
        }))
    }

    fn steps<'a>(&'a self, job: &'a JobId) -> BoxFuture<'a, Result<Vec<Step>, MetaError>> {
        let job = job.clone();
        Box::pin(self.call(move |c| {
            let mut stmt = c
                .prepare(&format!("SELECT {STEP_COLS} FROM steps WHERE job_id = ?1 ORDER BY seq"))
                .map_err(backend)?;
            let rows = stmt.query_map([job.as_str()], |r| step_from_row(&job, r)).map_err(backend)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(backend)
        }))
    }

    fn record_segments<'a>(
        &'a self,
        job: &'a JobId,
        step: &'a StepId,
        segments: &'a [Segment],
        complete: bool,
    ) -> BoxFuture<'a, Result<(), MetaError>> {
        let (job, step, segments) = (job.clone(), step.clone(), segments.to_vec());
        Box::pin(self.call(move |c| {
            let tx = c.savepoint().map_err(backend)?;
            for s in &segments {
                tx.execute(
                    "INSERT OR REPLACE INTO segments VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                    params![
                        job.as_str(),
                        step.as_str(),
                        s.seq,
                        s.start,
                        s.length,
                        s.key,
                        s.compressed,
                        s.checksum,
                        frames_to_blob(&s.frames),
                        s.frame_lines.iter().flat_map(|n| n.to_le_bytes()).collect::<Vec<u8>>(),
                        s.frame_times.iter().flat_map(|n| n.to_le_bytes()).collect::<Vec<u8>>()
                    ],
                )
                .map_err(backend)?;
            }
            if complete {
                tx.execute(
                    "UPDATE steps SET archived_at_ms = ?3 WHERE job_id = ?1 AND step_id = ?2",
                    params![job.as_str(), step.as_str(), now_ms()],
                )
                .map_err(backend)?;
            }
            tx.commit().map_err(backend)
        }))
    }

    fn segments<'a>(&'a self, job: &'a JobId, step: &'a StepId) -> BoxFuture<'a, Result<Vec<Segment>, MetaError>> {
        let (job, step) = (job.clone(), step.clone());
        Box::pin(self.call(move |c| {
            let mut stmt = c
                .prepare(
                    "SELECT seq, start_offset, length, object_key, compressed, checksum, frames, frame_lines, frame_times FROM segments
                     WHERE job_id = ?1 AND step_id = ?2 ORDER BY seq",
                )
                .map_err(backend)?;
            let rows = stmt
                .query_map([job.as_str(), step.as_str()], |r| {
                    Ok(Segment {
                        seq: r.get(0)?,
                        start: r.get(1)?,
                        length: r.get(2)?,
                        key: r.get(3)?,
                        compressed: r.get(4)?,
                        checksum: r.get(5)?,
                        frames: frames_from_blob(&r.get::<_, Vec<u8>>(6)?),
                        frame_lines: r
                            .get::<_, Option<Vec<u8>>>(7)?
                            .unwrap_or_default()
                            .chunks_exact(4)
                            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                            .collect(),
                        frame_times: r
                            .get::<_, Option<Vec<u8>>>(8)?
                            .unwrap_or_default()
                            .chunks_exact(8)
                            .map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
                            .collect(),
                    })
                })
                .map_err(backend)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(backend)
        }))
    }

    fn expiry_candidates(&self, cutoff_ms: u64, limit: usize) -> BoxFuture<'_, Result<Vec<(JobId, StepId)>, MetaError>> {
        Box::pin(self.call(move |c| {
            let mut stmt = c
                .prepare(
                    "SELECT job_id, step_id FROM steps WHERE ended_at_ms < ?1 AND expired_at_ms IS NULL
                     ORDER BY ended_at_ms LIMIT ?2",
                )
                .map_err(backend)?;
            step_keys(&mut stmt, params![cutoff_ms, limit as i64])
        }))
    }

    fn mark_expired<'a>(&'a self, job: &'a JobId, step: &'a StepId) -> BoxFuture<'a, Result<(), MetaError>> {
        let (job, step) = (job.clone(), step.clone());
        Box::pin(self.call(move |c| {
            let tx = c.savepoint().map_err(backend)?;
            tx.execute("DELETE FROM segments WHERE job_id = ?1 AND step_id = ?2", [job.as_str(), step.as_str()]).map_err(backend)?;
            tx.execute(
                "UPDATE steps SET expired_at_ms = ?3 WHERE job_id = ?1 AND step_id = ?2",
                params![job.as_str(), step.as_str(), now_ms()],
            )
            .map_err(backend)?;
            tx.commit().map_err(backend)
        }))
    }

    fn artifact<'a>(&'a self, job: &'a JobId, path: &'a str) -> BoxFuture<'a, Result<Option<Artifact>, MetaError>> {
        let (job, path) = (job.to_string(), path.to_string());
        Box::pin(self.call(move |c| artifacts::get(c, &job, &path)))
    }

    fn insert_artifact<'a>(&'a self, art: &'a Artifact, max_job_bytes: u64) -> BoxFuture<'a, Result<Artifact, MetaError>> {
        let art = art.clone();
        Box::pin(self.call(move |c| artifacts::insert(c, &art, max_job_bytes)))
    }

    fn advance_artifact<'a>(&'a self, id: &'a str, part: u32, hash_state: &'a [u8], completed_ms: Option<u64>) -> BoxFuture<'a, Result<bool, MetaError>> {
        let (id, state) = (id.to_string(), hash_state.to_vec());
        Box::pin(self.call(move |c| artifacts::advance(c, &id, part, &state, completed_ms)))
    }

    fn delete_artifact<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), MetaError>> {
        let id = id.to_string();
        Box::pin(self.call(move |c| artifacts::remove(c, &id, None)))
    }

    fn artifacts<'a>(&'a self, job: &'a JobId, after: &'a str, limit: usize) -> BoxFuture<'a, Result<Vec<Artifact>, MetaError>> {
        let (job, after) = (job.to_string(), after.to_string());
        Box::pin(self.call(move |c| artifacts::list(c, &job, &after, limit)))
    }

    fn artifacts_to_expire(&self, cutoff_ms: u64, limit: usize) -> BoxFuture<'_, Result<Vec<Artifact>, MetaError>> {
        Box::pin(self.call(move |c| artifacts::to_expire(c, cutoff_ms, limit)))
    }

    fn mark_artifact_expired<'a>(&'a self, id: &'a str, at_ms: u64) -> BoxFuture<'a, Result<(), MetaError>> {
        let id = id.to_string();
        Box::pin(self.call(move |c| artifacts::remove(c, &id, Some(at_ms))))
    }

    fn revoke_token<'a>(&'a self, id: &'a str, until_s: u64) -> BoxFuture<'a, Result<(), MetaError>> {
        let id = id.to_string();
        let until = i64::try_from(until_s).unwrap_or(i64::MAX);
        Box::pin(self.call(move |c| {
            c.execute(
                "INSERT INTO revoked_tokens (id, until_s) VALUES (?1, ?2)
                 ON CONFLICT (id) DO UPDATE SET until_s = max(until_s, excluded.until_s)",
                params![id, until],
            )
            .map(drop)
            .map_err(backend)
        }))
    }

    fn revoked_tokens(&self, now_s: u64) -> BoxFuture<'_, Result<Vec<String>, MetaError>> {
        let now = i64::try_from(now_s).unwrap_or(i64::MAX);
        Box::pin(self.call(move |c| {
            c.execute("DELETE FROM revoked_tokens WHERE until_s <= ?1", params![now]).map_err(backend)?;
            let mut stmt = c.prepare_cached("SELECT id FROM revoked_tokens").map_err(backend)?;
            let ids = stmt.query_map([], |r| r.get(0)).map_err(backend)?;
            ids.collect::<Result<Vec<String>, _>>().map_err(backend)
        }))
    }

    fn lease<'a>(&'a self, name: &'a str, holder: &'a str, until_ms: u64, now_ms: u64) -> BoxFuture<'a, Result<bool, MetaError>> {
        let (name, holder) = (name.to_string(), holder.to_string());
        let (until, now) = (i64::try_from(until_ms).unwrap_or(i64::MAX), i64::try_from(now_ms).unwrap_or(i64::MAX));
        Box::pin(self.call(move |c| {
            let n = c
                .prepare_cached(
                    "INSERT INTO leases (name, holder, until_ms) VALUES (?1, ?2, ?3)
                     ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until_ms = excluded.until_ms
                     WHERE leases.until_ms <= ?4 OR leases.holder = excluded.holder",
                )
                .and_then(|mut s| s.execute(params![name, holder, until, now]))
                .map_err(backend)?;
            Ok(n == 1)
        }))
    }

    fn unlease<'a>(&'a self, name: &'a str, holder: &'a str) -> BoxFuture<'a, Result<(), MetaError>> {
        let (name, holder) = (name.to_string(), holder.to_string());
        Box::pin(self.call(move |c| {
            c.execute("DELETE FROM leases WHERE name = ?1 AND holder = ?2", params![name, holder]).map(drop).map_err(backend)
        }))
    }

    fn jobs<'a>(&'a self, project: &'a str, before: Option<u64>, limit: usize) -> BoxFuture<'a, Result<Vec<Job>, MetaError>> {
        let project = project.to_string();
        let before = before.map_or(i64::MAX, |b| i64::try_from(b).unwrap_or(i64::MAX));
        Box::pin(self.call(move |c| {
            let mut st = c.prepare_cached("SELECT * FROM jobs WHERE project = ?1 AND number < ?2 ORDER BY number DESC LIMIT ?3").map_err(backend)?;
            let rows = st.query_map(params![project, before, limit as i64], job_from_row).map_err(backend)?;
            rows.map(|r| r.map(|(_, j)| j).map_err(backend)).collect()
        }))
    }

    fn projects(&self) -> BoxFuture<'_, Result<Vec<String>, MetaError>> {
        Box::pin(self.call(|c| {
            let mut st = c.prepare_cached("SELECT DISTINCT project FROM jobs ORDER BY project").map_err(backend)?;
            let rows = st.query_map([], |r| r.get::<_, String>(0)).map_err(backend)?;
            rows.map(|r| r.map_err(backend)).collect()
        }))
    }

    fn job_by_number<'a>(&'a self, project: &'a str, number: u64) -> BoxFuture<'a, Result<Option<Job>, MetaError>> {
        let project = project.to_string();
        Box::pin(self.call(move |c| {
            c.query_row("SELECT * FROM jobs WHERE project = ?1 AND number = ?2", params![project, number], job_from_row)
                .optional()
                .map(|o| o.map(|(_, j)| j))
                .map_err(backend)
        }))
    }

    fn record_test_runs<'a>(&'a self, job: &'a Job, runs: &'a [TestRun]) -> BoxFuture<'a, Result<(), MetaError>> {
        let (job, runs) = (job.clone(), runs.to_vec());
        Box::pin(self.call(move |c| {
            let tx = c.savepoint().map_err(backend)?;
            test_runs::record(&tx, job.id.as_str(), &runs)?;
            insights::update(&tx, &job, &runs)?;
            tx.commit().map_err(backend)
        }))
    }

    fn flaky_tests<'a>(&'a self, project: &'a str) -> BoxFuture<'a, Result<Vec<FlakyTest>, MetaError>> {
        let project = project.to_string();
        Box::pin(self.call(move |c| insights::flaky_tests(c, &project)))
    }

    fn test_history<'a>(
        &'a self,
        project: &'a str,
        test: (&'a str, &'a str, &'a str),
        since_ms: u64,
    ) -> BoxFuture<'a, Result<Vec<TestDay>, MetaError>> {
        let (project, c, n, f) = (project.to_string(), test.0.to_string(), test.1.to_string(), test.2.to_string());
        Box::pin(self.call(move |conn| insights::test_history(conn, &project, (&c, &n, &f), since_ms)))
    }

    fn test_metrics<'a>(&'a self, project: &'a str, query: &'a MetricsQuery) -> BoxFuture<'a, Result<TestMetrics, MetaError>> {
        let (project, query) = (project.to_string(), query.clone());
        Box::pin(self.call(move |c| insights::test_metrics(c, &project, &query)))
    }

    fn test_runs<'a>(&'a self, job: &'a JobId, from: u64, limit: usize) -> BoxFuture<'a, Result<Vec<(u64, TestRun)>, MetaError>> {
        let job = job.to_string();
        Box::pin(self.call(move |c| test_runs::list(c, &job, from, limit)))
    }

    fn ended_unarchived(&self, limit: usize) -> BoxFuture<'_, Result<Vec<(JobId, StepId)>, MetaError>> {
        Box::pin(self.call(move |c| {
            let mut stmt = c
                .prepare(
                    "SELECT job_id, step_id FROM steps WHERE end_json IS NOT NULL AND archived_at_ms IS NULL
                     AND expired_at_ms IS NULL ORDER BY started_at_ms LIMIT ?1",
                )
                .map_err(backend)?;
            step_keys(&mut stmt, params![limit as i64])
        }))
    }
}


#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sqlite_passes_the_conformance_suite() {
        crate::meta::conformance::run(&SqliteMeta::in_memory().unwrap()).await;
    }

    /// Calls that queue while the connection's thread is busy are committed together, each
    /// answered after that commit; one that fails rolls back only its own writes.
    #[tokio::test(flavor = "current_thread")]
    async fn queued_calls_commit_together_and_a_failing_one_harms_none_of_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.db");
        let meta = SqliteMeta::open(&path).unwrap();
        // Hold the thread inside a group while the calls below queue behind it.
        let (release, held) = std::sync::mpsc::channel::<()>();
        meta.work
            .send(Box::new(move |_| {
                let _ = held.recv();
                Box::new(|_| {})
            }))
            .unwrap();
        let before = meta.commits();
        let new = |i: usize| NewJob { project: "gh/a/b".into(), name: Some(format!("job {i}")), ..Default::default() };
        let jobs: Vec<_> = (0..100)
            .map(|i| {
                let meta = meta.clone();
                tokio::spawn(async move { meta.create_job(new(i)).await })
            })
            .collect();
        let missing = JobId::new("no-such-job").unwrap();
        let failing = tokio::spawn({
            let meta = meta.clone();
            async move { meta.open_step(&missing, &StepId::new("s").unwrap(), "s").await }
        });
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
        release.send(()).unwrap();
        assert!(matches!(failing.await.unwrap(), Err(MetaError::JobNotFound(_))));
        let mut numbers = Vec::new();
        for j in jobs {
            numbers.push(j.await.unwrap().unwrap());
        }
        assert_eq!(meta.commits(), before + 1, "101 queued calls took more than one commit");
        // Numbered in queue order, and all of them kept.
        assert_eq!(numbers.iter().map(|j| j.number).collect::<Vec<_>>(), (1..=100).collect::<Vec<u64>>());
        let again = SqliteMeta::open(&path).unwrap();
        for j in &numbers {
            assert_eq!(again.job(&j.id).await.unwrap().as_ref(), Some(j));
        }
    }

    #[tokio::test]
    async fn sqlite_keeps_data_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.db");
        let job = SqliteMeta::open(&path)
            .unwrap()
            .create_job(NewJob { project: "gh/a/b".into(), ..Default::default() })
            .await
            .unwrap();
        let again = SqliteMeta::open(&path).unwrap();
        assert_eq!(again.job(&job.id).await.unwrap(), Some(job));
    }
}
