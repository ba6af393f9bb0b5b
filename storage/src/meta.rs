//! The metadata-store contract: jobs, steps, segment manifests, test runs with their insights
//! rollups, and artifacts. One narrow trait, one conformance suite, one backend per deployment shape.

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tailrace_protocol::secret::SecretDigest;
use tailrace_protocol::{JobId, StepId};

use crate::artifacts::Artifact;
use crate::live::{StepEnd, StepStatus};
use crate::insights::{FlakyTest, MetricsQuery, TestDay, TestMetrics};
pub use crate::test_runs::TestRun;

/// What a new job is created with.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewJob {
    /// Project slug, e.g. `gh/acme/app`.
    pub project: String,
    #[serde(default)]
    pub branch: Option<String>,
    #[serde(default)]
    pub commit: Option<String>,
    #[serde(default)]
    pub workflow: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    /// The CI system's pipeline number (CircleCI's `pipeline-number`), for insights.
    #[serde(default)]
    pub pipeline_number: Option<u64>,
    /// The workflow run this job belongs to (CircleCI's `workflow-id`); jobs of one workflow run
    /// share it. Insights count workflow runs by it (a job without one is its own run).
    #[serde(default)]
    pub workflow_id: Option<String>,
    /// Digests of the job's secrets: ingest masks them in output the agent did not mask.
    #[serde(default)]
    pub secrets: Vec<SecretDigest>,
}

/// A job: one unit of CI work whose steps stream output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub id: JobId,
    pub project: String,
    /// Counts up from 1 per project, like CircleCI job numbers.
    pub number: u64,
    pub branch: Option<String>,
    pub commit: Option<String>,
    pub workflow: Option<String>,
    pub name: Option<String>,
    pub pipeline_number: Option<u64>,
    pub workflow_id: Option<String>,
    pub created_at_ms: u64,
    /// Digests of the job's secrets; never shown by the API (a digest of a weak secret can be
    /// brute-forced).
    #[serde(skip_serializing, default)]
    pub secrets: Vec<SecretDigest>,
}

impl Job {
    /// The job a backend stored for `new`, with the id, number and time it gave it.
    pub fn from_new(new: NewJob, id: JobId, number: u64, created_at_ms: u64) -> Self {
        Self {
            id,
            project: new.project,
            number,
            branch: new.branch,
            commit: new.commit,
            workflow: new.workflow,
            name: new.name,
            pipeline_number: new.pipeline_number,
            workflow_id: new.workflow_id,
            created_at_ms,
            secrets: new.secrets,
        }
    }
}

/// A step of a job, as listed by the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub job: JobId,
    pub step: StepId,
    pub name: String,
    pub status: StepStatus,
    pub started_at_ms: u64,
    /// Bytes of output: the verified total once ended, the durable length while running.
    pub length: Option<u64>,
    /// When the step's output moved to the archive (object store); `None` while in the live tier.
    pub archived_at_ms: Option<u64>,
    /// When the step's output was deleted by retention; readers get `410 Gone` after that.
    pub expired_at_ms: Option<u64>,
    #[serde(flatten)]
    pub end: Option<StepEndFields>,
}

/// The end-of-step fields of a [`Step`], present once it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepEndFields {
    pub exit_code: Option<i32>,
    pub reason: tailrace_protocol::EndReason,
    pub checksum: String,
    pub duration_ms: u64,
    pub ended_at_ms: u64,
}

impl From<&StepEnd> for StepEndFields {
    fn from(e: &StepEnd) -> Self {
        Self {
            exit_code: e.exit_code,
            reason: e.reason,
            checksum: e.checksum.clone(),
            duration_ms: e.duration_ms,
            ended_at_ms: e.ended_at_ms,
        }
    }
}

