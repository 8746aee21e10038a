//! Paths below the work root, opened without following symlinks, and the
//! ownership walks that hand a directory tree to a build uid and take it back.
//! Blocking. Both the in-process sandbox and the privileged helper go through
//! here, so a path from a request is checked the same way in both.
//!
//! A walk changes only what belongs to the side it takes from, one `openat`
//! (`O_NOFOLLOW`) or `*at(AT_SYMLINK_NOFOLLOW)` call at a time relative to an
//! open directory, while no process of the build uid is alive: a symlink or a
//! hard link planted by a build never makes root change a file elsewhere.

use super::error::Error;
use rustix::fs::{
    chmodat, chownat, fchown, fstat, openat, statat, AtFlags, Dir, FileType, Mode, OFlags, Stat,
};
use rustix::process::{Gid, Uid};
use std::ffi::{CStr, OsStr};
use std::os::fd::OwnedFd;
use std::path::{Component, Path};

/// Deeper trees are refused (each level holds a file descriptor).
const MAX_DEPTH: usize = 256;

const DIR_FLAGS: OFlags = OFlags::DIRECTORY
    .union(OFlags::RDONLY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// Which way a tree changes hands.
#[derive(Clone, Copy, Debug)]
pub enum Direction {
    /// Server → build uid: only what the server owns; hard-linked files stay
    /// the server's (their other name may be any file the server owns).
    HandOver,
    /// Build uid → server: everything the build uid owns.
    TakeBack,
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(rustix::io::Errno) -> Error + 'a {
    move |errno| Error::Io {
        op,
        path: path.to_path_buf(),
        source: errno.into(),
    }
}

/// The components of `path` below `root`: `path` must be absolute, start
/// with `root` and continue with plain names only (no `.`, `..`).
pub(super) fn below<'a>(root: &Path, path: &'a Path) -> Result<Vec<&'a OsStr>, Error> {
    let refused = |why: &str| Error::Invalid(format!("{}: {why}", path.display()));
    let rest = path
        .strip_prefix(root)
        .map_err(|_| refused("not under the work root"))?;
    rest.components()
        .map(|component| match component {
            Component::Normal(name) => Ok(name),
            _ => Err(refused("only plain names may follow the work root")),
        })
        .collect()
}

/// Opens `path`, which is `root` or a directory below it, following no
/// symlink below `root` (`root` itself is trusted configuration).
pub fn open_dir(root: &Path, path: &Path) -> Result<OwnedFd, Error> {
    let names = below(root, path)?;
    let mut dir =
        rustix::fs::open(root, DIR_FLAGS, Mode::empty()).map_err(io_err("opening", root))?;
    for name in names {
        dir = openat(&dir, name, DIR_FLAGS, Mode::empty()).map_err(io_err("opening", path))?;
    }
    Ok(dir)
}

/// Changes the owner of the tree at `path` (strictly below `root`) from
/// `from` to `to` (uid, gid), clearing set-id bits on the files it changes.
pub fn transfer(
    root: &Path,
    path: &Path,
    direction: Direction,
    from: u32,
    to: (u32, u32),
) -> Result<(), Error> {
    if below(root, path)?.is_empty() {
        return Err(Error::Invalid(format!(
            "{}: the work root itself cannot change hands",
            path.display()
        )));
    }
    let dir = open_dir(root, path)?;
    let walk = Walk {
        path,
        direction,
        from,
        to: (Uid::from_raw(to.0), Gid::from_raw(to.1)),
    };
    let stat = fstat(&dir).map_err(io_err("stat", path))?;
    if stat.st_uid == from {
        fchown(&dir, Some(walk.to.0), Some(walk.to.1)).map_err(io_err("chown", path))?;
    }
    walk.children(&dir, 0)
}

struct Walk<'a> {
    /// The tree's top, for error messages.
    path: &'a Path,
    direction: Direction,
    from: u32,
    to: (Uid, Gid),
}

