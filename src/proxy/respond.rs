//! The only place that turns outcomes and errors into status codes and
//! headers: cached representations (with Range, If-Range, If-None-Match and
//! If-Modified-Since), pass-through responses, and every error text; and
//! the `X-Cache` header, from the `CacheStatus` each answer carries.

use super::conditional::{self, RangeAnswer};
use super::error::{Class, Error};
use super::headers;
use super::route::Local;
use crate::body::{self, Body};
pub use crate::cache_status::CacheStatus;
use crate::store::KeyError;
use crate::upstream::Fetched;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};

/// The response header telling what the cache did.
pub const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// Carries `cache` with `response` (as an extension), for [`stamp`].
fn with_cache(mut response: Response<Body>, cache: CacheStatus) -> Response<Body> {
    response.extensions_mut().insert(cache);
    response
}

/// What the cache did for `response`, as the answer was made (`None` for
/// errors, redirects and refusals), now written as its `X-Cache` header:
/// the one place that header is set.
pub fn stamp(response: &mut Response<Body>) -> Option<CacheStatus> {
    let cache = response.extensions().get::<CacheStatus>().copied();
    if let Some(cache) = cache {
        response
            .headers_mut()
            .insert(X_CACHE, HeaderValue::from_static(cache.as_str()));
    }
    cache
}

