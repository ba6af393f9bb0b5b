//! Tests of the staging-file live tier: the offset rule on disk, recovery, ends and readers.

use bytes::Bytes;
use tailrace_protocol::{JobId, StepId};

use super::*;
use crate::live::conformance::end_for;

fn key(step: &str) -> StepKey {
    StepKey::new(JobId::new("job1").unwrap(), StepId::new(step).unwrap())
}

#[tokio::test]
async fn appends_follow_the_offset_rule_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let k = key("s");
    {
        let tier = StagingTier::new(dir.path(), Durability::Fsync).unwrap();
        assert_eq!(tier.open(&k).await.unwrap().durable, 0);
        let w = |o: u64, b: &'static [u8]| tier.append(&k, o, 0, Bytes::from_static(b));
        assert_eq!(w(0, b"hello ").await.unwrap(), AppendOutcome::Written { hwm: 6 });
        assert_eq!(w(3, b"lo world").await.unwrap(), AppendOutcome::Written { hwm: 11 });
        assert_eq!(w(0, b"hel").await.unwrap(), AppendOutcome::Written { hwm: 11 });
        assert_eq!(w(20, b"x").await.unwrap(), AppendOutcome::Gap { hwm: 11 });
        // Nothing is readable before it is durable.
        assert_eq!(tier.read(&k, 0, 100).await.unwrap(), Bytes::new());
        assert_eq!(tier.sync(&k).await.unwrap(), 11);
        assert_eq!(tier.read(&k, 0, 100).await.unwrap(), Bytes::from_static(b"hello world"));
        assert_eq!(tier.read(&k, 6, 3).await.unwrap(), Bytes::from_static(b"wor"));
    }
    // A new process on the same directory recovers the hwm and the checksum.
    let tier = StagingTier::new(dir.path(), Durability::Fsync).unwrap();
    assert_eq!(tier.open(&k).await.unwrap().durable, 11);
    assert_eq!(tier.checksum(&k).await.unwrap(), (11, end_for(b"hello world").checksum));
    tier.append(&k, 11, 0, Bytes::from_static(b"!")).await.unwrap();
    assert_eq!(tier.checksum(&k).await.unwrap(), (12, end_for(b"hello world!").checksum));
}

#[tokio::test]
async fn finish_is_idempotent_wakes_readers_and_refuses_conflicts() {
    let dir = tempfile::tempdir().unwrap();
    let tier = StagingTier::new(dir.path(), Durability::Os).unwrap();
    let k = key("s");
    tier.append(&k, 0, 0, Bytes::from_static(b"abc")).await.unwrap();
    let mut rx = tier.subscribe(&k).await.unwrap();
    assert_eq!(rx.borrow_and_update().durable, 3);
    let end = tier.finish(&k, end_for(b"abc")).await.unwrap();
    rx.changed().await.unwrap();
    assert_eq!(rx.borrow().end.as_deref(), Some(&*end));
    assert_eq!(tier.finish(&k, end_for(b"abc")).await.unwrap(), end);
    assert!(matches!(tier.finish(&k, end_for(b"abd")).await, Err(LiveError::Conflict { .. })));
    assert_eq!(tier.append(&k, 3, 0, Bytes::from_static(b"d")).await.unwrap(), AppendOutcome::Ended { hwm: 3 });
    // After a restart the end is still there.
    let tier = StagingTier::new(dir.path(), Durability::Os).unwrap();
    assert_eq!(tier.open(&k).await.unwrap().end.as_deref(), Some(&*end));
}

#[tokio::test]
async fn unknown_steps_are_not_found_for_readers() {
    let dir = tempfile::tempdir().unwrap();
    let tier = StagingTier::new(dir.path(), Durability::Fsync).unwrap();
    assert!(matches!(tier.read(&key("nope"), 0, 1).await, Err(LiveError::NotFound(_))));
    assert!(matches!(tier.subscribe(&key("nope")).await, Err(LiveError::NotFound(_))));
}

#[tokio::test]
async fn released_steps_are_gone_but_open_readers_finish() {
    let dir = tempfile::tempdir().unwrap();
    let tier = StagingTier::new(dir.path(), Durability::Os).unwrap();
    let k = key("s");
    tier.append(&k, 0, 0, Bytes::from_static(b"abc")).await.unwrap();
    tier.finish(&k, end_for(b"abc")).await.unwrap();
    assert_eq!(tier.resident(10).await.unwrap(), vec![k.clone()]);
    tier.release(&k).await.unwrap();
    tier.release(&k).await.unwrap();
    assert!(matches!(tier.read(&k, 0, 10).await, Err(LiveError::NotFound(_))));
    assert!(tier.resident(10).await.unwrap().is_empty());
}

