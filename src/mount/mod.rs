//! Mounts: what each path under a `--mirror NAME=URL` mount is, by the
//! mount's profile — a mutable index document (revalidated after a TTL), an
//! immutable artifact (kept forever), a redirect to the canonical spelling,
//! or something the mount answers itself — and what a fetched document
//! becomes before it is kept (`document::rewrite_document`). Pure: no I/O,
//! no HTTP types.

pub mod cargo;
mod document;
pub mod filter;
pub mod go;
pub mod link;
pub mod npm;
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

/// The representation of a document that has several (chosen from `Accept`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Repr {
    /// A PEP 691 simple page.
    Pypi(pypi::Repr),
    /// An npm packument: full or abbreviated.
    Npm(npm::Repr),
}

impl Repr {
    /// Content-Type that labels a stored document of this representation.
    pub fn media_type(self) -> &'static str {
        match self {
            Repr::Pypi(r) => r.media_type(),
            Repr::Npm(r) => r.media_type(),
        }
    }

    /// The Accept header to send upstream for it.
    pub fn accept_header(self) -> &'static str {
        match self {
            Repr::Pypi(r) => r.accept_header(),
            Repr::Npm(r) => r.accept_header(),
        }
    }

    /// Short suffix for cache keys and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Repr::Pypi(r) => r.as_str(),
            Repr::Npm(r) => r.as_str(),
        }
    }
}

/// A mutable index document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DocSpec {
    /// Store key: mount, decoded path and representation; one entry per
    /// representation, whatever the client's exact `Accept`.
    pub key: String,
    /// The representation, for documents that have several.
    pub repr: Option<Repr>,
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
/// client's `Accept` header (pypi's and npm's representations).
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
        Profile::Npm => npm::classify(mount, path, accept),
        Profile::Cargo => cargo::classify(mount, path),
        Profile::Go => go::classify(mount, path),
    }
}

/// The path on `mount` (after `/NAME`, raw) that serves `link` when a client
/// asks for `link` itself through the proxy (`http_proxy=`): a path on one
/// of its sources, or its files host's path (`/files/AUTHORITY/…` on PyPI
/// mounts, `/_files/AUTHORITY/…` on the others). `None` for anything else.
pub fn forward_path(mount: &Mount, link: &url::Url) -> Option<String> {
    let path = match mount.profile {
        Profile::Pypi => proxy_path(mount, link)?
            .strip_prefix(&format!("/{}", mount.name))?
            .to_string(),
        _ => link::mount_path(mount, link)?,
    };
    // The query travels apart, as on any other request.
    Some(match path.split_once('?') {
        Some((path, _)) => path.to_string(),
        None => path,
    })
}

