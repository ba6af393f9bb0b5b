//! Tailrace storage: the live tier (where a running step's bytes are held durably and followed by
//! readers), the archive, artifacts, and the metadata store.
//!
//! Both are traits: the live tier has its embedded backend (staging files on local disk); the
//! metadata store has SQLite (embedded) and MongoDB (scale-out), held to one conformance suite.

pub mod archive;
pub mod audit;
pub mod artifacts;
pub mod digest;
pub mod histogram;
pub mod insights;
pub mod live;
pub mod meta;
#[cfg(feature = "scale-out")]
pub mod mongo;
#[cfg(feature = "scale-out")]
pub mod redis_live;
pub mod segment;
pub mod sqlite;
pub mod staging;
pub mod test_runs;
pub mod time;

pub use live::{AppendOutcome, Durability, LiveError, LiveTier, Progress, StepEnd, StepKey, StepStatus};
pub use artifacts::{Artifact, ArtifactConfig, ArtifactError, Artifacts, UploadOutcome, UploadRequest};
pub use archive::{remove_local_upload_leftovers, Archive, ArchiveConfig, ArchiveError};
pub use audit::{AuditConfig, AuditLog};
pub use meta::{Job, MetaError, MetaStore, NewJob, Segment, Step, TestRun};
#[cfg(feature = "scale-out")]
pub use mongo::MongoMeta;
#[cfg(feature = "scale-out")]
pub use redis_live::{RedisConfig, RedisTier};
pub use sqlite::SqliteMeta;
pub use staging::StagingTier;
