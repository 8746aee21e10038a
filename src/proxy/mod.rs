//! `Proxy::handle`: the whole request pipeline, reading like the flow —
//! target → route → store lookup → (hit | join fill | fetch and fill) → respond.

mod access;
pub mod conditional;
mod document;
pub mod error;
mod filler;
pub mod headers;
mod mounted;
pub mod policy;
pub mod respond;
pub mod route;
pub mod target;

use crate::body::{self, Body};
use crate::config::Config;
use crate::digest::Digest;
use crate::metrics::Metrics;
use crate::mount::MountUpstream;
use crate::store::{
    BodyReader, CacheKey, Entry, Failure, FillHead, FillStart, FillState, FillWatch, Lookup, Store,
};
use crate::upstream::{FetchRequest, Upstream, Via};
use access::AccessRecord;
pub use error::Error;
use http::{header, HeaderMap, HeaderValue, Request, Response};
use respond::{CacheStatus, Representation};
use route::Route;
use std::sync::Arc;
use std::time::Instant;
use target::{ConnInfo, HostRules, Target};
use tokio::sync::{oneshot, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How often a request re-looks-up a key whose fill leader gave up.
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
        }
    }

    /// Handles one request. Never fails: every error becomes a response.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<LoggedBody> {
        let started = Instant::now();
        let (parts, _body) = req.into_parts();
        let conn = parts.extensions.get::<ConnInfo>().copied();
        let unanswered = access::Unanswered::new(
            &parts.method,
            &parts.uri,
            conn.map(|c| c.peer),
            started,
            self.metrics.clone(),
        );
        let mut response = match self.dispatch(&parts, conn.as_ref()).await {
            Ok(response) => response,
            Err(err) => {
                if err.class() == error::Class::Client {
                    let host = parts
                        .headers
                        .get(header::HOST)
                        .and_then(|h| h.to_str().ok());
                    let orig_dst = conn.as_ref().and_then(ConnInfo::redirected_from);
                    tracing::warn!(method = %parts.method, uri = %parts.uri, host, ?orig_dst,
                        error = %err, "request refused");
                }
                respond::error(&err)
            }
        };
        unanswered.disarm();
        let cache = respond::stamp(&mut response);
        let record = AccessRecord {
            method: parts.method.clone(),
            target: parts.uri.clone(),
            status: response.status().as_u16(),
            cache,
            peer: conn.map(|c| c.peer),
            orig_dst: conn.as_ref().and_then(ConnInfo::redirected_from),
            started,
            expected: response
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok()),
        };
        let metrics = self.metrics.clone();
        response.map(|b| LoggedBody::new(b, record, metrics))
    }

    async fn dispatch(
        &self,
        req: &http::request::Parts,
        conn: Option<&ConnInfo>,
    ) -> Result<Response<Body>, Error> {
        let host = req.headers.get(header::HOST).and_then(|h| h.to_str().ok());
        let target = target::parse(&req.uri, host, conn, &self.rules)?;
        if let Some(dst) = conn.and_then(ConnInfo::redirected_from) {
            tracing::debug!(orig_dst = %dst, host, "redirected connection");
        }
        if let Target::Mount {
            mount, path, query, ..
        } = &target
        {
            return self
                .mounted(req, mount.clone(), path, query.as_deref())
                .await;
        }
        match route::classify(&req.method, &target, &req.headers) {
            Route::Reject(reason) => Err(Error::rejected(reason, &req.method)),
            Route::Pass(reason) => {
                tracing::debug!(uri = %req.uri, reason = reason.as_str(), "passing uncached");
                self.pass(req, &target).await
            }
            Route::Cache(_) if self.policy.no_cache.matches(req.uri.path()) => {
                tracing::debug!(uri = %req.uri, reason = "no-cache pattern", "passing uncached");
                self.pass(req, &target).await
            }
            Route::Cache(key) => self.cached(req, &target, key, None).await,
        }
    }

    /// Serves `key` through the cache; `expected` is what an index lists for
    /// it (a fill is verified against it before it is committed).
    async fn cached(
        &self,
        req: &http::request::Parts,
        target: &Target,
        key: CacheKey,
        expected: Option<Digest>,
    ) -> Result<Response<Body>, Error> {
        if self.policy.negative.may_hold() && self.policy.negative.knows_missing(&key.canonical()) {
            return Err(Error::Missing {
                key: key.to_string(),
            });
        }
        for _ in 0..MAX_LOOKUPS {
            let lookup = match self.store.lookup(&key).await {
                Ok(lookup) => lookup,
                Err(err) => {
                    tracing::error!(key = %key, error = %err, "store lookup failed; passing uncached");
                    return self.pass(req, target).await;
                }
            };
            match lookup {
                Lookup::Hit(entry) => {
                    let stored = entry.meta.as_ref().map(|m| m.sha256.as_str());
                    match (&expected, stored) {
                        (Some(listed), Some(stored)) if listed.contradicts_sha256(stored) => {
                            // Cached before its index was seen (or the index
                            // changed): the index wins; fetch again, verified.
                            tracing::error!(key = %key, stored, listed = %listed,
                                "cached file does not match the digest its index lists; dropping it");
                            if let Err(err) = self.store.discard(&key, &entry).await {
                                tracing::error!(key = %key, error = %err, "cannot drop the entry; passing uncached");
                                return self.pass(req, target).await;
                            }
                            continue;
                        }
                        _ => return Ok(hit(req, &key, entry)),
                    }
                }
                Lookup::Conflict => {
                    tracing::debug!(key = %key, "path conflicts with a cached entry; passing uncached");
                    return self.pass(req, target).await;
                }
                Lookup::Filling(mut watch) => {
                    self.metrics.fill_joined();
                    match watch.started().await {
                        FillStart::Started(head) => {
                            return from_fill(req, &key, &head, watch, false).await
                        }
                        FillStart::Failed(failure) => return Err(self.failed(&key, &failure)),
                        FillStart::Uncacheable => return self.pass(req, target).await,
                        FillStart::Vacated => continue,
                    }
                }
                Lookup::Miss(permit) => {
                    // Fills outlive their clients, so they need a bound of their own.
                    let Ok(slot) = self.fill_slots.clone().try_acquire_owned() else {
                        tracing::warn!(key = %key, "too many fills in progress; passing uncached");
                        permit.uncacheable();
                        return self.pass(req, target).await;
                    };
                    // The fill task owns the fetch, so this client leaving (even
                    // before the upstream answers) cancels nothing.
                    let mut watch = permit.watch();
                    let (handback, mut returned) = oneshot::channel();
                    let job = filler::Job {
                        upstream: self.upstream.clone(),
                        target: target.clone(),
                        expected: expected.clone(),
                        max_entry: self.policy.max_entry,
                        cancel: self.fills_cancel.clone(),
                        slot,
                    };
                    self.tasks.spawn(filler::run(job, permit, handback));
                    self.metrics.fill_started();
                    match watch.started().await {
                        FillStart::Started(head) => {
                            return from_fill(req, &key, &head, watch, true).await
                        }
                        FillStart::Failed(failure) => return Err(self.failed(&key, &failure)),
                        FillStart::Uncacheable => {
                            // Handed back before the state changed, so it is here.
                            if let Ok(fetched) = returned.try_recv() {
                                return Ok(respond::passthrough(
                                    &req.method,
                                    fetched,
                                    CacheStatus::Pass,
                                ));
                            }
                            return self.pass(req, target).await;
                        }
                        FillStart::Vacated => continue,
                    }
                }
            }
        }
        Err(Error::Busy {
            key: key.to_string(),
        })
    }

    /// The leader's error for a fill that failed before it started (the
    /// leader's own request comes here too, so all answer alike).
    fn failed(&self, key: &CacheKey, failure: &Failure) -> Error {
        let err = Error::from_leader(failure, &key.to_string());
        if err.is_not_found() {
            self.policy.negative.remember(&key.canonical());
        }
        err
    }

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

