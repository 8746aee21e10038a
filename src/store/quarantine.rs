//! Damaged entries: what damage is ([`Damage`]), and moving a damaged body
//! (with its metadata) aside into the quarantine directory, where it is
//! never served and never removed by `gc`, so an operator can look at it.
//!
//! The serving side (a read that found a bad block, an open that found a
//! body of the wrong length) quarantines under the key's guard, so that a
//! commit of the key never comes in between, and tells the store's
//! [`DamageObserver`]. `package-cache verify` uses [`move_aside`] directly.

use super::layout::Layout;
use super::remove::open_beneath;
use super::{CacheKey, EntryMeta, Inner};
use rustix::fs::{AtFlags, Mode, RenameFlags};
use rustix::io::Errno;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Longest quarantine file name kept whole (NAME_MAX is 255; room for suffixes).
const MAX_NAME: usize = 200;

/// What is wrong with a committed body.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Damage {
    /// Its length is not the recorded one (truncated or extended on disk).
    #[error("{found} bytes on disk, {recorded} recorded")]
    Size {
        /// Bytes recorded at commit.
        recorded: u64,
        /// Bytes on disk.
        found: u64,
    },
    /// A block does not match its checksum.
    #[error("block {index} (bytes from {start}) does not match its checksum")]
    Block {
        /// The block's index.
        index: usize,
        /// Its first byte.
        start: u64,
    },
    /// The whole body does not have the recorded sha256.
    #[error("sha256 {found}, recorded {recorded}")]
    Digest {
        /// The recorded digest.
        recorded: String,
        /// The body's.
        found: String,
    },
    /// No metadata is bound to the body in an adopted directory: the file
    /// was replaced, or its metadata lost.
    #[error("no metadata is bound to this body (replaced, or its metadata lost)")]
    Unbound,
}

/// Told of every entry the server quarantines (the metrics implement it).
pub trait DamageObserver: Send + Sync {
    /// `key`'s body was found damaged (`damage`) and moved aside.
    fn damaged(&self, key: &CacheKey, damage: &Damage);
}

/// Moves `key`'s body aside if it is still `inode`, with the metadata bound
/// to it; forgets it (index, hot set); logs and reports it once. Returns
/// whether this call moved it (false: replaced or removed meanwhile, or the
/// move failed, which is logged). Blocking.
pub(crate) fn quarantine_blocking(
    inner: &Inner,
    key: &CacheKey,
    inode: u64,
    damage: &Damage,
) -> bool {
    let _guard = inner.guards.lock(key);
    inner.hot.remove(key);
    let rel = Layout::entry_rel(key);
    let moved = match move_aside(&inner.root_fd, &inner.layout, &rel, inode) {
        Ok(Some(to)) => to,
        Ok(None) => return false,
        Err(err) => {
            tracing::error!(key = %key, damage = %damage, error = %err,
                "damaged entry; cannot move it aside");
            return false;
        }
    };
    for name in std::iter::once(key.canonical()).chain(key.legacy_canonical()) {
        move_meta(&inner.layout, &name, inode, &moved);
    }
    inner.index().forget_if(key, inode);
    tracing::error!(key = %key, damage = %damage, quarantined = %moved.display(),
        "damaged entry quarantined; the next request fetches it again");
    if let Some(observer) = inner.damage_observer.get() {
        observer.damaged(key, damage);
    }
    true
}

/// Moves the metadata file `name` next to the quarantined body `to`, if it
/// is bound to `inode` (an old name may be another key's).
pub(crate) fn move_meta(layout: &Layout, name: &str, inode: u64, to: &Path) {
    let path = layout.meta_file_named(name);
    if !EntryMeta::read(&path).is_some_and(|m| m.inode == inode && m.key == name) {
        return;
    }
    let mut target = to.as_os_str().to_owned();
    target.push(".meta");
    if let Err(err) = std::fs::rename(&path, &target) {
        // Metadata bound to a body that is gone is never used again (gc's).
        tracing::warn!(path = %path.display(), error = %err, "cannot move metadata aside");
    }
}

