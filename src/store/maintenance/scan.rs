//! `Scan`: a blocking walk over the committed entries of a cache directory,
//! for maintenance commands and for building indexes at start-up.
//!
//! It owns the walk of the namespace trees only; the private state
//! (`.package-cache/`: metadata, documents, temporary files) is listed by
//! the rest of `maintenance`. Directories are opened relative to their parent's descriptor with
//! `O_NOFOLLOW`, so no symlink, even one swapped in during the walk, leads it
//! out of the root. Nothing here writes to the cache.

use super::meta_status;
use crate::store::key::{CacheKey, KeyError, Namespace, MAX_DEPTH};
use crate::store::layout::{Layout, HOSTS_DIR, MOUNTS_DIR, STATE_DIR};
use crate::store::meta::EntryMeta;
use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, StatxFlags, StatxTimestamp};
use rustix::io::Errno;
use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One committed body found by a [`Scan`].
#[derive(Clone, Debug)]
pub struct ScanEntry {
    /// The key a request for this body uses (its namespace included).
    pub key: CacheKey,
    /// The body file, relative to the cache root (`Layout::entry_rel`).
    pub rel: PathBuf,
    /// Body length in bytes.
    pub size: u64,
    /// Inode number (what metadata is bound to).
    pub inode: u64,
    /// Last modification (commit time, or the 0.2 download time).
    pub mtime: SystemTime,
    /// Last access as the filesystem records it (`relatime` makes it coarse;
    /// the server opens with `O_NOATIME` where it may).
    pub atime: SystemTime,
    /// What the metadata file for this key says about this body.
    pub meta: MetaStatus,
}

/// The state of an entry's metadata, as the server would judge it.
#[derive(Clone, Debug)]
pub enum MetaStatus {
    /// Not looked at ([`Scan::without_meta`]).
    NotRead,
    /// No metadata file: a package-cache 0.2 entry (served as a plain file
    /// until its directory is adopted, damage after).
    Absent,
    /// Metadata bound to this body (same key and inode). A body whose length
    /// is not the recorded `size` is damaged.
    Bound(EntryMeta),
    /// A metadata file exists but describes another body (stale after an
    /// operator replaced the file, or left by a crash) or cannot be parsed.
    /// Like `Absent` for the body: a plain file before adoption, damage after.
    Unbound,
}

impl MetaStatus {
    /// The bound metadata, if any.
    pub fn bound(&self) -> Option<&EntryMeta> {
        match self {
            MetaStatus::Bound(meta) => Some(meta),
            _ => None,
        }
    }
}

