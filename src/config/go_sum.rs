//! `GoSumFile`: the `h1:` hashes of one `--go-sum NAME=FILE` go.sum (or
//! several concatenated), held in memory for a go mount, read at start and
//! again on SIGHUP. A read that fails keeps the hashes in use.
//!
//! It owns the hashes and nothing else: checking a download against them is
//! the proxy's business (`proxy::indexed`).

use crate::digest::Digest;
use crate::mount::go;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// Largest go.sum file read: it bounds the hashes held (about 100 bytes a
/// line, so some 600,000 lines), far past the go.sum of any real module.
pub const MAX_GO_SUM: u64 = 64 * 1024 * 1024;

/// Why a go.sum file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_GO_SUM`].
    #[error("{path} is larger than {MAX_GO_SUM} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// The file is not UTF-8 text, or has lines but no usable one.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// What one read of the file found, for the log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Loaded {
    /// `h1:` lines held.
    pub hashes: usize,
    /// Malformed lines skipped.
    pub malformed: usize,
}

/// The hashes one go.sum file gives a go mount's module zips and go.mods,
/// keyed by the escaped path on the module proxy (`/M/@v/V.zip`). Clones
/// share the hashes, so a reload is seen by every holder; two are equal only
/// when they are the same one. Reads take a short lock and never block on a
/// reload's file I/O (the new set is built first, then swapped in).
#[derive(Clone)]
pub struct GoSumFile(Arc<Inner>);

struct Inner {
    mount: String,
    file: PathBuf,
    held: RwLock<Arc<Held>>,
}

/// One read's hashes and counts, swapped in whole.
struct Held {
    hashes: Hashes,
    loaded: Loaded,
}

/// Every hash a file lists for a path: one, or more when its lines disagree.
type Hashes = HashMap<String, Vec<Digest>>;

impl GoSumFile {
    /// Reads `file` for the mount `mount`. Blocking.
    pub fn load(mount: &str, file: &Path) -> Result<GoSumFile, Error> {
        let held = read(file)?;
        Ok(GoSumFile(Arc::new(Inner {
            mount: mount.to_string(),
            file: file.to_path_buf(),
            held: RwLock::new(Arc::new(held)),
        })))
    }

    /// What the read in use found (for the start-up log line).
    pub fn loaded(&self) -> Loaded {
        self.held().loaded
    }

    fn held(&self) -> Arc<Held> {
        self.0
            .held
            .read()
            .expect("go.sum lock is never poisoned")
            .clone()
    }

    /// The mount it belongs to.
    pub fn mount(&self) -> &str {
        &self.0.mount
    }

    /// The file it is read from.
    pub fn file(&self) -> &Path {
        &self.0.file
    }

    /// The hashes the file lists for `path` (`/M/@v/V.zip` or `.mod`,
    /// escaped): [`Digest::GoH1`] for a zip, [`Digest::GoModH1`] for a go.mod;
    /// more than one when its lines disagree.
    pub fn hashes(&self, path: &str) -> Vec<Digest> {
        self.held().hashes.get(path).cloned().unwrap_or_default()
    }

    /// Reads the file again; on failure the hashes in use stay. Blocking.
    pub fn reload(&self) -> Result<Loaded, Error> {
        let fresh = read(&self.0.file)?;
        let loaded = fresh.loaded;
        *self.0.held.write().expect("go.sum lock is never poisoned") = Arc::new(fresh);
        Ok(loaded)
    }
}

impl PartialEq for GoSumFile {
    fn eq(&self, other: &GoSumFile) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for GoSumFile {}

impl fmt::Debug for GoSumFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GoSumFile")
            .field("mount", &self.0.mount)
            .field("file", &self.0.file)
            .finish_non_exhaustive()
    }
}

impl super::Config {
    /// Every `--go-sum` file, once each: what SIGHUP reloads.
    pub fn go_sum_files(&self) -> Vec<GoSumFile> {
        self.mounts
            .iter()
            .flat_map(|m| m.go_sums.iter().cloned())
            .collect()
    }
}

fn read(path: &Path) -> Result<Held, Error> {
    let invalid = |reason: String| Error::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    let io = |source| Error::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    if file.metadata().map_err(io)?.len() > MAX_GO_SUM {
        return Err(Error::TooLarge {
            path: path.to_path_buf(),
        });
    }
    let mut raw = Vec::new();
    // Read one byte past the limit: a file that grew since the stat is refused too.
    std::io::Read::read_to_end(&mut std::io::Read::take(file, MAX_GO_SUM + 1), &mut raw)
        .map_err(io)?;
    if raw.len() as u64 > MAX_GO_SUM {
        return Err(Error::TooLarge {
            path: path.to_path_buf(),
        });
    }
    let text = String::from_utf8(raw).map_err(|_| invalid("not UTF-8 text".into()))?;
    let read = go::read_go_sum(&text);
    if read.lines.is_empty() && read.malformed > 0 {
        return Err(invalid(format!(
            "no go.sum line in it ({} malformed)",
            read.malformed
        )));
    }
    let loaded = Loaded {
        hashes: read.lines.len(),
        malformed: read.malformed,
    };
    let mut hashes = Hashes::new();
    for line in read.lines {
        let Some(path) = line.artifact_path() else {
            continue;
        };
        let known = hashes.entry(path).or_default();
        if !known.contains(&line.hash) {
            known.push(line.hash);
        }
    }
    Ok(Held { hashes, loaded })
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD as BASE64;
    use base64::Engine;

    #[test]
    fn a_go_sum_is_read_and_reloaded_and_a_bad_one_keeps_the_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("go.sum");
        let (a, b) = (BASE64.encode([1u8; 32]), BASE64.encode([2u8; 32]));
        std::fs::write(
            &file,
            format!(
                "example.test/Shout v0.1.0 h1:{a}\nexample.test/Shout v0.1.0/go.mod h1:{b}\nnonsense\n"
            ),
        )
        .unwrap();
        let sums = GoSumFile::load("go", &file).unwrap();
        assert_eq!(
            sums.loaded(),
            Loaded {
                hashes: 2,
                malformed: 1
            }
        );
        let zip = "/example.test/!shout/@v/v0.1.0.zip";
        assert_eq!(sums.hashes(zip), vec![Digest::GoH1([1; 32])]);
        assert_eq!(
            sums.hashes("/example.test/!shout/@v/v0.1.0.mod"),
            vec![Digest::GoModH1([2; 32])]
        );
        assert!(sums.hashes("/example.test/other/@v/v1.0.0.zip").is_empty());

        // Two files concatenated that disagree: both hashes are kept.
        std::fs::write(
            &file,
            format!("example.test/Shout v0.1.0 h1:{b}\nexample.test/Shout v0.1.0 h1:{a}\n"),
        )
        .unwrap();
        sums.reload().unwrap();
        assert_eq!(sums.hashes(zip).len(), 2);

        for bad in [&b"nonsense\n"[..], b"\xff\xfe"] {
            std::fs::write(&file, bad).unwrap();
            assert!(matches!(sums.reload(), Err(Error::Invalid { .. })));
            assert_eq!(
                sums.hashes(zip).len(),
                2,
                "a failed reload keeps the hashes"
            );
        }
        std::fs::write(&file, "").unwrap();
        assert_eq!(
            sums.reload().unwrap(),
            Loaded {
                hashes: 0,
                malformed: 0
            },
            "an empty go.sum (a module without dependencies) is one"
        );
        std::fs::remove_file(&file).unwrap();
        assert!(matches!(sums.reload(), Err(Error::Read { .. })));
        assert!(GoSumFile::load("go", &file).is_err());
    }
}
