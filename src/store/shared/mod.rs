//! The shared object-store tier: a fleet's nodes share one S3-compatible bucket
//! (Ceph RGW, MinIO, AWS S3, …) through the `object_store` crate.
//!
//! A body is streamed up under a name of its own, never overwritten with other bytes
//! (see `layout`), and published by creating one small reference per key with a single
//! `PUT If-None-Match: *` (the commit point; a multipart completion cannot be one, since
//! RGW ignores the condition there). Racing writers converge on the first reference; a
//! loser deletes its body at once. Readers verify size and sha256 and are held one chunk
//! short until the digest matches (`read`). Every request is bounded in time (`http`) and
//! goes through a circuit breaker (`breaker`), so a slow or dead store costs a request
//! path nothing but a skipped tier. `tier` puts the client below the local disk as a
//! `store::tier::Tier`. Not here: the local disk (`store`), HTTP semantics.

mod backlog;
mod breaker;
mod doc;
mod entries;
mod first_seen;
mod http;
mod layout;
mod maintain;
mod raw;
mod read;
mod reference;
mod tier;
mod upload;

pub use backlog::Backlog;
pub use breaker::{BreakerState, SharedStats};
pub use doc::SharedDoc;
pub use maintain::{Listed, PendingUpload};
pub use read::SharedBody;
pub use reference::{ArtifactInfo, EntryInfo, Reference};
pub use tier::{SharedStatus, SharedTier, MAX_BACKLOG};
pub use upload::{BodyUpload, UploadHint, UploadedBody};

use crate::config::SharedStoreConfig;
use breaker::{Breaker, Counters};
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path;
use object_store::{BackoffConfig, ClientConfigKey, RetryConfig, UpdateVersion};
use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Errors of the shared tier.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The breaker is open: the store was not asked.
    #[error("shared store skipped after repeated failures ({op})")]
    Unavailable {
        /// What was to be done.
        op: &'static str,
    },
    /// The store failed to answer (transport, timeout, error status).
    #[error("shared store {op} {name}: {source}")]
    Store {
        /// What was being done.
        op: &'static str,
        /// On which object (relative to the prefix).
        name: String,
        /// object_store's error.
        #[source]
        source: object_store::Error,
    },
    /// An object in the store is not what its reference says: never served as good.
    #[error("shared object {name} is damaged: {damage}")]
    Damaged {
        /// The damaged object (a body or a reference).
        name: String,
        /// How.
        damage: Damage,
    },
    /// A body handed in for upload is not what was announced: nothing is published.
    #[error("body rejected: {damage}")]
    Rejected {
        /// How it differs.
        damage: Damage,
    },
    /// Writers kept replacing the reference under this one.
    #[error("reference {name} keeps changing")]
    Contended {
        /// The reference.
        name: String,
    },
    /// The configuration cannot work (no bucket, http without allow_http, …).
    #[error("shared store configuration: {0}")]
    Config(String),
    /// A name that is not one of the layout's (from a caller, or a listing).
    #[error("not a shared {kind} name: {name:?}")]
    BadName {
        /// What it should have named (body, reference, artifact).
        kind: &'static str,
        /// The name given.
        name: String,
    },
    /// The store answered a request in a way S3 does not (an upload it lost track of).
    #[error("shared store answered {op} {name} unexpectedly")]
    Unexpected {
        /// What was being done.
        op: &'static str,
        /// On which object.
        name: String,
    },
    /// A task of this tier failed (panicked or was cancelled).
    #[error("shared store task failed: {0}")]
    Task(String),
}

/// How an object differs from what it should be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Damage {
    /// Wrong sha256.
    #[error("sha256 is {got}, expected {expected}")]
    Digest {
        /// The expected digest.
        expected: String,
        /// The actual one.
        got: String,
    },
    /// Fewer bytes than expected.
    #[error("{got} of {expected} bytes")]
    Short {
        /// Expected length.
        expected: u64,
        /// Bytes there.
        got: u64,
    },
    /// More bytes than expected.
    #[error("longer than {expected} bytes")]
    Long {
        /// Expected length.
        expected: u64,
    },
    /// The reference names a body that is not there.
    #[error("its body is missing")]
    Missing,
    /// The reference (or document head) cannot be read.
    #[error("unreadable: {0}")]
    Unreadable(String),
}

impl Error {
    /// Whether the store is down or skipped: serve from elsewhere and move on.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::Unavailable { .. } | Error::Store { .. })
    }

    /// Whether a stored object proved damaged: fetch from upstream and replace it.
    pub fn is_damaged(&self) -> bool {
        matches!(self, Error::Damaged { .. })
    }
}

