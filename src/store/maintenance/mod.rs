//! The maintenance API: the cache directory seen from outside the serving
//! path, for `package-cache stats|verify|gc|purge` and for the index built at
//! start-up. `scan` walks the committed bodies; this module lists the private
//! state (metadata, documents, temporary and quarantined files), tells whether
//! an entry's metadata is bound to its body, and probes the server's lock.
//!
//! Blocking and read-only (the lock probe aside): the maintenance commands
//! decide what to remove. The serving API is `Store`'s.

mod scan;

pub use super::adopt::{hash_file, open_scanned, Hashed};
pub use scan::{Entries, MetaStatus, Scan, ScanEntry, ScanError, ScanIssue};

use super::doc::{self, DocMeta};
use super::key::CacheKey;
use super::layout::{Layout, HOSTS_DIR, MOUNTS_DIR, STATE_DIR};
pub use super::lock::{CacheLock, LockProbe};
use super::meta::EntryMeta;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// A file found in the state directory.
#[derive(Clone, Debug)]
pub struct StateFile<T> {
    /// Absolute path.
    pub path: PathBuf,
    /// Length in bytes.
    pub size: u64,
    /// Last modification.
    pub mtime: SystemTime,
    /// The parsed contents; `None` when the file is damaged (unreadable,
    /// truncated, not the expected JSON, or stored under another key's name).
    pub parsed: Option<T>,
}

/// A problem listing the state directory (the listing goes on).
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct StateIssue {
    /// The file or directory.
    pub path: PathBuf,
    /// The OS error.
    #[source]
    pub source: io::Error,
}

/// Every metadata file under `meta/`.
pub fn meta_files(layout: &Layout) -> Vec<Result<StateFile<EntryMeta>, StateIssue>> {
    fanned_files(&layout.meta_dir(), |path| {
        EntryMeta::read(path).filter(|meta| *path == layout.meta_file_named(&meta.key))
    })
}

/// Every document file under `docs/`.
pub fn doc_files(layout: &Layout) -> Vec<Result<StateFile<DocMeta>, StateIssue>> {
    fanned_files(&layout.docs_dir(), |path| {
        doc::read_head(path).filter(|meta| *path == layout.doc_file(&meta.key))
    })
}

/// Every file in `tmp/` (fills and durable writes in progress, or left by a
/// crash); `parsed` is always `Some(())`.
pub fn tmp_files(layout: &Layout) -> Vec<Result<StateFile<()>, StateIssue>> {
    let mut out = Vec::new();
    list(&layout.tmp_dir(), &mut out, |_| Some(()));
    out
}

/// Every file in the quarantine directory; `parsed` is always `Some(())`.
pub fn quarantine_files(layout: &Layout) -> Vec<Result<StateFile<()>, StateIssue>> {
    let mut out = Vec::new();
    list(&layout.quarantine_dir(), &mut out, |_| Some(()));
    out
}

/// What the metadata files for `key` (under its canonical name, or the name
/// an earlier version gave it) say about the body with `inode`.
/// A bound one is stored at `Layout::meta_file_named(&meta.key)`.
pub fn meta_status(layout: &Layout, key: &CacheKey, inode: u64) -> MetaStatus {
    if let Some(meta) = EntryMeta::read_bound(layout, key, inode) {
        return MetaStatus::Bound(meta);
    }
    let names = std::iter::once(key.canonical()).chain(key.legacy_canonical());
    let any = names
        .map(|name| layout.meta_file_named(&name))
        .any(|path| fs::symlink_metadata(path).is_ok());
    if any {
        MetaStatus::Unbound
    } else {
        MetaStatus::Absent
    }
}

/// Whether the directory was adopted (see `store::adopt`): every body has
/// metadata, so a body without any is damage.
pub fn is_adopted(layout: &Layout) -> bool {
    super::adopt::is_adopted(layout)
}

