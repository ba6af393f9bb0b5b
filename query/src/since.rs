//! `?since=T` on step output: where the output read at or after time T begins, from the sparse
//! time index. While live, a point is made every 64 KiB and wherever output resumes after a
//! second or more of silence, so the answer is exact at every pause and otherwise includes at
//! most one 64 KiB interval from before T. Once archived, the index is one point per 256 KiB
//! frame. Output read after T is never left out.

use tailrace_storage::live::TIME_INDEX_GAP_US;
use tailrace_storage::{LiveError, StepKey};

use crate::error::ApiError;
use crate::source::Source;
use crate::AppState;

/// The offset to serve `?since=t_us` from.
pub async fn offset_since(state: &AppState, key: &StepKey, source: &mut Source, t_us: u64) -> Result<u64, ApiError> {
    if let Source::Live { .. } = source {
        match state.core.live.time_index(key).await {
            Ok(points) => {
                let i = points.partition_point(|&(_, t)| t <= t_us);
                if i == 0 {
                    return Ok(0);
                }
                let (off, t) = points[i - 1];
                // Everything after a point arrived within TIME_INDEX_GAP_US of it (or a newer
                // point would exist): if T is later than that, the whole interval predates T.
                if t_us >= t + TIME_INDEX_GAP_US {
                    let (len, _) = source.snapshot();
                    return Ok(points.get(i).map_or(len, |p| p.0));
                }
                return Ok(off);
            }
            // Released by the archiver just now: use the archive's index.
            Err(LiveError::NotFound(_)) => *source = Source::open(state, key).await?,
            Err(e) => return Err(e.into()),
        }
    }
    let Source::Archived { segments, .. } = source else { return Ok(0) };
    if segments.iter().any(|s| s.frame_times.len() != s.frames.len()) {
        return Err(ApiError::BadRequest(format!("step {key} was archived without a time index; use ?offset= or ?lines=")));
    }
    let mut points = Vec::new();
    for seg in segments.iter() {
        let mut at = seg.start;
        for (f, &t) in seg.frames.iter().zip(&seg.frame_times) {
            points.push((at, t));
            at += u64::from(f.decompressed);
        }
    }
    Ok(last_at_or_before(points.into_iter(), t_us))
}

/// The offset of the last `(offset, time)` point with time ≤ `t`, or 0 if there is none.
fn last_at_or_before(points: impl Iterator<Item = (u64, u64)>, t: u64) -> u64 {
    points.take_while(|&(_, time)| time <= t).last().map_or(0, |(off, _)| off)
}

#[cfg(test)]
mod tests {
    use super::last_at_or_before;

    #[test]
    fn the_point_at_or_before() {
        let points = [(0, 10), (100, 20), (200, 30)];
        assert_eq!(last_at_or_before(points.into_iter(), 5), 0);
        assert_eq!(last_at_or_before(points.into_iter(), 20), 100);
        assert_eq!(last_at_or_before(points.into_iter(), 29), 100);
        assert_eq!(last_at_or_before(points.into_iter(), 99), 200);
        assert_eq!(last_at_or_before(std::iter::empty(), 99), 0);
    }
}
