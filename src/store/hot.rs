//! `HotSet`: small committed entries kept in memory, so that a hit on one
//! needs no blocking-pool round trip (open, stat, read metadata, read body).
//!
//! Bounded by what the entries really occupy (body, key twice, metadata); the
//! oldest insertions go first. The store drops a key whenever it commits or
//! removes it; and an entry is trusted for [`TRUST`] only, after which the
//! next hit re-opens the file, so edits made behind the server's back (an
//! operator deleting or replacing a file) show within a second.

use super::{CacheKey, EntryMeta};
use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// How long an entry is served from memory without looking at the disk.
pub(crate) const TRUST: Duration = Duration::from_secs(1);

/// One small entry, whole.
#[derive(Clone)]
pub(crate) struct HotEntry {
    pub(crate) body: Bytes,
    pub(crate) meta: Option<Arc<EntryMeta>>,
    pub(crate) mtime: SystemTime,
    /// When the file was last read from disk.
    pub(crate) checked: Instant,
}

impl HotEntry {
    fn cost(&self, key: &CacheKey) -> usize {
        // The key is held twice: in the map and in the eviction queue.
        self.body.len()
            + 2 * key.approx_size()
            + self.meta.as_ref().map_or(0, |m| m.approx_size())
            + 64
    }
}

struct Inner {
    map: HashMap<CacheKey, HotEntry>,
    order: VecDeque<CacheKey>,
    bytes: usize,
}

/// A byte-bounded map of small entries. Cheap to share; all methods are short.
pub(crate) struct HotSet {
    budget: usize,
    inner: Mutex<Inner>,
}

impl HotSet {
    pub(crate) fn new(budget: usize) -> HotSet {
        HotSet {
            budget,
            inner: Mutex::new(Inner {
                map: HashMap::new(),
                order: VecDeque::new(),
                bytes: 0,
            }),
        }
    }

    /// The entry, if present and checked against the disk within [`TRUST`].
    pub(crate) fn get(&self, key: &CacheKey) -> Option<HotEntry> {
        let inner = self.inner.lock().expect("hot set lock is never poisoned");
        inner
            .map
            .get(key)
            .filter(|e| e.checked.elapsed() < TRUST)
            .cloned()
    }

    pub(crate) fn insert(&self, key: CacheKey, entry: HotEntry) {
        let cost = entry.cost(&key);
        if cost > self.budget {
            return;
        }
        let mut inner = self.inner.lock().expect("hot set lock is never poisoned");
        if let Some(old) = inner.map.insert(key.clone(), entry) {
            inner.bytes -= old.cost(&key);
        } else {
            inner.order.push_back(key);
        }
        inner.bytes += cost;
        while inner.bytes > self.budget {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            if let Some(gone) = inner.map.remove(&oldest) {
                inner.bytes -= gone.cost(&oldest);
            }
        }
    }

    pub(crate) fn remove(&self, key: &CacheKey) {
        let mut inner = self.inner.lock().expect("hot set lock is never poisoned");
        if let Some(gone) = inner.map.remove(key) {
            inner.bytes -= gone.cost(key);
            inner.order.retain(|k| k != key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Namespace;

    fn key(p: &str) -> CacheKey {
        CacheKey::try_from_path(Namespace::Mirrors, p).unwrap()
    }

    fn entry(n: usize) -> HotEntry {
        HotEntry {
            body: Bytes::from(vec![0u8; n]),
            meta: None,
            mtime: SystemTime::UNIX_EPOCH,
            checked: Instant::now(),
        }
    }

    #[test]
    fn stays_within_its_budget_dropping_the_oldest() {
        let one = entry(1000).cost(&key("/f0"));
        let hot = HotSet::new(3 * one);
        for i in 0..5 {
            hot.insert(key(&format!("/f{i}")), entry(1000));
        }
        assert!(hot.get(&key("/f0")).is_none() && hot.get(&key("/f1")).is_none());
        assert!(hot.get(&key("/f4")).is_some() && hot.get(&key("/f2")).is_some());
        hot.remove(&key("/f4"));
        assert!(hot.get(&key("/f4")).is_none());
        hot.insert(key("/big"), entry(10_000));
        assert!(
            hot.get(&key("/big")).is_none(),
            "larger than the whole budget"
        );
        hot.insert(key("/f2"), entry(10));
        assert_eq!(hot.get(&key("/f2")).unwrap().body.len(), 10, "replaced");
    }

    #[test]
    fn long_keys_count_against_the_budget() {
        let long = |i: usize| key(&format!("/{}/{i}", "k".repeat(200)));
        let hot = HotSet::new(64 * 1024);
        for i in 0..10_000 {
            hot.insert(long(i), entry(0));
        }
        let kept = (0..10_000).filter(|&i| hot.get(&long(i)).is_some()).count();
        assert!(
            kept * 2 * long(0).approx_size() <= 64 * 1024,
            "{kept} empty entries kept"
        );
        assert!(kept > 0);
    }

    #[test]
    fn entries_are_trusted_for_a_second_only() {
        let hot = HotSet::new(1 << 20);
        let mut old = entry(10);
        old.checked = Instant::now() - TRUST - Duration::from_millis(1);
        hot.insert(key("/old"), old);
        assert!(
            hot.get(&key("/old")).is_none(),
            "stale: the next hit goes to the disk"
        );
    }
}
