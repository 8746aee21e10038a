//! [`Inbox::take`]: one entry of `public/` into a verified private copy.
//!
//! Every step works on descriptors: the entry is opened once, relative to
//! `public/`'s descriptor, and everything after that looks at the open file,
//! never at the name again, except to unlink it only if it is still the same
//! inode.

use super::name::{check_entry, check_sha1};
use super::private::{Digests, PrivateFile};
use super::{Error, Inbox, Source, SOURCE_MODE};
use rustix::fd::AsFd;
use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, Statx, StatxFlags};
use rustix::io::Errno;
use std::fs::File;
use std::io::{self, Read, Write};

pub(super) fn take(inbox: &Inbox, entry: &str, sha1: &str) -> Result<Source, Error> {
    check_entry(entry)?;
    check_sha1(sha1)?;
    let entry_path = inbox.public.join(entry);
    let file = open_entry(inbox, entry)?;
    let stat = statx(&file, "", AtFlags::EMPTY_PATH)
        .map_err(|e| Error::io("inspecting", &entry_path)(e.into()))?;
    check_open_file(entry, &stat, inbox.config.max_size)?;

    let owner = stat.stx_uid;
    let used = usage(inbox, owner)?;
    if used > inbox.config.per_user_bytes {
        return Err(Error::OverQuota {
            uid: owner,
            used,
            limit: inbox.config.per_user_bytes,
        });
    }

    unlink_if_same(inbox, entry, &stat)?;

    let copy = PrivateFile::new(inbox, "take")?;
    match copy_limited(inbox, &file, &copy, &entry_path) {
        Ok(digests) => copy.verify_blocking(sha1, digests, Some(owner)),
        Err(err) => {
            copy.remove_now();
            Err(err)
        }
    }
}

/// Opens the entry for reading: never through a symlink (`ELOOP`), never
/// waiting for a FIFO writer, never becoming a controlling terminal.
fn open_entry(inbox: &Inbox, entry: &str) -> Result<File, Error> {
    let opened = rustix::fs::openat(
        &inbox.public_fd,
        entry,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    );
    let entry = entry.to_owned();
    match opened {
        Ok(fd) => Ok(File::from(fd)),
        Err(Errno::NOENT) => Err(Error::Missing { entry }),
        Err(Errno::LOOP) => Err(Error::Symlink { entry }),
        Err(Errno::ACCESS) | Err(Errno::PERM) => Err(Error::Unreadable { entry }),
        // O_NONBLOCK turns a client's write lease from a 45 s stall into EAGAIN.
        Err(Errno::AGAIN) => Err(Error::Busy { entry }),
        // A socket, or a device node without a driver behind it.
        Err(Errno::NXIO) | Err(Errno::NODEV) => Err(Error::NotRegular {
            entry,
            kind: "special file",
        }),
        Err(e) => Err(Error::io("opening", inbox.public.join(&entry))(e.into())),
    }
}

/// The checks on the open file: a regular file, one link, not too big.
fn check_open_file(entry: &str, stat: &Statx, max_size: u64) -> Result<(), Error> {
    let kind = match FileType::from_raw_mode(stat.stx_mode.into()) {
        FileType::RegularFile => None,
        FileType::Directory => Some("directory"),
        FileType::Fifo => Some("fifo"),
        FileType::Socket => Some("socket"),
        FileType::CharacterDevice => Some("character device"),
        FileType::BlockDevice => Some("block device"),
        FileType::Symlink => Some("symbolic link"),
        _ => Some("special file"),
    };
    if let Some(kind) = kind {
        return Err(Error::NotRegular {
            entry: entry.to_owned(),
            kind,
        });
    }
    // A second name means the inode lives elsewhere too: maybe a file the
    // client could not read itself, which the server would then copy.
    if stat.stx_nlink != 1 {
        return Err(Error::HardLink {
            entry: entry.to_owned(),
            links: stat.stx_nlink.into(),
        });
    }
    if stat.stx_size > max_size {
        return Err(Error::TooBig { limit: max_size });
    }
    Ok(())
}

/// Bytes held in `public/` by entries that `uid` owns (top level only). The
/// server owns `public/`, so it may list it.
fn usage(inbox: &Inbox, uid: u32) -> Result<u64, Error> {
    let err = |e: Errno| Error::io("listing", &inbox.public)(e.into());
    let mut used = 0u64;
    for dirent in Dir::read_from(&inbox.public_fd).map_err(err)? {
        let dirent = dirent.map_err(err)?;
        let name = dirent.file_name();
        if matches!(name.to_bytes(), b"." | b"..") {
            continue;
        }
        match statx(&inbox.public_fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) if stat.stx_uid == uid => used = used.saturating_add(stat.stx_size),
            Ok(_) | Err(Errno::NOENT) => {}
            Err(e) => return Err(err(e)),
        }
    }
    Ok(used)
}

/// Unlinks `entry` if it still names the inode that was opened. If its owner
/// removed or replaced it meanwhile (only the owner can: the sticky bit), or a
/// sweep removed it, the opened file is still the one taken and the name is
/// left alone.
fn unlink_if_same(inbox: &Inbox, entry: &str, opened: &Statx) -> Result<(), Error> {
    let path = || inbox.public.join(entry);
    match statx(&inbox.public_fd, entry, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(now) if same_inode(&now, opened) => {
            match rustix::fs::unlinkat(&inbox.public_fd, entry, AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => Ok(()),
                Err(e) => Err(Error::io("removing", path())(e.into())),
            }
        }
        Ok(_) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(Error::io("inspecting", path())(e.into())),
    }
}

/// Copies at most `max_size + 1` bytes of `file` into the new private file,
/// hashing what is written, then syncs it. The limit holds however the client
/// grows its file meanwhile.
fn copy_limited(
    inbox: &Inbox,
    file: &File,
    copy: &PrivateFile,
    entry_path: &std::path::Path,
) -> Result<Digests, Error> {
    let max_size = inbox.config.max_size;
    let fd = rustix::fs::openat(
        &inbox.private_fd,
        copy.name(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(SOURCE_MODE),
    )
    .map_err(|e| Error::io("creating", copy.path())(e.into()))?;
    // The umask may only have narrowed the mode; make it exact.
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(SOURCE_MODE))
        .map_err(|e| Error::io("setting the mode of", copy.path())(e.into()))?;
    let mut out = File::from(fd);

    let mut digests = Digests::new();
    let mut input = file.take(max_size.saturating_add(1));
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io("reading", entry_path)(e)),
        };
        digests.update(&buf[..n]);
        if digests.size() > max_size {
            return Err(Error::TooBig { limit: max_size });
        }
        out.write_all(&buf[..n])
            .map_err(Error::io("writing", copy.path()))?;
    }
    out.sync_all().map_err(Error::io("syncing", copy.path()))?;
    Ok(digests)
}

fn statx(dirfd: impl AsFd, name: impl rustix::path::Arg, flags: AtFlags) -> Result<Statx, Errno> {
    rustix::fs::statx(
        dirfd,
        name,
        flags,
        StatxFlags::TYPE
            | StatxFlags::MODE
            | StatxFlags::NLINK
            | StatxFlags::UID
            | StatxFlags::INO
            | StatxFlags::SIZE,
    )
}

fn same_inode(a: &Statx, b: &Statx) -> bool {
    a.stx_ino == b.stx_ino
        && a.stx_dev_major == b.stx_dev_major
        && a.stx_dev_minor == b.stx_dev_minor
}
