//! The cache directory: the only code that touches it. No hyper types here.
//!
//! `layout` names every path under the root; `durable` is the one way a file
//! is written to its place; `lock` keeps one server per directory. The
//! serving API is [`Store`]: a lookup gives a hit (`entry`, `hot`), a fill to
//! follow (`watch`, `reader`) or a permit to fill (`fill`, then `writer`
//! writes the body, `spill` holds what a full disk refuses, `commit` stores
//! it), under `--max-size` (`budget`, `index`); removals are `remove`'s,
//! atomic with commits of the same key (`guard`). Work that many requests
//! want at once is done once (`flight`): one fill per key being downloaded
//! (the fill map), one revalidation per index document (`revalidation`), one
//! check of a committed body against a digest its index lists (`confirm`); a
//! leader's failure reaches its followers as a `Failure`, which holds no HTTP
//! status. Entries live in tiers (`tier`): the local disk (`disk`) first,
//! then any tier added below it; `shared` is the object-store tier's client.
//! Index documents are `doc`'s. Damage at rest: `blocks` are the per-block
//! checksums a commit records, `check` proves every read of a committed body
//! with them, `quarantine` moves a damaged body aside, `adopt` gives the
//! plain files of a 0.2 directory metadata, and `scrub` opens entries for the
//! background scrub. The maintenance API (`maintenance`: scans
//! and listings for `package-cache stats|verify|gc|purge`) is apart from the
//! serving one.

mod adopt;
mod blocks;
mod budget;
mod check;
mod commit;
mod confirm;
mod disk;
mod doc;
pub mod durable;
mod entry;
mod error;
mod failure;
mod fill;
mod flight;
mod guard;
mod hot;
mod index;
mod key;
mod layout;
mod lock;
pub mod maintenance;
mod meta;
mod open;
mod quarantine;
mod reader;
mod remove;
mod revalidation;
mod scrub;
pub mod shared;
mod spill;
#[cfg(test)]
mod tests;
pub mod tier;
mod verify;
mod watch;
mod writer;

pub use adopt::Adopted;
pub use blocks::{BlockSums, BLOCK};
pub use budget::{Evictor, ENTRY_OVERHEAD};
pub use confirm::Confirmed;
pub use disk::DiskTier;
pub use doc::{Doc, DocMeta, MAX_DOC_LEN};
pub use entry::Entry;
use entry::{open_entry_blocking, Opened};
pub use error::Error;
pub use failure::Failure;
pub use fill::{FillHead, FillPermit, FillState};
pub use index::Indexed;
pub use key::{CacheKey, KeyError, Namespace, MAX_DEPTH, MAX_PATH_LEN, MAX_SEGMENT_LEN};
pub use layout::{Layout, HOSTS_DIR, MOUNTS_DIR, STATE_DIR};
pub use lock::{describe as describe_holder, CacheLock, LockProbe};
pub use meta::{unix_now, EntryMeta};
pub use quarantine::{Damage, DamageObserver};
pub use reader::BodyReader;
pub use revalidation::{Revalidated, Revalidation, RevalidationPermit, RevalidationWatch};
pub use scrub::Scrub;
pub use watch::{ActiveFill, FillStart, FillWatch};
pub use writer::{Committed, Fill};

use fill::FillShared;
use flight::{Claim, Flights};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

/// Entries up to this size are read whole when opened and kept in memory.
pub const SMALL_ENTRY: u64 = 64 * 1024;
/// Memory for small entries kept whole (see `hot`).
const HOT_BUDGET: usize = 32 << 20;

/// The outcome of [`Store::lookup`].
pub enum Lookup {
    /// A committed entry.
    Hit(Entry),
    /// Another request is filling this key; follow it.
    Filling(FillWatch),
    /// Nobody has it: the caller holds the only permit to fill it.
    Miss(FillPermit),
    /// The path cannot be an entry: a prefix of it is a file, or it is a
    /// directory (the `a` versus `a/b` case). Serve it uncached.
    Conflict,
}

/// Shared state of an open store.
pub(crate) struct Inner {
    layout: Layout,
    root_fd: OwnedFd,
    /// The fill map: one flight per key being filled.
    fills: Arc<Flights<CacheKey, FillShared>>,
    /// Index documents being revalidated, one flight per document key.
    docs_in_flight: Arc<Flights<String, revalidation::DocFlight>>,
    /// Committed bodies being checked against a listed digest (`confirm`),
    /// one flight per key.
    checks: Arc<Flights<CacheKey, confirm::CheckFlight>>,
    hot: hot::HotSet,
    /// Built in the background (see `index::build`), shared with that build.
    index: Arc<index::Index>,
    /// The build of the index, stopped when the store closes.
    _index_build: Option<index::build::Build>,
    track_recency: std::sync::atomic::AtomicBool,
    docs: Mutex<doc::DocMemo>,
    /// Commits and removals of one key exclude each other.
    guards: guard::KeyGuards,
    /// `--max-size`, once set.
    budget: std::sync::OnceLock<budget::Budget>,
    /// Tiers below the local disk, in lookup order.
    lower: std::sync::RwLock<Vec<Arc<dyn tier::Tier>>>,
    /// Whether every body here has metadata (see `adopt`): then a body
    /// without any is damage, not a plain file of package-cache 0.2.
    adopted: std::sync::atomic::AtomicBool,
    /// Told of each entry quarantined as damaged.
    damage_observer: std::sync::OnceLock<Arc<dyn DamageObserver>>,
    _lock: CacheLock,
}

