//! Adopting a cache directory: the first server of this version to open a
//! directory hashes every body that has no metadata (a plain file of
//! package-cache 0.2) or no block sums (an entry of an earlier 0.3) into
//! metadata, in the background, then records that the directory is adopted
//! (`Layout::adopted_marker`). From then on every body has metadata, so a
//! body without any, or of another length than recorded, is damage and is
//! quarantined, never served as a plain file.
//!
//! Until the pass ends, plain files are served as before (unchecked). A
//! directory this version creates is adopted at once.

use super::blocks::{BlockHasher, BlockSums};
use super::layout::Layout;
use super::maintenance::{MetaStatus, Scan, ScanEntry};
use super::quarantine::{quarantine_blocking, Damage};
use super::{durable, CacheKey, EntryMeta, Error, Inner, Store};
use rustix::fs::{Mode, OFlags, ResolveFlags};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::Ordering;
use std::time::UNIX_EPOCH;
use tokio_util::sync::CancellationToken;

/// What an adoption pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Adopted {
    /// Plain files given metadata.
    pub files: u64,
    /// Entries of earlier versions given block sums.
    pub summed: u64,
    /// Entries found damaged and quarantined.
    pub damaged: u64,
    /// Bytes hashed.
    pub bytes: u64,
}

/// Whether the directory at `layout` was adopted. Blocking.
pub(crate) fn is_adopted(layout: &Layout) -> bool {
    layout.adopted_marker().exists()
}

/// Records that the directory at `layout` is adopted. Blocking.
pub(crate) fn mark_adopted(layout: &Layout) -> io::Result<()> {
    let note = format!(
        "{{\"version\":\"{}\",\"at\":{}}}\n",
        env!("CARGO_PKG_VERSION"),
        super::unix_now()
    );
    durable::write_file(
        &layout.tmp_dir(),
        &layout.adopted_marker(),
        note.as_bytes(),
        0o600,
    )
}

impl Store {
    /// Whether every body here has metadata (the directory is adopted).
    pub fn is_adopted(&self) -> bool {
        self.inner.is_adopted()
    }

    /// Adopts the directory if it is not yet (see the module doc): returns
    /// what was done, `None` when it already was adopted or `cancel` stopped
    /// the pass (then the next start begins again).
    pub async fn adopt(&self, cancel: CancellationToken) -> Result<Option<Adopted>, Error> {
        if self.inner.is_adopted() {
            return Ok(None);
        }
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || adopt_blocking(&inner, &cancel))
            .await
            .map_err(Error::join)?
    }
}

fn adopt_blocking(inner: &Inner, cancel: &CancellationToken) -> Result<Option<Adopted>, Error> {
    let layout = &inner.layout;
    let mut done = Adopted::default();
    let entries = Scan::new(layout).entries().map_err(|err| Error::Io {
        op: "list",
        path: layout.root().to_path_buf(),
        source: io::Error::other(err),
    })?;
    for entry in entries.flatten() {
        if cancel.is_cancelled() {
            return Ok(None);
        }
        let meta = match &entry.meta {
            MetaStatus::Bound(meta) if meta.blocks.is_some() => continue,
            MetaStatus::Bound(meta) if meta.size != entry.size => {
                let damage = Damage::Size {
                    recorded: meta.size,
                    found: entry.size,
                };
                done.damaged +=
                    u64::from(quarantine_blocking(inner, &entry.key, entry.inode, &damage));
                continue;
            }
            MetaStatus::Bound(meta) => Some(meta.clone()),
            _ => None,
        };
        let hashed = match hash_entry(&inner.root_fd, &entry, cancel) {
            Ok(Some(hashed)) => hashed,
            Err(_) if cancel.is_cancelled() => return Ok(None),
            // Removed or replaced since it was listed: its commit has metadata.
            Ok(None) => continue,
            Err(err) => {
                tracing::warn!(key = %entry.key, error = %err, "cannot read a file to adopt it; left as it is");
                continue;
            }
        };
        done.bytes += hashed.len;
        let new = match meta {
            Some(meta) if meta.sha256 != hashed.sha256 => {
                let damage = Damage::Digest {
                    recorded: meta.sha256.clone(),
                    found: hashed.sha256,
                };
                done.damaged +=
                    u64::from(quarantine_blocking(inner, &entry.key, entry.inode, &damage));
                continue;
            }
            Some(meta) => {
                done.summed += 1;
                EntryMeta {
                    key: entry.key.canonical(),
                    blocks: Some(hashed.blocks),
                    ..meta
                }
            }
            None => {
                done.files += 1;
                EntryMeta {
                    key: entry.key.canonical(),
                    size: hashed.len,
                    sha256: hashed.sha256,
                    headers: Vec::new(),
                    fetched_at: entry
                        .mtime
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs()),
                    source: String::new(),
                    inode: entry.inode,
                    blocks: Some(hashed.blocks),
                    adopted: true,
                    verified: Vec::new(),
                }
            }
        };
        if let Err(err) = bind(inner, &entry.key, &new) {
            tracing::warn!(key = %entry.key, error = %err, "cannot write the metadata of an adopted file");
        }
    }
    mark_adopted(layout).map_err(|source| Error::Io {
        op: "write",
        path: layout.adopted_marker(),
        source,
    })?;
    inner.adopted.store(true, Ordering::Release);
    tracing::info!(
        files = done.files,
        summed = done.summed,
        damaged = done.damaged,
        bytes = done.bytes,
        "cache directory adopted: every body has metadata and block sums"
    );
    Ok(Some(done))
}

