//! MongoDB documents for artifacts (`artifacts`, `_id` the artifact id, unique by job and path)
//! and each job's stored bytes (`artifact_totals`, `_id` the job), kept together by transactions.

use futures_util::FutureExt;
use mongodb::bson::{doc, Document};
use tailrace_protocol::JobId;

use super::{all, backend, binary, get_binary, get_str, get_u64, int, opt_u64, set_opt, MongoMeta};
use crate::artifacts::Artifact;
use crate::meta::MetaError;

fn to_doc(a: &Artifact) -> Document {
    let mut d = doc! {
        "_id": &a.id,
        "job": a.job.as_str(),
        "path": &a.path,
        "size": int(a.size),
        "sha256": &a.sha256,
        "content_type": &a.content_type,
        "part_size": int(a.part_size),
        "parts_done": i64::from(a.parts_done),
        "hash_state": binary(a.hash_state.clone()),
        "created_ms": int(a.created_ms),
    };
    set_opt(&mut d, "completed_ms", a.completed_ms.map(int));
    set_opt(&mut d, "expired_ms", a.expired_ms.map(int));
    d
}

fn from_doc(d: &Document) -> Result<Artifact, MetaError> {
    Ok(Artifact {
        id: get_str(d, "_id"),
        job: JobId::new(get_str(d, "job")).map_err(backend)?,
        path: get_str(d, "path"),
        size: get_u64(d, "size"),
        sha256: get_str(d, "sha256"),
        content_type: get_str(d, "content_type"),
        part_size: get_u64(d, "part_size"),
        parts_done: get_u64(d, "parts_done") as u32,
        hash_state: get_binary(d, "hash_state"),
        created_ms: get_u64(d, "created_ms"),
        completed_ms: opt_u64(d, "completed_ms"),
        expired_ms: opt_u64(d, "expired_ms"),
    })
}

pub(super) async fn get(m: &MongoMeta, job: &JobId, path: &str) -> Result<Option<Artifact>, MetaError> {
    m.one("artifacts", doc! { "job": job.as_str(), "path": path }).await?.as_ref().map(from_doc).transpose()
}

/// See [`crate::meta::MetaStore::insert_artifact`]: the checks and the insert in one transaction.
pub(super) async fn insert(m: &MongoMeta, a: &Artifact, max_job_bytes: u64) -> Result<Artifact, MetaError> {
    let ctx = (m.coll("artifacts"), m.coll("artifact_totals"), m.coll("jobs"), a, max_job_bytes);
    let r = m
        .transaction(ctx, |s, (arts, totals, jobs, a, max)| {
            async move {
                let job = a.job.as_str();
                if let Some(d) = arts.find_one(doc! { "job": job, "path": &a.path }).session(&mut *s).await? {
                    return from_doc(&d).map_err(super::abort);
                }
                if jobs.find_one(doc! { "_id": job }).session(&mut *s).await?.is_none() {
                    return Err(super::abort(MetaError::JobNotFound(job.to_string())));
                }
                // A folder of this path that is a file, or a file under this path as a folder.
                let parts: Vec<&str> = a.path.split('/').collect();
                let folders: Vec<String> = (1..parts.len()).map(|n| parts[..n].join("/")).collect();
                let live = |extra: Document| {
                    let mut f = doc! { "job": job, "expired_ms": null };
                    f.extend(extra);
                    f
                };
                if let Some(d) = arts.find_one(live(doc! { "path": { "$in": &folders } })).session(&mut *s).await? {
                    let folder = get_str(&d, "path");
                    return Err(super::abort(MetaError::Conflict(format!(
                        "artifact {} cannot be stored: {folder} is a file, not a folder",
                        a.path
                    ))));
                }
                let (lo, hi) = (format!("{}/", a.path), format!("{}0", a.path));
                if let Some(d) = arts.find_one(live(doc! { "path": { "$gte": lo, "$lt": hi } })).session(&mut *s).await? {
                    return Err(super::abort(MetaError::Conflict(format!(
                        "artifact {} cannot be stored: it is the folder of artifact {}",
                        a.path,
                        get_str(&d, "path")
                    ))));
                }
                let total = totals.find_one(doc! { "_id": job }).session(&mut *s).await?.map_or(0, |d| get_u64(&d, "bytes"));
                if total.saturating_add(a.size) > *max {
                    return Err(super::abort(MetaError::Limit(format!(
                        "job {job} holds {total} bytes of artifacts; {} more would pass the limit of {max} (artifacts_max_job_mib)",
                        a.size
                    ))));
                }
                arts.insert_one(to_doc(a)).session(&mut *s).await?;
                totals.update_one(doc! { "_id": job }, doc! { "$inc": { "bytes": int(a.size) } }).upsert(true).session(&mut *s).await?;
                Ok((*a).clone())
            }
            .boxed()
        })
        .await;
    match r {
        // Another node stored the same path first: what is stored comes back.
        Err(MetaError::Backend(e)) => get(m, &a.job, &a.path).await?.ok_or(MetaError::Backend(e)),
        r => r,
    }
}

