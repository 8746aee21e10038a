//! The cache directory: the only code that touches it. No hyper types here.
//!
//! Layout under the root (mode 0711, files 0644, as the VCAP package cache):
//! `<path>` bodies of the `--source` mirrors (the package-cache 0.2 layout),
//! `.package-cache-hosts/<host>/<path>` bodies fetched for named hosts, and
//! `.package-cache/` (0700) with `lock`, `tmp/` (fills in progress, cleared at
//! start-up) and `meta/<2 hex>/<sha256 of key>` (one JSON file per entry).

mod disk;
mod doc;
mod fill;
mod hot;
mod key;
mod meta;
mod reader;

pub use doc::{Doc, DocMeta, MAX_DOC_LEN};
pub use fill::{Committed, Fill, FillFailure, FillHead, FillPermit, FillState};
pub use key::{
    CacheKey, KeyError, Namespace, HOSTS_DIR, MAX_DEPTH, MAX_PATH_LEN, MAX_SEGMENT_LEN, MOUNTS_DIR,
    STATE_DIR,
};
pub use meta::{unix_now, EntryMeta};
pub use reader::BodyReader;

use bytes::Bytes;
use fill::FillShared;
use rustix::fs::{Mode, OFlags, ResolveFlags};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tokio::sync::watch;

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
    /// The body does not have the sha256 its index lists.
    #[error("body of {key} has sha256 {got}, the index lists {expected}")]
    Digest {
        /// The entry.
        key: String,
        /// The index's digest.
        expected: String,
        /// The body's.
        got: String,
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

/// A committed entry, opened. The descriptor stays valid if the entry is
/// replaced or removed meanwhile.
pub struct Entry {
    file: Option<Arc<File>>,
    /// Body length.
    pub len: u64,
    /// Recorded metadata; `None` for a plain file (a package-cache 0.2 entry).
    pub meta: Option<Arc<EntryMeta>>,
    /// The body file's modification time.
    pub mtime: SystemTime,
    small: Option<Bytes>,
}

impl Entry {
    /// A reader over `[start, end)` of the body.
    /// Only for entries without [`Entry::small_body`].
    pub fn reader(&self, start: u64, end: u64) -> BodyReader {
        let file = self
            .file
            .clone()
            .expect("entries without a small body keep their file open");
        BodyReader::fixed(file, self.len, start, end)
    }

    /// The whole body, when the entry is small enough to have been read at open.
    pub fn small_body(&self) -> Option<&Bytes> {
        self.small.as_ref()
    }
}

/// A handle on a fill in progress, held by a request that joined it.
pub struct FillWatch {
    shared: Arc<FillShared>,
    rx: watch::Receiver<FillState>,
}

/// What a joined fill turned out to be, once it left `Pending`.
pub enum FillStart {
    /// The body is streaming: respond from it.
    Started(Arc<FillHead>),
    /// The fetch failed; answer as the leader did.
    Failed(Arc<FillFailure>),
    /// The leader gave up before starting; look up again.
    Vacated,
    /// The answer is not cacheable; fetch it uncached.
    Uncacheable,
}

impl FillWatch {
    /// Waits until the fill has left `Pending`.
    pub async fn started(&mut self) -> FillStart {
        let state = match self.rx.wait_for(|s| *s != FillState::Pending).await {
            Ok(state) => state.clone(),
            Err(_) => return FillStart::Vacated,
        };
        match state {
            FillState::Failed(failure) => FillStart::Failed(failure),
            FillState::Vacated => FillStart::Vacated,
            FillState::Uncacheable => FillStart::Uncacheable,
            _ => match self.shared.head.get() {
                Some(head) => FillStart::Started(head.clone()),
                None => FillStart::Vacated,
            },
        }
    }

    /// The current state (for logs and tests).
    pub fn state(&self) -> FillState {
        self.rx.borrow().clone()
    }

    /// A reader over `[start, end)` of the growing body (`end` may be `u64::MAX`).
    /// Only meaningful after [`FillWatch::started`] returned `Started`.
    pub fn reader(&self, start: u64, end: u64) -> Option<BodyReader> {
        let file = self.shared.file.get()?.clone();
        Some(BodyReader::growing(self.shared.clone(), file, start, end))
    }
}

/// Shared state of an open store.
pub(crate) struct Inner {
    root: PathBuf,
    root_fd: OwnedFd,
    tmp_dir: PathBuf,
    meta_dir: PathBuf,
    fills: Mutex<HashMap<CacheKey, Arc<FillShared>>>,
    hot: hot::HotSet,
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
        let digest = hex::encode(Sha256::digest(key.canonical().as_bytes()));
        self.meta_dir.join(&digest[..2]).join(&digest)
    }

    /// Removes `shared` from the fill map if it is still the current fill.
    fn forget_fill(&self, shared: &Arc<FillShared>) {
        let mut fills = self.fills.lock().expect("fill map lock is never poisoned");
        if fills
            .get(&shared.key)
            .is_some_and(|s| Arc::ptr_eq(s, shared))
        {
            fills.remove(&shared.key);
        }
    }
}

