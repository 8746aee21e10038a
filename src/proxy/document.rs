//! Index documents (PyPI pages, RubyGems `/versions` and `/info/*`, specs,
//! Gentoo's `layout.conf`): served from the store while younger than the
//! index TTL, then revalidated with a conditional request — one upstream
//! request however many clients ask at once (a `store::Revalidation` flight:
//! those who arrive meanwhile share its outcome) — and served stale, with `Age`
//! and `Warning`, when the upstream cannot be reached. The client's own
//! `Cache-Control` is not consulted: pip sends `max-age=0` on every request.
//! PyPI pages are rewritten so that every file link leads through the cache.

use super::respond::{self, CacheStatus, Representation};
use super::target::Target;
use super::{headers, via, Error, Proxy, MAX_LOOKUPS};
use crate::body::{self, Body};
use crate::config::Mount;
use crate::metrics::Refresh;
use crate::mount::{self, DocSpec};
use crate::store::{
    unix_now, CacheKey, Doc, DocMeta, Failure, Namespace, Revalidated, Revalidation,
    RevalidationPermit, MAX_DOC_LEN,
};
use crate::upstream::{FetchRequest, Fetched, ShownUrl};
use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};
use std::sync::Arc;

/// How a revalidation this request led ended.
enum Led {
    /// The current copy (and whether it came from upstream just now).
    Current(Arc<Doc>, CacheStatus),
    /// An answer that is not a document: for the leader's client only.
    Other(Box<Fetched>),
    /// The upstream could not say; the stored copy, if any.
    Failed(Error, Option<Arc<Doc>>),
}

/// What asking the upstream about a document gave.
enum Refreshed {
    /// The stored copy is still current.
    NotModified,
    /// A new version.
    New(Doc),
    /// An answer that is not a document (403, 3xx past the limit…): passed on.
    Other(Fetched),
}

impl Proxy {
    /// Serves the document `spec` of `mount`: the stored copy while fresh,
    /// else the outcome of one revalidation shared by every request that
    /// arrives while it is in flight.
    pub(super) async fn document(
        &self,
        req: &http::request::Parts,
        target: &Target,
        mount: &Mount,
        spec: DocSpec,
    ) -> Result<Response<Body>, Error> {
        if self.policy.negative.knows_missing(&spec.key) {
            return Err(Error::Missing { key: spec.path });
        }
        if let Some(refused) = self.unfilterable(mount, &spec) {
            return Err(refused);
        }
        let stored = self.stored_doc(&spec).await;
        if let Some(doc) = stored.as_ref().filter(|doc| self.is_fresh(doc)) {
            return self
                .serve_doc(req, target, mount, &spec, doc, CacheStatus::Hit, false)
                .await;
        }
        for _ in 0..MAX_LOOKUPS {
            let outcome = match self.store.revalidation(&spec.key) {
                Revalidation::Lead(permit) => {
                    return self.revalidate(req, target, mount, &spec, permit).await
                }
                Revalidation::Follow(watch) => watch.outcome().await,
            };
            match outcome {
                Revalidated::Current(doc) => {
                    return self
                        .serve_doc(req, target, mount, &spec, &doc, CacheStatus::Hit, false)
                        .await
                }
                Revalidated::Failed(failure) => {
                    let err = Error::from_leader(&failure, &spec.path);
                    return self
                        .unrevalidated(req, target, mount, &spec, stored, err)
                        .await;
                }
                Revalidated::Uncacheable => return self.pass(req, target).await,
                Revalidated::Vacated => continue,
            }
        }
        Err(Error::Busy { key: spec.path })
    }

