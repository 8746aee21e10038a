//! `package-cache stats`: entries and bytes per namespace, index documents,
//! entries without metadata, temporary files, metadata with no body. Reads
//! only.

use super::{progress, Error, Verdict};
use crate::store::maintenance::{self, MetaStatus, Scan};
use crate::store::{Layout, Namespace};
use indicatif::HumanBytes;
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::io::Write;

/// A number of files and their bytes.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Count {
    /// Files.
    pub files: u64,
    /// Their total length.
    pub bytes: u64,
}

impl Count {
    fn add(&mut self, bytes: u64) {
        self.files += 1;
        self.bytes += bytes;
    }
}

/// The figures of one namespace.
#[derive(Clone, Debug, Default, Serialize)]
pub struct NamespaceStats {
    /// `mirrors`, `host` or `mount`.
    pub kind: &'static str,
    /// The host or mount name (empty for the mirrors).
    pub name: String,
    /// Every committed body.
    pub entries: Count,
    /// Bodies served as plain files: no metadata (package-cache 0.2), or
    /// metadata that describes another body.
    pub without_metadata: Count,
}

/// Everything `stats` reports.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Stats {
    /// Per namespace: the mirrors first, then hosts, then mounts, by name.
    pub namespaces: Vec<NamespaceStats>,
    /// All namespaces together.
    pub entries: Count,
    /// All namespaces together.
    pub without_metadata: Count,
    /// Index documents (readable ones).
    pub documents: Count,
    /// Document files that cannot be read as documents.
    pub damaged_documents: Count,
    /// Metadata files that no body is bound to.
    pub metadata_without_body: Count,
    /// Metadata files that cannot be parsed.
    pub damaged_metadata: Count,
    /// Files in `.package-cache/tmp/` (fills in progress, or crash leftovers).
    pub temporary: Count,
    /// Files moved aside by `verify`.
    pub quarantined: Count,
    /// Files and directories skipped: not entries, symlinks, unreadable.
    pub skipped: u64,
}

pub(super) fn run(layout: &Layout, json: bool, out: &mut dyn Write) -> Result<Verdict, Error> {
    let stats = collect(layout)?;
    if json {
        serde_json::to_writer_pretty(&mut *out, &stats).map_err(std::io::Error::other)?;
        writeln!(out)?;
    } else {
        print(&stats, out)?;
    }
    Ok(Verdict::Clean)
}

/// Walks the cache laid out as `layout` and counts.
pub fn collect(layout: &Layout) -> Result<Stats, Error> {
    let bar = progress(None);
    bar.set_message("scanning entries");
    let mut stats = Stats::default();
    let mut by_ns: BTreeMap<(u8, String), NamespaceStats> = BTreeMap::new();
    by_ns.insert((0, String::new()), ns_stats(&Namespace::Mirrors));
    let mut bound = HashSet::new();
    for item in Scan::new(layout).entries()? {
        bar.inc(1);
        let entry = match item {
            Ok(entry) => entry,
            Err(_) => {
                stats.skipped += 1;
                continue;
            }
        };
        let ns = entry.key.namespace();
        let slot = by_ns.entry(ns_order(ns)).or_insert_with(|| ns_stats(ns));
        slot.entries.add(entry.size);
        stats.entries.add(entry.size);
        match &entry.meta {
            MetaStatus::Bound(meta) => {
                bound.insert(layout.meta_file_named(&meta.key));
            }
            _ => {
                slot.without_metadata.add(entry.size);
                stats.without_metadata.add(entry.size);
            }
        }
    }
    bar.set_message("reading metadata and documents");
    for file in maintenance::meta_files(layout) {
        bar.inc(1);
        match file {
            Ok(file) if file.parsed.is_none() => stats.damaged_metadata.add(file.size),
            Ok(file) if !bound.contains(&file.path) => stats.metadata_without_body.add(file.size),
            Ok(_) => {}
            Err(_) => stats.skipped += 1,
        }
    }
    for file in maintenance::doc_files(layout) {
        bar.inc(1);
        match file {
            Ok(file) if file.parsed.is_some() => stats.documents.add(file.size),
            Ok(file) => stats.damaged_documents.add(file.size),
            Err(_) => stats.skipped += 1,
        }
    }
    for file in maintenance::tmp_files(layout).into_iter().flatten() {
        stats.temporary.add(file.size);
    }
    for file in maintenance::quarantine_files(layout).into_iter().flatten() {
        stats.quarantined.add(file.size);
    }
    bar.finish_and_clear();
    stats.namespaces = by_ns.into_values().collect();
    Ok(stats)
}

fn ns_order(ns: &Namespace) -> (u8, String) {
    match ns {
        Namespace::Mirrors => (0, String::new()),
        Namespace::Host(name) => (1, name.clone()),
        Namespace::Mount(name) => (2, name.clone()),
    }
}

fn ns_stats(ns: &Namespace) -> NamespaceStats {
    let (kind, name) = match ns {
        Namespace::Mirrors => ("mirrors", String::new()),
        Namespace::Host(name) => ("host", name.clone()),
        Namespace::Mount(name) => ("mount", name.clone()),
    };
    NamespaceStats {
        kind,
        name,
        ..NamespaceStats::default()
    }
}

fn print(stats: &Stats, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<40} {:>10} {:>12} {:>12}",
        "namespace", "entries", "bytes", "no metadata"
    )?;
    let rows = stats.namespaces.iter().map(|ns| {
        let label = match ns.kind {
            "mirrors" => "mirrors".to_string(),
            kind => format!("{kind} {}", ns.name),
        };
        (label, ns.entries, ns.without_metadata)
    });
    for (label, entries, plain) in
        rows.chain([("total".to_string(), stats.entries, stats.without_metadata)])
    {
        writeln!(
            out,
            "{label:<40} {:>10} {:>12} {:>12}",
            entries.files,
            HumanBytes(entries.bytes).to_string(),
            plain.files
        )?;
    }
    let line = |out: &mut dyn Write, what: &str, c: Count| {
        writeln!(out, "{what}: {} ({})", c.files, HumanBytes(c.bytes))
    };
    line(out, "index documents", stats.documents)?;
    line(out, "damaged documents", stats.damaged_documents)?;
    line(out, "metadata without body", stats.metadata_without_body)?;
    line(out, "damaged metadata", stats.damaged_metadata)?;
    line(out, "temporary files", stats.temporary)?;
    line(out, "quarantined files", stats.quarantined)?;
    writeln!(
        out,
        "skipped (not entries or unreadable): {}",
        stats.skipped
    )?;
    writeln!(
        out,
        "stats: {} entries, {} in {} namespaces; {} without metadata (unverifiable)",
        stats.entries.files,
        HumanBytes(stats.entries.bytes),
        stats.namespaces.len(),
        stats.without_metadata.files
    )
}
