//! The build API listener (default: loopback only): `/api/v1/builds` to
//! submit, read, list and cancel jobs, `/api/v1/artifacts/NAME` to download
//! an archive by its exact name, `/api/v1/inbox/SHA1` to upload a local
//! source, and VCAP's blocking `PUT /load/...`. Owns routing, the token
//! check, body limits and the mapping of `builds::Error` to status codes; the
//! JSON shapes are in `dto`, and everything else is `builds::Builds`.

mod dto;
mod peer;

use crate::body::{self, Body};
use crate::builds::job::{self, JobId, JobState};
use crate::builds::spec::BuildRequest;
use crate::builds::{self, Builds, Outcome};
use crate::server;
use bytes::Bytes;
use dto::JobView;
use futures_util::TryStreamExt;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Largest JSON body accepted.
const MAX_JSON: usize = 16 * 1024;
/// Connections served at once.
const MAX_CONNECTIONS: usize = 256;
/// Time to send a request head, and to take each write of the answer.
/// Uploads and `/load` waits are bounded elsewhere.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// What `Retry-After` says when the queue is full.
const RETRY_AFTER_SECS: u64 = 10;

/// The API's state. Cheap to clone.
#[derive(Clone)]
pub struct Api {
    builds: Builds,
    /// When set, writes need `Authorization: Bearer TOKEN`; only the
    /// token's sha256 is kept, compared in constant time.
    write_token: Option<String>,
    /// The listener's address (set by `serve`), to tell who a client is.
    local: Option<SocketAddr>,
}

impl Api {
    /// An API over `builds`; `write_token` protects the write endpoints.
    pub fn new(builds: Builds, write_token: Option<String>) -> Api {
        Api {
            builds,
            write_token: write_token.as_deref().map(job::token_hash),
            local: None,
        }
    }

    /// Serves `listener` until `stop` fires (see `server::serve_small`).
    pub async fn serve(
        mut self,
        listener: TcpListener,
        tasks: TaskTracker,
        stop: CancellationToken,
        hard_stop: CancellationToken,
    ) {
        self.local = listener.local_addr().ok();
        let limits = server::SmallLimits {
            what: "api",
            max_connections: MAX_CONNECTIONS,
            io_timeout: IO_TIMEOUT,
        };
        server::serve_small(
            listener,
            limits,
            move |req, peer| {
                let api = self.clone();
                async move { api.handle(req, peer).await }
            },
            tasks,
            stop,
            hard_stop,
        )
        .await
    }

