//! The upload offset rule, digests and ranged reads of artifact storage, on an in-memory object
//! store and SQLite.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::TryStreamExt as _;
use sha2::Digest as _;
use tailrace_protocol::JobId;

use super::*;
use crate::meta::NewJob;
use crate::SqliteMeta;

const PART: u64 = 1024;

async fn setup() -> (Arc<Artifacts>, JobId) {
    let meta: Arc<dyn MetaStore> = Arc::new(SqliteMeta::in_memory().unwrap());
    let job = meta.create_job(NewJob { project: "gh/a/b".into(), ..Default::default() }).await.unwrap().id;
    let store = Arc::new(object_store::memory::InMemory::new());
    let cfg = ArtifactConfig { part_size: PART, max_file: 1 << 20, max_job: 1 << 20, uploads: 2 };
    (Arc::new(Artifacts::new(store, meta, cfg)), job)
}

fn req(job: &JobId, data: &[u8], offset: u64) -> UploadRequest {
    UploadRequest {
        job: job.clone(),
        path: "out/data.bin".into(),
        offset,
        size: data.len() as u64,
        sha256: sha2::Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect(),
        content_type: "application/octet-stream".into(),
    }
}

/// A body of `bytes` in chunks of 100 (so parts are cut across chunks).
fn body(bytes: &[u8]) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Unpin {
    futures_util::stream::iter(bytes.chunks(100).map(|c| Ok(Bytes::copy_from_slice(c))).collect::<Vec<_>>())
}

async fn read_all(a: &Arc<Artifacts>, art: &Artifact, start: u64, end: u64) -> Vec<u8> {
    a.read(art, start, end).try_collect::<Vec<Bytes>>().await.unwrap().concat()
}

#[tokio::test]
async fn a_resent_prefix_is_skipped_and_a_gap_refused() {
    let (a, job) = setup().await;
    let data: Vec<u8> = (0..3 * PART + 17).map(|i| (i * 7 % 251) as u8).collect();
    // The body stops one and a half parts in: one part is durable.
    let half = (PART * 3 / 2) as usize;
    let UploadOutcome::Partial { artifact } = a.upload(req(&job, &data, 0), body(&data[..half])).await.unwrap() else { panic!("partial") };
    assert_eq!(artifact.durable(), PART);
    // Starting past what the server holds is a gap.
    let gap = a.upload(req(&job, &data, 2 * PART), body(&data[2 * PART as usize..])).await;
    assert!(matches!(gap, Err(ArtifactError::Gap { durable: PART })), "{gap:?}");
    // Resending from 100 bytes in: the first PART - 100 bytes are skipped, not stored twice.
    let UploadOutcome::Complete { artifact, new: true } = a.upload(req(&job, &data, 100), body(&data[100..])).await.unwrap() else { panic!("complete") };
    assert_eq!(a.metrics.stored_bytes.load(Relaxed), data.len() as u64);
    assert_eq!(read_all(&a, &artifact, 0, artifact.size).await, data);
    assert_eq!(read_all(&a, &artifact, PART - 3, 2 * PART + 3).await, &data[(PART - 3) as usize..(2 * PART + 3) as usize]);
    // Again, complete: answered from the record without reading the body.
    let again = a.upload(req(&job, &data, 0), body(b"")).await.unwrap();
    assert!(matches!(again, UploadOutcome::Complete { new: false, .. }));
}

#[tokio::test]
async fn a_wrong_digest_keeps_nothing() {
    let (a, job) = setup().await;
    let data = vec![5u8; (2 * PART + 1) as usize];
    let mut r = req(&job, &data, 0);
    r.sha256 = "00".repeat(32);
    let err = a.upload(r, body(&data)).await.unwrap_err();
    assert!(matches!(err, ArtifactError::Digest { .. }), "{err}");
    assert!(a.meta.artifact(&job, "out/data.bin").await.unwrap().is_none());
    let objects: Vec<_> = a.store.list(None).try_collect().await.unwrap();
    assert!(objects.is_empty(), "{objects:?}");
}

#[tokio::test]
async fn bodies_longer_than_declared_and_bad_requests_are_refused() {
    let (a, job) = setup().await;
    let data = vec![1u8; 10];
    let mut r = req(&job, &data, 0);
    r.size = 5;
    assert!(matches!(a.upload(r, body(&data)).await, Err(ArtifactError::Invalid(_))));
    let mut r = req(&job, &data, 0);
    r.path = "../x".into();
    assert!(matches!(a.upload(r, body(&data)).await, Err(ArtifactError::Name(_))));
    let mut r = req(&job, &data, 0);
    r.sha256 = "xyz".into();
    assert!(matches!(a.upload(r, body(&data)).await, Err(ArtifactError::Invalid(_))));
    let empty = a.upload(req(&job, b"", 0), body(b"")).await.unwrap();
    assert!(matches!(empty, UploadOutcome::Complete { artifact, new: true } if artifact.size == 0));
}