/// Moves the damaged body `entry` (as a scan found it) into the quarantine
/// directory, if it is still the inode scanned, and the metadata bound to it
/// beside it. Returns where the body went (`None`: gone or replaced
/// meanwhile). Blocking.
pub fn quarantine_entry(layout: &Layout, entry: &ScanEntry) -> io::Result<Option<PathBuf>> {
    use rustix::fs::{Mode, OFlags};
    let root = rustix::fs::open(
        layout.root(),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let Some(to) = super::quarantine::move_aside(&root, layout, &entry.rel, entry.inode)? else {
        return Ok(None);
    };
    for name in std::iter::once(entry.key.canonical()).chain(entry.key.legacy_canonical()) {
        super::quarantine::move_meta(layout, &name, entry.inode, &to);
    }
    Ok(Some(to))
}

/// Removes the body `entry` (as a scan found it) and then its metadata: the
/// body only if it is still the inode scanned, found through its directory's
/// descriptor opened beneath the root. `Ok(false)` when it was gone or
/// replaced meanwhile. Body first: with the metadata gone first, a server
/// could serve the body as a plain file in between. Blocking.
pub fn remove_entry(layout: &Layout, entry: &ScanEntry) -> io::Result<bool> {
    use rustix::fs::{AtFlags, Mode, OFlags};
    use rustix::io::Errno;
    let root = rustix::fs::open(
        layout.root(),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let Some(name) = entry.rel.file_name() else {
        return Ok(false);
    };
    let parent = entry.rel.parent().unwrap_or(Path::new(""));
    let dir = match super::remove::open_beneath(&root, parent) {
        Ok(dir) => dir,
        Err(Errno::NOENT) | Err(Errno::NOTDIR) => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    match rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) if stat.st_ino == entry.inode => {}
        Ok(_) | Err(Errno::NOENT) => return Ok(false),
        Err(e) => return Err(e.into()),
    }
    match rustix::fs::unlinkat(&dir, name, AtFlags::empty()) {
        Ok(()) => {}
        Err(Errno::NOENT) => return Ok(false),
        Err(e) => return Err(e.into()),
    }
    super::remove::remove_meta(&root, layout, &entry.key, entry.inode)?;
    Ok(true)
}

/// The directories whose empty subdirectories `gc` may remove: each
/// top-level directory of the mirrors' tree and each directory at the top of
/// a host's or mount's namespace (those tops themselves stay). Blocking.
pub fn namespace_trees(layout: &Layout) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for child in children(layout.root()) {
        let name = child.file_name().unwrap_or_default();
        if name == HOSTS_DIR || name == MOUNTS_DIR {
            for top in children(&child) {
                out.extend(children(&top));
            }
        } else if name != STATE_DIR {
            out.push(child);
        }
    }
    out
}

/// The entries of `dir` (none if it cannot be read).
fn children(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// Files two levels down (`<dir>/<2 hex>/<name>`), parsed with `parse`.
fn fanned_files<T>(
    dir: &Path,
    parse: impl Fn(&Path) -> Option<T>,
) -> Vec<Result<StateFile<T>, StateIssue>> {
    let mut out = Vec::new();
    let subdirs = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return out,
        Err(source) => {
            out.push(Err(StateIssue {
                path: dir.to_path_buf(),
                source,
            }));
            return out;
        }
    };
    for sub in subdirs {
        match sub {
            Ok(sub) if sub.file_type().is_ok_and(|t| t.is_dir()) => {
                list(&sub.path(), &mut out, &parse)
            }
            // A stray file at the fan-out level is damage too.
            Ok(sub) => out.push(state_file(sub.path(), |_| None)),
            Err(source) => out.push(Err(StateIssue {
                path: dir.to_path_buf(),
                source,
            })),
        }
    }
    out
}

fn list<T>(
    dir: &Path,
    out: &mut Vec<Result<StateFile<T>, StateIssue>>,
    parse: impl Fn(&Path) -> Option<T>,
) {
    let entries = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return,
        Err(source) => {
            out.push(Err(StateIssue {
                path: dir.to_path_buf(),
                source,
            }));
            return;
        }
    };
    for entry in entries {
        match entry {
            Ok(entry) => out.push(state_file(entry.path(), &parse)),
            Err(source) => out.push(Err(StateIssue {
                path: dir.to_path_buf(),
                source,
            })),
        }
    }
}

fn state_file<T>(
    path: PathBuf,
    parse: impl Fn(&Path) -> Option<T>,
) -> Result<StateFile<T>, StateIssue> {
    // symlink_metadata: a symlink planted in the state directory is damage,
    // never followed.
    let md = fs::symlink_metadata(&path).map_err(|source| StateIssue {
        path: path.clone(),
        source,
    })?;
    if md.is_file() {
        // Unreadable (permissions, I/O) is not damage: report it, so that
        // nobody removes a file only because it could not be read.
        if let Err(source) = File::open(&path) {
            return Err(StateIssue { path, source });
        }
    }
    let parsed = if md.is_file() { parse(&path) } else { None };
    Ok(StateFile {
        size: md.len(),
        mtime: md.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        parsed,
        path,
    })
}

/// Whether a server is using the cache, judged by its lock: tries to take
/// it without waiting (creating the lock file as a server would, so that one
/// starting now contends with the caller). `NotFound` when the cache has no
/// state directory (no server ever ran there). Blocking.
pub fn probe_lock(layout: &Layout) -> io::Result<LockProbe> {
    CacheLock::try_acquire(layout)
}
