//! Runs one build step isolated: as an unprivileged uid leased from a pool
//! (gid = uid, no groups, no capabilities, no new privileges), with resource
//! limits, a wall-clock limit, a PID namespace that takes every process of
//! the step down with it, no network unless asked, and private `/tmp`,
//! `/var/tmp`, `/dev/shm`, `/run/lock`. Does not know what a build is (that is `kind`).
//!
//! Three ways to run, chosen once by `Sandbox::start`: in this process (the
//! server stays root), through the privileged helper (`helper`, when the
//! server drops root after start), or insecure (operator's explicit choice
//! when isolation is impossible: the server's own uid, limits and timeout only).

mod command;
mod error;
mod exec;
pub mod helper;
mod lease;
mod limits;
mod owner;
mod procs;
mod spawner;

pub use command::{BUILD_DIR, TOOL_DIRS};
pub use error::Error;
pub use lease::Lease;
pub use limits::{Limits, Outcome};

use command::Tools;
use exec::Executor;
use lease::Pool;
use std::ops::Range;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// One command to run isolated (defined beside the package types, which
/// write them). Its `program` must not live under `/tmp`, `/var/tmp`,
/// `/dev/shm` or `/run/lock` (private tmpfs in the step), and its `cwd` must
/// be the work root or below it, reached without following symlinks.
pub use crate::builds::step::Step;

/// What the sandbox is set up with.
#[derive(Clone, Debug)]
pub struct SandboxConfig {
    /// One uid per concurrent build; gid = uid. Must not hold 0.
    pub uids: Range<u32>,
    /// Limits of every step.
    pub limits: Limits,
    /// Run builds without isolation when it cannot be set up (with a warning).
    pub insecure: bool,
    /// The directory under which steps work and trees change hands; it and
    /// its parents must be searchable by the build uids.
    pub work_root: PathBuf,
}

/// How `Sandbox::start_with` finds its programs; `default()` is what the
/// server uses.
#[derive(Clone, Debug)]
pub struct StartOptions {
    /// The executable to run as the privileged helper with `helper::ARG`;
    /// `None`: this process's own executable.
    pub helper: Option<PathBuf>,
    /// Where `unshare`, `setpriv`, `mount`, `prlimit`, `env` and `sh` are
    /// looked for.
    pub tool_dirs: Vec<PathBuf>,
}

impl Default for StartOptions {
    fn default() -> StartOptions {
        StartOptions {
            helper: None,
            tool_dirs: TOOL_DIRS.iter().map(PathBuf::from).collect(),
        }
    }
}

/// Runs steps isolated. Cheap to clone; all clones share the uid pool and,
/// when there is one, the helper, which exits once the last clone is dropped
/// (killing the steps it still runs).
#[derive(Clone)]
pub struct Sandbox {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Backend,
    pool: Arc<Pool>,
    limits: Limits,
    /// Insecure: steps run as `server_uid`, not as the leased uid.
    insecure: bool,
    server_uid: u32,
}

enum Backend {
    Local(Box<Executor>),
    Helper(helper::Client),
}

impl Sandbox {
    /// Checks that isolation can be set up (runs a probe step inside it) and
    /// returns `Error::Unavailable` with the reason when it cannot and
    /// `insecure` is false. Called while still root, before privileges are
    /// dropped: when the process is root and `drop_to` (the server's future
    /// uid, gid) is given, the privileged helper starts here.
    pub async fn start(
        config: SandboxConfig,
        drop_to: Option<(u32, u32)>,
    ) -> Result<Sandbox, Error> {
        Sandbox::start_with(config, drop_to, StartOptions::default()).await
    }

