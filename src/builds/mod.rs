//! The build queue: clients ask for a package built for a runtime; jobs wait
//! in a bounded queue, identical requests join one job, workers fetch the
//! source through the proxy, build it in a sandbox and commit a deterministic
//! archive. Owns the job records and the artifacts; never imports `proxy`.
//!
//! Flow: `api` → `Builds::submit` (validate `spec`, take in a local source
//! through `inbox`, reuse an artifact built for the same ABI) → `queue` →
//! `worker` (fetch with `kind` through `fetch`, build in `sandbox`,
//! `archive`) → `artifacts`. `job` holds the states, `journal` keeps them
//! across restarts, `runtime` knows each interpreter's ABI.

pub mod archive;
pub mod artifacts;
mod error;
pub mod fetch;
pub mod inbox;
pub mod job;
pub mod journal;
pub mod kind;
pub mod queue;
pub mod quota;
pub mod runtime;
pub mod sandbox;
mod shared;
pub mod spec;
pub mod step;
mod submit;
mod sweep;
mod tree;
mod upload;
mod vcap;
mod worker;

pub use error::{Error, ErrorKind};
/// The privileged helper (`sandbox::helper`), under the name `main` and the
/// tests know it by.
pub use sandbox::helper as privhelper;

pub use tree::prepare_work_root;

use artifacts::{ArtifactMeta, Artifacts};
use fetch::Fetcher;
use inbox::Inbox;
use job::{Job, JobId, JobState};
use queue::BuildQueue;
use runtime::Runtime;
use sandbox::Sandbox;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What the build queue needs from the configuration.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `<cache>/.package-cache/build` (`store::Layout::build_root`).
    pub root: PathBuf,
    /// Where durable writes stage their files: the cache's `tmp/`
    /// (`store::Layout::tmp_dir`), on the same filesystem, emptied at start-up.
    pub tmp: PathBuf,
    /// Builds running at once.
    pub concurrency: usize,
    /// Jobs waiting at most; more get 503.
    pub queue_size: usize,
    /// Finished job records kept.
    pub keep_finished: usize,
    /// Largest source accepted (inbox, upload, remote download).
    pub max_source: u64,
    /// Bytes of inbox files one uid may have waiting.
    pub inbox_per_user: u64,
    /// Inbox files older than this are removed.
    pub inbox_stale: Duration,
    /// The shared store (`--shared-store`): built artifacts are published there and
    /// taken from there before building.
    pub shared: Option<crate::store::shared::SharedStore>,
}

/// Serves the proxy on a listener the build queue made (a job network's,
/// whose steps reach nothing else), until the token is cancelled. Given by
/// the app, which owns the proxy: the build queue never imports it.
pub type Gateway = Arc<dyn Fn(tokio::net::TcpListener, CancellationToken) + Send + Sync>;

/// What a submit did.
pub enum Outcome {
    /// The artifact was already built for this runtime's ABI.
    Exists(ArtifactMeta),
    /// A job was queued, or an identical one joined.
    Queued(Box<queue::Submitted>),
}

/// What a blocking VCAP load did.
pub enum LoadOutcome {
    /// The artifact was there already.
    Existed,
    /// It was built now.
    Built,
}

/// Why builds are off when no runtime is configured.
const NO_RUNTIME: &str =
    "no runtime is configured (start the server with --runtime NAME=INTERPRETER)";

/// The build service: the API's one handle. Cheap to clone.
#[derive(Clone)]
pub struct Builds {
    inner: Arc<Inner>,
}

struct Inner {
    settings: Settings,
    /// The operator's token (cancels any job, sees local jobs in listings),
    /// kept in `operator.token` (0600) for whoever can read the server's files.
    operator_token: String,
    queue: BuildQueue,
    artifacts: Artifacts,
    /// `None` while builds are off: then no inbox is open (nor created).
    inbox: Option<Arc<Inbox>>,
    runtimes: HashMap<String, Runtime>,
    /// Why builds cannot run, when they cannot.
    disabled: Option<String>,
    /// Uploads waiting for the build request that names them, by id.
    uploads: Mutex<HashMap<String, upload::Pending>>,
    /// Bytes of uploads each client has waiting or arriving.
    ledger: Arc<quota::Ledger>,
    worker: worker::Context,
    /// The app's stop token.
    stop: CancellationToken,
}

