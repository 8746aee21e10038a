//! Fetching build inputs through the proxy's own listener on loopback
//! (`http://<proxy>/<mount>/...`), so remote sources and build requirements
//! are cached and hash-checked by the mounts like any other download. Owns
//! one small HTTP client, size limits and timeouts; knows nothing of package
//! formats (that is `kind`).

use crate::store::durable::TempFile;
use bytes::{Bytes, BytesMut};
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// The User-Agent of build fetches, so proxy logs tell them from clients.
const USER_AGENT: &str = concat!("package-cache-build/", env!("CARGO_PKG_VERSION"));
/// Upper bound of a source download unless `Fetcher::with_max_source` says
/// otherwise (`--max-source` does).
pub const MAX_SOURCE_SIZE: u64 = 512 * 1024 * 1024;
/// Redirects followed (the proxy redirects to canonical spellings; one is usual).
const MAX_REDIRECTS: usize = 3;

/// Timeouts of one fetch.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// Connecting to the proxy.
    pub connect: Duration,
    /// From sending the request to the response head (the proxy may be
    /// fetching from its upstream meanwhile).
    pub head: Duration,
    /// Between two pieces of the body.
    pub idle: Duration,
    /// The whole fetch, head and body.
    pub total: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            connect: Duration::from_secs(10),
            head: Duration::from_secs(120),
            idle: Duration::from_secs(60),
            total: Duration::from_secs(30 * 60),
        }
    }
}

/// Errors of a fetch. [`Error::is_client`] tells a request that cannot be
/// served (no such file, too big, no mount for the type) from a failure of
/// the proxy or its upstream (5xx, connection, timeout, local I/O).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The proxy answered 404 or 410: no such package or file upstream.
    #[error("{url}: not found")]
    NotFound {
        /// What was asked for.
        url: String,
    },
    /// Another unsuccessful status.
    #[error("{url}: status {status}")]
    Status {
        /// What was asked for.
        url: String,
        /// The status.
        status: StatusCode,
    },
    /// Connecting or sending failed (proxy not listening, connection reset).
    #[error("{url}: request failed")]
    Request {
        /// What was asked for.
        url: String,
        /// The client's error.
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    /// The body broke off (the proxy refuses a file that fails its hash check
    /// by ending the body early when the response had begun).
    #[error("{url}: body failed")]
    Body {
        /// What was asked for.
        url: String,
        /// The body error.
        #[source]
        source: hyper::Error,
    },
    /// A timeout of [`Timeouts`] expired.
    #[error("{url}: timed out waiting for the {what}")]
    Timeout {
        /// What was asked for.
        url: String,
        /// `"response"`, `"body"` or `"whole fetch"`.
        what: &'static str,
    },
    /// The body is larger than allowed.
    #[error("{url}: larger than {limit} bytes")]
    TooBig {
        /// What was asked for.
        url: String,
        /// The limit.
        limit: u64,
    },
    /// Too many redirects, or one leading away from the proxy.
    #[error("{url}: bad redirect to {location:?}")]
    Redirect {
        /// What was asked for.
        url: String,
        /// Where it pointed.
        location: String,
    },
    /// The path does not make a valid request URI (a link from an index page).
    #[error("{url}: not a valid request")]
    BadUrl {
        /// What was asked for.
        url: String,
    },
    /// The proxy has no mount of the kind needed.
    #[error("no {profile} mount is configured for builds")]
    NoMount {
        /// `"pypi"` or `"rubygems"`.
        profile: &'static str,
    },
    /// Writing the download failed.
    #[error("writing {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Whether the request is at fault (404/410 and other 4xx, too big, no
    /// mount for the type) rather than the proxy, its upstream or this host.
    pub fn is_client(&self) -> bool {
        match self {
            Error::NotFound { .. } | Error::TooBig { .. } | Error::NoMount { .. } => true,
            Error::Status { status, .. } => status.is_client_error(),
            Error::Request { .. }
            | Error::Body { .. }
            | Error::Timeout { .. }
            | Error::Redirect { .. }
            | Error::BadUrl { .. }
            | Error::Io { .. } => false,
        }
    }

    /// Whether the thing asked for does not exist (404/410).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }
}

/// A file fetched to disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Downloaded {
    /// Its length.
    pub size: u64,
    /// Its sha256, lower-case hex.
    pub sha256: String,
}

/// Fetches through the proxy's own listener on loopback, so sources are cached
/// and hash-checked like any download.
///
/// Cheap to clone (a pooled client). Requests are plain HTTP/1.1 to `proxy`.
#[derive(Clone, Debug)]
pub struct Fetcher {
    proxy: SocketAddr,
    pypi_mount: Option<String>,
    rubygems_mount: Option<String>,
    client: Client<HttpConnector, Empty<Bytes>>,
    timeouts: Timeouts,
    max_source: u64,
    /// Where downloads are staged (the cache's `tmp/`); beside each
    /// destination when unset.
    tmp_dir: Option<PathBuf>,
}

