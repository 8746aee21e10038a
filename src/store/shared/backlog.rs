//! What a node could not publish while the shared store was away or fell
//! behind: a bounded, deduplicated queue — of cache keys, drained by the
//! tier's upkeep from the local disk, and of first-seen records, drained by
//! the policy's writer. Bounded because an outage can last longer than
//! memory: past the bound the oldest item is forgotten (counted; the next node
//! to miss a key fetches it upstream and publishes it, and a first-seen time
//! stays on the node that has it).

use std::collections::{HashSet, VecDeque};
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// The queue. Every method takes its lock briefly, with no `.await` inside.
#[derive(Debug)]
pub struct Backlog<K> {
    queue: Mutex<Queue<K>>,
    max: usize,
    dropped: AtomicU64,
}

#[derive(Debug)]
struct Queue<K> {
    order: VecDeque<K>,
    members: HashSet<K>,
}

impl<K: Clone + Eq + Hash> Backlog<K> {
    /// An empty queue holding at most `max` items.
    pub fn new(max: usize) -> Backlog<K> {
        Backlog {
            queue: Mutex::new(Queue {
                order: VecDeque::new(),
                members: HashSet::new(),
            }),
            max: max.max(1),
            dropped: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue<K>> {
        // Every update leaves both fields consistent before it can panic.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `key` at the back; false when it was queued already.
    pub fn push(&self, key: K) -> bool {
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
    pub fn push_front(&self, key: K) {
        let mut q = self.lock();
        if q.members.insert(key.clone()) {
            q.order.push_front(key);
        }
    }

    /// The oldest key.
    pub fn pop(&self) -> Option<K> {
        let mut q = self.lock();
        let key = q.order.pop_front()?;
        q.members.remove(&key);
        Some(key)
    }

    /// How many are queued.
    pub fn len(&self) -> usize {
        self.lock().order.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keys forgotten because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{CacheKey, Namespace};

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
