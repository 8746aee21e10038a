//! The workers: each takes a job from the queue and runs its stages —
//! fetching (the source through the proxy, then the build requirements, in
//! the job's network where the proxy is the only address), building (the
//! kind's steps in the sandbox, no network, the job's tree at the sandbox's
//! fixed build path), archiving (a deterministic tgz of the install
//! directory only, committed with its record) — moving the job's state at
//! each, and cleans up after every end. A shutdown leaves the job
//! unfinished in the journal, so it runs again.

use super::artifacts::{ArtifactMeta, Artifacts};
use super::fetch::Fetcher;
use super::job::{now, ErrorClass, Job, JobId, JobState};
use super::kind::{JobDirs, Kind, StepView};
use super::queue::{BuildQueue, Ready};
use super::runtime::Runtime;
use super::sandbox::{Lease, Sandbox};
use super::spec::Source;
use super::step::Step;
use std::collections::HashMap;
use std::fs::{self, Permissions};

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What the workers share.
#[derive(Clone)]
pub struct Context {
    pub queue: BuildQueue,
    pub artifacts: Artifacts,
    pub runtimes: HashMap<String, Runtime>,
    pub sandbox: Option<Sandbox>,
    pub fetcher: Fetcher,
    /// `work/`: one directory per running job.
    pub work: PathBuf,
    /// `logs/`: one log per job.
    pub logs: PathBuf,
    /// Serves the proxy on each job network's listener.
    pub gateway: super::Gateway,
    /// The app's stop token (job networks stop being served with it too).
    pub stop: CancellationToken,
    /// The cache's `tmp/`, where archives are written before their commit.
    pub tmp: PathBuf,
    /// Where built artifacts are published and looked for (`--shared-store`).
    pub shared: Option<super::shared::SharedArtifacts>,
}

impl Context {
    pub fn log_path(&self, id: &JobId) -> PathBuf {
        self.logs.join(format!("{id}.log"))
    }
}

/// A failure: whose fault, and what to tell the client.
type Failure = (ErrorClass, String);

fn client(message: impl Into<String>) -> Failure {
    (ErrorClass::Client, message.into())
}

fn server(message: impl Into<String>) -> Failure {
    (ErrorClass::Server, message.into())
}

/// Starts `n` workers on `tasks`, sharing `ready`, until `stop`.
pub(crate) fn spawn(
    context: &Context,
    ready: Ready,
    n: usize,
    tasks: &TaskTracker,
    stop: CancellationToken,
) {
    let ready = Arc::new(tokio::sync::Mutex::new(ready));
    for _ in 0..n.max(1) {
        let (context, ready, stop) = (context.clone(), ready.clone(), stop.clone());
        tasks.spawn(async move {
            loop {
                let id = tokio::select! {
                    _ = stop.cancelled() => return,
                    id = async { ready.lock().await.recv().await } => match id {
                        Some(id) => id,
                        None => return,
                    },
                };
                run_one(&context, id, &stop).await;
            }
        });
    }
}

async fn run_one(context: &Context, id: JobId, stop: &CancellationToken) {
    let Some(taken) = context.queue.take(&id) else {
        return;
    };
    let job = taken.job;
    let kill = taken.cancel.child_token();
    tracing::info!(job_id = %id, artifact = %job.artifact, "build started");
    let started = std::time::Instant::now();
    let stages = stages(context, &job, &kill);
    tokio::pin!(stages);
    let result = tokio::select! {
        biased;
        _ = stop.cancelled() => None,
        result = &mut stages => Some(result),
    };
    // A failure while stopping may be the stop's doing (the proxy closing
    // under a fetch): not recorded. A finished build is.
    let result = match result {
        Some(Ok(meta)) => Some(Ok(meta)),
        Some(Err(failure)) if !stop.is_cancelled() => Some(Err(failure)),
        _ => None,
    };
    let Some(result) = result else {
        // Left unfinished in the journal: the next start runs it again. The
        // stages get a moment to kill the build and take its tree back, so a
        // server that dropped root can clear it at the next start.
        kill.cancel();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), &mut stages).await;
        tracing::info!(job_id = %id, "build interrupted by shutdown; it runs again at the next start");
        return;
    };
    let log_tail = {
        let path = context.log_path(&id);
        tokio::task::spawn_blocking(move || super::tree::tail(&path))
            .await
            .unwrap_or_default()
    };
    let elapsed_ms = started.elapsed().as_millis() as u64;
    match result {
        Ok(meta) => {
            tracing::info!(job_id = %id, artifact = %meta.name, bytes = meta.size, elapsed_ms, "build complete");
            context.queue.advance(&id, JobState::Complete, |job| {
                job.artifact_sha256 = Some(meta.sha256.clone());
                job.log_tail = log_tail;
            });
        }
        Err(_) if taken.cancel.is_cancelled() => {
            tracing::info!(job_id = %id, elapsed_ms, "build cancelled");
            context.queue.advance(&id, JobState::Cancelled, |job| {
                job.log_tail = log_tail;
            });
        }
        Err((class, message)) => {
            tracing::warn!(job_id = %id, class = ?class, error = %message, elapsed_ms, "build failed");
            context.queue.fail(&id, class, message, log_tail);
        }
    }
    if let Some(source) = &job.source_path {
        let _ = tokio::fs::remove_file(source).await;
    }
}

