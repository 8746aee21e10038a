//! `CacheKey`: which namespace an entry belongs to and its decoded path.
//!
//! All validation of client-supplied paths lives here, so that no key can name
//! a file outside its namespace directory or the proxy's own state. Where a
//! key's body lives on disk is `layout`'s business; its one-string name
//! (metadata files, the 404 memory, the digest registry) is `canonical`'s.

mod canonical;

use percent_encoding::percent_decode_str;
use std::fmt;

/// No key's first segment starts with this: the cache root keeps its own
/// directories under names that do (see `layout`).
pub const RESERVED_PREFIX: &str = ".package-cache";
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
/// its body path (`Layout::entry_rel`) always stays beneath the cache root.
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
            .starts_with(RESERVED_PREFIX.as_bytes())
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
        if first.starts_with(RESERVED_PREFIX.as_bytes()) {
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

    /// The decoded path segments, in order.
    pub fn segments(&self) -> &[Vec<u8>] {
        &self.segments
    }

    /// The file name of the entry (its last segment), for guessing a media type.
    pub fn file_name(&self) -> &[u8] {
        self.segments.last().map(Vec::as_slice).unwrap_or_default()
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
pub(super) fn check_segment(decoded: &[u8]) -> Result<(), KeyError> {
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
    fn plain_paths_decode_to_segments() {
        let k = key("/distfiles/ab/foo-1.0.tar.gz").unwrap();
        assert_eq!(k.segments(), [&b"distfiles"[..], b"ab", b"foo-1.0.tar.gz"]);
        assert_eq!(key("/a%20b.tgz").unwrap().segments(), [&b"a b.tgz"[..]]);
        assert_eq!(key("/x%2Bcpu.whl").unwrap().segments(), [&b"x+cpu.whl"[..]]);
        assert_eq!(key("/%C3%A9.tgz").unwrap().segments(), ["é.tgz".as_bytes()]);
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
    fn segments_found_on_disk_obey_the_same_rules() {
        assert_eq!(
            CacheKey::try_from_segments(Namespace::Mirrors, vec![b"a\nb".to_vec()]),
            Err(KeyError::ForbiddenByte)
        );
        assert_eq!(
            CacheKey::try_from_segments(Namespace::Mirrors, vec![b".package-cache".to_vec()]),
            Err(KeyError::Reserved)
        );
    }

    #[test]
    fn host_namespaces_are_separate() {
        let a = CacheKey::try_from_path(Namespace::Host("a.example".into()), "/f").unwrap();
        let b = CacheKey::try_from_path(Namespace::Host("b.example".into()), "/f").unwrap();
        assert_ne!(a.canonical(), b.canonical());
        assert_ne!(key("/f").unwrap().canonical(), a.canonical());
    }
}
