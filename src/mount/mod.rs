//! Mounts: what each path under a `--mirror NAME=URL` mount is, by the
//! mount's profile — a mutable index document (revalidated after a TTL), an
//! immutable artifact (kept forever), a redirect to the canonical spelling,
//! or something the mount answers itself. Pure: no I/O, no HTTP types.

pub mod cargo;
mod checksum;
pub mod go;
pub mod link;
pub mod npm;
pub mod pypi;
pub mod rubygems;

pub use checksum::{Checksum, Verifier};

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
        Profile::Npm => classify_npm(mount, path, accept),
        Profile::Cargo => classify_cargo(mount, path),
        Profile::Go => classify_go(mount, path),
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
    let decoded = percent_decode_str(path).decode_utf8_lossy();
    keyed_document(mount, &decoded, path, repr)
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
    if path == "/simple" {
        return Class::Redirect(format!("/{name}/simple/"));
    }
    if path == "/simple/" {
        return document(mount, path, Some(Repr::Pypi(pypi::negotiate(accept))));
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
        return document(mount, path, Some(Repr::Pypi(pypi::negotiate(accept))));
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

fn classify_npm(mount: &Mount, path: &str, accept: Option<&str>) -> Class {
    let repr = |r| Some(Repr::Npm(r));
    match npm::route(path) {
        npm::Route::Packument(name) => keyed_document(
            mount,
            &format!("/{}", name.as_path()),
            &format!("/{}", name.upstream_segment()),
            repr(npm::negotiate(accept)),
        ),
        // The registry has one representation of a version manifest.
        npm::Route::Version(name, version) => {
            let encoded = percent_encoding::utf8_percent_encode(&version, PATH_SEGMENT);
            keyed_document(
                mount,
                &format!("/{}/{version}", name.as_path()),
                &format!("/{}/{encoded}", name.upstream_segment()),
                repr(npm::Repr::Full),
            )
        }
        npm::Route::Tarball { upstream_path, .. } => Class::Artifact {
            upstream: MountUpstream::Sources,
            path: upstream_path,
        },
        npm::Route::Files { authority, path } => files_artifact(mount, &authority, path),
        npm::Route::Keys => document(mount, path, None),
        npm::Route::Pass => Class::Pass,
    }
}

/// Characters a path segment must encode (RFC 3986 `pchar` keeps the rest).
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}');

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

/// Cargo: `config.json` and index files are documents; a download on the
/// cache's own `dl` is an artifact. Its upstream path here is the default
/// `dl` layout on the sources (`/api/v1/crates/C/V/download`); a registry
/// whose `dl` is elsewhere needs the stored `config.json`
/// ([`cargo::download_url`]) to find it.
fn classify_cargo(mount: &Mount, path: &str) -> Class {
    match cargo::route(path) {
        cargo::Route::Config | cargo::Route::Index(_) => document(mount, path, None),
        cargo::Route::Download { .. } => artifact(path),
        cargo::Route::Pass => Class::Pass,
    }
}