/// Something under a namespace tree that is not an entry, or could not be
/// read. The walk goes on after each one.
#[derive(Debug, thiserror::Error)]
pub enum ScanIssue {
    /// A directory or file could not be opened or stat'ed.
    #[error("{rel}: {source}")]
    Unreadable {
        /// Relative to the cache root.
        rel: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A file whose path no request could name (the server never serves it).
    #[error("{rel}: not a cache entry: {reason}")]
    NotAKey {
        /// Relative to the cache root.
        rel: PathBuf,
        /// Why.
        reason: KeyError,
    },
    /// A symlink, fifo, socket or device: never followed, never an entry here.
    #[error("{rel}: not a regular file or directory, skipped")]
    Special {
        /// Relative to the cache root.
        rel: PathBuf,
    },
    /// Deeper than any key can be; not descended into.
    #[error("{rel}: deeper than any cache key, skipped")]
    TooDeep {
        /// Relative to the cache root.
        rel: PathBuf,
    },
}

/// Errors that stop a scan before it starts.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The cache root cannot be opened as a directory.
    #[error("cannot open cache directory {path}: {source}")]
    Root {
        /// The root given.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// A walk over every body file under a cache root: the mirrors' tree at the
/// root, then `.package-cache-hosts/<host>/` and `.package-cache-mounts/<name>/`.
///
/// Blocking: run it on a thread of its own or in `spawn_blocking`. It holds
/// one directory descriptor per level (at most [`MAX_DEPTH`] + 2). It sees a
/// live cache as it is: entries committed or removed during the walk may or
/// may not be listed, and every listed entry was a committed body when it was
/// stat'ed. Cost per entry: one `statx`, plus one small read when metadata is
/// looked up.
#[derive(Clone, Debug)]
pub struct Scan {
    layout: Layout,
    read_meta: bool,
}

impl Scan {
    /// A scan of the cache laid out as `layout` that looks up each entry's metadata.
    pub fn new(layout: &Layout) -> Scan {
        Scan {
            layout: layout.clone(),
            read_meta: true,
        }
    }

    /// Skips metadata lookups: every entry gets [`MetaStatus::NotRead`].
    pub fn without_meta(mut self) -> Scan {
        self.read_meta = false;
        self
    }

    /// Opens the root and starts the walk.
    pub fn entries(&self) -> Result<Entries, ScanError> {
        let fd = rustix::fs::open(
            self.layout.root(),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .and_then(Dir::new)
        .map_err(|e| ScanError::Root {
            path: self.layout.root().to_path_buf(),
            source: e.into(),
        })?;
        Ok(Entries {
            layout: self.layout.clone(),
            read_meta: self.read_meta,
            stack: vec![Frame {
                dir: fd,
                rel: PathBuf::new(),
                segments: Vec::new(),
                kind: FrameKind::MirrorsRoot,
            }],
        })
    }
}

/// What the directory being read holds.
enum FrameKind {
    /// The cache root: the mirrors' tree, minus the reserved directories.
    MirrorsRoot,
    /// `.package-cache-hosts` or `.package-cache-mounts`: one namespace per name.
    Namespaces { hosts: bool },
    /// A directory inside a namespace tree.
    Tree(Namespace),
}

struct Frame {
    dir: Dir,
    /// Relative to the cache root.
    rel: PathBuf,
    /// Decoded path segments within the namespace.
    segments: Vec<Vec<u8>>,
    kind: FrameKind,
}

/// The iterator of a [`Scan`]: each body file, or an issue met on the way.
pub struct Entries {
    layout: Layout,
    read_meta: bool,
    stack: Vec<Frame>,
}

impl Iterator for Entries {
    type Item = Result<ScanEntry, ScanIssue>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let frame = self.stack.last_mut()?;
            let dirent = match frame.dir.read() {
                None => {
                    self.stack.pop();
                    continue;
                }
                Some(Err(e)) => {
                    let rel = frame.rel.clone();
                    self.stack.pop();
                    return Some(Err(ScanIssue::Unreadable {
                        rel,
                        source: e.into(),
                    }));
                }
                Some(Ok(dirent)) => dirent,
            };
            let name = dirent.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            if let Some(item) = self.visit(name.to_vec()) {
                return Some(item);
            }
        }
    }
}

impl Entries {
    /// Handles one name of the top frame: descends, yields, or skips it.
    fn visit(&mut self, name: Vec<u8>) -> Option<Result<ScanEntry, ScanIssue>> {
        let frame = self.stack.last().expect("visit is called with a frame");
        let rel = frame.rel.join(OsStr::from_bytes(&name));
        let (namespace, segments) = match &frame.kind {
            FrameKind::MirrorsRoot => {
                if name == STATE_DIR.as_bytes() {
                    return None;
                }
                if name == HOSTS_DIR.as_bytes() || name == MOUNTS_DIR.as_bytes() {
                    let hosts = name == HOSTS_DIR.as_bytes();
                    return self.descend(&name, rel, Vec::new(), FrameKind::Namespaces { hosts });
                }
                (Namespace::Mirrors, vec![name.clone()])
            }
            FrameKind::Namespaces { hosts } => {
                // Host and mount names are validated before the server uses
                // them as directory names, so they are UTF-8.
                let Ok(text) = String::from_utf8(name.clone()) else {
                    return Some(Err(ScanIssue::NotAKey {
                        rel,
                        reason: KeyError::ForbiddenByte,
                    }));
                };
                let kind = if *hosts {
                    FrameKind::Tree(Namespace::Host(text))
                } else {
                    FrameKind::Tree(Namespace::Mount(text))
                };
                return self.descend(&name, rel, Vec::new(), kind);
            }
            FrameKind::Tree(namespace) => {
                let mut segments = frame.segments.clone();
                segments.push(name.clone());
                (namespace.clone(), segments)
            }
        };
        let frame = self.stack.last().expect("visit is called with a frame");
        let stat = match rustix::fs::statx(
            frame.dir.fd().ok()?,
            name.as_slice(),
            AtFlags::SYMLINK_NOFOLLOW,
            StatxFlags::TYPE
                | StatxFlags::INO
                | StatxFlags::SIZE
                | StatxFlags::ATIME
                | StatxFlags::MTIME,
        ) {
            Ok(stat) => stat,
            // Removed since the directory was read (a purge, a replaced entry).
            Err(Errno::NOENT) => return None,
            Err(e) => {
                return Some(Err(ScanIssue::Unreadable {
                    rel,
                    source: e.into(),
                }))
            }
        };
        match FileType::from_raw_mode(stat.stx_mode.into()) {
            FileType::Directory => {
                if segments.len() >= MAX_DEPTH {
                    return Some(Err(ScanIssue::TooDeep { rel }));
                }
                self.descend(&name, rel, segments, FrameKind::Tree(namespace))
            }
            FileType::RegularFile => {
                let key = match CacheKey::try_from_segments(namespace, segments) {
                    Ok(key) => key,
                    Err(reason) => return Some(Err(ScanIssue::NotAKey { rel, reason })),
                };
                let meta = if self.read_meta {
                    meta_status(&self.layout, &key, stat.stx_ino)
                } else {
                    MetaStatus::NotRead
                };
                Some(Ok(ScanEntry {
                    key,
                    rel,
                    size: stat.stx_size,
                    inode: stat.stx_ino,
                    mtime: system_time(&stat.stx_mtime),
                    atime: system_time(&stat.stx_atime),
                    meta,
                }))
            }
            _ => Some(Err(ScanIssue::Special { rel })),
        }
    }