    /// Asks the upstream about a stale (or missing) document, for every
    /// request that follows `permit`, and answers this one.
    async fn revalidate(
        &self,
        req: &http::request::Parts,
        target: &Target,
        mount: &Mount,
        spec: &DocSpec,
        permit: RevalidationPermit,
    ) -> Result<Response<Body>, Error> {
        match self.lead(target, mount, spec, permit).await {
            Led::Current(doc, cache) => {
                self.serve_doc(req, target, mount, spec, &doc, cache, false)
                    .await
            }
            Led::Other(fetched) => Ok(respond::passthrough(
                &req.method,
                *fetched,
                CacheStatus::Pass,
            )),
            Led::Failed(err, stored) => {
                self.unrevalidated(req, target, mount, spec, stored, err)
                    .await
            }
        }
    }

    /// Leads the revalidation `permit` allows: stores and publishes its
    /// outcome for the followers, and returns it.
    async fn lead(
        &self,
        target: &Target,
        mount: &Mount,
        spec: &DocSpec,
        permit: RevalidationPermit,
    ) -> Led {
        // A revalidation that ended since this request looked stored its
        // copy before it left: then that copy is current.
        let stored = self.stored_doc(spec).await;
        if let Some(doc) = stored.as_ref().filter(|doc| self.is_fresh(doc)) {
            permit.finish(Revalidated::Current(doc.clone()));
            return Led::Current(doc.clone(), CacheStatus::Hit);
        }
        let refreshed = self.refresh(target, mount, spec, stored.as_deref()).await;
        self.metrics.revalidated(match &refreshed {
            Ok(Refreshed::NotModified) => Refresh::NotModified,
            Ok(Refreshed::New(_)) => Refresh::Updated,
            Ok(Refreshed::Other(_)) => Refresh::Passed,
            Err(_) => Refresh::Failed,
        });
        match refreshed {
            Ok(Refreshed::NotModified) => {
                let mut doc = Doc::clone(&stored.expect("304 only answers a conditional request"));
                doc.meta.validated_at = unix_now();
                let doc = Arc::new(doc);
                // Stored before it is published: a request after the flight
                // must find it fresh, not start another.
                self.save_doc(doc.clone()).await;
                permit.finish(Revalidated::Current(doc.clone()));
                Led::Current(doc, CacheStatus::Hit)
            }
            Ok(Refreshed::New(doc)) => {
                let doc = Arc::new(doc);
                self.policy
                    .listed
                    .register(&spec.key, &doc.meta.hashes, true);
                self.save_doc(doc.clone()).await;
                permit.finish(Revalidated::Current(doc.clone()));
                Led::Current(doc, CacheStatus::Miss)
            }
            Ok(Refreshed::Other(fetched)) => {
                permit.finish(Revalidated::Uncacheable);
                Led::Other(Box::new(fetched))
            }
            Err(err) => {
                if err.is_not_found() {
                    if let Err(err) = self.store.remove_doc(&spec.key).await {
                        tracing::warn!(doc = %spec.path, error = %err, "cannot remove a document gone upstream");
                    }
                    self.policy.negative.remember(&spec.key);
                } else if let Some(doc) = &stored {
                    tracing::warn!(mount = %mount.name, doc = %spec.path, error = %err,
                        age_s = unix_now().saturating_sub(doc.meta.validated_at),
                        "upstream unreachable; serving a stale index document");
                }
                permit.finish(Revalidated::Failed(Failure::new(err.clone())));
                Led::Failed(err, stored)
            }
        }
    }

    /// The current copy of document `spec` for the proxy's own use (the
    /// dates a policy needs): stored and fresh, else revalidated as a
    /// client's request would be (joining a revalidation in flight), else
    /// the stored copy, stale. `None` when there is none.
    pub(super) async fn current_doc(
        &self,
        target: &Target,
        mount: &Mount,
        spec: &DocSpec,
    ) -> Option<Arc<Doc>> {
        if self.policy.negative.knows_missing(&spec.key) {
            return None;
        }
        let stored = self.stored_doc(spec).await;
        if stored.as_ref().is_some_and(|doc| self.is_fresh(doc)) {
            return stored;
        }
        for _ in 0..MAX_LOOKUPS {
            let outcome = match self.store.revalidation(&spec.key) {
                Revalidation::Lead(permit) => {
                    return match self.lead(target, mount, spec, permit).await {
                        Led::Current(doc, _) => Some(doc),
                        Led::Other(_) => stored,
                        Led::Failed(err, stored) => stored.filter(|_| !err.is_not_found()),
                    }
                }
                Revalidation::Follow(watch) => watch.outcome().await,
            };
            match outcome {
                Revalidated::Current(doc) => return Some(doc),
                Revalidated::Vacated => continue,
                Revalidated::Failed(_) | Revalidated::Uncacheable => return stored,
            }
        }
        stored
    }

