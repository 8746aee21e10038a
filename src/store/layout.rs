//! `Layout`: every path under the cache root, in one place. Other code asks
//! it for a path instead of joining names of its own (the server, the
//! maintenance commands, the build queue and its command-line client alike).
//!
//! ```text
//! <root>/<path>                              bodies of the --source mirrors (the 0.2 layout)
//! <root>/.package-cache-hosts/<host>/<path>  bodies fetched for named hosts
//! <root>/.package-cache-mounts/<name>/<path> bodies of --mirror mounts
//! <root>/.package-cache/                     private state (0711: traversable, not listable)
//!     lock              held by the running server; names its PID
//!     tmp/              temporary files (fills, durable writes), emptied at start-up
//!     meta/<2 hex>/<sha256 of CacheKey::canonical>   one JSON file per entry
//!     docs/<2 hex>/<sha256 of the document key>       index documents (see `doc`)
//!     quarantine/       damaged bodies (found by reads, the scrub, `verify`)
//!     adopted           every body here has metadata (`store::adopt`)
//!     build/            the build queue's tree (jobs, work, logs, inbox, artifacts)
//! ```
//!
//! Pure: nothing here touches the disk.

use super::key::{check_segment, CacheKey, KeyError, Namespace};
use sha2::{Digest, Sha256};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// Directory (under the cache root) holding the proxy's private state.
pub const STATE_DIR: &str = ".package-cache";
/// Directory (under the cache root) holding per-host namespaces.
pub const HOSTS_DIR: &str = ".package-cache-hosts";
/// Directory (under the cache root) holding the namespaces of `--mirror` mounts.
pub const MOUNTS_DIR: &str = ".package-cache-mounts";

/// Mode of directories that local users may traverse but not list (VCAP's layout).
pub const DIR_MODE: u32 = 0o711;
/// Mode of committed bodies: readable by local clients that know the name.
pub const FILE_MODE: u32 = 0o644;
/// Mode of the private state directories (`tmp/`, `meta/`, `docs/`, …).
pub const PRIVATE_DIR_MODE: u32 = 0o700;

