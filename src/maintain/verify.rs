//! `package-cache verify`: re-hashes every entry that has a recorded sha256
//! and moves each mismatch (body, then metadata) into the quarantine
//! directory. Entries without metadata cannot be checked and are counted as
//! unverifiable, never as failed.
//!
//! On a live server the rename is the whole intervention: readers that have
//! the body open keep reading it (Unix unlink semantics), the next lookup
//! misses and refetches. The body goes first, so that the server never pairs
//! a bad body with missing metadata and serves it as a plain 0.2 file.

use super::{progress, shown, Error, Verdict};
use crate::store::maintenance::{Scan, ScanEntry};
use crate::store::{EntryMeta, Layout};
use indicatif::HumanBytes;
use rustix::fs::{Mode, OFlags, ResolveFlags};
use sha2::{Digest, Sha256};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Longest quarantine file name kept whole (NAME_MAX is 255; room for suffixes).
const MAX_NAME: usize = 200;

#[derive(Default)]
struct Tally {
    verified: u64,
    bytes: u64,
    mismatched: u64,
    unverifiable: u64,
    changed: u64,
    unreadable: u64,
}

pub(super) fn run(layout: &Layout, out: &mut dyn Write) -> Result<Verdict, Error> {
    let root = layout.root();
    let mut tally = Tally::default();
    // List first (cheap), so that the bar can show bytes against a total.
    let mut todo: Vec<(ScanEntry, EntryMeta)> = Vec::new();
    let listing = progress(None);
    listing.set_message("listing entries");
    for item in Scan::new(layout).entries()? {
        listing.inc(1);
        let Ok(entry) = item else { continue };
        match entry.meta.bound() {
            Some(meta) if !meta.sha256.is_empty() => {
                let meta = meta.clone();
                todo.push((entry, meta));
            }
            _ => tally.unverifiable += 1,
        }
    }
    listing.finish_and_clear();

    let root_fd = rustix::fs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::Io {
        op: "open",
        path: root.to_path_buf(),
        source: e.into(),
    })?;
    let bar = progress(Some(todo.iter().map(|(e, _)| e.size).sum()));
    bar.set_message("verifying");
    for (entry, meta) in &todo {
        let hashed = hash_body(&root_fd, entry, |n| bar.inc(n));
        let digest = match hashed {
            Ok(Some(digest)) => digest,
            Ok(None) => {
                tally.changed += 1;
                continue;
            }
            Err(err) => {
                tally.unreadable += 1;
                bar.suspend(|| writeln!(out, "UNREADABLE {}: {err}", entry.key))?;
                continue;
            }
        };
        if digest == meta.sha256 {
            tally.verified += 1;
            tally.bytes += entry.size;
            continue;
        }
        tally.mismatched += 1;
        let line = match quarantine(layout, entry, meta) {
            Ok(Some(to)) => format!(
                "MISMATCH {}: sha256 {digest}, recorded {}; quarantined as {}",
                entry.key,
                meta.sha256,
                shown(root, &to)
            ),
            Ok(None) => format!(
                "MISMATCH {}: sha256 {digest}, recorded {}; replaced meanwhile, left alone",
                entry.key, meta.sha256
            ),
            Err(err) => format!(
                "MISMATCH {}: sha256 {digest}, recorded {}; could not quarantine: {err}",
                entry.key, meta.sha256
            ),
        };
        bar.suspend(|| writeln!(out, "{line}"))?;
    }
    bar.finish_and_clear();
    writeln!(
        out,
        "verify: {} entries verified ({}), {} mismatched, {} unverifiable (no metadata), \
         {} changed during the run, {} unreadable",
        tally.verified,
        HumanBytes(tally.bytes),
        tally.mismatched,
        tally.unverifiable,
        tally.changed,
        tally.unreadable
    )?;
    Ok(if tally.mismatched + tally.unreadable > 0 {
        Verdict::Failed
    } else {
        Verdict::Clean
    })
}

/// The sha256 of `entry`'s body, or `None` when the file is gone or is not
/// the body that was listed (removed or replaced since).
fn hash_body(
    root_fd: &OwnedFd,
    entry: &ScanEntry,
    mut progress: impl FnMut(u64),
) -> io::Result<Option<String>> {
    let opened = rustix::fs::openat2(
        root_fd,
        &entry.rel,
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS,
    );
    let mut file = match opened {
        Ok(fd) => File::from(fd),
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if file.metadata()?.ino() != entry.inode {
        return Ok(None);
    }
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        progress(n as u64);
    }
    Ok(Some(hex::encode(hasher.finalize())))
}

/// Moves `entry`'s body and metadata into the quarantine directory; returns
/// where the body went, or `None` if the path no longer holds that body.
fn quarantine(layout: &Layout, entry: &ScanEntry, meta: &EntryMeta) -> io::Result<Option<PathBuf>> {
    let dir = layout.quarantine_dir();
    match fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let body = layout.root().join(&entry.rel);
    match fs::symlink_metadata(&body) {
        Ok(md) if md.ino() == entry.inode => {}
        Ok(_) => return Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    }
    let name = quarantine_name(&entry.rel);
    let target = (0..1000)
        .map(|n| match n {
            0 => dir.join(&name),
            n => dir.join(format!("{name}.{n}")),
        })
        .find(|p| fs::symlink_metadata(p).is_err())
        .ok_or_else(|| io::Error::new(io::ErrorKind::AlreadyExists, "quarantine is full"))?;
    fs::rename(&body, &target)?;
    let meta = layout.meta_file_named(&meta.key);
    let mut meta_target = target.clone().into_os_string();
    meta_target.push(".meta");
    match fs::rename(&meta, &meta_target) {
        Ok(()) => {}
        // A refetch has already replaced it, or gc took it: nothing to keep.
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    Ok(Some(target))
}

/// The body's relative path as one file name (`/` as `%2F`, `%` as `%25`),
/// shortened with a digest when too long.
fn quarantine_name(rel: &Path) -> String {
    let text = String::from_utf8_lossy(rel.as_os_str().as_bytes())
        .replace('%', "%25")
        .replace('/', "%2F");
    if text.len() <= MAX_NAME {
        return text;
    }
    let digest = hex::encode(Sha256::digest(rel.as_os_str().as_bytes()));
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
}
