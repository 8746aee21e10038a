//! `Executor`: runs steps, makes jobs' networks and moves directory
//! ownership for a uid pool from this process. Used in-process when the
//! server stays root, and by the privileged helper after the server dropped
//! root; the lease pool and the choice between the two live in `Sandbox`,
//! not here.
//!
//! Every request is checked here: uids from the pool only, working
//! directories, job trees and handed-over trees below the work root only.

use super::command::{self, Place, Tools, BUILD_DIR};
use super::error::Error;
use super::limits::{Limits, Outcome};
use super::owner::{self, Direction};
use super::procs;
use super::spawner::{NetNs, Spawner};
use crate::builds::step::Step;
use rustix::process::{kill_process_group, Pid, Signal};
use std::collections::HashMap;
use std::ops::Range;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::Duration;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

/// How long `unshare` may take to die after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// How long processes of a build uid may take to vanish once killed.
const CLEAR_WAIT: Duration = Duration::from_secs(10);

/// The environment of the root-run tools of the chain (the step's own
/// environment is set by `env -i` at its end).
const TOOL_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

/// Runs steps for one pool of uids below one work root.
#[derive(Debug)]
pub struct Executor {
    tools: Tools,
    work_root: PathBuf,
    uids: Range<u32>,
    /// The server's uid and gid: what `take_back` gives the trees to.
    owner: (u32, u32),
    /// False: insecure mode (the server's own uid, limits and a timeout only).
    isolated: bool,
    /// Starts every step; steps die when it (and so the executor) goes.
    spawner: Spawner,
    /// The open job network of each uid (one job per uid at a time).
    networks: Mutex<HashMap<u32, NetNs>>,
}

impl Executor {
    /// An executor, with its spawning thread; `work_root` must be canonical.
    /// Needs a runtime.
    pub fn start(
        tools: Tools,
        work_root: PathBuf,
        uids: Range<u32>,
        owner: (u32, u32),
        isolated: bool,
    ) -> Result<Executor, Error> {
        let spawner = Spawner::start()
            .map_err(|err| Error::Helper(format!("starting the spawning thread: {err}")))?;
        Ok(Executor {
            tools,
            work_root,
            uids,
            owner,
            isolated,
            spawner,
            networks: Mutex::new(HashMap::new()),
        })
    }

    /// Whether steps are isolated (else: insecure mode).
    pub fn is_isolated(&self) -> bool {
        self.isolated
    }

    fn check_uid(&self, uid: u32) -> Result<(), Error> {
        if self.isolated && !self.uids.contains(&uid) {
            return Err(Error::Invalid(format!(
                "uid {uid} is not in the build uid pool {:?}",
                self.uids
            )));
        }
        Ok(())
    }

