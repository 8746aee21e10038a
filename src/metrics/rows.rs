//! The breakdown by mount: one row per `--mirror` mount, one for the
//! `--source` mirrors, one per allowed named host, and one for requests that
//! named no upstream. Rows are fixed when the app starts, from its
//! configuration, so the `mount` label's values (and the memory of the
//! per-minute rings) are bounded by what the operator configured.

use super::history::{Minute, Ring, MINUTES};
use super::snapshot::RequestCounts;
use crate::cache_status::CacheStatus;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use std::sync::Mutex;

/// Where a request went, as the breakdown names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope<'a> {
    /// A `--mirror NAME=…` mount, by name.
    Mount(&'a str),
    /// The `--source` mirrors.
    Mirrors,
    /// A named host (`--transparent-host`, or a source's host outside its
    /// prefix), by its normalised authority.
    Host(&'a str),
    /// No upstream: refused or malformed before routing.
    Unrouted,
}

impl Scope<'_> {
    /// The `mount` label value: the mount's name, `(mirrors)`,
    /// `host:AUTHORITY` or `(none)`. A mount name has no `(` or `:`, so no
    /// two rows share a value.
    pub fn label(&self) -> String {
        match self {
            Scope::Mount(name) => (*name).to_string(),
            Scope::Mirrors => "(mirrors)".into(),
            Scope::Host(authority) => format!("host:{authority}"),
            Scope::Unrouted => "(none)".into(),
        }
    }
}

/// A row of the breakdown, as handed out by `Metrics::row`. Cheap to copy;
/// only meaningful for the `Metrics` that made it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Row(pub(super) usize);

