//! npm registries: which paths are packuments (documents, one per
//! representation: the full JSON or the abbreviated `install-v1` form),
//! version manifests, tarballs and registry-level endpoints, and the
//! rewriting of packuments (`packument`) so that every `dist.tarball` leads
//! through the cache. Owns the registry's formats only; fetching, caching and
//! verifying are the callers' job.

mod packument;

pub use packument::{rewrite, Error, Rewritten};

use super::{document, files_artifact, keyed_document, Class, MountUpstream};
use crate::config::Mount;
use percent_encoding::percent_decode_str;

/// Which representation of a packument.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Repr {
    /// The full document (`application/json`): every field, `time` included.
    Full,
    /// The abbreviated ("corgi") document
    /// (`application/vnd.npm.install-v1+json`): what installers need, no `time`.
    Abbreviated,
}

/// The abbreviated packument's media type.
pub const ABBREVIATED: &str = "application/vnd.npm.install-v1+json";

impl Repr {
    /// Content-Type that labels a stored document of this representation.
    pub fn media_type(self) -> &'static str {
        match self {
            Repr::Full => "application/json",
            Repr::Abbreviated => ABBREVIATED,
        }
    }

    /// The Accept header to send upstream. A registry without the abbreviated
    /// form answers the full one, which installers read as well.
    pub fn accept_header(self) -> &'static str {
        match self {
            Repr::Full => "application/json",
            Repr::Abbreviated => {
                "application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8, */*"
            }
        }
    }

    /// Short suffix for cache keys and logs: `"full"` / `"abbreviated"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Repr::Full => "full",
            Repr::Abbreviated => "abbreviated",
        }
    }
}

/// Chooses the representation for a client's Accept header: abbreviated when
/// the abbreviated type is listed with q > 0 and at least the q of an
/// explicit `application/json` (pnpm and `npm view` list it first; npm's
/// installer asks for `application/json`). Wildcards do not count: the full
/// document is the default. Never fails.
pub fn negotiate(accept: Option<&str>) -> Repr {
    let mut abbreviated = 0f32;
    let mut json = 0f32;
    for entry in accept.unwrap_or("").split(',') {
        let mut parts = entry.split(';');
        let range = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = parts
            .filter_map(|param| param.split_once('='))
            .find(|(name, _)| name.trim().eq_ignore_ascii_case("q"))
            .and_then(|(_, value)| value.trim().parse::<f32>().ok())
            .filter(|q| (0.0..=1.0).contains(q))
            .unwrap_or(1.0);
        if range == ABBREVIATED {
            abbreviated = abbreviated.max(q);
        } else if range == "application/json" {
            json = json.max(q);
        }
    }
    if abbreviated > 0.0 && abbreviated >= json {
        Repr::Abbreviated
    } else {
        Repr::Full
    }
}

/// A package name as the registry spells it: `name` or `@scope/name`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackageName {
    scope: Option<String>,
    name: String,
}

impl PackageName {
    /// Validates the decoded parts. Each must be URL-safe (what
    /// `encodeURIComponent` leaves alone, as npm's name rules require), at
    /// most 214 bytes in all, and not `.` or `..`; an unscoped name must not
    /// start with `.` or `_` (which also keeps `/_files/` free).
    pub fn try_new(scope: Option<&str>, name: &str) -> Option<PackageName> {
        let url_safe = |part: &str| {
            !part.is_empty()
                && part != "."
                && part != ".."
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b))
        };
        let total = name.len() + scope.map_or(0, |s| s.len() + 2);
        if !url_safe(name) || total > 214 {
            return None;
        }
        match scope {
            Some(scope) if url_safe(scope) => {}
            Some(_) => return None,
            None if name.starts_with(['.', '_']) => return None,
            None => {}
        }
        Some(PackageName {
            scope: scope.map(str::to_string),
            name: name.to_string(),
        })
    }

    /// `name` or `@scope/name`: the key spelling.
    pub fn as_path(&self) -> String {
        match &self.scope {
            Some(scope) => format!("@{scope}/{}", self.name),
            None => self.name.clone(),
        }
    }

    /// How a packument is asked for upstream: `name` or `@scope%2fname` (the
    /// spelling the npm client sends; registries take `/` too).
    pub fn upstream_segment(&self) -> String {
        match &self.scope {
            Some(scope) => format!("@{scope}%2f{}", self.name),
            None => self.name.clone(),
        }
    }
}

