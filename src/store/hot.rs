//! `HotSet`: small committed entries kept in memory, so that a hit on one
//! needs no blocking-pool round trip (open, stat, read metadata, read body).
//!
//! Bounded by total bytes; the oldest insertions go first. The store drops a
//! key from here whenever it commits or removes that key, so the set never
//! disagrees with what the store itself wrote. (Edits made to the directory
//! behind the running server's back are not seen until restart.)

use super::{CacheKey, EntryMeta};
use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// One small entry, whole.
#[derive(Clone)]
pub(crate) struct HotEntry {
    pub(crate) body: Bytes,
    pub(crate) meta: Option<Arc<EntryMeta>>,
    pub(crate) mtime: SystemTime,
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

    pub(crate) fn get(&self, key: &CacheKey) -> Option<HotEntry> {
        self.inner
            .lock()
            .expect("hot set lock is never poisoned")
            .map
            .get(key)
            .cloned()
    }

    pub(crate) fn insert(&self, key: CacheKey, entry: HotEntry) {
        let cost = entry.body.len() + 256;
        if cost > self.budget {
            return;
        }
        let mut inner = self.inner.lock().expect("hot set lock is never poisoned");
        if let Some(old) = inner.map.insert(key.clone(), entry) {
            inner.bytes -= old.body.len() + 256;
        } else {
            inner.order.push_back(key);
        }
        inner.bytes += cost;
        while inner.bytes > self.budget {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            if let Some(gone) = inner.map.remove(&oldest) {
                inner.bytes -= gone.body.len() + 256;
            }
        }
    }

    pub(crate) fn remove(&self, key: &CacheKey) {
        let mut inner = self.inner.lock().expect("hot set lock is never poisoned");
        if let Some(gone) = inner.map.remove(key) {
            inner.bytes -= gone.body.len() + 256;
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
        }
    }

    #[test]
    fn stays_within_its_budget_dropping_the_oldest() {
        let hot = HotSet::new(3 * (1000 + 256));
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
}
