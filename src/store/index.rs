//! The in-memory index of committed entries — size and last use — that
//! `--max-size` eviction works from. Rebuilt at start-up by walking the
//! namespaces (recency then comes from each file's mtime, its fetch time),
//! then kept current by commits, hits and removals.

use super::key::{CacheKey, Namespace, HOSTS_DIR, MOUNTS_DIR, STATE_DIR};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
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

    /// Walks the namespaces under `root` (blocking). Unreadable parts are
    /// skipped: an index that misses a file only means it is not evicted.
    pub(crate) fn scan(root: &Path) -> Index {
        let mut index = Index::default();
        walk(root, &mut Vec::new(), &mut |segments, md| {
            let (namespace, rest) = match segments.first().map(Vec::as_slice) {
                Some(first) if first == STATE_DIR.as_bytes() => return,
                Some(first) if first == HOSTS_DIR.as_bytes() && segments.len() > 2 => (
                    Namespace::Host(String::from_utf8_lossy(&segments[1]).into_owned()),
                    &segments[2..],
                ),
                Some(first) if first == MOUNTS_DIR.as_bytes() && segments.len() > 2 => (
                    Namespace::Mount(String::from_utf8_lossy(&segments[1]).into_owned()),
                    &segments[2..],
                ),
                Some(first) if first == HOSTS_DIR.as_bytes() || first == MOUNTS_DIR.as_bytes() => {
                    return
                }
                _ => (Namespace::Mirrors, segments),
            };
            let Some(key) = CacheKey::from_segments(namespace, rest.to_vec()) else {
                return;
            };
            let mtime = md
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            index.insert(key, md.len(), mtime);
        });
        index
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn walk(
    dir: &Path,
    segments: &mut Vec<Vec<u8>>,
    found: &mut impl FnMut(&[Vec<u8>], &fs::Metadata),
) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if segments.is_empty() && name == OsStr::new(STATE_DIR) {
            continue;
        }
        // symlink_metadata: never follow a link out of the cache.
        let Ok(md) = fs::symlink_metadata(entry.path()) else {
            continue;
        };
        segments.push(name.as_bytes().to_vec());
        if md.is_dir() {
            walk(&entry.path(), segments, found);
        } else if md.is_file() {
            found(segments, &md);
        }
        segments.pop();
    }
}
