//! The scale-out metadata store: MongoDB through the `mongodb` crate. Same contract and
//! conformance suite as SQLite; indexes are created at connect.
//!
//! Every operation is one atomic document write, an idempotent sequence of them (a retried
//! archiver or expiry sweep repeats it harmlessly), or a multi-document transaction where two
//! nodes can race on derived figures (test-run rollups, artifact totals). Transactions need a
//! replica set, MongoDB's production shape; [`MongoMeta::connect`] checks for them and says so.
//!
//! Collections: `jobs`, `counters` (job numbers per project), `steps` (`_id` `job/step`),
//! `segments` (`job/step/seq`), `test_runs`, the insights rollups (see [`insights`]),
//! `artifacts`, `artifact_totals` and `revoked_tokens`.

use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::{FutureExt, TryStreamExt};
use mongodb::bson::{self, doc, spec::BinarySubtype, Binary, Bson, Document};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::{ClientOptions, IndexOptions, ReturnDocument};
use mongodb::{Client, ClientSession, Collection, Database, IndexModel};
use tailrace_protocol::{JobId, StepId};

use crate::artifacts::Artifact;
use crate::insights::{FlakyTest, MetricsQuery, TestDay, TestMetrics};
use crate::live::{StepEnd, StepStatus};
use crate::meta::{now_ms, validate_project, Job, MetaError, MetaStore, NewJob, Segment, Step, StepEndFields, TestRun};
use crate::segment::FrameEntry;

mod artifacts;
mod insights;

/// The database used when the URI names none.
const DEFAULT_DB: &str = "tailrace";

/// MongoDB as the metadata store. Cheap to clone (the client is a pool).
#[derive(Clone)]
pub struct MongoMeta {
    client: Client,
    db: Database,
}

fn backend(e: impl std::fmt::Display) -> MetaError {
    MetaError::Backend(e.to_string())
}

/// A `MetaError` raised inside a transaction callback, carried out through the driver's error.
fn abort(e: MetaError) -> mongodb::error::Error {
    mongodb::error::Error::custom(std::sync::Arc::new(e))
}

/// The driver's error as a `MetaError`, unwrapping one raised by [`abort`].
fn from_driver(e: mongodb::error::Error) -> MetaError {
    match e.get_custom::<std::sync::Arc<MetaError>>() {
        Some(m) => match m.as_ref() {
            MetaError::JobNotFound(j) => MetaError::JobNotFound(j.clone()),
            MetaError::Conflict(s) => MetaError::Conflict(s.clone()),
            MetaError::Limit(s) => MetaError::Limit(s.clone()),
            MetaError::Invalid { field, reason } => MetaError::Invalid { field, reason: reason.clone() },
            other => MetaError::Backend(other.to_string()),
        },
        None => backend(e),
    }
}

/// Whether a write failed on a unique index (E11000).
fn is_duplicate(e: &mongodb::error::Error) -> bool {
    match e.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code == 11000,
        ErrorKind::Command(c) => c.code == 11000,
        ErrorKind::InsertMany(m) => m.write_errors.iter().flatten().any(|w| w.code == 11000),
        _ => false,
    }
}

/// A `u64` as BSON stores integers (values past `i64::MAX` saturate).
pub(crate) fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// An unsigned integer field; absent, null or negative reads as `None`.
pub(crate) fn opt_u64(d: &Document, key: &str) -> Option<u64> {
    match d.get(key)? {
        Bson::Int32(n) => u64::try_from(*n).ok(),
        Bson::Int64(n) => u64::try_from(*n).ok(),
        Bson::Double(f) if *f >= 0.0 => Some(*f as u64),
        _ => None,
    }
}

pub(crate) fn get_u64(d: &Document, key: &str) -> u64 {
    opt_u64(d, key).unwrap_or(0)
}

pub(crate) fn get_f64(d: &Document, key: &str) -> f64 {
    match d.get(key) {
        Some(Bson::Double(f)) => *f,
        Some(Bson::Int32(n)) => f64::from(*n),
        Some(Bson::Int64(n)) => *n as f64,
        _ => 0.0,
    }
}

