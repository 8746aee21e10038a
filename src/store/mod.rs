//! The cache directory: the only code that touches it. No hyper types here.
//!
//! Layout under the root (mode 0711, files 0644, as the VCAP package cache):
//! `<path>` bodies of the `--source` mirrors (the package-cache 0.2 layout),
//! `.package-cache-hosts/<host>/<path>` bodies fetched for named hosts,
//! `.package-cache-mounts/<name>/<path>` bodies of `--mirror` mounts, and
//! `.package-cache/` (0700) with `lock`, `tmp/` (fills in progress, cleared at
//! start-up), `meta/<2 hex>/<sha256 of key>` (one JSON file per entry) and
//! `docs/<2 hex>/<sha256 of key>` (index documents, see `doc`).
//! `scan` and `state` list all of it for maintenance and start-up indexes.
//!
//! Work that many requests want at once is done once (`flight`): one fill per
//! key being downloaded (the fill map), one revalidation per index document.

mod commit;
mod disk;
mod doc;
mod entry;
mod failure;
mod fill;
mod flight;
mod hot;
mod index;
mod key;
mod meta;
mod reader;
mod revalidation;
mod scan;
pub mod shared;
mod spill;
mod state;
mod watch;

pub use doc::{Doc, DocMeta, MAX_DOC_LEN};
pub use entry::Entry;
use entry::{open_entry_blocking, Opened};
pub use failure::Failure;
pub use fill::{Committed, Fill, FillHead, FillPermit, FillState};
pub use index::Indexed;
pub use key::{
    CacheKey, KeyError, Namespace, HOSTS_DIR, MAX_DEPTH, MAX_PATH_LEN, MAX_SEGMENT_LEN, MOUNTS_DIR,
    STATE_DIR,
};
pub use meta::{unix_now, EntryMeta};
pub use reader::BodyReader;
pub use revalidation::{Revalidated, Revalidation, RevalidationPermit, RevalidationWatch};
pub use scan::{meta_status, Entries, MetaStatus, Scan, ScanEntry, ScanError, ScanIssue};
pub use state::{
    doc_file, doc_files, meta_file, meta_files, probe_lock, quarantine_dir, quarantine_files,
    tmp_files, LockProbe, StateFile, StateIssue,
};
pub use watch::{ActiveFill, FillStart, FillWatch};

use fill::FillShared;
use flight::{Claim, Flights};
use rustix::fs::{Mode, OFlags};
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Entries up to this size are read whole when opened and kept in memory.
pub const SMALL_ENTRY: u64 = 64 * 1024;
/// Memory for small entries kept whole (see `hot`).
const HOT_BUDGET: usize = 32 << 20;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Another process holds the cache directory's lock.
    #[error("cache directory {path} is locked by another package-cache process")]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// A filesystem operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The body ended before its announced length.
    #[error("body of {key} ended after {got} of {expected} bytes")]
    Short {
        /// The entry.
        key: String,
        /// Announced length.
        expected: u64,
        /// Bytes received.
        got: u64,
    },
    /// The body went on past its announced length.
    #[error("body of {key} is longer than the announced {expected} bytes")]
    TooLong {
        /// The entry.
        key: String,
        /// Announced length.
        expected: u64,
    },
    /// The body does not have the digest its index lists.
    #[error("body of {key} has sha256 {got}, the index lists {expected}")]
    Digest {
        /// The entry.
        key: String,
        /// The index's digest.
        expected: String,
        /// The body's.
        got: String,
    },
    /// The disk refused a fill and every reader of it left.
    #[error("every reader of {key} left while it was streamed uncached")]
    NoReaders {
        /// The entry.
        key: String,
    },
    /// A blocking task panicked or was cancelled.
    #[error("blocking task failed: {0}")]
    Join(String),
}

impl Error {
    fn join(err: tokio::task::JoinError) -> Error {
        Error::Join(err.to_string())
    }
}

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
    root: PathBuf,
    root_fd: OwnedFd,
    tmp_dir: PathBuf,
    meta_dir: PathBuf,
    /// The fill map: one flight per key being filled.
    fills: Arc<Flights<CacheKey, FillShared>>,
    /// Index documents being revalidated, one flight per document key.
    docs_in_flight: Arc<Flights<String, revalidation::DocFlight>>,
    hot: hot::HotSet,
    index: Mutex<index::Index>,
    track_recency: std::sync::atomic::AtomicBool,
    docs: Mutex<doc::DocMemo>,
    seq: AtomicU64,
    _lock: File,
}

impl Inner {
    fn tmp_name(&self, suffix: &str) -> String {
        format!(
            "{}-{}.{suffix}",
            std::process::id(),
            self.seq.fetch_add(1, Ordering::Relaxed)
        )
    }

    fn tmp_path(&self, suffix: &str) -> PathBuf {
        self.tmp_dir.join(self.tmp_name(suffix))
    }

    fn meta_path(&self, key: &CacheKey) -> PathBuf {
        state::fan_out(&self.meta_dir, key.canonical().as_bytes())
    }