/// Moves the body at `rel` (relative to the root `root`, resolved beneath
/// it) into the quarantine directory if it is still `inode`; returns where
/// it went, or `None` if the path no longer holds that body. Never replaces
/// a file already in quarantine. Blocking.
pub fn move_aside(
    root: &OwnedFd,
    layout: &Layout,
    rel: &Path,
    inode: u64,
) -> io::Result<Option<PathBuf>> {
    let state_rel = PathBuf::from(super::layout::STATE_DIR);
    let quarantine_rel = state_rel.join("quarantine");
    match rustix::fs::mkdirat(root, &quarantine_rel, Mode::from_raw_mode(0o700)) {
        Ok(()) | Err(Errno::EXIST) => {}
        Err(e) => return Err(e.into()),
    }
    let quarantine = open_beneath(root, &quarantine_rel)?;
    let (Some(name), parent) = (rel.file_name(), rel.parent().unwrap_or(Path::new(""))) else {
        return Ok(None);
    };
    let dir = match open_beneath(root, parent) {
        Ok(dir) => dir,
        Err(Errno::NOENT) | Err(Errno::NOTDIR) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    match rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) if stat.st_ino == inode => {}
        Ok(_) | Err(Errno::NOENT) => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let base = quarantine_name(rel);
    for n in 0..1000 {
        let target = match n {
            0 => base.clone(),
            n => format!("{base}.{n}"),
        };
        match rustix::fs::renameat_with(&dir, name, &quarantine, &target, RenameFlags::NOREPLACE) {
            Ok(()) => return Ok(Some(layout.quarantine_dir().join(target))),
            Err(Errno::EXIST) => continue,
            Err(Errno::NOENT) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "quarantine is full",
    ))
}

/// The body's relative path as one file name (`/` as `%2F`, `%` as `%25`),
/// shortened with a digest when too long.
fn quarantine_name(rel: &Path) -> String {
    use sha2::Digest;
    let text = String::from_utf8_lossy(rel.as_os_str().as_bytes())
        .replace('%', "%25")
        .replace('/', "%2F");
    if text.len() <= MAX_NAME {
        return text;
    }
    let digest = hex::encode(sha2::Sha256::digest(rel.as_os_str().as_bytes()));
    let mut cut = text.len() - (MAX_NAME - 17);
    while !text.is_char_boundary(cut) {
        cut += 1;
    }
    format!("{}-{}", &digest[..16], &text[cut..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quarantine_names_keep_the_path_and_fit() {
        assert_eq!(
            quarantine_name(Path::new("distfiles/a%b/foo.tgz")),
            "distfiles%2Fa%25b%2Ffoo.tgz"
        );
        let long = "d/".repeat(150) + "file.tgz";
        let name = quarantine_name(Path::new(&long));
        assert!(name.len() <= MAX_NAME, "{}", name.len());
        assert!(name.ends_with("%2Ffile.tgz"));
    }

    #[test]
    fn moves_the_body_only_while_it_is_the_inode_named() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        std::fs::create_dir_all(layout.state_dir()).unwrap();
        std::fs::create_dir_all(dir.path().join("d")).unwrap();
        let body = dir.path().join("d/f");
        std::fs::write(&body, b"x").unwrap();
        let inode = std::fs::metadata(&body).unwrap().ino();
        let root = rustix::fs::open(
            dir.path(),
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY,
            Mode::empty(),
        )
        .unwrap();
        let rel = Path::new("d/f");
        assert_eq!(move_aside(&root, &layout, rel, inode + 1).unwrap(), None);
        assert!(body.exists());
        let to = move_aside(&root, &layout, rel, inode).unwrap().unwrap();
        assert!(!body.exists() && to.exists());
        std::fs::write(&body, b"y").unwrap();
        let inode = std::fs::metadata(&body).unwrap().ino();
        let again = move_aside(&root, &layout, rel, inode).unwrap().unwrap();
        assert_ne!(again, to, "never replaces an earlier one");
    }
}
