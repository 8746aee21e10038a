//! The commit of a complete, verified fill: write its metadata (bound to the
//! body's inode, with the block sums taken as it was written), then move the body into place with `durable` (fsync,
//! rename, fsync of its directory), and record it in the index; the last
//! three under the key's guard, so a removal never splits them.

use super::blocks::BlockSums;
use super::durable::{self, TempFile};
use super::layout::{Layout, DIR_MODE, FILE_MODE, PRIVATE_DIR_MODE};
use super::meta::{unix_now, EntryMeta};
use super::{CacheKey, Error, FillHead, Inner};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

pub(super) fn store_blocking(
    inner: &Inner,
    key: &CacheKey,
    body: TempFile,
    len: u64,
    sha256: String,
    blocks: BlockSums,
    head: &FillHead,
) -> Result<(), Error> {
    let io = |op: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { op, path, source }
    };
    let tmp_path = body.path().to_path_buf();
    body.set_mode(FILE_MODE).map_err(io("chmod", &tmp_path))?;
    let inode = body.file().metadata().map_err(io("stat", &tmp_path))?.ino();
    let layout = &inner.layout;
    let rel = Layout::entry_rel(key);
    let final_path = layout.root().join(&rel);
    let parent_rel = rel.parent().map(PathBuf::from).unwrap_or_default();
    durable::create_dirs(layout.root(), &parent_rel, DIR_MODE)
        .map_err(io("create directories", &final_path))?;
    if std::fs::symlink_metadata(&final_path)
        .map(|m| m.is_dir())
        .unwrap_or(false)
    {
        return Err(Error::Io {
            op: "rename",
            path: final_path,
            source: io::Error::new(io::ErrorKind::IsADirectory, "a directory is in the way"),
        });
    }
    // Only called once the body matched `expected` (see `Fill::commit`);
    // what its sha256 decides needs no record.
    let verified = head
        .expected
        .iter()
        .filter(|d| d.decided_by_sha256(&sha256).is_none())
        .cloned()
        .collect();
    let meta = EntryMeta {
        key: key.canonical(),
        size: len,
        sha256,
        headers: head.headers.clone(),
        fetched_at: unix_now(),
        source: head.source.clone(),
        inode,
        blocks: Some(blocks),
        adopted: false,
        verified,
    };
    let meta_path = layout.meta_file(key);
    // From the metadata to the index, no removal of this key comes in
    // between: it could take the new metadata or the new body.
    let _guard = inner.guards.lock(key);
    write_meta(layout, &meta, &meta_path).map_err(io("write metadata", &meta_path))?;
    body.commit(&final_path)
        .map_err(io("rename", &final_path))?;
    inner.hot.remove(key);
    inner.index().record(key, len, inode);
    Ok(())
}

/// Writes `meta` durably to `path`, creating its fan-out directory.
pub(super) fn write_meta(layout: &Layout, meta: &EntryMeta, path: &Path) -> io::Result<()> {
    let json = serde_json::to_vec(meta).map_err(io::Error::other)?;
    durable::create_dir(
        path.parent().expect("metadata paths have a parent"),
        PRIVATE_DIR_MODE,
    )?;
    durable::write_file(&layout.tmp_dir(), path, &json, 0o600)
}
