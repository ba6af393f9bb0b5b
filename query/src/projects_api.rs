//! `GET /api/v1/projects` and `GET /api/v1/projects/{vcs}/{org}/{repo}/jobs`: the projects a
//! caller may read, and a project's jobs newest first with their status, so that a person can
//! find their job.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use tailrace_protocol::token::Scope;
use tailrace_storage::live::StepStatus;
use tailrace_storage::{Job, Step};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::tests_api::Page;
use crate::AppState;

/// Jobs per page unless `?limit=` says otherwise; and at most.
const PAGE: usize = 30;
const MAX_PAGE: usize = 100;

#[derive(Debug, Serialize)]
pub struct ProjectItem {
    pub slug: String,
}

/// The one project a token is bound to; `None` for an admin token, which reads them all.
fn own_project(scope: &Scope) -> Option<&str> {
    match scope {
        Scope::Admin => None,
        Scope::Project { project } | Scope::Job { project, .. } => Some(project),
    }
}

/// The projects the caller's token reads: all for an admin token, its own for a project or job
/// token.
pub async fn list_projects(State(state): State<Arc<AppState>>, Caller(claims): Caller) -> Result<Json<Page<ProjectItem>>, ApiError> {
    let slugs = match own_project(&claims.scope) {
        None => state.core.meta.projects().await?,
        Some(project) => vec![project.to_string()],
    };
    Ok(Json(Page { items: slugs.into_iter().map(|slug| ProjectItem { slug }).collect(), next_page_token: None }))
}

#[derive(Debug, Deserialize)]
pub struct JobsQuery {
    /// `next_page_token` of the page before: jobs numbered below it.
    #[serde(rename = "page-token")]
    pub page_token: Option<String>,
    pub limit: Option<usize>,
}

/// One job of a project's list: the job, and its state from its steps.
#[derive(Debug, Serialize)]
pub struct JobSummary {
    #[serde(flatten)]
    pub job: Job,
    /// `created` (no step yet), `running`, or how it ended: `failed`, `timed_out`, `cancelled`
    /// (the worst of its steps) or `success`.
    pub status: &'static str,
    pub steps: usize,
    /// From its first step's start to its last step's end (to now while running).
    pub duration_ms: Option<u64>,
}

pub async fn list_jobs(
    State(state): State<Arc<AppState>>,
    Caller(claims): Caller,
    Path((vcs, org, repo)): Path<(String, String, String)>,
    Query(q): Query<JobsQuery>,
) -> Result<Json<Page<JobSummary>>, ApiError> {
    let project = format!("{vcs}/{org}/{repo}");
    if own_project(&claims.scope).is_some_and(|p| p != project) {
        return Err(ApiError::NotFound(format!("project {project} not found, or your token cannot read it")));
    }
    let before = match q.page_token.as_deref() {
        None => None,
        Some(t) => Some(t.parse::<u64>().map_err(|_| ApiError::BadRequest(format!("invalid page-token {t:?}; pass next_page_token as given")))?),
    };
    let limit = q.limit.unwrap_or(PAGE).clamp(1, MAX_PAGE);
    let jobs = state.core.meta.jobs(&project, before, limit).await?;
    let next_page_token = (jobs.len() == limit).then(|| jobs.last().map(|j| j.number.to_string())).flatten();
    let mut items = Vec::with_capacity(jobs.len());
    for job in jobs.into_iter().filter(|j| claims.can_read(&j.project, j.id.as_str())) {
        let steps = state.core.meta.steps(&job.id).await?;
        items.push(summary(job, &steps, tailrace_storage::meta::now_ms()));
    }
    Ok(Json(Page { items, next_page_token }))
}

fn summary(job: Job, steps: &[Step], now_ms: u64) -> JobSummary {
    let rank = |s: StepStatus| match s {
        StepStatus::Running => 4,
        StepStatus::Failed => 3,
        StepStatus::TimedOut => 2,
        StepStatus::Cancelled => 1,
        StepStatus::Success => 0,
    };
    let status = match steps.iter().map(|s| s.status).max_by_key(|s| rank(*s)) {
        None => "created",
        Some(s) => s.as_str(),
    };
    let start = steps.iter().map(|s| s.started_at_ms).min();
    let running = steps.iter().any(|s| s.end.is_none());
    let end = if running { Some(now_ms) } else { steps.iter().filter_map(|s| s.end.as_ref().map(|e| e.ended_at_ms)).max() };
    let duration_ms = start.zip(end).map(|(a, b)| b.saturating_sub(a));
    JobSummary { job, status, steps: steps.len(), duration_ms }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tailrace_protocol::{EndReason, JobId, StepId};
    use tailrace_storage::meta::StepEndFields;

    fn step(status: StepStatus, started: u64, ended: Option<u64>) -> Step {
        Step {
            job: JobId::new("j").unwrap(),
            step: StepId::new("s").unwrap(),
            name: "s".into(),
            status,
            started_at_ms: started,
            length: None,
            archived_at_ms: None,
            expired_at_ms: None,
            end: ended.map(|e| StepEndFields { exit_code: Some(0), reason: EndReason::Exited, checksum: String::new(), duration_ms: e - started, ended_at_ms: e }),
        }
    }

    #[test]
    fn a_job_is_as_bad_as_its_worst_step() {
        let job = || Job { id: JobId::new("j").unwrap(), project: "gh/a/b".into(), number: 1, branch: None, commit: None, workflow: None, name: None, pipeline_number: None, workflow_id: None, created_at_ms: 0, secrets: vec![] };
        let s = summary(job(), &[], 50);
        assert_eq!((s.status, s.duration_ms), ("created", None));
        let s = summary(job(), &[step(StepStatus::Success, 10, Some(20)), step(StepStatus::Failed, 20, Some(35))], 50);
        assert_eq!((s.status, s.steps, s.duration_ms), ("failed", 2, Some(25)));
        let s = summary(job(), &[step(StepStatus::Failed, 10, Some(20)), step(StepStatus::Running, 20, None)], 50);
        assert_eq!((s.status, s.duration_ms), ("running", Some(40)));
        assert_eq!(summary(job(), &[step(StepStatus::Success, 1, Some(2))], 5).status, "success");
    }
}
