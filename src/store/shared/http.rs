//! The object store's transport: object_store's `HttpService` over this crate's own
//! hyper client (rustls with ring, the system's roots), so S3 needs neither reqwest nor a
//! second TLS stack (object_store's `aws` feature would add both, and aws-lc's C build).
//!
//! It enforces the tier's time limits, which object_store leaves to reqwest: a connect
//! timeout, a deadline on each response head (one more second per MiB the request sends,
//! so a part upload is not cut short), and an idle timeout on each response body. It does
//! not read the `HTTPS_PROXY` family of variables: the store is reached directly.

use async_trait::async_trait;
use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use object_store::client::{
    ClientOptions, HttpClient, HttpError, HttpErrorKind, HttpRequest, HttpRequestBody,
    HttpResponse, HttpResponseBody, HttpService,
};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Sleep;

/// The time limits of every request to the store.
#[derive(Clone, Copy, Debug)]
pub(super) struct Limits {
    /// TCP (and TLS) connect.
    pub(super) connect: Duration,
    /// Sending the request and receiving the response head (plus 1 s per MiB sent).
    pub(super) head: Duration,
    /// Silence within a response body.
    pub(super) idle: Duration,
}

/// Builds [`Service`]s for object_store's builders.
#[derive(Debug)]
pub(super) struct Connector {
    limits: Limits,
}

impl Connector {
    pub(super) fn new(limits: Limits) -> Connector {
        Connector { limits }
    }
}

impl object_store::client::HttpConnector for Connector {
    fn connect(&self, _options: &ClientOptions) -> object_store::Result<HttpClient> {
        Ok(HttpClient::new(Service::new(self.limits)))
    }
}

/// One pooled HTTP/1.1 client with the limits applied. Blocking at construction (it
/// reads the system's certificates): build it at start-up.
#[derive(Debug, Clone)]
pub(super) struct Service {
    client: Client<HttpsConnector<HttpConnector>, HttpRequestBody>,
    limits: Limits,
}

#[derive(Debug, thiserror::Error)]
#[error("no {0} within {1:?}")]
struct TimedOut(&'static str, Duration);

impl Service {
    pub(super) fn new(limits: Limits) -> Service {
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for err in &native.errors {
            tracing::debug!(error = %err, "skipping a system certificate");
        }
        roots.add_parsable_certificates(native.certs);
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(limits.connect));
        http.set_nodelay(true);
        http.set_keepalive(Some(Duration::from_secs(60)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .timer(TokioTimer::new())
            .build(https);
        Service { client, limits }
    }
}

#[async_trait]
impl HttpService for Service {
    async fn call(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let sent = request.body().content_length() as u64;
        let deadline = self.limits.head + Duration::from_secs(sent >> 20);
        let response = match tokio::time::timeout(deadline, self.client.request(request)).await {
            Err(_) => {
                return Err(HttpError::new(
                    HttpErrorKind::Timeout,
                    TimedOut("response head", deadline),
                ))
            }
            Ok(Err(err)) => {
                let kind = if err.is_connect() {
                    HttpErrorKind::Connect
                } else {
                    HttpErrorKind::Request
                };
                return Err(HttpError::new(kind, err));
            }
            Ok(Ok(response)) => response,
        };
        let (parts, body) = response.into_parts();
        let body = IdleBody {
            body,
            idle: self.limits.idle,
            timer: Box::pin(tokio::time::sleep(self.limits.idle)),
        };
        Ok(HttpResponse::from_parts(parts, HttpResponseBody::new(body)))
    }
}

/// A response body that fails when no frame arrives for `idle`.
struct IdleBody {
    body: Incoming,
    idle: Duration,
    timer: Pin<Box<Sleep>>,
}

impl Body for IdleBody {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(frame) => {
                let deadline = tokio::time::Instant::now() + this.idle;
                this.timer.as_mut().reset(deadline);
                Poll::Ready(frame.map(|f| {
                    f.map_err(|e| {
                        let kind = if e.is_timeout() {
                            HttpErrorKind::Timeout
                        } else {
                            HttpErrorKind::Interrupted
                        };
                        HttpError::new(kind, e)
                    })
                }))
            }
            Poll::Pending => match this.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(HttpError::new(
                    HttpErrorKind::Timeout,
                    TimedOut("body byte", this.idle),
                )))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}
