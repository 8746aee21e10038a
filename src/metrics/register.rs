//! The exposition's names and help texts: `Metrics::register` puts every
//! family in the registry, with the zero series that must exist from the
//! first scrape. Apart from the counting code because this is the text an
//! operator's dashboards and alerts are written against.

use super::{FillEnd, Metrics, Refresh};
use prometheus_client::registry::Unit;

impl Metrics {
    /// Registers every family; called once, by `Metrics::new`.
    pub(super) fn register(mut self) -> Metrics {
        // Zero series exist from the start, so a rate() over the first
        // scrapes sees 0 → n rather than a series appearing mid-way.
        // (The rows made theirs.)
        for (i, reason) in ["client_gone", "aborted"].into_iter().enumerate() {
            self.incomplete_hot[i] = self.incomplete.get_or_create(&[("reason", reason)]).clone();
        }
        for end in FillEnd::ALL {
            self.fills_ended
                .get_or_create(&[("result", end.as_str())])
                .inc_by(0);
        }
        for result in Refresh::ALL {
            self.revalidations
                .get_or_create(&[("result", result.as_str())])
                .inc_by(0);
        }
        let r = &mut self.registry;
        r.register(
            "requests",
            "Requests on the proxy ports, each counted once when its answer is over, by mount \
             and X-Cache (other: errors, redirects, refusals, clients gone before an answer)",
            self.requests.clone(),
        );
        r.register(
            "requests_incomplete",
            "Requests whose answer did not reach its end: the client left (client_gone) or the \
             body broke off on this side (aborted); also counted in requests",
            self.incomplete.clone(),
        );
        r.register_with_unit(
            "served",
            "Response body bytes sent, by mount, from the cache (HIT) or as they came from \
             upstream (MISS, PASS)",
            Unit::Bytes,
            self.served_bytes.clone(),
        );
        r.register(
            "hit_ratio",
            "HIT / (HIT + MISS + PASS) since start, by mount, as the status page shows it (absent \
             before a mount's first download; over a window, use rate() of requests_total)",
            self.hit_ratio.clone(),
        );
        r.register(
            "fills_started",
            "Downloads into the cache that began writing (the upstream answered 200)",
            self.fills_started.clone(),
        );
        r.register(
            "fills_ended",
            "Downloads into the cache that ended, by result (committed, not_stored, failed, abandoned)",
            self.fills_ended.clone(),
        );
        r.register(
            "fill_joins",
            "Requests served (MISS) from a download another request started",
            self.fill_joins.clone(),
        );
        r.register(
            "revalidations",
            "Upstream requests for index documents (each shared by the requests that arrive \
             meanwhile), by result (updated, not_modified, failed, passed)",
            self.revalidations.clone(),
        );
        r.register(
            "upstream_attempts",
            "Attempts on an upstream source (one per source tried per fetch, its redirects \
             included), by source origin",
            self.upstream_attempts.clone(),
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
            "damaged_entries",
            "Cached entries found damaged on disk (by a read, the scrub or adoption) and quarantined",
            self.damaged_entries.clone(),
        );
        r.register_with_unit(
            "scrubbed",
            "Bytes of cached entries re-checked by the background scrub",
            Unit::Bytes,
            self.scrubbed_bytes.clone(),
        );
        r.register(
            "scrub_damage_found",
            "Damaged entries the background scrub found (also counted in damaged_entries)",
            self.scrub_damage.clone(),
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
        r.register(
            "policy_refusals",
            "Downloads refused by the supply-chain policy, by mount and rule",
            self.policy_refusals.clone(),
        );
        self
    }
}
