//! One build job: its id, its state machine and the record that the journal
//! keeps across restarts. `JobState` says which moves are legal; `Job` holds
//! timestamps, the error (classed client or server) and the waiters that
//! joined it. Pure: the queue applies transitions, the journal stores them.

use super::spec::Spec;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// A job's id: 128 random bits in hex, so ids cannot be guessed from others.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(String);

impl JobId {
    /// A fresh random id.
    pub fn random() -> JobId {
        JobId(random_hex(16))
    }

    /// Parses an id from a URL segment or a file name; `None` unless it is
    /// 32 lowercase hex digits (so it is always safe as a file name).
    pub fn parse(s: &str) -> Option<JobId> {
        (s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .then(|| JobId(s.to_string()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `n` random bytes as lowercase hex.
pub fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes).expect("the OS random source is available");
    hex::encode(bytes)
}

/// Where a job is. Moves only forward: `Queued → Fetching → Building →
/// Archiving → Complete`, and from any unfinished state to `Failed` or
/// `Cancelled`; a restart puts unfinished jobs back to `Queued`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting for a worker.
    Queued,
    /// Fetching the source and build requirements.
    Fetching,
    /// Running the build in the sandbox.
    Building,
    /// Writing and committing the archive.
    Archiving,
    /// The artifact is in the cache.
    Complete,
    /// The build failed; see the error.
    Failed,
    /// Every waiter cancelled.
    Cancelled,
}

impl JobState {
    /// Every state, in order (for metrics and filters).
    pub const ALL: [JobState; 7] = [
        JobState::Queued,
        JobState::Fetching,
        JobState::Building,
        JobState::Archiving,
        JobState::Complete,
        JobState::Failed,
        JobState::Cancelled,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Fetching => "fetching",
            JobState::Building => "building",
            JobState::Archiving => "archiving",
            JobState::Complete => "complete",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    /// Parses the wire name.
    pub fn parse(s: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|state| state.as_str() == s)
    }

    /// No further moves.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            JobState::Complete | JobState::Failed | JobState::Cancelled
        )
    }

    /// Whether `self → next` is a legal move.
    pub fn can_move_to(self, next: JobState) -> bool {
        use JobState::*;
        match (self, next) {
            (Queued, Fetching) | (Fetching, Building) | (Building, Archiving) => true,
            (Archiving, Complete) => true,
            (from, Failed | Cancelled) => !from.is_finished(),
            _ => false,
        }
    }
}

/// Whose fault a failure was: the request's (a package that does not exist,
/// a source that does not build) or the server's (upstream down, disk full).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorClass {
    /// Retrying the same request will fail the same way.
    Client,
    /// A retry later may succeed.
    Server,
}

/// Why a job failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobError {
    /// Whose fault.
    pub class: ErrorClass,
    /// A readable message.
    pub message: String,
}

/// One client waiting on a job. Only a hash of its token is kept, so the
/// journal on disk gives no one the power to cancel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiter {
    /// sha256 of the token handed to the client, hex.
    pub token_sha256: String,
    /// The waiter asked to cancel.
    pub cancelled: bool,
}

impl Waiter {
    /// A new waiter and the token to give its client.
    pub fn issue() -> (Waiter, String) {
        let token = random_hex(16);
        (
            Waiter {
                token_sha256: token_hash(&token),
                cancelled: false,
            },
            token,
        )
    }
}

/// sha256 of a waiter token, hex.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Whether `token` hashes to `expected` (a [`token_hash`]). The comparison
/// takes the same time wherever the hashes differ, so timing tells a caller
/// nothing about how close a guess came (and hashing first hides the length).
pub fn token_matches(token: &str, expected: &str) -> bool {
    use subtle::ConstantTimeEq;
    token_hash(token)
        .as_bytes()
        .ct_eq(expected.as_bytes())
        .into()
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A job's record: what the API shows and the journal stores.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// The id.
    pub id: JobId,
    /// What is built.
    pub spec: Spec,
    /// Where it is.
    pub state: JobState,
    /// The artifact's file name.
    pub artifact: String,
    /// sha256 of the artifact, once complete.
    #[serde(default)]
    pub artifact_sha256: Option<String>,
    /// For a local source: sha256 of the bytes taken in.
    #[serde(default)]
    pub source_sha256: Option<String>,
    /// For a local source: the private copy the build reads.
    #[serde(default)]
    pub source_path: Option<std::path::PathBuf>,
    /// Submitted (seconds since the epoch).
    pub created: u64,
    /// A worker took it.
    #[serde(default)]
    pub started: Option<u64>,
    /// It finished.
    #[serde(default)]
    pub finished: Option<u64>,
    /// Why it failed.
    #[serde(default)]
    pub error: Option<JobError>,
    /// The last lines of the build log, once finished.
    #[serde(default)]
    pub log_tail: String,
    /// Everyone waiting on it.
    pub waiters: Vec<Waiter>,
    /// Times a worker started it (a restart mid-build starts it again).
    #[serde(default)]
    pub attempts: u32,
}

