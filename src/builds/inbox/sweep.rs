//! [`Inbox::sweep`]: stale entries of `public/` and leftovers of `private/`.
//!
//! Clients may leave anything in `public/`, directories included, and may
//! change it while it is removed; removal works on descriptors and never
//! follows a symlink, so it cannot reach outside the entry.

use super::private::is_in_flight;
use super::Inbox;
use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{AtFlags, Dir, Mode, OFlags, StatxFlags, StatxTimestamp};
use rustix::io::Errno;
use std::ffi::{CStr, OsStr};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Deepest directory tree in `public/` that a sweep removes.
const MAX_DEPTH: usize = 16;

pub(super) fn sweep(inbox: &Inbox, keep: &[PathBuf]) -> io::Result<usize> {
    let cutoff = SystemTime::now()
        .checked_sub(inbox.config.stale_after)
        .unwrap_or(UNIX_EPOCH);
    let public = sweep_dir(&inbox.public_fd, &inbox.public, cutoff, |_| false)?;
    let private = sweep_dir(&inbox.private_fd, &inbox.private, cutoff, |name| {
        keep.contains(&inbox.private.join(name))
            || name.to_str().is_some_and(|name| is_in_flight(inbox, name))
    })?;
    Ok(public + private)
}

/// Removes the entries of `dir` changed before `cutoff` that `keep` does not
/// hold; returns how many.
fn sweep_dir(
    dir: &OwnedFd,
    path: &Path,
    cutoff: SystemTime,
    keep: impl Fn(&OsStr) -> bool,
) -> io::Result<usize> {
    let mut removed = 0;
    for dirent in Dir::read_from(dir)? {
        let dirent = dirent?;
        let name = dirent.file_name();
        if matches!(name.to_bytes(), b"." | b"..") {
            continue;
        }
        let entry_path = || path.join(OsStr::from_bytes(name.to_bytes()));
        let changed = match rustix::fs::statx(
            dir,
            name,
            AtFlags::SYMLINK_NOFOLLOW,
            StatxFlags::CTIME,
        ) {
            Ok(stat) => system_time(&stat.stx_ctime),
            Err(Errno::NOENT) => continue,
            Err(e) => {
                tracing::warn!(path = %entry_path().display(), error = %e, "inbox sweep cannot inspect an entry");
                continue;
            }
        };
        if changed >= cutoff || keep(OsStr::from_bytes(name.to_bytes())) {
            continue;
        }
        match remove_entry(dir, name, 0) {
            Ok(()) => removed += 1,
            Err(Errno::NOENT) => {}
            Err(e) => {
                tracing::warn!(path = %entry_path().display(), error = %e, "inbox sweep cannot remove an entry");
            }
        }
    }
    Ok(removed)
}

/// Unlinks `name` in `parent`; a directory is emptied first, depth-first, up
/// to [`MAX_DEPTH`] levels.
fn remove_entry(parent: impl AsFd, name: &CStr, depth: usize) -> Result<(), Errno> {
    match rustix::fs::unlinkat(&parent, name, AtFlags::empty()) {
        Err(Errno::ISDIR) | Err(Errno::PERM) => {}
        other => return other,
    }
    if depth >= MAX_DEPTH {
        return Err(Errno::LOOP);
    }
    let fd = rustix::fs::openat(
        &parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    for dirent in Dir::read_from(&fd)? {
        let dirent = dirent?;
        let child = dirent.file_name();
        if matches!(child.to_bytes(), b"." | b"..") {
            continue;
        }
        match remove_entry(&fd, child, depth + 1) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(e) => return Err(e),
        }
    }
    rustix::fs::unlinkat(&parent, name, AtFlags::REMOVEDIR)
}

fn system_time(ts: &StatxTimestamp) -> SystemTime {
    let nanos = Duration::from_nanos(u64::from(ts.tv_nsec));
    match u64::try_from(ts.tv_sec) {
        Ok(secs) => UNIX_EPOCH + Duration::from_secs(secs) + nanos,
        Err(_) => UNIX_EPOCH,
    }
}
