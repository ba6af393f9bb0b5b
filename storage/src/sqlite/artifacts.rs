//! SQLite statements for artifacts (the `artifacts` table): one row per artifact of a job, with
//! its upload progress (parts stored, digest state) until it completes.

use rusqlite::{params, Connection, OptionalExtension, Row};
use tailrace_protocol::JobId;

use super::backend;
use crate::artifacts::Artifact;
use crate::meta::MetaError;

pub(super) const SCHEMA: &str = r#"
CREATE TABLE artifacts (
    id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL REFERENCES jobs(id),
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    content_type TEXT NOT NULL,
    part_size INTEGER NOT NULL,
    parts_done INTEGER NOT NULL,
    hash_state BLOB NOT NULL,
    created_ms INTEGER NOT NULL,
    completed_ms INTEGER,
    expired_ms INTEGER,
    UNIQUE (job_id, path)
);
CREATE INDEX artifacts_to_expire ON artifacts (created_ms) WHERE expired_ms IS NULL;
CREATE TABLE artifact_totals (
    job_id TEXT PRIMARY KEY,
    bytes INTEGER NOT NULL
);
"#;

/// One-row queries and writes through the connection's statement cache: upload and download
/// run these for every file, so parsing the SQL each time would cost more than the query.
trait Cached {
    fn prepare_cached_row<T, P: rusqlite::Params>(&self, sql: &str, p: P, f: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>) -> rusqlite::Result<T>;
    fn prepare_cached_exec<P: rusqlite::Params>(&self, sql: &str, p: P) -> rusqlite::Result<usize>;
}

impl Cached for Connection {
    fn prepare_cached_row<T, P: rusqlite::Params>(&self, sql: &str, p: P, f: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>) -> rusqlite::Result<T> {
        self.prepare_cached(sql)?.query_row(p, f)
    }

    fn prepare_cached_exec<P: rusqlite::Params>(&self, sql: &str, p: P) -> rusqlite::Result<usize> {
        self.prepare_cached(sql)?.execute(p)
    }
}

const COLUMNS: &str = "id, job_id, path, size, sha256, content_type, part_size, parts_done, hash_state, created_ms, completed_ms, expired_ms";

fn from_row(r: &Row<'_>) -> rusqlite::Result<Artifact> {
    let job: String = r.get(1)?;
    Ok(Artifact {
        id: r.get(0)?,
        job: JobId::new(job).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?,
        path: r.get(2)?,
        size: r.get(3)?,
        sha256: r.get(4)?,
        content_type: r.get(5)?,
        part_size: r.get(6)?,
        parts_done: r.get(7)?,
        hash_state: r.get(8)?,
        created_ms: r.get(9)?,
        completed_ms: r.get(10)?,
        expired_ms: r.get(11)?,
    })
}

pub(super) fn get(c: &Connection, job: &str, path: &str) -> Result<Option<Artifact>, MetaError> {
    c.prepare_cached_row(&format!("SELECT {COLUMNS} FROM artifacts WHERE job_id = ?1 AND path = ?2"), [job, path], from_row)
        .optional()
        .map_err(backend)
}