/// What a path (after the mount's `/NAME`) is on an npm registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// A packument: `/NAME`, `/@scope%2fname` (npm), `/@scope%2Fname`
    /// (pnpm) or `/@scope/name` — one document whatever the spelling.
    Packument(PackageName),
    /// A version manifest or dist-tag: `/NAME/1.0.0`, `/NAME/latest`.
    Version(PackageName, String),
    /// A tarball, `/NAME/-/FILE` (`/@scope/name/-/FILE`); `upstream_path` is
    /// the registry's path for it, with the scope's `/` unencoded.
    Tarball {
        /// The package.
        name: PackageName,
        /// Raw path to ask the registry for.
        upstream_path: String,
    },
    /// A file of the mount's files host `authority`: `/_files/AUTHORITY/PATH`.
    Files {
        /// The host (percent-decoded; pip-style `%3A` works).
        authority: String,
        /// The raw path on it.
        path: String,
    },
    /// The registry's signing keys (`/-/npm/v1/keys`): a small document that
    /// `npm audit signatures` reads, worth keeping for offline use.
    Keys,
    /// Anything else (`/`, `/-/ping`, search, login): passed uncached.
    Pass,
}

/// Classifies `path` (raw, non-empty, after `/NAME`).
pub fn route(path: &str) -> Route {
    let Some(rest) = path.strip_prefix('/') else {
        return Route::Pass;
    };
    if rest == "-/npm/v1/keys" {
        return Route::Keys;
    }
    let mut segments = rest.split('/');
    let first = segments.next().unwrap_or_default();
    if first == "-" {
        // The registry's own endpoints: ping, search, login, audit.
        return Route::Pass;
    }
    if first == super::link::FILES_SEGMENT {
        let Some((authority, tail)) = rest[first.len() + 1..].split_once('/') else {
            return Route::Pass;
        };
        return Route::Files {
            authority: percent_decode_str(authority)
                .decode_utf8_lossy()
                .into_owned(),
            path: format!("/{tail}"),
        };
    }
    let decoded_first = decode(first);
    let (name, raw_name) = match decoded_first.as_deref().and_then(|s| s.strip_prefix('@')) {
        Some(scoped) => match scoped.split_once('/') {
            // `@scope%2fname`: one raw segment.
            Some((scope, name)) => (
                PackageName::try_new(Some(scope), name),
                format!("@{scope}/{name}"),
            ),
            None => {
                let Some(second) = segments.next() else {
                    return Route::Pass;
                };
                let name = decode(second);
                (
                    name.as_deref()
                        .and_then(|n| PackageName::try_new(Some(scoped), n)),
                    format!("{first}/{second}"),
                )
            }
        },
        None => (
            decoded_first
                .as_deref()
                .and_then(|n| PackageName::try_new(None, n)),
            first.to_string(),
        ),
    };
    let Some(name) = name else {
        return Route::Pass;
    };
    let tail: Vec<&str> = segments.collect();
    match tail.as_slice() {
        [] => Route::Packument(name),
        ["-", file] if !file.is_empty() && decode(file).is_some_and(|f| !f.contains('/')) => {
            Route::Tarball {
                name,
                upstream_path: format!("/{raw_name}/-/{file}"),
            }
        }
        [version] => match decode(version) {
            Some(v) if !v.is_empty() && !v.contains('/') && v != "-" => Route::Version(name, v),
            _ => Route::Pass,
        },
        _ => Route::Pass,
    }
}

/// A percent-decoded segment, if it is UTF-8.
fn decode(raw: &str) -> Option<String> {
    percent_decode_str(raw)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

/// [`rewrite`] for `mount` served at `mount_url`: tarballs on its sources or
/// files hosts lead through it ([`super::link::mount_path`]); any other host
/// is left as it is and counted in [`Rewritten::unmapped`].
pub fn rewrite_for(
    mount: &Mount,
    mount_url: &str,
    page_url: &url::Url,
    body: bytes::Bytes,
) -> Result<Rewritten, Error> {
    rewrite(body, page_url, mount_url, &|link| {
        super::link::mount_path(mount, link)
    })
}

/// The class of `path` on an npm mount: packuments and version manifests are
/// documents (packuments one per representation), tarballs artifacts.
pub(super) fn classify(mount: &Mount, path: &str, accept: Option<&str>) -> Class {
    let repr = |r| Some(super::Repr::Npm(r));
    match route(path) {
        Route::Packument(name) => keyed_document(
            mount,
            &format!("/{}", name.as_path()),
            &format!("/{}", name.upstream_segment()),
            repr(negotiate(accept)),
        ),
        // The registry has one representation of a version manifest.
        Route::Version(name, version) => {
            let encoded = percent_encoding::utf8_percent_encode(&version, PATH_SEGMENT);
            keyed_document(
                mount,
                &format!("/{}/{version}", name.as_path()),
                &format!("/{}/{encoded}", name.upstream_segment()),
                repr(Repr::Full),
            )
        }
        Route::Tarball { upstream_path, .. } => Class::Artifact {
            upstream: MountUpstream::Sources,
            path: upstream_path,
        },
        Route::Files { authority, path } => files_artifact(mount, &authority, path),
        Route::Keys => document(mount, path, None),
        Route::Pass => Class::Pass,
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

#[cfg(test)]
mod tests;