    /// The answer when revalidating failed with `err`: the stored copy,
    /// stale, unless the upstream said the document is gone.
    async fn unrevalidated(
        &self,
        req: &http::request::Parts,
        target: &Target,
        mount: &Mount,
        spec: &DocSpec,
        stored: Option<Arc<Doc>>,
        err: Error,
    ) -> Result<Response<Body>, Error> {
        match stored {
            Some(doc) if !err.is_not_found() => {
                self.serve_doc(req, target, mount, spec, &doc, CacheStatus::Hit, true)
                    .await
            }
            _ => Err(err),
        }
    }

    fn is_fresh(&self, doc: &Doc) -> bool {
        let age = unix_now().saturating_sub(doc.meta.validated_at);
        age < self.policy.index_ttl.as_secs()
    }

    async fn stored_doc(&self, spec: &DocSpec) -> Option<Arc<Doc>> {
        match self.store.read_doc(&spec.key).await {
            Ok(doc) => doc,
            Err(err) => {
                tracing::error!(doc = %spec.path, error = %err, "cannot read a stored document");
                None
            }
        }
    }

    async fn save_doc(&self, doc: Arc<Doc>) {
        let key = doc.meta.key.clone();
        if let Err(err) = self.store.write_doc(doc).await {
            tracing::error!(doc = %key.replace('\n', " "), error = %err, "cannot store a document; served uncached");
        }
    }

    async fn refresh(
        &self,
        target: &Target,
        mount: &Mount,
        spec: &DocSpec,
        stored: Option<&Doc>,
    ) -> Result<Refreshed, Error> {
        let mut request_headers = headers::fill_request();
        if let Some(repr) = spec.repr {
            request_headers.insert(
                header::ACCEPT,
                HeaderValue::from_static(repr.accept_header()),
            );
        }
        if let Some(doc) = stored {
            let validators = [
                (header::IF_NONE_MATCH, &doc.meta.upstream_etag),
                (header::IF_MODIFIED_SINCE, &doc.meta.upstream_last_modified),
            ];
            for (name, value) in validators {
                if let Some(v) = value.as_deref().and_then(|v| HeaderValue::from_str(v).ok()) {
                    request_headers.insert(name, v);
                }
            }
        }
        let fetch = FetchRequest {
            via: via(target),
            path_and_query: &spec.path,
            method: Method::GET,
            headers: request_headers,
            decode: true,
        };
        let mut fetched = self.upstream.fetch(fetch).await.map_err(Error::fetch)?;
        if fetched.status == StatusCode::NOT_MODIFIED && stored.is_some() {
            return Ok(Refreshed::NotModified);
        }
        if fetched.status != StatusCode::OK {
            return Ok(Refreshed::Other(fetched));
        }
        if spec.repr.is_none() && headers::is_html(&fetched.headers) {
            // A login or captive portal in place of /versions or layout.conf:
            // a failed revalidation, never the new document.
            tracing::warn!(source = %ShownUrl(&fetched.url), "upstream answered an index document with an HTML page; not stored");
            return Err(Error::Portal { url: fetched.url });
        }
        let raw = read_whole(&mut fetched).await.inspect_err(|err| {
            tracing::warn!(source = %ShownUrl(&fetched.url), error = %err, "index document fetch failed");
        })?;
        let mount_url = self.mount_url(mount);
        Ok(Refreshed::New(build_doc(
            mount, spec, &fetched, raw, &mount_url,
        )))
    }

