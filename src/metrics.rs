//! `Metrics`: the counters of one running app, and their Prometheus text.
//!
//! Owns every counter, gauge and histogram (one `Arc<Metrics>` per app,
//! created in `app::start` and handed to the proxy, to the upstream client as
//! its `upstream::Observer`, and to the admin listener). It does not sample
//! the store or serve HTTP: values that live elsewhere (fills in progress,
//! cache size) are passed in at scrape.

use crate::cache_status::CacheStatus;
use crate::upstream;
use prometheus_client::encoding::text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

type CacheLabel = [(&'static str, &'static str); 1];
type SourceLabel = [(&'static str, String); 1];
type ErrorLabel = [(&'static str, String); 2];
type U64Gauge = Gauge<u64, AtomicU64>;

/// The `cache` label values, in the order the status page lists them.
const CACHE_LABELS: [&str; 4] = ["HIT", "MISS", "PASS", "other"];
/// Every `kind` an upstream error can have (see `upstream::Error::kind`).
const ERROR_KINDS: [&str; 6] = [
    "connect",
    "timeout",
    "not_found",
    "status",
    "body",
    "redirect",
];

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
    /// The latest error other than 404/410, and when it happened.
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

/// Requests by `X-Cache`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestCounts {
    /// Served from a committed entry.
    pub hit: u64,
    /// Served from a fill (this request's or one it joined).
    pub miss: u64,
    /// Fetched and passed on uncached.
    pub pass: u64,
    /// Answered without a body from either (errors, redirects, refusals).
    pub other: u64,
}

/// A consistent-enough copy of the counters for the status page. Each value
/// is read once, so the page and a `/metrics` scrape taken with no traffic
/// in between agree exactly.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Requests by cache status.
    pub requests: RequestCounts,
    /// Body bytes sent from the cache (HIT).
    pub bytes_from_cache: u64,
    /// Body bytes sent as they came from upstream (MISS and PASS).
    pub bytes_from_upstream: u64,
    /// Fills started.
    pub fills_started: u64,
    /// Requests that joined a fill another request started.
    pub fill_joins: u64,
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
    /// HIT / (HIT + MISS + PASS): the share of body-carrying answers that
    /// cost no upstream transfer. `None` before the first such request.
    pub fn hit_ratio(&self) -> Option<f64> {
        let r = &self.requests;
        let total = r.hit + r.miss + r.pass;
        (total > 0).then(|| r.hit as f64 / total as f64)
    }
}

/// The latest error and latency per source: what the exposition's counters
/// cannot say.
#[derive(Default)]
struct SourceNotes {
    /// The histogram's own sum and count are not readable outside tests.
    answers: u64,
    latency_sum: Duration,
    last_error: Option<(String, SystemTime)>,
    last_latency: Option<Duration>,
    last_answer_at: Option<SystemTime>,
}

/// Every metric of one app. `Sync`: all updates are atomic, except the
/// per-source notes behind a short-held mutex. Never a static: tests run
/// many apps in one process.
pub struct Metrics {
    registry: Registry,
    requests: Family<CacheLabel, Counter>,
    served_bytes: Family<CacheLabel, Counter>,
    fills_started: Counter,
    fill_joins: Counter,
    upstream_errors: Family<ErrorLabel, Counter>,
    upstream_head: Family<SourceLabel, Histogram, fn() -> Histogram>,
    fills_in_progress: U64Gauge,
    cache_bytes: U64Gauge,
    cache_entries: U64Gauge,
    evictions: Counter,
    evicted_bytes: Counter,
    build_queue_depth: U64Gauge,
    build_jobs: Family<[(&'static str, &'static str); 1], U64Gauge>,
    shared_up: U64Gauge,
    shared_backlog: U64Gauge,
    shared_events: Family<[(&'static str, &'static str); 1], U64Gauge>,
    notes: Mutex<BTreeMap<String, SourceNotes>>,
    started: Instant,
    /// Handles on the series of `requests` (in `CACHE_LABELS` order) and of
    /// `served_bytes` (cache, upstream): a counter clone shares its value, so
    /// the per-request path takes no lock and hashes no labels.
    hot_requests: Vec<Counter>,
    hot_served: [Counter; 2],
}

fn head_histogram() -> Histogram {
    // 5 ms to about 41 s: loopback mirrors to a stalled one at the idle timeout.
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

/// The upstream reports each attempt here (wired in `app`).
impl upstream::Observer for Metrics {
    fn answered(&self, source: &str, elapsed: Duration) {
        self.upstream_answered(source, elapsed);
    }

    fn failed(&self, source: &str, error: &upstream::Error) {
        self.upstream_failed(source, error);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Every counter at zero, registered under the `package_cache_` prefix.
    pub fn new() -> Metrics {
        let m = Metrics {
            registry: Registry::with_prefix("package_cache"),
            requests: Family::default(),
            served_bytes: Family::default(),
            fills_started: Counter::default(),
            fill_joins: Counter::default(),
            upstream_errors: Family::default(),
            upstream_head: Family::new_with_constructor(head_histogram),
            fills_in_progress: U64Gauge::default(),
            cache_bytes: U64Gauge::default(),
            cache_entries: U64Gauge::default(),
            evictions: Counter::default(),
            evicted_bytes: Counter::default(),
            build_queue_depth: U64Gauge::default(),
            build_jobs: Family::default(),
            shared_up: U64Gauge::default(),
            shared_backlog: U64Gauge::default(),
            shared_events: Family::default(),
            notes: Mutex::new(BTreeMap::new()),
            started: Instant::now(),
            hot_requests: Vec::new(),
            hot_served: Default::default(),
        };
        m.register()
    }

    fn register(mut self) -> Metrics {
        // Zero series exist from the start, so a rate() over the first
        // scrapes sees 0 → n rather than a series appearing mid-way.
        for label in CACHE_LABELS {
            let series = self.requests.get_or_create(&[("cache", label)]).clone();
            self.hot_requests.push(series);
        }
        for (i, from) in ["cache", "upstream"].into_iter().enumerate() {
            self.hot_served[i] = self.served_bytes.get_or_create(&[("from", from)]).clone();
        }
        let r = &mut self.registry;
        r.register(
            "requests",
            "Requests, by X-Cache (other: errors, redirects, refusals, clients gone before an answer)",
            self.requests.clone(),
        );
        r.register_with_unit(
            "served",
            "Response body bytes sent, from the cache (HIT) or from upstream (MISS, PASS)",
            Unit::Bytes,
            self.served_bytes.clone(),
        );
        r.register(
            "fills_started",
            "Downloads into the cache started",
            self.fills_started.clone(),
        );
        r.register(
            "fill_joins",
            "Requests that joined a download another request started (coalesced readers)",
            self.fill_joins.clone(),
        );
        r.register(
            "upstream_errors",
            "Failed upstream attempts, by source origin and kind",
            self.upstream_errors.clone(),
        );
        r.register_with_unit(
            "upstream_head",
            "Time from sending a request upstream to its final response head, by source origin",
            Unit::Seconds,
            self.upstream_head.clone(),
        );
        r.register(
            "fills_in_progress",
            "Downloads into the cache in progress",
            self.fills_in_progress.clone(),
        );
        r.register_with_unit(
            "cache_size",
            "Bytes of committed cache entries",
            Unit::Bytes,
            self.cache_bytes.clone(),
        );
        r.register(
            "cache_entries",
            "Committed cache entries",
            self.cache_entries.clone(),
        );
        r.register(
            "evictions",
            "Entries evicted to keep the cache in bounds",
            self.evictions.clone(),
        );
        r.register_with_unit(
            "evicted",
            "Bytes evicted to keep the cache in bounds",
            Unit::Bytes,
            self.evicted_bytes.clone(),
        );
        r.register(
            "build_queue_depth",
            "Build jobs waiting for a worker",
            self.build_queue_depth.clone(),
        );
        r.register(
            "build_jobs",
            "Build jobs in the job table, by state",
            self.build_jobs.clone(),
        );
        r.register(
            "shared_store_up",
            "1 while the shared store is used, 0 while it is skipped (or not configured)",
            self.shared_up.clone(),
        );
        r.register(
            "shared_store_backlog",
            "Entries waiting to be published to the shared store once it answers",
            self.shared_backlog.clone(),
        );
        r.register(
            "shared_store_events",
            "Shared store events since start, by kind (requests, failures, skipped, trips, hits, \
             misses, published, races_lost, damaged, bytes_up, bytes_down, uploads_aborted, ...)",
            self.shared_events.clone(),
        );
        self
    }

    /// Records one answered request (called once per request, when its
    /// access log line is written). `cache` is `None` for answers that are
    /// neither from the cache nor from upstream; their bytes are not counted.
    pub fn request_served(&self, cache: Option<CacheStatus>, bytes: u64) {
        // Indexes into CACHE_LABELS and into (cache, upstream).
        let (series, from) = match cache {
            Some(CacheStatus::Hit) => (0, Some(0)),
            Some(CacheStatus::Miss) => (1, Some(1)),
            Some(CacheStatus::Pass) => (2, Some(1)),
            None => (3, None),
        };
        self.hot_requests[series].inc();
        if let Some(from) = from {
            self.hot_served[from].inc_by(bytes);
        }
    }

    /// A request started a fill.
    pub fn fill_started(&self) {
        self.fills_started.inc();
    }

    /// A request joined a fill in progress.
    pub fn fill_joined(&self) {
        self.fill_joins.inc();
    }

    /// An attempt on `source` (an origin, `scheme://host:port`) got its final
    /// response head after `elapsed`, whatever its status.
    pub fn upstream_answered(&self, source: &str, elapsed: Duration) {
        self.upstream_head
            .get_or_create(&[("source", source.to_string())])
            .observe(elapsed.as_secs_f64());
        let mut notes = self.notes_lock();
        let note = notes.entry(source.to_string()).or_default();
        note.answers += 1;
        note.latency_sum += elapsed;
        note.last_latency = Some(elapsed);
        note.last_answer_at = Some(SystemTime::now());
    }

    /// An attempt on `source` failed with `error`.
    pub fn upstream_failed(&self, source: &str, error: &upstream::Error) {
        self.upstream_errors
            .get_or_create(&[
                ("source", source.to_string()),
                ("kind", error.kind().into()),
            ])
            .inc();
        let mut notes = self.notes_lock();
        let note = notes.entry(source.to_string()).or_default();
        // A 404 is an answer about one file, not about the source's health.
        if !error.is_not_found() {
            note.last_error = Some((error.to_string(), SystemTime::now()));
        }
    }

    /// Entries were evicted: `bytes` in total, one entry per call.
    pub fn evicted(&self, bytes: u64) {
        self.evictions.inc();
        self.evicted_bytes.inc_by(bytes);
    }

    /// The OpenMetrics text exposition, with `sampled` as the gauges' values.
    pub fn encode(&self, sampled: Sampled) -> Result<String, std::fmt::Error> {
        self.fills_in_progress.set(sampled.fills_in_progress);
        self.cache_bytes.set(sampled.cache_bytes);
        self.cache_entries.set(sampled.cache_entries);
        self.build_queue_depth.set(sampled.build_queue_depth);
        for (state, count) in &sampled.build_jobs {
            self.build_jobs
                .get_or_create(&[("state", *state)])
                .set(*count);
        }
        if let Some(shared) = &sampled.shared {
            self.shared_up.set(u64::from(shared.breaker == "closed"));
            self.shared_backlog.set(shared.backlog);
            for (event, count) in &shared.events {
                self.shared_events
                    .get_or_create(&[("event", *event)])
                    .set(*count);
            }
        }
        let mut out = String::with_capacity(4096);
        text::encode(&mut out, &self.registry)?;
        Ok(out)
    }

    /// The counters as the status page shows them.
    pub fn snapshot(&self) -> Snapshot {
        let count = |family: &Family<CacheLabel, Counter>, label: (&'static str, &'static str)| {
            family.get(&[label]).map_or(0, |c| c.get())
        };
        let requests = RequestCounts {
            hit: count(&self.requests, ("cache", "HIT")),
            miss: count(&self.requests, ("cache", "MISS")),
            pass: count(&self.requests, ("cache", "PASS")),
            other: count(&self.requests, ("cache", "other")),
        };
        let sources = self
            .notes_lock()
            .iter()
            .map(|(origin, note)| self.health(origin, note))
            .collect();
        Snapshot {
            requests,
            bytes_from_cache: count(&self.served_bytes, ("from", "cache")),
            bytes_from_upstream: count(&self.served_bytes, ("from", "upstream")),
            fills_started: self.fills_started.get(),
            fill_joins: self.fill_joins.get(),
            evictions: self.evictions.get(),
            evicted_bytes: self.evicted_bytes.get(),
            sources,
            uptime: self.started.elapsed(),
        }
    }

    fn health(&self, origin: &str, note: &SourceNotes) -> SourceHealth {
        let errors = |kind: &str| {
            self.upstream_errors
                .get(&[("source", origin.to_string()), ("kind", kind.to_string())])
                .map_or(0, |c| c.get())
        };
        let mean_latency = (note.answers > 0)
            .then(|| note.latency_sum / u32::try_from(note.answers).unwrap_or(u32::MAX));
        let not_found = errors("not_found");
        SourceHealth {
            origin: origin.to_string(),
            answers: note.answers,
            errors: ERROR_KINDS.iter().map(|k| errors(k)).sum::<u64>() - not_found,
            not_found,
            mean_latency,
            last_latency: note.last_latency,
            last_error: note.last_error.clone(),
            last_answer_at: note.last_answer_at,
        }
    }

    fn notes_lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, SourceNotes>> {
        // The map is only ever updated by whole-field stores: a panic
        // elsewhere cannot leave it half-written.
        self.notes.lock().unwrap_or_else(|p| p.into_inner())
    }
}