pub(crate) fn opt_str(d: &Document, key: &str) -> Option<String> {
    d.get_str(key).ok().map(str::to_string)
}

pub(crate) fn get_str(d: &Document, key: &str) -> String {
    opt_str(d, key).unwrap_or_default()
}

pub(crate) fn binary(bytes: Vec<u8>) -> Bson {
    Bson::Binary(Binary { subtype: BinarySubtype::Generic, bytes })
}

pub(crate) fn get_binary(d: &Document, key: &str) -> Vec<u8> {
    match d.get(key) {
        Some(Bson::Binary(b)) => b.bytes.clone(),
        _ => Vec::new(),
    }
}

/// Optional values are stored as absent fields, so that `{field: null}` filters match them.
fn set_opt(d: &mut Document, key: &str, v: Option<impl Into<Bson>>) {
    if let Some(v) = v {
        d.insert(key, v.into());
    }
}

fn step_key(job: &JobId, step: &StepId) -> String {
    format!("{job}/{step}")
}

/// Runs `find` and collects every document.
async fn all(find: impl std::future::IntoFuture<Output = mongodb::error::Result<mongodb::Cursor<Document>>>) -> Result<Vec<Document>, MetaError> {
    find.await.map_err(backend)?.try_collect().await.map_err(backend)
}

/// Collects a cursor opened inside a transaction.
pub(crate) async fn all_in(
    s: &mut ClientSession,
    cursor: mongodb::error::Result<mongodb::SessionCursor<Document>>,
) -> mongodb::error::Result<Vec<Document>> {
    let mut cursor = cursor?;
    let mut out = Vec::new();
    while let Some(d) = cursor.next(s).await {
        out.push(d?);
    }
    Ok(out)
}

fn job_from_doc(d: &Document) -> Result<Job, MetaError> {
    let secrets = match d.get("secrets") {
        Some(b @ Bson::Array(_)) => bson::from_bson(b.clone()).map_err(backend)?,
        _ => Vec::new(),
    };
    Ok(Job {
        id: JobId::new(get_str(d, "_id")).map_err(backend)?,
        project: get_str(d, "project"),
        number: get_u64(d, "number"),
        branch: opt_str(d, "branch"),
        commit: opt_str(d, "commit"),
        workflow: opt_str(d, "workflow"),
        name: opt_str(d, "name"),
        pipeline_number: opt_u64(d, "pipeline_number"),
        workflow_id: opt_str(d, "workflow_id"),
        created_at_ms: get_u64(d, "created_at_ms"),
        secrets,
    })
}

fn step_from_doc(d: &Document) -> Result<Step, MetaError> {
    let end = match d.get("end") {
        Some(e @ Bson::Document(_)) => Some(bson::from_bson::<StepEndFields>(e.clone()).map_err(backend)?),
        _ => None,
    };
    Ok(Step {
        job: JobId::new(get_str(d, "job")).map_err(backend)?,
        step: StepId::new(get_str(d, "step")).map_err(backend)?,
        name: get_str(d, "name"),
        status: StepStatus::parse(&get_str(d, "status")).unwrap_or(StepStatus::Running),
        started_at_ms: get_u64(d, "started_at_ms"),
        length: opt_u64(d, "length"),
        archived_at_ms: opt_u64(d, "archived_at_ms"),
        expired_at_ms: opt_u64(d, "expired_at_ms"),
        end,
    })
}

fn segment_doc(job: &JobId, step: &StepId, s: &Segment) -> Document {
    doc! {
        "_id": format!("{job}/{step}/{}", s.seq),
        "job": job.as_str(),
        "step": step.as_str(),
        "seq": i64::from(s.seq),
        "start": int(s.start),
        "length": int(s.length),
        "key": &s.key,
        "compressed": int(s.compressed),
        "checksum": &s.checksum,
        "frames": binary(s.frames.iter().flat_map(|f| f.compressed.to_le_bytes().into_iter().chain(f.decompressed.to_le_bytes())).collect()),
        "frame_lines": binary(s.frame_lines.iter().flat_map(|n| n.to_le_bytes()).collect()),
        "frame_times": binary(s.frame_times.iter().flat_map(|n| n.to_le_bytes()).collect()),
    }
}