impl Fetcher {
    /// A fetcher for the proxy listening at `proxy`, whose pypi and rubygems
    /// mounts (if any) are named `pypi_mount` / `rubygems_mount`. No I/O.
    pub fn new(
        proxy: SocketAddr,
        pypi_mount: Option<String>,
        rubygems_mount: Option<String>,
    ) -> Fetcher {
        Fetcher::with_timeouts(proxy, pypi_mount, rubygems_mount, Timeouts::default())
    }

    /// As [`Fetcher::new`] with other timeouts.
    pub fn with_timeouts(
        proxy: SocketAddr,
        pypi_mount: Option<String>,
        rubygems_mount: Option<String>,
        timeouts: Timeouts,
    ) -> Fetcher {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(timeouts.connect));
        http.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .timer(TokioTimer::new())
            .build(http);
        Fetcher {
            proxy,
            pypi_mount,
            rubygems_mount,
            client,
            timeouts,
            max_source: MAX_SOURCE_SIZE,
            tmp_dir: None,
        }
    }

    /// The same fetcher with another bound on a source download (`--max-source`).
    pub fn with_max_source(mut self, bytes: u64) -> Fetcher {
        self.max_source = bytes;
        self
    }

    /// The same fetcher staging downloads in `dir` (on the destinations'
    /// filesystem, emptied at start-up: the cache's `tmp/`).
    pub fn with_tmp_dir(mut self, dir: PathBuf) -> Fetcher {
        self.tmp_dir = Some(dir);
        self
    }

    /// The largest source download accepted.
    pub fn max_source(&self) -> u64 {
        self.max_source
    }

    /// The proxy's address.
    pub fn proxy(&self) -> SocketAddr {
        self.proxy
    }

    /// The pypi mount's name, or [`Error::NoMount`].
    pub fn pypi_mount(&self) -> Result<&str, Error> {
        self.pypi_mount
            .as_deref()
            .ok_or(Error::NoMount { profile: "pypi" })
    }

    /// The rubygems mount's name, or [`Error::NoMount`].
    pub fn rubygems_mount(&self) -> Result<&str, Error> {
        self.rubygems_mount.as_deref().ok_or(Error::NoMount {
            profile: "rubygems",
        })
    }

    /// `http://<proxy><path>`; `path` starts with `/`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.proxy, path)
    }

    /// GETs `path` (root-relative, already percent-encoded where needed) and
    /// returns the body, at most `limit` bytes.
    pub async fn get_bytes(
        &self,
        path: &str,
        accept: Option<&str>,
        limit: u64,
    ) -> Result<Bytes, Error> {
        let work = async {
            let mut body = self.open(path, accept, limit).await?;
            let mut out = BytesMut::new();
            while let Some(chunk) = body.next().await? {
                out.extend_from_slice(&chunk);
            }
            Ok(out.freeze())
        };
        tokio::time::timeout(self.timeouts.total, work)
            .await
            .unwrap_or(Err(Failure::Timeout("whole fetch")))
            .map_err(|e| e.into_error(&self.url(path), Path::new(""), limit))
    }

    /// GETs `path` into the file `dest` (at most `limit` bytes): written to a
    /// `store::durable::TempFile` (in the tmp directory given with
    /// [`Fetcher::with_tmp_dir`], else beside `dest`), synced and renamed into
    /// place only when the whole body arrived; on failure nothing is left at
    /// `dest` or in the tmp directory.
    pub async fn download(&self, path: &str, dest: &Path, limit: u64) -> Result<Downloaded, Error> {
        let dir = match &self.tmp_dir {
            Some(dir) => dir.clone(),
            None => dest.parent().unwrap_or(Path::new(".")).to_path_buf(),
        };
        let io = |source| Error::Io {
            path: dest.to_path_buf(),
            source,
        };
        let created = dir.clone();
        let temp = tokio::task::spawn_blocking(move || TempFile::create(&created, 0o644))
            .await
            .map_err(|e| io(std::io::Error::other(e)))?
            .map_err(io)?;
        let work = async {
            let std_file = temp.file().try_clone().map_err(Failure::Io)?;
            let mut file = tokio::fs::File::from_std(std_file);
            let mut body = self.open(path, None, limit).await?;
            let mut hasher = Sha256::new();
            let mut size = 0u64;
            while let Some(chunk) = body.next().await? {
                hasher.update(&chunk);
                size += chunk.len() as u64;
                file.write_all(&chunk).await.map_err(Failure::Io)?;
            }
            file.flush().await.map_err(Failure::Io)?;
            Ok(Downloaded {
                size,
                sha256: hex::encode(hasher.finalize()),
            })
        };
        let result = tokio::time::timeout(self.timeouts.total, work)
            .await
            .unwrap_or(Err(Failure::Timeout("whole fetch")))
            .map_err(|e| e.into_error(&self.url(path), temp.path(), limit));
        let done = match result {
            Ok(done) => done,
            Err(e) => {
                // Dropping the temporary file unlinks it.
                let _ = tokio::task::spawn_blocking(move || drop(temp)).await;
                return Err(e);
            }
        };
        let to = dest.to_path_buf();
        tokio::task::spawn_blocking(move || temp.commit(&to))
            .await
            .map_err(|e| io(std::io::Error::other(e)))?
            .map_err(io)?;
        Ok(done)
    }

    /// Sends a GET, following redirects that stay on the proxy, and checks the
    /// status and declared length.
    async fn open(&self, path: &str, accept: Option<&str>, limit: u64) -> Result<Body, Failure> {
        let mut path = path.to_string();
        let mut redirects = 0;
        let response = loop {
            let mut request = Request::get(self.url(&path))
                .header(header::USER_AGENT, USER_AGENT)
                .header(header::HOST, self.proxy.to_string());
            if let Some(accept) = accept {
                request = request.header(header::ACCEPT, accept);
            }
            let request = request.body(Empty::new()).map_err(|_| Failure::BadUrl)?;
            let response = tokio::time::timeout(self.timeouts.head, self.client.request(request))
                .await
                .map_err(|_| Failure::Timeout("response"))?
                .map_err(Failure::Request)?;
            let status = response.status();
            if !status.is_redirection() || status == StatusCode::NOT_MODIFIED {
                break response;
            }
            let location = response
                .headers()
                .get(header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .unwrap_or("")
                .to_string();
            let own = format!("http://{}", self.proxy);
            path = match location.strip_prefix(&own) {
                Some(rest) if rest.starts_with('/') => rest.to_string(),
                _ if location.starts_with('/') && !location.starts_with("//") => location,
                _ => return Err(Failure::Redirect(location)),
            };
            redirects += 1;
            if redirects > MAX_REDIRECTS {
                return Err(Failure::Redirect(path));
            }
        };
        let status = response.status();
        if status == StatusCode::NOT_FOUND || status == StatusCode::GONE {
            return Err(Failure::NotFound);
        }
        if !status.is_success() {
            return Err(Failure::Status(status));
        }
        let declared = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > limit) {
            return Err(Failure::TooBig);
        }
        Ok(Body {
            body: response.into_body(),
            seen: 0,
            limit,
            idle: self.timeouts.idle,
        })
    }
}