    /// Runs a shell that changes into the work root by its absolute path, as
    /// the first uid of the pool: proves the whole chain works (namespaces,
    /// mounts, setpriv, prlimit) and that builds can reach the work root.
    /// Err holds a readable reason with what the chain printed.
    pub async fn probe(&self) -> Result<(), String> {
        let sh = self.tools.sh.clone().ok_or("missing sh")?;
        let step = Step {
            program: sh,
            args: vec![
                "-c".into(),
                "cd -- \"$1\"".into(),
                "sh".into(),
                self.work_root.clone().into(),
            ],
            env: vec![("PATH".into(), TOOL_PATH.into())],
            cwd: self.work_root.clone(),
            network: false,
            job: None,
        };
        let limits = Limits {
            cpu: Duration::from_secs(10),
            memory: 1 << 30,
            file_size: 1 << 20,
            processes: 64,
            wall: Duration::from_secs(30),
        };
        let (mut reader, writer) = std::io::pipe().map_err(|err| format!("pipe: {err}"))?;
        let outcome = self
            .run(
                self.uids.start,
                &step,
                &limits,
                writer.into(),
                &CancellationToken::new(),
            )
            .await;
        // The writer is closed once the step ended: this read ends.
        let printed = tokio::task::spawn_blocking(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut reader, &mut text);
            text
        })
        .await
        .unwrap_or_default();
        match outcome {
            Ok(outcome) if outcome.success() => Ok(()),
            Ok(outcome) => Err(format!(
                "the probe step (cd into {} as uid {}) {outcome}: {}",
                self.work_root.display(),
                self.uids.start,
                printed.trim()
            )),
            Err(err) => Err(format!("the probe step failed: {err}")),
        }
    }

    /// Runs `step` as `uid` (isolated) or as ourselves (insecure), output to
    /// `out`. Isolated, a step with `job` sees that tree at `BUILD_DIR`, and
    /// a `network` step runs in `uid`'s job network (see `open_network`),
    /// any other in a new empty one. Kills everything on the wall-clock
    /// limit (`timed_out`) or on `cancel` (`Error::Cancelled`); when
    /// isolated, returns only once no process of `uid` is left (else
    /// `Error::Leftover`).
    pub async fn run(
        &self,
        uid: u32,
        step: &Step,
        limits: &Limits,
        out: OwnedFd,
        cancel: &CancellationToken,
    ) -> Result<Outcome, Error> {
        self.check_uid(uid)?;
        command::validate(step).map_err(Error::Invalid)?;
        let cwd_path = self.host_cwd(step)?;
        let root = self.work_root.clone();
        let cwd = tokio::task::spawn_blocking(move || owner::open_dir(&root, &cwd_path))
            .await
            .map_err(|err| Error::Helper(format!("opening the working directory: {err}")))??;
        let network = match (self.isolated, step.network) {
            (true, true) => Some(self.network_of(uid)?),
            _ => None,
        };
        let argv = if self.isolated {
            let tools = self.tools.isolated().map_err(Error::Unavailable)?;
            let place = Place {
                work_root: &self.work_root,
                job: step.job.as_deref(),
                job_network: network.is_some(),
            };
            tools.argv(uid, step, limits, place)
        } else {
            let tools = self.tools.limited().map_err(Error::Unavailable)?;
            tools.argv(step, limits)
        };
        let spawn_err = |source| Error::Spawn {
            program: PathBuf::from(&argv[0]),
            source,
        };
        let stderr = out.try_clone().map_err(spawn_err)?;
        let mut command = Command::new(&argv[0]);
        command
            .args(&argv[1..])
            .env_clear()
            .env("PATH", TOOL_PATH)
            // The directory opened without following symlinks, not the path:
            // the child changes into it before exec (it inherits the fd).
            .current_dir(format!("/proc/self/fd/{}", cwd.as_raw_fd()))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(stderr)
            // Away from the server's terminal signals; cancellation kills it.
            .process_group(0)
            .kill_on_drop(true);
        let mut child = self
            .spawner
            .spawn(command, network)
            .await
            .map_err(spawn_err)?;
        drop(cwd);
        let pid = child.id().and_then(|pid| Pid::from_raw(pid as i32));
        let ended = tokio::select! {
            status = child.wait() => Ended::Exited(status.map_err(|source| Error::Io {
                op: "waiting for",
                path: PathBuf::from(&argv[0]),
                source,
            })?),
            () = tokio::time::sleep(limits.wall) => Ended::TimedOut,
            () = cancel.cancelled() => Ended::Cancelled,
        };
        let status = match ended {
            Ended::Exited(status) => Some(status),
            Ended::TimedOut | Ended::Cancelled => self.kill(&mut child, pid).await,
        };
        if self.isolated {
            self.clear(uid).await?;
        } else if let Some(pid) = pid {
            // Members of the step's process group that outlived it (the group
            // id stays reserved while any member lives).
            let _ = kill_process_group(pid, Signal::KILL);
        }
        match ended {
            Ended::Cancelled => Err(Error::Cancelled),
            Ended::TimedOut => Ok(outcome(status, true)),
            Ended::Exited(_) => Ok(outcome(status, false)),
        }
    }

    /// Where `step` starts on the host: its `cwd`, or with a job tree (only
    /// isolated), the same place below the tree as `cwd` is below `BUILD_DIR`.
    fn host_cwd(&self, step: &Step) -> Result<PathBuf, Error> {
        let Some(job) = &step.job else {
            return Ok(step.cwd.clone());
        };
        if !self.isolated {
            return Err(Error::Invalid(
                "a job tree is bound only for isolated steps".into(),
            ));
        }
        if owner::below(&self.work_root, job)?.is_empty() {
            return Err(Error::Invalid(format!(
                "{}: the job tree must be below the work root",
                job.display()
            )));
        }
        let inside = step.cwd.strip_prefix(BUILD_DIR).map_err(|_| {
            Error::Invalid(format!(
                "{}: with a job tree, the working directory is inside {BUILD_DIR}",
                step.cwd.display()
            ))
        })?;
        Ok(job.join(inside))
    }

    fn network_of(&self, uid: u32) -> Result<NetNs, Error> {
        self.networks
            .lock()
            .expect("the networks lock is never held across a panic")
            .get(&uid)
            .cloned()
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "uid {uid} has no job network open for a step that needs one"
                ))
            })
    }

    /// Makes `uid`'s job network (replacing one still open): a network
    /// namespace with loopback up and nothing else, where the returned
    /// listener (127.0.0.1, a port of the kernel's choice) is the only
    /// address that answers. Whoever holds the listener serves it; the
    /// namespace lives until `close_network` and the listener are gone.
    pub async fn open_network(&self, uid: u32) -> Result<std::net::TcpListener, Error> {
        self.check_uid(uid)?;
        if !self.isolated {
            return Err(Error::Invalid("job networks need isolated builds".into()));
        }
        let tools = self.tools.isolated().map_err(Error::Unavailable)?;
        let (ns, listener) = self
            .spawner
            .network(tools.ip())
            .await
            .map_err(|err| Error::Helper(format!("making the job network: {err}")))?;
        self.networks
            .lock()
            .expect("the networks lock is never held across a panic")
            .insert(uid, ns);
        Ok(listener)
    }

    /// Forgets `uid`'s job network (steps already in it keep it).
    pub fn close_network(&self, uid: u32) -> Result<(), Error> {
        self.check_uid(uid)?;
        self.networks
            .lock()
            .expect("the networks lock is never held across a panic")
            .remove(&uid);
        Ok(())
    }

    /// At start-up, before any uid is handed out: kills every process of the
    /// pool's uids (a server that died with builds running leaves them) and
    /// returns the uids whose processes outlived SIGKILL.
    pub async fn clear_all(&self) -> Result<Vec<u32>, Error> {
        if !self.isolated {
            return Ok(Vec::new());
        }
        let uids = self.uids.clone();
        tokio::task::spawn_blocking(move || procs::kill_range(uids, CLEAR_WAIT))
            .await
            .map_err(|err| Error::Helper(format!("scanning /proc: {err}")))
    }

    /// SIGKILL to the chain's first process: with `--kill-child` the
    /// namespace's init dies, and with it every process in the namespace
    /// (also ones that left the session or process group). Insecure mode can
    /// only kill the process group.
    async fn kill(&self, child: &mut Child, pid: Option<Pid>) -> Option<ExitStatus> {
        if let (false, Some(pid)) = (self.isolated, pid) {
            let _ = kill_process_group(pid, Signal::KILL);
        }
        let _ = child.start_kill();
        tokio::time::timeout(KILL_WAIT, child.wait())
            .await
            .ok()
            .and_then(Result::ok)
    }

    /// Kills every process of `uid` and waits (bounded) until none is left.
    pub async fn clear(&self, uid: u32) -> Result<(), Error> {
        self.check_uid(uid)?;
        if !self.isolated {
            return Ok(());
        }
        let pids = tokio::task::spawn_blocking(move || procs::kill_all(uid, CLEAR_WAIT))
            .await
            .map_err(|err| Error::Helper(format!("scanning /proc: {err}")))?;
        if pids.is_empty() {
            Ok(())
        } else {
            Err(Error::Leftover { uid, pids })
        }
    }

    /// Gives `dirs` (trees strictly below the work root) to `uid`.
    pub async fn hand_over(&self, uid: u32, dirs: &[PathBuf]) -> Result<(), Error> {
        self.clear(uid).await?;
        self.transfer(Direction::HandOver, self.owner.0, (uid, uid), dirs)
            .await
    }

    /// Takes `dirs` back from `uid` once no process of it is left.
    pub async fn take_back(&self, uid: u32, dirs: &[PathBuf]) -> Result<(), Error> {
        self.clear(uid).await?;
        self.transfer(Direction::TakeBack, uid, self.owner, dirs)
            .await
    }

    async fn transfer(
        &self,
        direction: Direction,
        from: u32,
        to: (u32, u32),
        dirs: &[PathBuf],
    ) -> Result<(), Error> {
        if !self.isolated {
            return Ok(());
        }
        let root = self.work_root.clone();
        let dirs = dirs.to_vec();
        tokio::task::spawn_blocking(move || {
            dirs.iter()
                .try_for_each(|dir| owner::transfer(&root, dir, direction, from, to))
        })
        .await
        .map_err(|err| Error::Helper(format!("changing owners: {err}")))?
    }
}

/// Why a step's wait ended.
enum Ended {
    Exited(ExitStatus),
    TimedOut,
    Cancelled,
}

fn outcome(status: Option<ExitStatus>, timed_out: bool) -> Outcome {
    Outcome {
        code: status.and_then(|s| s.code()),
        signal: status.and_then(|s| s.signal()),
        timed_out,
    }
}
