//! `package-cache gc`: removes what belongs to no entry — metadata files no
//! body is bound to, damaged metadata and document files, empty directories
//! under the namespaces — and, only when no server holds the lock, leftover
//! temporary files. It never touches a body, so 0.2 plain files stay.
//!
//! A running server writes an entry's metadata, then renames the body into a
//! directory it has just created: metadata and directories younger than
//! [`GRACE`] may be such a commit and are kept.

use super::{progress, remove_file, settled, shown, Error, Verdict};
use crate::store::maintenance::{self, LockProbe, Scan};
use crate::store::{self, Layout};
use indicatif::{HumanBytes, ProgressBar};
use std::collections::HashSet;
use std::fs;
use std::io::{self, Write};
use std::path::Path;
use std::time::{Duration, SystemTime};

/// Unbound metadata and empty directories younger than this are kept.
pub const GRACE: Duration = Duration::from_secs(600);

#[derive(Default)]
struct Tally {
    metadata: u64,
    documents: u64,
    directories: u64,
    temporary: u64,
    bytes: u64,
    recent: u64,
    failed: u64,
}

struct Gc<'a> {
    layout: &'a Layout,
    dry_run: bool,
    out: &'a mut dyn Write,
    bar: ProgressBar,
    tally: Tally,
}

pub(super) fn run(layout: &Layout, dry_run: bool, out: &mut dyn Write) -> Result<Verdict, Error> {
    let bar = progress(None);
    let mut gc = Gc {
        layout,
        dry_run,
        out,
        bar,
        tally: Tally::default(),
    };
    let server = gc.temporary_files()?;
    gc.metadata()?;
    gc.documents()?;
    gc.bar.set_message("removing empty directories");
    gc.prune_namespaces()?;
    gc.bar.finish_and_clear();
    let t = &gc.tally;
    let verb = if dry_run { "would remove" } else { "removed" };
    writeln!(
        gc.out,
        "gc: {verb} {} metadata files, {} documents, {} empty directories, {} temporary files; \
         {} freed{}{}{}",
        t.metadata,
        t.documents,
        t.directories,
        t.temporary,
        HumanBytes(t.bytes),
        match server {
            Some(pid) => format!(
                "; temporary files kept: a server is running ({})",
                store::describe_holder(pid)
            ),
            None => String::new(),
        },
        if t.recent > 0 {
            format!("; {} kept as too recent", t.recent)
        } else {
            String::new()
        },
        if t.failed > 0 {
            format!("; {} could not be removed", t.failed)
        } else {
            String::new()
        },
    )?;
    Ok(Verdict::Clean)
}