/// Every stage of one job; the job's directory is removed at the end,
/// whatever happened.
async fn stages(
    context: &Context,
    job: &Job,
    kill: &CancellationToken,
) -> Result<ArtifactMeta, Failure> {
    let kind = Kind::parse(&job.spec.kind)
        .ok_or_else(|| client(format!("unknown type {:?}", job.spec.kind)))?;
    let runtime = context.runtimes.get(&job.spec.runtime).ok_or_else(|| {
        client(format!(
            "runtime {:?} is no longer configured",
            job.spec.runtime
        ))
    })?;
    let sandbox = context
        .sandbox
        .as_ref()
        .ok_or_else(|| server("builds are off on this server"))?;
    let abi = runtime
        .abi()
        .await
        .map_err(|err| server(format!("probing runtime {}: {err}", runtime.name)))?;
    // One tree per attempt: a tree a crash left to a build uid (which a
    // server that dropped root cannot remove) never blocks the re-run.
    let root = context.work.join(format!("{}-{}", job.id, job.attempts));
    let log = context.log_path(&job.id);
    let lease = tokio::select! {
        lease = sandbox.lease() => lease,
        _ = kill.cancelled() => return Err(client("cancelled")),
    };
    let result = build_in(
        context, job, kind, runtime, sandbox, &lease, &root, &log, kill,
    )
    .await;
    // Whatever happened: no process of the build's uid is left, the tree is
    // the server's again, and then it goes.
    let handed = JobDirs::new(&root, "").handed();
    if let Err(err) = sandbox.take_back(&lease, &handed).await {
        tracing::warn!(job_id = %job.id, error = %err, "cannot take the build directory back");
    }
    if let Err(err) = sandbox.close_network(&lease).await {
        tracing::warn!(job_id = %job.id, error = %err, "cannot close the job network");
    }
    drop(lease);
    let doomed = root.clone();
    let _ = tokio::task::spawn_blocking(move || fs::remove_dir_all(doomed)).await;
    let abi = abi.0;
    let (tmp, sha256) = result?;
    context.queue.advance(&job.id, JobState::Archiving, |_| {});
    let measured = tmp.clone();
    let size = tokio::task::spawn_blocking(move || fs::metadata(measured).map(|m| m.len()))
        .await
        .map_err(|err| server(err.to_string()))?
        .map_err(|err| server(format!("the archive: {err}")))?;
    let meta = ArtifactMeta {
        name: job.artifact.clone(),
        sha256,
        size,
        abi,
        source_sha256: job.source_sha256.clone(),
        built: now(),
        job: job.id.to_string(),
    };
    let artifacts = context.artifacts.clone();
    let committed = meta.clone();
    tokio::task::spawn_blocking(move || {
        let result = artifacts.commit(&tmp, &committed);
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    })
    .await
    .map_err(|err| server(format!("committing the artifact: {err}")))?
    .map_err(|err| server(format!("committing the artifact: {err}")))?;
    if let Some(shared) = &context.shared {
        shared.spawn_publish(meta.clone());
    }
    Ok(meta)
}

