//! `Proxy::handle`: the whole request pipeline, reading like the flow —
//! target → route → store lookup → (hit | join fill | fetch and fill) → respond.
//! `target` and `route` decide where a request goes, `cached` does the
//! lookup's steps (with `filler`, the fill task), `document` serves a
//! mount's index documents, `respond` makes every answer and picks every
//! status, and `access` logs and counts each request once.

mod access;
mod cached;
pub mod conditional;
mod document;
pub mod error;
mod filler;
pub mod headers;
mod indexed;
mod mounted;
pub mod policy;
pub mod respond;
pub mod route;
mod supply;
pub mod target;

use crate::body::Body;
use crate::config::Config;
use crate::metrics::{Metrics, Scope};
use crate::mount::MountUpstream;
use crate::store::{Lookup, Store};
use crate::upstream::{FetchRequest, Upstream, Via};
use access::AccessRecord;
use cached::Next;
pub use error::Error;
use http::{header, Request, Response};
use respond::CacheStatus;
use route::Routed;
use std::sync::Arc;
use std::time::Instant;
use target::{ConnInfo, HostRules, Target};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How often a request looks a key up: again when the fill it followed was
/// given up, or failed in a way another attempt may fix.
const MAX_LOOKUPS: usize = 4;

/// The request handler. Cheap to clone; clones share the store and tasks.
#[derive(Clone)]
pub struct Proxy {
    store: Store,
    upstream: Upstream,
    rules: Arc<HostRules>,
    tasks: TaskTracker,
    fills_cancel: CancellationToken,
    fill_slots: Arc<Semaphore>,
    policy: Arc<policy::Policy>,
    metrics: Arc<Metrics>,
    /// The supply-chain policy, and the views of documents it filtered.
    supply: Arc<crate::supply::Supply>,
    views: Arc<supply::Views>,
    /// The URL clients reach the proxy at, without a trailing `/`.
    public_url: Arc<str>,
}

impl Proxy {
    /// A proxy over `store` and `upstream`. Fill tasks are spawned on `tasks`,
    /// at most `config.upstream.max_fills` at once, and abandoned (entries not
    /// committed) when `fills_cancel` fires. Every answered request, fill
    /// started and fill joined is counted in `metrics`.
    pub fn new(
        store: Store,
        upstream: Upstream,
        metrics: Arc<Metrics>,
        rules: HostRules,
        tasks: TaskTracker,
        fills_cancel: CancellationToken,
        config: &Config,
    ) -> Proxy {
        Proxy {
            policy: Arc::new(policy::Policy::new(&config.policy)),
            store,
            upstream,
            rules: Arc::new(rules),
            tasks,
            fills_cancel,
            fill_slots: Arc::new(Semaphore::new(config.upstream.max_fills)),
            metrics,
            supply: Arc::new(crate::supply::Supply::off()),
            views: Arc::default(),
            public_url: match &config.server.public_url {
                Some(url) => url.as_str().into(),
                // `app` fills it in once bound; a proxy built otherwise names
                // its configured address.
                None => format!("http://{}:{}", config.server.host, config.server.port).into(),
            },
        }
    }

    /// This proxy under the supply-chain policy `supply` (none by default).
    pub fn with_supply(mut self, supply: Arc<crate::supply::Supply>) -> Proxy {
        self.supply = supply;
        self
    }

    /// The absolute URL clients reach `mount` at, without a trailing `/`.
    fn mount_url(&self, mount: &crate::config::Mount) -> String {
        format!("{}/{}", self.public_url, mount.name)
    }

