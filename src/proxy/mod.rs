//! `Proxy::handle`: the whole request pipeline, reading like the flow —
//! target → route → store lookup → (hit | join fill | fetch and fill) → respond.

mod access;
pub mod conditional;
pub mod headers;
pub mod respond;
pub mod route;
pub mod target;

use crate::body::{self, Body};
use crate::store::{
    BodyReader, CacheKey, Committed, Entry, Fill, FillHead, FillPermit, FillStart, FillState,
    FillWatch, Lookup, Store,
};
use crate::upstream::{FetchRequest, Fetched, Upstream, Via};
use access::AccessRecord;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use respond::{CacheStatus, Representation};
use route::Route;
use std::sync::Arc;
use std::time::Instant;
use target::{ConnInfo, HostRules, Target};
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
}

impl Proxy {
    /// A proxy over `store` and `upstream`. Fill tasks are spawned on `tasks`
    /// and abandoned (entries not committed) when `fills_cancel` fires.
    pub fn new(
        store: Store,
        upstream: Upstream,
        rules: HostRules,
        tasks: TaskTracker,
        fills_cancel: CancellationToken,
    ) -> Proxy {
        Proxy {
            store,
            upstream,
            rules: Arc::new(rules),
            tasks,
            fills_cancel,
        }
    }

    /// Handles one request. Never fails: every error becomes a response.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<LoggedBody> {
        let started = Instant::now();
        let (parts, _body) = req.into_parts();
        let conn = parts.extensions.get::<ConnInfo>().copied();
        let response = self.dispatch(&parts, conn.as_ref()).await;
        let cache = match response
            .headers()
            .get(respond::X_CACHE)
            .map(HeaderValue::as_bytes)
        {
            Some(b"HIT") => "HIT",
            Some(b"MISS") => "MISS",
            Some(b"PASS") => "PASS",
            _ => "-",
        };
        let record = AccessRecord {
            method: parts.method.clone(),
            target: parts.uri.to_string(),
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
        response.map(|b| LoggedBody::new(b, record))
    }

    async fn dispatch(
        &self,
        req: &http::request::Parts,
        conn: Option<&ConnInfo>,
    ) -> Response<Body> {
        let host = req.headers.get(header::HOST).and_then(|h| h.to_str().ok());
        let target = match target::parse(&req.uri, host, conn, &self.rules) {
            Ok(target) => target,
            Err(err) => {
                let orig_dst = conn.and_then(ConnInfo::redirected_from);
                tracing::warn!(uri = %req.uri, host, ?orig_dst, error = ?err, "request refused");
                return respond::target_error(&err);
            }
        };
        if let Some(dst) = conn.and_then(ConnInfo::redirected_from) {
            tracing::debug!(orig_dst = %dst, host, "redirected connection");
        }
        match route::classify(&req.method, &target, &req.headers) {
            Route::Reject(reason) => {
                tracing::warn!(method = %req.method, uri = %req.uri, ?reason, "request rejected");
                respond::reject(&reason)
            }
            Route::Pass(reason) => {
                tracing::debug!(uri = %req.uri, reason = reason.as_str(), "passing uncached");
                self.pass(req, &target).await
            }
            Route::Cache(key) => self.cached(req, &target, key).await,
        }
    }

    async fn cached(
        &self,
        req: &http::request::Parts,
        target: &Target,
        key: CacheKey,
    ) -> Response<Body> {
        for _ in 0..MAX_LOOKUPS {
            let lookup = match self.store.lookup(&key).await {
                Ok(lookup) => lookup,
                Err(err) => {
                    tracing::error!(key = %key, error = %err, "store lookup failed; passing uncached");
                    return self.pass(req, target).await;
                }
            };
            match lookup {
                Lookup::Hit(entry) => return hit(req, &key, entry),
                Lookup::Conflict => {
                    tracing::debug!(key = %key, "path conflicts with a cached entry; passing uncached");
                    return self.pass(req, target).await;
                }
                Lookup::Filling(mut watch) => match watch.started().await {
                    FillStart::Started(head) => return from_fill(req, &head, watch),
                    FillStart::Failed(failure) => return respond::fill_failed(&failure),
                    FillStart::Vacated => continue,
                },
                Lookup::Miss(permit) => return self.fill(req, target, permit).await,
            }
        }
        respond::busy()
    }

