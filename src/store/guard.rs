//! Per-key guards: the commit of a key and the removal of it never
//! interleave, so a removal that has checked which body is in place unlinks
//! that body and no other (a commit that comes meanwhile waits, then puts
//! its own in place).
//!
//! Striped: a fixed set of mutexes, a key's stripe chosen by hash. Held only
//! inside blocking sections (a commit's metadata write and rename, a
//! removal's check and unlink), never across an `.await`.

use super::CacheKey;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, MutexGuard};

/// Stripes: enough that unrelated keys rarely wait on each other.
const STRIPES: usize = 256;

/// The guards of every key of one store.
pub(crate) struct KeyGuards {
    hasher: RandomState,
    stripes: Box<[Mutex<()>]>,
}

impl KeyGuards {
    pub(crate) fn new() -> KeyGuards {
        KeyGuards {
            hasher: RandomState::new(),
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
        }
    }

    /// Blocks until no commit or removal of `key` is in progress, then
    /// excludes them until the guard drops.
    pub(crate) fn lock(&self, key: &CacheKey) -> MutexGuard<'_, ()> {
        let stripe = self.hasher.hash_one(key) as usize % self.stripes.len();
        // A panic while holding a stripe leaves nothing half-done that the
        // next holder must see: the guarded steps are each atomic renames or
        // unlinks.
        self.stripes[stripe]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
