//! The admin listener: `/metrics` (OpenMetrics, or the Prometheus text format
//! 0.0.4 for a scraper that prefers it), `/healthz` and the HTML
//! status page, on a port of its own so that no mirrored path can collide
//! with them. Owns its accept loop and routing; the numbers come from
//! `Metrics`, the store and the cache-size provider, and the page from `page`.

mod accept;
mod page;
mod policy;
mod text;
mod traffic;

use crate::builds::Builds;
use crate::metrics::{Metrics, Sampled, SharedSample};
use crate::server;
use crate::store::shared::SharedTier;
use crate::store::Store;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Reports `(bytes, entries)` of the committed cache. Called on the runtime
/// at every scrape and page view, so it must be cheap and never block.
pub type CacheSize = Arc<dyn Fn() -> (u64, u64) + Send + Sync>;

/// Connections the admin port serves at once; more are closed at accept.
/// Scrapers and a browser need a handful; the bound keeps a stuck client
/// from holding tasks.
const MAX_CONNECTIONS: usize = 32;
/// Time to send a request head, and to take each write of the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// The admin endpoints' shared state. Cheap to clone.
#[derive(Clone)]
pub struct Admin {
    inner: Arc<State>,
}

#[derive(Clone)]
struct State {
    metrics: Arc<Metrics>,
    store: Store,
    cache_size: CacheSize,
    builds: Builds,
    /// The shared object-store tier, with `--shared-store`.
    shared: Option<SharedTier>,
    /// Fires when the app starts shutting down: `/healthz` turns 503 so a
    /// load balancer stops sending clients before the proxy port closes.
    stopping: CancellationToken,
    /// The supply-chain policy, for its section of the status page.
    supply: Option<Arc<crate::supply::Supply>>,
}

impl Admin {
    /// Endpoints over `metrics`, `store` and `builds`; `cache_size` is read
    /// at each request; `stopping` is the app's stop token.
    pub fn new(
        metrics: Arc<Metrics>,
        store: Store,
        cache_size: CacheSize,
        builds: Builds,
        stopping: CancellationToken,
    ) -> Admin {
        Admin {
            inner: Arc::new(State {
                metrics,
                store,
                cache_size,
                builds,
                shared: None,
                stopping,
                supply: None,
            }),
        }
    }

    /// Shows `supply`'s record on the status page (when a policy is configured).
    pub fn with_supply(mut self, supply: Arc<crate::supply::Supply>) -> Admin {
        Arc::make_mut(&mut self.inner).supply = supply.is_on().then_some(supply);
        self
    }

    /// Shows `shared` (the shared store tier) in `/metrics` and on the page.
    /// Call before the endpoints are served.
    pub fn with_shared(mut self, shared: Option<SharedTier>) -> Admin {
        Arc::get_mut(&mut self.inner)
            .expect("set before the admin endpoints are served")
            .shared = shared;
        self
    }

    /// Serves `listener` until `stop` fires, then lets open connections
    /// finish; `hard_stop` ends whatever is left. Connection tasks go on `tasks`.
    pub async fn serve(
        self,
        listener: TcpListener,
        tasks: TaskTracker,
        stop: CancellationToken,
        hard_stop: CancellationToken,
    ) {
        let limits = server::SmallLimits {
            what: "admin",
            max_connections: MAX_CONNECTIONS,
            io_timeout: IO_TIMEOUT,
        };
        server::serve_small(
            listener,
            limits,
            move |req, _peer| {
                let admin = self.clone();
                async move { admin.handle(req).await }
            },
            tasks,
            stop,
            hard_stop,
        )
        .await
    }

