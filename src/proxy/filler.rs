//! The fill task: fills one uncached path from a lower tier (the shared
//! store) when one has it, else fetches it from upstream, starts its fill
//! (or fails it, telling every waiter why) and pumps the body into it until
//! the commit. It runs on the app's task tracker, apart from every client, so
//! a client leaving — before or after the upstream answers — cancels nothing.

use super::{headers, target::Target, via, Error};
use crate::digest::Digest;
use crate::metrics::{FillEnd, Metrics};
use crate::store::{Committed, Failure, Fill, FillHead, FillPermit};
use crate::upstream::{BodyError, FetchRequest, Fetched, ShownUrl, Upstream};
use bytes::Bytes;
use futures_util::FutureExt;
use http::{Method, StatusCode};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{oneshot, OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;

/// What a fill task needs to know: where to fetch, what to check, and
/// the limits it runs under.
pub(super) struct Job {
    pub upstream: Upstream,
    pub target: Target,
    /// The digest an index lists for the file, checked before the commit.
    pub expected: Option<Digest>,
    /// A larger Content-Length passes uncached (`--max-size`).
    pub max_entry: Option<u64>,
    /// Fires on hard shutdown: the fill is abandoned, nothing committed.
    pub cancel: CancellationToken,
    /// Held until the fill ends (`--max-fills`).
    pub slot: OwnedSemaphorePermit,
    /// Counts the fill once it begins writing, and how it ended.
    pub metrics: Arc<Metrics>,
}

/// Fetches the job's target for `permit`. A response that is not cached
/// (not 200, or the store could not take it) is handed back to the leader
/// through `handback` before the permit is released, so the leader can pass
/// it on; waiters then fetch for themselves.
pub(super) async fn run(job: Job, permit: FillPermit, handback: oneshot::Sender<Fetched>) {
    let Job {
        upstream,
        target,
        expected,
        max_entry,
        cancel,
        slot: _slot,
        metrics,
    } = job;
    // A lower tier (the shared store) before the upstream: its hit streams
    // into this same fill, so its readers cannot tell the two apart.
    let permit = tokio::select! {
        _ = cancel.cancelled() => return,
        filled = permit.fill_from_lower() => match filled {
            Ok(_) => return,
            Err(permit) => permit,
        },
    };
    let fetch = FetchRequest {
        via: via(&target),
        path_and_query: target.path(),
        method: Method::GET,
        headers: headers::fill_request(),
        decode: false,
    };
    let fetched = tokio::select! {
        _ = cancel.cancelled() => return,
        fetched = upstream.fetch(fetch) => fetched,
    };
    let fetched = match fetched {
        Ok(fetched) => fetched,
        Err(failed) => {
            permit.fail(Failure::new(Error::fetch(failed)));
            return;
        }
    };
    if fetched.status != StatusCode::OK {
        // Only 200s are cached: the leader passes this answer on as it is,
        // and waiters ask for themselves.
        let _ = handback.send(fetched);
        permit.uncacheable();
        return;
    }
    if let (Some(len), Some(max)) = (fetched.content_length(), max_entry) {
        if len > max {
            tracing::info!(key = %permit.key(), bytes = len, max_size = max,
                "larger than --max-size; passing uncached");
            let _ = handback.send(fetched);
            permit.uncacheable();
            return;
        }
    }
    if looks_like_a_portal(&fetched, permit.key()) {
        // A login or captive-portal page in place of a package: pass it on
        // once, never store it under the package's name.
        tracing::warn!(key = %permit.key(), source = %ShownUrl(&fetched.url),
            "upstream answered a file with an HTML page; not cached");
        let _ = handback.send(fetched);
        permit.uncacheable();
        return;
    }
    if fetched.content_length() == Some(0) && expected.as_ref().is_some_and(|d| !d.matches(b"")) {
        // No byte to hold back: refuse before anything looks complete.
        tracing::error!(key = %permit.key(), source = %ShownUrl(&fetched.url),
            "download does not match the digest its index lists (empty body); nothing committed");
        let err = Error::Digest {
            key: permit.key().to_string(),
            listed: expected.map(|d| d.to_string()).unwrap_or_default(),
            got: "an empty body".into(),
        };
        permit.fail(Failure::new(err));
        return;
    }
    let head = FillHead {
        headers: headers::storable(&fetched.headers),
        content_length: fetched.content_length(),
        source: fetched.url.clone(),
        expected,
    };
    match permit.start(head).await {
        Ok(fill) => {
            // Only a download that began writing is a fill: a 404, an
            // unreachable upstream or a refused answer never was one.
            metrics.fill_started();
            let end = pump(fetched, fill, cancel).await;
            metrics.fill_ended(end);
        }
        Err((err, permit)) => {
            tracing::error!(key = %permit.key(), error = %err, "cannot start a fill; passing uncached");
            let _ = handback.send(fetched);
            permit.uncacheable();
        }
    }
}

/// An HTML answer for a file whose name does not say HTML.
fn looks_like_a_portal(fetched: &Fetched, key: &crate::store::CacheKey) -> bool {
    let html = headers::is_html(&fetched.headers);
    if !html {
        return false;
    }
    let name = String::from_utf8_lossy(key.file_name()).to_ascii_lowercase();
    !(name.ends_with(".html") || name.ends_with(".htm") || name.ends_with(".xhtml"))
}

/// Most bytes gathered into one write.
const BATCH: usize = 1 << 20;

/// How gathering stopped.
enum Gathered {
    /// Nothing more is ready yet.
    More,
    /// The body ended cleanly.
    End,
    /// The body failed.
    Failed(BodyError),
}

/// `first` plus every chunk that is ready without waiting, up to [`BATCH`].
fn gather(fetched: &mut Fetched, first: Bytes) -> (Vec<Bytes>, Gathered) {
    let mut size = first.len();
    let mut batch = vec![first];
    while size < BATCH {
        // The body's next frame is cancel-safe: a pending poll loses nothing.
        match fetched.next_chunk().now_or_never() {
            Some(Ok(Some(chunk))) => {
                size += chunk.len();
                batch.push(chunk);
            }
            Some(Ok(None)) => return (batch, Gathered::End),
            Some(Err(err)) => return (batch, Gathered::Failed(err)),
            None => break,
        }
    }
    (batch, Gathered::More)
}

/// Gives `fill` up because its upstream body broke: the readers that had not
/// begun their responses learn that another attempt may succeed.
fn body_failed(fill: Fill, fetched: &Fetched, err: BodyError) -> FillEnd {
    tracing::warn!(key = %fill.key(), source = %ShownUrl(&fetched.url), bytes = fill.written(), error = %err,
        "upstream body failed; nothing committed");
    let cause = Error::Body {
        key: fill.key().to_string(),
        url: fetched.url.clone(),
        source: Arc::new(err),
    };
    fill.abort(Failure::new(cause));
    FillEnd::Failed
}

/// Drives one download into its fill to the end (or to failure), even when
/// every reader has gone, and says how it ended.
async fn pump(mut fetched: Fetched, mut fill: Fill, cancel: CancellationToken) -> FillEnd {
    let started = Instant::now();
    loop {
        let chunk = tokio::select! {
            _ = cancel.cancelled() => {
                tracing::warn!(key = %fill.key(), bytes = fill.written(), "fill abandoned at shutdown");
                return FillEnd::Abandoned;
            }
            chunk = fetched.next_chunk() => chunk,
        };
        match chunk {
            Ok(Some(data)) => {
                // Take whatever else has already arrived, so that a fast
                // upstream costs one write (and one reader wake-up) per batch,
                // not per network read; a slow one still writes each chunk at once.
                let (batch, end) = gather(&mut fetched, data);
                if let Err(err) = fill.write(batch).await {
                    tracing::error!(key = %fill.key(), error = %err, "fill write failed; nothing committed");
                    let source = Arc::new(err);
                    fill.abort(Failure::new(Error::Store { source }));
                    return FillEnd::Failed;
                }
                match end {
                    Gathered::More => {}
                    Gathered::End => break,
                    Gathered::Failed(err) => return body_failed(fill, &fetched, err),
                }
            }
            Ok(None) => break,
            Err(err) => return body_failed(fill, &fetched, err),
        }
    }
    let key = fill.key().to_string();
    let bytes = fill.written();
    match fill.commit().await {
        Ok(Committed::Stored) => {
            tracing::info!(key = %key, source = %ShownUrl(&fetched.url), bytes,
                elapsed_ms = started.elapsed().as_millis() as u64, "entry committed");
            FillEnd::Committed
        }
        Ok(Committed::NotStored) => FillEnd::NotStored,
        Err(err @ crate::store::Error::Digest { .. }) => {
            tracing::error!(key = %key, source = %ShownUrl(&fetched.url), error = %err,
                "download does not match the digest its index lists; nothing committed");
            FillEnd::Failed
        }
        Err(err) => {
            tracing::warn!(key = %key, source = %ShownUrl(&fetched.url), error = %err, "fill incomplete; nothing committed");
            FillEnd::Failed
        }
    }
}
