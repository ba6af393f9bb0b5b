//! Where a step's bytes are read from: the live tier while it holds them, the archive after.
//! A reader switches from live to archive by itself when the archiver releases the live bytes
//! under it — a running step's archived prefix, or the whole step once it ended — so readers see
//! one stream with no seam.

use bytes::Bytes;
use tailrace_storage::live::StepEnd;
use tailrace_storage::{LiveError, Progress, Segment, StepKey};
use tokio::sync::watch;

use crate::error::ApiError;
use crate::AppState;

/// A step's bytes as a reader sees them.
pub enum Source {
    /// In the live tier; the receiver wakes on new durable bytes and on the end. `prefix` holds
    /// the segments of bytes already archived while the step runs (loaded when first needed).
    Live { rx: watch::Receiver<Progress>, prefix: Vec<Segment> },
    /// In the archive; complete.
    Archived { segments: Vec<Segment>, end: StepEnd },
}

impl Source {
    /// Opens the step wherever its bytes are now.
    pub async fn open(state: &AppState, key: &StepKey) -> Result<Self, ApiError> {
        match state.core.live.subscribe(key).await {
            Ok(rx) => Ok(Source::Live { rx, prefix: Vec::new() }),
            Err(LiveError::NotFound(_)) => Self::archived(state, key).await,
            Err(e) => Err(e.into()),
        }
    }

    async fn archived(state: &AppState, key: &StepKey) -> Result<Self, ApiError> {
        let not_found = || ApiError::NotFound(format!("no output stored for step {key}"));
        let step = state.core.meta.step(&key.job, &key.step).await?.ok_or_else(not_found)?;
        if let Some(at) = step.expired_at_ms {
            return Err(ApiError::Gone(format!(
                "the output of step {key} expired and was deleted by the retention policy (at {at} ms since the epoch)"
            )));
        }
        let (Some(_), Some(fields)) = (step.archived_at_ms, step.end.as_ref()) else {
            return Err(not_found());
        };
        let segments = state.core.meta.segments(&key.job, &key.step).await?;
        let end = StepEnd {
            status: step.status,
            reason: fields.reason,
            exit_code: fields.exit_code,
            length: step.length.unwrap_or(0),
            checksum: fields.checksum.clone(),
            duration_ms: fields.duration_ms,
            ended_at_ms: fields.ended_at_ms,
        };
        Ok(Source::Archived { segments, end })
    }

    /// The readable length now, and the end if the step ended. Marks the live state as seen, so
    /// a later [`Source::changed`] waits for news after this snapshot.
    pub fn snapshot(&mut self) -> (u64, Option<StepEnd>) {
        match self {
            Source::Live { rx, .. } => {
                let p = rx.borrow_and_update();
                let end = p.end.as_deref().cloned();
                (end.as_ref().map_or(p.durable, |e| e.length), end)
            }
            Source::Archived { end, .. } => (end.length, Some(end.clone())),
        }
    }

    /// Reads up to `max` bytes at `offset`; empty when nothing more is readable now.
    pub async fn read(&mut self, state: &AppState, key: &StepKey, offset: u64, max: usize) -> Result<Bytes, ApiError> {
        if let Source::Live { prefix, rx } = self {
            // Nothing past the durable length this reader was told of: a tail at the live edge
            // asks here after every delivery, and the answer costs no live-tier read.
            if offset >= rx.borrow().durable {
                return Ok(Bytes::new());
            }
            match state.core.live.read(key, offset, max).await {
                Ok(b) => return Ok(b),
                // A running step's prefix went to the archive; its segments are committed.
                Err(LiveError::Released { .. }) => {
                    if prefix.last().is_none_or(|s| offset >= s.start + s.length) {
                        *prefix = state.core.meta.segments(&key.job, &key.step).await?;
                    }
                    let b = read_archive(state, key, prefix, offset, max).await?;
                    if b.is_empty() {
                        return Err(ApiError::Internal(format!("step {key}: offset {offset} was released but is not in the archive")));
                    }
                    return Ok(b);
                }
                // The archiver released the live bytes: the manifest is committed by now.
                Err(LiveError::NotFound(_)) => *self = Self::archived(state, key).await?,
                Err(e) => return Err(e.into()),
            }
        }
        let Source::Archived { segments, .. } = self else { return Ok(Bytes::new()) };
        read_archive(state, key, segments, offset, max).await
    }

    /// Waits until the live step has news (bytes or its end). Returns at once for an archived step.
    pub async fn changed(&mut self, state: &AppState, key: &StepKey) -> Result<(), ApiError> {
        if let Source::Live { rx, .. } = self
            && rx.changed().await.is_err()
        {
            // The step's in-memory state was retired (it ended): reopen wherever it is now.
            *self = Self::open(state, key).await?;
        }
        Ok(())
    }
}

/// Reads up to `max` bytes at `offset` from archived `segments`; empty past their end.
async fn read_archive(state: &AppState, key: &StepKey, segments: &[Segment], offset: u64, max: usize) -> Result<Bytes, ApiError> {
    let archive = state.archive.as_ref().ok_or_else(|| ApiError::Internal("step is archived but no archive is configured".into()))?;
    archive.read(segments, offset, max).await.map_err(|e| {
        if e.is_not_found() {
            ApiError::Gone(format!("the archived output of step {key} is no longer stored (expired or deleted)"))
        } else {
            ApiError::Internal(format!("archive read failed: {e}"))
        }
    })
}