impl Job {
    /// A queued job for `spec` with its first waiter.
    pub fn new(spec: Spec, waiter: Waiter) -> Job {
        Job {
            id: JobId::random(),
            artifact: spec.artifact_name(),
            spec,
            state: JobState::Queued,
            artifact_sha256: None,
            source_sha256: None,
            source_path: None,
            created: now(),
            started: None,
            finished: None,
            error: None,
            log_tail: String::new(),
            waiters: vec![waiter],
            attempts: 0,
        }
    }

    /// Moves to `next` if legal, stamping the times; false otherwise.
    pub fn advance(&mut self, next: JobState) -> bool {
        if !self.state.can_move_to(next) {
            return false;
        }
        if next == JobState::Fetching {
            self.started = Some(now());
            self.attempts += 1;
        }
        if next.is_finished() {
            self.finished = Some(now());
        }
        self.state = next;
        true
    }

    /// Fails the job with `error` (if it is not finished yet).
    pub fn fail(&mut self, error: JobError) -> bool {
        if self.advance(JobState::Failed) {
            self.error = Some(error);
            true
        } else {
            false
        }
    }

    /// Marks the waiter holding `token` as cancelled. `None`: no such waiter.
    /// `Some(true)`: that was the last one still waiting.
    pub fn cancel_waiter(&mut self, token: &str) -> Option<bool> {
        let waiter = self
            .waiters
            .iter_mut()
            .find(|w| token_matches(token, &w.token_sha256))?;
        waiter.cancelled = true;
        Some(self.waiters.iter().all(|w| w.cancelled))
    }

    /// After a restart: an unfinished job starts over from the queue.
    pub fn requeue(&mut self) {
        if !self.state.is_finished() {
            self.state = JobState::Queued;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builds::spec::Source;

    fn job() -> Job {
        let spec = Spec {
            kind: "gem".into(),
            runtime: "ruby31".into(),
            source: Source::Remote {
                name: "thin".into(),
                version: "1.2.11".into(),
                platform: None,
            },
        };
        Job::new(spec, Waiter::issue().0)
    }

    #[test]
    fn tokens_match_their_hash_only() {
        let hash = token_hash("s3cret");
        assert!(token_matches("s3cret", &hash));
        for wrong in ["", "s3cre", "s3cret ", "S3cret", "s3cret\n"] {
            assert!(!token_matches(wrong, &hash), "{wrong:?}");
        }
        assert!(
            !token_matches("s3cret", ""),
            "an empty hash matches nothing"
        );
        assert!(!token_matches("s3cret", &hash[..63]));
    }

    #[test]
    fn states_move_forward_only() {
        let mut j = job();
        assert_eq!(j.artifact, "thin-1.2.11@ruby31.tgz");
        assert!(!j.advance(JobState::Building), "no skipping fetching");
        assert!(j.advance(JobState::Fetching));
        assert_eq!(j.attempts, 1);
        assert!(j.started.is_some());
        assert!(j.advance(JobState::Building));
        assert!(j.advance(JobState::Archiving));
        assert!(j.advance(JobState::Complete));
        assert!(j.finished.is_some());
        assert!(!j.advance(JobState::Failed), "finished is final");
        assert!(!j.advance(JobState::Queued));
    }

    #[test]
    fn a_restart_requeues_only_unfinished_jobs() {
        let mut j = job();
        j.advance(JobState::Fetching);
        j.advance(JobState::Building);
        j.requeue();
        assert_eq!(j.state, JobState::Queued);
        assert!(j.advance(JobState::Fetching));
        assert_eq!(j.attempts, 2);
        let mut done = job();
        done.fail(JobError {
            class: ErrorClass::Client,
            message: "no".into(),
        });
        done.requeue();
        assert_eq!(done.state, JobState::Failed);
    }

    #[test]
    fn a_joined_job_is_cancelled_by_its_last_waiter() {
        let (first, first_token) = Waiter::issue();
        let mut j = job();
        j.waiters = vec![first];
        let (second, second_token) = Waiter::issue();
        j.waiters.push(second);
        assert_eq!(j.cancel_waiter("not a token"), None);
        assert_eq!(j.cancel_waiter(&first_token), Some(false));
        assert_eq!(j.cancel_waiter(&second_token), Some(true));
        assert!(!j.waiters[0].token_sha256.contains(&first_token));
    }

    #[test]
    fn ids_are_random_and_strictly_parsed() {
        let (a, b) = (JobId::random(), JobId::random());
        assert_ne!(a, b);
        assert_eq!(JobId::parse(a.as_str()), Some(a));
        assert_eq!(JobId::parse("../../etc/passwd"), None);
        assert_eq!(JobId::parse(&"A".repeat(32)), None);
        for state in JobState::ALL {
            assert_eq!(JobState::parse(state.as_str()), Some(state));
        }
    }
}