fn segment_from_doc(d: &Document) -> Segment {
    Segment {
        seq: get_u64(d, "seq") as u32,
        start: get_u64(d, "start"),
        length: get_u64(d, "length"),
        key: get_str(d, "key"),
        compressed: get_u64(d, "compressed"),
        checksum: get_str(d, "checksum"),
        frames: get_binary(d, "frames")
            .chunks_exact(8)
            .map(|e| FrameEntry {
                compressed: u32::from_le_bytes([e[0], e[1], e[2], e[3]]),
                decompressed: u32::from_le_bytes([e[4], e[5], e[6], e[7]]),
            })
            .collect(),
        frame_lines: get_binary(d, "frame_lines").chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        frame_times: get_binary(d, "frame_times")
            .chunks_exact(8)
            .map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
            .collect(),
    }
}

fn step_keys(docs: Vec<Document>) -> Result<Vec<(JobId, StepId)>, MetaError> {
    docs.iter()
        .map(|d| Ok((JobId::new(get_str(d, "job")).map_err(backend)?, StepId::new(get_str(d, "step")).map_err(backend)?)))
        .collect()
}

/// Indexes each collection needs: (collection, keys, unique).
fn indexes() -> Vec<(&'static str, Document, bool)> {
    let mut all = vec![
        ("jobs", doc! { "project": 1, "number": 1 }, true),
        ("steps", doc! { "job": 1, "seq": 1 }, false),
        // The archiver's queue: unarchived, unexpired steps (absent fields index as null).
        ("steps", doc! { "archived_at_ms": 1, "expired_at_ms": 1, "started_at_ms": 1 }, false),
        ("steps", doc! { "expired_at_ms": 1, "ended_at_ms": 1 }, false),
        ("segments", doc! { "job": 1, "step": 1, "seq": 1 }, false),
        ("test_runs", doc! { "job": 1, "seq": 1 }, true),
        ("artifacts", doc! { "job": 1, "path": 1 }, true),
        ("artifacts", doc! { "expired_ms": 1, "created_ms": 1 }, false),
        ("revoked_tokens", doc! { "until_s": 1 }, false),
    ];
    all.extend(insights::INDEXES.iter().map(|(c, k)| (*c, k.clone(), false)));
    all
}

impl MongoMeta {
    /// Connects to `uri` (`mongodb://…` or `mongodb+srv://…`; the database is the URI's, else
    /// `tailrace`), creates missing indexes and checks that transactions work.
    pub async fn connect(uri: &str) -> Result<Self, MetaError> {
        let mut opts = ClientOptions::parse(uri)
            .await
            .map_err(|e| MetaError::Backend(format!("meta_url is not a usable MongoDB URI: {e}")))?;
        opts.app_name.get_or_insert_with(|| "tailrace".into());
        opts.server_selection_timeout.get_or_insert(Duration::from_secs(10));
        opts.connect_timeout.get_or_insert(Duration::from_secs(5));
        let db_name = opts.default_database.clone().unwrap_or_else(|| DEFAULT_DB.into());
        let client = Client::with_options(opts).map_err(backend)?;
        let db = client.database(&db_name);
        let meta = Self { client, db };
        for (coll, keys, unique) in indexes() {
            let model = IndexModel::builder().keys(keys).options(IndexOptions::builder().unique(unique).build()).build();
            meta.coll(coll).create_index(model).await.map_err(|e| {
                MetaError::Backend(format!("cannot reach MongoDB or create the {coll} indexes of database {db_name}: {e}"))
            })?;
        }
        meta.check_transactions().await?;
        Ok(meta)
    }

    /// Transactions need a replica set (or a sharded cluster); a standalone `mongod` refuses them.
    async fn check_transactions(&self) -> Result<(), MetaError> {
        let mut s = self.client.start_session().await.map_err(backend)?;
        let probe = self.coll("counters");
        s.start_transaction()
            .and_run(&probe, |s, probe| async move { probe.find_one(doc! { "_id": "transaction-probe" }).session(s).await.map(drop) }.boxed())
            .await
            .map_err(|e| {
                MetaError::Backend(format!(
                    "MongoDB refused a transaction ({e}); Tailrace needs a replica set: start mongod with --replSet and run rs.initiate() once (a single-node replica set will do)"
                ))
            })
    }

