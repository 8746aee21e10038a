//! `Metrics`: the counters of one running app, and their exposition.
//!
//! Owns every counter, gauge and histogram (one `Arc<Metrics>` per app,
//! created in `app::start` and handed to the proxy, to the upstream client as
//! its `upstream::Observer`, and to the admin listener). It does not sample
//! the store or serve HTTP: values that live elsewhere (fills in progress,
//! cache size) are passed in at scrape.
//!
//! The model, which every call site keeps (and `tests/admin/adding_up.rs`
//! adds up):
//! - `requests_total{mount,cache}`: every request on the proxy ports, once,
//!   when its answer is over (sent, broken off, or its client gone), in the
//!   row of the mount it went to (`rows`). HIT, MISS, PASS and other add up
//!   to all requests; `served_bytes_total{mount,from}` likewise.
//! - `fill_joins_total`: the MISS requests served from a download another
//!   request started, counted with the request (never per lookup).
//! - `fills_started_total`: downloads into the cache that began writing (the
//!   upstream answered 200); `fills_ended_total{result}` ends each of them
//!   once, so started = ended + in progress.
//! - `revalidations_total{result}`: upstream requests for index documents.
//! - `upstream_attempts_total{source}`: one per source tried per upstream
//!   fetch (its redirects included); `upstream_errors_total{source,kind}`
//!   the failed ones among them.

mod format;
mod history;
mod register;
mod report;
mod rows;
mod snapshot;
mod sources;

pub use format::Format;
pub use history::{Minute, MINUTES};
pub use report::{Ending, FillEnd, Refresh, Served};
pub use rows::{MountStats, Row, Scope};
pub use snapshot::{
    FillCounts, RequestCounts, RevalidationCounts, Sampled, SharedSample, Snapshot, SourceHealth,
};

use crate::cache_status::CacheStatus;
use crate::store;
use prometheus_client::encoding::text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use sources::{head_histogram, SourceNotes};
use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::Instant;