impl Walk<'_> {
    fn children(&self, dir: &OwnedFd, depth: usize) -> Result<(), Error> {
        if depth > MAX_DEPTH {
            return Err(Error::Invalid(format!(
                "{}: deeper than {MAX_DEPTH} levels",
                self.path.display()
            )));
        }
        let mut names = Vec::new();
        for entry in Dir::read_from(dir).map_err(io_err("listing", self.path))? {
            let entry = entry.map_err(io_err("listing", self.path))?;
            let name = entry.file_name();
            if name != c"." && name != c".." {
                names.push(name.to_owned());
            }
        }
        for name in names {
            self.entry(dir, &name, depth)?;
        }
        Ok(())
    }

    fn entry(&self, dir: &OwnedFd, name: &CStr, depth: usize) -> Result<(), Error> {
        let err = io_err("changing owner under", self.path);
        let stat = match statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => stat,
            // Gone meanwhile: nothing to change.
            Err(rustix::io::Errno::NOENT) => return Ok(()),
            Err(errno) => return Err(err(errno)),
        };
        let kind = FileType::from_raw_mode(stat.st_mode);
        if kind == FileType::Directory {
            let sub = openat(dir, name, DIR_FLAGS, Mode::empty()).map_err(err)?;
            // Re-checked on the open directory: what we change is what we walk.
            let stat = fstat(&sub).map_err(io_err("stat", self.path))?;
            if stat.st_uid == self.from {
                fchown(&sub, Some(self.to.0), Some(self.to.1))
                    .map_err(io_err("chown", self.path))?;
            }
            return self.children(&sub, depth + 1);
        }
        if !self.changes(&stat, kind) {
            return Ok(());
        }
        chownat(
            dir,
            name,
            Some(self.to.0),
            Some(self.to.1),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(io_err("chown", self.path))?;
        let set_id = Mode::SUID.bits() | Mode::SGID.bits();
        if kind == FileType::RegularFile && stat.st_mode & set_id != 0 {
            // No process of the build uid is alive, so the name still is
            // this regular file (chmodat would follow a symlink).
            let mode = Mode::from_raw_mode(stat.st_mode & 0o1777);
            chmodat(dir, name, mode, AtFlags::empty()).map_err(io_err("chmod", self.path))?;
        }
        Ok(())
    }

    /// Whether a non-directory entry changes hands.
    fn changes(&self, stat: &Stat, kind: FileType) -> bool {
        if stat.st_uid != self.from {
            return false;
        }
        match self.direction {
            Direction::TakeBack => true,
            Direction::HandOver => {
                matches!(kind, FileType::RegularFile | FileType::Symlink) && stat.st_nlink == 1
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_must_stay_below_the_root_by_plain_names() {
        let root = Path::new("/srv/w");
        assert_eq!(
            below(root, Path::new("/srv/w/job/install")).unwrap(),
            [OsStr::new("job"), OsStr::new("install")]
        );
        assert!(below(root, Path::new("/srv/w")).unwrap().is_empty());
        for bad in [
            "/srv/w/job/../../etc",
            "/srv/wx/job",
            "/srv",
            "srv/w/job",
            "/etc/passwd",
        ] {
            assert!(below(root, Path::new(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn open_dir_refuses_symlinks_below_the_root() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("job/real")).unwrap();
        std::os::unix::fs::symlink("real", root.join("job/link")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("etc")).unwrap();
        assert!(open_dir(&root, &root.join("job/real")).is_ok());
        assert!(open_dir(&root, &root.join("job/link")).is_err());
        assert!(open_dir(&root, &root.join("etc")).is_err());
        assert!(open_dir(&root, &root.join("job/missing")).is_err());
    }

    #[test]
    fn the_root_itself_never_changes_hands() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        let me = rustix::process::getuid().as_raw();
        let err = transfer(&root, &root, Direction::HandOver, me, (me, me)).unwrap_err();
        assert!(matches!(err, Error::Invalid(_)), "{err}");
    }
}
