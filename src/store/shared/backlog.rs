//! The keys a node could not publish while the shared store was away or fell
//! behind: a bounded, deduplicated queue, drained by the tier's upkeep from the
//! local disk. Bounded because an outage can last longer than memory: past the
//! bound the oldest key is forgotten (counted; the next node to miss it fetches
//! it upstream and publishes it).

use crate::store::CacheKey;
use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// The queue. Every method takes its lock briefly, with no `.await` inside.
pub(super) struct Backlog {
    queue: Mutex<Queue>,
    max: usize,
    dropped: AtomicU64,
}

#[derive(Default)]
struct Queue {
    order: VecDeque<CacheKey>,
    members: HashSet<CacheKey>,
}

impl Backlog {
    pub(super) fn new(max: usize) -> Backlog {
        Backlog {
            queue: Mutex::new(Queue::default()),
            max: max.max(1),
            dropped: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // Every update leaves both fields consistent before it can panic.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `key` at the back; false when it was queued already.
    pub(super) fn push(&self, key: CacheKey) -> bool {
        let mut q = self.lock();
        if !q.members.insert(key.clone()) {
            return false;
        }
        q.order.push_back(key);
        while q.order.len() > self.max {
            if let Some(old) = q.order.pop_front() {
                q.members.remove(&old);
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        true
    }

    /// Puts back a key just popped (the store stopped answering).
    pub(super) fn push_front(&self, key: CacheKey) {
        let mut q = self.lock();
        if q.members.insert(key.clone()) {
            q.order.push_front(key);
        }
    }

    /// The oldest key.
    pub(super) fn pop(&self) -> Option<CacheKey> {
        let mut q = self.lock();
        let key = q.order.pop_front()?;
        q.members.remove(&key);
        Some(key)
    }

    pub(super) fn len(&self) -> usize {
        self.lock().order.len()
    }

    /// Keys forgotten because the queue was full.
    pub(super) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Namespace;

    fn key(path: &str) -> CacheKey {
        CacheKey::try_from_path(Namespace::Mirrors, path).unwrap()
    }

    #[test]
    fn bounded_deduplicated_oldest_first() {
        let b = Backlog::new(2);
        assert!(b.push(key("/a")));
        assert!(!b.push(key("/a")));
        assert!(b.push(key("/b")));
        assert!(b.push(key("/c")));
        assert_eq!((b.len(), b.dropped()), (2, 1));
        let first = b.pop().unwrap();
        assert_eq!(first, key("/b"));
        b.push_front(first);
        assert_eq!(b.pop(), Some(key("/b")));
        assert_eq!(b.pop(), Some(key("/c")));
        assert_eq!(b.pop(), None);
    }
}
