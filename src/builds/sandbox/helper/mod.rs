//! The privileged helper: a small process (this same executable, run with
//! `ARG`) that stays root after the server dropped it and runs sandboxed
//! steps, hand-overs and take-backs for the server over a private channel
//! (its stdin; see `wire`). It trusts the server only at start: `Init`
//! fixes the uid pool and work root, and every later request is checked
//! against them (by `sandbox::Executor`). It exits when the channel closes,
//! killing the steps it still runs. `client` is the server's side.

mod client;
pub mod wire;

pub use client::Client;

use crate::builds::sandbox::command::Tools;
use crate::builds::sandbox::error::Error;
use crate::builds::sandbox::exec::Executor;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::ops::Range;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wire::{Channel, Failure, FailureKind, Op, Reply, Request};

/// The hidden first argument that makes the binary the helper:
/// `package-cache __sandbox-helper` (see `main`).
pub const ARG: &str = "__sandbox-helper";

/// How long running requests get to finish once the channel closed (their
/// steps are killed at once; clearing a uid is bounded well below this).
const DRAIN_WAIT: Duration = Duration::from_secs(30);

/// What the helper may do, sent once as the first request (while the
/// server is still root and trusted).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Init {
    /// Build uids (gid = uid) that steps may run as.
    #[serde(with = "wire::range")]
    pub uids: Range<u32>,
    /// Canonical directory below which all paths of requests must lie.
    pub work_root: PathBuf,
    /// The server's uid and gid after dropping root: take-backs give trees to them.
    pub owner: (u32, u32),
    /// Where the sandbox tools are looked for.
    pub tool_dirs: Vec<PathBuf>,
}

/// The helper's whole life, for `main.rs`: serves the channel on stdin until
/// it closes. Exit status 0 after a clean end, 1 otherwise.
pub fn main() -> ExitCode {
    // Dies with the server's thread that started it, even on SIGKILL (and
    // then its steps die with it); if that happened already, stops now.
    if rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .is_err()
        || rustix::process::getppid().is_none_or(|pid| pid.as_raw_nonzero().get() == 1)
    {
        eprintln!("package-cache {ARG}: no server to serve");
        return ExitCode::FAILURE;
    }
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(false)
        .try_init();
    let channel = match std::io::stdin().as_fd().try_clone_to_owned() {
        Ok(fd) => fd,
        Err(err) => {
            eprintln!("package-cache {ARG}: no channel on stdin: {err}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("package-cache {ARG}: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(channel)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "sandbox helper stopped");
            ExitCode::FAILURE
        }
    }
}

