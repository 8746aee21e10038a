//! `CacheKey`: which namespace an entry belongs to and its decoded path.
//!
//! All validation of client-supplied paths lives here, so that no key can name
//! a file outside its namespace directory or the proxy's own state.

use percent_encoding::percent_decode_str;
use std::ffi::OsStr;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// Directory (under the cache root) holding the proxy's private state.
pub const STATE_DIR: &str = ".package-cache";
/// Directory (under the cache root) holding per-host namespaces.
pub const HOSTS_DIR: &str = ".package-cache-hosts";
/// Directory (under the cache root) holding the namespaces of `--mirror` mounts.
pub const MOUNTS_DIR: &str = ".package-cache-mounts";
/// Longest request path accepted, in bytes.
pub const MAX_PATH_LEN: usize = 2048;
/// Longest single decoded path segment accepted (the usual `NAME_MAX`).
pub const MAX_SEGMENT_LEN: usize = 255;
/// Deepest path accepted.
pub const MAX_DEPTH: usize = 32;

/// Where an entry's upstream lives.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Namespace {
    /// The shared namespace of every `--source` mirror: failover between
    /// mirrors still hits. Stored at the cache root, as package-cache 0.2 did.
    Mirrors,
    /// One explicitly named upstream host (`host[:port]`, lower case),
    /// reached in forward-proxy or transparent mode.
    Host(String),
    /// One `--mirror` mount (its validated name).
    Mount(String),
}

/// Why a path cannot be a cache key.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// The path is longer than [`MAX_PATH_LEN`] or deeper than [`MAX_DEPTH`].
    #[error("path too long")]
    TooLong,
    /// A segment is `.` or `..` (also percent-encoded).
    #[error("path has a dot segment")]
    DotSegment,
    /// A segment decodes to a byte that cannot be in a file name.
    #[error("path has a forbidden character (encoded slash, backslash, NUL or control)")]
    ForbiddenByte,
    /// An empty segment (`//`) or a path not starting with `/`.
    #[error("path has an empty segment")]
    EmptySegment,
    /// A segment longer than [`MAX_SEGMENT_LEN`] bytes.
    #[error("path segment too long")]
    SegmentTooLong,
    /// The path names the proxy's own state.
    #[error("path is reserved")]
    Reserved,
    /// The path names a directory (ends in `/`): listings are not cached.
    #[error("path names a directory")]
    Directory,
}

impl KeyError {
    /// Whether the request is hostile or malformed (as opposed to merely not cacheable).
    pub fn is_malformed(&self) -> bool {
        !matches!(self, KeyError::Directory)
    }
}

/// A validated cache key: namespace plus decoded path segments.
///
/// Invariant: every segment is non-empty, not `.`/`..`, free of `/`, `\`, NUL
/// and control bytes, and at most [`MAX_SEGMENT_LEN`] bytes; so
/// [`CacheKey::relative_path`] always stays beneath the cache root.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CacheKey {
    namespace: Namespace,
    segments: Vec<Vec<u8>>,
}

impl CacheKey {
    /// Validates a raw (still percent-encoded) request path, without its query.
    pub fn try_from_path(namespace: Namespace, raw_path: &str) -> Result<CacheKey, KeyError> {
        if raw_path.len() > MAX_PATH_LEN {
            return Err(KeyError::TooLong);
        }
        let rest = raw_path.strip_prefix('/').ok_or(KeyError::EmptySegment)?;
        let first = rest.split('/').next().unwrap_or_default();
        if percent_decode_str(first)
            .collect::<Vec<u8>>()
            .starts_with(STATE_DIR.as_bytes())
        {
            return Err(KeyError::Reserved);
        }
        // A directory path is checked like any other before it is called a
        // directory, so `/a/../` never reaches an upstream as a listing.
        let (rest, directory) = match rest.strip_suffix('/') {
            Some(stripped) => (stripped, true),
            None => (rest, false),
        };
        if rest.is_empty() {
            return Err(KeyError::Directory);
        }
        let mut segments = Vec::new();
        for raw in rest.split('/') {
            if raw.is_empty() {
                return Err(KeyError::EmptySegment);
            }
            // A raw backslash is a separator on some servers (and was one to 0.2's
            // clients on Windows); refusing it keeps one name per file.
            if raw.contains('\\') {
                return Err(KeyError::ForbiddenByte);
            }
            let decoded: Vec<u8> = percent_decode_str(raw).collect();
            check_segment(&decoded)?;
            segments.push(decoded);
        }
        if segments.len() > MAX_DEPTH {
            return Err(KeyError::TooLong);
        }
        if directory {
            return Err(KeyError::Directory);
        }
        Ok(CacheKey {
            namespace,
            segments,
        })
    }