/// Fetching and building inside the job's directory; returns the archive
/// (in the cache's `tmp/`) and its sha256.
#[allow(clippy::too_many_arguments)]
async fn build_in(
    context: &Context,
    job: &Job,
    kind: Kind,
    runtime: &Runtime,
    sandbox: &Sandbox,
    lease: &Lease,
    root: &Path,
    log: &Path,
    kill: &CancellationToken,
) -> Result<(PathBuf, String), Failure> {
    let layout = root.to_path_buf();
    let log_file = log.to_path_buf();
    tokio::task::spawn_blocking(move || super::tree::job_tree(&layout, &log_file))
        .await
        .map_err(|err| server(err.to_string()))?
        .map_err(|err| server(format!("preparing the build directory: {err}")))?;
    let source_dir = root.join("source");
    let source = match &job.spec.source {
        Source::Remote {
            name,
            version,
            platform,
        } => kind
            .fetch_remote(
                &context.fetcher,
                name,
                version,
                platform.as_deref(),
                &source_dir,
            )
            .await
            .map_err(|err| {
                (
                    class_of(err.is_client()),
                    format!("fetching the source: {err}"),
                )
            })?,
        Source::Local { sha1 } => {
            let from = job
                .source_path
                .clone()
                .ok_or_else(|| server("the local source is missing"))?;
            let (sha1, dir) = (sha1.clone(), source_dir.clone());
            tokio::task::spawn_blocking(move || {
                let name = kind
                    .local_source_name(&sha1, &from)
                    .map_err(|err| (class_of(err.is_client()), err.to_string()))?;
                let to = dir.join(name);
                fs::copy(&from, &to)
                    .and_then(|_| fs::set_permissions(&to, Permissions::from_mode(0o644)))
                    .map_err(|err| {
                        server(format!(
                            "the local source is gone ({err}); hand it in again"
                        ))
                    })?;
                Ok::<_, Failure>(to)
            })
            .await
            .map_err(|err| server(err.to_string()))??
        }
    };
    let source_name = source
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .ok_or_else(|| server("the source has no file name"))?;
    let dirs = JobDirs::new(root, &source_name);
    // The job's network: the proxy, served on a listener inside it, is the
    // only address its steps can reach. Served until this function returns.
    let serving = context.stop.child_token();
    let _served = serving.clone().drop_guard();
    let proxy = match sandbox
        .open_network(lease)
        .await
        .map_err(|err| server(format!("making the job network: {err}")))?
    {
        Some(listener) => {
            let addr = listener
                .local_addr()
                .and_then(|addr| Ok((addr, tokio::net::TcpListener::from_std(listener)?)))
                .map_err(|err| server(format!("the job network's listener: {err}")));
            let (addr, listener) = addr?;
            (context.gateway)(listener, serving.clone());
            addr
        }
        None => context.fetcher.proxy(),
    };
    // What the steps see: isolated, the tree bound at the sandbox's fixed
    // path (the same for every job, so builds record the same paths).
    let view = StepView {
        dirs: JobDirs::new(&sandbox.step_root(root), &source_name),
        proxy,
    };
    let bind = (!sandbox.is_insecure()).then(|| root.to_path_buf());
    let in_job = |mut step: Step| {
        step.job = bind.clone();
        step
    };
    // Before the hand-over: a kind may download into reqs/ itself, as the server.
    let fetch_steps = kind
        .fetch_steps(runtime, &context.fetcher, &dirs, &view)
        .await
        .map_err(|err| {
            (
                class_of(err.is_client()),
                format!("fetching build requirements: {err}"),
            )
        })?;
    let handed = dirs.handed();
    sandbox
        .hand_over(lease, &handed)
        .await
        .map_err(|err| server(format!("handing the build directory over: {err}")))?;
    for step in fetch_steps {
        run(
            sandbox,
            lease,
            &in_job(step),
            log,
            kill,
            "fetching build requirements",
        )
        .await?;
    }
    context.queue.advance(&job.id, JobState::Building, |_| {});
    for step in kind.build_steps(runtime, &view.dirs) {
        run(sandbox, lease, &in_job(step), log, kill, "the build").await?;
    }
    // Taken back first: a server that dropped root cannot read what the
    // build uid made until then.
    sandbox
        .take_back(lease, &handed)
        .await
        .map_err(|err| server(format!("taking the build directory back: {err}")))?;
    let check = dirs.clone();
    tokio::task::spawn_blocking(move || kind.verify_install(&check))
        .await
        .map_err(|err| server(err.to_string()))?
        .map_err(|err| client(format!("the build installed nothing usable: {err}")))?;
    let tmp = context.tmp.join(format!("{}.tgz", job.id));
    let (install, out) = (dirs.install.clone(), tmp.clone());
    let sha256 = tokio::task::spawn_blocking(move || super::archive::write_tgz(&install, &out))
        .await
        .map_err(|err| server(err.to_string()))?
        .map_err(|err| {
            let _ = fs::remove_file(&tmp);
            // What the build left that cannot be archived (a FIFO, a device)
            // is the package's doing; anything else (disk full) is ours.
            if err.kind() == std::io::ErrorKind::InvalidData {
                client(format!("archiving the install directory: {err}"))
            } else {
                server(format!("archiving the install directory: {err}"))
            }
        })?;
    Ok((tmp, sha256))
}

fn class_of(is_client: bool) -> ErrorClass {
    if is_client {
        ErrorClass::Client
    } else {
        ErrorClass::Server
    }
}

async fn run(
    sandbox: &Sandbox,
    lease: &Lease,
    step: &Step,
    log: &Path,
    kill: &CancellationToken,
    what: &str,
) -> Result<(), Failure> {
    let outcome = sandbox
        .run(lease, step, log, kill)
        .await
        .map_err(|err| server(format!("{what}: {err}")))?;
    if outcome.success() {
        return Ok(());
    }
    if kill.is_cancelled() {
        return Err(client("cancelled"));
    }
    if outcome.timed_out {
        return Err(client(format!("{what} took too long and was stopped")));
    }
    Err(client(match (outcome.code, outcome.signal) {
        (Some(code), _) => format!("{what} failed (exit status {code}); see the log"),
        (_, Some(signal)) => format!("{what} was killed by signal {signal}; see the log"),
        _ => format!("{what} failed; see the log"),
    }))
}