    pub(crate) fn coll(&self, name: &str) -> Collection<Document> {
        self.db.collection(name)
    }

    /// Runs `f` in a transaction, retried by the driver on transient errors (write conflicts
    /// with another node); `f` must therefore only read and write through the session.
    pub(crate) async fn transaction<C: Send, R>(
        &self,
        context: C,
        f: impl for<'b> FnMut(&'b mut ClientSession, &'b mut C) -> BoxFuture<'b, mongodb::error::Result<R>>,
    ) -> Result<R, MetaError> {
        let mut s = self.client.start_session().await.map_err(backend)?;
        s.start_transaction().and_run(context, f).await.map_err(from_driver)
    }

    /// Next number of a counter (from 1), atomically.
    async fn next_number(&self, counter: &str) -> Result<u64, MetaError> {
        let counters = self.coll("counters");
        for attempt in 0..3 {
            let r = counters
                .find_one_and_update(doc! { "_id": counter }, doc! { "$inc": { "n": 1i64 } })
                .upsert(true)
                .return_document(ReturnDocument::After)
                .await;
            match r {
                Ok(Some(d)) => return Ok(get_u64(&d, "n")),
                Ok(None) => return Err(MetaError::Backend(format!("counter {counter} vanished"))),
                // Two first upserts raced on the unique _id: the loser retries and increments.
                Err(e) if is_duplicate(&e) && attempt < 2 => continue,
                Err(e) => return Err(backend(e)),
            }
        }
        Err(MetaError::Backend(format!("counter {counter}: upsert kept conflicting")))
    }

    async fn one(&self, coll: &str, filter: Document) -> Result<Option<Document>, MetaError> {
        self.coll(coll).find_one(filter).await.map_err(backend)
    }
}

