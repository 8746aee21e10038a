//! The commit of a complete, verified fill: fsync the body, write its
//! metadata (bound to the body's inode), rename the body into place, fsync
//! its directory, and record it in the index.

use super::disk::{self, FILE_MODE};
use super::meta::{unix_now, EntryMeta};
use super::{CacheKey, Error, FillHead, Inner};
use std::fs::{self, File};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;

pub(super) fn store_blocking(
    inner: &Inner,
    key: &CacheKey,
    file: &File,
    tmp_path: &PathBuf,
    len: u64,
    sha256: String,
    head: &FillHead,
) -> Result<(), Error> {
    let io = |op: &'static str, path: &PathBuf| {
        let path = path.clone();
        move |source| Error::Io { op, path, source }
    };
    file.set_permissions(fs::Permissions::from_mode(FILE_MODE))
        .map_err(io("chmod", tmp_path))?;
    file.sync_all().map_err(io("fsync", tmp_path))?;
    let inode = file.metadata().map_err(io("stat", tmp_path))?.ino();
    let rel = key.relative_path();
    let final_path = inner.root.join(&rel);
    let parent_rel = rel.parent().map(PathBuf::from).unwrap_or_default();
    disk::create_dirs_durably(&inner.root, &parent_rel)
        .map_err(io("create directories", &final_path))?;
    if fs::symlink_metadata(&final_path)
        .map(|m| m.is_dir())
        .unwrap_or(false)
    {
        return Err(Error::Io {
            op: "rename",
            path: final_path,
            source: std::io::Error::new(
                std::io::ErrorKind::IsADirectory,
                "a directory is in the way",
            ),
        });
    }
    let meta = EntryMeta {
        key: key.canonical(),
        size: len,
        sha256,
        headers: head.headers.clone(),
        fetched_at: unix_now(),
        source: head.source.clone(),
        inode,
    };
    let meta_path = inner.meta_path(key);
    disk::write_meta(&meta, &meta_path, &inner.tmp_dir, &inner.tmp_name("meta"))
        .map_err(io("write metadata", &meta_path))?;
    fs::rename(tmp_path, &final_path).map_err(io("rename", &final_path))?;
    inner.hot.remove(key);
    inner.index().record(key, len);
    disk::sync_dir(final_path.parent().expect("entries have a parent"))
        .map_err(io("fsync directory", &final_path))?;
    Ok(())
}