/// Forgets an artifact (`expire`: keeps its record as a tombstone), taking its size off the
/// job's total if it still counted.
pub(super) async fn remove(m: &MongoMeta, id: &str, expire_at_ms: Option<u64>) -> Result<(), MetaError> {
    let ctx = (m.coll("artifacts"), m.coll("artifact_totals"), id, expire_at_ms);
    m.transaction(ctx, |s, (arts, totals, id, expire)| {
        async move {
            let id: &str = id;
            if let Some(d) = arts.find_one(doc! { "_id": id, "expired_ms": null }).session(&mut *s).await? {
                let (job, size) = (get_str(&d, "job"), get_u64(&d, "size"));
                totals.update_one(doc! { "_id": job }, doc! { "$inc": { "bytes": -int(size) } }).session(&mut *s).await?;
            }
            match expire {
                Some(at) => arts.update_one(doc! { "_id": id }, doc! { "$set": { "expired_ms": int(*at) } }).session(&mut *s).await.map(drop),
                None => arts.delete_one(doc! { "_id": id }).session(&mut *s).await.map(drop),
            }
        }
        .boxed()
    })
    .await
}

pub(super) async fn advance(m: &MongoMeta, id: &str, part: u32, state: &[u8], completed_ms: Option<u64>) -> Result<bool, MetaError> {
    let mut set = doc! { "parts_done": i64::from(part) + 1, "hash_state": binary(state.to_vec()) };
    set_opt(&mut set, "completed_ms", completed_ms.map(int));
    let filter = doc! { "_id": id, "parts_done": i64::from(part), "completed_ms": null };
    let r = m.coll("artifacts").update_one(filter, doc! { "$set": set }).await.map_err(backend)?;
    Ok(r.matched_count == 1)
}

pub(super) async fn list(m: &MongoMeta, job: &JobId, after: &str, limit: usize) -> Result<Vec<Artifact>, MetaError> {
    let filter = doc! { "job": job.as_str(), "path": { "$gt": after }, "completed_ms": { "$ne": null }, "expired_ms": null };
    let docs = all(m.coll("artifacts").find(filter).sort(doc! { "path": 1 }).limit(int(limit as u64))).await?;
    docs.iter().map(from_doc).collect()
}

pub(super) async fn to_expire(m: &MongoMeta, cutoff_ms: u64, limit: usize) -> Result<Vec<Artifact>, MetaError> {
    let filter = doc! { "expired_ms": null, "created_ms": { "$lt": int(cutoff_ms) } };
    let coll = m.coll("artifacts");
            let find = coll.find(filter).sort(doc! { "created_ms": 1, "_id": 1 }).limit(int(limit as u64));
    all(find).await?.iter().map(from_doc).collect()
}
