//! `Upstream`: fetches a path from the `--source` mirrors in order, or from one
//! allowed host, following redirects, failing over on 404/410, 5xx, connect
//! errors, resets and timeouts before the first body byte.
//!
//! Redirects are followed within limits: never from https to http, and to
//! another origin only over a client that refuses loopback, private and
//! link-local addresses unless `--allow-redirect-host` names the host.
//!
//! It knows nothing of the cache: it returns a response whose first body chunk
//! is already in hand, so the caller commits to a source only once bytes flow.

pub mod auth;
pub mod client;
pub mod connect;
mod decode;
mod error;
mod fetched;
mod redirect;

use error::find_cause;
pub use error::{BodyError, Error, Failed, ShownUrl};
pub use fetched::Fetched;
use fetched::{next_data, RawError};
use redirect::{is_downgrade, redirect_target, same_origin};

use crate::config::{Authority, Credential, SourceUrl, UpstreamConfig};
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode};
use http_body_util::Empty;
use hyper::body::Incoming;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most bytes a decoded body may grow to: index documents are stored whole,
/// and the store takes none larger (`store::MAX_DOC_LEN`).
const DECODED_LIMIT: u64 = 128 << 20;

/// `User-Agent` sent upstream.
pub const USER_AGENT: &str = concat!("package-cache/", env!("CARGO_PKG_VERSION"));

/// Which upstream to ask.
#[derive(Clone, Copy, Debug)]
pub enum Via<'a> {
    /// The `--source` mirrors in order.
    Sources,
    /// These sources in order (a mount's).
    List(&'a [SourceUrl]),
    /// One named host.
    Host {
        /// Scheme.
        https: bool,
        /// The host.
        authority: &'a Authority,
    },
}

/// A request to send upstream.
pub struct FetchRequest<'a> {
    /// Where.
    pub via: Via<'a>,
    /// The client's raw path and query, encoding untouched.
    pub path_and_query: &'a str,
    /// GET or HEAD.
    pub method: Method,
    /// Headers to send (already free of hop-by-hop and Host).
    pub headers: HeaderMap,
    /// Decode a body the upstream content-coded (gzip, deflate, br) although
    /// asked for `identity`, for index documents, which are read and
    /// rewritten. The answer then carries no `Content-Encoding` or
    /// `Content-Length`. Files are never decoded: they are stored as sent.
    pub decode: bool,
}

/// Told of every attempt on a source (the metrics implement it; `app` wires
/// them in), so that this module reports without knowing who listens.
/// Called on the request path: implementations must be quick and never block.
pub trait Observer: Send + Sync {
    /// An attempt on `source` begins (one per source tried, its redirects
    /// included). Every attempt is then `answered`, `failed`, both (a head,
    /// then a failure such as a 404), or neither when its caller gave up.
    fn attempted(&self, source: &str);

    /// An attempt on `source` (an origin, `scheme://host:port`, whatever the
    /// path or redirects) got its final response head after `elapsed`,
    /// whatever its status.
    fn answered(&self, source: &str, elapsed: Duration);

    /// An attempt on `source` failed with `error` (a 404 included).
    fn failed(&self, source: &str, error: &Error);
}

/// The upstream side: a pooled client and the configured sources.
#[derive(Clone)]
pub struct Upstream {
    client: client::Clients,
    sources: Vec<SourceUrl>,
    idle: Duration,
    max_redirects: usize,
    observer: Arc<dyn Observer>,
}

impl Upstream {
    /// Builds the client (reads certificate files). Every attempt's latency
    /// and failure is told to `observer`, by the origin of the URL tried.
    pub fn new(
        config: &UpstreamConfig,
        observer: Arc<dyn Observer>,
    ) -> Result<Upstream, client::Error> {
        Ok(Upstream {
            client: client::build(config)?,
            sources: config.sources.clone(),
            idle: config.idle_timeout,
            max_redirects: config.max_redirects,
            observer,
        })
    }

    /// The configured mirrors.
    pub fn sources(&self) -> &[SourceUrl] {
        &self.sources
    }

