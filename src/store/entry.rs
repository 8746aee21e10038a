//! Opening a committed entry: resolved beneath the root (never through a
//! symlink out of it), bound to its metadata by inode, small bodies read
//! whole (and checked) and remembered in the hot set. A body whose length is
//! not the recorded one, or (once the directory is adopted, see `adopt`) a
//! body without metadata, is damage: quarantined, and the lookup misses.

use super::check::{Check, Home};
use super::layout::Layout;
use super::quarantine::{quarantine_blocking, Damage};
use super::{hot, reader::BodyReader, CacheKey, EntryMeta, Error, Inner, SMALL_ENTRY};
use bytes::Bytes;
use rustix::fs::{Mode, OFlags, ResolveFlags};
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::time::SystemTime;

/// A committed entry, opened. The descriptor stays valid if the entry is
/// replaced or removed meanwhile.
pub struct Entry {
    pub(super) file: Option<Arc<File>>,
    /// Body length.
    pub len: u64,
    /// Recorded metadata; `None` for a plain file (a package-cache 0.2 entry).
    pub meta: Option<Arc<EntryMeta>>,
    /// The body file's modification time.
    pub mtime: SystemTime,
    pub(super) small: Option<Bytes>,
    /// Where the body lives, for a read that finds it damaged.
    pub(super) home: Option<Home>,
}

impl Entry {
    /// A reader over `[start, end)` of the body, checking what it reads
    /// against the checksums recorded at commit (see `check`).
    /// Only for entries without [`Entry::small_body`].
    pub fn reader(&self, start: u64, end: u64) -> BodyReader {
        let file = self
            .file
            .clone()
            .expect("entries without a small body keep their file open");
        let check = match (&self.home, &self.meta) {
            (Some(home), Some(meta)) => Check::new(home.clone(), meta, self.len, start, end),
            _ => None,
        };
        BodyReader::fixed(file, self.len, start, end, check)
    }

    /// The whole body, when the entry is small enough to have been read at open.
    pub fn small_body(&self) -> Option<&Bytes> {
        self.small.as_ref()
    }
}

pub(super) enum Opened {
    Entry(Entry),
    Missing,
    /// The body was damaged; it is quarantined now, so the key is missing.
    Damaged,
    Conflict,
}

pub(super) fn open_entry_blocking(inner: &Arc<Inner>, key: &CacheKey) -> Result<Opened, Error> {
    open_blocking(inner, key, true)
}

/// Opens `key`'s body; `remember`: keep a small one in the hot set.
pub(super) fn open_blocking(
    inner: &Arc<Inner>,
    key: &CacheKey,
    remember: bool,
) -> Result<Opened, Error> {
    let rel = Layout::entry_rel(key);
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
                path: inner.layout.root().join(&rel),
                source: e.into(),
            })
        }
    };
    let file = File::from(fd);
    let md = file.metadata().map_err(|source| Error::Io {
        op: "stat",
        path: inner.layout.root().join(&rel),
        source,
    })?;
    if !md.is_file() {
        return Ok(Opened::Conflict);
    }
    let len = md.len();
    let meta = EntryMeta::read_bound(&inner.layout, key, md.ino()).map(Arc::new);
    let damaged = |damage: Damage| {
        quarantine_blocking(inner, key, md.ino(), &damage);
        Ok(Opened::Damaged)
    };
    match &meta {
        Some(meta) if meta.size != len => {
            return damaged(Damage::Size {
                recorded: meta.size,
                found: len,
            })
        }
        Some(_) => {}
        None if inner.is_adopted() => return damaged(Damage::Unbound),
        // A plain file of package-cache 0.2, until its directory is adopted.
        None => {}
    }
    let file = Arc::new(file);
    let small = if len <= SMALL_ENTRY {
        let mut buf = bytes::BytesMut::zeroed(len as usize);
        std::os::unix::fs::FileExt::read_exact_at(&*file, &mut buf, 0).map_err(|source| {
            Error::Io {
                op: "read",
                path: inner.layout.root().join(&rel),
                source,
            }
        })?;
        Some(buf.freeze())
    } else {
        None
    };
    let home = Home {
        inner: inner.clone(),
        key: key.clone(),
        inode: md.ino(),
    };
    if let (Some(body), Some(meta)) = (&small, &meta) {
        // Read whole already: proved whole, before anything is served.
        if let Some(mut check) = Check::new(home.clone(), meta, len, 0, len) {
            if let Err(damage) = check.verify(0, body, len) {
                return damaged(damage);
            }
        }
    }
    let mtime = md.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    if let Some(body) = small.as_ref().filter(|_| remember) {
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
            home: None,
        }));
    }
    if small.is_some() {
        return Ok(Opened::Entry(Entry {
            file: None,
            len,
            meta,
            mtime,
            small,
            home: None,
        }));
    }
    Ok(Opened::Entry(Entry {
        file: Some(file),
        len,
        meta,
        mtime,
        small,
        home: Some(home),
    }))
}
