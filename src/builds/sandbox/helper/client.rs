//! The server's side of the helper: starts it, sends requests, pairs replies
//! with their callers. One driver task reads replies; it is owned by the
//! `Client` and aborted with it, which closes the channel so the helper kills
//! what it still runs and exits.

use super::wire::{Channel, Failure, Op, Reply, Request, WireOs};
use super::{Init, ARG};
use crate::builds::sandbox::error::Error;
use crate::builds::sandbox::limits::{Limits, Outcome};
use crate::builds::step::Step;
use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

/// How long the helper may take to start and probe the sandbox.
const INIT_WAIT: Duration = Duration::from_secs(60);

/// How long a cancelled run may take to report (killing and clearing the uid
/// is bounded in the helper by a few seconds).
const CANCEL_WAIT: Duration = Duration::from_secs(30);

/// A reply as its caller gets it: the result, the uids withdrawn (init
/// only) and the descriptors that came with it.
struct Answer {
    result: Result<Option<Outcome>, Failure>,
    withdrawn: Vec<u32>,
    fds: Vec<OwnedFd>,
}

type Pending = Mutex<HashMap<u64, oneshot::Sender<Answer>>>;

struct Shared {
    channel: Channel,
    next_id: AtomicU64,
    /// Callers waiting for a reply; emptied (their senders dropped) when the
    /// helper goes away, which fails them.
    pending: Pending,
    /// Set (under the `pending` lock) once the driver stopped.
    closed: AtomicBool,
}

/// A running privileged helper. Requests may be made concurrently.
pub struct Client {
    shared: Arc<Shared>,
    /// Build uids the helper found it could not clear at start.
    withdrawn: Vec<u32>,
    _driver: AbortOnDropHandle<()>,
}

impl Client {
    /// Starts `exe ARG` with the channel as its stdin and initialises it;
    /// the helper probes the sandbox before it answers. Its refusal comes
    /// back as `Error::Unavailable`.
    pub async fn start(exe: &Path, init: Init) -> Result<Client, Error> {
        let (ours, theirs) =
            super::wire::pair().map_err(|err| Error::Helper(format!("socketpair: {err}")))?;
        let child = tokio::process::Command::new(exe)
            .arg(ARG)
            .env_clear()
            .stdin(Stdio::from(theirs))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            // Away from the terminal's SIGINT: it stops when the channel closes.
            .process_group(0)
            .spawn()
            .map_err(|source| Error::Spawn {
                program: exe.to_path_buf(),
                source,
            })?;
        let channel = Channel::new(ours).map_err(|err| Error::Helper(format!("channel: {err}")))?;
        let shared = Arc::new(Shared {
            channel,
            next_id: AtomicU64::new(1),
            pending: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
        });
        let driver = AbortOnDropHandle::new(tokio::spawn(drive(Arc::clone(&shared), child)));
        let mut client = Client {
            shared,
            withdrawn: Vec::new(),
            _driver: driver,
        };
        match tokio::time::timeout(INIT_WAIT, client.ask(Op::Init(init), None)).await {
            Ok(Ok(answer)) => {
                client.withdrawn = answer.withdrawn;
                Ok(client)
            }
            Ok(Err(err)) => Err(err),
            Err(_) => Err(Error::Helper(format!(
                "no answer to init within {}s",
                INIT_WAIT.as_secs()
            ))),
        }
    }

    /// Build uids whose processes outlived SIGKILL when the helper cleared
    /// the pool at start: they must not be handed out.
    pub fn withdrawn(&self) -> &[u32] {
        &self.withdrawn
    }

    /// Sends one request and waits for its reply.
    pub async fn call(&self, op: Op, fd: Option<&OwnedFd>) -> Result<Option<Outcome>, Error> {
        self.ask(op, fd)
            .await
            .and_then(|answer| flatten(Ok(answer)))
    }

    /// Sends one request and waits for its whole answer; a failed request
    /// is its `Error`.
    async fn ask(&self, op: Op, fd: Option<&OwnedFd>) -> Result<Answer, Error> {
        let (id, reply) = self.register()?;
        let mut guard = Unregister {
            shared: &self.shared,
            id,
            cancel_run: false,
        };
        self.send(id, op, fd).await?;
        let answer = reply
            .await
            .map_err(|_| Error::Helper("the helper exited".into()))?;
        guard.id = 0;
        if let Err(failure) = answer.result {
            return Err(failure.into_error());
        }
        Ok(answer)
    }

    /// Runs a step in the helper; see `Sandbox::run`. Dropping the future
    /// asks the helper to kill the step.
    pub async fn run(
        &self,
        uid: u32,
        step: &Step,
        limits: &Limits,
        log: OwnedFd,
        cancel: &CancellationToken,
    ) -> Result<Outcome, Error> {
        let (id, mut reply) = self.register()?;
        let mut guard = Unregister {
            shared: &self.shared,
            id,
            cancel_run: true,
        };
        let op = Op::Run {
            uid,
            step: step.into(),
            limits: limits.clone(),
        };
        self.send(id, op, Some(&log)).await?;
        drop(log);
        let result = tokio::select! {
            result = &mut reply => result,
            () = cancel.cancelled() => {
                self.send(self.next_id(), Op::Cancel { run: id }, None).await?;
                tokio::time::timeout(CANCEL_WAIT, reply)
                    .await
                    .map_err(|_| Error::Helper("a cancelled step did not end".into()))?
            }
        };
        guard.id = 0;
        flatten(result)?.ok_or_else(|| Error::Helper("a run without an outcome".into()))
    }

