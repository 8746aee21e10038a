//! Removing a committed entry: its body, then its metadata, under the key's
//! guard (see `guard`), so that no commit of the key comes in between. The
//! body is found through its directory's descriptor, opened beneath the root
//! as lookups open bodies (`RESOLVE_BENEATH`), and unlinked only if it is the
//! inode the caller chose: a body committed since, or put there by someone
//! else, stays. Readers that have it open keep reading (Unix unlink).

use super::layout::Layout;
use super::{CacheKey, EntryMeta, Error, Inner};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::path::Path;

/// Which body a removal may take.
#[derive(Clone, Copy, Debug)]
pub(super) enum Chosen {
    /// This inode, whatever the index says (a body its index no longer vouches for).
    Inode(u64),
    /// An eviction victim: the body of this inode, and only while the index
    /// still holds it unused since `last_used` and no fill of the key runs.
    Victim {
        /// The inode the index recorded.
        inode: u64,
        /// Its last use when it was chosen.
        last_used: u64,
    },
}

impl Chosen {
    fn inode(self) -> u64 {
        match self {
            Chosen::Inode(inode) | Chosen::Victim { inode, .. } => inode,
        }
    }
}

/// Removes `key`'s body if it is the one `chosen` names, and its metadata.
/// Returns the bytes freed (0 when nothing was removed). Blocking.
pub(super) fn remove_blocking(inner: &Inner, key: &CacheKey, chosen: Chosen) -> Result<u64, Error> {
    let _guard = inner.guards.lock(key);
    if let Chosen::Victim { inode, last_used } = chosen {
        if inner.filling(key) {
            return Ok(0);
        }
        match inner.index().get(key) {
            Some(slot) if slot.inode == inode && slot.last_used <= last_used => {}
            // Replaced, used since it was chosen, or gone.
            _ => return Ok(0),
        }
    }
    let inode = chosen.inode();
    let rel = Layout::entry_rel(key);
    let io = |op: &'static str| {
        let path = inner.layout.root().join(&rel);
        move |e: Errno| Error::Io {
            op,
            path,
            source: e.into(),
        }
    };
    let name = rel.file_name().expect("entry paths end in a name");
    let parent = rel.parent().unwrap_or(Path::new(""));
    let dir = match open_beneath(&inner.root_fd, parent) {
        Ok(dir) => dir,
        Err(Errno::NOENT) | Err(Errno::NOTDIR) => {
            forget_if(inner, key, inode);
            return Ok(0);
        }
        Err(e) => return Err(io("open directory")(e)),
    };
    let stat = match rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) => stat,
        Err(Errno::NOENT) => {
            forget_if(inner, key, inode);
            return Ok(0);
        }
        Err(e) => return Err(io("stat")(e)),
    };
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        return Ok(0);
    }
    if stat.st_ino != inode {
        // Not the body chosen: it stays. If the index still names the
        // chosen one, someone replaced the file behind our back; count what
        // is there now.
        inner
            .index()
            .replace_body_if(key, inode, stat.st_size as u64, stat.st_ino);
        return Ok(0);
    }
    rustix::fs::unlinkat(&dir, name, AtFlags::empty()).map_err(io("remove"))?;
    if let Err(e) = remove_meta(&inner.root_fd, &inner.layout, key, inode) {
        // The body is gone; metadata bound to its inode is never used again
        // (gc removes it).
        tracing::warn!(key = %key, error = %e, "cannot remove the metadata of a removed entry");
    }
    inner.hot.remove(key);
    forget_if(inner, key, inode);
    Ok(stat.st_size as u64)
}

/// Removes the metadata of `key` whose body (inode `inode`) was just
/// removed: the file under its canonical name (only the server writes it, and
/// a commit of the key waits for the guard), and the one under the name an
/// earlier version used if it is bound to that inode: that name may be
/// another key's too.
pub(super) fn remove_meta(
    root: &OwnedFd,
    layout: &Layout,
    key: &CacheKey,
    inode: u64,
) -> std::io::Result<()> {
    let unlink = |name: &str| match rustix::fs::unlinkat(
        root,
        layout.meta_rel_named(name),
        AtFlags::empty(),
    ) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(std::io::Error::from(e)),
    };
    unlink(&key.canonical())?;
    if let Some(legacy) = key.legacy_canonical() {
        let path = layout.meta_file_named(&legacy);
        if EntryMeta::read(&path).is_some_and(|m| m.inode == inode && m.key == legacy) {
            unlink(&legacy)?;
        }
    }
    Ok(())
}

/// Forgets `key` if the index holds the body `inode` (and, while the index
/// builds, keeps the build from counting that body).
fn forget_if(inner: &Inner, key: &CacheKey, inode: u64) {
    inner.index().forget_if(key, inode);
}

/// Opens the directory `rel` beneath `root` (never outside it, whatever
/// symlinks are inside), as lookups resolve bodies.
pub(super) fn open_beneath(root: &OwnedFd, rel: &Path) -> Result<OwnedFd, Errno> {
    let rel: &OsStr = if rel.as_os_str().is_empty() {
        OsStr::new(".")
    } else {
        rel.as_os_str()
    };
    rustix::fs::openat2(
        root,
        rel,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
    )
}