    /// `start`, with the helper executable and tool directories chosen.
    pub async fn start_with(
        config: SandboxConfig,
        drop_to: Option<(u32, u32)>,
        options: StartOptions,
    ) -> Result<Sandbox, Error> {
        if config.uids.is_empty() || config.uids.contains(&0) {
            return Err(Error::Invalid(format!(
                "build uids {:?}: need a non-empty range without 0",
                config.uids
            )));
        }
        let work_root = tokio::fs::canonicalize(&config.work_root)
            .await
            .map_err(|source| Error::Io {
                op: "resolving",
                path: config.work_root.clone(),
                source,
            })?;
        let dirs = options.tool_dirs.clone();
        let tools = tokio::task::spawn_blocking(move || Tools::find(&dirs))
            .await
            .map_err(|err| Error::Helper(format!("looking for tools: {err}")))?;
        let me = (
            rustix::process::geteuid().as_raw(),
            rustix::process::getegid().as_raw(),
        );
        let server = drop_to.unwrap_or(me);
        let isolated = if me.0 != 0 {
            Err(format!(
                "isolating builds needs the server to start as root (it runs as uid {})",
                me.0
            ))
        } else if let Some(owner) = drop_to {
            let init = helper::Init {
                uids: config.uids.clone(),
                work_root: work_root.clone(),
                owner,
                tool_dirs: options.tool_dirs.clone(),
            };
            let exe = match options.helper.clone() {
                Some(exe) => Ok(exe),
                None => std::env::current_exe()
                    .map_err(|err| format!("finding this executable for the helper: {err}")),
            };
            match exe {
                Ok(exe) => helper::Client::start(&exe, init)
                    .await
                    .map(Backend::Helper)
                    .map_err(|err| match err {
                        Error::Unavailable(reason) => reason,
                        other => other.to_string(),
                    }),
                Err(reason) => Err(reason),
            }
        } else {
            match tools.isolated() {
                Err(missing) => Err(missing),
                Ok(_) => {
                    let executor = Executor::start(
                        tools.clone(),
                        work_root.clone(),
                        config.uids.clone(),
                        me,
                        true,
                    )?;
                    executor
                        .probe()
                        .await
                        .map(|()| Backend::Local(Box::new(executor)))
                }
            }
        };
        let (backend, insecure) = match isolated {
            Ok(backend) => (backend, false),
            Err(reason) if config.insecure => {
                tools.limited().map_err(Error::Unavailable)?;
                let executor =
                    Executor::start(tools, work_root, config.uids.clone(), server, false)?;
                executor.probe().await.map_err(Error::Unavailable)?;
                tracing::warn!(
                    reason = %reason,
                    "builds run WITHOUT isolation, as the server's own user (insecure builds allowed)"
                );
                (Backend::Local(Box::new(executor)), true)
            }
            Err(reason) => return Err(Error::Unavailable(reason)),
        };
        // Processes a server that died left under the build uids go before
        // any uid is handed out; a uid whose processes outlive SIGKILL is not.
        let withdrawn = match &backend {
            Backend::Local(executor) => executor.clear_all().await?,
            Backend::Helper(client) => client.withdrawn().to_vec(),
        };
        if !withdrawn.is_empty() {
            tracing::error!(uids = ?withdrawn, "build uids withdrawn from the pool: their processes outlived SIGKILL");
        }
        let pool = Pool::new(config.uids.clone(), &withdrawn);
        Ok(Sandbox {
            inner: Arc::new(Inner {
                backend,
                pool: Arc::new(pool),
                limits: config.limits,
                insecure,
                server_uid: server.0,
            }),
        })
    }

    /// Whether builds run without isolation (insecure mode).
    pub fn is_insecure(&self) -> bool {
        self.inner.insecure
    }

    /// Waits for a free uid from the pool; the lease returns it on drop.
    /// Uids are handed out in turn, so a uid just returned rests longest.
    pub async fn lease(&self) -> Lease {
        let run_as = self.inner.insecure.then_some(self.inner.server_uid);
        self.inner.pool.take(run_as).await
    }

    /// Where a job whose tree is `job_root` sees it in its steps: at
    /// [`BUILD_DIR`] when steps are isolated (the sandbox binds it there:
    /// set `Step::job`), else where it is.
    pub fn step_root(&self, job_root: &Path) -> PathBuf {
        if self.inner.insecure {
            job_root.to_path_buf()
        } else {
            PathBuf::from(BUILD_DIR)
        }
    }

    /// Makes the lease's job network: a network namespace whose only
    /// reachable address is the returned listener, which the caller serves
    /// (the proxy) for the job's `network` steps; `None` in insecure mode,
    /// where steps use the host's network. Open until `close_network` (or
    /// the next `open_network` for the uid).
    pub async fn open_network(
        &self,
        lease: &Lease,
    ) -> Result<Option<std::net::TcpListener>, Error> {
        let result = match &self.inner.backend {
            Backend::Local(executor) if !executor.is_isolated() => return Ok(None),
            Backend::Local(executor) => executor.open_network(lease.pooled()).await,
            Backend::Helper(client) => client.open_network(lease.pooled()).await,
        };
        lease.checked(result).map(Some)
    }

    /// Forgets the lease's job network.
    pub async fn close_network(&self, lease: &Lease) -> Result<(), Error> {
        match &self.inner.backend {
            Backend::Local(executor) if !executor.is_isolated() => Ok(()),
            Backend::Local(executor) => executor.close_network(lease.pooled()),
            Backend::Helper(client) => client.close_network(lease.pooled()).await,
        }
    }

