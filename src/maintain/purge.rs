//! `package-cache purge PATTERN`: removes the entries (body, then metadata)
//! and index documents whose request path matches a glob, and lists them.
//!
//! The path matched is the one a client asks for: `/distfiles/…` for the
//! mirrors, `/<mount>/…` for a mount, `host/…` for a named host. `*` stays
//! within one segment, `**` spans segments. Directories left empty are for
//! `gc`.

use super::{progress, remove_file, shown, Error, Verdict};
use crate::store::maintenance::{self, Scan};
use crate::store::Layout;
use globset::{GlobBuilder, GlobMatcher};
use indicatif::HumanBytes;
use std::io::Write;

pub(super) fn run(
    layout: &Layout,
    pattern: &str,
    dry_run: bool,
    out: &mut dyn Write,
) -> Result<Verdict, Error> {
    let glob = matcher(pattern)?;
    let verb = if dry_run { "would remove" } else { "removed" };
    let bar = progress(None);
    bar.set_message("purging");
    let (mut entries, mut bytes, mut docs, mut failed) = (0u64, 0u64, 0u64, 0u64);
    let root = layout.root();
    for item in Scan::new(layout).without_meta().entries()? {
        bar.inc(1);
        let Ok(entry) = item else { continue };
        let path = entry.key.to_string();
        if !glob.is_match(&path) {
            continue;
        }
        if !dry_run {
            if let Err(err) = maintenance::remove_entry(layout, &entry) {
                failed += 1;
                bar.suspend(|| writeln!(out, "FAILED {path}: {err}"))?;
                continue;
            }
        }
        entries += 1;
        bytes += entry.size;
        bar.suspend(|| writeln!(out, "{verb} {path} ({})", HumanBytes(entry.size)))?;
    }
    for file in maintenance::doc_files(layout) {
        bar.inc(1);
        let Ok(file) = file else { continue };
        let Some(meta) = &file.parsed else { continue };
        let Some(path) = doc_request_path(&meta.key) else {
            continue;
        };
        if !glob.is_match(&path) {
            continue;
        }
        if !dry_run {
            if let Err(err) = remove_file(&file.path) {
                failed += 1;
                bar.suspend(|| writeln!(out, "FAILED document {path}: {err}"))?;
                continue;
            }
        }
        docs += 1;
        bytes += file.size;
        bar.suspend(|| writeln!(out, "{verb} document {path} ({})", shown(root, &file.path)))?;
    }
    bar.finish_and_clear();
    writeln!(
        out,
        "purge: {verb} {entries} entries and {docs} documents matching {pattern:?}, {}{}",
        HumanBytes(bytes),
        if failed > 0 {
            format!("; {failed} could not be removed")
        } else {
            String::new()
        }
    )?;
    Ok(if failed > 0 {
        Verdict::Failed
    } else {
        Verdict::Clean
    })
}

pub(super) fn matcher(pattern: &str) -> Result<GlobMatcher, Error> {
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map(|glob| glob.compile_matcher())
        .map_err(|e| Error::Pattern {
            pattern: pattern.to_string(),
            reason: e.kind().to_string(),
        })
}

/// The request path of a mount's document: its key is
/// `<mount>\n<path within the mount>\n<representation>`.
fn doc_request_path(key: &str) -> Option<String> {
    let mut parts = key.split('\n');
    let mount = parts.next()?;
    let path = parts.next()?;
    Some(format!("/{mount}{path}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stars_stay_in_one_segment() {
        let glob = matcher("/distfiles/foo-*").unwrap();
        assert!(glob.is_match("/distfiles/foo-1.0.tgz"));
        assert!(!glob.is_match("/distfiles/foo-x/y.tgz"));
        let glob = matcher("/pypi/**").unwrap();
        assert!(glob.is_match("/pypi/files/h/a.whl"));
        assert!(!glob.is_match("/pypix/a"));
        assert!(matcher("/a/[").is_err());
    }

    #[test]
    fn document_keys_give_their_request_paths() {
        assert_eq!(
            doc_request_path("pypi\n/simple/foo/\njson").as_deref(),
            Some("/pypi/simple/foo/")
        );
        assert_eq!(doc_request_path("junk"), None);
    }
}
