//! Deny lists: the releases never shown and never served, read from files
//! or directories of OSV JSON records (the format of the malicious-package
//! advisories: `affected[].package.{ecosystem,name}`, `versions`, `ranges`)
//! and of plain lines (`ECOSYSTEM NAME [VERSION|RANGE]`, `#` comments).
//! Reading is blocking (the reloader runs it off the runtime); a line or
//! record that cannot be read is reported and skipped, never fatal.

use super::version::{Event, VersionSet};
use super::Ecosystem;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// One deny entry: the versions it covers and where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Which versions.
    pub versions: VersionSet,
    /// The advisory id (`MAL-2025-1234`) or `FILE:LINE`, for the record.
    pub source: String,
}

/// Every deny entry, by ecosystem and normalised name.
#[derive(Clone, Debug, Default)]
pub struct DenyList {
    entries: HashMap<(Ecosystem, String), Vec<Entry>>,
}

/// Something in a deny list that was skipped.
#[derive(Debug)]
pub struct Skipped {
    /// `FILE` or `FILE:LINE`.
    pub at: String,
    /// Why.
    pub reason: String,
}

impl DenyList {
    /// The entry that denies `version` of `name` (as the ecosystem spells
    /// it; normalised here), if any.
    pub fn denies(&self, ecosystem: Ecosystem, name: &str, version: &str) -> Option<&Entry> {
        self.entries
            .get(&(ecosystem, ecosystem.normalize(name)))?
            .iter()
            .find(|e| e.versions.contains(ecosystem, version))
    }

    /// Whether anything is listed for `ecosystem`.
    pub fn covers(&self, ecosystem: Ecosystem) -> bool {
        self.entries.keys().any(|(e, _)| *e == ecosystem)
    }

    /// Number of (ecosystem, name) pairs listed.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is listed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn add(&mut self, ecosystem: Ecosystem, name: &str, entry: Entry) {
        self.entries
            .entry((ecosystem, ecosystem.normalize(name)))
            .or_default()
            .push(entry);
    }

    /// Reads every path (a file, or a directory walked for files). Errors
    /// reading a path itself (missing, unreadable) are returned: the caller
    /// keeps its previous list; bad lines and records are only reported.
    pub fn read(paths: &[PathBuf]) -> Result<(DenyList, Vec<Skipped>), std::io::Error> {
        let mut list = DenyList::default();
        let mut skipped = Vec::new();
        for path in paths {
            for file in files_under(path)? {
                let text = match std::fs::read(&file) {
                    Ok(bytes) => bytes,
                    Err(err) => {
                        skipped.push(Skipped {
                            at: file.display().to_string(),
                            reason: err.to_string(),
                        });
                        continue;
                    }
                };
                let is_json = file.extension().is_some_and(|e| e == "json")
                    || text.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
                    || text.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
                if is_json {
                    list.add_osv(&file, &text, &mut skipped);
                } else {
                    list.add_plain(&file, &String::from_utf8_lossy(&text), &mut skipped);
                }
            }
        }
        Ok((list, skipped))
    }

    /// Plain lines: `ECOSYSTEM NAME [VERSION|RANGE]`.
    pub fn add_plain(&mut self, file: &Path, text: &str, skipped: &mut Vec<Skipped>) {
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let at = format!("{}:{}", file.display(), n + 1);
            let mut words = line.split_whitespace();
            let (Some(eco), Some(name)) = (words.next(), words.next()) else {
                skipped.push(Skipped {
                    at,
                    reason: "expected ECOSYSTEM NAME [VERSION|RANGE]".into(),
                });
                continue;
            };
            let Some(ecosystem) = Ecosystem::parse(eco) else {
                skipped.push(Skipped {
                    at,
                    reason: format!("unknown ecosystem {eco:?}"),
                });
                continue;
            };
            let rest: Vec<&str> = words.collect();
            let Some(versions) = VersionSet::parse_plain(&rest.join(" ")) else {
                skipped.push(Skipped {
                    at,
                    reason: "the version range cannot be read".into(),
                });
                continue;
            };
            self.add(
                ecosystem,
                name,
                Entry {
                    versions,
                    source: at,
                },
            );
        }
    }

    /// One OSV record, or an array of them.
    pub fn add_osv(&mut self, file: &Path, text: &[u8], skipped: &mut Vec<Skipped>) {
        let records: Vec<Record> = match serde_json::from_slice::<OneOrMany>(text) {
            Ok(OneOrMany::One(r)) => vec![*r],
            Ok(OneOrMany::Many(rs)) => rs,
            Err(err) => {
                skipped.push(Skipped {
                    at: file.display().to_string(),
                    reason: format!("not an OSV record: {err}"),
                });
                return;
            }
        };
        for record in records {
            if record.withdrawn.is_some() {
                continue;
            }
            let source = record
                .id
                .clone()
                .unwrap_or_else(|| file.display().to_string());
            for affected in record.affected {
                let Some(package) = affected.package else {
                    continue;
                };
                // OSV qualifies some ecosystems (`Debian:12`); ours have none.
                let eco = package.ecosystem.split(':').next().unwrap_or("");
                let Some(ecosystem) = Ecosystem::parse(eco) else {
                    continue; // another ecosystem's advisory: not ours to apply
                };
                let ranges: Vec<Vec<Event>> = affected
                    .ranges
                    .iter()
                    .filter(|r| matches!(r.kind.as_str(), "SEMVER" | "ECOSYSTEM"))
                    .map(|r| r.events.iter().filter_map(RawEvent::event).collect())
                    .collect();
                let versions = if affected.versions.is_empty() && ranges.is_empty() {
                    // OSV: an entry without versions or ranges affects every version.
                    VersionSet::Any
                } else {
                    VersionSet::Osv {
                        versions: affected.versions,
                        ranges,
                    }
                };
                self.add(
                    ecosystem,
                    &package.name,
                    Entry {
                        versions,
                        source: source.clone(),
                    },
                );
            }
        }
    }
}