/// A response body read piece by piece, with the idle timeout and size limit.
struct Body {
    body: hyper::body::Incoming,
    seen: u64,
    limit: u64,
    idle: Duration,
}

impl Body {
    async fn next(&mut self) -> Result<Option<Bytes>, Failure> {
        loop {
            let frame = tokio::time::timeout(self.idle, self.body.frame())
                .await
                .map_err(|_| Failure::Timeout("body"))?;
            let Some(frame) = frame else {
                return Ok(None);
            };
            // Trailers are not data.
            let Ok(data) = frame.map_err(Failure::Body)?.into_data() else {
                continue;
            };
            self.seen += data.len() as u64;
            if self.seen > self.limit {
                return Err(Failure::TooBig);
            }
            return Ok(Some(data));
        }
    }
}

/// A fetch's failure before the URL and file are attached.
#[derive(Debug)]
enum Failure {
    NotFound,
    Status(StatusCode),
    Request(hyper_util::client::legacy::Error),
    Body(hyper::Error),
    Timeout(&'static str),
    TooBig,
    Redirect(String),
    BadUrl,
    Io(std::io::Error),
}

impl Failure {
    fn into_error(self, url: &str, file: &Path, limit: u64) -> Error {
        let url = url.to_string();
        match self {
            Failure::NotFound => Error::NotFound { url },
            Failure::Status(status) => Error::Status { url, status },
            Failure::Request(source) => Error::Request { url, source },
            Failure::Body(source) => Error::Body { url, source },
            Failure::Timeout(what) => Error::Timeout { url, what },
            Failure::TooBig => Error::TooBig { url, limit },
            Failure::Redirect(location) => Error::Redirect { url, location },
            Failure::BadUrl => Error::BadUrl { url },
            Failure::Io(source) => Error::Io {
                path: file.to_path_buf(),
                source,
            },
        }
    }
}
