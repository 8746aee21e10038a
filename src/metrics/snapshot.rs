//! What the status page reads: a copy of the counters taken at one moment
//! (`Snapshot`), with the per-source notes the exposition cannot hold. Plain
//! values, no locks: the page formats them, nothing more.

use super::history::{Minute, MINUTES};
use super::rows::MountStats;
use std::time::{Duration, SystemTime};

/// Values owned elsewhere, read at the moment of a scrape.
#[derive(Clone, Debug, Default)]
pub struct Sampled {
    /// `Store::fills_in_progress`.
    pub fills_in_progress: u64,
    /// Bytes of committed entries (from the cache-size provider).
    pub cache_bytes: u64,
    /// Number of committed entries (from the cache-size provider).
    pub cache_entries: u64,
    /// Build jobs waiting for a worker.
    pub build_queue_depth: u64,
    /// Build jobs by state (`queued`, …, `cancelled`), as the job table holds them.
    pub build_jobs: Vec<(&'static str, u64)>,
    /// The shared object-store tier, with `--shared-store`.
    pub shared: Option<SharedSample>,
}

/// The shared store tier, read at a scrape.
#[derive(Clone, Debug, Default)]
pub struct SharedSample {
    /// `s3://bucket/prefix`.
    pub url: String,
    /// The circuit breaker's state (`closed`, `open`, `probing`).
    pub breaker: &'static str,
    /// Keys waiting to be published once the store answers.
    pub backlog: u64,
    /// Monotonic counts since start, by event name (`hits`, `published`, …).
    pub events: Vec<(&'static str, u64)>,
}

/// What the status page shows about one upstream source.
#[derive(Clone, Debug)]
pub struct SourceHealth {
    /// `scheme://host:port` of the source (the one tried, before redirects).
    pub origin: String,
    /// Attempts started on it (`upstream_attempts_total`).
    pub attempts: u64,
    /// Attempts that got a final response head (any status).
    pub answers: u64,
    /// Failed attempts other than 404/410.
    pub errors: u64,
    /// Attempts answered 404 or 410.
    pub not_found: u64,
    /// Mean time to the response head.
    pub mean_latency: Option<Duration>,
    /// Time to the latest response head.
    pub last_latency: Option<Duration>,
    /// The latest error other than 404/410 (its URL without the query), and
    /// when it happened.
    pub last_error: Option<(String, SystemTime)>,
    /// When the latest response head arrived.
    pub last_answer_at: Option<SystemTime>,
}

impl SourceHealth {
    /// Whether the latest thing heard from this source was an error.
    pub fn failing(&self) -> bool {
        match (&self.last_error, self.last_answer_at) {
            (Some((_, failed)), Some(answered)) => *failed > answered,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }
}

/// Requests by `X-Cache`: the four add up to every request answered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestCounts {
    /// Served from the cache.
    pub hit: u64,
    /// Served from a download in progress (this request's or one it joined).
    pub miss: u64,
    /// Fetched and passed on uncached.
    pub pass: u64,
    /// Answered without a body from either (errors, redirects, refusals,
    /// clients gone before an answer).
    pub other: u64,
}

impl RequestCounts {
    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &RequestCounts) {
        self.hit += other.hit;
        self.miss += other.miss;
        self.pass += other.pass;
        self.other += other.other;
    }

    /// Every request.
    pub fn total(&self) -> u64 {
        self.hit + self.miss + self.pass + self.other
    }

    /// HIT / (HIT + MISS + PASS): the share of body-carrying answers that
    /// cost no upstream transfer. `None` before the first such request.
    pub fn hit_ratio(&self) -> Option<f64> {
        let downloads = self.hit + self.miss + self.pass;
        (downloads > 0).then(|| self.hit as f64 / downloads as f64)
    }
}

/// Downloads into the cache, by how they ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FillCounts {
    /// Began writing (the upstream answered 200).
    pub started: u64,
    /// Ended stored in the cache.
    pub committed: u64,
    /// Ended complete and served, but not stored.
    pub not_stored: u64,
    /// Ended failed: the upstream broke off, or the body did not match its
    /// length or digest, or the disk failed.
    pub failed: u64,
    /// Abandoned at shutdown.
    pub abandoned: u64,
    /// Requests served from a download another request started.
    pub joins: u64,
}

/// Index-document revalidations (one upstream request each, shared by every
/// request that arrived while it was in flight), by result.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RevalidationCounts {
    /// A new version stored (200).
    pub updated: u64,
    /// The stored copy is current (304).
    pub not_modified: u64,
    /// The upstream could not be asked, or said the document is gone.
    pub failed: u64,
    /// The answer was not a document (403, a redirect past the limit…): passed on.
    pub passed: u64,
}

/// A consistent-enough copy of the counters for the status page. Each value
/// is read once, so the page and a `/metrics` scrape taken with no traffic
/// in between agree exactly.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Requests by cache status.
    pub requests: RequestCounts,
    /// Requests whose answer did not reach its end because the client left.
    pub client_gone: u64,
    /// Requests whose answer broke off on this side (its upstream failed).
    pub broken: u64,
    /// Body bytes sent from the cache (HIT).
    pub bytes_from_cache: u64,
    /// Body bytes sent as they came from upstream (MISS and PASS).
    pub bytes_from_upstream: u64,
    /// The same, row by row of the breakdown by mount (they add up to the above).
    pub by_mount: Vec<MountStats>,
    /// Every row's last hour added up, oldest minute first.
    pub last_hour: [Minute; MINUTES],
    /// Downloads into the cache.
    pub fills: FillCounts,
    /// Index-document revalidations.
    pub revalidations: RevalidationCounts,
    /// Entries evicted.
    pub evictions: u64,
    /// Bytes evicted.
    pub evicted_bytes: u64,
    /// One line per source contacted so far, by origin.
    pub sources: Vec<SourceHealth>,
    /// Time since the app started.
    pub uptime: Duration,
}

impl Snapshot {
    /// See [`RequestCounts::hit_ratio`].
    pub fn hit_ratio(&self) -> Option<f64> {
        self.requests.hit_ratio()
    }
}