    /// Answers one admin request. Only GET and HEAD; unknown paths get 404.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Full<Bytes>> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return response;
        }
        match req.uri().path() {
            "/metrics" => {
                let accept = req.headers().get(header::ACCEPT);
                self.metrics(accept.and_then(|v| v.to_str().ok()))
            }
            "/healthz" => self.health().await,
            "/" => self.page(),
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }

    fn sampled(&self) -> Sampled {
        let (cache_bytes, cache_entries) = (self.inner.cache_size)();
        let (jobs, queued) = self.inner.builds.counts();
        Sampled {
            fills_in_progress: self.inner.store.fills_in_progress() as u64,
            cache_bytes,
            cache_entries,
            build_queue_depth: queued as u64,
            build_jobs: jobs
                .into_iter()
                .map(|(s, n)| (s.as_str(), n as u64))
                .collect(),
            shared: self.inner.shared.as_ref().map(shared_sample),
        }
    }

    /// The exposition in the format `accept` prefers (see `accept`).
    fn metrics(&self, accept: Option<&str>) -> Response<Full<Bytes>> {
        let format = accept::negotiate(accept);
        match self.inner.metrics.encode(self.sampled(), format) {
            Ok(body) => {
                let mut response = with_type(StatusCode::OK, body, format.content_type());
                response
                    .headers_mut()
                    .insert(header::VARY, HeaderValue::from_static("accept"));
                response
            }
            Err(err) => {
                tracing::error!(error = %err, "encoding metrics failed");
                text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "encoding metrics failed\n",
                )
            }
        }
    }

    async fn health(&self) -> Response<Full<Bytes>> {
        if self.inner.stopping.is_cancelled() {
            return text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n");
        }
        match self.inner.store.check_usable().await {
            Ok(()) => text(StatusCode::OK, "ok\n"),
            Err(err) => {
                tracing::warn!(error = %err, "health check: cache directory unusable");
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("cache directory unusable: {err}\n"),
                )
            }
        }
    }

    fn page(&self) -> Response<Full<Bytes>> {
        let view = page::View {
            snapshot: self.inner.metrics.snapshot(),
            sampled: self.sampled(),
            fills: self.inner.store.active_fills(),
            now: std::time::SystemTime::now(),
            policy: self.inner.supply.as_ref().map(|supply| {
                let now = supply.now();
                policy::PolicyView {
                    refusals: supply.record.latest_refusals(),
                    held: supply.record.held_back(now),
                    now,
                }
            }),
        };
        let mut response = with_type(
            StatusCode::OK,
            page::render(&view),
            "text/html; charset=utf-8",
        );
        // The page loads nothing and runs nothing; keys and error messages
        // in it are client-chosen (escaped), and this makes sure of the rest.
        response.headers_mut().insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'none'; style-src 'unsafe-inline'; img-src data:; \
                 base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            ),
        );
        response
    }
}

/// The shared tier's numbers as `metrics` takes them.
fn shared_sample(tier: &SharedTier) -> SharedSample {
    let s = tier.status();
    let c = s.stats;
    SharedSample {
        url: s.url,
        breaker: s.breaker.as_str(),
        backlog: s.backlog,
        events: vec![
            ("requests", c.requests),
            ("failures", c.failures),
            ("skipped", c.skipped),
            ("trips", c.trips),
            ("hits", c.hits),
            ("misses", c.misses),
            ("served", s.served),
            ("published", c.published),
            ("published_streaming", s.streamed),
            ("published_backlog", s.backlog_published),
            ("backlog_dropped", s.backlog_dropped),
            ("uploads_dropped", s.abandoned),
            ("races_lost", c.races_lost),
            ("damaged", c.damaged),
            ("damaged_removed", s.damaged_removed),
            ("bytes_up", c.bytes_up),
            ("bytes_down", c.bytes_down),
            ("uploads_aborted", c.uploads_aborted),
            ("bodies_deleted", c.bodies_deleted),
            ("touches", c.touches),
        ],
    }
}

fn text(status: StatusCode, body: impl Into<String>) -> Response<Full<Bytes>> {
    with_type(status, body.into(), "text/plain; charset=utf-8")
}

fn with_type(
    status: StatusCode,
    body: String,
    content_type: &'static str,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Every answer is a live reading: a cached one would be a lie.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