/// Serves requests from `channel` (a `SOCK_SEQPACKET` socket) until the
/// other end closes it, then kills running steps and waits (bounded) for
/// their requests to finish. The first request must be `Init`; the sandbox
/// is probed before it is answered, and a failed probe ends the helper.
pub async fn serve(channel: OwnedFd) -> Result<(), Error> {
    // The server's terminal or service manager may signal the whole group:
    // the helper ends with the channel, never before its server.
    for kind in [
        tokio::signal::unix::SignalKind::interrupt(),
        tokio::signal::unix::SignalKind::terminate(),
        tokio::signal::unix::SignalKind::hangup(),
    ] {
        let _ = tokio::signal::unix::signal(kind);
    }
    let channel = Arc::new(Channel::new(channel).map_err(helper_err("channel"))?);
    let mut buf = Vec::new();
    let Some((len, _)) = channel
        .recv(&mut buf)
        .await
        .map_err(helper_err("reading"))?
    else {
        return Ok(());
    };
    let request: Request = serde_json::from_slice(&buf[..len]).map_err(helper_err("init"))?;
    let Op::Init(init) = request.op else {
        let failure = Failure::new(FailureKind::Invalid, "the first request must be init");
        reply(&channel, request.id, Err(failure)).await;
        return Err(Error::Helper("the first request was not init".into()));
    };
    let executor = match initialise(init).await {
        Ok(executor) => Arc::new(executor),
        Err(err) => {
            reply(&channel, request.id, Err(Failure::from(&err))).await;
            return Err(err);
        }
    };
    let withdrawn = match executor.clear_all().await {
        Ok(withdrawn) => withdrawn,
        Err(err) => {
            reply(&channel, request.id, Err(Failure::from(&err))).await;
            return Err(err);
        }
    };
    send(
        &channel,
        Reply {
            id: request.id,
            result: Ok(None),
            withdrawn,
        },
        None,
    )
    .await;

    let stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    let runs: Arc<Mutex<HashMap<u64, CancellationToken>>> = Arc::default();
    let ended = loop {
        let (len, mut fds) = match channel.recv(&mut buf).await {
            Ok(Some(message)) => message,
            Ok(None) => break Ok(()),
            Err(err) => break Err(helper_err("reading")(err)),
        };
        let request: Request = match serde_json::from_slice(&buf[..len]) {
            Ok(request) => request,
            // A server that sends garbage gets no more builds.
            Err(err) => break Err(helper_err("an unreadable request")(err)),
        };
        let id = request.id;
        match request.op {
            Op::Init(_) => {
                let failure = Failure::new(FailureKind::Invalid, "already initialised");
                reply(&channel, id, Err(failure)).await;
            }
            Op::Cancel { run } => {
                if let Some(token) = runs.lock().expect("runs lock").get(&run) {
                    token.cancel();
                }
            }
            Op::Run { uid, step, limits } => {
                let Some(log) = fds.pop() else {
                    let failure =
                        Failure::new(FailureKind::Invalid, "a run needs its log descriptor");
                    reply(&channel, id, Err(failure)).await;
                    continue;
                };
                let cancel = stop.child_token();
                runs.lock().expect("runs lock").insert(id, cancel.clone());
                let (executor, channel, runs) = (
                    Arc::clone(&executor),
                    Arc::clone(&channel),
                    Arc::clone(&runs),
                );
                tracker.spawn(async move {
                    let result = executor.run(uid, &step.into(), &limits, log, &cancel).await;
                    runs.lock().expect("runs lock").remove(&id);
                    reply(
                        &channel,
                        id,
                        result.map(Some).map_err(|err| Failure::from(&err)),
                    )
                    .await;
                });
            }
            Op::HandOver { uid, dirs } => {
                let (executor, channel) = (Arc::clone(&executor), Arc::clone(&channel));
                tracker.spawn(async move {
                    let result = executor.hand_over(uid, &paths(dirs)).await;
                    reply(
                        &channel,
                        id,
                        result.map(|()| None).map_err(|e| Failure::from(&e)),
                    )
                    .await;
                });
            }
            Op::OpenNetwork { uid } => {
                let (executor, channel) = (Arc::clone(&executor), Arc::clone(&channel));
                tracker.spawn(async move {
                    match executor.open_network(uid).await {
                        Ok(listener) => {
                            let reply = Reply {
                                id,
                                result: Ok(None),
                                withdrawn: Vec::new(),
                            };
                            send(&channel, reply, Some(&OwnedFd::from(listener))).await;
                        }
                        Err(err) => reply(&channel, id, Err(Failure::from(&err))).await,
                    }
                });
            }
            Op::CloseNetwork { uid } => {
                let result = executor.close_network(uid);
                reply(
                    &channel,
                    id,
                    result.map(|()| None).map_err(|e| Failure::from(&e)),
                )
                .await;
            }
            Op::TakeBack { uid, dirs } => {
                let (executor, channel) = (Arc::clone(&executor), Arc::clone(&channel));
                tracker.spawn(async move {
                    let result = executor.take_back(uid, &paths(dirs)).await;
                    reply(
                        &channel,
                        id,
                        result.map(|()| None).map_err(|e| Failure::from(&e)),
                    )
                    .await;
                });
            }
        }
    };
    stop.cancel();
    tracker.close();
    if tokio::time::timeout(DRAIN_WAIT, tracker.wait())
        .await
        .is_err()
    {
        tracing::error!("sandbox helper: requests still running at exit");
    }
    ended
}

/// Checks `init` and that isolation works here.
async fn initialise(init: Init) -> Result<Executor, Error> {
    if !rustix::process::geteuid().is_root() {
        return Err(Error::Unavailable(format!(
            "the sandbox helper is not root (uid {})",
            rustix::process::geteuid().as_raw()
        )));
    }
    if init.uids.is_empty() || init.uids.contains(&0) {
        return Err(Error::Invalid(format!("build uids {:?}", init.uids)));
    }
    let canonical = tokio::fs::canonicalize(&init.work_root).await.ok();
    if canonical.as_ref() != Some(&init.work_root) {
        return Err(Error::Invalid(format!(
            "work root {}: not a canonical path",
            init.work_root.display()
        )));
    }
    let dirs = init.tool_dirs.clone();
    let tools = tokio::task::spawn_blocking(move || Tools::find(&dirs))
        .await
        .map_err(|err| Error::Helper(format!("looking for tools: {err}")))?;
    tools.isolated().map_err(Error::Unavailable)?;
    let executor = Executor::start(tools, init.work_root, init.uids, init.owner, true)?;
    executor.probe().await.map_err(Error::Unavailable)?;
    Ok(executor)
}

async fn reply(
    channel: &Channel,
    id: u64,
    result: Result<Option<crate::builds::sandbox::limits::Outcome>, Failure>,
) {
    let reply = Reply {
        id,
        result,
        withdrawn: Vec::new(),
    };
    send(channel, reply, None).await
}

async fn send(channel: &Channel, reply: Reply, fd: Option<&OwnedFd>) {
    if let Err(err) = channel.send(&reply, fd.map(|fd| fd.as_fd())).await {
        // The server went away or cannot read: nothing else to tell it with.
        tracing::warn!(error = %err, "sandbox helper: reply not sent");
    }
}

fn paths(dirs: Vec<wire::WireOs>) -> Vec<PathBuf> {
    dirs.into_iter().map(wire::WireOs::into_path).collect()
}

fn helper_err<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> Error {
    move |err| Error::Helper(format!("{what}: {err}"))
}