    /// Answers with `doc` as the supply-chain policy lets clients see it now.
    #[allow(clippy::too_many_arguments)]
    async fn serve_doc(
        &self,
        req: &http::request::Parts,
        target: &Target,
        mount: &Mount,
        spec: &DocSpec,
        doc: &Doc,
        cache: CacheStatus,
        stale: bool,
    ) -> Result<Response<Body>, Error> {
        self.policy
            .listed
            .register(&spec.key, &doc.meta.hashes, false);
        let shown = self.shown(req, target, mount, spec, doc).await?;
        let mut stored: HeaderMap = headers::to_map(&shown.headers);
        let age = unix_now().saturating_sub(doc.meta.validated_at);
        stored.insert(header::AGE, HeaderValue::from(age));
        if stale {
            stored.insert(
                header::WARNING,
                HeaderValue::from_static("111 package-cache \"Revalidation Failed\""),
            );
        }
        if spec.repr.is_some() {
            stored.insert(header::VARY, HeaderValue::from_static("Accept"));
        }
        let body = shown.body;
        let rep = Representation {
            headers: stored,
            len: Some(body.len() as u64),
            cache,
        };
        Ok(respond::representation(
            &req.method,
            &req.headers,
            rep,
            move |start, end| body::full(body.slice(start as usize..end as usize)),
        ))
    }
}

async fn read_whole(fetched: &mut Fetched) -> Result<bytes::Bytes, Error> {
    let mut buf = bytes::BytesMut::new();
    loop {
        match fetched.next_chunk().await {
            Ok(Some(chunk)) => {
                if (buf.len() + chunk.len()) as u64 > MAX_DOC_LEN {
                    return Err(Error::DocumentTooLarge {
                        url: fetched.url.clone(),
                        limit: MAX_DOC_LEN,
                    });
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(buf.freeze()),
            Err(err) => {
                return Err(Error::DocumentBody {
                    url: fetched.url.clone(),
                    source: Arc::new(err),
                })
            }
        }
    }
}

/// The stored form of a fetched document: as `mount::rewrite_document`
/// makes it, with the digests it lists keyed as the store keys their files.
fn build_doc(
    mount: &Mount,
    spec: &DocSpec,
    fetched: &Fetched,
    raw: bytes::Bytes,
    mount_url: &str,
) -> Doc {
    let upstream_headers = headers::storable(&fetched.headers);
    let header_value = |name: &str| {
        upstream_headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let (upstream_etag, upstream_last_modified) =
        (header_value("etag"), header_value("last-modified"));
    let rewritten =
        mount::rewrite_document(mount, spec, &fetched.url, &upstream_headers, raw, mount_url);
    if let Some(err) = &rewritten.unrewritten {
        tracing::warn!(source = %ShownUrl(&fetched.url), error = %err, "index page not rewritten; served as sent");
    }
    if rewritten.unmapped_links > 0 {
        tracing::warn!(source = %ShownUrl(&fetched.url), links = rewritten.unmapped_links,
            "index page links to hosts that are not configured (--files-host); those downloads bypass the cache");
    }
    let namespace = Namespace::Mount(mount.name.clone());
    let hashes = rewritten
        .listed
        .into_iter()
        .filter_map(|(path, digest)| {
            let key =
                CacheKey::try_from_path(namespace.clone(), &mount::key_path(mount, &path)).ok()?;
            Some((key.canonical(), digest))
        })
        .collect();
    Doc {
        meta: DocMeta {
            key: spec.key.clone(),
            headers: rewritten.headers,
            validated_at: unix_now(),
            upstream_etag,
            upstream_last_modified,
            source: fetched.url.clone(),
            hashes,
            upstream_note: rewritten.upstream_note,
        },
        body: rewritten.body,
    }
}