/// The files at `path`: itself, or every regular file below it (sorted,
/// hidden names skipped, symlinks to files followed).
pub fn files_under(path: &Path) -> Result<Vec<PathBuf>, std::io::Error> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out = Vec::new();
    let mut dirs = vec![path.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let p = entry.path();
            let kind = entry.file_type()?;
            if kind.is_dir() {
                dirs.push(p);
            } else if kind.is_file() || (kind.is_symlink() && p.is_file()) {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(Box<Record>),
    Many(Vec<Record>),
}

#[derive(Deserialize)]
struct Record {
    id: Option<String>,
    withdrawn: Option<serde_json::Value>,
    #[serde(default)]
    affected: Vec<Affected>,
}

#[derive(Deserialize)]
struct Affected {
    package: Option<Package>,
    #[serde(default)]
    versions: Vec<String>,
    #[serde(default)]
    ranges: Vec<Range>,
}

#[derive(Deserialize)]
struct Package {
    ecosystem: String,
    name: String,
}

#[derive(Deserialize)]
struct Range {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    events: Vec<RawEvent>,
}

#[derive(Deserialize)]
struct RawEvent {
    introduced: Option<String>,
    fixed: Option<String>,
    last_affected: Option<String>,
    limit: Option<String>,
}

impl RawEvent {
    fn event(&self) -> Option<Event> {
        if let Some(v) = &self.introduced {
            return Some(Event::Introduced(v.clone()));
        }
        if let Some(v) = &self.fixed {
            return Some(Event::Fixed(v.clone()));
        }
        if let Some(v) = &self.last_affected {
            return Some(Event::LastAffected(v.clone()));
        }
        self.limit.clone().map(Event::Limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAL: &str = r#"{
      "schema_version": "1.5.0", "id": "MAL-2025-0001", "summary": "Malicious code in evil-pkg (npm)",
      "affected": [
        {"package": {"ecosystem": "npm", "name": "evil-pkg"},
         "ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}]}]},
        {"package": {"ecosystem": "PyPI", "name": "Evil_Pkg"}, "versions": ["1.0.1", "1.0.2"]},
        {"package": {"ecosystem": "Maven", "name": "org.evil:pkg"}, "versions": ["1"]}
      ]}"#;

    #[test]
    fn osv_records_deny_by_ecosystem_and_normalised_name() {
        let mut list = DenyList::default();
        let mut skipped = Vec::new();
        list.add_osv(Path::new("m.json"), MAL.as_bytes(), &mut skipped);
        assert!(skipped.is_empty());
        let hit = list.denies(Ecosystem::Npm, "evil-pkg", "9.9.9").unwrap();
        assert_eq!(hit.source, "MAL-2025-0001");
        assert!(list.denies(Ecosystem::Pypi, "evil.pkg", "1.0.2").is_some());
        assert!(list.denies(Ecosystem::Pypi, "evil-pkg", "1.0.3").is_none());
        assert!(
            list.denies(Ecosystem::Npm, "Evil-Pkg", "1.0.0").is_none(),
            "npm names are exact"
        );
        assert!(!list.covers(Ecosystem::Go));
        // Withdrawn records and garbage deny nothing.
        let withdrawn = MAL.replace("\"id\"", "\"withdrawn\": \"2025-01-01T00:00:00Z\", \"id\"");
        let mut other = DenyList::default();
        other.add_osv(Path::new("w.json"), withdrawn.as_bytes(), &mut skipped);
        other.add_osv(Path::new("bad.json"), b"{nope", &mut skipped);
        assert!(other.is_empty());
        assert_eq!(skipped.len(), 1);
    }

    #[test]
    fn plain_lines() {
        let text = "# known bad\n\
                    pypi six 1.17.0\n\
                    npm @evil/scope >=2.0.0, <3.0.0\n\
                    crates.io Evil_Crate\n\
                    rubygems crtiny *   # every version\n\
                    cobol thing 1\n\
                    go\n";
        let mut list = DenyList::default();
        let mut skipped = Vec::new();
        list.add_plain(Path::new("deny.txt"), text, &mut skipped);
        assert_eq!(skipped.len(), 2, "{skipped:?}");
        assert_eq!(skipped[0].at, "deny.txt:6");
        assert_eq!(
            list.denies(Ecosystem::Pypi, "Six", "1.17.0")
                .unwrap()
                .source,
            "deny.txt:2"
        );
        assert!(list.denies(Ecosystem::Pypi, "six", "1.16.0").is_none());
        assert!(list
            .denies(Ecosystem::Npm, "@evil/scope", "2.5.0")
            .is_some());
        assert!(list
            .denies(Ecosystem::Npm, "@evil/scope", "3.0.0")
            .is_none());
        assert!(list
            .denies(Ecosystem::Crates, "evil-crate", "0.1.0")
            .is_some());
        assert!(list
            .denies(Ecosystem::Rubygems, "crtiny", "0.1.0")
            .is_some());
    }

    #[test]
    fn directories_are_walked() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("osv/malicious/npm/evil-pkg");
        std::fs::create_dir_all(&nested).unwrap();
        std::fs::write(nested.join("MAL-2025-0001.json"), MAL).unwrap();
        std::fs::write(dir.path().join("local.txt"), "go example.com/bad v1.0.0\n").unwrap();
        std::fs::write(dir.path().join(".hidden"), "pypi six *\n").unwrap();
        let (list, skipped) = DenyList::read(&[dir.path().to_path_buf()]).unwrap();
        assert!(skipped.is_empty());
        assert!(list
            .denies(Ecosystem::Go, "example.com/bad", "v1.0.0")
            .is_some());
        assert!(list.denies(Ecosystem::Npm, "evil-pkg", "1.0.0").is_some());
        assert!(list.denies(Ecosystem::Pypi, "six", "1.0").is_none());
        assert!(DenyList::read(&[dir.path().join("missing")]).is_err());
    }
}
