//! Offering victims to eviction: the least recently used entries, enough of
//! them to free a number of bytes, chosen in one pass over the shards (one
//! locked at a time), then their keys read back from disk — the index keeps
//! only the hash of a key, which names the key's metadata file, and that
//! file holds the key's canonical name.

use super::{EntryId, Index, Indexed, Slot, KEPT};
use crate::store::key::CacheKey;
use crate::store::layout::Layout;
use crate::store::meta::EntryMeta;
use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

/// A batch never holds fewer entries than this (when there are as many):
/// some may be used, filled or pinned by the time they are removed.
pub(super) const MIN_BATCH: usize = 16;

/// A candidate in the heap of [`Index::oldest`]: the greatest is the one
/// evicted last (most recently used; of two used at once, the smaller).
struct Candidate {
    id: EntryId,
    slot: Slot,
}

impl Candidate {
    fn rank(&self) -> (u64, Reverse<u64>) {
        (self.slot.last_used, Reverse(self.slot.size()))
    }
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.rank() == other.rank()
    }
}

impl Eq for Candidate {}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        self.rank().cmp(&other.rank())
    }
}

impl Index {
    /// The least recently used entries (of two used at once, the larger
    /// first) whose bodies plus `overhead` each add up to at least `bytes`,
    /// oldest first, with their keys; entries left out before
    /// ([`Index::keep`]) are not offered. Entries whose key cannot be read
    /// back are kept and left out, with a warning. Blocking: reads one
    /// metadata file per entry offered.
    pub(crate) fn oldest(&self, layout: &Layout, bytes: u64, overhead: u64) -> Vec<Indexed> {
        let mut heap: BinaryHeap<Candidate> = BinaryHeap::new();
        let mut held = 0u64;
        let full = |heap: &BinaryHeap<Candidate>, held: u64| {
            heap.peek().is_some_and(|top| {
                heap.len() > MIN_BATCH && held - (top.slot.size() + overhead) >= bytes
            })
        };
        for shard in self.shards.iter() {
            let shard = shard.lock().expect("index shard lock is never poisoned");
            for (id, slot) in &shard.entries {
                if slot.kept() {
                    continue;
                }
                let candidate = Candidate {
                    id: *id,
                    slot: *slot,
                };
                if full(&heap, held) && heap.peek().is_some_and(|top| candidate >= *top) {
                    continue;
                }
                held += slot.size() + overhead;
                heap.push(candidate);
                while full(&heap, held) {
                    let top = heap.pop().expect("a full heap has a top");
                    held -= top.slot.size() + overhead;
                }
            }
        }
        let mut offered = Vec::with_capacity(heap.len());
        for Candidate { id, slot } in heap.into_sorted_vec() {
            match self.key_of(layout, &id) {
                Some(key) => offered.push(Indexed {
                    key,
                    size: slot.size(),
                    last_used: slot.last_used,
                    inode: slot.inode,
                }),
                None => {
                    tracing::warn!(
                        meta = %layout.meta_file_hashed(&id.0).display(),
                        "cannot read back the key of a cached entry; it is never evicted"
                    );
                    self.keep_id(&id, slot.inode);
                }
            }
        }
        offered
    }

    /// The key of `id`: its name kept in memory, or read from the metadata
    /// file stored under `id` (whatever body it is bound to: the name is
    /// the key's either way).
    fn key_of(&self, layout: &Layout, id: &EntryId) -> Option<CacheKey> {
        let kept = self.shard(id).names.get(id).cloned();
        let name = match kept {
            Some(name) => name.into_string(),
            None => EntryMeta::read(&layout.meta_file_hashed(&id.0))?.key,
        };
        if EntryId::of_canonical(&name) != *id {
            return None;
        }
        CacheKey::try_from_canonical(&name)
    }

    /// The evictor left `entry` out (it is pinned): it is not offered again
    /// until its key is committed again.
    pub(crate) fn keep(&self, entry: &Indexed) {
        self.keep_id(&EntryId::of(&entry.key), entry.inode);
    }

    fn keep_id(&self, id: &EntryId, inode: u64) {
        if let Some(slot) = self.shard(id).entries.get_mut(id) {
            if slot.inode == inode {
                slot.size_and_kept |= KEPT;
            }
        }
    }
}
