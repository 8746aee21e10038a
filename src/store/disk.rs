//! Blocking filesystem steps of the store: durable directory creation, fsync of
//! directories, metadata files. Callers run these inside `spawn_blocking`.

use super::meta::EntryMeta;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// Mode of directories that local users may traverse but not list (VCAP's layout).
pub const DIR_MODE: u32 = 0o711;
/// Mode of committed files: readable by local clients that know the name.
pub const FILE_MODE: u32 = 0o644;
/// Largest metadata file read back (guards against a corrupted store).
const MAX_META_LEN: u64 = 1 << 20;

/// fsync a directory so that entries created or renamed in it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates every missing directory of `rel` beneath `root` (mode 0711), syncing
/// each parent after a creation. Fails with `NotADirectory` when a component
/// exists as something else: that is the `a` versus `a/b` conflict.
pub fn create_dirs_durably(root: &Path, rel: &Path) -> io::Result<()> {
    let mut current = root.to_path_buf();
    for component in rel.components() {
        let Component::Normal(name) = component else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "unexpected path component",
            ));
        };
        let parent = current.clone();
        current.push(name);
        match DirBuilder::new().mode(DIR_MODE).create(&current) {
            Ok(()) => {
                fs::set_permissions(&current, fs::Permissions::from_mode(DIR_MODE))?;
                sync_dir(&parent)?;
            }
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                if !fs::symlink_metadata(&current)?.is_dir() {
                    return Err(io::Error::new(
                        io::ErrorKind::NotADirectory,
                        "a file is in the way",
                    ));
                }
            }
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

/// Writes `meta` durably to `path` through a temporary file in `tmp_dir`.
pub fn write_meta(meta: &EntryMeta, path: &Path, tmp_dir: &Path, tmp_name: &str) -> io::Result<()> {
    let json = serde_json::to_vec(meta).map_err(io::Error::other)?;
    let tmp = tmp_dir.join(tmp_name);
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(&json)?;
        file.sync_all()?;
        let parent = path.parent().expect("metadata paths have a parent");
        if !parent.exists() {
            DirBuilder::new().mode(0o700).create(parent).or_else(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    Ok(())
                } else {
                    Err(e)
                }
            })?;
            sync_dir(
                parent
                    .parent()
                    .expect("metadata fan-out directories have a parent"),
            )?;
        }
        fs::rename(&tmp, path)?;
        sync_dir(parent)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Reads a metadata file; `None` when it is missing or unreadable as metadata.
pub fn read_meta(path: &Path) -> Option<EntryMeta> {
    let file = File::open(path).ok()?;
    let mut buf = Vec::new();
    file.take(MAX_META_LEN).read_to_end(&mut buf).ok()?;
    serde_json::from_slice(&buf).ok()
}

/// Removes everything inside `dir` (leftovers of a crashed run), keeping `dir`.
pub fn clear_dir(dir: &Path) -> io::Result<usize> {
    let mut removed = 0;
    for entry in fs::read_dir(dir)? {
        let path: PathBuf = entry?.path();
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
pub(crate) fn check_writable_dir(dir: &Path) -> io::Result<()> {
    use rustix::fs::Access;
    rustix::fs::access(dir, Access::WRITE_OK | Access::EXEC_OK)?;
    if !fs::metadata(dir)?.is_dir() {
        return Err(io::Error::from(io::ErrorKind::NotADirectory));
    }
    Ok(())
}
