//! The one way a file reaches its place durably, for the store and the build
//! queue alike: a [`TempFile`] in a temporary directory on the same
//! filesystem (the cache's `tmp/`, which a starting server empties), written,
//! fsynced, renamed over its destination, and the destination's directory
//! fsynced. A crash leaves the old file or the new one, never a torn file and
//! never a stray temporary file beside the destination. sccache's disk cache
//! works the same way.
//!
//! Blocking: callers run these inside `spawn_blocking`.

use rustix::fs::{Mode, OFlags};
use std::ffi::OsStr;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

/// A file being written under a temporary name. [`TempFile::commit`] makes it
/// the destination; dropped without a commit, it is unlinked (descriptors
/// already open on it, as a fill's readers hold, keep reading).
#[derive(Debug)]
pub struct TempFile {
    file: Arc<File>,
    path: PathBuf,
    done: bool,
}

impl TempFile {
    /// Creates a new, empty file with `mode` in `dir` under a name no other
    /// writer uses (process id and 64 random bits).
    pub fn create(dir: &Path, mode: u32) -> io::Result<TempFile> {
        TempFile::create_with(dir, mode, OFlags::empty())
    }

    /// As [`TempFile::create`], opened for reading too and with extra open
    /// flags (a fill's file is read back by its readers; `O_NOATIME`).
    pub fn create_with(dir: &Path, mode: u32, flags: OFlags) -> io::Result<TempFile> {
        let mut tries = 0;
        loop {
            let name = format!("{}-{:016x}.tmp", std::process::id(), random_u64()?);
            let path = dir.join(name);
            let opened = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(mode)
                .custom_flags(flags.bits() as i32)
                .open(&path);
            match opened {
                Ok(file) => {
                    return Ok(TempFile {
                        file: Arc::new(file),
                        path,
                        done: false,
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && tries < 8 => tries += 1,
                Err(e) => return Err(e),
            }
        }
    }

    /// Takes over a finished file that another writer (a tar archiver)
    /// created at `path`, in a temporary directory, to commit it.
    pub fn adopt(path: PathBuf) -> io::Result<TempFile> {
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) => {
                let _ = fs::remove_file(&path);
                return Err(e);
            }
        };
        Ok(TempFile {
            file: Arc::new(file),
            path,
            done: false,
        })
    }

    /// The open file (shared: a fill's readers read it while it grows).
    pub fn file(&self) -> &Arc<File> {
        &self.file
    }

    /// Where it is now.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `bytes`.
    pub fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        (&*self.file).write_all(bytes)
    }

    /// Sets the file's mode exactly (whatever the umask).
    pub fn set_mode(&self, mode: u32) -> io::Result<()> {
        self.file.set_permissions(fs::Permissions::from_mode(mode))
    }

    /// fsyncs the file, renames it to `dest` (replacing what is there) and
    /// fsyncs `dest`'s directory, which must exist. On failure the temporary
    /// file is removed.
    pub fn commit(self, dest: &Path) -> io::Result<()> {
        let (Some(parent), Some(name)) = (dest.parent(), dest.file_name()) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a destination needs a directory and a name",
            ));
        };
        let dir = open_dir(parent)?;
        self.commit_at(&dir, name)
    }

    /// As [`TempFile::commit`], into the directory open as `dir` under `name`
    /// (a single component): the caller resolved the directory safely.
    pub fn commit_at(mut self, dir: &OwnedFd, name: &OsStr) -> io::Result<()> {
        self.file.sync_all()?;
        rustix::fs::renameat(rustix::fs::CWD, &self.path, dir, name)?;
        self.done = true;
        rustix::fs::fsync(dir)?;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Replaces `dest` with `bytes` (mode `mode`) through a temporary file in `tmp_dir`.
pub fn write_file(tmp_dir: &Path, dest: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let mut file = TempFile::create(tmp_dir, mode)?;
    file.write_all(bytes)?;
    file.set_mode(mode)?;
    file.commit(dest)
}

/// Opens `dir` as a directory (for `*at` calls and fsync).
pub fn open_dir(dir: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// fsyncs a directory so that entries created, renamed or removed in it are durable.
pub fn sync_dir(dir: impl AsFd) -> io::Result<()> {
    Ok(rustix::fs::fsync(dir)?)
}

/// Creates `dir` (mode `mode`, exactly) unless it exists, and fsyncs its
/// parent when it was created. Fails with `NotADirectory` when something
/// else is in the way.
pub fn create_dir(dir: &Path, mode: u32) -> io::Result<()> {
    match DirBuilder::new().mode(mode).create(dir) {
        Ok(()) => {
            fs::set_permissions(dir, fs::Permissions::from_mode(mode))?;
            if let Some(parent) = dir.parent() {
                sync_dir(open_dir(parent)?)?;
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            if fs::symlink_metadata(dir)?.is_dir() {
                Ok(())
            } else {
                Err(io::Error::new(
                    io::ErrorKind::NotADirectory,
                    "a file is in the way",
                ))
            }
        }
        Err(e) => Err(e),
    }
}

/// Creates every missing directory of `rel` beneath `root` (mode `mode`),
/// durably. Fails with `NotADirectory` when a component exists as something
/// else (a file, or a symlink, which is never followed): that is the `a`
/// versus `a/b` conflict.
pub fn create_dirs(root: &Path, rel: &Path, mode: u32) -> io::Result<()> {
    let mut current = root.to_path_buf();
    for component in rel.components() {
        let Component::Normal(name) = component else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "unexpected path component",
            ));
        };
        current.push(name);
        create_dir(&current, mode)?;
    }
    Ok(())
}

