//! The cache side of the flow, once a request is routed to a key and looked
//! up: answer from a committed entry (`hit`), follow a fill in progress
//! (`join`), or start one (`fill`). Each step says what comes next: an
//! answer, a pass through the upstream uncached, or another lookup.

use super::access::JoinedFill;
use super::respond::{self, CacheStatus, Representation};
use super::target::Target;
use super::{filler, headers, Error, Proxy};
use crate::body::{self, Body};
use crate::digest::Digest;
use crate::store::{
    BodyReader, CacheKey, Confirmed, Entry, Failure, FillHead, FillPermit, FillStart, FillState,
    FillWatch,
};
use http::{header, HeaderMap, HeaderValue, Response};
use tokio::sync::oneshot;

/// What the flow does after one step.
pub(super) enum Next {
    /// Answer with this.
    Answer(Result<Response<Body>, Error>),
    /// Fetch it uncached.
    Pass,
    /// Look the key up again (a fill's leader gave up, or an entry was dropped).
    Again,
    /// The fill this request followed was cut short before this response
    /// began (`Error::is_cut_short`): look the key up again and compete to
    /// lead the next fill, as pingora's cache lock lets its readers do.
    /// Answer with this error if the lookups run out.
    Retry(Error),
}

impl Proxy {
    /// A committed entry, unless the index lists a digest it does not have:
    /// the index wins, and the entry is dropped and fetched again, verified.
    /// A digest its sha256 cannot decide is checked over the stored body
    /// once (`Store::confirm`), then recorded with it.
    pub(super) async fn hit(
        &self,
        req: &http::request::Parts,
        key: &CacheKey,
        entry: Entry,
        expected: Option<&Digest>,
    ) -> Next {
        let Some(listed) = expected else {
            return Next::Answer(Ok(hit(req, key, entry)));
        };
        match self.store.confirm(key, &entry, listed).await {
            Ok(Confirmed::Known | Confirmed::Followed) => {}
            Ok(Confirmed::Hashed { bytes, elapsed_ms }) => {
                tracing::info!(key = %key, listed = %listed, bytes, elapsed_ms,
                    "cached file checked against the digest its index lists: it matches; recorded");
            }
            Ok(Confirmed::Differs { found }) => {
                // Cached before its index was seen, or the index changed.
                tracing::error!(key = %key, stored = %found, listed = %listed,
                    "cached file does not match the digest its index lists; dropping it");
                if let Err(err) = self.store.discard(key, &entry).await {
                    tracing::error!(key = %key, error = %err, "cannot drop the entry; passing uncached");
                    return Next::Pass;
                }
                return Next::Again;
            }
            Err(err) => {
                // Neither confirmed nor refuted: not served from the cache.
                tracing::error!(key = %key, error = %err, "cannot check the cached file; passing uncached");
                return Next::Pass;
            }
        }
        Next::Answer(Ok(hit(req, key, entry)))
    }

    /// Follows a fill another request started.
    pub(super) async fn join(
        &self,
        req: &http::request::Parts,
        key: &CacheKey,
        mut watch: FillWatch,
    ) -> Next {
        match watch.started().await {
            FillStart::Started(head) => from_fill(req, key, &head, watch, false).await,
            FillStart::Failed(failure) => {
                let err = self.failed(key, &failure);
                if err.is_cut_short() {
                    tracing::debug!(key = %key, error = %err, "the fill this request joined was cut short; trying again");
                    return Next::Retry(err);
                }
                Next::Answer(Err(err))
            }
            FillStart::Uncacheable => Next::Pass,
            FillStart::Vacated => Next::Again,
        }
    }

    /// Starts the fill `permit` allows, on a task of its own, and follows it.
    pub(super) async fn fill(
        &self,
        req: &http::request::Parts,
        target: &Target,
        permit: FillPermit,
        expected: Option<Digest>,
    ) -> Next {
        let key = permit.key().clone();
        // Fills outlive their clients, so they need a bound of their own.
        let Ok(slot) = self.fill_slots.clone().try_acquire_owned() else {
            tracing::warn!(key = %key, "too many fills in progress; passing uncached");
            permit.uncacheable();
            return Next::Pass;
        };
        // The fill task owns the fetch, so this client leaving (even before
        // the upstream answers) cancels nothing.
        let mut watch = permit.watch();
        let (handback, mut returned) = oneshot::channel();
        let job = filler::Job {
            upstream: self.upstream.clone(),
            target: target.clone(),
            expected,
            max_entry: self.policy.max_entry,
            cancel: self.fills_cancel.clone(),
            slot,
            metrics: self.metrics.clone(),
        };
        self.tasks.spawn(filler::run(job, permit, handback));
        match watch.started().await {
            FillStart::Started(head) => from_fill(req, &key, &head, watch, true).await,
            // This request's own attempt, with every source tried: its answer.
            FillStart::Failed(failure) => Next::Answer(Err(self.failed(&key, &failure))),
            // Handed back before the state changed, so it is here.
            FillStart::Uncacheable => match returned.try_recv() {
                Ok(fetched) => Next::Answer(Ok(respond::passthrough(
                    &req.method,
                    fetched,
                    CacheStatus::Pass,
                ))),
                Err(_) => Next::Pass,
            },
            FillStart::Vacated => Next::Again,
        }
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
}

fn hit(req: &http::request::Parts, key: &CacheKey, entry: Entry) -> Response<Body> {
    let mut stored = match &entry.meta {
        Some(meta) if !meta.adopted => headers::to_map(&meta.headers),
        _ => legacy_headers(key, &entry),
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

/// Headers for a plain file of package-cache 0.2 (no metadata, or metadata
/// that adoption wrote, which records no upstream headers).
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

/// Answers from a fill that has started. `leader`: this request caused the
/// fetch, so it is a miss whatever the progress.
async fn from_fill(
    req: &http::request::Parts,
    key: &CacheKey,
    head: &FillHead,
    mut watch: FillWatch,
    leader: bool,
) -> Next {
    if !watch.first_bytes().await {
        // Failed (cut short, or not the bytes its index lists) before this
        // response began: never start a body that must break. A request that
        // only followed a fill that was cut short tries again.
        let err = Error::Aborted {
            key: key.to_string(),
        };
        if !leader && Error::cut_short_cause(watch.abort_cause().as_ref()) {
            tracing::debug!(key = %key, "the fill this request joined broke before its first byte; trying again");
            return Next::Retry(err);
        }
        return Next::Answer(Err(err));
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
    let mut response = respond::representation(&req.method, &req.headers, rep, |start, end| {
        match watch.reader(start, end) {
            Some(reader) => reader_body(reader),
            None => body::from_stream(futures_util::stream::once(async {
                Err(std::io::Error::other("fill has no file"))
            })),
        }
    });
    if !leader && cache == CacheStatus::Miss {
        // Counted as a join once, with the request, however many lookups
        // it took to get here.
        response.extensions_mut().insert(JoinedFill);
    }
    Next::Answer(Ok(response))
}

fn reader_body(reader: BodyReader) -> Body {
    body::from_stream(reader.into_stream())
}
