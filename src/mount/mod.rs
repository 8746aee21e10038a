//! Mounts: what each path under a `--mirror NAME=URL` mount is, by the
//! mount's profile — a mutable index document (revalidated after a TTL), an
//! immutable artifact (kept forever), a redirect to the canonical spelling,
//! or something the mount answers itself — and what a fetched document
//! becomes before it is kept (`document::rewrite_document`). Pure: no I/O,
//! no HTTP types.

mod document;
pub mod pypi;
pub mod rubygems;

pub use document::{proxy_path, rewrite_document, Error, Rewritten};

use crate::config::{Mount, Profile};
use percent_encoding::percent_decode_str;

/// Which upstream of a mount a request goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MountUpstream {
    /// Its sources, in failover order.
    Sources,
    /// Its files host with this index (pypi's `/files/AUTHORITY/...`).
    Files(usize),
}

/// A mutable index document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DocSpec {
    /// Store key: mount, decoded path and representation; one entry per
    /// representation, whatever the client's exact `Accept`.
    pub key: String,
    /// The PEP 691 representation (pypi simple pages).
    pub repr: Option<pypi::Repr>,
    /// Path to request upstream (raw, on the mount's sources).
    pub path: String,
}

/// What a path under a mount is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Class {
    /// Answered by the proxy itself: a RubyGems source root, which `gem`
    /// probes with `HEAD` to choose the compact index (also offline).
    Root,
    /// Another spelling of a canonical path: redirect there (a proxy path).
    Redirect(String),
    /// A mutable index document.
    Document(DocSpec),
    /// An immutable file on `upstream` at `path` (raw).
    Artifact {
        /// Which upstream.
        upstream: MountUpstream,
        /// Raw path on it.
        path: String,
    },
    /// Served uncached (listings and the like).
    Pass,
    /// Nothing this mount can fetch (a files host that is not configured).
    NotFound,
}

/// Classifies `path` (raw, after `/NAME`) for `mount`. `accept` is the
/// client's `Accept` header (pypi's representation).
pub fn classify(mount: &Mount, path: &str, accept: Option<&str>) -> Class {
    if path.is_empty() {
        return Class::Redirect(format!("/{}/", mount.name));
    }
    match mount.profile {
        Profile::Pypi => classify_pypi(mount, path, accept),
        Profile::Rubygems => classify_rubygems(mount, path),
        Profile::Gentoo => {
            if path == "/distfiles/layout.conf" || path == "/layout.conf" {
                document(mount, path, None)
            } else {
                artifact(path)
            }
        }
        Profile::Generic => artifact(path),
    }
}

fn artifact(path: &str) -> Class {
    if path.ends_with('/') {
        return Class::Pass;
    }
    Class::Artifact {
        upstream: MountUpstream::Sources,
        path: path.to_string(),
    }
}

fn document(mount: &Mount, path: &str, repr: Option<pypi::Repr>) -> Class {
    let decoded = percent_decode_str(path).decode_utf8_lossy();
    let repr_name = repr.map(pypi::Repr::as_str).unwrap_or("-");
    Class::Document(DocSpec {
        key: format!("{}\n{decoded}\n{repr_name}", mount.name),
        repr,
        path: path.to_string(),
    })
}

fn classify_pypi(mount: &Mount, path: &str, accept: Option<&str>) -> Class {
    let name = &mount.name;
    if path == "/simple" {
        return Class::Redirect(format!("/{name}/simple/"));
    }
    if path == "/simple/" {
        return document(mount, path, Some(pypi::negotiate(accept)));
    }
    if let Some(rest) = path.strip_prefix("/simple/") {
        let (project, tail) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, ""),
        };
        if !tail.is_empty() {
            // A file linked relative to its page.
            return artifact(path);
        }
        let raw = percent_decode_str(project).decode_utf8_lossy();
        let normal = pypi::normalize_name(&raw);
        if normal.is_empty()
            || !normal
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Class::NotFound;
        }
        let canonical = format!("/simple/{normal}/");
        if path != canonical {
            return Class::Redirect(format!("/{name}{canonical}"));
        }
        return document(mount, path, Some(pypi::negotiate(accept)));
    }
    if let Some(rest) = path.strip_prefix("/files/") {
        let (authority, tail) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => return Class::NotFound,
        };
        // Clients may encode the port's colon (pip sends `%3A`).
        let authority = percent_decode_str(authority).decode_utf8_lossy();
        return match mount
            .files_hosts
            .iter()
            .position(|h| h.authority.as_str() == authority)
        {
            Some(i) if !tail.ends_with('/') => Class::Artifact {
                upstream: MountUpstream::Files(i),
                path: tail.to_string(),
            },
            _ => Class::NotFound,
        };
    }
    // The JSON API (`/pypi/NAME/json`, `/pypi/NAME/VERSION/json`) changes too.
    if path.starts_with("/pypi/") && path.ends_with("/json") {
        return document(mount, path, None);
    }
    artifact(path)
}