impl MetaStore for MongoMeta {
    fn create_job(&self, new: NewJob) -> BoxFuture<'_, Result<Job, MetaError>> {
        Box::pin(async move {
            validate_project(&new.project)?;
            let number = self.next_number(&format!("job-number:{}", new.project)).await?;
            let id: [u8; 16] = rand::random();
            let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
            let created = now_ms();
            let mut d = doc! {
                "_id": &id,
                "project": &new.project,
                "number": int(number),
                "created_at_ms": int(created),
                "steps_opened": 0i64,
                "test_runs": 0i64,
            };
            set_opt(&mut d, "branch", new.branch.clone());
            set_opt(&mut d, "commit", new.commit.clone());
            set_opt(&mut d, "workflow", new.workflow.clone());
            set_opt(&mut d, "name", new.name.clone());
            set_opt(&mut d, "pipeline_number", new.pipeline_number.map(int));
            set_opt(&mut d, "workflow_id", new.workflow_id.clone());
            if !new.secrets.is_empty() {
                d.insert("secrets", bson::to_bson(&new.secrets).map_err(backend)?);
            }
            self.coll("jobs").insert_one(d).await.map_err(backend)?;
            Ok(Job::from_new(new, JobId::new(id).map_err(backend)?, number, created))
        })
    }

    fn job<'a>(&'a self, id: &'a JobId) -> BoxFuture<'a, Result<Option<Job>, MetaError>> {
        Box::pin(async move { self.one("jobs", doc! { "_id": id.as_str() }).await?.as_ref().map(job_from_doc).transpose() })
    }

    fn open_step<'a>(&'a self, job: &'a JobId, step: &'a StepId, name: &'a str) -> BoxFuture<'a, Result<Step, MetaError>> {
        Box::pin(async move {
            let key = step_key(job, step);
            if let Some(d) = self.one("steps", doc! { "_id": &key }).await? {
                return step_from_doc(&d);
            }
            // The job's counter orders its steps; a step opened twice at once wastes a number.
            let opened = self
                .coll("jobs")
                .find_one_and_update(doc! { "_id": job.as_str() }, doc! { "$inc": { "steps_opened": 1i64 } })
                .return_document(ReturnDocument::After)
                .await
                .map_err(backend)?
                .ok_or_else(|| MetaError::JobNotFound(job.to_string()))?;
            let insert = doc! { "$setOnInsert": {
                "job": job.as_str(),
                "step": step.as_str(),
                "seq": int(get_u64(&opened, "steps_opened")),
                "name": name,
                "status": StepStatus::Running.as_str(),
                "started_at_ms": int(now_ms()),
            } };
            let steps = self.coll("steps");
            match steps.update_one(doc! { "_id": &key }, insert).upsert(true).await {
                Ok(_) => {}
                // Another node inserted it first: theirs stands.
                Err(e) if is_duplicate(&e) => {}
                Err(e) => return Err(backend(e)),
            }
            let d = self.one("steps", doc! { "_id": &key }).await?.ok_or_else(|| MetaError::Backend(format!("step {key} vanished")))?;
            step_from_doc(&d)
        })
    }

    fn finish_step<'a>(&'a self, job: &'a JobId, step: &'a StepId, end: &'a StepEnd) -> BoxFuture<'a, Result<(), MetaError>> {
        Box::pin(async move {
            let fields = bson::to_bson(&StepEndFields::from(end)).map_err(backend)?;
            let set = doc! { "$set": {
                "status": end.status.as_str(),
                "end": fields,
                "length": int(end.length),
                "ended_at_ms": int(end.ended_at_ms),
            } };
            self.coll("steps").update_one(doc! { "_id": step_key(job, step) }, set).await.map_err(backend)?;
            Ok(())
        })
    }

    fn step<'a>(&'a self, job: &'a JobId, step: &'a StepId) -> BoxFuture<'a, Result<Option<Step>, MetaError>> {
        Box::pin(async move { self.one("steps", doc! { "_id": step_key(job, step) }).await?.as_ref().map(step_from_doc).transpose() })
    }

    fn jobs<'a>(&'a self, project: &'a str, before: Option<u64>, limit: usize) -> BoxFuture<'a, Result<Vec<Job>, MetaError>> {
        Box::pin(async move {
            let mut filter = doc! { "project": project };
            if let Some(before) = before {
                filter.insert("number", doc! { "$lt": int(before) });
            }
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let docs = all(self.coll("jobs").find(filter).sort(doc! { "number": -1 }).limit(limit)).await?;
            docs.iter().map(job_from_doc).collect()
        })
    }

    fn projects(&self) -> BoxFuture<'_, Result<Vec<String>, MetaError>> {
        // The job-number counters: one per project that has had a job ("job-number;" is the
        // first id past the prefix).
        Box::pin(async move {
            let filter = doc! { "_id": { "$gte": "job-number:", "$lt": "job-number;" } };
            let docs = all(self.coll("counters").find(filter).sort(doc! { "_id": 1 })).await?;
            Ok(docs.iter().filter_map(|d| d.get_str("_id").ok()?.strip_prefix("job-number:").map(String::from)).collect())
        })
    }

    fn job_by_number<'a>(&'a self, project: &'a str, number: u64) -> BoxFuture<'a, Result<Option<Job>, MetaError>> {
        Box::pin(async move {
            self.one("jobs", doc! { "project": project, "number": int(number) }).await?.as_ref().map(job_from_doc).transpose()
        })
    }

    fn record_test_runs<'a>(&'a self, job: &'a Job, runs: &'a [TestRun]) -> BoxFuture<'a, Result<(), MetaError>> {
        Box::pin(insights::record(self, job, runs))
    }

    fn flaky_tests<'a>(&'a self, project: &'a str) -> BoxFuture<'a, Result<Vec<FlakyTest>, MetaError>> {
        Box::pin(insights::flaky_tests(self, project))
    }

    fn test_history<'a>(
        &'a self,
        project: &'a str,
        test: (&'a str, &'a str, &'a str),
        since_ms: u64,
    ) -> BoxFuture<'a, Result<Vec<TestDay>, MetaError>> {
        Box::pin(insights::test_history(self, project, test, since_ms))
    }

    fn test_metrics<'a>(&'a self, project: &'a str, query: &'a MetricsQuery) -> BoxFuture<'a, Result<TestMetrics, MetaError>> {
        Box::pin(insights::test_metrics(self, project, query))
    }

    fn test_runs<'a>(&'a self, job: &'a JobId, from: u64, limit: usize) -> BoxFuture<'a, Result<Vec<(u64, TestRun)>, MetaError>> {
        Box::pin(insights::test_runs(self, job, from, limit))
    }

    fn steps<'a>(&'a self, job: &'a JobId) -> BoxFuture<'a, Result<Vec<Step>, MetaError>> {
        Box::pin(async move {
            let docs = all(self.coll("steps").find(doc! { "job": job.as_str() }).sort(doc! { "seq": 1 })).await?;
            docs.iter().map(step_from_doc).collect()
        })
    }

    fn record_segments<'a>(
        &'a self,
        job: &'a JobId,
        step: &'a StepId,
        segments: &'a [Segment],
        complete: bool,
    ) -> BoxFuture<'a, Result<(), MetaError>> {
        Box::pin(async move {
            // Segments first, then the mark: an archiver that dies between them leaves the step
            // unarchived, and its retry replaces the same segments.
            let coll = self.coll("segments");
            for s in segments {
                let d = segment_doc(job, step, s);
                coll.replace_one(doc! { "_id": d.get_str("_id").unwrap_or_default() }, d.clone()).upsert(true).await.map_err(backend)?;
            }
            if complete {
                self.coll("steps")
                    .update_one(doc! { "_id": step_key(job, step) }, doc! { "$set": { "archived_at_ms": int(now_ms()) } })
                    .await
                    .map_err(backend)?;
            }
            Ok(())
        })
    }

    fn segments<'a>(&'a self, job: &'a JobId, step: &'a StepId) -> BoxFuture<'a, Result<Vec<Segment>, MetaError>> {
        Box::pin(async move {
            let filter = doc! { "job": job.as_str(), "step": step.as_str() };
            let docs = all(self.coll("segments").find(filter).sort(doc! { "seq": 1 })).await?;
            Ok(docs.iter().map(segment_from_doc).collect())
        })
    }

    fn ended_unarchived(&self, limit: usize) -> BoxFuture<'_, Result<Vec<(JobId, StepId)>, MetaError>> {
        Box::pin(async move {
            let filter = doc! { "archived_at_ms": null, "expired_at_ms": null, "ended_at_ms": { "$ne": null } };
            let coll = self.coll("steps");
            let find = coll.find(filter).sort(doc! { "started_at_ms": 1 }).limit(int(limit as u64));
            step_keys(all(find).await?)
        })
    }

    fn expiry_candidates(&self, cutoff_ms: u64, limit: usize) -> BoxFuture<'_, Result<Vec<(JobId, StepId)>, MetaError>> {
        Box::pin(async move {
            let filter = doc! { "expired_at_ms": null, "ended_at_ms": { "$lt": int(cutoff_ms) } };
            let coll = self.coll("steps");
            let find = coll.find(filter).sort(doc! { "ended_at_ms": 1 }).limit(int(limit as u64));
            step_keys(all(find).await?)
        })
    }

    fn mark_expired<'a>(&'a self, job: &'a JobId, step: &'a StepId) -> BoxFuture<'a, Result<(), MetaError>> {
        Box::pin(async move {
            // Manifest first, then the mark: a sweep that dies between them finds the step again.
            self.coll("segments").delete_many(doc! { "job": job.as_str(), "step": step.as_str() }).await.map_err(backend)?;
            self.coll("steps")
                .update_one(doc! { "_id": step_key(job, step) }, doc! { "$set": { "expired_at_ms": int(now_ms()) } })
                .await
                .map_err(backend)?;
            Ok(())
        })
    }

    fn artifact<'a>(&'a self, job: &'a JobId, path: &'a str) -> BoxFuture<'a, Result<Option<Artifact>, MetaError>> {
        Box::pin(artifacts::get(self, job, path))
    }

    fn insert_artifact<'a>(&'a self, art: &'a Artifact, max_job_bytes: u64) -> BoxFuture<'a, Result<Artifact, MetaError>> {
        Box::pin(artifacts::insert(self, art, max_job_bytes))
    }

    fn advance_artifact<'a>(&'a self, id: &'a str, part: u32, hash_state: &'a [u8], completed_ms: Option<u64>) -> BoxFuture<'a, Result<bool, MetaError>> {
        Box::pin(artifacts::advance(self, id, part, hash_state, completed_ms))
    }

    fn delete_artifact<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), MetaError>> {
        Box::pin(artifacts::remove(self, id, None))
    }

    fn artifacts<'a>(&'a self, job: &'a JobId, after: &'a str, limit: usize) -> BoxFuture<'a, Result<Vec<Artifact>, MetaError>> {
        Box::pin(artifacts::list(self, job, after, limit))
    }

    fn artifacts_to_expire(&self, cutoff_ms: u64, limit: usize) -> BoxFuture<'_, Result<Vec<Artifact>, MetaError>> {
        Box::pin(artifacts::to_expire(self, cutoff_ms, limit))
    }

    fn mark_artifact_expired<'a>(&'a self, id: &'a str, at_ms: u64) -> BoxFuture<'a, Result<(), MetaError>> {
        Box::pin(artifacts::remove(self, id, Some(at_ms)))
    }

    fn revoke_token<'a>(&'a self, id: &'a str, until_s: u64) -> BoxFuture<'a, Result<(), MetaError>> {
        Box::pin(async move {
            self.coll("revoked_tokens")
                .update_one(doc! { "_id": id }, doc! { "$max": { "until_s": int(until_s) } })
                .upsert(true)
                .await
                .map_err(backend)?;
            Ok(())
        })
    }

    fn lease<'a>(&'a self, name: &'a str, holder: &'a str, until_ms: u64, now_ms: u64) -> BoxFuture<'a, Result<bool, MetaError>> {
        Box::pin(async move {
            let filter = doc! { "_id": name, "$or": [ { "until_ms": { "$lte": int(now_ms) } }, { "holder": holder } ] };
            let set = doc! { "$set": { "holder": holder, "until_ms": int(until_ms) } };
            match self.coll("leases").update_one(filter, set).upsert(true).await {
                Ok(_) => Ok(true),
                // The lease exists and is someone else's: the upsert's insert hit its _id.
                Err(e) if is_duplicate(&e) => Ok(false),
                Err(e) => Err(backend(e)),
            }
        })
    }

    fn unlease<'a>(&'a self, name: &'a str, holder: &'a str) -> BoxFuture<'a, Result<(), MetaError>> {
        Box::pin(async move {
            self.coll("leases").delete_one(doc! { "_id": name, "holder": holder }).await.map_err(backend)?;
            Ok(())
        })
    }

    fn revoked_tokens(&self, now_s: u64) -> BoxFuture<'_, Result<Vec<String>, MetaError>> {
        Box::pin(async move {
            let coll = self.coll("revoked_tokens");
            coll.delete_many(doc! { "until_s": { "$lte": int(now_s) } }).await.map_err(backend)?;
            let docs = all(coll.find(doc! {})).await?;
            Ok(docs.iter().map(|d| get_str(d, "_id")).collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_round_trip_and_saturate() {
        let d = doc! { "a": int(5), "b": int(u64::MAX), "c": 7i32, "d": -1i64, "e": 2.5f64 };
        assert_eq!((get_u64(&d, "a"), get_u64(&d, "b"), get_u64(&d, "c")), (5, i64::MAX as u64, 7));
        assert_eq!((opt_u64(&d, "d"), opt_u64(&d, "missing"), get_f64(&d, "e")), (None, None, 2.5));
    }

    #[test]
    fn segments_round_trip() {
        let s = Segment {
            seq: 3,
            start: 1 << 40,
            length: 5,
            key: "logs/k".into(),
            compressed: 9,
            checksum: "c".into(),
            frames: vec![FrameEntry { compressed: 1, decompressed: 2 }, FrameEntry { compressed: u32::MAX, decompressed: 4 }],
            frame_lines: vec![0, u32::MAX],
            frame_times: vec![u64::MAX >> 1],
        };
        let (j, st) = (JobId::new("j").unwrap(), StepId::new("s").unwrap());
        assert_eq!(segment_from_doc(&segment_doc(&j, &st, &s)), s);
    }
}