fn hit(req: &http::request::Parts, key: &CacheKey, entry: Entry) -> Response<Body> {
    let mut stored = match &entry.meta {
        Some(meta) => headers::to_map(&meta.headers),
        None => legacy_headers(key, &entry),
    };
    if !stored.contains_key(header::CONTENT_TYPE) {
        stored.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
    }
    let rep = Representation {
        headers: stored,
        len: Some(entry.len),
        cache: CacheStatus::Hit,
    };
    respond::representation(&req.method, &req.headers, rep, |start, end| {
        match entry.small_body() {
            Some(bytes) => body::full(bytes.slice(start as usize..end as usize)),
            None => reader_body(entry.reader(start, end)),
        }
    })
}

/// Headers for a plain file with no metadata (a package-cache 0.2 entry).
fn legacy_headers(key: &CacheKey, entry: &Entry) -> HeaderMap {
    let mut h = HeaderMap::new();
    let name = String::from_utf8_lossy(key.file_name()).into_owned();
    let mime = mime_guess::from_path(&name).first_or_octet_stream();
    if let Ok(v) = HeaderValue::from_str(mime.essence_str()) {
        h.insert(header::CONTENT_TYPE, v);
    }
    if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(entry.mtime)) {
        h.insert(header::LAST_MODIFIED, v);
    }
    h
}

/// `leader`: this request caused the fetch, so it is a miss whatever the progress.
async fn from_fill(
    req: &http::request::Parts,
    key: &CacheKey,
    head: &FillHead,
    mut watch: FillWatch,
    leader: bool,
) -> Result<Response<Body>, Error> {
    if !watch.first_bytes().await {
        // Failed (cut short, or not the bytes its index lists) before this
        // response began: say so, rather than start a body that must break.
        return Err(Error::Aborted {
            key: key.to_string(),
        });
    }
    // Every byte is on disk and its length checked; only the commit's fsync
    // and rename are left, so this is served from the cache.
    let cache = match watch.state() {
        _ if leader => CacheStatus::Miss,
        FillState::Complete {
            committed: true, ..
        } => CacheStatus::Hit,
        FillState::Streaming { written } if Some(written) == head.content_length => {
            CacheStatus::Hit
        }
        _ => CacheStatus::Miss,
    };
    let rep = Representation {
        headers: headers::to_map(&head.headers),
        len: head.content_length,
        cache,
    };
    Ok(respond::representation(
        &req.method,
        &req.headers,
        rep,
        |start, end| match watch.reader(start, end) {
            Some(reader) => reader_body(reader),
            None => body::from_stream(futures_util::stream::once(async {
                Err(std::io::Error::other("fill has no file"))
            })),
        },
    ))
}

fn reader_body(reader: BodyReader) -> Body {
    body::from_stream(reader.into_stream())
}

pub use access::LoggedBody;
