//! The built archives: `artifacts/` (0711: anyone may open a file whose exact
//! name they know, nobody may list it) holding `NAME@RUNTIME.tgz` files
//! (0644), and `meta/` (0700) holding what each was built from (sha256, the
//! runtime's ABI, the source's hashes). An archive is committed by rename
//! after its record, so a reader never sees a partial file and a file without
//! a matching record does not count. Blocking; callers go off the runtime.

use crate::store::durable::{self, TempFile};
use serde::{Deserialize, Serialize};
use std::fs::{self, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// What an artifact was built from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactMeta {
    /// The file name.
    pub name: String,
    /// sha256 of the archive, hex.
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
    /// The runtime's ABI when it was built; another ABI means a rebuild.
    pub abi: String,
    /// For a local source: sha256 of the source, which must match before the
    /// artifact is reused for a request naming the same SHA1.
    #[serde(default)]
    pub source_sha256: Option<String>,
    /// Seconds since the epoch.
    pub built: u64,
    /// The job that built it.
    pub job: String,
}

/// The artifact directories.
#[derive(Clone, Debug)]
pub struct Artifacts {
    dir: PathBuf,
    meta: PathBuf,
    /// Where records are staged before their rename (the cache's `tmp/`).
    tmp: PathBuf,
}

fn dir_with_mode(path: &Path, mode: u32) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)?;
    // An existing directory keeps its mode unless we set it: the modes are the
    // whole "read but not list" mechanism.
    fs::set_permissions(path, Permissions::from_mode(mode))
}

impl Artifacts {
    /// Opens (creating) `root/artifacts` (0711) and `root/meta` (0700);
    /// records are staged in `tmp` (same filesystem). Blocking.
    pub fn open(root: &Path, tmp: &Path) -> io::Result<Artifacts> {
        let dir = root.join("artifacts");
        let meta = root.join("meta");
        dir_with_mode(&dir, 0o711)?;
        dir_with_mode(&meta, 0o700)?;
        Ok(Artifacts {
            dir,
            meta,
            tmp: tmp.to_path_buf(),
        })
    }

    /// The public directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the artifact `name` is (whether or not it exists).
    /// `name` must come from `Spec::artifact_name` or pass `valid_name`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The record of `name`, if the artifact and its record are both there
    /// and agree on the size. Blocking.
    pub fn lookup(&self, name: &str) -> Option<ArtifactMeta> {
        if !valid_name(name) {
            return None;
        }
        let bytes = fs::read(self.meta.join(format!("{name}.json"))).ok()?;
        let meta: ArtifactMeta = serde_json::from_slice(&bytes).ok()?;
        let on_disk = fs::symlink_metadata(self.path(name)).ok()?;
        (on_disk.is_file() && on_disk.len() == meta.size && meta.name == name).then_some(meta)
    }

    /// Moves the finished archive `tmp` (on the same filesystem) into place
    /// as `meta.name`, replacing an older build. Blocking.
    pub fn commit(&self, tmp: &Path, meta: &ArtifactMeta) -> io::Result<PathBuf> {
        if !valid_name(&meta.name) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("not an artifact name: {:?}", meta.name),
            ));
        }
        let archive = TempFile::adopt(tmp.to_path_buf())?;
        archive.set_mode(0o644)?;
        // The record first: an archive whose record is missing or names
        // another size is not served, so a crash between the two renames
        // never leaves a wrong record for a present file.
        let record = self.meta.join(format!("{}.json", meta.name));
        let bytes = serde_json::to_vec_pretty(meta).map_err(io::Error::other)?;
        durable::write_file(&self.tmp, &record, &bytes, 0o600)?;
        let dest = self.path(&meta.name);
        archive.commit(&dest)?;
        Ok(dest)
    }
}

/// The runtime an artifact file name names (`thin-1.2.11@ruby31.tgz` → `ruby31`).
pub fn runtime_of(name: &str) -> Option<&str> {
    valid_name(name).then_some(())?;
    name.strip_suffix(".tgz")?
        .rsplit_once('@')
        .map(|(_, runtime)| runtime)
}

/// An artifact file name: `STEM@RUNTIME.tgz` of allowed characters, no
/// leading dot, no slash.
pub fn valid_name(name: &str) -> bool {
    let Some(stem) = name.strip_suffix(".tgz") else {
        return false;
    };
    let Some((package, runtime)) = stem.rsplit_once('@') else {
        return false;
    };
    super::spec::valid_field(package) && super::spec::valid_field(runtime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(valid_name("thin-1.2.11@ruby31.tgz"));
        assert!(valid_name(
            "0123456789abcdef0123456789abcdef01234567@py311.tgz"
        ));
        assert_eq!(runtime_of("thin-1.2.11@ruby31.tgz"), Some("ruby31"));
        assert_eq!(runtime_of("../a@r.tgz"), None);
        for bad in [
            "thin.tgz",
            "@r.tgz",
            "a@.tgz",
            "../a@r.tgz",
            ".a@r.tgz",
            "a/b@r.tgz",
            "a@r.tar",
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn commit_publishes_archive_and_record_together() {
        let root = tempfile::tempdir().unwrap();
        let artifacts = Artifacts::open(root.path(), root.path()).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(artifacts.dir()), 0o711);
        assert_eq!(mode(&root.path().join("meta")), 0o700);
        let tmp = root.path().join("x.tmp");
        fs::write(&tmp, b"archive").unwrap();
        let meta = ArtifactMeta {
            name: "a-1@r.tgz".into(),
            sha256: "00".into(),
            size: 7,
            abi: "abi".into(),
            source_sha256: None,
            built: 1,
            job: "j".into(),
        };
        assert_eq!(artifacts.lookup("a-1@r.tgz"), None);
        let dest = artifacts.commit(&tmp, &meta).unwrap();
        assert_eq!(mode(&dest), 0o644);
        assert_eq!(artifacts.lookup("a-1@r.tgz"), Some(meta.clone()));
        // A file whose record disagrees does not count.
        fs::write(&dest, b"other length").unwrap();
        assert_eq!(artifacts.lookup("a-1@r.tgz"), None);
    }
}