/// RubyGems index documents: the compact index and the legacy Marshal specs.
const RUBYGEMS_DOCUMENTS: &[&str] = &[
    "/versions",
    "/names",
    "/specs.4.8.gz",
    "/latest_specs.4.8.gz",
    "/prerelease_specs.4.8.gz",
    "/specs.4.8",
    "/latest_specs.4.8",
    "/prerelease_specs.4.8",
    "/Marshal.4.8",
    "/Marshal.4.8.Z",
];

fn classify_rubygems(mount: &Mount, path: &str) -> Class {
    if path == "/" {
        return Class::Root;
    }
    if RUBYGEMS_DOCUMENTS.contains(&path) {
        return document(mount, path, None);
    }
    if let Some(gem) = path.strip_prefix("/info/") {
        if !gem.is_empty() && !gem.contains('/') {
            return document(mount, path, None);
        }
    }
    artifact(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SourceUrl;

    fn mount(profile: Profile) -> Mount {
        Mount {
            name: "m".into(),
            profile,
            sources: vec![SourceUrl::try_new("http://index.example/").unwrap()],
            files_hosts: vec![SourceUrl::try_new("http://files.example:8080/").unwrap()],
        }
    }

    #[test]
    fn pypi_pages_are_documents_per_representation() {
        let m = mount(Profile::Pypi);
        let json = classify(
            &m,
            "/simple/six/",
            Some("application/vnd.pypi.simple.v1+json"),
        );
        let html = classify(&m, "/simple/six/", Some("text/html"));
        match (json, html) {
            (Class::Document(j), Class::Document(h)) => {
                assert_ne!(j.key, h.key);
                assert_eq!(j.path, "/simple/six/");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            classify(&m, "/simple/Six_Py", None),
            Class::Redirect("/m/simple/six-py/".into())
        );
        assert_eq!(
            classify(&m, "/simple", None),
            Class::Redirect("/m/simple/".into())
        );
        assert_eq!(classify(&m, "", None), Class::Redirect("/m/".into()));
        assert!(matches!(classify(&m, "/simple/", None), Class::Document(_)));
        assert!(matches!(
            classify(&m, "/pypi/six/json", None),
            Class::Document(_)
        ));
    }

    #[test]
    fn pypi_files_come_only_from_configured_hosts() {
        let m = mount(Profile::Pypi);
        assert_eq!(
            classify(&m, "/files/files.example:8080/packages/a.whl", None),
            Class::Artifact {
                upstream: MountUpstream::Files(0),
                path: "/packages/a.whl".into()
            }
        );
        assert_eq!(
            classify(&m, "/files/files.example%3A8080/packages/a.whl", None),
            Class::Artifact {
                upstream: MountUpstream::Files(0),
                path: "/packages/a.whl".into()
            }
        );
        assert_eq!(
            classify(&m, "/files/evil.example/packages/a.whl", None),
            Class::NotFound
        );
        assert_eq!(
            classify(&m, "/packages/a.whl", None),
            Class::Artifact {
                upstream: MountUpstream::Sources,
                path: "/packages/a.whl".into()
            }
        );
    }

    #[test]
    fn rubygems_indexes_are_documents_and_gems_artifacts() {
        let m = mount(Profile::Rubygems);
        assert_eq!(classify(&m, "/", None), Class::Root);
        for p in ["/versions", "/info/rails", "/names", "/specs.4.8.gz"] {
            assert!(matches!(classify(&m, p, None), Class::Document(_)), "{p}");
        }
        for p in ["/gems/rails-7.0.0.gem", "/quick/Marshal.4.8/a-1.gemspec.rz"] {
            assert!(
                matches!(classify(&m, p, None), Class::Artifact { .. }),
                "{p}"
            );
        }
    }

    #[test]
    fn gentoo_layout_is_a_document() {
        let m = mount(Profile::Gentoo);
        assert!(matches!(
            classify(&m, "/distfiles/layout.conf", None),
            Class::Document(_)
        ));
        assert!(matches!(
            classify(&m, "/distfiles/ab/foo.tar.gz", None),
            Class::Artifact { .. }
        ));
    }
}