    /// Validates decoded path segments as found on disk (a scan of the cache),
    /// with the same rules as [`CacheKey::try_from_path`]: a file that no
    /// request could name is not an entry.
    pub fn try_from_segments(
        namespace: Namespace,
        segments: Vec<Vec<u8>>,
    ) -> Result<CacheKey, KeyError> {
        let Some(first) = segments.first() else {
            return Err(KeyError::Directory);
        };
        if first.starts_with(STATE_DIR.as_bytes()) {
            return Err(KeyError::Reserved);
        }
        if segments.len() > MAX_DEPTH
            || segments.iter().map(|s| s.len() + 1).sum::<usize>() > MAX_PATH_LEN
        {
            return Err(KeyError::TooLong);
        }
        for segment in &segments {
            check_segment(segment)?;
        }
        Ok(CacheKey {
            namespace,
            segments,
        })
    }

    /// The key whose body lives at `rel` (relative to the cache root), the
    /// inverse of [`CacheKey::relative_path`]: `.package-cache-hosts/<host>/…`
    /// and `.package-cache-mounts/<name>/…` name their namespaces, anything
    /// else is in the mirrors' namespace.
    pub fn try_from_relative(rel: &Path) -> Result<CacheKey, KeyError> {
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

    /// Bytes this key occupies in memory, roughly (for budgets).
    pub fn approx_size(&self) -> usize {
        let ns = match &self.namespace {
            Namespace::Mirrors => 0,
            Namespace::Host(name) | Namespace::Mount(name) => name.len(),
        };
        64 + ns + self.segments.iter().map(|s| s.len() + 24).sum::<usize>()
    }

    /// The namespace of this key.
    pub fn namespace(&self) -> &Namespace {
        &self.namespace
    }

    /// The entry's body file, relative to the cache root.
    pub fn relative_path(&self) -> PathBuf {
        let mut path = match &self.namespace {
            Namespace::Mirrors => PathBuf::new(),
            Namespace::Host(host) => PathBuf::from(HOSTS_DIR).join(host),
            Namespace::Mount(name) => PathBuf::from(MOUNTS_DIR).join(name),
        };
        for segment in &self.segments {
            path.push(OsStr::from_bytes(segment));
        }
        path
    }

    /// The file name of the entry (its last segment), for guessing a media type.
    pub fn file_name(&self) -> &[u8] {
        self.segments.last().map(Vec::as_slice).unwrap_or_default()
    }

    /// A stable string form, unique per key: used for the metadata file name.
    pub fn canonical(&self) -> String {
        let ns = match &self.namespace {
            Namespace::Mirrors => "mirrors",
            Namespace::Host(host) => host.as_str(),
            Namespace::Mount(name) => {
                return format!("mount:{name}\n{}", self.relative_path_lossy())
            }
        };
        format!("{ns}\n{}", self.relative_path_lossy())
    }

    fn relative_path_lossy(&self) -> String {
        let parts: Vec<_> = self
            .segments
            .iter()
            .map(|s| String::from_utf8_lossy(s))
            .collect();
        parts.join("/")
    }
}

/// The rules every decoded segment obeys (see [`CacheKey`]'s invariant).
fn check_segment(decoded: &[u8]) -> Result<(), KeyError> {
    if decoded.is_empty() {
        return Err(KeyError::EmptySegment);
    }
    if decoded == b"." || decoded == b".." {
        return Err(KeyError::DotSegment);
    }
    if decoded
        .iter()
        .any(|&b| b == b'/' || b == b'\\' || b < 0x20 || b == 0x7f)
    {
        return Err(KeyError::ForbiddenByte);
    }
    if decoded.len() > MAX_SEGMENT_LEN {
        return Err(KeyError::SegmentTooLong);
    }
    Ok(())
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Namespace::Mirrors => write!(f, "/{}", self.relative_path_lossy()),
            Namespace::Host(host) => write!(f, "{host}/{}", self.relative_path_lossy()),
            Namespace::Mount(name) => write!(f, "/{name}/{}", self.relative_path_lossy()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(p: &str) -> Result<CacheKey, KeyError> {
        CacheKey::try_from_path(Namespace::Mirrors, p)
    }

    #[test]
    fn plain_paths_decode_to_file_names() {
        let k = key("/distfiles/ab/foo-1.0.tar.gz").unwrap();
        assert_eq!(
            k.relative_path(),
            PathBuf::from("distfiles/ab/foo-1.0.tar.gz")
        );
        let k = key("/a%20b.tgz").unwrap();
        assert_eq!(k.relative_path(), PathBuf::from("a b.tgz"));
        let k = key("/x%2Bcpu.whl").unwrap();
        assert_eq!(k.relative_path(), PathBuf::from("x+cpu.whl"));
        let k = key("/%C3%A9.tgz").unwrap();
        assert_eq!(k.relative_path(), PathBuf::from("é.tgz"));
    }

    #[test]
    fn hostile_paths_are_refused() {
        for p in ["/../etc/passwd", "/a/%2e%2e/b", "/a/%2E%2E", "/.", "/a/./b"] {
            assert_eq!(key(p), Err(KeyError::DotSegment), "{p}");
        }
        for p in ["/a%2fb", "/a%2Fb", "/a\\b", "/a%5cb", "/a%00b", "/a%0ab"] {
            assert_eq!(key(p), Err(KeyError::ForbiddenByte), "{p}");
        }
        assert_eq!(key("//etc/passwd"), Err(KeyError::EmptySegment));
        assert_eq!(key("relative"), Err(KeyError::EmptySegment));
        assert_eq!(key("/.package-cache/lock"), Err(KeyError::Reserved));
        assert_eq!(key("/.package-cache-hosts/x/y"), Err(KeyError::Reserved));
        assert_eq!(key("/.package-cache/tmp/"), Err(KeyError::Reserved));
        assert_eq!(key("/%2Epackage-cache/lock"), Err(KeyError::Reserved));
        assert_eq!(
            key(&format!("/{}", "a".repeat(256))),
            Err(KeyError::SegmentTooLong)
        );
        assert_eq!(
            key(&format!("/{}", "a/".repeat(1100))),
            Err(KeyError::TooLong)
        );
        assert_eq!(key("/dir/"), Err(KeyError::Directory));
        assert_eq!(key("/a/../"), Err(KeyError::DotSegment));
        assert_eq!(key("/a/%2e%2e/b/"), Err(KeyError::DotSegment));
        assert_eq!(key("/a//"), Err(KeyError::EmptySegment));
        assert_eq!(key("/"), Err(KeyError::Directory));
    }

    #[test]
    fn relative_paths_give_back_their_keys() {
        for (ns, p) in [
            (Namespace::Mirrors, "/distfiles/ab/foo-1.0.tar.gz"),
            (Namespace::Mirrors, "/a%20b%25c.tgz"),
            (Namespace::Host("a.example:8080".into()), "/x/y"),
            (Namespace::Mount("pypi".into()), "/files/h/%C3%A9.whl"),
        ] {
            let key = CacheKey::try_from_path(ns, p).unwrap();
            let back = CacheKey::try_from_relative(&key.relative_path()).unwrap();
            assert_eq!(back, key, "{p}");
            assert_eq!(back.canonical(), key.canonical());
        }
        for rel in [
            ".package-cache/lock",
            ".package-cache-hosts/h",
            ".package-cache-other/x",
            "a\\b",
            "a/../b",
        ] {
            assert!(
                CacheKey::try_from_relative(Path::new(rel)).is_err(),
                "{rel}"
            );
        }
        assert_eq!(
            CacheKey::try_from_segments(Namespace::Mirrors, vec![b"a\nb".to_vec()]),
            Err(KeyError::ForbiddenByte)
        );
    }

    #[test]
    fn host_namespaces_are_separate() {
        let a = CacheKey::try_from_path(Namespace::Host("a.example".into()), "/f").unwrap();
        let b = CacheKey::try_from_path(Namespace::Host("b.example".into()), "/f").unwrap();
        assert_ne!(a.canonical(), b.canonical());
        assert_eq!(
            a.relative_path(),
            PathBuf::from(".package-cache-hosts/a.example/f")
        );
        assert_ne!(key("/f").unwrap().canonical(), a.canonical());
    }
}
