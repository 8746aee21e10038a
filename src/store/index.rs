//! The in-memory index of committed entries — size and last use — that
//! `--max-size` eviction works from. Rebuilt at start-up by a `scan` of the
//! namespaces (recency then comes from each file's mtime, its fetch time),
//! then kept current by commits, hits and removals.

use super::key::CacheKey;
use super::layout::Layout;
use super::maintenance::Scan;
use std::collections::HashMap;
use std::time::UNIX_EPOCH;

/// One committed entry as eviction sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Indexed {
    /// The entry.
    pub key: CacheKey,
    /// Body bytes.
    pub size: u64,
    /// Milliseconds since the epoch of the last hit (or of the fetch).
    pub last_used: u64,
}

/// Entries by key, with their total size.
#[derive(Default)]
pub(crate) struct Index {
    entries: HashMap<CacheKey, (u64, u64)>,
    total: u64,
}

impl Index {
    /// Records a committed entry of `size` bytes, used now.
    pub(crate) fn record(&mut self, key: &CacheKey, size: u64) {
        self.insert(key.clone(), size, now_ms());
    }

    fn insert(&mut self, key: CacheKey, size: u64, last_used: u64) {
        if let Some((old, _)) = self.entries.insert(key, (size, last_used)) {
            self.total -= old;
        }
        self.total += size;
    }

    /// Marks `key` used now.
    pub(crate) fn touch(&mut self, key: &CacheKey) {
        if let Some(entry) = self.entries.get_mut(key) {
            entry.1 = now_ms();
        }
    }

    /// Forgets `key`.
    pub(crate) fn forget(&mut self, key: &CacheKey) {
        if let Some((size, _)) = self.entries.remove(key) {
            self.total -= size;
        }
    }

    /// (bytes, entries).
    pub(crate) fn usage(&self) -> (u64, u64) {
        (self.total, self.entries.len() as u64)
    }

    /// Every entry, for choosing victims.
    pub(crate) fn snapshot(&self) -> Vec<Indexed> {
        self.entries
            .iter()
            .map(|(key, (size, last_used))| Indexed {
                key: key.clone(),
                size: *size,
                last_used: *last_used,
            })
            .collect()
    }

    /// Lists the committed entries of the cache (blocking). Parts that
    /// cannot be read are skipped: an entry the index misses is only never
    /// evicted.
    pub(crate) fn scan(layout: &Layout) -> Index {
        let mut index = Index::default();
        let entries = match Scan::new(layout).without_meta().entries() {
            Ok(entries) => entries,
            Err(err) => {
                tracing::warn!(error = %err, "cannot list the cache; eviction sees only new entries");
                return index;
            }
        };
        for entry in entries.flatten() {
            let mtime = entry
                .mtime
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            index.insert(entry.key, entry.size, mtime);
        }
        index
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