/// A reference found in the store, with the version it was read at (for
/// compare-and-swap replacement and touches).
#[derive(Clone, Debug)]
pub struct Found<M> {
    /// The reference.
    pub reference: Reference<M>,
    name: String,
    version: UpdateVersion,
}

impl<M> Found<M> {
    /// The reference's object name (relative to the prefix).
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// The outcome of a publication: the reference now in the store.
#[derive(Clone, Debug)]
pub enum Published<M> {
    /// Ours: the body uploaded is the one published.
    Won(Found<M>),
    /// Another writer's came first: ours was deleted (unless it is the same
    /// content-addressed body) and theirs is the entry.
    Lost(Found<M>),
}

impl<M> Published<M> {
    /// The reference in the store, whoever wrote it.
    pub fn found(&self) -> &Found<M> {
        match self {
            Published::Won(found) | Published::Lost(found) => found,
        }
    }

    /// Whether this writer's reference is the one in the store.
    pub fn won(&self) -> bool {
        matches!(self, Published::Won(_))
    }
}

/// What the store answered, besides success, that is not a failure of the store.
pub(super) enum Answer<T> {
    Done(T),
    NotFound,
    Exists,
    Precondition,
}

/// The shared tier, open. Cheap to clone; clones share the client, the breaker and the
/// counters. Tasks it spawns (aborting dropped uploads, deleting unpublished bodies,
/// upkeep) belong to the tracker given to [`SharedStore::open`] and stop on its token.
#[derive(Clone, Debug)]
pub struct SharedStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    s3: AmazonS3,
    /// The prefix with a trailing `/`, or empty.
    prefix: String,
    config: SharedStoreConfig,
    breaker: Breaker,
    counters: Arc<Counters>,
    raw: raw::RawS3,
    /// When this client was opened: this node's uploads begun before are abandoned.
    opened_at: std::time::SystemTime,
    tracker: TaskTracker,
    cancel: CancellationToken,
}

impl SharedStore {
    /// Builds the client for `config` (reading the `AWS_*` environment when it says so).
    /// No request is sent: an unreachable store shows up on first use, as a skipped tier.
    /// Blocking work (the system's certificates) runs off the runtime.
    pub async fn open(
        config: &SharedStoreConfig,
        tracker: TaskTracker,
        cancel: CancellationToken,
    ) -> Result<SharedStore, Error> {
        let config = config.clone();
        tokio::task::spawn_blocking(move || SharedStore::open_blocking(config, tracker, cancel))
            .await
            .map_err(|e| Error::Task(e.to_string()))?
    }

    fn open_blocking(
        config: SharedStoreConfig,
        tracker: TaskTracker,
        cancel: CancellationToken,
    ) -> Result<SharedStore, Error> {
        let mut builder = match config.read_env {
            true => AmazonS3Builder::from_env(),
            false => AmazonS3Builder::new(),
        };
        for (key, value) in &config.s3_options {
            let key = AmazonS3ConfigKey::from_str(key)
                .map_err(|_| Error::Config(format!("unknown option {key}")))?;
            builder = builder.with_config(key, value);
        }
        let allow_http = builder
            .get_config_value(&AmazonS3ConfigKey::Client(ClientConfigKey::AllowHttp))
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let endpoint = builder.get_config_value(&AmazonS3ConfigKey::Endpoint);
        if endpoint
            .as_deref()
            .is_some_and(|e| e.starts_with("http://"))
            && !allow_http
        {
            return Err(Error::Config(
                "an http:// endpoint needs allow_http=true (AWS_ALLOW_HTTP=true)".into(),
            ));
        }
        let region = builder
            .get_config_value(&AmazonS3ConfigKey::Region)
            .unwrap_or_else(|| "us-east-1".into());
        let limits = http::Limits {
            connect: config.connect_timeout,
            head: config.timeout,
            idle: config.idle_timeout,
        };
        // object_store retries 10 times within 3 minutes by default: a dead store would
        // hold a request that long, and even one retry of a body that stalled adds a
        // whole head timeout to the idle one (measured: 1 s idle + 10 s). No retries:
        // hyper's pool already resends a request whose pooled connection was found
        // closed, and every caller has the disk or the upstream to fall back on.
        let retry = RetryConfig {
            backoff: BackoffConfig::default(),
            max_retries: 0,
            retry_timeout: config.timeout,
        };
        let s3 = builder
            .with_bucket_name(&config.bucket)
            .with_retry(retry)
            .with_http_connector(http::Connector::new(limits))
            .build()
            .map_err(|e| Error::Config(e.to_string()))?;
        let counters = Arc::new(Counters::default());
        let prefix = match config.prefix.is_empty() {
            true => String::new(),
            false => format!("{}/", config.prefix),
        };
        Ok(SharedStore {
            inner: Arc::new(Inner {
                raw: raw::RawS3::new(http::Service::new(limits), region),
                s3,
                prefix,
                breaker: Breaker::new(
                    config.breaker_failures,
                    config.breaker_cooldown,
                    counters.clone(),
                ),
                counters,
                config,
                opened_at: std::time::SystemTime::now(),
                tracker,
                cancel,
            }),
        })
    }