    /// Tries each candidate URL in order until one answers with a status that
    /// does not call for failover, and (for GET) its first body byte arrived.
    pub async fn fetch(&self, req: FetchRequest<'_>) -> Result<Fetched, Failed> {
        // Each URL with the operator's credential for its origin, if any.
        let on = |s: &SourceUrl| (s.url_for(req.path_and_query), s.credential.clone());
        let urls: Vec<(String, Option<Credential>)> = match req.via {
            Via::Sources => self.sources.iter().map(on).collect(),
            Via::List(list) => list.iter().map(on).collect(),
            Via::Host { https, authority } => {
                let scheme = if https { "https" } else { "http" };
                vec![(
                    format!("{scheme}://{}{}", authority.as_str(), req.path_and_query),
                    None,
                )]
            }
        };
        // Credentials were meant for one server: never replay them to the
        // next mirror in line.
        let credentialed = [header::AUTHORIZATION, header::COOKIE]
            .iter()
            .any(|h| req.headers.contains_key(h));
        let urls = if credentialed {
            urls.into_iter().take(1).collect()
        } else {
            urls
        };
        let mut attempts = Vec::new();
        let count = urls.len();
        for (i, (url, credential)) in urls.into_iter().enumerate() {
            let started = Instant::now();
            let origin = origin_of(&url);
            self.observer.attempted(&origin);
            match self
                .fetch_one(url, credential.as_ref(), &req, &origin, started)
                .await
            {
                Ok(fetched) => {
                    tracing::debug!(source = %fetched.url, status = fetched.status.as_u16(),
                        elapsed_ms = started.elapsed().as_millis() as u64, "upstream answered");
                    return Ok(fetched);
                }
                Err(err) => {
                    log_failure(&origin, &err, started, i + 1 == count);
                    self.observer.failed(&origin, &err);
                    attempts.push(err);
                }
            }
        }
        Err(Failed { attempts })
    }

    /// One source: `credential` goes to its origin (unless the client sent
    /// its own `Authorization`); `origin` names it to the observer; `started` is
    /// when the attempt began (the head latency spans its redirects).
    async fn fetch_one(
        &self,
        mut url: String,
        credential: Option<&Credential>,
        req: &FetchRequest<'_>,
        origin: &str,
        started: Instant,
    ) -> Result<Fetched, Error> {
        let mut headers = req.headers.clone();
        if let Some(credential) = credential {
            headers
                .entry(header::AUTHORIZATION)
                .or_insert_with(|| credential.header());
        }
        let source = url.clone();
        for _ in 0..=self.max_redirects {
            // The source's own origin is where the operator sent us; any
            // other origin goes through the client that checks its address.
            let client = if same_origin(&source, &url) {
                &self.client.sources
            } else {
                &self.client.redirects
            };
            let response = self.send(client, &req.method, &url, &headers).await?;
            let status = response.status();
            if !status.is_redirection() || status == StatusCode::NOT_MODIFIED {
                self.observer.answered(origin, started.elapsed());
            }
            if status.is_redirection() && status != StatusCode::NOT_MODIFIED {
                let next = redirect_target(&url, response.headers())?;
                if is_downgrade(&url, &next) {
                    return Err(Error::Downgrade {
                        url,
                        location: next,
                    });
                }
                if !same_origin(&url, &next) {
                    // As curl does: credentials do not follow a redirect to another server.
                    for name in [
                        header::AUTHORIZATION,
                        header::COOKIE,
                        header::PROXY_AUTHORIZATION,
                    ] {
                        headers.remove(name);
                    }
                }
                url = next;
                continue;
            }
            if status == StatusCode::NOT_FOUND
                || status == StatusCode::GONE
                || status.is_server_error()
            {
                return Err(Error::Status { url, status });
            }
            let (mut parts, mut body) = response.into_parts();
            let no_body = req.method == Method::HEAD || status == StatusCode::NOT_MODIFIED;
            let decoder = if req.decode && !no_body && !decode::names_compressed_file(&url) {
                match decode::Decoder::for_headers(&parts.headers, DECODED_LIMIT) {
                    Ok(decoder) => decoder,
                    Err(coding) => return Err(Error::Encoding { url, coding }),
                }
            } else {
                None
            };
            if decoder.is_some() {
                // The body handed on is the decoded one.
                parts.headers.remove(header::CONTENT_ENCODING);
                parts.headers.remove(header::CONTENT_LENGTH);
            }
            let first = if no_body {
                None
            } else {
                match next_data(&mut body, self.idle).await {
                    Ok(first) => first,
                    Err(RawError::Idle(secs)) => return Err(Error::Timeout { url, secs }),
                    Err(RawError::Transport(source)) => return Err(Error::Body { url, source }),
                }
            };
            return Ok(Fetched {
                url,
                status,
                headers: parts.headers,
                first,
                body,
                idle: self.idle,
                decoder,
            });
        }
        Err(Error::Redirect {
            url,
            reason: "too many redirects",
        })
    }
}

