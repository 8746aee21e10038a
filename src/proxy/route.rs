//! Routing: whether a request is served through the cache (a file, or a
//! mount's index document), passed through uncached, answered by the proxy
//! itself, or refused — decided from the request and its target alone
//! (`mounted` does it for a mount's paths, with the same outcomes).

use super::policy::NoCache;
use super::target::Target;
use super::Error;
use crate::config::Mount;
use crate::mount::DocSpec;
use crate::store::{CacheKey, KeyError, Namespace};
use http::{header, HeaderMap, Method};
use std::sync::Arc;

/// Why a request is passed through uncached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassReason {
    /// It carries `Authorization` or `Cookie`: the answer may be per-user.
    Credentials,
    /// It has a query string.
    Query,
    /// It names a directory (ends in `/`).
    Directory,
    /// It matches a `--no-cache` pattern.
    Pattern,
    /// A mount passes it through (listings and the like).
    Listing,
}

impl PassReason {
    /// A short name for logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            PassReason::Credentials => "credentials",
            PassReason::Query => "query",
            PassReason::Directory => "directory",
            PassReason::Pattern => "no-cache pattern",
            PassReason::Listing => "listing",
        }
    }
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RejectReason {
    /// Only GET and HEAD are served.
    Method,
    /// The path is hostile or malformed.
    Path(KeyError),
}

/// What to do with a request.
#[derive(Debug)]
pub enum Route {
    /// Serve through the cache under this key.
    Cache(CacheKey),
    /// Fetch and stream without storing.
    Pass(PassReason),
    /// Refuse.
    Reject(RejectReason),
}

/// Where a request goes, once routed.
#[derive(Debug)]
pub enum Routed {
    /// Served through the cache under `key`, filled from `target`.
    Cache {
        /// Where a fill fetches it.
        target: Target,
        /// The entry.
        key: CacheKey,
    },
    /// Fetched from `target` and streamed without storing.
    Pass {
        /// Where it is fetched.
        target: Target,
        /// Why it is not cached.
        reason: PassReason,
    },
    /// An index document of `mount`, revalidated after the TTL.
    Document {
        /// Where it is revalidated.
        target: Target,
        /// The mount it belongs to.
        mount: Arc<Mount>,
        /// Which document.
        spec: DocSpec,
    },
    /// Answered by the proxy itself.
    Local(Local),
}

/// The answers the proxy gives without asking anyone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Local {
    /// A RubyGems mount's root: `gem` probes it with `HEAD` to choose the
    /// compact index, also when the upstream is away.
    MountRoot,
    /// Another spelling of a canonical path: redirect there (query kept).
    Redirect(String),
}

/// Routes a request for `target` (the mirrors or a named host; a mount's
/// paths are routed by its profile, in `mounted`): refused (`Err`), passed
/// uncached, or served through the cache. `no_cache` holds the operator's
/// patterns, matched against the request's own path.
pub fn route(
    req: &http::request::Parts,
    target: Target,
    no_cache: &NoCache,
) -> Result<Routed, Error> {
    match classify(&req.method, &target, &req.headers) {
        Route::Reject(reason) => Err(Error::rejected(reason, &req.method)),
        Route::Pass(reason) => Ok(Routed::Pass { target, reason }),
        Route::Cache(_) if no_cache.matches(req.uri.path()) => Ok(Routed::Pass {
            target,
            reason: PassReason::Pattern,
        }),
        Route::Cache(key) => Ok(Routed::Cache { target, key }),
    }
}

/// Classifies a request for a target outside the mounts.
pub fn classify(method: &Method, target: &Target, headers: &HeaderMap) -> Route {
    if method != Method::GET && method != Method::HEAD {
        return Route::Reject(RejectReason::Method);
    }
    let namespace = match target {
        Target::Mirrors { .. } => Namespace::Mirrors,
        Target::Host { authority, .. } => Namespace::Host(authority.as_str().to_string()),
        Target::Mount { mount, .. } => Namespace::Mount(mount.name.clone()),
    };
    // Validate the path even when passing, so hostile paths never reach an upstream.
    let key = match CacheKey::try_from_path(namespace, target.path()) {
        Ok(key) => key,
        Err(KeyError::Directory) => return Route::Pass(PassReason::Directory),
        Err(err) => return Route::Reject(RejectReason::Path(err)),
    };
    match uncacheable(headers, target.query()) {
        Some(reason) => Route::Pass(reason),
        None => Route::Cache(key),
    }
}

/// Why a request for a cacheable path must still pass uncached: the answer
/// may be per-user (credentials) or per-query.
pub fn uncacheable(headers: &HeaderMap, query: Option<&str>) -> Option<PassReason> {
    if headers.contains_key(header::AUTHORIZATION) || headers.contains_key(header::COOKIE) {
        return Some(PassReason::Credentials);
    }
    if query.is_some() {
        return Some(PassReason::Query);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn mirrors(p: &str, q: Option<&str>) -> Target {
        Target::Mirrors {
            path: p.into(),
            query: q.map(Into::into),
        }
    }

    #[test]
    fn routes() {
        let h = HeaderMap::new();
        assert!(matches!(
            classify(&Method::GET, &mirrors("/a", None), &h),
            Route::Cache(_)
        ));
        assert!(matches!(
            classify(&Method::HEAD, &mirrors("/a", None), &h),
            Route::Cache(_)
        ));
        assert!(matches!(
            classify(&Method::POST, &mirrors("/a", None), &h),
            Route::Reject(RejectReason::Method)
        ));
        assert!(matches!(
            classify(&Method::GET, &mirrors("/a", Some("x=1")), &h),
            Route::Pass(PassReason::Query)
        ));
        assert!(matches!(
            classify(&Method::GET, &mirrors("/d/", None), &h),
            Route::Pass(PassReason::Directory)
        ));
        assert!(matches!(
            classify(&Method::GET, &mirrors("/../x", None), &h),
            Route::Reject(RejectReason::Path(_))
        ));
        let mut c = HeaderMap::new();
        c.insert(header::COOKIE, HeaderValue::from_static("a=b"));
        assert!(matches!(
            classify(&Method::GET, &mirrors("/a", None), &c),
            Route::Pass(PassReason::Credentials)
        ));
        let mut a = HeaderMap::new();
        a.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic x"));
        assert!(matches!(
            classify(&Method::GET, &mirrors("/a", None), &a),
            Route::Pass(PassReason::Credentials)
        ));
    }
}