impl Inner {
    /// The tiers below the local disk.
    fn lower_tiers(&self) -> Vec<Arc<dyn tier::Tier>> {
        self.lower
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Whether a fill of `key` is in progress.
    fn filling(&self, key: &CacheKey) -> bool {
        self.fills.get(key).is_some()
    }

    fn is_adopted(&self) -> bool {
        self.adopted.load(Ordering::Acquire)
    }

    fn index(&self) -> &index::Index {
        &self.index
    }
}

/// The cache directory, open and locked. Cheap to clone; all clones share
/// one fill map, so concurrent lookups of one key coalesce into one fill.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl Store {
    /// Opens (creating if needed) the cache directory at `root`, takes its
    /// lock, and removes temporary files left by a crash. Serves at once,
    /// whatever the size of the cache: its index of committed entries (for
    /// `--max-size`) is built in the background, on a thread this store owns
    /// and stops when it closes; see [`Store::wait_indexed`].
    pub async fn open(root: impl Into<PathBuf>) -> Result<Store, Error> {
        let layout = Layout::new(root);
        tokio::task::spawn_blocking(move || Store::open_blocking(layout))
            .await
            .map_err(Error::join)?
    }

    /// The cache root.
    pub fn root(&self) -> &Path {
        self.inner.layout.root()
    }

    /// The paths of this cache.
    pub fn layout(&self) -> &Layout {
        &self.inner.layout
    }

    /// The names of the directories directly under the path of `dir` (a
    /// folder of entries, such as a go mount's `sumdb/`) on the local disk,
    /// at most `max` of the first `4 * max` names read, read off the runtime;
    /// none when it does not exist or cannot be read. A name that is not
    /// UTF-8 is left out.
    pub async fn child_dirs(&self, dir: &CacheKey, max: usize) -> Vec<String> {
        let path = self.inner.layout.entry(dir);
        let listed = tokio::task::spawn_blocking(move || {
            let Ok(read) = std::fs::read_dir(&path) else {
                return Vec::new();
            };
            read.take(max.saturating_mul(4))
                .filter_map(Result::ok)
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .filter_map(|e| e.file_name().into_string().ok())
                .take(max)
                .collect()
        });
        listed.await.unwrap_or_default()
    }

    /// Finds `key`: a committed entry, a fill to follow, or a permit to fill it.
    pub async fn lookup(&self, key: &CacheKey) -> Result<Lookup, Error> {
        if let Some(hot) = self.inner.hot.get(key) {
            self.touch(key);
            let len = hot.body.len() as u64;
            return Ok(Lookup::Hit(Entry {
                file: None,
                len,
                meta: hot.meta,
                mtime: hot.mtime,
                small: Some(hot.body),
                home: None,
            }));
        }
        if let Some(watch) = self.join(key) {
            return Ok(Lookup::Filling(watch));
        }
        match self.open_entry(key).await? {
            Opened::Entry(entry) => {
                self.touch(key);
                return Ok(Lookup::Hit(entry));
            }
            Opened::Conflict => return Ok(Lookup::Conflict),
            Opened::Missing | Opened::Damaged => {}
        }
        let permit = match self.inner.fills.claim(key, || FillShared::new(key.clone())) {
            Claim::Follow(shared) => return Ok(Lookup::Filling(FillWatch::new(shared))),
            Claim::Lead(lead) => FillPermit {
                inner: self.inner.clone(),
                shared: lead.flight().clone(),
                lead: Some(lead),
            },
        };
        // A fill may have committed and left the map between our disk check
        // and our claim; look once more so that it is not fetched twice.
        match self.open_entry(key).await? {
            Opened::Entry(entry) => {
                self.touch(key);
                Ok(Lookup::Hit(entry))
            }
            Opened::Conflict => Ok(Lookup::Conflict),
            Opened::Missing | Opened::Damaged => Ok(Lookup::Miss(permit)),
        }
    }

    fn join(&self, key: &CacheKey) -> Option<FillWatch> {
        self.inner.fills.get(key).map(FillWatch::new)
    }

    /// Number of fills in progress.
    pub fn fills_in_progress(&self) -> usize {
        self.inner.fills.len()
    }

    /// The fills in progress, sorted by key (for the status page).
    pub fn active_fills(&self) -> Vec<ActiveFill> {
        // Each fill's state is read outside the map lock: lookups wait on it.
        let mut fills: Vec<ActiveFill> = self
            .inner
            .fills
            .all()
            .iter()
            .map(|s| s.progress())
            .collect();
        fills.sort_by(|a, b| a.key.cmp(&b.key));
        fills
    }

