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

/// Where the step's time index says output arrived: `(offset, µs since the epoch)` points in
/// offset order, and whether they come from the live tier (a point every 64 KiB and after
/// every pause of a second or more) rather than the archive (a point per 256 KiB frame).
pub async fn time_points(state: &AppState, key: &StepKey, source: &mut Source) -> Result<(Vec<(u64, u64)>, bool), ApiError> {
    if let Source::Live { .. } = source {
        match state.core.live.time_index(key).await {
            Ok(points) => return Ok((points, true)),
            // Released by the archiver just now: use the archive's index.
            Err(LiveError::NotFound(_)) => *source = Source::open(state, key).await?,
            Err(e) => return Err(e.into()),
        }
    }
    let Source::Archived { segments, .. } = source else { return Ok((Vec::new(), false)) };
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
    Ok((points, false))
}

/// The offset to serve `?since=t_us` from.
pub async fn offset_since(state: &AppState, key: &StepKey, source: &mut Source, t_us: u64) -> Result<u64, ApiError> {
    let (points, live) = time_points(state, key, source).await?;
    if !live {
        return Ok(last_at_or_before(points.into_iter(), t_us));
    }
    let i = points.partition_point(|&(_, t)| t <= t_us);
    if i == 0 {
        return Ok(0);
    }
    let (off, t) = points[i - 1];
    // Everything after a point arrived within TIME_INDEX_GAP_US of it (or a newer point would
    // exist): if T is later than that, the whole interval predates T.
    if t_us >= t + TIME_INDEX_GAP_US {
        let (len, _) = source.snapshot();
        return Ok(points.get(i).map_or(len, |p| p.0));
    }
    Ok(off)
}

/// Answer of `GET /api/v1/jobs/{job}/steps/{step}/times`.
#[derive(Debug, serde::Serialize)]
pub struct TimePoints {
    /// `[offset, ms since the epoch]`: output from `offset` on arrived at or after that time
    /// (and before the next point's).
    pub points: Vec<(u64, u64)>,
}

/// `GET /api/v1/jobs/{job}/steps/{step}/times`: the step's time index, for showing when each
/// line arrived (the web UI's timestamps).
pub async fn get_times(
    axum::extract::State(state): axum::extract::State<std::sync::Arc<AppState>>,
    caller: crate::auth::Caller,
    axum::extract::Path((job, step)): axum::extract::Path<(String, String)>,
) -> Result<axum::Json<TimePoints>, ApiError> {
    let key = crate::output::readable_step(&state, &caller, &job, &step).await?;
    let mut source = Source::open(&state, &key).await?;
    let (points, _) = time_points(&state, &key, &mut source).await?;
    Ok(axum::Json(TimePoints { points: points.into_iter().map(|(off, us)| (off, us / 1000)).collect() }))
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