/// A short text answer (errors).
fn text(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    let mut message = message.into();
    message.push('\n');
    let mut response = Response::new(body::full(message));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The status for `err`: its class picks the family (4xx for the client,
/// 502/504, or 404 when the upstream said so, for the upstream; 500/503 for
/// the cache itself), its variant the code.
pub fn status_of(err: &Error) -> StatusCode {
    match err.class() {
        Class::Client => match err {
            Error::Forbidden { .. } | Error::Held { .. } => StatusCode::FORBIDDEN,
            Error::Method { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Error::Path {
                source: KeyError::TooLong,
            } => StatusCode::URI_TOO_LONG,
            Error::NotOnMount { .. } => StatusCode::NOT_FOUND,
            _ => StatusCode::BAD_REQUEST,
        },
        Class::Upstream if err.is_not_found() => StatusCode::NOT_FOUND,
        Class::Upstream if err.is_timeout() => StatusCode::GATEWAY_TIMEOUT,
        Class::Upstream => StatusCode::BAD_GATEWAY,
        Class::Internal if err.is_retryable() => StatusCode::SERVICE_UNAVAILABLE,
        Class::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The answer to a request that failed: [`status_of`] with a short text
/// saying why (never the upstream's own bytes).
pub fn error(err: &Error) -> Response<Body> {
    let status = status_of(err);
    let why = match err {
        Error::Forbidden { host } => {
            format!("host {host} is not allowed here (this is not an open proxy)")
        }
        Error::Malformed { reason } => reason.to_string(),
        Error::Method { .. } => "only GET and HEAD are served".into(),
        Error::Path { source } => source.to_string(),
        Error::NotOnMount { .. } => "not a path this mount serves".into(),
        Error::Fetch { failed } => {
            let summary = match status {
                StatusCode::NOT_FOUND => "not found upstream",
                StatusCode::GATEWAY_TIMEOUT => "upstream timed out",
                _ => "upstream failed",
            };
            format!("{summary}: {failed}")
        }
        Error::Missing { .. } => "not found upstream (remembered)".into(),
        Error::Held { what, why } => {
            format!("{what} is refused by the supply-chain policy: {why}")
        }
        Error::Unfiltered {
            path,
            reason,
            never,
        } => match never {
            true => format!("{path} is not served under the supply-chain policy: {reason}"),
            false => format!("{path} cannot be filtered by the supply-chain policy: {reason}"),
        },
        Error::Portal { .. } => "upstream answered with an HTML page".into(),
        Error::DocumentBody { source, .. } => source.to_string(),
        Error::DocumentTooLarge { limit, .. } => {
            format!("index document larger than {limit} bytes")
        }
        Error::Digest { .. } => {
            "the upstream's file does not match the digest its index lists".into()
        }
        Error::Disagree { .. } => {
            "the go.sum hashes and checksum-database lookups the cache holds disagree on this \
             file; nothing was fetched"
                .into()
        }
        Error::Body { .. } | Error::Aborted { .. } => {
            "the download failed; nothing was cached".into()
        }
        Error::Busy { .. } => "busy, retry shortly".into(),
        Error::Store { .. } => "the cache failed".into(),
    };
    let mut response = text(status, format!("package-cache: {why}"));
    let headers = response.headers_mut();
    match status {
        StatusCode::METHOD_NOT_ALLOWED => {
            headers.insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        }
        StatusCode::SERVICE_UNAVAILABLE => {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        _ => {}
    }
    response
}

/// What the server writes, before any HTTP parsing, on a connection past
/// `--max-connections`; then it closes the connection.
pub const TOO_MANY_CONNECTIONS: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nRetry-After: 1\r\n\
Content-Length: 37\r\nConnection: close\r\n\r\npackage-cache: too many connections\r\n";

/// A stored (or filling) representation: its end-to-end headers and length.
pub struct Representation {
    /// Stored headers (Content-Type, ETag, Last-Modified, …).
    pub headers: HeaderMap,
    /// Body length, when known.
    pub len: Option<u64>,
    /// HIT or MISS.
    pub cache: CacheStatus,
}

/// Answers a GET or HEAD from a representation, honouring conditionals and a
/// single Range. `open(start, end)` makes the body; `end` is `u64::MAX` when
/// the length is not known yet.
pub fn representation(
    method: &Method,
    request: &HeaderMap,
    rep: Representation,
    open: impl FnOnce(u64, u64) -> Body,
) -> Response<Body> {
    let etag = rep.headers.get(header::ETAG).and_then(|v| v.to_str().ok());
    let last_modified = rep
        .headers
        .get(header::LAST_MODIFIED)
        .and_then(|v| v.to_str().ok());
    let get = |name| {
        request
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let not_modified = match (get(header::IF_NONE_MATCH), get(header::IF_MODIFIED_SINCE)) {
        (Some(inm), _) => conditional::none_match(inm, etag),
        (None, Some(ims)) => conditional::not_modified_since(ims, last_modified),
        (None, None) => false,
    };
    let mut status = StatusCode::OK;
    let (mut start, mut end) = (0, rep.len.unwrap_or(u64::MAX));
    let mut content_range = None;
    if not_modified {
        status = StatusCode::NOT_MODIFIED;
    } else if let (Some(range), Some(len)) = (get(header::RANGE), rep.len) {
        let honoured = get(header::IF_RANGE)
            .is_none_or(|v| conditional::if_range_matches(v, etag, last_modified));
        if honoured {
            match conditional::range(range, len) {
                RangeAnswer::Full => {}
                RangeAnswer::Partial { start: s, end: e } => {
                    status = StatusCode::PARTIAL_CONTENT;
                    (start, end) = (s, e);
                    content_range = Some(format!("bytes {s}-{}/{len}", e - 1));
                }
                RangeAnswer::Unsatisfiable => {
                    let mut r = text(
                        StatusCode::RANGE_NOT_SATISFIABLE,
                        "package-cache: range not satisfiable",
                    );
                    r.headers_mut()
                        .insert(header::CONTENT_RANGE, value(format!("bytes */{len}")));
                    return with_cache(r, rep.cache);
                }
            }
        }
    }
    let mut headers = rep.headers;
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let body = if status == StatusCode::NOT_MODIFIED {
        for name in [
            header::CONTENT_TYPE,
            header::CONTENT_ENCODING,
            header::CONTENT_LANGUAGE,
        ] {
            headers.remove(name);
        }
        body::empty()
    } else {
        if let Some(cr) = content_range {
            headers.insert(header::CONTENT_RANGE, value(cr));
        }
        if end != u64::MAX {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
        }
        if method == Method::HEAD {
            body::empty()
        } else {
            open(start, end)
        }
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    with_cache(response, rep.cache)
}

/// Streams an upstream response through unchanged (hop-by-hop headers dropped).
pub fn passthrough(method: &Method, fetched: Fetched, cache: CacheStatus) -> Response<Body> {
    let headers = headers::response_passable(&fetched.headers);
    let status = fetched.status;
    let no_body = method == Method::HEAD
        || status == StatusCode::NOT_MODIFIED
        || status == StatusCode::NO_CONTENT;
    let body = if no_body {
        body::empty()
    } else {
        body::from_stream(futures_util::stream::unfold(
            Some(fetched),
            |state| async move {
                let mut fetched = state?;
                match fetched.next_chunk().await {
                    Ok(Some(chunk)) => Some((Ok(chunk), Some(fetched))),
                    Ok(None) => None,
                    Err(err) => Some((Err(std::io::Error::other(err)), None)),
                }
            },
        ))
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    with_cache(response, cache)
}

fn value(s: String) -> HeaderValue {
    HeaderValue::try_from(s).expect("formatted header values are visible ASCII")
}

/// Another spelling of a canonical proxy path (`location`, query kept).
fn moved(location: &str) -> Response<Body> {
    let mut r = text(StatusCode::MOVED_PERMANENTLY, format!("see {location}"));
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// An answer the proxy gives itself.
pub fn local(method: &Method, local: &Local) -> Response<Body> {
    match local {
        Local::MountRoot => mount_root(method),
        Local::Redirect(location) => moved(location),
    }
}

/// A RubyGems source root, answered by the mount itself: `gem` sends
/// `HEAD /` to choose the compact index, also when the upstream is away.
fn mount_root(method: &Method) -> Response<Body> {
    let mut response = Response::new(if *method == Method::HEAD {
        body::empty()
    } else {
        body::full(bytes::Bytes::from_static(b"package-cache rubygems mount\n"))
    });
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream;

    fn fetch(codes: &[u16]) -> Error {
        let attempts = codes
            .iter()
            .map(|&code| match code {
                0 => upstream::Error::Timeout {
                    url: "http://a/x".into(),
                    secs: 1,
                },
                code => upstream::Error::Status {
                    url: "http://a/x".into(),
                    status: StatusCode::from_u16(code).unwrap(),
                },
            })
            .collect();
        Error::fetch(upstream::Failed { attempts })
    }

    #[test]
    fn each_class_picks_its_status_family() {
        let cases = [
            (fetch(&[404, 410]), 404),
            (fetch(&[]), 404),
            (fetch(&[0, 0]), 504),
            (fetch(&[404, 500]), 502),
            (fetch(&[0, 503]), 502),
            (Error::Missing { key: "/a".into() }, 404),
            (Error::Portal { url: "u".into() }, 502),
            (Error::Aborted { key: "/a".into() }, 502),
            (Error::Forbidden { host: "h".into() }, 403),
            (Error::Malformed { reason: "r" }, 400),
            (
                Error::Method {
                    method: Method::POST,
                },
                405,
            ),
            (
                Error::Path {
                    source: KeyError::TooLong,
                },
                414,
            ),
            (
                Error::Path {
                    source: KeyError::DotSegment,
                },
                400,
            ),
            (Error::NotOnMount { path: "/x".into() }, 404),
            (Error::Busy { key: "/a".into() }, 503),
        ];
        for (err, status) in cases {
            let response = error(&err);
            assert_eq!(response.status().as_u16(), status, "{err:?}");
            assert!(response.headers().get(X_CACHE).is_none(), "{err:?}");
        }
        let mut failed = error(&Error::Busy { key: "/a".into() });
        assert_eq!(
            stamp(&mut failed),
            None,
            "an error says nothing of the cache"
        );
        let busy = failed;
        assert_eq!(busy.headers()[header::RETRY_AFTER], "1");
        let post = error(&Error::Method {
            method: Method::POST,
        });
        assert_eq!(post.headers()[header::ALLOW], "GET, HEAD");
    }

    #[test]
    fn x_cache_is_written_from_the_status_the_answer_carries() {
        for cache in [CacheStatus::Hit, CacheStatus::Miss, CacheStatus::Pass] {
            let rep = Representation {
                headers: HeaderMap::new(),
                len: Some(3),
                cache,
            };
            let mut ok = representation(&Method::GET, &HeaderMap::new(), rep, |_, _| {
                body::full(bytes::Bytes::from_static(b"abc"))
            });
            assert!(ok.headers().get(X_CACHE).is_none(), "not before the stamp");
            assert_eq!(stamp(&mut ok), Some(cache));
            assert_eq!(ok.headers()[X_CACHE], cache.as_str());
        }
        // A range past the end is refused, but what the cache did still shows.
        let mut ranged = HeaderMap::new();
        ranged.insert(header::RANGE, HeaderValue::from_static("bytes=9-"));
        let rep = Representation {
            headers: HeaderMap::new(),
            len: Some(3),
            cache: CacheStatus::Hit,
        };
        let mut refused = representation(&Method::GET, &ranged, rep, |_, _| body::empty());
        assert_eq!(refused.status(), StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(stamp(&mut refused), Some(CacheStatus::Hit));
        assert_eq!(refused.headers()[X_CACHE], "HIT");
    }
}