/// The paths of one cache directory. Cheap to clone; holds only the root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// The layout of the cache at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Layout {
        Layout { root: root.into() }
    }

    /// The cache root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `.package-cache/`: the private state.
    pub fn state_dir(&self) -> PathBuf {
        self.root.join(STATE_DIR)
    }

    /// The lock file a running server holds (and writes its PID into).
    pub fn lock_file(&self) -> PathBuf {
        self.state_dir().join("lock")
    }

    /// Where every temporary file is created: on the same filesystem as
    /// everything it is renamed to, and emptied when a server starts.
    pub fn tmp_dir(&self) -> PathBuf {
        self.state_dir().join("tmp")
    }

    /// The metadata files' directory.
    pub fn meta_dir(&self) -> PathBuf {
        self.state_dir().join("meta")
    }

    /// The index documents' directory.
    pub fn docs_dir(&self) -> PathBuf {
        self.state_dir().join("docs")
    }

    /// Where damaged bodies are moved, by the server when a read or the
    /// scrub finds them and by `verify` (0700, never served, never removed
    /// by `gc`).
    pub fn quarantine_dir(&self) -> PathBuf {
        self.state_dir().join("quarantine")
    }

    /// The supply-chain policy's first-seen record (`supply::FirstSeen`).
    pub fn first_seen_file(&self) -> PathBuf {
        self.state_dir().join("policy").join("first-seen")
    }

    /// Written once every body of the directory has metadata (see
    /// `store::adopt`): from then on a body without any is damage.
    pub fn adopted_marker(&self) -> PathBuf {
        self.state_dir().join("adopted")
    }

    /// The build queue's tree.
    pub fn build_root(&self) -> PathBuf {
        self.state_dir().join("build")
    }

    /// The build inbox's public directory, where local users hand in sources
    /// (`package-cache inbox add`).
    pub fn inbox_public(&self) -> PathBuf {
        self.build_root().join("inbox").join("public")
    }

    /// The body file of `key`.
    pub fn entry(&self, key: &CacheKey) -> PathBuf {
        self.root.join(Layout::entry_rel(key))
    }

    /// The body file of `key`, relative to the root. Always beneath it: the
    /// key's segments are validated (see [`CacheKey`]).
    pub fn entry_rel(key: &CacheKey) -> PathBuf {
        let mut path = match key.namespace() {
            Namespace::Mirrors => PathBuf::new(),
            Namespace::Host(host) => PathBuf::from(HOSTS_DIR).join(host),
            Namespace::Mount(name) => PathBuf::from(MOUNTS_DIR).join(name),
        };
        for segment in key.segments() {
            path.push(OsStr::from_bytes(segment));
        }
        path
    }

    /// The key whose body lives at `rel` (relative to the root), the inverse
    /// of [`Layout::entry_rel`]: `.package-cache-hosts/<host>/…` and
    /// `.package-cache-mounts/<name>/…` name their namespaces, anything else
    /// is in the mirrors' namespace.
    pub fn key_of(rel: &Path) -> Result<CacheKey, KeyError> {
        let mut parts = Vec::new();
        for component in rel.components() {
            match component {
                Component::Normal(part) => parts.push(part.as_bytes().to_vec()),
                Component::CurDir | Component::ParentDir => return Err(KeyError::DotSegment),
                Component::RootDir | Component::Prefix(_) => return Err(KeyError::EmptySegment),
            }
        }
        let namespace = match parts.first().map(Vec::as_slice) {
            Some(dir) if dir == HOSTS_DIR.as_bytes() || dir == MOUNTS_DIR.as_bytes() => {
                let name = parts.get(1).ok_or(KeyError::Directory)?;
                let name = String::from_utf8(name.clone()).map_err(|_| KeyError::ForbiddenByte)?;
                check_segment(name.as_bytes())?;
                let namespace = if dir == HOSTS_DIR.as_bytes() {
                    Namespace::Host(name)
                } else {
                    Namespace::Mount(name)
                };
                parts.drain(..2);
                namespace
            }
            _ => Namespace::Mirrors,
        };
        CacheKey::try_from_segments(namespace, parts)
    }

    /// The metadata file of `key`.
    pub fn meta_file(&self, key: &CacheKey) -> PathBuf {
        self.meta_file_named(&key.canonical())
    }

    /// The metadata file of `key`, relative to the root (for `*at` calls
    /// on the root's descriptor).
    pub fn meta_rel(&self, key: &CacheKey) -> PathBuf {
        self.meta_rel_named(&key.canonical())
    }

    /// The metadata file stored under the name `canonical`, relative to the root.
    pub fn meta_rel_named(&self, canonical: &str) -> PathBuf {
        fan_out(&Path::new(STATE_DIR).join("meta"), canonical.as_bytes())
    }

    /// The metadata file stored under the name `canonical` (a key's
    /// canonical name, or the name an earlier version gave it).
    pub fn meta_file_named(&self, canonical: &str) -> PathBuf {
        self.root.join(self.meta_rel_named(canonical))
    }

    /// The metadata file stored under the name whose sha256 is `digest`
    /// (what the in-memory index keeps of a key instead of the key).
    pub fn meta_file_hashed(&self, digest: &[u8; 32]) -> PathBuf {
        hashed(&self.meta_dir(), digest)
    }

    /// The sha256 a metadata file named `name` (in a fan-out directory of
    /// [`Layout::meta_dir`]) is stored under; `None` for any other name.
    pub fn meta_digest_of(name: &[u8]) -> Option<[u8; 32]> {
        let mut digest = [0; 32];
        hex::decode_to_slice(name, &mut digest).ok()?;
        Some(digest)
    }

    /// The file of the index document with key `doc_key`.
    pub fn doc_file(&self, doc_key: &str) -> PathBuf {
        fan_out(&self.docs_dir(), doc_key.as_bytes())
    }
}

