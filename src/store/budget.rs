//! `--max-size` as the store keeps it: the committed entries never take
//! more than the limit, so disk use never exceeds it by more than the bytes
//! of the fills in flight (in `tmp/`).
//!
//! - A fill reserves room for itself when it is admitted (its
//!   Content-Length, or step by step as a body of unknown length grows):
//!   if its entry would not fit beside the committed ones, room is made
//!   then, before its bytes arrive, by removing entries in the
//!   [`Evictor`]'s order down to a low-water mark.
//! - A commit claims its entry's bytes before the rename, under one lock
//!   with the count of committed entries: it goes ahead only if they fit
//!   (after making room once more if fills committed meanwhile took it);
//!   otherwise the body is served but not stored.
//! - A removal forgets its bytes only after the unlink.
//!
//! - While the index is built in the background after start-up (see
//!   `index::build`), eviction waits for it: it cannot tell the least
//!   recently used entries before it has seen them all. Meanwhile a commit
//!   is stored only if it fits beside the entries listed so far (a lower
//!   bound), and once the index is built the background trim (`evict::run`)
//!   brings the cache down to the low-water mark. So across a start-up the
//!   limit can be overshot by what was committed during the build, never by
//!   more; commits and removals meanwhile are counted once (see `index`).
//!
//! So, once the index is built, the bytes counted are never fewer than the
//! bytes on disk, and never more than the limit. Fills in flight are not counted against the
//! committed entries: they would shrink the cache by the bytes in flight
//! and evict hot entries for files not yet complete. Each entry is charged
//! its body plus [`ENTRY_OVERHEAD`] for its metadata file.

use super::index::Indexed;
use super::remove::{self, Chosen};
use super::{CacheKey, Error, Inner};
use std::sync::{Arc, Mutex};

/// What each entry costs beyond its body: its metadata file, as one
/// filesystem block.
pub const ENTRY_OVERHEAD: u64 = 4096;
/// Room is made down to this share of the limit, so that evictions come in
/// batches, not one per fill.
const LOW_WATER_PERCENT: u64 = 90;
/// A body of unknown length reserves at least this much more at a time.
const GROWTH: u64 = 1 << 20;
/// Rounds of choosing victims per call to make room (entries used
/// meanwhile stay, so one round may not be enough).
const ROUNDS: usize = 4;

/// What eviction removes first. `evict::Lru` is the one the server uses:
/// least recently used first, pinned entries never. The store asks it
/// whenever it needs room, offering the least recently used entries, a
/// batch at a time (the index of a large cache is never copied whole).
pub trait Evictor: Send + Sync + 'static {
    /// The entries that may be evicted, in the order to evict them. Called
    /// on a blocking thread. An entry of `entries` left out is not offered
    /// again until its key is committed again (it is pinned).
    fn candidates<'a>(&self, entries: &'a [Indexed]) -> Vec<&'a Indexed>;

    /// `key`'s entry, `bytes` long, was evicted.
    fn evicted(&self, key: &CacheKey, bytes: u64);
}

/// The limit and the commits counted against it.
pub(crate) struct Budget {
    max: u64,
    evictor: Arc<dyn Evictor>,
    /// Bytes of commits between their claim and their record in the index.
    claimed: Mutex<u64>,
    /// One caller at a time chooses and removes victims.
    turn: tokio::sync::Mutex<()>,
}

impl Budget {
    pub(crate) fn new(max: u64, evictor: Arc<dyn Evictor>) -> Budget {
        Budget {
            max,
            evictor,
            claimed: Mutex::new(0),
            turn: tokio::sync::Mutex::new(()),
        }
    }

    fn claimed(&self) -> std::sync::MutexGuard<'_, u64> {
        self.claimed.lock().expect("budget lock is never poisoned")
    }

    /// Bytes counted now, plus `extra`: committed entries and claims.
    fn projected(&self, inner: &Inner, extra: u64) -> u64 {
        let claimed = self.claimed();
        inner.index().charged(ENTRY_OVERHEAD) + *claimed + extra
    }
}

/// The room a fill has made for itself (the bytes of its entry so far).
pub(crate) struct Reservation {
    inner: Arc<Inner>,
    bytes: u64,
}

impl Reservation {
    pub(crate) fn none(inner: Arc<Inner>) -> Reservation {
        Reservation { inner, bytes: 0 }
    }

    /// Makes room for an entry of `len` body bytes. An entry that can never
    /// fit makes none (it will not be stored).
    pub(crate) async fn reserve(inner: Arc<Inner>, len: u64) -> Reservation {
        let mut reservation = Reservation::none(inner);
        reservation.cover(len, 0).await;
        reservation
    }

    /// Grows the room of a body of unknown length to cover `len` bytes (in
    /// steps of [`GROWTH`] or more).
    pub(crate) async fn grow_to(&mut self, len: u64) {
        self.cover(len, GROWTH).await;
    }

    async fn cover(&mut self, len: u64, step: u64) {
        let Some(budget) = self.inner.budget.get() else {
            return;
        };
        let charge = len + ENTRY_OVERHEAD;
        if charge <= self.bytes || charge > budget.max {
            return;
        }
        self.bytes = charge.max(self.bytes + step).min(budget.max);
        make_room(&self.inner, budget, self.bytes).await;
    }