type Label = [(&'static str, &'static str); 1];
type SourceLabel = [(&'static str, String); 1];
type ErrorLabel = [(&'static str, String); 2];
type U64Gauge = Gauge<u64, AtomicU64>;
type RatioGauge = Gauge<f64, AtomicU64>;

/// Every metric of one app. `Sync`: all updates are atomic, except the
/// per-source notes behind a short-held mutex. Never a static: tests run
/// many apps in one process.
pub struct Metrics {
    registry: Registry,
    requests: Family<rows::MountLabel, Counter>,
    incomplete: Family<Label, Counter>,
    served_bytes: Family<rows::MountLabel, Counter>,
    hit_ratio: Family<[(&'static str, String); 1], RatioGauge>,
    fills_started: Counter,
    fills_ended: Family<Label, Counter>,
    fill_joins: Counter,
    revalidations: Family<Label, Counter>,
    upstream_attempts: Family<SourceLabel, Counter>,
    upstream_errors: Family<ErrorLabel, Counter>,
    upstream_head: Family<SourceLabel, Histogram, fn() -> Histogram>,
    fills_in_progress: U64Gauge,
    cache_bytes: U64Gauge,
    cache_entries: U64Gauge,
    evictions: Counter,
    evicted_bytes: Counter,
    damaged_entries: Counter,
    scrubbed_bytes: Counter,
    scrub_damage: Counter,
    build_queue_depth: U64Gauge,
    build_jobs: Family<[(&'static str, &'static str); 1], U64Gauge>,
    shared_up: U64Gauge,
    shared_backlog: U64Gauge,
    shared_events: Family<[(&'static str, &'static str); 1], U64Gauge>,
    notes: Mutex<BTreeMap<String, SourceNotes>>,
    /// Downloads the supply-chain policy refused, by mount and rule.
    policy_refusals: Family<[(&'static str, String); 2], Counter>,
    started: Instant,
    /// The breakdown by mount, with handles on its series.
    rows: rows::Rows,
    /// Handles on `incomplete` (client gone, aborted): a counter clone
    /// shares its value, so the per-request path hashes no labels.
    incomplete_hot: [Counter; 2],
}

impl store::DamageObserver for Metrics {
    fn damaged(&self, _key: &store::CacheKey, _damage: &store::Damage) {
        self.damaged_entries.inc();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new(&[])
    }
}

impl Metrics {
    /// Every counter at zero, registered under the `package_cache_` prefix,
    /// with a row of the breakdown for each of `scopes` (the configured
    /// mounts and hosts; the mirrors and unrouted rows always exist).
    pub fn new(scopes: &[Scope<'_>]) -> Metrics {
        let requests = Family::default();
        let served_bytes = Family::default();
        let rows = rows::Rows::new(scopes, &requests, &served_bytes);
        let m = Metrics {
            registry: Registry::with_prefix("package_cache"),
            requests,
            incomplete: Family::default(),
            served_bytes,
            hit_ratio: Family::default(),
            fills_started: Counter::default(),
            fills_ended: Family::default(),
            fill_joins: Counter::default(),
            revalidations: Family::default(),
            upstream_attempts: Family::default(),
            upstream_errors: Family::default(),
            upstream_head: Family::new_with_constructor(head_histogram),
            fills_in_progress: U64Gauge::default(),
            cache_bytes: U64Gauge::default(),
            cache_entries: U64Gauge::default(),
            evictions: Counter::default(),
            evicted_bytes: Counter::default(),
            damaged_entries: Counter::default(),
            scrubbed_bytes: Counter::default(),
            scrub_damage: Counter::default(),
            build_queue_depth: U64Gauge::default(),
            build_jobs: Family::default(),
            shared_up: U64Gauge::default(),
            shared_backlog: U64Gauge::default(),
            shared_events: Family::default(),
            notes: Mutex::new(BTreeMap::new()),
            policy_refusals: Family::default(),
            started: Instant::now(),
            rows,
            incomplete_hot: Default::default(),
        };
        m.register()
    }

    /// The row of the breakdown `scope` is counted in.
    pub fn row(&self, scope: Scope<'_>) -> Row {
        self.rows.row(scope)
    }

    /// Records one request whose answer is over. Called exactly once per
    /// request (by the access log's guard), whatever became of it.
    pub fn request_served(&self, served: &Served) {
        self.rows
            .record(served.row, served.cache, served.bytes, self.minute());
        // A follower served from the cache (the fill it found was committing)
        // is a HIT, not a join: each request is in one place only.
        if served.joined && served.cache == Some(CacheStatus::Miss) {
            self.fill_joins.inc();
        }
        match served.ending {
            Ending::Complete => {}
            Ending::ClientGone => {
                self.incomplete_hot[0].inc();
            }
            Ending::Aborted => {
                self.incomplete_hot[1].inc();
            }
        }
    }

    /// Minutes since the app started: the per-minute rings' clock (monotonic,
    /// so a wall-clock step neither loses nor repeats a minute).
    fn minute(&self) -> u64 {
        self.started.elapsed().as_secs() / 60
    }

    /// A download into the cache began writing.
    pub fn fill_started(&self) {
        self.fills_started.inc();
    }

    /// A download that [`Metrics::fill_started`] counted ended.
    pub fn fill_ended(&self, end: FillEnd) {
        self.fills_ended
            .get_or_create(&[("result", end.as_str())])
            .inc();
    }

    /// An upstream request for an index document ended with `result`.
    pub fn revalidated(&self, result: Refresh) {
        self.revalidations
            .get_or_create(&[("result", result.as_str())])
            .inc();
    }

    /// Entries were evicted: `bytes` in total, one entry per call.
    pub fn evicted(&self, bytes: u64) {
        self.evictions.inc();
        self.evicted_bytes.inc_by(bytes);
    }

    /// The background scrub re-checked `bytes` more.
    pub fn scrubbed(&self, bytes: u64) {
        self.scrubbed_bytes.inc_by(bytes);
    }

    /// The background scrub found a damaged entry.
    pub fn scrub_found_damage(&self) {
        self.scrub_damage.inc();
    }

    /// The supply-chain policy refused a download on `mount` by `rule`.
    pub fn policy_refused(&self, mount: &str, rule: &'static str) {
        self.policy_refusals
            .get_or_create(&[("mount", mount.to_string()), ("rule", rule.to_string())])
            .inc();
    }

    /// The exposition in `format`, with `sampled` as the gauges' values.
    pub fn encode(&self, sampled: Sampled, format: Format) -> Result<String, std::fmt::Error> {
        self.fills_in_progress.set(sampled.fills_in_progress);
        self.cache_bytes.set(sampled.cache_bytes);
        self.cache_entries.set(sampled.cache_entries);
        self.build_queue_depth.set(sampled.build_queue_depth);
        for (state, count) in &sampled.build_jobs {
            self.build_jobs
                .get_or_create(&[("state", *state)])
                .set(*count);
        }
        for row in self.rows.stats(self.minute()) {
            if let Some(ratio) = row.requests.hit_ratio() {
                self.hit_ratio
                    .get_or_create(&[("mount", row.label)])
                    .set(ratio);
            }
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
        Ok(match format {
            Format::OpenMetrics => out,
            Format::PrometheusText => format::to_prometheus_text(&out),
        })
    }

    /// The counters as the status page shows them.
    pub fn snapshot(&self) -> Snapshot {
        let count = |family: &Family<Label, Counter>, label: (&'static str, &'static str)| {
            family.get(&[label]).map_or(0, |c| c.get())
        };
        let by_mount = self.rows.stats(self.minute());
        let mut requests = RequestCounts::default();
        let mut last_hour = [Minute::default(); MINUTES];
        let (mut bytes_from_cache, mut bytes_from_upstream) = (0, 0);
        for row in &by_mount {
            requests.add(&row.requests);
            bytes_from_cache += row.bytes_from_cache;
            bytes_from_upstream += row.bytes_from_upstream;
            for (total, minute) in last_hour.iter_mut().zip(&row.last_hour) {
                total.add(minute);
            }
        }
        let ended = |end: FillEnd| count(&self.fills_ended, ("result", end.as_str()));
        let fills = FillCounts {
            started: self.fills_started.get(),
            committed: ended(FillEnd::Committed),
            not_stored: ended(FillEnd::NotStored),
            failed: ended(FillEnd::Failed),
            abandoned: ended(FillEnd::Abandoned),
            joins: self.fill_joins.get(),
        };
        let revalidated = |r: Refresh| count(&self.revalidations, ("result", r.as_str()));
        let revalidations = RevalidationCounts {
            updated: revalidated(Refresh::Updated),
            not_modified: revalidated(Refresh::NotModified),
            failed: revalidated(Refresh::Failed),
            passed: revalidated(Refresh::Passed),
        };
        let sources = self
            .notes_lock()
            .iter()
            .map(|(origin, note)| self.health(origin, note))
            .collect();
        Snapshot {
            requests,
            client_gone: count(&self.incomplete, ("reason", "client_gone")),
            broken: count(&self.incomplete, ("reason", "aborted")),
            bytes_from_cache,
            bytes_from_upstream,
            by_mount,
            last_hour,
            fills,
            revalidations,
            evictions: self.evictions.get(),
            evicted_bytes: self.evicted_bytes.get(),
            sources,
            uptime: self.started.elapsed(),
        }
    }
}