/// One archived segment of a step: stream bytes `[start, start + length)` in object `key`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    pub seq: u32,
    pub start: u64,
    pub length: u64,
    pub key: String,
    /// Size of the object (frames and seek table).
    pub compressed: u64,
    /// xxh3-64 of the segment's decompressed bytes.
    pub checksum: String,
    pub frames: Vec<crate::segment::FrameEntry>,
    /// Newlines in each frame (the sparse line index); empty for segments written without it.
    #[serde(default)]
    pub frame_lines: Vec<u32>,
    /// When each frame's first byte was read (µs since the epoch; the sparse time index);
    /// empty for segments written without it.
    #[serde(default)]
    pub frame_times: Vec<u64>,
}

/// Why the metadata store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetaError {
    #[error("job {0} not found")]
    JobNotFound(String),
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    /// The operation would contradict what is stored (e.g. an artifact name taken).
    #[error("{0}")]
    Conflict(String),
    /// A configured limit would be exceeded.
    #[error("{0}")]
    Limit(String),
    #[error("metadata store error: {0}")]
    Backend(String),
}

/// Jobs and steps. Every method is cancel-safe: each is one atomic operation in the backend.
pub trait MetaStore: Send + Sync + 'static {
    /// Creates a job with the next number of its project.
    fn create_job(&self, new: NewJob) -> BoxFuture<'_, Result<Job, MetaError>>;
    fn job<'a>(&'a self, id: &'a JobId) -> BoxFuture<'a, Result<Option<Job>, MetaError>>;
    /// A project's jobs, newest first: those numbered below `before` (all if `None`), at most
    /// `limit` of them.
    fn jobs<'a>(&'a self, project: &'a str, before: Option<u64>, limit: usize) -> BoxFuture<'a, Result<Vec<Job>, MetaError>>;
    /// Every project that has had a job, by slug.
    fn projects(&self) -> BoxFuture<'_, Result<Vec<String>, MetaError>>;
    /// Records a step as running unless it exists; returns it either way.
    fn open_step<'a>(&'a self, job: &'a JobId, step: &'a StepId, name: &'a str)
    -> BoxFuture<'a, Result<Step, MetaError>>;
    /// Records the verified end of a step (idempotent).
    fn finish_step<'a>(&'a self, job: &'a JobId, step: &'a StepId, end: &'a StepEnd)
    -> BoxFuture<'a, Result<(), MetaError>>;
    fn step<'a>(&'a self, job: &'a JobId, step: &'a StepId) -> BoxFuture<'a, Result<Option<Step>, MetaError>>;
    /// A project's job by its number.
    fn job_by_number<'a>(&'a self, project: &'a str, number: u64) -> BoxFuture<'a, Result<Option<Job>, MetaError>>;
    /// Appends test runs to a job (one uploaded result file) and folds them into the insights
    /// rollups, atomically.
    fn record_test_runs<'a>(&'a self, job: &'a Job, runs: &'a [TestRun]) -> BoxFuture<'a, Result<(), MetaError>>;
    /// A project's flaky tests, most flaked first.
    fn flaky_tests<'a>(&'a self, project: &'a str) -> BoxFuture<'a, Result<Vec<FlakyTest>, MetaError>>;
    /// One test's (classname, name, file; `""` for none) days from `since_ms` on, oldest first,
    /// over every workflow and branch, from the rollups.
    fn test_history<'a>(&'a self, project: &'a str, test: (&'a str, &'a str, &'a str), since_ms: u64)
    -> BoxFuture<'a, Result<Vec<TestDay>, MetaError>>;
    /// Test metrics of one workflow of a project, from the rollups.
    fn test_metrics<'a>(&'a self, project: &'a str, query: &'a MetricsQuery) -> BoxFuture<'a, Result<TestMetrics, MetaError>>;
    /// The job's test runs numbered `from` on, in upload order, at most `limit`, with their numbers.
    fn test_runs<'a>(&'a self, job: &'a JobId, from: u64, limit: usize) -> BoxFuture<'a, Result<Vec<(u64, TestRun)>, MetaError>>;
    /// The job's steps in the order they were opened.
    fn steps<'a>(&'a self, job: &'a JobId) -> BoxFuture<'a, Result<Vec<Step>, MetaError>>;
    /// Adds segments to a step's archive manifest (replacing any with the same `seq`: an
    /// archiver that retried after a crash) and, with `complete`, marks the step archived — one
    /// transaction. A running step gets segments without `complete` (incremental archiving).
    fn record_segments<'a>(&'a self, job: &'a JobId, step: &'a StepId, segments: &'a [Segment], complete: bool)
    -> BoxFuture<'a, Result<(), MetaError>>;
    /// The step's archived segments in stream order (empty if not archived).
    fn segments<'a>(&'a self, job: &'a JobId, step: &'a StepId) -> BoxFuture<'a, Result<Vec<Segment>, MetaError>>;
    /// Steps that ended but are not archived yet, oldest first, at most `limit`.
    fn ended_unarchived(&self, limit: usize) -> BoxFuture<'_, Result<Vec<(JobId, StepId)>, MetaError>>;
    /// Steps that ended before `cutoff_ms` and are not expired yet, at most `limit`.
    fn expiry_candidates(&self, cutoff_ms: u64, limit: usize) -> BoxFuture<'_, Result<Vec<(JobId, StepId)>, MetaError>>;
    /// Marks a step's output expired and forgets its segment manifest (call after deleting the
    /// objects, so that no object outlives its manifest).
    fn mark_expired<'a>(&'a self, job: &'a JobId, step: &'a StepId) -> BoxFuture<'a, Result<(), MetaError>>;

    /// A job's artifact by normalised path, in any state (uploading, complete, expired).
    fn artifact<'a>(&'a self, job: &'a JobId, path: &'a str) -> BoxFuture<'a, Result<Option<Artifact>, MetaError>>;
    /// Records a new artifact unless one with its path exists, and returns what is stored (the
    /// caller compares ids). Refuses (`Conflict`) a path that is a folder of another artifact or
    /// has one as its folder, and (`Limit`) one that would take the job's unexpired artifacts
    /// past `max_job_bytes`. Atomic.
    fn insert_artifact<'a>(&'a self, art: &'a Artifact, max_job_bytes: u64) -> BoxFuture<'a, Result<Artifact, MetaError>>;
    /// Records part `part` of an artifact as stored, with the digest state after it, and with
    /// `completed_ms` marks it complete — only if exactly `part` parts were recorded before
    /// (so two uploaders cannot both advance it). Returns whether it did.
    fn advance_artifact<'a>(&'a self, id: &'a str, part: u32, hash_state: &'a [u8], completed_ms: Option<u64>)
    -> BoxFuture<'a, Result<bool, MetaError>>;
    /// Forgets an artifact record (its objects are deleted first).
    fn delete_artifact<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), MetaError>>;
    /// A job's complete, unexpired artifacts with paths after `after`, by path, at most `limit`.
    fn artifacts<'a>(&'a self, job: &'a JobId, after: &'a str, limit: usize) -> BoxFuture<'a, Result<Vec<Artifact>, MetaError>>;
    /// Unexpired artifacts (complete or not) created before `cutoff_ms`, at most `limit`.
    fn artifacts_to_expire(&self, cutoff_ms: u64, limit: usize) -> BoxFuture<'_, Result<Vec<Artifact>, MetaError>>;
    /// Marks an artifact expired (after its objects were deleted); its record stays as a tombstone.
    fn mark_artifact_expired<'a>(&'a self, id: &'a str, at_ms: u64) -> BoxFuture<'a, Result<(), MetaError>>;

    /// Records a token id as revoked until `until_s` (the token's expiry, seconds since the
    /// epoch; `u64::MAX` for tokens that never expire). Idempotent; a later `until_s` wins.
    fn revoke_token<'a>(&'a self, id: &'a str, until_s: u64) -> BoxFuture<'a, Result<(), MetaError>>;
    /// Ids of tokens revoked whose expiry is after `now_s` (older ones are refused anyway, and
    /// are forgotten).
    fn revoked_tokens(&self, now_s: u64) -> BoxFuture<'_, Result<Vec<String>, MetaError>>;

    /// Takes or renews the lease `name` for `holder` until `until_ms`, if it is free, expired
    /// (held until `now_ms` or before) or already `holder`'s. Returns whether `holder` holds it.
    /// Nodes use leases so that exactly one works on a thing (archiving a step, a sweep); a
    /// holder that dies loses its lease when it expires.
    fn lease<'a>(&'a self, name: &'a str, holder: &'a str, until_ms: u64, now_ms: u64) -> BoxFuture<'a, Result<bool, MetaError>>;
    /// Gives the lease back if `holder` holds it.
    fn unlease<'a>(&'a self, name: &'a str, holder: &'a str) -> BoxFuture<'a, Result<(), MetaError>>;
}