    /// Whether fills can be written: the root and `tmp/` are directories this
    /// process may write into. A cheap check (two `access` calls, off the
    /// runtime) for health probes, not a guarantee that the disk has room.
    pub async fn check_usable(&self) -> Result<(), Error> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            for dir in [inner.layout.root().to_path_buf(), inner.layout.tmp_dir()] {
                durable::check_writable_dir(&dir).map_err(|source| Error::Io {
                    op: "check",
                    path: dir,
                    source,
                })?;
            }
            Ok(())
        })
        .await
        .map_err(Error::join)?
    }

    /// Removes the committed entry `entry` of `key` (one its index no longer
    /// vouches for), unless it has been replaced meanwhile. Readers holding it
    /// open keep reading.
    pub async fn discard(&self, key: &CacheKey, entry: &Entry) -> Result<(), Error> {
        let Some(inode) = entry.meta.as_ref().map(|m| m.inode) else {
            return Ok(());
        };
        // Whatever is on disk, the copy held in memory is the one refused.
        self.inner.hot.remove(key);
        self.remove(key, remove::Chosen::Inode(inode))
            .await
            .map(|_| ())
    }

    /// Tells `observer` of every entry quarantined as damaged from now on.
    /// Set once; later calls change nothing.
    pub fn observe_damage(&self, observer: Arc<dyn DamageObserver>) {
        let _ = self.inner.damage_observer.set(observer);
    }

    /// Keeps the cache within `max_size` bytes from now on (see `budget`):
    /// fills reserve room when admitted, commits claim theirs before the
    /// rename, and room is made in `evictor`'s order. Turns on recency
    /// tracking. Set once; later calls change nothing.
    pub fn limit(&self, max_size: u64, evictor: Arc<dyn Evictor>) {
        let _ = self
            .inner
            .budget
            .set(budget::Budget::new(max_size, evictor));
        self.track_recency(true);
    }

    /// Adds `tier` below the local disk and the tiers added before it: a
    /// miss may be filled from it (`FillPermit::fill_from_lower`), and every
    /// fill writes to it too and publishes there once complete and verified.
    pub fn add_tier(&self, tier: Arc<dyn tier::Tier>) {
        self.inner
            .lower
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(tier);
    }

    /// If the cache is over its limit (entries of an earlier run, a lower
    /// limit than before), removes entries down to its low-water mark.
    /// Returns the entries and bytes evicted.
    pub async fn trim(&self) -> (u64, u64) {
        match self.inner.budget.get() {
            Some(budget) => budget::make_room(&self.inner, budget, 0).await,
            None => (0, 0),
        }
    }

    /// Records hits for eviction's recency; off (a lock saved per hit)
    /// unless eviction runs.
    pub fn track_recency(&self, on: bool) {
        self.inner.track_recency.store(on, Ordering::Relaxed);
    }

    fn touch(&self, key: &CacheKey) {
        if self.inner.track_recency.load(Ordering::Relaxed) {
            self.inner.index().touch(key);
        }
    }

    /// (bytes, entries) of committed entries: while the index builds, those
    /// it has listed so far and those committed since the store opened.
    pub fn usage(&self) -> (u64, u64) {
        self.inner.index().usage()
    }

    /// Whether the index lists every entry that was on disk when the store
    /// opened (until then, eviction waits; see `budget`).
    pub fn is_indexed(&self) -> bool {
        self.inner.index().is_built()
    }

    /// Resolves once [`Store::is_indexed`]. Never resolves if the store is
    /// dropped first.
    pub async fn wait_indexed(&self) {
        self.inner.index().wait_built().await
    }

    /// `key`'s committed entry with its size and last use, as eviction sees it.
    pub fn indexed(&self, key: &CacheKey) -> Option<Indexed> {
        self.inner.index().indexed(key)
    }

    /// Removes the entry `victim` (as [`Store::indexed`] gave it): its body
    /// and metadata, if the body is still the one indexed (same inode), it was
    /// not used since it was chosen, and no fill of its key is in progress;
    /// atomically with respect to commits of the key. Readers that have it
    /// open keep reading. Returns the bytes freed (0 when it stayed).
    pub async fn evict(&self, victim: &Indexed) -> Result<u64, Error> {
        let chosen = remove::Chosen::Victim {
            inode: victim.inode,
            last_used: victim.last_used,
        };
        self.remove(&victim.key, chosen).await
    }

    async fn remove(&self, key: &CacheKey, chosen: remove::Chosen) -> Result<u64, Error> {
        let inner = self.inner.clone();
        let key = key.clone();
        tokio::task::spawn_blocking(move || remove::remove_blocking(&inner, &key, chosen))
            .await
            .map_err(Error::join)?
    }

    async fn open_entry(&self, key: &CacheKey) -> Result<Opened, Error> {
        let inner = self.inner.clone();
        let key = key.clone();
        tokio::task::spawn_blocking(move || open_entry_blocking(&inner, &key))
            .await
            .map_err(Error::join)?
    }
}
