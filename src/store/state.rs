//! The private state directory seen from outside a running server: where an
//! entry's metadata and a document live, listings of the metadata, document
//! and temporary files, and whether a server holds the lock.
//!
//! Blocking and read-only (the lock probe aside); the maintenance commands
//! decide what to remove. The namespace trees are walked by `scan`.

use super::disk;
use super::doc::{self, DocMeta};
use super::key::{CacheKey, STATE_DIR};
use super::meta::EntryMeta;
use sha2::{Digest, Sha256};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The metadata file of `key` in the cache at `root`.
pub fn meta_file(root: &Path, key: &CacheKey) -> PathBuf {
    meta_file_by_canonical(root, &key.canonical())
}

/// The file of the index document with key `doc_key` in the cache at `root`.
pub fn doc_file(root: &Path, doc_key: &str) -> PathBuf {
    fan_out(&root.join(STATE_DIR).join("docs"), doc_key.as_bytes())
}

/// `<dir>/<2 hex>/<sha256 hex>`: the name a key's state file is stored under.
pub(super) fn fan_out(dir: &Path, key: &[u8]) -> PathBuf {
    let digest = hex::encode(Sha256::digest(key));
    dir.join(&digest[..2]).join(digest)
}

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

/// Every metadata file under `<root>/.package-cache/meta/`.
pub fn meta_files(root: &Path) -> Vec<Result<StateFile<EntryMeta>, StateIssue>> {
    fanned_files(&root.join(STATE_DIR).join("meta"), |path| {
        disk::read_meta(path).filter(|meta| *path == meta_file_by_canonical(root, &meta.key))
    })
}

/// Every document file under `<root>/.package-cache/docs/`.
pub fn doc_files(root: &Path) -> Vec<Result<StateFile<DocMeta>, StateIssue>> {
    fanned_files(&root.join(STATE_DIR).join("docs"), |path| {
        doc::read_head(path).filter(|meta| *path == doc_file(root, &meta.key))
    })
}

/// Every file in `<root>/.package-cache/tmp/` (fills and metadata in progress,
/// or left by a crash); `parsed` is always `Some(())`.
pub fn tmp_files(root: &Path) -> Vec<Result<StateFile<()>, StateIssue>> {
    let dir = root.join(STATE_DIR).join("tmp");
    let mut out = Vec::new();
    list(&dir, &mut out, |_| Some(()));
    out
}

/// Where `verify` moves bodies that do not match their sha256:
/// `<root>/.package-cache/quarantine/` (0700, never served, never removed
/// by `gc`).
pub fn quarantine_dir(root: &Path) -> PathBuf {
    root.join(STATE_DIR).join("quarantine")
}

/// Every file in the quarantine directory; `parsed` is always `Some(())`.
pub fn quarantine_files(root: &Path) -> Vec<Result<StateFile<()>, StateIssue>> {
    let mut out = Vec::new();
    list(&quarantine_dir(root), &mut out, |_| Some(()));
    out
}

fn meta_file_by_canonical(root: &Path, canonical: &str) -> PathBuf {
    fan_out(&root.join(STATE_DIR).join("meta"), canonical.as_bytes())
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

/// Whether a server is using the cache at `root`, judged by its lock.
#[derive(Debug)]
pub enum LockProbe {
    /// No server holds the lock; this process now does, until the guard drops
    /// (a server started meanwhile refuses to start).
    Acquired(File),
    /// A server (or another maintenance command) holds it.
    Held,
}

/// Tries to take the cache's lock without waiting.
pub fn probe_lock(root: &Path) -> io::Result<LockProbe> {
    let path = root.join(STATE_DIR).join("lock");
    let file = match OpenOptions::new().read(true).write(true).open(&path) {
        Ok(file) => file,
        // No lock file: no server ever ran here. Create it, as a server would,
        // so that one starting now contends with us.
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            use std::os::unix::fs::OpenOptionsExt;
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&path)?
        }
        Err(e) => return Err(e),
    };
    match file.try_lock() {
        Ok(()) => Ok(LockProbe::Acquired(file)),
        Err(fs::TryLockError::WouldBlock) => Ok(LockProbe::Held),
        Err(fs::TryLockError::Error(e)) => Err(e),
    }
}