    /// Hands trees to `uid`; see `Sandbox::hand_over`.
    pub async fn hand_over(&self, uid: u32, dirs: &[PathBuf]) -> Result<(), Error> {
        let dirs = dirs.iter().map(|dir| WireOs::from(dir.as_path())).collect();
        self.call(Op::HandOver { uid, dirs }, None).await.map(drop)
    }

    /// Makes `uid`'s job network; see `Sandbox::open_network`.
    pub async fn open_network(&self, uid: u32) -> Result<std::net::TcpListener, Error> {
        let mut answer = self.ask(Op::OpenNetwork { uid }, None).await?;
        let fd = answer
            .fds
            .pop()
            .ok_or_else(|| Error::Helper("a job network without its listener".into()))?;
        let listener = std::net::TcpListener::from(fd);
        listener
            .set_nonblocking(true)
            .map_err(|err| Error::Helper(format!("the job network's listener: {err}")))?;
        Ok(listener)
    }

    /// Forgets `uid`'s job network; see `Sandbox::close_network`.
    pub async fn close_network(&self, uid: u32) -> Result<(), Error> {
        self.call(Op::CloseNetwork { uid }, None).await.map(drop)
    }

    /// Takes trees back from `uid`; see `Sandbox::take_back`.
    pub async fn take_back(&self, uid: u32, dirs: &[PathBuf]) -> Result<(), Error> {
        let dirs = dirs.iter().map(|dir| WireOs::from(dir.as_path())).collect();
        self.call(Op::TakeBack { uid, dirs }, None).await.map(drop)
    }

    fn next_id(&self) -> u64 {
        self.shared.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn register(&self) -> Result<(u64, oneshot::Receiver<Answer>), Error> {
        let id = self.next_id();
        let (tx, rx) = oneshot::channel();
        let mut pending = self
            .shared
            .pending
            .lock()
            .expect("the pending lock is never held across a panic");
        if self.shared.closed.load(Ordering::Relaxed) {
            return Err(Error::Helper("the helper exited".into()));
        }
        pending.insert(id, tx);
        Ok((id, rx))
    }

    async fn send(&self, id: u64, op: Op, fd: Option<&OwnedFd>) -> Result<(), Error> {
        self.shared
            .channel
            .send(&Request { id, op }, fd.map(|fd| fd.as_fd()))
            .await
            .map_err(|err| Error::Helper(format!("sending a request: {err}")))
    }
}

fn flatten(answer: Result<Answer, oneshot::error::RecvError>) -> Result<Option<Outcome>, Error> {
    match answer {
        Ok(Answer {
            result: Ok(outcome),
            ..
        }) => Ok(outcome),
        Ok(Answer {
            result: Err(failure),
            ..
        }) => Err(failure.into_error()),
        Err(_) => Err(Error::Helper("the helper exited".into())),
    }
}

/// Forgets a request whose caller went away (id 0: it completed); for a run,
/// also tells the helper to kill it, best effort and without waiting.
struct Unregister<'a> {
    shared: &'a Shared,
    id: u64,
    cancel_run: bool,
}

impl Drop for Unregister<'_> {
    fn drop(&mut self) {
        if self.id == 0 {
            return;
        }
        self.shared
            .pending
            .lock()
            .expect("the pending lock is never held across a panic")
            .remove(&self.id);
        if self.cancel_run {
            let cancel = Request {
                id: self.shared.next_id.fetch_add(1, Ordering::Relaxed),
                op: Op::Cancel { run: self.id },
            };
            let _ = self.shared.channel.send_now(&cancel);
        }
    }
}

/// Delivers replies until the helper closes the channel, then fails the
/// callers still waiting and reaps the helper.
async fn drive(shared: Arc<Shared>, mut child: tokio::process::Child) {
    let mut buf = Vec::new();
    loop {
        match shared.channel.recv(&mut buf).await {
            Ok(Some((len, fds))) => match serde_json::from_slice::<Reply>(&buf[..len]) {
                Ok(reply) => {
                    let waiter = shared
                        .pending
                        .lock()
                        .expect("the pending lock is never held across a panic")
                        .remove(&reply.id);
                    if let Some(waiter) = waiter {
                        let _ = waiter.send(Answer {
                            result: reply.result,
                            withdrawn: reply.withdrawn,
                            fds,
                        });
                    }
                }
                Err(err) => {
                    tracing::error!(error = %err, "sandbox helper: unreadable reply");
                    break;
                }
            },
            Ok(None) => break,
            Err(err) => {
                tracing::error!(error = %err, "sandbox helper: channel failed");
                break;
            }
        }
    }
    {
        let mut pending = shared
            .pending
            .lock()
            .expect("the pending lock is never held across a panic");
        shared.closed.store(true, Ordering::Relaxed);
        pending.clear();
    }
    // The helper kills what it runs and exits once it reads end-of-file.
    shared.channel.shutdown();
    match child.wait().await {
        Ok(status) => tracing::error!(%status, "sandbox helper exited; builds fail from now on"),
        Err(err) => tracing::error!(error = %err, "sandbox helper: waiting for it"),
    }
}