/// Go: lists, `@latest`, query answers and the sumdb's `supported` and
/// `latest` are documents; a canonical version's files and sumdb lookups and
/// tiles never change. Paths are fetched with `!` unencoded.
fn classify_go(mount: &Mount, path: &str) -> Class {
    let decoded = || percent_decode_str(path).decode_utf8_lossy().into_owned();
    match go::route(path) {
        go::Route::List(_)
        | go::Route::Latest(_)
        | go::Route::Query { .. }
        | go::Route::Sumdb {
            path: go::SumdbPath::Supported | go::SumdbPath::Latest,
            ..
        } => {
            let decoded = decoded();
            keyed_document(mount, &decoded, &decoded, None)
        }
        go::Route::Version { .. }
        | go::Route::Sumdb {
            path: go::SumdbPath::Lookup { .. } | go::SumdbPath::Tile(_),
            ..
        } => Class::Artifact {
            upstream: MountUpstream::Sources,
            path: decoded(),
        },
        go::Route::Pass => Class::Pass,
    }
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

    #[test]
    fn npm_packuments_are_documents_per_representation() {
        let m = mount(Profile::Npm);
        let pnpm = "application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8, */*";
        let keys: Vec<_> = [
            "/@acme%2fleft-pad2",
            "/@acme%2Fleft-pad2",
            "/@acme/left-pad2",
        ]
        .into_iter()
        .flat_map(|p| [classify(&m, p, Some(pnpm)), classify(&m, p, None)])
        .map(|class| match class {
            Class::Document(spec) => {
                assert_eq!(spec.path, "/@acme%2fleft-pad2");
                (spec.key, spec.repr)
            }
            other => panic!("{other:?}"),
        })
        .collect();
        assert_eq!(
            keys[0],
            (
                "m\n/@acme/left-pad2\nabbreviated".to_string(),
                Some(Repr::Npm(npm::Repr::Abbreviated))
            )
        );
        assert_eq!(keys[1].0, "m\n/@acme/left-pad2\nfull");
        assert!(keys.iter().step_by(2).all(|k| *k == keys[0]));
        assert!(keys.iter().skip(1).step_by(2).all(|k| *k == keys[1]));
        match classify(&m, "/acme-multi/1.1.0", Some(pnpm)) {
            Class::Document(spec) => assert_eq!(spec.path, "/acme-multi/1.1.0"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            classify(&m, "/@acme%2fleft-pad2/-/left-pad2-1.0.0.tgz", None),
            Class::Artifact {
                upstream: MountUpstream::Sources,
                path: "/@acme/left-pad2/-/left-pad2-1.0.0.tgz".into()
            }
        );
        assert_eq!(
            classify(&m, "/_files/files.example:8080/t/a-1.0.0.tgz", None),
            Class::Artifact {
                upstream: MountUpstream::Files(0),
                path: "/t/a-1.0.0.tgz".into()
            }
        );
        assert_eq!(
            classify(&m, "/_files/evil.example/t/a-1.0.0.tgz", None),
            Class::NotFound
        );
        assert_eq!(classify(&m, "/-/v1/search", None), Class::Pass);
        assert!(matches!(
            classify(&m, "/-/npm/v1/keys", None),
            Class::Document(DocSpec { repr: None, .. })
        ));
    }

    #[test]
    fn cargo_index_files_are_documents_and_downloads_artifacts() {
        let m = mount(Profile::Cargo);
        for p in [
            "/config.json",
            "/1/z",
            "/2/xy",
            "/3/a/abc",
            "/fi/xt/fixture-core",
        ] {
            match classify(&m, p, None) {
                Class::Document(spec) => {
                    assert_eq!((spec.path.as_str(), spec.repr), (p, None));
                    assert_eq!(spec.key, format!("m\n{p}\n-"));
                }
                other => panic!("{p}: {other:?}"),
            }
        }
        assert_eq!(
            classify(&m, "/api/v1/crates/abc/0.2.0/download", None),
            Class::Artifact {
                upstream: MountUpstream::Sources,
                path: "/api/v1/crates/abc/0.2.0/download".into()
            }
        );
        assert_eq!(classify(&m, "/3/b/abc", None), Class::Pass);
        assert_eq!(classify(&m, "/api/v1/crates/new", None), Class::Pass);
    }

    #[test]
    fn go_lists_are_documents_and_versions_artifacts() {
        let m = mount(Profile::Go);
        for (p, fetched) in [
            ("/example.test/hello/@v/list", "/example.test/hello/@v/list"),
            (
                "/example.test/%21shout/@latest",
                "/example.test/!shout/@latest",
            ),
            (
                "/example.test/hello/@v/master.info",
                "/example.test/hello/@v/master.info",
            ),
            (
                "/sumdb/sum.example.test/supported",
                "/sumdb/sum.example.test/supported",
            ),
            (
                "/sumdb/sum.example.test/latest",
                "/sumdb/sum.example.test/latest",
            ),
        ] {
            match classify(&m, p, None) {
                Class::Document(spec) => {
                    assert_eq!(spec.path, fetched);
                    assert_eq!(spec.key, format!("m\n{fetched}\n-"));
                }
                other => panic!("{p}: {other:?}"),
            }
        }
        for (p, fetched) in [
            (
                "/example.test/%21shout/@v/v0.1.0.zip",
                "/example.test/!shout/@v/v0.1.0.zip",
            ),
            (
                "/example.test/hello/@v/v1.0.0.info",
                "/example.test/hello/@v/v1.0.0.info",
            ),
            (
                "/sumdb/sum.example.test/lookup/example.test/hello@v1.0.0",
                "/sumdb/sum.example.test/lookup/example.test/hello@v1.0.0",
            ),
            (
                "/sumdb/sum.example.test/tile/8/0/000.p/3",
                "/sumdb/sum.example.test/tile/8/0/000.p/3",
            ),
        ] {
            assert_eq!(
                classify(&m, p, None),
                Class::Artifact {
                    upstream: MountUpstream::Sources,
                    path: fetched.into()
                },
                "{p}"
            );
        }
        assert_eq!(
            classify(&m, "/example.test/Hello/@v/list", None),
            Class::Pass
        );
    }
}