/// `<dir>/<2 hex>/<sha256 hex>`: the name a key's state file is stored under.
fn fan_out(dir: &Path, key: &[u8]) -> PathBuf {
    hashed(dir, &Sha256::digest(key).into())
}

fn hashed(dir: &Path, digest: &[u8; 32]) -> PathBuf {
    let digest = hex::encode(digest);
    dir.join(&digest[..2]).join(digest)
}

#[cfg(test)]
mod tests {
    use super::super::key::RESERVED_PREFIX;
    use super::*;

    fn key(ns: Namespace, p: &str) -> CacheKey {
        CacheKey::try_from_path(ns, p).unwrap()
    }

    #[test]
    fn entries_live_in_their_namespace_directories() {
        let layout = Layout::new("/c");
        let cases = [
            (
                Namespace::Mirrors,
                "/distfiles/ab/foo-1.0.tar.gz",
                "distfiles/ab/foo-1.0.tar.gz",
            ),
            (Namespace::Mirrors, "/a%20b.tgz", "a b.tgz"),
            (Namespace::Mirrors, "/x%2Bcpu.whl", "x+cpu.whl"),
            (Namespace::Mirrors, "/%C3%A9.tgz", "é.tgz"),
            (
                Namespace::Host("a.example".into()),
                "/f",
                ".package-cache-hosts/a.example/f",
            ),
            (
                Namespace::Mount("pypi".into()),
                "/files/x.whl",
                ".package-cache-mounts/pypi/files/x.whl",
            ),
        ];
        for (ns, p, rel) in cases {
            let k = key(ns, p);
            assert_eq!(Layout::entry_rel(&k), PathBuf::from(rel), "{p}");
            assert_eq!(layout.entry(&k), Path::new("/c").join(rel));
        }
    }

    #[test]
    fn relative_paths_give_back_their_keys() {
        for (ns, p) in [
            (Namespace::Mirrors, "/distfiles/ab/foo-1.0.tar.gz"),
            (Namespace::Mirrors, "/a%20b%25c.tgz"),
            (Namespace::Host("a.example:8080".into()), "/x/y"),
            (Namespace::Mount("pypi".into()), "/files/h/%C3%A9.whl"),
        ] {
            let k = key(ns, p);
            let back = Layout::key_of(&Layout::entry_rel(&k)).unwrap();
            assert_eq!(back, k, "{p}");
            assert_eq!(back.canonical(), k.canonical());
        }
        for rel in [
            ".package-cache/lock",
            ".package-cache-hosts/h",
            ".package-cache-other/x",
            "a\\b",
            "a/../b",
        ] {
            assert!(Layout::key_of(Path::new(rel)).is_err(), "{rel}");
        }
    }

    #[test]
    fn no_key_can_name_the_reserved_directories() {
        for dir in [STATE_DIR, HOSTS_DIR, MOUNTS_DIR] {
            assert!(dir.starts_with(RESERVED_PREFIX), "{dir}");
            let path = format!("/{dir}/x");
            assert_eq!(
                CacheKey::try_from_path(Namespace::Mirrors, &path),
                Err(KeyError::Reserved)
            );
        }
    }

    #[test]
    fn state_files_are_fanned_out_beneath_the_state_directory() {
        let layout = Layout::new("/c");
        let meta = layout.meta_file(&key(Namespace::Mirrors, "/f"));
        assert!(meta.starts_with("/c/.package-cache/meta"));
        let name = meta.file_name().unwrap().to_str().unwrap();
        assert_eq!(name.len(), 64);
        assert_eq!(
            meta.parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_str()
                .unwrap(),
            &name[..2]
        );
        assert!(layout
            .doc_file("pypi\n/simple/x/\nhtml")
            .starts_with("/c/.package-cache/docs"));
        assert_eq!(
            layout.inbox_public(),
            PathBuf::from("/c/.package-cache/build/inbox/public")
        );
    }
}
