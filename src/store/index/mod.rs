//! The in-memory index of committed entries — size, last use and the inode
//! of the body — that `--max-size` eviction works from. It is built in the
//! background after the store opens (`build`: a walk of the namespaces,
//! recency from each file's mtime, its fetch time) while the server already
//! serves, and kept current by commits, hits and removals (commits and
//! removals of a key under its guard, see `guard`). Choosing victims and
//! finding their keys again is `oldest`'s.
//!
//! Compact, for caches of millions of entries: an entry is kept under the
//! sha256 of its canonical name (which is also the name of its metadata
//! file, so its key can be read back from disk when it is evicted), not
//! under its key: 56 bytes per entry plus the hash table's slack. Only
//! entries without metadata under that name (package-cache 0.2 entries,
//! names of earlier versions) keep their canonical name in memory too.

pub(super) mod build;
mod oldest;

use super::key::CacheKey;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
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

/// What the index keeps an entry under: the sha256 of its canonical name,
/// the name of its metadata file (`Layout::meta_file_hashed`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct EntryId(pub(crate) [u8; 32]);

impl EntryId {
    pub(crate) fn of(key: &CacheKey) -> EntryId {
        EntryId::of_canonical(&key.canonical())
    }

    pub(crate) fn of_canonical(name: &str) -> EntryId {
        EntryId(Sha256::digest(name.as_bytes()).into())
    }

    fn shard(&self) -> usize {
        usize::from(self.0[31]) % SHARDS
    }
}

// Ids are sha256 digests, so 8 of their bytes are already a good hash.
impl Hash for EntryId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let (head, _) = self.0.split_at(8);
        state.write_u64(u64::from_le_bytes(head.try_into().expect("8 bytes")));
    }
}

/// Mixes the `u64`s it is given (an id's prefix, an inode); no SipHash.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x517c_c1b7_2722_0a95);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type IdMap<V> = HashMap<EntryId, V, BuildHasherDefault<IdHasher>>;

/// Shards of the index: a hit's touch, a commit and the background build
/// each lock one, and choosing victims locks them one after the other, so
/// none of them waits for a pass over millions of entries.
const SHARDS: usize = 64;
/// Set in [`Slot::size_and_kept`]: the evictor left this entry out (it is
/// pinned); it is not offered again until it is committed again.
const KEPT: u64 = 1 << 63;

/// What the index keeps per entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Slot {
    size_and_kept: u64,
    pub(crate) last_used: u64,
    pub(crate) inode: u64,
}

impl Slot {
    pub(crate) fn new(size: u64, last_used: u64, inode: u64) -> Slot {
        Slot {
            size_and_kept: size & !KEPT,
            last_used,
            inode,
        }
    }

    pub(crate) fn size(&self) -> u64 {
        self.size_and_kept & !KEPT
    }

    fn kept(&self) -> bool {
        self.size_and_kept & KEPT != 0
    }
}

#[derive(Default)]
struct Shard {
    entries: IdMap<Slot>,
    /// Canonical names of the entries whose metadata is not stored under
    /// that name: the only way back to their keys.
    names: IdMap<Box<str>>,
    /// While the build runs, what happened to entries it may not have
    /// reached yet.
    early: Option<Early>,
}

/// Hits and removals during the build, of entries not in the index yet.
#[derive(Default)]
struct Early {
    /// Last use of entries hit before the build listed them.
    used: IdMap<u64>,
    /// Bodies (id, inode) removed: the build may have seen them before the
    /// unlink and must not count them.
    removed: HashSet<(EntryId, u64), BuildHasherDefault<IdHasher>>,
}

/// Entries by id, with their total size.
///
/// Concurrency: every method takes `&self` and locks at most one shard at a
/// time, never across I/O. Totals are atomics, updated under the shard lock
/// of the entry they count, so a reader may see a commit's bytes before its
/// claim is released (counted twice for a moment), never after.
pub(crate) struct Index {
    shards: Box<[Mutex<Shard>]>,
    bytes: AtomicU64,
    count: AtomicU64,
    built: AtomicBool,
    ready: tokio::sync::watch::Sender<bool>,
}

impl Index {
    /// An index of an empty cache: complete at once.
    pub(crate) fn built() -> Index {
        Index::new(true)
    }

    /// An index that a [`build`] will complete; until then it counts what
    /// it has been told and what the build has listed so far.
    pub(crate) fn building() -> Index {
        Index::new(false)
    }

    fn new(built: bool) -> Index {
        let shard = || {
            Mutex::new(Shard {
                early: (!built).then(Early::default),
                ..Shard::default()
            })
        };
        Index {
            shards: (0..SHARDS).map(|_| shard()).collect(),
            bytes: AtomicU64::new(0),
            count: AtomicU64::new(0),
            built: AtomicBool::new(built),
            ready: tokio::sync::watch::Sender::new(built),
        }
    }