    /// `s3://bucket/prefix`.
    pub fn url(&self) -> String {
        self.inner.config.url()
    }

    /// The counters so far.
    pub fn stats(&self) -> SharedStats {
        self.inner.counters.snapshot()
    }

    /// Whether the store is being used or skipped.
    pub fn breaker(&self) -> BreakerState {
        self.inner.breaker.state()
    }

    /// Asks the store for a missing object, whatever the breaker's state: an answer
    /// closes the breaker, a failure (re)opens it. For upkeep and health checks.
    pub async fn probe(&self) -> Result<(), Error> {
        let name = "probe";
        let path = self.path(name)?;
        let permit = self.inner.breaker.force();
        match object_store::ObjectStoreExt::head(&self.inner.s3, &path).await {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => {
                permit.succeeded();
                Ok(())
            }
            Err(source) => {
                permit.failed();
                Err(Error::Store {
                    op: "probe",
                    name: name.into(),
                    source,
                })
            }
        }
    }

    /// The full object path of `name` (relative to the prefix).
    fn path(&self, name: &str) -> Result<Path, Error> {
        Path::parse(format!("{}{name}", self.inner.prefix)).map_err(|_| Error::BadName {
            kind: "object",
            name: name.to_string(),
        })
    }

    /// `name` relative to the prefix, for a path the store listed.
    fn relative(&self, path: &Path) -> Option<String> {
        path.as_ref()
            .strip_prefix(self.inner.prefix.as_str())
            .map(str::to_string)
    }

    /// Runs one request through the breaker: skipped while it is open; a failure
    /// counts against the store, an answer (not found, exists, precondition) does not.
    async fn call<T>(
        &self,
        op: &'static str,
        name: &str,
        request: impl Future<Output = object_store::Result<T>>,
    ) -> Result<Answer<T>, Error> {
        let permit = self
            .inner
            .breaker
            .admit(Instant::now())
            .ok_or(Error::Unavailable { op })?;
        let answer = match request.await {
            Ok(value) => Answer::Done(value),
            Err(object_store::Error::NotFound { .. }) => Answer::NotFound,
            Err(object_store::Error::AlreadyExists { .. }) => Answer::Exists,
            Err(object_store::Error::Precondition { .. }) => Answer::Precondition,
            Err(source) => {
                permit.failed();
                return Err(Error::Store {
                    op,
                    name: name.to_string(),
                    source,
                });
            }
        };
        permit.succeeded();
        Ok(answer)
    }

    /// Counts a failure seen after a request's head (a body cut off).
    fn failed_late(&self) {
        self.inner.breaker.force().failed();
    }

    /// Deletes `name`. Failures are logged, not returned: a body that cannot be deleted
    /// now is found again by `gc --shared` (`SharedStore::orphan_bodies`).
    async fn delete_quietly(&self, name: String) {
        let Ok(path) = self.path(&name) else { return };
        let request = object_store::ObjectStoreExt::delete(&self.inner.s3, &path);
        match self.call("delete", &name, request).await {
            Ok(_) => {
                if layout::is_body(&name) {
                    Counters::add(&self.inner.counters.bodies_deleted, 1);
                }
            }
            Err(err) => tracing::warn!(name = %name, error = %err, "shared store: delete failed"),
        }
    }

    /// Runs `task` on the owner's tracker, unless the owner is shutting down or there is
    /// no runtime (a drop at exit): the upkeep sweep and `gc --shared` catch up later.
    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        if self.inner.cancel.is_cancelled() || tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let cancel = self.inner.cancel.clone();
        self.inner.tracker.spawn(async move {
            tokio::select! {
                () = cancel.cancelled() => {}
                () = task => {}
            }
        });
    }
}