    async fn fill(
        &self,
        req: &http::request::Parts,
        target: &Target,
        permit: FillPermit,
    ) -> Response<Body> {
        let fetch = FetchRequest {
            via: via(target),
            path_and_query: target.path(),
            method: Method::GET,
            headers: headers::fill_request(),
        };
        let fetched = match self.upstream.fetch(fetch).await {
            Ok(fetched) => fetched,
            Err(failed) => {
                let (status, message) = respond::upstream_failed(&failed);
                permit.fail(status.as_u16(), message.clone());
                return respond::text(status, message);
            }
        };
        if fetched.status != StatusCode::OK {
            // Only 200s are cached; this client gets the answer as it is.
            permit.fail(
                fetched.status.as_u16(),
                format!("package-cache: upstream answered {}", fetched.status),
            );
            return respond::passthrough(&req.method, fetched, CacheStatus::Pass);
        }
        let head = FillHead {
            headers: headers::storable(&fetched.headers),
            content_length: fetched.content_length(),
            source: fetched.url.clone(),
        };
        let fill = match permit.start(head.clone()).await {
            Ok(fill) => fill,
            Err(err) => {
                tracing::error!(key = %target.path(), error = %err, "cannot start a fill; passing uncached");
                return respond::passthrough(&req.method, fetched, CacheStatus::Pass);
            }
        };
        let watch = fill.watch();
        let cancel = self.fills_cancel.clone();
        self.tasks.spawn(pump(fetched, fill, cancel));
        from_fill(req, &head, watch)
    }

    async fn pass(&self, req: &http::request::Parts, target: &Target) -> Response<Body> {
        let path_and_query = target.path_and_query();
        let fetch = FetchRequest {
            via: via(target),
            path_and_query: &path_and_query,
            method: req.method.clone(),
            headers: headers::forwardable(&req.headers),
        };
        match self.upstream.fetch(fetch).await {
            Ok(fetched) => respond::passthrough(&req.method, fetched, CacheStatus::Pass),
            Err(failed) => {
                let (status, message) = respond::upstream_failed(&failed);
                respond::text(status, message)
            }
        }
    }
}

fn via(target: &Target) -> Via<'_> {
    match target {
        Target::Mirrors { .. } => Via::Sources,
        Target::Host { authority, .. } => Via::Host {
            https: false,
            authority,
        },
    }
}

/// Drives one download into its fill, independent of any client: it runs to
/// the end (or failure) even when every reader has gone.
async fn pump(mut fetched: Fetched, mut fill: Fill, cancel: CancellationToken) {
    let started = Instant::now();
    loop {
        let chunk = tokio::select! {
            _ = cancel.cancelled() => {
                tracing::warn!(key = %fill.key(), bytes = fill.written(), "fill abandoned at shutdown");
                return;
            }
            chunk = fetched.next_chunk() => chunk,
        };
        match chunk {
            Ok(Some(data)) => {
                if let Err(err) = fill.write(data).await {
                    tracing::error!(key = %fill.key(), error = %err, "fill write failed; nothing committed");
                    return;
                }
            }
            Ok(None) => break,
            Err(err) => {
                tracing::warn!(key = %fill.key(), source = %fetched.url, bytes = fill.written(), error = %err,
                    "upstream body failed; nothing committed");
                return;
            }
        }
    }
    let key = fill.key().to_string();
    let bytes = fill.written();
    match fill.commit().await {
        Ok(Committed::Stored) => tracing::info!(key = %key, source = %fetched.url, bytes,
            elapsed_ms = started.elapsed().as_millis() as u64, "entry committed"),
        Ok(Committed::NotStored) => {}
        Err(err) => {
            tracing::warn!(key = %key, source = %fetched.url, error = %err, "fill incomplete; nothing committed")
        }
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

fn from_fill(req: &http::request::Parts, head: &FillHead, watch: FillWatch) -> Response<Body> {
    // Every byte is on disk and its length checked; only the commit's fsync
    // and rename are left, so this is served from the cache.
    let cache = match watch.state() {
        FillState::Complete { .. } => CacheStatus::Hit,
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
    respond::representation(&req.method, &req.headers, rep, |start, end| {
        match watch.reader(start, end) {
            Some(reader) => reader_body(reader),
            None => body::from_stream(futures_util::stream::once(async {
                Err(std::io::Error::other("fill has no file"))
            })),
        }
    })
}

fn reader_body(reader: BodyReader) -> Body {
    body::from_stream(reader.into_stream())
}

pub use access::LoggedBody;
