//! `package-cache verify`: re-hashes every entry against what was recorded
//! when it was stored (length, sha256, block sums), names every damaged one
//! (flipped bytes, truncated, extended, replaced) and moves it (body, then
//! metadata) into the quarantine directory. In a directory not yet adopted
//! (see `store::adopt`), bodies without metadata are plain files of
//! package-cache 0.2 and are counted as unverifiable; once it is adopted,
//! a body without metadata is damage (replaced, or its metadata lost).
//!
//! On a live server the rename is the whole intervention: readers that have
//! the body open keep reading it (Unix unlink semantics), the next lookup
//! misses and refetches.

use super::{progress, shown, Error, Verdict};
use crate::store::maintenance::{self, hash_file, open_scanned, MetaStatus, Scan, ScanEntry};
use crate::store::{Damage, EntryMeta, Layout};
use indicatif::HumanBytes;
use rustix::fs::{Mode, OFlags};
use std::io::{self, Write};
use std::os::fd::OwnedFd;

#[derive(Default)]
struct Tally {
    verified: u64,
    bytes: u64,
    damaged: u64,
    unverifiable: u64,
    changed: u64,
    unreadable: u64,
}

pub(super) fn run(layout: &Layout, out: &mut dyn Write) -> Result<Verdict, Error> {
    let root = layout.root();
    let adopted = maintenance::is_adopted(layout);
    let mut tally = Tally::default();
    // List first (cheap), so that the bar can show bytes against a total.
    let mut todo: Vec<(ScanEntry, EntryMeta)> = Vec::new();
    let mut damaged: Vec<(ScanEntry, Damage)> = Vec::new();
    let listing = progress(None);
    listing.set_message("listing entries");
    for item in Scan::new(layout).entries()? {
        listing.inc(1);
        let Ok(entry) = item else { continue };
        match &entry.meta {
            MetaStatus::Bound(meta) if meta.size != entry.size => {
                let damage = Damage::Size {
                    recorded: meta.size,
                    found: entry.size,
                };
                damaged.push((entry, damage));
            }
            MetaStatus::Bound(meta) if !meta.sha256.is_empty() => {
                let meta = meta.clone();
                todo.push((entry, meta));
            }
            MetaStatus::Absent | MetaStatus::Unbound if adopted => {
                damaged.push((entry, Damage::Unbound));
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
    for (entry, meta) in todo {
        match check_body(&root_fd, &entry, &meta, |n| bar.inc(n)) {
            Ok(Some(None)) => {
                tally.verified += 1;
                tally.bytes += entry.size;
            }
            Ok(Some(Some(damage))) => damaged.push((entry, damage)),
            Ok(None) => tally.changed += 1,
            Err(err) => {
                tally.unreadable += 1;
                bar.suspend(|| writeln!(out, "UNREADABLE {}: {err}", entry.key))?;
            }
        }
    }
    bar.finish_and_clear();
    for (entry, damage) in &damaged {
        tally.damaged += 1;
        // MISMATCH: the bytes changed in place; DAMAGED: the file did.
        let word = match damage {
            Damage::Digest { .. } | Damage::Block { .. } => "MISMATCH",
            Damage::Size { .. } | Damage::Unbound => "DAMAGED",
        };
        let line = match maintenance::quarantine_entry(layout, entry) {
            Ok(Some(to)) => format!(
                "{word} {}: {damage}; quarantined as {}",
                entry.key,
                shown(root, &to)
            ),
            Ok(None) => format!(
                "{word} {}: {damage}; replaced meanwhile, left alone",
                entry.key
            ),
            Err(err) => format!(
                "{word} {}: {damage}; could not quarantine: {err}",
                entry.key
            ),
        };
        writeln!(out, "{line}")?;
    }
    writeln!(
        out,
        "verify: {} entries verified ({}), {} mismatched or damaged, {} unverifiable (no metadata), \
         {} changed during the run, {} unreadable",
        tally.verified,
        HumanBytes(tally.bytes),
        tally.damaged,
        tally.unverifiable,
        tally.changed,
        tally.unreadable
    )?;
    Ok(if tally.damaged + tally.unreadable > 0 {
        Verdict::Failed
    } else {
        Verdict::Clean
    })
}

/// Hashes `entry`'s body and holds it against `meta`: `Some(None)` when it
/// matches, `Some(Some(damage))` when it does not, `None` when the file is
/// gone or is not the body that was listed (removed or replaced since).
fn check_body(
    root_fd: &OwnedFd,
    entry: &ScanEntry,
    meta: &EntryMeta,
    mut progress: impl FnMut(u64),
) -> io::Result<Option<Option<Damage>>> {
    let Some(file) = open_scanned(root_fd, entry)? else {
        return Ok(None);
    };
    let hashed = hash_file(file, |n| {
        progress(n);
        true
    })?;
    if hashed.len != meta.size {
        return Ok(Some(Some(Damage::Size {
            recorded: meta.size,
            found: hashed.len,
        })));
    }
    if hashed.sha256 != meta.sha256 {
        return Ok(Some(Some(Damage::Digest {
            recorded: meta.sha256.clone(),
            found: hashed.sha256,
        })));
    }
    // The body is the one recorded; sums that disagree would make every
    // read of it fail, so they are damage too.
    if let Some(sums) = &meta.blocks {
        if let Some(index) = (0..hashed.blocks.sums.len())
            .find(|&i| sums.sums.get(i) != hashed.blocks.sums.get(i))
            .or_else(|| (sums.sums.len() != hashed.blocks.sums.len()).then_some(0))
        {
            return Ok(Some(Some(Damage::Block {
                index,
                start: index as u64 * sums.size,
            })));
        }
    }
    Ok(Some(None))
}