    fn shard(&self, id: &EntryId) -> MutexGuard<'_, Shard> {
        self.shards[id.shard()]
            .lock()
            .expect("index shard lock is never poisoned")
    }

    /// Whether every entry on disk at start-up is in the index.
    pub(crate) fn is_built(&self) -> bool {
        self.built.load(Ordering::Acquire)
    }

    /// Resolves once [`Index::is_built`].
    pub(crate) async fn wait_built(&self) {
        let mut ready = self.ready.subscribe();
        // The sender lives as long as `self`.
        let _ = ready.wait_for(|built| *built).await;
    }

    fn add(&self, slot: &Slot) {
        self.bytes.fetch_add(slot.size(), Ordering::AcqRel);
        self.count.fetch_add(1, Ordering::AcqRel);
    }

    fn sub(&self, slot: &Slot) {
        self.bytes.fetch_sub(slot.size(), Ordering::AcqRel);
        self.count.fetch_sub(1, Ordering::AcqRel);
    }

    /// Records a committed entry of `size` bytes in inode `inode`, used now.
    /// Its metadata is under its canonical name (the commit wrote it).
    pub(crate) fn record(&self, key: &CacheKey, size: u64, inode: u64) {
        let id = EntryId::of(key);
        let slot = Slot::new(size, now_ms(), inode);
        let mut shard = self.shard(&id);
        if let Some(old) = shard.entries.insert(id, slot) {
            self.sub(&old);
        }
        self.add(&slot);
        shard.names.remove(&id);
    }

    /// Marks `key` used now. Never moves backwards: two hits in one
    /// millisecond, or a clock step, keep the later time.
    pub(crate) fn touch(&self, key: &CacheKey) {
        let id = EntryId::of(key);
        let now = now_ms();
        let mut shard = self.shard(&id);
        let shard = &mut *shard;
        if let Some(slot) = shard.entries.get_mut(&id) {
            slot.last_used = slot.last_used.max(now);
        } else if let Some(early) = &mut shard.early {
            let used = early.used.entry(id).or_default();
            *used = (*used).max(now);
        }
    }

    /// What the index holds for `key`.
    pub(crate) fn get(&self, key: &CacheKey) -> Option<Slot> {
        let id = EntryId::of(key);
        self.shard(&id).entries.get(&id).copied()
    }

    /// `key` as eviction would see it.
    pub(crate) fn indexed(&self, key: &CacheKey) -> Option<Indexed> {
        self.get(key).map(|slot| Indexed {
            key: key.clone(),
            size: slot.size(),
            last_used: slot.last_used,
            inode: slot.inode,
        })
    }

    /// If the index holds the body `old_inode` for `key`, that body is now
    /// `size` bytes in inode `inode` (replaced behind the server's back); its
    /// last use stays.
    pub(crate) fn replace_body_if(&self, key: &CacheKey, old_inode: u64, size: u64, inode: u64) {
        let id = EntryId::of(key);
        let mut shard = self.shard(&id);
        if let Some(slot) = shard.entries.get_mut(&id) {
            if slot.inode == old_inode {
                let new = Slot::new(size, slot.last_used, inode);
                self.sub(slot);
                self.add(&new);
                *slot = new;
            }
        }
    }

    /// The body `inode` of `key` was removed: forgets it if it is the one
    /// the index holds, and keeps the build, if it runs, from counting it.
    pub(crate) fn forget_if(&self, key: &CacheKey, inode: u64) {
        let id = EntryId::of(key);
        let mut shard = self.shard(&id);
        if shard.entries.get(&id).is_some_and(|s| s.inode == inode) {
            let old = shard.entries.remove(&id).expect("just seen");
            self.sub(&old);
            shard.names.remove(&id);
        }
        if let Some(early) = &mut shard.early {
            early.removed.insert((id, inode));
        }
    }

    /// Adds an entry the build found on disk, unless the index already
    /// holds `id` (a commit since is newer) or its body was removed since.
    /// `name` is its canonical name when its metadata is not stored under it.
    fn listed(&self, id: EntryId, mut slot: Slot, name: Option<Box<str>>) {
        let mut shard = self.shard(&id);
        let shard = &mut *shard;
        if shard.entries.contains_key(&id) {
            return;
        }
        if let Some(early) = &mut shard.early {
            if early.removed.contains(&(id, slot.inode)) {
                return;
            }
            if let Some(used) = early.used.remove(&id) {
                slot.last_used = slot.last_used.max(used);
            }
        }
        shard.entries.insert(id, slot);
        self.add(&slot);
        if let Some(name) = name {
            shard.names.insert(id, name);
        }
    }

    /// The build has listed every entry: drops what it kept about early
    /// hits and removals, and wakes whoever waits for the index.
    fn finish(&self) {
        for shard in self.shards.iter() {
            let mut shard = shard.lock().expect("index shard lock is never poisoned");
            shard.early = None;
            shard.names.shrink_to_fit();
        }
        self.built.store(true, Ordering::Release);
        self.ready.send_replace(true);
    }

    /// Bytes counted against `--max-size`: bodies, plus `overhead` per entry.
    pub(crate) fn charged(&self, overhead: u64) -> u64 {
        let (bytes, count) = self.usage();
        bytes + count * overhead
    }

    /// (bytes, entries).
    pub(crate) fn usage(&self) -> (u64, u64) {
        (
            self.bytes.load(Ordering::Acquire),
            self.count.load(Ordering::Acquire),
        )
    }
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