impl Gc<'_> {
    /// Removes one file (unless dry-run) and reports it.
    fn remove(&mut self, what: &str, path: &Path, size: u64) -> io::Result<bool> {
        let shown = shown(self.layout.root(), path);
        if !self.dry_run {
            if let Err(err) = remove_file(path) {
                self.tally.failed += 1;
                let out = &mut *self.out;
                self.bar
                    .suspend(|| writeln!(out, "FAILED {what} {shown}: {err}"))?;
                return Ok(false);
            }
        }
        self.tally.bytes += size;
        let verb = if self.dry_run {
            "would remove"
        } else {
            "removed"
        };
        let out = &mut *self.out;
        self.bar
            .suspend(|| writeln!(out, "{verb} {what} {shown}"))?;
        Ok(true)
    }

    /// Leftover fills, only when no server holds the lock (a server's own
    /// are in use). Returns the lock holder's PID (if known) when a server
    /// is running.
    fn temporary_files(&mut self) -> Result<Option<Option<u32>>, Error> {
        let guard = match maintenance::probe_lock(self.layout) {
            Ok(LockProbe::Acquired(guard)) => guard,
            Ok(LockProbe::Held { pid }) => return Ok(Some(pid)),
            // No state directory: nothing was ever served from here.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(Error::Io {
                    op: "lock",
                    path: self.layout.lock_file(),
                    source,
                })
            }
        };
        self.bar.set_message("removing temporary files");
        for file in maintenance::tmp_files(self.layout).into_iter().flatten() {
            if self.remove("temporary file", &file.path, file.size)? {
                self.tally.temporary += 1;
            }
        }
        // Released now: a server may start while the rest runs.
        drop(guard);
        Ok(None)
    }

    /// Metadata that no body is bound to, and metadata that cannot be parsed.
    fn metadata(&mut self) -> Result<(), Error> {
        self.bar.set_message("scanning entries");
        let mut bound = HashSet::new();
        for entry in Scan::new(self.layout).entries()?.flatten() {
            self.bar.inc(1);
            if let Some(meta) = entry.meta.bound() {
                bound.insert(self.layout.meta_file_named(&meta.key));
            }
        }
        self.bar.set_message("checking metadata");
        for file in maintenance::meta_files(self.layout).into_iter().flatten() {
            self.bar.inc(1);
            let what = match &file.parsed {
                // Written whole through a rename: damage is never a write in progress.
                None => "damaged metadata",
                Some(_) if bound.contains(&file.path) => continue,
                Some(_) if !settled(file.mtime, GRACE) => {
                    self.tally.recent += 1;
                    continue;
                }
                Some(_) => "metadata without body",
            };
            if self.remove(what, &file.path, file.size)? {
                self.tally.metadata += 1;
            }
        }
        Ok(())
    }

    /// Document files that cannot be read as documents (replaced whole
    /// through a rename, so never a write in progress).
    fn documents(&mut self) -> Result<(), Error> {
        self.bar.set_message("checking documents");
        for file in maintenance::doc_files(self.layout).into_iter().flatten() {
            self.bar.inc(1);
            if file.parsed.is_none() && self.remove("damaged document", &file.path, file.size)? {
                self.tally.documents += 1;
            }
        }
        Ok(())
    }

    /// Empty directories in every namespace tree, keeping the tops
    /// (the root, each host's and each mount's directory).
    fn prune_namespaces(&mut self) -> Result<(), Error> {
        for dir in maintenance::namespace_trees(self.layout) {
            self.prune(&dir, 0)?;
        }
        Ok(())
    }

    /// Removes `dir` if, after pruning its subdirectories, it is empty and
    /// settled. Returns whether it is gone (or would be, in a dry run).
    fn prune(&mut self, dir: &Path, depth: usize) -> io::Result<bool> {
        // Only real directories: a symlink is never followed or removed.
        let Ok(md) = fs::symlink_metadata(dir) else {
            return Ok(false);
        };
        if !md.is_dir() || depth > store::MAX_DEPTH {
            return Ok(false);
        }
        let mut left = 0;
        let Ok(entries) = fs::read_dir(dir) else {
            return Ok(false);
        };
        for entry in entries {
            let Ok(entry) = entry else {
                left += 1;
                continue;
            };
            if !(entry.file_type().is_ok_and(|t| t.is_dir())
                && self.prune(&entry.path(), depth + 1)?)
            {
                left += 1;
            }
        }
        if left > 0 {
            return Ok(false);
        }
        // The mtime from before its children went: their removal does not
        // make it recent.
        if !settled(md.modified().unwrap_or(SystemTime::now()), GRACE) {
            self.tally.recent += 1;
            return Ok(false);
        }
        let shown = shown(self.layout.root(), dir);
        if !self.dry_run {
            // rmdir fails on a directory a server has just put a file in: safe.
            if fs::remove_dir(dir).is_err() {
                return Ok(false);
            }
        }
        self.tally.directories += 1;
        let verb = if self.dry_run {
            "would remove"
        } else {
            "removed"
        };
        let out = &mut *self.out;
        self.bar
            .suspend(|| writeln!(out, "{verb} empty directory {shown}"))?;
        Ok(true)
    }
}