/// Removes everything inside `dir` (what a crashed run left), keeping `dir`.
/// Returns how many names were removed.
pub fn clear_dir(dir: &Path) -> io::Result<usize> {
    let mut removed = 0;
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if fs::symlink_metadata(&path)?.is_dir() {
            fs::remove_dir_all(&path)?;
        } else {
            fs::remove_file(&path)?;
        }
        removed += 1;
    }
    Ok(removed)
}

/// Fails unless `dir` is a directory this process may create files in.
/// `access(2)` asks with the real IDs, which are the effective ones here
/// (`--user` changes both).
pub fn check_writable_dir(dir: &Path) -> io::Result<()> {
    use rustix::fs::Access;
    rustix::fs::access(dir, Access::WRITE_OK | Access::EXEC_OK)?;
    if !fs::metadata(dir)?.is_dir() {
        return Err(io::Error::from(io::ErrorKind::NotADirectory));
    }
    Ok(())
}

fn random_u64() -> io::Result<u64> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|e| io::Error::other(format!("getrandom: {e}")))?;
    Ok(u64::from_ne_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_committed_file_replaces_its_destination_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join("tmp");
        fs::create_dir(&tmp).unwrap();
        let dest = dir.path().join("record.json");
        fs::write(&dest, b"old").unwrap();
        write_file(&tmp, &dest, b"new", 0o600).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"new");
        assert_eq!(fs::metadata(&dest).unwrap().mode() & 0o777, 0o600);
        assert!(names(&tmp).is_empty());
    }

    #[test]
    fn a_temporary_file_dropped_uncommitted_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = TempFile::create(dir.path(), 0o600).unwrap();
        file.write_all(b"partial").unwrap();
        assert_eq!(names(dir.path()).len(), 1);
        let reader = file.file().clone();
        drop(file);
        assert!(names(dir.path()).is_empty());
        // An open descriptor still reads what was written.
        let mut buf = [0u8; 7];
        std::os::unix::fs::FileExt::read_exact_at(&*reader, &mut buf, 0).unwrap();
        assert_eq!(&buf, b"partial");
    }

    #[test]
    fn a_commit_into_a_missing_directory_fails_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let err = write_file(dir.path(), &dir.path().join("no/such/file"), b"x", 0o600)
            .expect_err("no directory");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(names(dir.path()).is_empty());
    }

    #[test]
    fn directories_are_created_with_their_mode_and_a_file_in_the_way_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        create_dirs(dir.path(), Path::new("a/b"), 0o711).unwrap();
        let mode = fs::metadata(dir.path().join("a/b")).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o711);
        fs::write(dir.path().join("a/f"), b"").unwrap();
        let err = create_dirs(dir.path(), Path::new("a/f/c"), 0o711).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotADirectory);
        std::os::unix::fs::symlink(dir.path(), dir.path().join("link")).unwrap();
        let err = create_dirs(dir.path(), Path::new("link/x"), 0o711).unwrap_err();
        assert_eq!(
            err.kind(),
            io::ErrorKind::NotADirectory,
            "never through a symlink"
        );
        assert_eq!(clear_dir(dir.path()).unwrap(), 2);
        assert!(names(dir.path()).is_empty());
    }
}