    /// Handles one request. Never fails: every error becomes a response.
    /// The request is logged and counted once, when its body is done.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<LoggedBody> {
        let started = Instant::now();
        let (req, _body) = req.into_parts();
        let conn = req.extensions.get::<ConnInfo>().copied();
        let host = req.headers.get(header::HOST).and_then(|h| h.to_str().ok());
        let target = target::parse(&req.uri, host, conn.as_ref(), &self.rules);
        let row = self.metrics.row(match &target {
            Ok(Target::Mount { mount, .. }) => Scope::Mount(&mount.name),
            Ok(Target::Mirrors { .. }) => Scope::Mirrors,
            Ok(Target::Host { authority, .. }) => Scope::Host(authority.as_str()),
            Err(_) => Scope::Unrouted,
        });
        let unanswered = access::Unanswered::new(&req, conn.as_ref(), started, row, &self.metrics);
        let mount = match &target {
            Ok(Target::Mount { mount, .. }) => Some(mount.name.clone()),
            _ => None,
        };
        let answer = match target {
            Ok(target) => self.serve(&req, target).await,
            Err(err) => Err(err.into()),
        };
        let mut response = answer.unwrap_or_else(|err| refused(&req, conn.as_ref(), &err));
        unanswered.disarm();
        let cache = respond::stamp(&mut response);
        let record =
            AccessRecord::new(&req, &response, cache, (row, mount), conn.as_ref(), started);
        let metrics = self.metrics.clone();
        response.map(|b| LoggedBody::new(b, record, metrics))
    }

    /// The flow: target → route → lookup → hit | join | fill. Every answer,
    /// error or not, is made by `respond`.
    async fn serve(
        &self,
        req: &http::request::Parts,
        target: Target,
    ) -> Result<Response<Body>, Error> {
        let no_cache = &self.policy.no_cache;
        let routed = match &target {
            Target::Mount {
                mount, path, query, ..
            } => mounted::route(req, mount, path, query.as_deref(), no_cache)?,
            _ => route::route(req, target, no_cache)?,
        };
        let (target, key) = match routed {
            Routed::Cache { target, key } => {
                self.admit(req, &target).await?;
                let path = target.path().to_string();
                match self.download_target(target).await {
                    Some(target) => (target, key),
                    None => return Err(Error::NotOnMount { path }),
                }
            }
            Routed::Pass { target, reason } => {
                self.admit_passed(req, &target).await?;
                tracing::debug!(uri = %req.uri, reason = reason.as_str(), "passing uncached");
                return self.pass(req, &target).await;
            }
            Routed::Document {
                target,
                mount,
                spec,
            } => return self.document(req, &target, &mount, spec).await,
            Routed::Local(local) => return Ok(respond::local(&req.method, &local)),
        };
        if self.policy.negative.may_hold() && self.policy.negative.knows_missing(&key.canonical()) {
            return Err(Error::Missing {
                key: key.to_string(),
            });
        }
        let expected = match self.listed_digest(&target, &key).await {
            Ok(expected) => expected,
            Err(err) => {
                // Never fetched, never stored: the operator must settle it.
                tracing::error!(key = %key, error = %err, "refused: the hashes known for this file disagree");
                return Err(err);
            }
        };
        let mut retried = None;
        for _ in 0..MAX_LOOKUPS {
            let next = match self.store.lookup(&key).await {
                Ok(Lookup::Hit(entry)) => self.hit(req, &key, entry, expected.as_ref()).await,
                Ok(Lookup::Filling(watch)) => self.join(req, &key, watch).await,
                Ok(Lookup::Miss(permit)) => self.fill(req, &target, permit, expected.clone()).await,
                Ok(Lookup::Conflict) => {
                    tracing::debug!(key = %key, "path conflicts with a cached entry; passing uncached");
                    Next::Pass
                }
                Err(err) => {
                    tracing::error!(key = %key, error = %err, "store lookup failed; passing uncached");
                    Next::Pass
                }
            };
            match next {
                Next::Answer(answer) => return answer,
                Next::Pass => return self.pass(req, &target).await,
                Next::Again => continue,
                Next::Retry(err) => retried = Some(err),
            }
        }
        Err(retried.unwrap_or(Error::Busy {
            key: key.to_string(),
        }))
    }

    /// Fetches `target` for the client and streams it through uncached.
    async fn pass(
        &self,
        req: &http::request::Parts,
        target: &Target,
    ) -> Result<Response<Body>, Error> {
        let path_and_query = target.path_and_query();
        let fetch = FetchRequest {
            via: via(target),
            path_and_query: &path_and_query,
            method: req.method.clone(),
            headers: headers::forwardable(&req.headers),
            decode: false,
        };
        let fetched = self.upstream.fetch(fetch).await.map_err(Error::fetch)?;
        Ok(respond::passthrough(
            &req.method,
            fetched,
            CacheStatus::Pass,
        ))
    }
}

fn via(target: &Target) -> Via<'_> {
    match target {
        Target::Mirrors { .. } => Via::Sources,
        Target::Host { authority, .. } => Via::Host {
            https: false,
            authority,
        },
        Target::Mount {
            mount, upstream, ..
        } => match upstream {
            MountUpstream::Sources => Via::List(&mount.sources),
            MountUpstream::Files(i) => Via::List(std::slice::from_ref(&mount.files_hosts[*i])),
        },
    }
}

/// The answer to a request that failed; a refused one (the client's fault)
/// is logged here, the only place that sees it whole.
fn refused(req: &http::request::Parts, conn: Option<&ConnInfo>, err: &Error) -> Response<Body> {
    if err.class() == error::Class::Client {
        let host = req.headers.get(header::HOST).and_then(|h| h.to_str().ok());
        let orig_dst = conn.and_then(ConnInfo::redirected_from);
        tracing::warn!(method = %req.method, uri = %access::WithoutQuery(&req.uri), host,
            ?orig_dst, error = %err, "request refused");
    }
    respond::error(err)
}

pub use access::LoggedBody;
