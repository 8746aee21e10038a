//! Routing under a `--mirror` mount: the mount's profile classifies the path
//! (`mount::classify`) into an index document, an artifact on one of the
//! mount's upstreams, a redirect, the mount's own root, or something passed
//! through. Hostile paths are refused whatever the profile makes of them.

use super::policy::NoCache;
use super::route::{self, Local, PassReason, RejectReason, Routed};
use super::target::Target;
use super::Error;
use crate::config::Mount;
use crate::mount::{self, Class, MountUpstream};
use crate::store::{CacheKey, KeyError, Namespace};
use http::{header, Method};
use std::sync::Arc;

/// Routes the request `req` for `path` (raw, after `/NAME`) and `query`
/// under `mount`.
pub(super) fn route(
    req: &http::request::Parts,
    mount: &Arc<Mount>,
    path: &str,
    query: Option<&str>,
    no_cache: &NoCache,
) -> Result<Routed, Error> {
    if req.method != Method::GET && req.method != Method::HEAD {
        return Err(Error::rejected(RejectReason::Method, &req.method));
    }
    let namespace = Namespace::Mount(mount.name.clone());
    let key_path = mount::key_path(mount, path);
    match CacheKey::try_from_path(
        namespace.clone(),
        if path.is_empty() { "/" } else { &key_path },
    ) {
        Ok(_) | Err(KeyError::Directory) => {}
        Err(err) => return Err(Error::rejected(RejectReason::Path(err), &req.method)),
    }
    let accept = req
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    let on = |upstream, path: String| Target::Mount {
        mount: mount.clone(),
        upstream,
        path,
        query: query.map(str::to_string),
    };
    // Credentials, a query, or an operator pattern keep a request uncached.
    let uncached = route::uncacheable(&req.headers, query).or_else(|| {
        no_cache
            .matches(req.uri.path())
            .then_some(PassReason::Pattern)
    });
    let sources = on(MountUpstream::Sources, path.to_string());
    Ok(match mount::classify(mount, path, accept) {
        Class::Root => Routed::Local(Local::MountRoot),
        Class::Redirect(location) => Routed::Local(Local::Redirect(match query {
            Some(q) => format!("{location}?{q}"),
            None => location,
        })),
        Class::NotFound => {
            return Err(Error::NotOnMount {
                path: path.to_string(),
            })
        }
        Class::Pass => Routed::Pass {
            target: sources,
            reason: PassReason::Listing,
        },
        Class::Document(spec) => match uncached {
            Some(reason) => Routed::Pass {
                target: sources,
                reason,
            },
            None => Routed::Document {
                target: sources,
                mount: mount.clone(),
                spec,
            },
        },
        Class::Artifact {
            upstream,
            path: upstream_path,
        } => {
            let target = on(upstream, upstream_path);
            match (CacheKey::try_from_path(namespace, &key_path), uncached) {
                (Err(_), _) => Routed::Pass {
                    target,
                    reason: PassReason::Directory,
                },
                (Ok(_), Some(reason)) => Routed::Pass { target, reason },
                (Ok(key), None) => Routed::Cache { target, key },
            }
        }
    })
}