/// The directories under the build root.
fn paths(root: &Path) -> (PathBuf, PathBuf, PathBuf, PathBuf) {
    (
        root.join("jobs"),
        root.join("work"),
        root.join("logs"),
        root.join("inbox"),
    )
}

impl Builds {
    /// Opens the build root (creating its directories with their modes),
    /// loads the job records, and starts `settings.concurrency` workers on
    /// `tasks` until `stop`. `sandbox` is `Err(why)` when isolation is not
    /// available: then every submit is refused with that reason.
    pub async fn start(
        settings: Settings,
        runtimes: Vec<Runtime>,
        sandbox: Result<Sandbox, String>,
        fetcher: Fetcher,
        gateway: Gateway,
        tasks: &TaskTracker,
        stop: CancellationToken,
    ) -> std::io::Result<Builds> {
        let root = settings.root.clone();
        let tmp = settings.tmp.clone();
        let inbox_config = inbox::InboxConfig {
            max_size: settings.max_source,
            per_user_bytes: settings.inbox_per_user,
            stale_after: settings.inbox_stale,
        };
        let disabled = match (runtimes.is_empty(), &sandbox) {
            (true, _) => Some(NO_RUNTIME.into()),
            (false, Err(why)) => Some(why.clone()),
            (false, Ok(_)) => None,
        };
        let open_inbox = disabled.is_none();
        let (artifacts, journal, loaded, inbox, operator_token) =
            tokio::task::spawn_blocking(move || {
                tree::make_dirs(&root)?;
                let operator_token = operator_token(&root.join("operator.token"), &tmp)?;
                let (jobs, _, _, inbox) = paths(&root);
                let artifacts = Artifacts::open(&root, &tmp)?;
                let journal = journal::Journal::open(&jobs, &tmp)?;
                let loaded = journal.load()?;
                // The inbox's public directory is world-writable: it exists
                // (open) only while builds are on.
                let inbox = if open_inbox {
                    Some(Inbox::open(&inbox, inbox_config).map_err(std::io::Error::other)?)
                } else {
                    inbox::close_public(&inbox)?;
                    None
                };
                Ok::<_, std::io::Error>((artifacts, journal, loaded, inbox, operator_token))
            })
            .await
            .map_err(std::io::Error::other)??;
        let (queue, ready) =
            BuildQueue::open(journal, loaded, settings.queue_size, settings.keep_finished);
        let (_, work, logs, _) = paths(&settings.root);
        let runtimes: HashMap<String, Runtime> =
            runtimes.into_iter().map(|r| (r.name.clone(), r)).collect();
        let context = worker::Context {
            queue: queue.clone(),
            artifacts: artifacts.clone(),
            runtimes: runtimes.clone(),
            sandbox: sandbox.ok(),
            fetcher,
            work,
            logs,
            gateway,
            stop: stop.clone(),
            tmp: settings.tmp.clone(),
            shared: settings.shared.clone().map(|store| {
                shared::SharedArtifacts::new(
                    store,
                    artifacts.clone(),
                    settings.tmp.clone(),
                    tasks.clone(),
                    stop.clone(),
                )
            }),
        };
        let ledger = quota::Ledger::new(settings.inbox_per_user);
        let builds = Builds {
            inner: Arc::new(Inner {
                settings,
                operator_token,
                queue,
                artifacts,
                inbox: inbox.map(Arc::new),
                runtimes,
                disabled,
                uploads: Mutex::new(HashMap::new()),
                ledger,
                worker: context,
                stop: stop.clone(),
            }),
        };
        worker::spawn(
            &builds.inner.worker,
            ready,
            builds.inner.settings.concurrency,
            tasks,
            stop.clone(),
        );
        tasks.spawn(builds.clone().sweep(stop));
        Ok(builds)
    }