    /// Hands `dirs` (trees strictly below the work root) to the lease's
    /// uid/gid, following no symlink and leaving hard-linked files alone.
    pub async fn hand_over(&self, lease: &Lease, dirs: &[PathBuf]) -> Result<(), Error> {
        let result = match &self.inner.backend {
            Backend::Local(executor) => executor.hand_over(lease.pooled(), dirs).await,
            Backend::Helper(client) => client.hand_over(lease.pooled(), dirs).await,
        };
        lease.checked(result)
    }

    /// Takes `dirs` back to the server's uid/gid, after making sure no
    /// process of the lease's uid is left (killing any).
    pub async fn take_back(&self, lease: &Lease, dirs: &[PathBuf]) -> Result<(), Error> {
        let result = match &self.inner.backend {
            Backend::Local(executor) => executor.take_back(lease.pooled(), dirs).await,
            Backend::Helper(client) => client.take_back(lease.pooled(), dirs).await,
        };
        lease.checked(result)
    }

    /// Runs `step` as the lease's uid with the configured limits; stdout and
    /// stderr are appended to `log` (created if missing, never through a
    /// symlink). `cancel` kills every process of the step (also ones that
    /// escaped with setsid and a double fork) and gives `Error::Cancelled`;
    /// the wall-clock limit does the same and sets `timed_out`. Returns once
    /// no process of the step is left.
    pub async fn run(
        &self,
        lease: &Lease,
        step: &Step,
        log: &Path,
        cancel: &CancellationToken,
    ) -> Result<Outcome, Error> {
        let out = open_log(log).await?;
        let limits = &self.inner.limits;
        let result = match &self.inner.backend {
            Backend::Local(executor) => {
                executor
                    .run(lease.pooled(), step, limits, out, cancel)
                    .await
            }
            Backend::Helper(client) => client.run(lease.pooled(), step, limits, out, cancel).await,
        };
        lease.checked(result)
    }
}

async fn open_log(path: &Path) -> Result<OwnedFd, Error> {
    let owned = path.to_path_buf();
    let opened = tokio::task::spawn_blocking(move || {
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o640)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&owned)
    })
    .await
    .map_err(|err| Error::Helper(format!("opening the log: {err}")))?;
    opened.map(OwnedFd::from).map_err(|source| Error::Io {
        op: "opening the log",
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn outcomes_read_as_sentences() {
        let ok = Outcome {
            code: Some(0),
            signal: None,
            timed_out: false,
        };
        assert!(ok.success());
        assert_eq!(ok.to_string(), "exited with status 0");
        let late = Outcome {
            code: None,
            signal: Some(9),
            timed_out: true,
        };
        assert!(!late.success());
        assert_eq!(late.to_string(), "timed out and was killed");
        let killed = Outcome {
            code: None,
            signal: Some(11),
            timed_out: false,
        };
        assert_eq!(killed.to_string(), "was killed by signal 11");
    }

    #[tokio::test]
    async fn a_pool_without_uids_or_with_root_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits {
            cpu: Duration::from_secs(1),
            memory: 1 << 30,
            file_size: 1 << 20,
            processes: 8,
            wall: Duration::from_secs(1),
        };
        for uids in [5..5, 0..3] {
            let config = SandboxConfig {
                uids,
                limits: limits.clone(),
                insecure: true,
                work_root: dir.path().to_path_buf(),
            };
            assert!(matches!(
                Sandbox::start(config, None).await,
                Err(Error::Invalid(_))
            ));
        }
    }

    #[tokio::test]
    async fn without_tools_isolation_is_unavailable_and_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let config = SandboxConfig {
            uids: 62100..62101,
            limits: Limits {
                cpu: Duration::from_secs(1),
                memory: 1 << 30,
                file_size: 1 << 20,
                processes: 8,
                wall: Duration::from_secs(1),
            },
            insecure: false,
            work_root: dir.path().to_path_buf(),
        };
        let options = StartOptions {
            helper: None,
            tool_dirs: vec![dir.path().to_path_buf()],
        };
        let err = Sandbox::start_with(config, None, options)
            .await
            .err()
            .expect("no tools");
        let Error::Unavailable(reason) = err else {
            panic!("{err}")
        };
        // As root the tools are missing; otherwise root is.
        assert!(
            reason.contains("missing unshare") || reason.contains("root"),
            "{reason}"
        );
    }
}
