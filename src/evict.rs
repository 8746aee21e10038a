//! `--max-size`: least-recently-used entries are removed in the background
//! when the committed entries outgrow the limit, down to a low-water mark so
//! that eviction runs in batches, not on every commit. Pinned entries and
//! entries being filled are never chosen; on Unix a reader that has an entry
//! open keeps reading it after the unlink.

use crate::store::{CacheKey, Indexed, Store};
use globset::{Glob, GlobSet, GlobSetBuilder};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Eviction goes down to this share of the limit.
const LOW_WATER_PERCENT: u64 = 90;
/// How often usage is compared with the limit.
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
    let mut candidates: Vec<&Indexed> = entries
        .iter()
        .filter(|e| !limits.is_pinned(&e.key))
        .collect();
    candidates.sort_by_key(|e| e.last_used);
    let mut excess = total - target;
    let mut victims = Vec::new();
    for entry in candidates {
        if excess == 0 {
            break;
        }
        excess = excess.saturating_sub(entry.size);
        victims.push(entry);
    }
    victims
}

/// Keeps `store` within `limits` until `cancel` fires.
pub async fn run(store: Store, limits: Limits, cancel: CancellationToken, on_evict: impl Fn(u64)) {
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let (total, _) = store.usage();
        if total <= limits.max_size {
            continue;
        }
        let target = limits.max_size / 100 * LOW_WATER_PERCENT;
        let indexed = store.indexed();
        let victims = select_victims(&indexed, total, target, &limits);
        let (mut freed, mut count) = (0u64, 0u64);
        for victim in victims {
            if cancel.is_cancelled() {
                return;
            }
            match store.evict(victim).await {
                Ok(0) => {}
                Ok(bytes) => {
                    freed += bytes;
                    count += 1;
                    on_evict(bytes);
                }
                Err(err) => tracing::warn!(key = %victim.key, error = %err, "cannot evict"),
            }
        }
        let (after, entries) = store.usage();
        tracing::info!(
            evicted = count,
            freed_bytes = freed,
            size = after,
            entries,
            max_size = limits.max_size,
            "evicted least recently used entries"
        );
        if after > limits.max_size {
            tracing::warn!(
                size = after,
                max_size = limits.max_size,
                "still over --max-size (pinned entries or fills in progress)"
            );
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
    }
}