/// Label set of the per-mount families: `mount` and one more.
pub(super) type MountLabel = [(&'static str, String); 2];

/// The `cache` label values, in the order the status page lists them.
pub(super) const CACHE_LABELS: [&str; 4] = ["HIT", "MISS", "PASS", "other"];

/// One row's series and ring.
struct RowState {
    /// What the row is, for lookups and the page.
    kind: Kind,
    label: String,
    /// Handles on the row's series (a counter clone shares its value), so
    /// the per-request path takes no lock on the families and hashes no labels.
    requests: [Counter; 4],
    /// From the cache, from upstream.
    served: [Counter; 2],
    history: Mutex<Ring>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    Mount(String),
    Mirrors,
    Host(String),
    Unrouted,
}

impl Kind {
    fn of(scope: &Scope<'_>) -> Kind {
        match scope {
            Scope::Mount(name) => Kind::Mount((*name).to_string()),
            Scope::Mirrors => Kind::Mirrors,
            Scope::Host(authority) => Kind::Host((*authority).to_string()),
            Scope::Unrouted => Kind::Unrouted,
        }
    }

    fn is(&self, scope: &Scope<'_>) -> bool {
        match (self, scope) {
            (Kind::Mount(a), Scope::Mount(b)) | (Kind::Host(a), Scope::Host(b)) => a == b,
            (Kind::Mirrors, Scope::Mirrors) | (Kind::Unrouted, Scope::Unrouted) => true,
            _ => false,
        }
    }
}

/// One row as the status page shows it.
#[derive(Clone, Debug)]
pub struct MountStats {
    /// The `mount` label value.
    pub label: String,
    /// A `--mirror` mount (not the mirrors, a host or the unrouted row).
    pub is_mount: bool,
    /// Requests by cache status.
    pub requests: RequestCounts,
    /// Body bytes sent from the cache.
    pub bytes_from_cache: u64,
    /// Body bytes sent as they came from upstream.
    pub bytes_from_upstream: u64,
    /// The last hour, oldest minute first; the last is the current minute.
    pub last_hour: [Minute; MINUTES],
}

/// Every row, fixed at start.
pub(super) struct Rows {
    rows: Vec<RowState>,
}

impl Rows {
    /// A row per scope in `configured` (duplicates once), then the mirrors
    /// and the unrouted rows if not among them; zero series for each.
    pub fn new(
        configured: &[Scope<'_>],
        requests: &Family<MountLabel, Counter>,
        served: &Family<MountLabel, Counter>,
    ) -> Rows {
        let mut kinds: Vec<Kind> = Vec::new();
        for scope in configured.iter().chain(&[Scope::Mirrors, Scope::Unrouted]) {
            if !kinds.iter().any(|k| k.is(scope)) {
                kinds.push(Kind::of(scope));
            }
        }
        let rows = kinds
            .into_iter()
            .map(|kind| {
                let label = match &kind {
                    Kind::Mount(name) => Scope::Mount(name).label(),
                    Kind::Mirrors => Scope::Mirrors.label(),
                    Kind::Host(authority) => Scope::Host(authority).label(),
                    Kind::Unrouted => Scope::Unrouted.label(),
                };
                let series =
                    |family: &Family<MountLabel, Counter>, key: &'static str, value: &str| {
                        family
                            .get_or_create(&[("mount", label.clone()), (key, value.to_string())])
                            .clone()
                    };
                RowState {
                    requests: CACHE_LABELS.map(|c| series(requests, "cache", c)),
                    served: ["cache", "upstream"].map(|f| series(served, "from", f)),
                    history: Mutex::new(Ring::default()),
                    kind,
                    label,
                }
            })
            .collect();
        Rows { rows }
    }

    /// The row of `scope`; the unrouted row for a scope not configured
    /// (a host the rules allowed is always configured).
    pub fn row(&self, scope: Scope<'_>) -> Row {
        let found = self.rows.iter().position(|r| r.kind.is(&scope));
        Row(found.unwrap_or_else(|| {
            self.rows
                .iter()
                .position(|r| r.kind == Kind::Unrouted)
                .expect("the unrouted row always exists")
        }))
    }

    /// Counts one request of `row` in minute `now`.
    pub fn record(&self, row: Row, cache: Option<CacheStatus>, bytes: u64, now: u64) {
        let Some(state) = self.rows.get(row.0) else {
            return;
        };
        // Indexes into CACHE_LABELS and into (cache, upstream).
        let (series, from) = match cache {
            Some(CacheStatus::Hit) => (0, Some(0)),
            Some(CacheStatus::Miss) => (1, Some(1)),
            Some(CacheStatus::Pass) => (2, Some(1)),
            None => (3, None),
        };
        state.requests[series].inc();
        if let Some(from) = from {
            state.served[from].inc_by(bytes);
        }
        let mut ring = lock(&state.history);
        let minute = ring.at(now);
        match series {
            0 => minute.hit += 1,
            1 => minute.miss += 1,
            2 => minute.pass += 1,
            _ => minute.other += 1,
        }
        match from {
            Some(0) => minute.bytes_from_cache += bytes,
            Some(_) => minute.bytes_from_upstream += bytes,
            None => {}
        }
    }

    /// Every row's counts and last hour up to minute `now`.
    pub fn stats(&self, now: u64) -> Vec<MountStats> {
        self.rows
            .iter()
            .map(|r| MountStats {
                label: r.label.clone(),
                is_mount: matches!(r.kind, Kind::Mount(_)),
                requests: RequestCounts {
                    hit: r.requests[0].get(),
                    miss: r.requests[1].get(),
                    pass: r.requests[2].get(),
                    other: r.requests[3].get(),
                },
                bytes_from_cache: r.served[0].get(),
                bytes_from_upstream: r.served[1].get(),
                last_hour: lock(&r.history).last_hour(now),
            })
            .collect()
    }
}

fn lock(ring: &Mutex<Ring>) -> std::sync::MutexGuard<'_, Ring> {
    // A ring is updated field by field with no call out: a panic elsewhere
    // cannot leave it inconsistent.
    ring.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_come_from_the_configuration_and_labels_never_collide() {
        let (requests, served) = (Family::default(), Family::default());
        let rows = Rows::new(
            &[
                Scope::Mount("pypi"),
                Scope::Mount("mirrors"),
                Scope::Host("files.example"),
                Scope::Mount("pypi"),
            ],
            &requests,
            &served,
        );
        let labels: Vec<_> = rows.stats(0).into_iter().map(|s| s.label).collect();
        assert_eq!(
            labels,
            [
                "pypi",
                "mirrors",
                "host:files.example",
                "(mirrors)",
                "(none)"
            ]
        );
        assert_ne!(rows.row(Scope::Mount("mirrors")), rows.row(Scope::Mirrors));
        // Not configured: counted, but never as a new label.
        assert_eq!(
            rows.row(Scope::Host("other.example")),
            rows.row(Scope::Unrouted)
        );
        rows.record(
            rows.row(Scope::Mount("pypi")),
            Some(CacheStatus::Hit),
            10,
            5,
        );
        rows.record(rows.row(Scope::Mount("pypi")), None, 99, 5);
        let pypi = &rows.stats(5)[0];
        assert_eq!((pypi.requests.hit, pypi.requests.other), (1, 1));
        assert_eq!((pypi.bytes_from_cache, pypi.bytes_from_upstream), (10, 0));
        assert_eq!(pypi.last_hour[MINUTES - 1].requests(), 2);
        assert_eq!(
            requests
                .get(&[("mount", "pypi".to_string()), ("cache", "HIT".to_string())])
                .map(|c| c.get()),
            Some(1)
        );
    }
}