/// The cache directory, open and locked. Cheap to clone; all clones share
/// one fill map, so concurrent lookups of one key coalesce into one fill.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

enum Opened {
    Entry(Entry),
    Missing,
    Conflict,
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
                fills: Mutex::new(HashMap::new()),
                hot: hot::HotSet::new(HOT_BUDGET),
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
            Opened::Entry(entry) => return Ok(Lookup::Hit(entry)),
            Opened::Conflict => return Ok(Lookup::Conflict),
            Opened::Missing => {}
        }
        let permit = {
            let mut fills = self
                .inner
                .fills
                .lock()
                .expect("fill map lock is never poisoned");
            if let Some(shared) = fills.get(key) {
                let rx = shared.state.subscribe();
                return Ok(Lookup::Filling(FillWatch {
                    shared: shared.clone(),
                    rx,
                }));
            }
            let shared = FillShared::new(key.clone());
            fills.insert(key.clone(), shared.clone());
            FillPermit {
                inner: self.inner.clone(),
                shared,
                done: false,
            }
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
        let fills = self
            .inner
            .fills
            .lock()
            .expect("fill map lock is never poisoned");
        let shared = fills.get(key)?;
        Some(FillWatch {
            shared: shared.clone(),
            rx: shared.state.subscribe(),
        })
    }

    /// Number of fills in progress.
    pub fn fills_in_progress(&self) -> usize {
        self.inner
            .fills
            .lock()
            .expect("fill map lock is never poisoned")
            .len()
    }

    async fn open_entry(&self, key: &CacheKey) -> Result<Opened, Error> {
        let inner = self.inner.clone();
        let key = key.clone();
        tokio::task::spawn_blocking(move || open_entry_blocking(&inner, &key))
            .await
            .map_err(Error::join)?
    }
}

fn open_entry_blocking(inner: &Inner, key: &CacheKey) -> Result<Opened, Error> {
    let rel = key.relative_path();
    // RESOLVE_BENEATH: whatever symlinks an operator placed, nothing outside
    // the root can be opened through a key.
    let open = |flags: OFlags| {
        rustix::fs::openat2(
            &inner.root_fd,
            &rel,
            flags,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
        )
    };
    // O_NOATIME keeps reads (on the runtime thread, see reader.rs) from
    // dirtying the inode; it is refused for files owned by someone else.
    let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK;
    let opened = match open(flags | OFlags::NOATIME) {
        Err(rustix::io::Errno::PERM) => open(flags),
        other => other,
    };
    let fd = match opened {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(Opened::Missing),
        Err(rustix::io::Errno::NOTDIR)
        | Err(rustix::io::Errno::XDEV)
        | Err(rustix::io::Errno::LOOP) => return Ok(Opened::Conflict),
        Err(e) => {
            return Err(Error::Io {
                op: "open",
                path: inner.root.join(&rel),
                source: e.into(),
            })
        }
    };
    let file = File::from(fd);
    let md = file.metadata().map_err(|source| Error::Io {
        op: "stat",
        path: inner.root.join(&rel),
        source,
    })?;
    if !md.is_file() {
        return Ok(Opened::Conflict);
    }
    let meta = disk::read_meta(&inner.meta_path(key))
        .filter(|m| m.inode == md.ino() && m.size == md.len() && m.key == key.canonical())
        .map(Arc::new);
    let len = md.len();
    let file = Arc::new(file);
    let small = if len <= SMALL_ENTRY {
        let mut buf = bytes::BytesMut::zeroed(len as usize);
        std::os::unix::fs::FileExt::read_exact_at(&*file, &mut buf, 0).map_err(|source| {
            Error::Io {
                op: "read",
                path: inner.root.join(&rel),
                source,
            }
        })?;
        Some(buf.freeze())
    } else {
        None
    };
    let mtime = md.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    if let Some(body) = &small {
        let hot = hot::HotEntry {
            body: body.clone(),
            meta: meta.clone(),
            mtime,
            checked: std::time::Instant::now(),
        };
        inner.hot.insert(key.clone(), hot);
        return Ok(Opened::Entry(Entry {
            file: None,
            len,
            meta,
            mtime,
            small,
        }));
    }
    Ok(Opened::Entry(Entry {
        file: Some(file),
        len,
        meta,
        mtime,
        small,
    }))
}