/// See [`crate::meta::MetaStore::insert_artifact`].
pub(super) fn insert(c: &mut Connection, a: &Artifact, max_job_bytes: u64) -> Result<Artifact, MetaError> {
    let tx = c.savepoint().map_err(backend)?;
    let job = a.job.as_str();
    if let Some(existing) = get(&tx, job, &a.path)? {
        return Ok(existing);
    }
    let live = "expired_ms IS NULL AND job_id = ?1";
    // A folder of this path that is a file, or a file under this path as a folder.
    let mut folder = String::new();
    for c in a.path.split('/') {
        if !folder.is_empty() {
            let taken: bool = tx.prepare_cached_row(&format!("SELECT EXISTS (SELECT 1 FROM artifacts WHERE {live} AND path = ?2)"), [job, &folder], |r| r.get(0))
                .map_err(backend)?;
            if taken {
                return Err(MetaError::Conflict(format!("artifact {} cannot be stored: {folder} is a file, not a folder", a.path)));
            }
            folder.push('/');
        }
        folder.push_str(c);
    }
    let (lo, hi) = (format!("{}/", a.path), format!("{}0", a.path));
    let under: Option<String> = tx.prepare_cached_row(&format!("SELECT path FROM artifacts WHERE {live} AND path >= ?2 AND path < ?3 LIMIT 1"), [job, &lo, &hi], |r| r.get(0))
        .optional()
        .map_err(backend)?;
    if let Some(under) = under {
        return Err(MetaError::Conflict(format!("artifact {} cannot be stored: it is the folder of artifact {under}", a.path)));
    }
    let total: u64 = tx.prepare_cached_row("SELECT bytes FROM artifact_totals WHERE job_id = ?1", [job], |r| r.get(0))
        .optional()
        .map_err(backend)?
        .unwrap_or(0);
    if total.saturating_add(a.size) > max_job_bytes {
        return Err(MetaError::Limit(format!(
            "job {job} holds {total} bytes of artifacts; {} more would pass the limit of {max_job_bytes} (artifacts_max_job_mib)",
            a.size
        )));
    }
    tx.prepare_cached_exec(
        &format!("INSERT INTO artifacts ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"),
        params![a.id, job, a.path, a.size, a.sha256, a.content_type, a.part_size, a.parts_done, a.hash_state, a.created_ms, a.completed_ms, a.expired_ms],
    )
    .map_err(|e| match e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation => MetaError::JobNotFound(job.to_string()),
        e => backend(e),
    })?;
    tx.prepare_cached_exec(
        "INSERT INTO artifact_totals VALUES (?1, ?2) ON CONFLICT (job_id) DO UPDATE SET bytes = bytes + excluded.bytes",
        params![job, a.size],
    )
    .map_err(backend)?;
    tx.commit().map_err(backend)?;
    Ok(a.clone())
}

/// Forgets an artifact (`expire`: keeps its record as a tombstone), taking its size off the
/// job's total if it still counted.
pub(super) fn remove(c: &mut Connection, id: &str, expire_at_ms: Option<u64>) -> Result<(), MetaError> {
    let tx = c.savepoint().map_err(backend)?;
    let row: Option<(String, u64)> = tx.prepare_cached_row("SELECT job_id, size FROM artifacts WHERE id = ?1 AND expired_ms IS NULL", [id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
        .map_err(backend)?;
    if let Some((job, size)) = row {
        tx.prepare_cached_exec("UPDATE artifact_totals SET bytes = bytes - ?2 WHERE job_id = ?1", params![job, size]).map_err(backend)?;
    }
    match expire_at_ms {
        Some(at) => tx.prepare_cached_exec("UPDATE artifacts SET expired_ms = ?2 WHERE id = ?1", params![id, at]),
        None => tx.prepare_cached_exec("DELETE FROM artifacts WHERE id = ?1", [id]),
    }
    .map_err(backend)?;
    tx.commit().map_err(backend)
}

pub(super) fn advance(c: &Connection, id: &str, part: u32, state: &[u8], completed_ms: Option<u64>) -> Result<bool, MetaError> {
    let n = c.prepare_cached_exec(
            "UPDATE artifacts SET parts_done = ?2 + 1, hash_state = ?3, completed_ms = ?4
             WHERE id = ?1 AND parts_done = ?2 AND completed_ms IS NULL",
            params![id, part, state, completed_ms],
        )
        .map_err(backend)?;
    Ok(n == 1)
}

pub(super) fn list(c: &Connection, job: &str, after: &str, limit: usize) -> Result<Vec<Artifact>, MetaError> {
    let mut stmt = c
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM artifacts WHERE job_id = ?1 AND path > ?2 AND completed_ms IS NOT NULL AND expired_ms IS NULL
             ORDER BY path LIMIT ?3"
        ))
        .map_err(backend)?;
    let rows = stmt.query_map(params![job, after, limit as i64], from_row).map_err(backend)?;
    rows.collect::<Result<_, _>>().map_err(backend)
}

pub(super) fn to_expire(c: &Connection, cutoff_ms: u64, limit: usize) -> Result<Vec<Artifact>, MetaError> {
    let mut stmt = c
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM artifacts WHERE created_ms < ?1 AND expired_ms IS NULL ORDER BY created_ms, id LIMIT ?2"
        ))
        .map_err(backend)?;
    let rows = stmt.query_map(params![cutoff_ms, limit as i64], from_row).map_err(backend)?;
    rows.collect::<Result<_, _>>().map_err(backend)
}
