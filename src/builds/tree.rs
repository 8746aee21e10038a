//! The build root's directories on disk: made (with their modes) before the
//! sandbox starts and at start-up, emptied of what a crash left, one tree per
//! job attempt, and the tail of a job's log. Blocking; callers go off the runtime.

use std::fs::{self, Permissions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

/// Bytes of the build log kept in a finished job's record.
const TAIL: u64 = 4096;

/// Creates the directories the sandbox needs before it starts — the cache
/// root, `.package-cache`, the build root and `work/`, each traversable
/// (0711) so build uids can reach their job — owned by `owner` when the
/// server is about to drop root to it. Blocking.
pub fn prepare_work_root(
    cache_dir: &Path,
    build_root: &Path,
    owner: Option<(u32, u32)>,
) -> io::Result<()> {
    let state = build_root.parent().unwrap_or(build_root).to_path_buf();
    for dir in [
        cache_dir.to_path_buf(),
        state,
        build_root.to_path_buf(),
        build_root.join("work"),
    ] {
        let created = match fs::DirBuilder::new().mode(0o711).create(&dir) {
            Ok(()) => true,
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => false,
            Err(err) => return Err(err),
        };
        let meta = fs::symlink_metadata(&dir)?;
        if !meta.is_dir() {
            return Err(io::Error::other(format!(
                "{} is not a directory",
                dir.display()
            )));
        }
        if created || meta.permissions().mode() & 0o111 != 0o111 {
            let mode = if dir == cache_dir {
                meta.permissions().mode() | 0o711
            } else {
                0o711
            };
            fs::set_permissions(&dir, Permissions::from_mode(mode & 0o7777))?;
        }
        if let Some((uid, gid)) = owner {
            nix::unistd::chown(
                &dir,
                Some(nix::unistd::Uid::from_raw(uid)),
                Some(nix::unistd::Gid::from_raw(gid)),
            )
            .map_err(io::Error::from)?;
        }
    }
    Ok(())
}

/// Creates the build root's directories with their modes and empties the
/// scratch ones (a crash leaves half-built trees there). Blocking.
pub(crate) fn make_dirs(root: &Path) -> io::Result<()> {
    for (dir, mode) in [
        (root.to_path_buf(), 0o711),
        (root.join("work"), 0o711),
        (root.join("logs"), 0o700),
        (root.join("tmp"), 0o700),
    ] {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(&dir)?;
        fs::set_permissions(&dir, Permissions::from_mode(mode))?;
    }
    for scratch in [root.join("work"), root.join("tmp")] {
        for entry in fs::read_dir(&scratch)? {
            let path = entry?.path();
            let removed = if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            if let Err(err) = removed {
                tracing::warn!(path = %path.display(), error = %err, "cannot remove a leftover build file");
            }
        }
    }
    Ok(())
}

/// The last `TAIL` bytes of a log, from a line start. Blocking.
pub(crate) fn tail(path: &Path) -> String {
    let Ok(mut file) = fs::File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(TAIL);
    let mut bytes = Vec::new();
    if file.seek(SeekFrom::Start(start)).is_err() || file.read_to_end(&mut bytes).is_err() {
        return String::new();
    }
    if start > 0 {
        if let Some(newline) = bytes.iter().position(|&b| b == b'\n') {
            bytes.drain(..=newline);
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A fresh job tree: `source/` for the server, the rest to hand over; an
/// empty log. Blocking.
pub(crate) fn job_tree(root: &Path, log: &Path) -> io::Result<()> {
    if root.exists() {
        fs::remove_dir_all(root)?;
    }
    fs::DirBuilder::new().mode(0o711).create(root)?;
    fs::DirBuilder::new()
        .mode(0o755)
        .create(root.join("source"))?;
    for dir in ["reqs", "unpacked", "install", "home", "tmp"] {
        fs::DirBuilder::new().mode(0o700).create(root.join(dir))?;
    }
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(log)?;
    Ok(())
}