/// The spelling of `path` (raw, after `/NAME`) that its store key is made
/// from: on an npm mount a scoped name's encoded slash (`/@scope%2fname…`,
/// as npm sends it) becomes `/`, so that the store, which refuses encoded
/// slashes, takes it and both spellings share one entry. Other paths as given.
pub fn key_path<'p>(mount: &Mount, path: &'p str) -> std::borrow::Cow<'p, str> {
    if mount.profile != Profile::Npm || !path.starts_with("/@") {
        return path.into();
    }
    let first_end = path[1..].find('/').map_or(path.len(), |i| i + 1);
    let first = &path[..first_end];
    match first.to_ascii_lowercase().find("%2f") {
        Some(at) => format!(
            "{}/{}{}",
            &first[..at],
            &first[at + 3..],
            &path[first_end..]
        )
        .into(),
        None => path.into(),
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

fn document(mount: &Mount, path: &str, repr: Option<Repr>) -> Class {
    document_at(mount, path, path, repr)
}

/// A document the client names `path` and the upstream serves at `upstream_path`.
fn document_at(mount: &Mount, path: &str, upstream_path: &str, repr: Option<Repr>) -> Class {
    let decoded = percent_decode_str(path).decode_utf8_lossy();
    keyed_document(mount, &decoded, upstream_path, repr)
}

/// A document stored under `key_path` (decoded, one spelling for all the
/// paths that name it) and fetched from `path` (raw) upstream.
fn keyed_document(mount: &Mount, key_path: &str, path: &str, repr: Option<Repr>) -> Class {
    let repr_name = repr.map(Repr::as_str).unwrap_or("-");
    Class::Document(DocSpec {
        key: format!("{}\n{key_path}\n{repr_name}", mount.name),
        repr,
        path: path.to_string(),
    })
}

fn classify_pypi(mount: &Mount, path: &str, accept: Option<&str>) -> Class {
    let name = &mount.name;
    // Clients see `/NAME/simple/` whatever the upstream calls its index.
    let index = mount.index_path.as_deref().unwrap_or("/simple");
    if path == "/simple" {
        return Class::Redirect(format!("/{name}/simple/"));
    }
    if path == "/simple/" {
        return document_at(
            mount,
            path,
            &format!("{index}/"),
            Some(Repr::Pypi(pypi::negotiate(accept))),
        );
    }
    if index != "/simple" && !index.is_empty() {
        // The upstream's own spelling of a page (a client given devpi's URL
        // layout) is the same page: one cache entry, one canonical URL.
        if let Some(rest) = path.strip_prefix(index) {
            if rest == "/" || rest.is_empty() {
                return Class::Redirect(format!("/{name}/simple/"));
            }
            if let Some(project) = rest.strip_prefix('/') {
                if !project.is_empty() && !project.trim_end_matches('/').contains('/') {
                    return Class::Redirect(format!("/{name}/simple/{project}"));
                }
            }
        }
    }
    if let Some(rest) = path.strip_prefix("/simple/") {
        let (project, tail) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, ""),
        };
        if !tail.is_empty() {
            // A file linked relative to its page.
            return Class::Artifact {
                upstream: MountUpstream::Sources,
                path: format!("{index}/{rest}"),
            };
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
        let upstream = format!("{index}/{normal}/");
        return document_at(
            mount,
            path,
            &upstream,
            Some(Repr::Pypi(pypi::negotiate(accept))),
        );
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

/// A file of the mount's files host `authority`, if it is one.
fn files_artifact(mount: &Mount, authority: &str, path: String) -> Class {
    match mount
        .files_hosts
        .iter()
        .position(|h| h.authority.as_str() == authority)
    {
        Some(i) if !path.ends_with('/') => Class::Artifact {
            upstream: MountUpstream::Files(i),
            path,
        },
        _ => Class::NotFound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SourceUrl;

    pub(crate) fn mount(profile: Profile) -> Mount {
        Mount {
            name: "m".into(),
            profile,
            sources: vec![SourceUrl::try_new("http://index.example/").unwrap()],
            files_hosts: vec![SourceUrl::try_new("http://files.example:8080/").unwrap()],
            index_path: None,
            go_sums: Vec::new(),
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
    fn pypi_pages_follow_the_upstreams_index_path() {
        let mut m = mount(Profile::Pypi);
        m.index_path = Some("/+simple".into());
        let upstream_of = |m: &Mount, p: &str| match classify(m, p, None) {
            Class::Document(spec) => spec.path,
            Class::Artifact { path, .. } => path,
            other => panic!("{p}: {other:?}"),
        };
        assert_eq!(upstream_of(&m, "/simple/"), "/+simple/");
        assert_eq!(upstream_of(&m, "/simple/six/"), "/+simple/six/");
        assert_eq!(
            upstream_of(&m, "/simple/six/six-1.0.tar.gz"),
            "/+simple/six/six-1.0.tar.gz"
        );
        assert_eq!(
            upstream_of(&m, "/+f/abc/def/six-1.0.tar.gz"),
            "/+f/abc/def/six-1.0.tar.gz"
        );
        assert_eq!(
            classify(&m, "/+simple/", None),
            Class::Redirect("/m/simple/".into())
        );
        assert_eq!(
            classify(&m, "/+simple/Six/", None),
            Class::Redirect("/m/simple/Six/".into())
        );
        // The key is the client's path: the same entry whatever the upstream's layout.
        let key = |m: &Mount| match classify(m, "/simple/six/", None) {
            Class::Document(spec) => spec.key,
            other => panic!("{other:?}"),
        };
        assert_eq!(key(&m), key(&mount(Profile::Pypi)));
        m.index_path = Some(String::new());
        assert_eq!(upstream_of(&m, "/simple/six/"), "/six/");
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
    fn npm_scoped_names_have_one_key_spelling() {
        let npm = mount(Profile::Npm);
        for (path, key) in [
            ("/@acme%2fleft-pad", "/@acme/left-pad"),
            (
                "/@acme%2Fleft-pad/-/left-pad-1.0.0.tgz",
                "/@acme/left-pad/-/left-pad-1.0.0.tgz",
            ),
            ("/@acme/left-pad", "/@acme/left-pad"),
            ("/left-pad", "/left-pad"),
            ("/@acme", "/@acme"),
        ] {
            assert_eq!(key_path(&npm, path), key, "{path}");
        }
        let pypi = mount(Profile::Pypi);
        assert_eq!(key_path(&pypi, "/@a%2fb"), "/@a%2fb");
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