#[tokio::test]
async fn the_time_index_is_sparse_increasing_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let k = key("s");
    let chunk = Bytes::from(vec![b'x'; 16 * 1024]);
    {
        let tier = StagingTier::new(dir.path(), Durability::Os).unwrap();
        // 64 chunks of 16 KiB, 100 ms apart: a point per 64 KiB (every 4th chunk) or second.
        for i in 0..64u64 {
            tier.append(&k, i * 16 * 1024, 1_000_000 + i * 100_000, chunk.clone()).await.unwrap();
        }
        let idx = tier.time_index(&k).await.unwrap();
        assert_eq!(idx.first(), Some(&(0, 1_000_000)));
        assert_eq!(idx.len(), 16, "{idx:?}");
        assert!(idx.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
    }
    // Torn last record after a crash: dropped on load.
    let path = dir.path().join("job1/s.idx");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend_from_slice(&[1, 2, 3]);
    std::fs::write(&path, bytes).unwrap();
    let tier = StagingTier::new(dir.path(), Durability::Os).unwrap();
    assert_eq!(tier.time_index(&k).await.unwrap().len(), 16);
    tier.append(&k, 64 * 16 * 1024, 99_000_000, chunk.clone()).await.unwrap();
    assert_eq!(tier.time_index(&k).await.unwrap().last(), Some(&(64 * 16 * 1024, 99_000_000)));
}

#[tokio::test]
async fn a_released_prefix_is_refused_frees_disk_and_survives_a_restart() {
    use std::os::unix::fs::MetadataExt as _;
    let dir = tempfile::tempdir().unwrap();
    let k = key("big");
    let data: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
    let upto = 3u64 << 20;
    let log = dir.path().join("job1/big.log");
    {
        let tier = StagingTier::new(dir.path(), Durability::Fsync).unwrap();
        tier.open(&k).await.unwrap();
        tier.append(&k, 0, 0, Bytes::from(data.clone())).await.unwrap();
        // Only durable bytes may be released.
        assert!(tier.release_prefix(&k, upto).await.is_err());
        tier.sync(&k).await.unwrap();
        let blocks_before = std::fs::metadata(&log).unwrap().blocks();
        tier.release_prefix(&k, upto).await.unwrap();
        // Releasing less than what is released is a no-op.
        tier.release_prefix(&k, 1).await.unwrap();
        let meta = std::fs::metadata(&log).unwrap();
        assert_eq!(meta.len(), data.len() as u64, "offsets stay: the log keeps its size");
        assert!(meta.blocks() < blocks_before, "the released prefix's blocks are freed ({} → {})", blocks_before, meta.blocks());
        match tier.read(&k, upto - 1, 10).await {
            Err(LiveError::Released { below, .. }) => assert_eq!(below, upto),
            other => panic!("read below the released mark: {other:?}"),
        }
        assert_eq!(tier.read(&k, upto, 5).await.unwrap(), Bytes::copy_from_slice(&data[upto as usize..upto as usize + 5]));
        // Still running in this process: the hasher saw every byte.
        assert_eq!(tier.checksum(&k).await.unwrap(), (data.len() as u64, end_for(&data).checksum));
    }
    let tier = StagingTier::new(dir.path(), Durability::Fsync).unwrap();
    assert_eq!(tier.open(&k).await.unwrap().durable, data.len() as u64);
    assert!(matches!(tier.read(&k, 0, 10).await, Err(LiveError::Released { below, .. }) if below == upto));
    assert!(matches!(tier.checksum(&k).await, Err(LiveError::Released { below, .. }) if below == upto));
    let tail = tier.read(&k, data.len() as u64 - 3, 10).await.unwrap();
    assert_eq!(&tail[..], &data[data.len() - 3..]);
    tier.finish(&k, end_for(&data)).await.unwrap();
    tier.release(&k).await.unwrap();
    assert!(!dir.path().join("job1/big.rel").exists());
}

#[test]
fn cached_reads_return_exactly_the_written_bytes_or_decline() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&path, &data).unwrap();
    let file = File::open(&path).unwrap();
    let mut buf = vec![0u8; 100_000];
    // Just written, so in the page cache: read inline, byte for byte.
    assert!(read_cached(&file, &mut buf, 123_456));
    assert_eq!(buf, data[123_456..223_456]);
    // Past the end there is nothing to read: decline, so the caller's blocking read reports it.
    assert!(!read_cached(&file, &mut buf, 250_000));
}

#[tokio::test]
async fn staging_passes_the_live_tier_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let tier = StagingTier::new(dir.path(), Durability::Fsync).unwrap();
    crate::live::conformance::run(&tier, "conformance").await;
}
