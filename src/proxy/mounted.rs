//! Requests under a `--mirror` mount: the mount's profile classifies the
//! path; documents go through revalidation (`document`), artifacts through the
//! streaming fill with the digest their index lists, and the rest is answered
//! here.

use super::route::{self, PassReason, RejectReason};
use super::target::Target;
use super::{respond, Error, Proxy};
use crate::body::Body;
use crate::config::{Mount, Profile};
use crate::digest::Digest;
use crate::mount::{self, rubygems, Class, MountUpstream};
use crate::store::{CacheKey, KeyError, Namespace};
use http::{header, Method, Response};
use std::sync::Arc;

impl Proxy {
    pub(super) async fn mounted(
        &self,
        req: &http::request::Parts,
        mount: Arc<Mount>,
        path: &str,
        query: Option<&str>,
    ) -> Result<Response<Body>, Error> {
        if req.method != Method::GET && req.method != Method::HEAD {
            return Err(Error::rejected(RejectReason::Method, &req.method));
        }
        // Hostile paths are refused whatever the profile makes of them.
        let namespace = Namespace::Mount(mount.name.clone());
        match CacheKey::try_from_path(namespace.clone(), if path.is_empty() { "/" } else { path }) {
            Ok(_) | Err(KeyError::Directory) => {}
            Err(err) => return Err(Error::rejected(RejectReason::Path(err), &req.method)),
        }
        let accept = req
            .headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok());
        let sources = Target::Mount {
            mount: mount.clone(),
            upstream: MountUpstream::Sources,
            path: path.to_string(),
            query: query.map(str::to_string),
        };
        match mount::classify(&mount, path, accept) {
            Class::Root => Ok(respond::mount_root(&req.method)),
            Class::Redirect(location) => Ok(redirect(&location, query)),
            Class::NotFound => Err(Error::NotOnMount {
                path: path.to_string(),
            }),
            Class::Pass => self.pass(req, &sources).await,
            Class::Document(spec) => {
                if let Some(reason) = self.pass_reason(req, query) {
                    tracing::debug!(uri = %req.uri, reason = reason.as_str(), "passing uncached");
                    return self.pass(req, &sources).await;
                }
                self.document(req, &sources, &mount, spec).await
            }
            Class::Artifact {
                upstream,
                path: up_path,
            } => {
                let target = Target::Mount {
                    mount: mount.clone(),
                    upstream,
                    path: up_path,
                    query: query.map(str::to_string),
                };
                let Ok(key) = CacheKey::try_from_path(namespace, path) else {
                    return self.pass(req, &target).await;
                };
                if let Some(reason) = self.pass_reason(req, query) {
                    tracing::debug!(uri = %req.uri, reason = reason.as_str(), "passing uncached");
                    return self.pass(req, &target).await;
                }
                let expected = self.listed_digest(&mount, path, &key).await;
                self.cached(req, &target, key, expected).await
            }
        }
    }

    /// Credentials, a query, or an operator pattern keep a request uncached.
    fn pass_reason(&self, req: &http::request::Parts, query: Option<&str>) -> Option<PassReason> {
        route::uncacheable(&req.headers, query).or_else(|| {
            self.policy
                .no_cache
                .matches(req.uri.path())
                .then_some(PassReason::Pattern)
        })
    }

    /// The digest an index lists for the file at `path` of `mount`: from the
    /// PyPI pages served so far, or from the cached RubyGems `/info/NAME`.
    async fn listed_digest(&self, mount: &Mount, path: &str, key: &CacheKey) -> Option<Digest> {
        match mount.profile {
            Profile::Pypi => self.policy.listed.get(&key.canonical()),
            Profile::Rubygems => {
                let file = path.strip_prefix("/gems/")?;
                let file = percent_encoding::percent_decode_str(file)
                    .decode_utf8()
                    .ok()?;
                for name in rubygems::candidate_names(&file) {
                    let Class::Document(spec) =
                        mount::classify(mount, &format!("/info/{name}"), None)
                    else {
                        continue;
                    };
                    let Ok(Some(doc)) = self.store.read_doc(&spec.key).await else {
                        continue;
                    };
                    let info = String::from_utf8_lossy(&doc.body);
                    let listed = rubygems::checksum_for(name, &info, &file);
                    if let Some(digest) = listed.as_deref().and_then(Digest::sha256) {
                        return Some(digest);
                    }
                }
                None
            }
            Profile::Gentoo | Profile::Generic => None,
        }
    }
}

fn redirect(location: &str, query: Option<&str>) -> Response<Body> {
    match query {
        Some(q) => respond::moved(&format!("{location}?{q}")),
        None => respond::moved(location),
    }
}