    fn index(&self) -> std::sync::MutexGuard<'_, index::Index> {
        self.index.lock().expect("index lock is never poisoned")
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
    /// lock, and removes temporary files left by a crash.
    pub async fn open(root: impl Into<PathBuf>) -> Result<Store, Error> {
        let root = root.into();
        tokio::task::spawn_blocking(move || Store::open_blocking(root))
            .await
            .map_err(Error::join)?
    }

    fn open_blocking(root: PathBuf) -> Result<Store, Error> {
        let io = |op: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Io { op, path, source }
        };
        if !root.exists() {
            DirBuilder::new()
                .recursive(true)
                .mode(disk::DIR_MODE)
                .create(&root)
                .map_err(io("create", &root))?;
            fs::set_permissions(&root, fs::Permissions::from_mode(disk::DIR_MODE))
                .map_err(io("chmod", &root))?;
        }
        let state = root.join(STATE_DIR);
        let tmp_dir = state.join("tmp");
        let meta_dir = state.join("meta");
        for dir in [&state, &tmp_dir, &meta_dir] {
            match DirBuilder::new().mode(0o700).create(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io("create", dir)(e)),
            }
        }
        // Traversable, not listable: local clients open built artifacts under
        // `build/artifacts/` by exact name; everything else in here is 0700.
        fs::set_permissions(&state, fs::Permissions::from_mode(0o711))
            .map_err(io("chmod", &state))?;
        let lock_path = state.join("lock");
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io("open", &lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(Error::Locked { path: lock_path }),
            Err(fs::TryLockError::Error(e)) => return Err(io("lock", &lock_path)(e)),
        }
        let removed = disk::clear_dir(&tmp_dir).map_err(io("clear", &tmp_dir))?;
        if removed > 0 {
            tracing::info!(
                count = removed,
                "removed temporary files left by an earlier run"
            );
        }
        let index = index::Index::scan(&root);
        let root_fd = rustix::fs::open(
            &root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io("open", &root)(e.into()))?;
        Ok(Store {
            inner: Arc::new(Inner {
                root,
                root_fd,
                tmp_dir,
                meta_dir,
                fills: Flights::new(),
                docs_in_flight: Flights::new(),
                hot: hot::HotSet::new(HOT_BUDGET),
                index: Mutex::new(index),
                track_recency: std::sync::atomic::AtomicBool::new(false),
                docs: Mutex::new(doc::DocMemo::default()),
                seq: AtomicU64::new(0),
                _lock: lock,
            }),
        })
    }

    /// The cache root.
    pub fn root(&self) -> &Path {
        &self.inner.root
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
            Opened::Missing => {}
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
            Opened::Entry(entry) => Ok(Lookup::Hit(entry)),
            Opened::Conflict => Ok(Lookup::Conflict),
            Opened::Missing => Ok(Lookup::Miss(permit)),
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
            for dir in [&inner.root, &inner.tmp_dir] {
                disk::check_writable_dir(dir).map_err(|source| Error::Io {
                    op: "check",
                    path: dir.clone(),
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
        self.remove(key, Some(inode)).await.map(|_| ())
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

    /// (bytes, entries) of committed entries.
    pub fn usage(&self) -> (u64, u64) {
        self.inner.index().usage()
    }

    /// Every committed entry with its size and last use (for eviction).
    pub fn indexed(&self) -> Vec<Indexed> {
        self.inner.index().snapshot()
    }

    /// Removes `key`'s committed body and metadata, unless a fill of it is in
    /// progress. Readers that have it open keep reading. Returns the bytes freed.
    pub async fn evict(&self, key: &CacheKey) -> Result<u64, Error> {
        if self.join(key).is_some() {
            return Ok(0);
        }
        self.remove(key, None).await
    }

    /// Unlinks `key`'s body (only if it is still inode `inode`, when given)
    /// and its metadata, and forgets it. Returns the bytes freed.
    async fn remove(&self, key: &CacheKey, inode: Option<u64>) -> Result<u64, Error> {
        let inner = self.inner.clone();
        let key = key.clone();
        tokio::task::spawn_blocking(move || remove_blocking(&inner, &key, inode))
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

fn remove_blocking(inner: &Inner, key: &CacheKey, inode: Option<u64>) -> Result<u64, Error> {
    let path = inner.root.join(key.relative_path());
    let md = match fs::symlink_metadata(&path) {
        Ok(md) => md,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            inner.index().forget(key);
            return Ok(0);
        }
        Err(source) => {
            return Err(Error::Io {
                op: "stat",
                path,
                source,
            })
        }
    };
    // Only a file, and only the one meant: one committed meanwhile stays.
    if !md.is_file() || inode.is_some_and(|ino| ino != md.ino()) {
        return Ok(0);
    }
    fs::remove_file(&path).map_err(|source| Error::Io {
        op: "remove",
        path: path.clone(),
        source,
    })?;
    let _ = fs::remove_file(inner.meta_path(key));
    inner.hot.remove(key);
    inner.index().forget(key);
    Ok(md.len())
}