/// Writes `meta` for `key` if its body is still the inode hashed, under the
/// key's guard (a commit meanwhile wrote its own).
fn bind(inner: &Inner, key: &CacheKey, meta: &EntryMeta) -> io::Result<()> {
    let _guard = inner.guards.lock(key);
    match std::fs::symlink_metadata(inner.layout.entry(key)) {
        Ok(md) if md.ino() == meta.inode && md.len() == meta.size => {}
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    }
    super::commit::write_meta(&inner.layout, meta, &inner.layout.meta_file(key))?;
    inner.hot.remove(key);
    Ok(())
}

/// A body's digests, as one read gives them.
pub struct Hashed {
    /// Bytes read.
    pub len: u64,
    /// Lower-case hex sha256.
    pub sha256: String,
    /// The block sums.
    pub blocks: BlockSums,
}

/// Hashes `entry`'s body (opened beneath `root`, never through a symlink);
/// `None` when the path no longer holds the inode scanned. Blocking.
pub(crate) fn hash_entry(
    root: &OwnedFd,
    entry: &ScanEntry,
    cancel: &CancellationToken,
) -> io::Result<Option<Hashed>> {
    match open_scanned(root, entry)? {
        Some(file) => hash_file(file, |_| !cancel.is_cancelled()).map(Some),
        None => Ok(None),
    }
}

/// Opens the body `entry` names (beneath `root`, never through a symlink);
/// `None` when the path is gone or no longer holds the inode scanned.
/// Blocking.
pub fn open_scanned(root: &OwnedFd, entry: &ScanEntry) -> io::Result<Option<File>> {
    let opened = rustix::fs::openat2(
        root,
        &entry.rel,
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS,
    );
    let file = match opened {
        Ok(fd) => File::from(fd),
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if file.metadata()?.ino() != entry.inode {
        return Ok(None);
    }
    Ok(Some(file))
}

/// Reads `file` from its start to its end, hashing it; `progress` is told
/// the bytes of each read and stops the hashing (an `Interrupted` error)
/// by returning false. Blocking.
pub fn hash_file(mut file: File, mut progress: impl FnMut(u64) -> bool) -> io::Result<Hashed> {
    let mut sha = Sha256::new();
    let mut blocks = BlockHasher::default();
    let mut len = 0;
    let mut buf = vec![0u8; super::BLOCK as usize];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        sha.update(&buf[..n]);
        blocks.update(&buf[..n]);
        len += n as u64;
        if !progress(n as u64) {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "stopped"));
        }
    }
    Ok(Hashed {
        len,
        sha256: hex::encode(sha.finalize()),
        blocks: blocks.sums(),
    })
}
