//! `--max-size`: what is evicted first. [`Lru`] orders the entries least
//! recently used first and leaves out pinned ones; the store asks it for
//! victims whenever a fill needs room (see `store::budget`: room is made
//! when a fill is admitted and before its commit, so disk use never exceeds
//! the limit by more than the fills in flight). [`run`] installs it and
//! trims, in the background, what the limit finds already there (entries of
//! an earlier run, a lower limit than before), once the store's index of
//! them is built (see `Store::wait_indexed`). The store offers the least
//! recently used entries a batch at a time; [`candidates`] orders a batch. Entries being filled are
//! never chosen; on Unix a reader that has an entry open keeps reading it
//! after the unlink.

use crate::store::{CacheKey, Evictor, Indexed, Store};
use globset::{Glob, GlobSet, GlobSetBuilder};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often usage is compared with the limit in the background.
const CHECK_EVERY: Duration = Duration::from_millis(500);

/// What eviction keeps to.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Most bytes of committed entries.
    pub max_size: u64,
    /// Entries whose path matches are never evicted.
    pub pinned: GlobSet,
}

impl Limits {
    /// From the configured size and pin globs (validated by the config).
    pub fn new(max_size: u64, pins: &[String]) -> Limits {
        let mut builder = GlobSetBuilder::new();
        for pin in pins {
            if let Ok(glob) = Glob::new(pin) {
                builder.add(glob);
            }
        }
        Limits {
            max_size,
            pinned: builder.build().unwrap_or_else(|_| GlobSet::empty()),
        }
    }

    fn is_pinned(&self, key: &CacheKey) -> bool {
        !self.pinned.is_empty() && self.pinned.is_match(key.to_string())
    }
}

/// The entries that may be evicted, least recently used first (of two used
/// in the same millisecond, the larger first). Pinned entries are left out.
pub fn candidates<'a>(entries: &'a [Indexed], limits: &Limits) -> Vec<&'a Indexed> {
    let mut candidates: Vec<&Indexed> = entries
        .iter()
        .filter(|e| !limits.is_pinned(&e.key))
        .collect();
    candidates.sort_by(|a, b| a.last_used.cmp(&b.last_used).then(b.size.cmp(&a.size)));
    candidates
}

/// The entries to remove, least recently used first, to bring `total`
/// down to `target`. Pinned entries are skipped.
pub fn select_victims<'a>(
    entries: &'a [Indexed],
    total: u64,
    target: u64,
    limits: &Limits,
) -> Vec<&'a Indexed> {
    if total <= target {
        return Vec::new();
    }
    let mut excess = total - target;
    let mut victims = Vec::new();
    for entry in candidates(entries, limits) {
        if excess == 0 {
            break;
        }
        excess = excess.saturating_sub(entry.size);
        victims.push(entry);
    }
    victims
}

/// Least recently used first, pinned entries never; counts what it evicts.
pub struct Lru<F> {
    limits: Limits,
    on_evict: F,
}

impl<F: Fn(u64) + Send + Sync + 'static> Lru<F> {
    /// Eviction within `limits`, telling `on_evict` the bytes of each entry removed.
    pub fn new(limits: Limits, on_evict: F) -> Lru<F> {
        Lru { limits, on_evict }
    }
}

impl<F: Fn(u64) + Send + Sync + 'static> Evictor for Lru<F> {
    fn candidates<'a>(&self, entries: &'a [Indexed]) -> Vec<&'a Indexed> {
        candidates(entries, &self.limits)
    }

    fn evicted(&self, key: &CacheKey, bytes: u64) {
        tracing::debug!(key = %key, bytes, "evicted");
        (self.on_evict)(bytes);
    }
}

/// Puts `store` under `limits` now (before the returned future first
/// runs), then, until `cancel` fires, trims whatever is over the limit
/// without a fill asking (entries of an earlier run, pins).
pub fn run(
    store: Store,
    limits: Limits,
    cancel: CancellationToken,
    on_evict: impl Fn(u64) + Send + Sync + 'static,
) -> impl Future<Output = ()> {
    let max_size = limits.max_size;
    store.limit(max_size, Arc::new(Lru::new(limits, on_evict)));
    async move {
        let mut tick = tokio::time::interval(CHECK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            let (count, freed) = tokio::select! {
                _ = cancel.cancelled() => return,
                trimmed = store.trim() => trimmed,
            };
            if count == 0 {
                continue;
            }
            let (after, entries) = store.usage();
            tracing::info!(
                evicted = count,
                freed_bytes = freed,
                size = after,
                entries,
                max_size,
                "evicted least recently used entries"
            );
            if after > max_size {
                tracing::warn!(
                    size = after,
                    max_size,
                    "still over --max-size (pinned entries or fills in progress)"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Namespace;

    fn entry(path: &str, size: u64, last_used: u64) -> Indexed {
        Indexed {
            key: CacheKey::try_from_path(Namespace::Mirrors, path).unwrap(),
            size,
            last_used,
            inode: 0,
        }
    }

    #[test]
    fn least_recently_used_go_first_and_pins_stay() {
        let entries = [
            entry("/a", 40, 3),
            entry("/b", 40, 1),
            entry("/keep/c", 40, 0),
            entry("/d", 40, 2),
        ];
        let limits = Limits::new(100, &["/keep/**".into()]);
        let names = |v: Vec<&Indexed>| v.iter().map(|e| e.key.to_string()).collect::<Vec<_>>();
        assert_eq!(
            names(select_victims(&entries, 160, 90, &limits)),
            ["/b", "/d"]
        );
        assert_eq!(
            names(select_victims(&entries, 160, 0, &limits)),
            ["/b", "/d", "/a"]
        );
        assert!(select_victims(&entries, 80, 90, &limits).is_empty());
        assert_eq!(names(candidates(&entries, &limits)), ["/b", "/d", "/a"]);
    }

    #[test]
    fn an_entry_used_a_moment_ago_goes_after_every_colder_one() {
        let mut entries: Vec<_> = (0..40)
            .map(|i| entry(&format!("/cold{i}"), 1 << 20, 1_000 + i))
            .collect();
        entries.push(entry("/hot", 1 << 20, 999_999));
        let limits = Limits::new(20 << 20, &[]);
        let order = candidates(&entries, &limits);
        assert_eq!(order.last().unwrap().key.to_string(), "/hot");
        let victims = select_victims(&entries, 41 << 20, 18 << 20, &limits);
        assert_eq!(victims.len(), 23);
        assert!(victims.iter().all(|v| v.key.to_string() != "/hot"));
    }
}