    /// Whether `token` is the operator's.
    pub fn is_operator(&self, token: &str) -> bool {
        job::token_matches(token, &job::token_hash(&self.inner.operator_token))
    }

    /// `Error::Disabled` while builds are off.
    fn check_enabled(&self) -> Result<(), Error> {
        match &self.inner.disabled {
            Some(why) => Err(Error::Disabled(why.clone())),
            None => Ok(()),
        }
    }

    fn open_inbox(&self) -> Result<Arc<Inbox>, Error> {
        self.inner
            .inbox
            .clone()
            .ok_or_else(|| Error::Disabled(self.inner.disabled.clone().unwrap_or_default()))
    }

    /// A copy of job `id`.
    pub fn get(&self, id: &JobId) -> Option<Job> {
        self.inner.queue.get(id)
    }

    /// A page of jobs, newest first, and the number that matched.
    pub fn list(&self, state: Option<JobState>, page: usize, per_page: usize) -> (Vec<Job>, usize) {
        self.inner.queue.list(state, page, per_page)
    }

    /// Cancels job `id` for the waiter holding `token`, or for all when `operator`.
    pub fn cancel(&self, id: &JobId, token: Option<&str>, operator: bool) -> Result<Job, Error> {
        Ok(self.inner.queue.cancel(id, token, operator)?)
    }

    /// The end of the job's log: the saved tail once finished, else the
    /// live log file's last lines.
    pub async fn log_tail(&self, job: &Job) -> String {
        if job.state.is_finished() {
            return job.log_tail.clone();
        }
        let path = self.inner.worker.log_path(&job.id);
        tokio::task::spawn_blocking(move || tree::tail(&path))
            .await
            .unwrap_or_default()
    }

    /// Opens artifact `name` for download, with its record. One not built here is
    /// taken from the shared store when published there for this node's runtime of
    /// that name (built from a remote source: a local source's artifact is taken only
    /// by a build request, which names the source's bytes).
    pub async fn open_artifact(&self, name: &str) -> Option<(tokio::fs::File, ArtifactMeta)> {
        if let Some(found) = self.open_local(name).await {
            return Some(found);
        }
        let shared = self.inner.worker.shared.as_ref()?;
        let runtime = artifacts::runtime_of(name)?;
        let abi = self.inner.runtimes.get(runtime)?.abi().await.ok()?;
        shared.take(name, &abi.0, None).await?;
        self.open_local(name).await
    }

    async fn open_local(&self, name: &str) -> Option<(tokio::fs::File, ArtifactMeta)> {
        let artifacts = self.inner.artifacts.clone();
        let name = name.to_string();
        tokio::task::spawn_blocking(move || {
            // Opened first, then checked against the record: a rebuild
            // committed in between must not give a body of another length.
            let file = std::fs::File::open(artifacts.path(&name)).ok()?;
            let meta = artifacts.lookup(&name)?;
            (file.metadata().ok()?.len() == meta.size)
                .then(|| (tokio::fs::File::from_std(file), meta))
        })
        .await
        .ok()
        .flatten()
    }

    /// Waits until every job record change made so far is on disk.
    pub async fn flush(&self) {
        self.inner.queue.flush().await
    }

    /// Job counts by state, and the queue depth (for metrics).
    pub fn counts(&self) -> (Vec<(JobState, usize)>, usize) {
        self.inner.queue.counts()
    }
}

/// Reads the operator token at `path`, creating it (0600, staged in `tmp`)
/// the first time. Blocking.
fn operator_token(path: &Path, tmp: &Path) -> std::io::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(token) if !token.trim().is_empty() => return Ok(token.trim().to_string()),
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(err),
        _ => {}
    }
    let token = job::random_hex(24);
    crate::store::durable::write_file(tmp, path, token.as_bytes(), 0o600)?;
    Ok(token)
}

/// Deletes a taken-in source that no job will read.
async fn discard(source: Option<inbox::Source>) {
    if let Some(source) = source {
        let _ = tokio::fs::remove_file(&source.path).await;
    }
}