    /// Opens `name` in the top frame's directory (never through a symlink)
    /// and pushes it.
    fn descend(
        &mut self,
        name: &[u8],
        rel: PathBuf,
        segments: Vec<Vec<u8>>,
        kind: FrameKind,
    ) -> Option<Result<ScanEntry, ScanIssue>> {
        let frame = self.stack.last().expect("descend is called with a frame");
        let opened = frame.dir.fd().and_then(|parent| {
            rustix::fs::openat(
                parent,
                name,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
        });
        let dir = match opened.and_then(|fd: OwnedFd| Dir::new(fd)) {
            Ok(dir) => dir,
            Err(Errno::NOENT) => return None,
            // A symlink where a directory was (O_NOFOLLOW) or a file.
            Err(Errno::LOOP) | Err(Errno::NOTDIR) => return Some(Err(ScanIssue::Special { rel })),
            Err(e) => {
                return Some(Err(ScanIssue::Unreadable {
                    rel,
                    source: e.into(),
                }))
            }
        };
        self.stack.push(Frame {
            dir,
            rel,
            segments,
            kind,
        });
        None
    }
}

fn system_time(ts: &StatxTimestamp) -> SystemTime {
    let nanos = Duration::from_nanos(u64::from(ts.tv_nsec));
    match u64::try_from(ts.tv_sec) {
        Ok(secs) => UNIX_EPOCH + Duration::from_secs(secs) + nanos,
        Err(_) => UNIX_EPOCH,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::path::Path;

    fn write(root: &Path, rel: &str, body: &[u8]) {
        let path = root.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, body).unwrap();
    }

    #[test]
    fn walks_every_namespace_and_skips_state_and_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "distfiles/ab/foo-1.tgz", b"foo");
        write(root, ".package-cache-hosts/h.example/x/y", b"yy");
        write(root, ".package-cache-mounts/pypi/files/z.whl", b"zzzz");
        write(root, ".package-cache/meta/00/junk", b"{");
        write(root, ".package-cache/tmp/1-1.fill", b"partial");
        write(root, "bad\nname", b"?");
        let outside = tempfile::tempdir().unwrap();
        write(outside.path(), "secret/s", b"secret");
        std::os::unix::fs::symlink(outside.path().join("secret"), root.join("link")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret/s"), root.join("flink")).unwrap();

        let mut found = Vec::new();
        let mut issues = Vec::new();
        for item in Scan::new(&Layout::new(root)).entries().unwrap() {
            match item {
                Ok(entry) => found.push((entry.key.to_string(), entry.size)),
                Err(issue) => issues.push(issue.to_string()),
            }
        }
        found.sort();
        assert_eq!(
            found,
            vec![
                ("/distfiles/ab/foo-1.tgz".to_string(), 3),
                ("/pypi/files/z.whl".to_string(), 4),
                ("h.example/x/y".to_string(), 2),
            ]
        );
        assert_eq!(issues.len(), 3, "{issues:?}");
        assert!(issues.iter().any(|i| i.contains("not a cache entry")));
    }

    #[test]
    fn metadata_is_bound_by_key_and_inode() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "a", b"abc");
        write(root, "b", b"def");
        let inode = |rel: &str| {
            use std::os::unix::fs::MetadataExt;
            fs::metadata(root.join(rel)).unwrap().ino()
        };
        for (rel, ino) in [("a", inode("a")), ("b", inode("b") + 1)] {
            let key = Layout::key_of(Path::new(rel)).unwrap();
            let meta = EntryMeta {
                key: key.canonical(),
                size: 3,
                sha256: String::new(),
                headers: Vec::new(),
                fetched_at: 0,
                source: String::new(),
                inode: ino,
                blocks: None,
                adopted: false,
                verified: Vec::new(),
            };
            let path = Layout::new(root).meta_file(&key);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, serde_json::to_vec(&meta).unwrap()).unwrap();
        }
        write(root, "c", b"plain");
        let mut status: Vec<_> = Scan::new(&Layout::new(root))
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.key.to_string(),
                    format!("{:?}", e.meta)
                        .split('(')
                        .next()
                        .unwrap()
                        .to_string(),
                )
            })
            .collect();
        status.sort();
        assert_eq!(
            status,
            vec![
                ("/a".to_string(), "Bound".to_string()),
                ("/b".to_string(), "Unbound".to_string()),
                ("/c".to_string(), "Absent".to_string()),
            ]
        );
        let unread = Scan::new(&Layout::new(root))
            .without_meta()
            .entries()
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        assert!(matches!(unread.meta, MetaStatus::NotRead));
    }
}
