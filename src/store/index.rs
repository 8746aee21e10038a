//! The in-memory index of committed entries — size, last use and the inode
//! of the body — that `--max-size` eviction works from. Rebuilt at start-up
//! by a `scan` of the namespaces (recency then comes from each file's mtime,
//! its fetch time), then kept current by commits, hits and removals (commits
//! and removals of a key under its guard, see `guard`).

use super::key::CacheKey;
use super::layout::Layout;
use super::maintenance::Scan;
use std::collections::HashMap;
use std::time::UNIX_EPOCH;

/// One committed entry as eviction sees it: a victim is removed only if it
/// is still this body (same inode) and unused since (same `last_used`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Indexed {
    /// The entry.
    pub key: CacheKey,
    /// Body bytes.
    pub size: u64,
    /// Milliseconds since the epoch of the last hit (or of the fetch).
    pub last_used: u64,
    /// Inode of the body file.
    pub inode: u64,
}

/// What the index keeps per entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Slot {
    pub(crate) size: u64,
    pub(crate) last_used: u64,
    pub(crate) inode: u64,
}

/// Entries by key, with their total size.
#[derive(Default)]
pub(crate) struct Index {
    entries: HashMap<CacheKey, Slot>,
    total: u64,
}

impl Index {
    /// Records a committed entry of `size` bytes in inode `inode`, used now.
    pub(crate) fn record(&mut self, key: &CacheKey, size: u64, inode: u64) {
        self.insert(
            key.clone(),
            Slot {
                size,
                last_used: now_ms(),
                inode,
            },
        );
    }

    fn insert(&mut self, key: CacheKey, slot: Slot) {
        if let Some(old) = self.entries.insert(key, slot) {
            self.total -= old.size;
        }
        self.total += slot.size;
    }

    /// Marks `key` used now. Never moves backwards: two hits in one
    /// millisecond, or a clock step, keep the later time.
    pub(crate) fn touch(&mut self, key: &CacheKey) {
        if let Some(entry) = self.entries.get_mut(key) {
            entry.last_used = entry.last_used.max(now_ms());
        }
    }

    /// What the index holds for `key`.
    pub(crate) fn get(&self, key: &CacheKey) -> Option<Slot> {
        self.entries.get(key).copied()
    }

    /// The body of `key` is now `size` bytes in inode `inode` (replaced
    /// behind the server's back); its last use stays.
    pub(crate) fn replace_body(&mut self, key: &CacheKey, size: u64, inode: u64) {
        if let Some(slot) = self.get(key) {
            self.insert(
                key.clone(),
                Slot {
                    size,
                    inode,
                    ..slot
                },
            );
        }
    }

    /// Forgets `key`.
    pub(crate) fn forget(&mut self, key: &CacheKey) {
        if let Some(slot) = self.entries.remove(key) {
            self.total -= slot.size;
        }
    }

    /// Bytes counted against `--max-size`: bodies, plus `overhead` per entry.
    pub(crate) fn charged(&self, overhead: u64) -> u64 {
        self.total + self.entries.len() as u64 * overhead
    }

    /// (bytes, entries).
    pub(crate) fn usage(&self) -> (u64, u64) {
        (self.total, self.entries.len() as u64)
    }

    /// Every entry, for choosing victims.
    pub(crate) fn snapshot(&self) -> Vec<Indexed> {
        self.entries
            .iter()
            .map(|(key, slot)| Indexed {
                key: key.clone(),
                size: slot.size,
                last_used: slot.last_used,
                inode: slot.inode,
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
            let slot = Slot {
                size: entry.size,
                last_used: mtime,
                inode: entry.inode,
            };
            index.insert(entry.key, slot);
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
