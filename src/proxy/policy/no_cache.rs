//! `NoCache`: the operator's `--no-cache` globs, matched against decoded
//! request paths; a match passes the request through uncached.

use globset::{Glob, GlobSet, GlobSetBuilder};

/// The compiled `--no-cache` patterns.
pub struct NoCache {
    globs: GlobSet,
}

impl NoCache {
    /// Compiles `patterns` (checked when the config was validated; one that
    /// fails here anyway is logged and skipped).
    pub fn new(patterns: &[String]) -> NoCache {
        let mut builder = GlobSetBuilder::new();
        for pattern in patterns {
            match Glob::new(pattern) {
                Ok(glob) => {
                    builder.add(glob);
                }
                Err(err) => tracing::error!(pattern, error = %err, "ignoring --no-cache pattern"),
            }
        }
        NoCache {
            globs: builder.build().unwrap_or_else(|_| GlobSet::empty()),
        }
    }

    /// Whether the operator said never to cache this (raw) request path; it
    /// is percent-decoded before matching.
    pub fn matches(&self, path: &str) -> bool {
        if self.globs.is_empty() {
            return false;
        }
        let decoded = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
        self.globs.is_match(decoded.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_decoded_paths() {
        let globs = ["/pypi/simple/private-*/**", "**/*.iso"].map(String::from);
        let p = NoCache::new(&globs);
        assert!(p.matches("/pypi/simple/private-x/index"));
        assert!(p.matches("/a/b%20c.iso"));
        assert!(!p.matches("/pypi/simple/six/"));
        assert!(!NoCache::new(&[]).matches("/a.iso"));
    }
}