    /// Answers one request.
    pub async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let response = match self.route(req, peer).await {
            Ok(response) => response,
            Err(err) => {
                let status = status_of(&err);
                if status.is_server_error() {
                    tracing::warn!(peer = %peer, method = %method, path = %path, error = %err, "api request failed");
                } else {
                    tracing::info!(peer = %peer, method = %method, path = %path, status = status.as_u16(), error = %err, "api request refused");
                }
                error_response(status, &err)
            }
        };
        tracing::debug!(peer = %peer, method = %method, path = %path, status = response.status().as_u16(), "api");
        response
    }

    async fn route(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Result<Response<Body>, ApiError> {
        let path = req.uri().path().to_string();
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let method = req.method().clone();
        match (&method, segments.as_slice()) {
            (&Method::POST, ["api", "v1", "builds"]) => {
                self.authorize(req.headers())?;
                self.submit(req).await
            }
            (&Method::GET, ["api", "v1", "builds"]) => self.list(&req),
            (&Method::GET, ["api", "v1", "builds", id]) => {
                let id = JobId::parse(id).ok_or(ApiError::NotFound)?;
                let job = self.builds.get(&id).ok_or(ApiError::NotFound)?;
                let log = self.builds.log_tail(&job).await;
                Ok(json(StatusCode::OK, &JobView::full(&job, log, None)))
            }
            (&Method::DELETE, ["api", "v1", "builds", id]) => {
                let id = JobId::parse(id).ok_or(ApiError::NotFound)?;
                let token = header_str(req.headers(), "x-job-token");
                let operator = bearer(req.headers()).is_some_and(|t| self.builds.is_operator(t));
                let job = self.builds.cancel(&id, token, operator)?;
                Ok(json(
                    StatusCode::OK,
                    &JobView::full(&job, String::new(), None),
                ))
            }
            (&Method::GET | &Method::HEAD, ["api", "v1", "artifacts", name]) => {
                self.artifact(name, method == Method::HEAD).await
            }
            (&Method::PUT, ["api", "v1", "inbox", sha1]) => {
                self.authorize(req.headers())?;
                let sha1 = sha1.to_string();
                let declared = header_str(req.headers(), "content-length")
                    .and_then(|len| len.parse::<u64>().ok());
                let client = peer::client_of(peer, self.local).await;
                let stream = req
                    .into_body()
                    .into_data_stream()
                    .map_err(std::io::Error::other);
                let id = self
                    .builds
                    .upload(&sha1, Box::pin(stream), client, declared)
                    .await?;
                Ok(json(
                    StatusCode::CREATED,
                    &serde_json::json!({ "upload": id, "sha1": sha1 }),
                ))
            }
            (&Method::PUT, ["load", location, kind, name, runtime]) => {
                self.authorize(req.headers())?;
                self.load(location, kind, name, runtime).await
            }
            (_, ["api", "v1", "builds"] | ["api", "v1", "builds", _]) => {
                Err(ApiError::Method("GET, POST, DELETE"))
            }
            _ => Err(ApiError::NotFound),
        }
    }

    fn authorize(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        match &self.write_token {
            None => Ok(()),
            Some(hash) if bearer(headers).is_some_and(|t| job::token_matches(t, hash)) => Ok(()),
            Some(_) => Err(ApiError::Unauthorized),
        }
    }

    async fn submit(&self, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
        let body = Limited::new(req.into_body(), MAX_JSON)
            .collect()
            .await
            .map_err(|err| {
                if err
                    .downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    ApiError::TooLarge
                } else {
                    ApiError::BadRequest(format!("reading the body: {err}"))
                }
            })?
            .to_bytes();
        let request: BuildRequest = serde_json::from_slice(&body)
            .map_err(|err| ApiError::BadRequest(format!("bad JSON: {err}")))?;
        match self.builds.submit(request).await? {
            Outcome::Exists(meta) => Ok(json(StatusCode::OK, &JobView::existing(&meta))),
            Outcome::Queued(submitted) => Ok(json(
                StatusCode::ACCEPTED,
                &JobView::full(&submitted.job, String::new(), Some(submitted.token)),
            )),
        }
    }

    fn list(&self, req: &Request<Incoming>) -> Result<Response<Body>, ApiError> {
        let mut state = None;
        let (mut page, mut per_page) = (1usize, 50usize);
        for (key, value) in url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        {
            match &*key {
                "state" => {
                    state =
                        Some(JobState::parse(&value).ok_or_else(|| {
                            ApiError::BadRequest(format!("unknown state {value:?}"))
                        })?)
                }
                "page" => page = parse_count(&key, &value, 1, usize::MAX)?,
                "per_page" => per_page = parse_count(&key, &value, 1, 500)?,
                other => {
                    return Err(ApiError::BadRequest(format!(
                        "unknown parameter {other:?} (state, page, per_page)"
                    )))
                }
            }
        }
        let operator = bearer(req.headers()).is_some_and(|t| self.builds.is_operator(t));
        let (jobs, total) = self.builds.list(state, page, per_page);
        let jobs: Vec<JobView> = jobs
            .iter()
            .map(|job| JobView::listed(job, operator))
            .collect();
        Ok(json(
            StatusCode::OK,
            &serde_json::json!({ "jobs": jobs, "page": page, "per_page": per_page, "total": total }),
        ))
    }

    async fn artifact(&self, name: &str, head: bool) -> Result<Response<Body>, ApiError> {
        let (file, meta) = self
            .builds
            .open_artifact(name)
            .await
            .ok_or(ApiError::NotFound)?;
        let mut response = Response::new(if head {
            body::empty()
        } else {
            let stream = tokio_util::io::ReaderStream::with_capacity(file, 64 * 1024);
            body::from_stream(stream)
        });
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/gzip"),
        );
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(meta.size));
        if let Ok(value) = HeaderValue::from_str(&format!("\"{}\"", meta.sha256)) {
            headers.insert(header::ETAG, value);
        }
        Ok(response)
    }

    /// VCAP's route: blocks until the build is done; 200 when the artifact
    /// was there already, 204 when it was built, else an error status with
    /// the message as a JSON string (as VCAP's client expects).
    async fn load(
        &self,
        location: &str,
        kind: &str,
        name: &str,
        runtime: &str,
    ) -> Result<Response<Body>, ApiError> {
        match self.builds.load(location, kind, name, runtime).await? {
            builds::LoadOutcome::Existed => Ok(status_only(StatusCode::OK)),
            builds::LoadOutcome::Built => Ok(status_only(StatusCode::NO_CONTENT)),
        }
    }
}

/// Why the API refused a request. `status_of` is the one place that picks
/// the status code.
#[derive(Debug, thiserror::Error)]
enum ApiError {
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    Method(&'static str),
    #[error("this endpoint needs Authorization: Bearer <token>")]
    Unauthorized,
    #[error("request body too large (at most {MAX_JSON} bytes)")]
    TooLarge,
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Build(#[from] builds::Error),
}

fn status_of(err: &ApiError) -> StatusCode {
    match err {
        ApiError::NotFound => StatusCode::NOT_FOUND,
        ApiError::Method(_) => StatusCode::METHOD_NOT_ALLOWED,
        ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
        ApiError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
        ApiError::Build(err) => match err.kind() {
            builds::ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
            builds::ErrorKind::NotFound => StatusCode::NOT_FOUND,
            builds::ErrorKind::Forbidden => StatusCode::FORBIDDEN,
            builds::ErrorKind::Conflict => StatusCode::CONFLICT,
            builds::ErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            builds::ErrorKind::Busy => StatusCode::SERVICE_UNAVAILABLE,
            builds::ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            builds::ErrorKind::BuildFailed => StatusCode::UNPROCESSABLE_ENTITY,
            builds::ErrorKind::Server => StatusCode::INTERNAL_SERVER_ERROR,
        },
    }
}

fn error_response(status: StatusCode, err: &ApiError) -> Response<Body> {
    let mut response = json(status, &serde_json::Value::String(err.to_string()));
    let headers = response.headers_mut();
    if let ApiError::Method(allow) = err {
        headers.insert(header::ALLOW, HeaderValue::from_static(allow));
    }
    if status == StatusCode::SERVICE_UNAVAILABLE {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
    }
    if status == StatusCode::UNAUTHORIZED {
        headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Body> {
    let mut bytes = serde_json::to_vec_pretty(value).expect("API values serialise");
    bytes.push(b'\n');
    let mut response = Response::new(body::full(Bytes::from(bytes)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn status_only(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(body::empty());
    *response.status_mut() = status;
    response
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    header_str(headers, "authorization")?.strip_prefix("Bearer ")
}

fn parse_count(key: &str, value: &str, min: usize, max: usize) -> Result<usize, ApiError> {
    value
        .parse::<usize>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| ApiError::BadRequest(format!("{key} must be a number from {min} to {max}")))
}