/// One line per failed attempt. A failure that moves on to the next source
/// is a warning; so is the last source failing. A 404/410 from the last (or
/// only) source is routine — Portage probes mirrors for files they may not
/// have, and the access log already shows the 404 — so it is an info line.
/// The error shows its URL without the query (tokens); the whole URL goes
/// to a debug line of its own.
fn log_failure(origin: &str, err: &Error, started: Instant, last: bool) {
    let elapsed_ms = started.elapsed().as_millis() as u64;
    if err.url().contains('?') {
        tracing::debug!(source = %origin, url = err.url(), "failed attempt's URL");
    }
    if !last {
        tracing::warn!(source = %origin, error = %err, elapsed_ms, "upstream failed; trying next");
    } else if err.is_not_found() {
        tracing::info!(source = %origin, error = %err, elapsed_ms, "not found upstream; no more sources");
    } else {
        tracing::warn!(source = %origin, error = %err, elapsed_ms, "upstream failed; no more sources");
    }
}

/// `scheme://host:port` of `url`, the port always spelled out, so that one
/// source has one label however its URLs are written.
fn origin_of(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => format!(
            "{}://{}:{}",
            u.scheme(),
            u.host_str().unwrap_or(""),
            u.port_or_known_default().unwrap_or(0)
        ),
        Err(_) => "invalid".to_string(),
    }
}

impl Upstream {
    /// Sends one request. A pooled connection that the upstream closed
    /// under the request (its keep-alive timeout fired as the request went
    /// out) answered nothing, and GET and HEAD are idempotent, so the request
    /// goes again (RFC 9112 §9.3.1), at most twice more.
    async fn send(
        &self,
        client: &client::HttpClient,
        method: &Method,
        url: &str,
        headers: &HeaderMap,
    ) -> Result<hyper::Response<Incoming>, Error> {
        let mut retries = 0;
        loop {
            let mut request = Request::builder()
                .method(method.clone())
                .uri(url)
                .body(Empty::<Bytes>::new())
                .map_err(|_| Error::Redirect {
                    url: url.to_string(),
                    reason: "not a valid URL",
                })?;
            *request.headers_mut() = headers.clone();
            request
                .headers_mut()
                .entry(header::USER_AGENT)
                .or_insert(HeaderValue::from_static(USER_AGENT));
            match tokio::time::timeout(self.idle, client.request(request)).await {
                Err(_) => {
                    return Err(Error::Timeout {
                        url: url.to_string(),
                        secs: self.idle.as_secs(),
                    })
                }
                Ok(Ok(response)) => return Ok(response),
                Ok(Err(source)) if retries < 2 && closed_unanswered(&source) => {
                    retries += 1;
                    tracing::debug!(url, error = %source, "pooled connection closed under the request; sending again");
                }
                Ok(Err(source)) => {
                    if let Some(refused) = find_cause::<connect::Refused>(&source) {
                        return Err(Error::RedirectRefused {
                            url: url.to_string(),
                            source: refused.clone(),
                        });
                    }
                    return Err(Error::Connect {
                        url: url.to_string(),
                        source,
                    });
                }
            }
        }
    }
}

/// Whether a request failed because its (reused) connection closed before
/// any response byte: nothing was answered, so nothing was done.
fn closed_unanswered(err: &hyper_util::client::legacy::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    while let Some(cause) = source {
        if let Some(hyper_err) = cause.downcast_ref::<hyper::Error>() {
            return hyper_err.is_incomplete_message() || hyper_err.is_canceled();
        }
        source = cause.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_labels_spell_out_the_port() {
        assert_eq!(origin_of("http://a/x?y"), "http://a:80");
        assert_eq!(origin_of("https://A.example/x"), "https://a.example:443");
        assert_eq!(origin_of("http://[::1]:8080/x"), "http://[::1]:8080");
    }
}