    /// Claims `len` body bytes for a commit: `None` when they cannot fit
    /// under the limit, even after removing every entry that may go.
    pub(crate) async fn claim(&self, len: u64) -> Option<Claim> {
        let Some(budget) = self.inner.budget.get() else {
            return Some(Claim {
                inner: self.inner.clone(),
                bytes: 0,
            });
        };
        let charge = len + ENTRY_OVERHEAD;
        if charge > budget.max {
            return None;
        }
        if let Some(claim) = self.try_claim(budget, charge) {
            return Some(claim);
        }
        if !self.inner.index().is_built() {
            return None;
        }
        // Commits that came first took the room made at admission: make
        // more, claiming between rounds so that others cannot keep taking it.
        let _turn = budget.turn.lock().await;
        loop {
            if let Some(claim) = self.try_claim(budget, charge) {
                return Some(claim);
            }
            if evict_round(&self.inner, budget, charge).await.0 == 0 {
                return self.try_claim(budget, charge);
            }
        }
    }

    fn try_claim(&self, budget: &Budget, charge: u64) -> Option<Claim> {
        let mut claimed = budget.claimed();
        let committed = self.inner.index().charged(ENTRY_OVERHEAD);
        if committed + *claimed + charge > budget.max {
            return None;
        }
        *claimed += charge;
        Some(Claim {
            inner: self.inner.clone(),
            bytes: charge,
        })
    }
}

/// Bytes of a commit in progress, counted from before its rename until it
/// is in the index. Drop it after the index has recorded the entry (or the
/// commit failed).
pub(crate) struct Claim {
    inner: Arc<Inner>,
    bytes: u64,
}

impl Drop for Claim {
    fn drop(&mut self) {
        if self.bytes > 0 {
            if let Some(budget) = self.inner.budget.get() {
                *budget.claimed() -= self.bytes;
            }
        }
    }
}

/// If the committed entries and claims plus `extra` bytes are over the
/// limit, removes entries in the evictor's order until they are down to
/// the low-water mark. Returns the entries and bytes removed. Nothing while
/// the index builds.
pub(crate) async fn make_room(inner: &Arc<Inner>, budget: &Budget, extra: u64) -> (u64, u64) {
    if !inner.index().is_built() || budget.projected(inner, extra) <= budget.max {
        return (0, 0);
    }
    let _turn = budget.turn.lock().await;
    let (mut count, mut freed) = (0, 0);
    for _ in 0..ROUNDS {
        if budget.projected(inner, extra) <= budget.max {
            break;
        }
        let (n, bytes) = evict_round(inner, budget, extra).await;
        if n == 0 {
            break;
        }
        count += n;
        freed += bytes;
    }
    (count, freed)
}

/// One round of eviction (the caller holds the turn): entries in the
/// evictor's order, until the committed entries and claims plus `extra` are
/// down to the low-water mark. Entries used since the round began stay.
async fn evict_round(inner: &Arc<Inner>, budget: &Budget, extra: u64) -> (u64, u64) {
    let target = budget.max / 100 * LOW_WATER_PERCENT;
    let excess = budget.projected(inner, extra).saturating_sub(target);
    if excess == 0 {
        return (0, 0);
    }
    let removing = inner.clone();
    let removed = tokio::task::spawn_blocking(move || {
        let victims = choose_victims(&removing, excess);
        remove_victims(&removing, victims, excess)
    })
    .await;
    let removed = match removed {
        Ok(removed) => removed,
        Err(err) => {
            tracing::warn!(error = %Error::join(err), "eviction failed");
            return (0, 0);
        }
    };
    let (mut count, mut freed) = (0, 0);
    for (key, bytes) in removed {
        budget.evictor.evicted(&key, bytes);
        count += 1;
        freed += bytes;
    }
    (count, freed)
}

/// The evictor's choice among the least recently used entries that free
/// `excess` bytes and a quarter more (some may be used or filled by the
/// time they are removed); those it leaves out are kept. Blocking.
fn choose_victims(inner: &Inner, excess: u64) -> Vec<Indexed> {
    let Some(budget) = inner.budget.get() else {
        return Vec::new();
    };
    let index = inner.index();
    let want = excess.saturating_add(excess / 4);
    let offered = index.oldest(&inner.layout, want, ENTRY_OVERHEAD);
    let chosen = budget.evictor.candidates(&offered);
    if chosen.len() < offered.len() {
        let taken: std::collections::HashSet<*const Indexed> =
            chosen.iter().map(|c| *c as *const Indexed).collect();
        for left_out in offered
            .iter()
            .filter(|o| !taken.contains(&(*o as *const _)))
        {
            index.keep(left_out);
        }
    }
    chosen.into_iter().cloned().collect()
}

/// Removes `victims` in order until `excess` bytes are freed. Blocking.
fn remove_victims(inner: &Inner, victims: Vec<Indexed>, excess: u64) -> Vec<(CacheKey, u64)> {
    let mut removed = Vec::new();
    let mut freed = 0;
    for victim in victims {
        if freed >= excess {
            break;
        }
        let chosen = Chosen::Victim {
            inode: victim.inode,
            last_used: victim.last_used,
        };
        match remove::remove_blocking(inner, &victim.key, chosen) {
            Ok(0) => {}
            Ok(bytes) => {
                freed += bytes + ENTRY_OVERHEAD;
                removed.push((victim.key, bytes));
            }
            Err(err) => tracing::warn!(key = %victim.key, error = %err, "cannot evict"),
        }
    }
    removed
}
