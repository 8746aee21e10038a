//! The JSON the API sends for a job, kept apart from `builds::job::Job` so
//! that the journal's format and the wire format can change separately.
//! A local job's SHA1 names a readable artifact (knowing it is the capability
//! to read it), so listings hide it from everyone but the operator.

use crate::builds::artifacts::ArtifactMeta;
use crate::builds::job::{Job, JobError};
use crate::builds::spec::Source;
use serde::Serialize;

/// One job on the wire.
#[derive(Debug, Serialize)]
pub struct JobView {
    /// The job id; absent when the artifact already existed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `queued` … `complete`, `failed`, `cancelled`.
    pub state: &'static str,
    /// `gem`, `pip`.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// `remote` or `local`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<&'static str>,
    /// The runtime's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    /// Remote: the package name; local: the SHA1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Remote: the version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Remote gems: the platform.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// The artifact's file name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact: Option<String>,
    /// sha256 of the artifact, when it exists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Where to read the job.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Where to download the artifact (once complete).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact_url: Option<String>,
    /// Seconds since the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<u64>,
    /// Seconds since the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started: Option<u64>,
    /// Seconds since the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished: Option<u64>,
    /// Why it failed: `{class: client|server, message}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<JobError>,
    /// The end of the build log.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_tail: Option<String>,
    /// Clients waiting on this job (identical requests join it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiters: Option<usize>,
    /// The submitter's cancel token (`X-Job-Token`), only in the answer
    /// to the submit that issued it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

fn artifact_url(name: &str) -> String {
    format!("/api/v1/artifacts/{name}")
}

impl JobView {
    /// Everything about `job`, for whoever knows its id.
    pub fn full(job: &Job, log_tail: String, token: Option<String>) -> JobView {
        let (name, version, platform) = match &job.spec.source {
            Source::Remote {
                name,
                version,
                platform,
            } => (name.clone(), Some(version.clone()), platform.clone()),
            Source::Local { sha1 } => (sha1.clone(), None, None),
        };
        let complete = job.artifact_sha256.is_some();
        JobView {
            id: Some(job.id.to_string()),
            state: job.state.as_str(),
            kind: Some(job.spec.kind.clone()),
            location: Some(job.spec.location().as_str()),
            runtime: Some(job.spec.runtime.clone()),
            name: Some(name),
            version,
            platform,
            artifact: Some(job.artifact.clone()),
            sha256: job.artifact_sha256.clone(),
            url: Some(format!("/api/v1/builds/{}", job.id)),
            artifact_url: complete.then(|| artifact_url(&job.artifact)),
            created: Some(job.created),
            started: job.started,
            finished: job.finished,
            error: job.error.clone(),
            log_tail: (!log_tail.is_empty()).then_some(log_tail),
            waiters: Some(job.waiters.len()),
            token,
        }
    }

    /// `job` in a listing: a local job's SHA1 and artifact name are left
    /// out unless the operator asks.
    pub fn listed(job: &Job, operator: bool) -> JobView {
        let mut view = JobView::full(job, String::new(), None);
        if matches!(job.spec.source, Source::Local { .. }) && !operator {
            // The id too: `GET /api/v1/builds/ID` shows the whole job.
            view.id = None;
            view.url = None;
            view.name = None;
            view.artifact = None;
            view.artifact_url = None;
            view.sha256 = None;
        }
        view
    }

    /// The answer when the artifact is already built.
    pub fn existing(meta: &ArtifactMeta) -> JobView {
        JobView {
            id: None,
            state: "complete",
            kind: None,
            location: None,
            runtime: None,
            name: None,
            version: None,
            platform: None,
            artifact: Some(meta.name.clone()),
            sha256: Some(meta.sha256.clone()),
            url: None,
            artifact_url: Some(artifact_url(&meta.name)),
            created: None,
            started: None,
            finished: Some(meta.built),
            error: None,
            log_tail: None,
            waiters: None,
            token: None,
        }
    }
}