/// Checks a project slug: `vcs/org/repo`-like, 1 to 200 of `[A-Za-z0-9._/-]`.
pub fn validate_project(slug: &str) -> Result<(), MetaError> {
    let ok = !slug.is_empty()
        && slug.len() <= 200
        && slug.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'))
        && !slug.split('/').any(|seg| seg.is_empty() || seg == "." || seg == "..");
    if ok {
        Ok(())
    } else {
        Err(MetaError::Invalid {
            field: "project",
            reason: "expected a slug like gh/org/repo: letters, digits, '-', '_', '.', separated by '/'".into(),
        })
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The conformance suite every [`MetaStore`] backend must pass.
#[doc(hidden)]
#[allow(clippy::unwrap_used)]
pub mod conformance {
    use super::*;
    use tailrace_protocol::EndReason;

    pub async fn run(store: &dyn MetaStore) {
        let a1 = store.create_job(NewJob { project: "gh/acme/app".into(), ..Default::default() }).await.unwrap();
        let secret = SecretDigest::of(b"s3cret-value");
        let masked = store.create_job(NewJob { project: "gh/acme/secrets".into(), secrets: vec![secret.clone()], ..Default::default() }).await.unwrap();
        assert_eq!(store.job(&masked.id).await.unwrap().unwrap().secrets, vec![secret]);
        assert!(store.job(&a1.id).await.unwrap().unwrap().secrets.is_empty());
        let a2 = store
            .create_job(NewJob {
                project: "gh/acme/app".into(),
                branch: Some("main".into()),
                pipeline_number: Some(41),
                workflow_id: Some("wf-1".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        let b1 = store.create_job(NewJob { project: "gh/acme/lib".into(), ..Default::default() }).await.unwrap();
        assert_eq!((a1.number, a2.number, b1.number), (1, 2, 1), "numbers count up per project");
        assert_ne!(a1.id, a2.id);
        assert_eq!(store.job(&a2.id).await.unwrap().as_ref(), Some(&a2));
        assert_eq!(a2.branch.as_deref(), Some("main"));
        assert!(store.job(&JobId::new("missing").unwrap()).await.unwrap().is_none());
        assert!(store.create_job(NewJob { project: "../x".into(), ..Default::default() }).await.is_err());
        // Listing: a project's jobs newest first, by pages; the projects by slug.
        assert_eq!(store.jobs("gh/acme/app", None, 10).await.unwrap(), [a2.clone(), a1.clone()]);
        assert_eq!(store.jobs("gh/acme/app", None, 1).await.unwrap(), std::slice::from_ref(&a2));
        assert_eq!(store.jobs("gh/acme/app", Some(a2.number), 10).await.unwrap(), std::slice::from_ref(&a1));
        assert!(store.jobs("gh/acme/app", Some(1), 10).await.unwrap().is_empty());
        assert!(store.jobs("gh/acme/none", None, 10).await.unwrap().is_empty());
        assert_eq!(store.projects().await.unwrap(), ["gh/acme/app", "gh/acme/lib", "gh/acme/secrets"]);

        let s1 = StepId::new("checkout").unwrap();
        let s2 = StepId::new("build").unwrap();
        let opened = store.open_step(&a1.id, &s1, "Checkout code").await.unwrap();
        assert_eq!(opened.status, StepStatus::Running);
        assert_eq!(store.open_step(&a1.id, &s1, "renamed").await.unwrap().name, "Checkout code");
        store.open_step(&a1.id, &s2, "Build").await.unwrap();
        assert!(matches!(
            store.open_step(&JobId::new("missing").unwrap(), &s1, "x").await,
            Err(MetaError::JobNotFound(_))
        ));
        let end = StepEnd {
            status: StepStatus::Failed,
            reason: EndReason::Exited,
            exit_code: Some(2),
            length: 10,
            checksum: "abc".into(),
            duration_ms: 7,
            ended_at_ms: 8,
        };
        store.finish_step(&a1.id, &s2, &end).await.unwrap();
        store.finish_step(&a1.id, &s2, &end).await.unwrap();
        let steps = store.steps(&a1.id).await.unwrap();
        let names: Vec<_> = steps.iter().map(|s| s.step.as_str()).collect();
        assert_eq!(names, ["checkout", "build"]);
        assert_eq!(steps[1].status, StepStatus::Failed);
        assert_eq!(steps[1].end, Some(StepEndFields::from(&end)));
        assert_eq!(steps[0].end, None);
        assert_eq!((steps[0].length, steps[1].length), (None, Some(10)));
        assert_eq!(store.step(&a1.id, &s2).await.unwrap().as_ref(), Some(&steps[1]));
        assert!(store.steps(&a2.id).await.unwrap().is_empty());

        // Archive manifests.
        assert_eq!(store.ended_unarchived(10).await.unwrap(), vec![(a1.id.clone(), s2.clone())]);
        assert!(store.segments(&a1.id, &s2).await.unwrap().is_empty());
        let seg = |seq: u32, start: u64| Segment {
            seq,
            start,
            length: 5,
            key: format!("logs/x/{seq}.zst"),
            compressed: 3,
            checksum: "c".into(),
            frames: vec![crate::segment::FrameEntry { compressed: 3, decompressed: 5 }],
            frame_lines: vec![seq + 1],
            frame_times: vec![u64::from(seq) * 10],
        };
        // A prefix first (incremental), a retried one replaces it, then the rest completes it.
        store.record_segments(&a1.id, &s2, &[seg(0, 0)], false).await.unwrap();
        store.record_segments(&a1.id, &s2, &[seg(0, 0)], false).await.unwrap();
        assert_eq!(store.segments(&a1.id, &s2).await.unwrap(), vec![seg(0, 0)]);
        assert_eq!(store.ended_unarchived(10).await.unwrap(), vec![(a1.id.clone(), s2.clone())]);
        assert!(store.step(&a1.id, &s2).await.unwrap().unwrap().archived_at_ms.is_none());
        store.record_segments(&a1.id, &s2, &[seg(1, 5)], true).await.unwrap();
        assert_eq!(store.segments(&a1.id, &s2).await.unwrap(), vec![seg(0, 0), seg(1, 5)]);
        assert!(store.ended_unarchived(10).await.unwrap().is_empty());
        assert!(store.step(&a1.id, &s2).await.unwrap().unwrap().archived_at_ms.is_some());

        // Jobs by number; test runs appended per upload and paged in order.
        assert_eq!(store.job_by_number("gh/acme/app", a2.number).await.unwrap().as_ref(), Some(&a2));
        assert_eq!(store.job_by_number("gh/acme/app", 99).await.unwrap(), None);
        assert_eq!(store.job_by_number("gh/acme/lib", b1.number).await.unwrap().map(|j| j.id), Some(b1.id.clone()));
        let run = |name: &str, result: &str| TestRun {
            classname: "c".into(),
            name: name.into(),
            file: Some("f.py".into()),
            source: "junit.xml".into(),
            result: result.into(),
            run_time: Some(0.5),
            message: (result != "success").then(|| "boom".into()),
            attempts: 1,
            flaky: false,
            wasted_time: 0.0,
        };
        assert!(store.test_runs(&a1.id, 0, 10).await.unwrap().is_empty());
        store.record_test_runs(&a1, &[run("t1", "success"), run("t2", "failure")]).await.unwrap();
        store.record_test_runs(&a1, &[run("t3", "skipped")]).await.unwrap();
        let all = store.test_runs(&a1.id, 0, 10).await.unwrap();
        assert_eq!(all.iter().map(|(n, r)| (*n, r.name.as_str())).collect::<Vec<_>>(), [(0, "t1"), (1, "t2"), (2, "t3")]);
        assert_eq!(all[1].1, run("t2", "failure"));
        assert_eq!(store.test_runs(&a1.id, 1, 1).await.unwrap().iter().map(|(n, _)| *n).collect::<Vec<_>>(), [1]);
        assert!(store.test_runs(&a2.id, 0, 10).await.unwrap().is_empty());

        // Insights rollups: flaky by retry and by commit, most failed, slowest, workflow runs.
        let job_of = |commit: &str, wf: &str, pipeline: u64| NewJob {
            project: "gh/acme/ins".into(),
            branch: Some("main".into()),
            commit: Some(commit.into()),
            workflow: Some("build".into()),
            name: Some("test".into()),
            pipeline_number: Some(pipeline),
            workflow_id: Some(wf.into()),
            secrets: Vec::new(),
        };
        let timed = |name: &str, result: &str, t: f64| TestRun { run_time: Some(t), ..run(name, result) };
        let c1 = store.create_job(job_of("aaa", "w1", 1)).await.unwrap();
        let c2 = store.create_job(job_of("aaa", "w2", 2)).await.unwrap();
        let retried = TestRun { flaky: true, wasted_time: 0.5, attempts: 2, ..timed("retry", "success", 1.0) };
        store
            .record_test_runs(&c1, &[timed("commit", "success", 0.1), timed("fail", "failure", 1.0), timed("slow", "success", 10.0), retried])
            .await
            .unwrap();
        store.record_test_runs(&c2, &[timed("commit", "failure", 0.2), timed("fail", "failure", 1.0), run("skip", "skipped")]).await.unwrap();
        let flaky = store.flaky_tests("gh/acme/ins").await.unwrap();
        let got: Vec<_> = flaky.iter().map(|f| (f.name.as_str(), f.times_flaked, f.time_wasted, f.job_number, f.workflow_id.as_str())).collect();
        assert_eq!(got, [("retry", 1, 0.5, c1.number, "w1"), ("commit", 1, 0.2, c2.number, "w2")]);
        assert_eq!((flaky[0].pipeline_number, flaky[0].workflow_name.as_deref()), (Some(1), Some("build")));
        assert!(store.flaky_tests("gh/acme/app").await.unwrap().is_empty());
        let q = crate::insights::MetricsQuery { workflow: "build".into(), branch: None, since_ms: 0, limit: 10 };
        let m = store.test_metrics("gh/acme/ins", &q).await.unwrap();
        assert_eq!((m.total_test_runs, m.workflow_runs), (6, 2), "skipped runs are not test runs");
        let failed: Vec<_> = m.most_failed.iter().map(|t| (t.name.as_str(), t.failed_runs, t.total_runs, t.flaky)).collect();
        assert_eq!(failed, [("fail", 2, 2, false), ("commit", 1, 2, true)]);
        assert_eq!(m.slowest[0].name, "slow");
        assert!((10.0..=11.9).contains(&m.slowest[0].p95_duration), "{}", m.slowest[0].p95_duration);
        let mut runs: Vec<_> = m.runs.iter().map(|r| (r.workflow_id.as_str(), r.success, r.failure, r.skipped, r.pipeline_number)).collect();
        runs.sort();
        assert_eq!(runs, [("w1", 3, 1, 0, Some(1)), ("w2", 0, 2, 1, Some(2))]);
        let history = store.test_history("gh/acme/ins", ("c", "fail", "f.py"), 0).await.unwrap();
        assert_eq!(history.iter().map(|d| (d.runs, d.failed_runs, d.flaky_runs)).collect::<Vec<_>>(), [(2, 2, 0)]);
        assert_eq!(history[0].day, c1.created_at_ms / 86_400_000);
        let commit = store.test_history("gh/acme/ins", ("c", "commit", "f.py"), 0).await.unwrap();
        assert_eq!((commit[0].runs, commit[0].failed_runs, commit[0].flaky_runs), (2, 1, 1));
        assert!(store.test_history("gh/acme/ins", ("c", "commit", "f.py"), now_ms() + 86_400_000).await.unwrap().is_empty());
        let other_branch = crate::insights::MetricsQuery { branch: Some("dev".into()), ..q.clone() };
        assert_eq!(store.test_metrics("gh/acme/ins", &other_branch).await.unwrap(), crate::insights::TestMetrics::default());

        // Expiry: by end time, once.
        assert!(store.expiry_candidates(7, 10).await.unwrap().is_empty(), "ended at 8, not before 7");
        assert_eq!(store.expiry_candidates(9, 10).await.unwrap(), vec![(a1.id.clone(), s2.clone())]);
        store.mark_expired(&a1.id, &s2).await.unwrap();
        assert!(store.expiry_candidates(9, 10).await.unwrap().is_empty());
        assert!(store.segments(&a1.id, &s2).await.unwrap().is_empty());
        assert!(store.step(&a1.id, &s2).await.unwrap().unwrap().expired_at_ms.is_some());

        artifacts(store, &a1.id, &a2.id).await;
        revocations(store).await;
        leases(store).await;
    }

    async fn leases(store: &dyn MetaStore) {
        assert!(store.lease("archive:x", "node-a", 1_000, 0).await.unwrap());
        assert!(!store.lease("archive:x", "node-b", 2_000, 10).await.unwrap(), "held by node-a");
        assert!(store.lease("archive:x", "node-a", 3_000, 20).await.unwrap(), "renewed by its holder");
        assert!(store.lease("archive:y", "node-b", 1_000, 20).await.unwrap(), "leases are per name");
        assert!(!store.lease("archive:x", "node-b", 4_000, 2_999).await.unwrap());
        assert!(store.lease("archive:x", "node-b", 4_000, 3_000).await.unwrap(), "expired: taken over");
        store.unlease("archive:x", "node-a").await.unwrap();
        assert!(!store.lease("archive:x", "node-a", 5_000, 3_001).await.unwrap(), "only the holder gives it back");
        store.unlease("archive:x", "node-b").await.unwrap();
        assert!(store.lease("archive:x", "node-a", 5_000, 3_001).await.unwrap());
    }

    async fn revocations(store: &dyn MetaStore) {
        assert!(store.revoked_tokens(0).await.unwrap().is_empty());
        store.revoke_token("t-short", 100).await.unwrap();
        store.revoke_token("t-admin", u64::MAX).await.unwrap();
        store.revoke_token("t-short", 50).await.unwrap(); // an earlier expiry does not shorten it
        let mut ids = store.revoked_tokens(99).await.unwrap();
        ids.sort();
        assert_eq!(ids, ["t-admin", "t-short"]);
        assert_eq!(store.revoked_tokens(100).await.unwrap(), ["t-admin"], "expired tokens need no revocation");
    }

    async fn artifacts(store: &dyn MetaStore, job: &JobId, other: &JobId) {
        let art = |id: &str, path: &str, size: u64, created_ms: u64| Artifact {
            id: id.into(),
            job: job.clone(),
            path: path.into(),
            size,
            sha256: "ab".repeat(32),
            content_type: "text/plain".into(),
            part_size: 64,
            parts_done: 0,
            hash_state: Vec::new(),
            created_ms,
            completed_ms: None,
            expired_ms: None,
        };
        assert!(store.artifact(job, "a/b.txt").await.unwrap().is_none());
        let big = art("id1", "a/b.txt", 200, 10);
        assert_eq!(store.insert_artifact(&big, 1000).await.unwrap(), big);
        // The same path again: what is stored comes back, nothing new is recorded.
        assert_eq!(store.insert_artifact(&art("id2", "a/b.txt", 200, 11), 1000).await.unwrap().id, "id1");
        for (path, why) in [("a", "a folder of a/b.txt"), ("a/b.txt/c", "under the file a/b.txt")] {
            let r = store.insert_artifact(&art("id3", path, 1, 12), 1000).await;
            assert!(matches!(r, Err(MetaError::Conflict(_))), "{why}: {r:?}");
        }
        assert!(matches!(store.insert_artifact(&art("id4", "c", 801, 12), 1000).await, Err(MetaError::Limit(_))), "200 + 801 > 1000");
        let mut other_job = art("id5", "c", 801, 12);
        other_job.job = other.clone();
        store.insert_artifact(&other_job, 1000).await.unwrap();
        assert!(store.artifacts(job, "", 10).await.unwrap().is_empty(), "incomplete artifacts are not listed");

        assert!(store.advance_artifact("id1", 0, &[1; 40], None).await.unwrap());
        assert!(!store.advance_artifact("id1", 0, &[2; 40], None).await.unwrap(), "part 0 is recorded already");
        assert!(store.advance_artifact("id1", 1, &[3; 40], None).await.unwrap());
        assert!(store.advance_artifact("id1", 2, &[], Some(50)).await.unwrap());
        let done = store.artifact(job, "a/b.txt").await.unwrap().unwrap();
        assert_eq!((done.parts_done, done.completed_ms, done.hash_state.len()), (3, Some(50), 0));
        let small = Artifact { parts_done: 1, completed_ms: Some(60), ..art("id6", "a/c.txt", 5, 13) };
        store.insert_artifact(&small, 1000).await.unwrap();
        let listed: Vec<_> = store.artifacts(job, "", 10).await.unwrap().into_iter().map(|a| a.path).collect();
        assert_eq!(listed, ["a/b.txt", "a/c.txt"]);
        assert_eq!(store.artifacts(job, "a/b.txt", 10).await.unwrap()[0].path, "a/c.txt", "paged after a path");

        let old: Vec<_> = store.artifacts_to_expire(13, 10).await.unwrap().into_iter().map(|a| a.id).collect();
        assert_eq!(old, ["id1", "id5"]);
        store.mark_artifact_expired("id1", 99).await.unwrap();
        assert_eq!(store.artifact(job, "a/b.txt").await.unwrap().unwrap().expired_ms, Some(99));
        assert_eq!(store.artifacts(job, "", 10).await.unwrap().len(), 1);
        assert!(store.insert_artifact(&art("id7", "c", 801, 14), 1000).await.is_ok(), "expired artifacts do not count");
        store.delete_artifact("id1").await.unwrap();
        assert!(store.artifact(job, "a/b.txt").await.unwrap().is_none());
        // Deleting and expiring give the bytes back to the job's total (5 + 801 stored now).
        assert!(matches!(store.insert_artifact(&art("id8", "d", 195, 15), 1000).await, Err(MetaError::Limit(_))));
        store.delete_artifact("id7").await.unwrap();
        store.insert_artifact(&art("id8", "d", 995, 15), 1000).await.unwrap();
        store.mark_artifact_expired("id8", 100).await.unwrap();
        store.mark_artifact_expired("id8", 101).await.unwrap();
        store.insert_artifact(&art("id9", "e", 995, 16), 1000).await.unwrap();
        assert!(matches!(store.insert_artifact(&art("id10", "f", 1, 17), 1000).await, Err(MetaError::Limit(_))), "expired once, counted once");
    }
}
