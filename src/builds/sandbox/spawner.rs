//! The one thread that starts every step's first process and makes every
//! job's network. Owns no step: it hands each child back and forgets it.
//!
//! A thread of its own for two reasons. A child's parent-death signal
//! (`setpriv --pdeathsig`, at the head of every step) fires when the
//! *thread* that forked it exits, not the process: steps must be forked by a
//! thread that lives exactly as long as the executor, so that they die with
//! the server (also on SIGKILL) and never earlier; tokio's blocking threads
//! come and go. And entering a job's network namespace (`setns`) changes the
//! calling thread, which must never be one of the runtime's.

use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

/// A job's network namespace: loopback up, one listening socket (the
/// proxy's, held by the server) and nothing else. The descriptor keeps it
/// alive as long as a step may still join it.
pub(super) type NetNs = Arc<OwnedFd>;

enum Request {
    Spawn {
        command: Box<Command>,
        net: Option<NetNs>,
        reply: oneshot::Sender<io::Result<Child>>,
    },
    Network {
        ip: PathBuf,
        reply: oneshot::Sender<io::Result<(NetNs, TcpListener)>>,
    },
}

/// The spawning thread's handle. Dropping it ends the thread, and with it
/// (their parent-death signal) every step still running.
#[derive(Debug)]
pub(super) struct Spawner {
    requests: mpsc::Sender<Request>,
}

impl Spawner {
    /// Starts the thread; children it spawns are tokio children of the
    /// runtime that is current here.
    pub(super) fn start() -> io::Result<Spawner> {
        let runtime = tokio::runtime::Handle::current();
        let (requests, incoming) = mpsc::channel();
        std::thread::Builder::new()
            .name("builds-spawner".into())
            .spawn(move || serve(incoming, runtime))?;
        Ok(Spawner { requests })
    }

    /// Spawns `command` (in `net` when given, else in this process's own
    /// network namespace).
    pub(super) async fn spawn(&self, command: Command, net: Option<NetNs>) -> io::Result<Child> {
        let (reply, answer) = oneshot::channel();
        let request = Request::Spawn {
            command: Box::new(command),
            net,
            reply,
        };
        self.ask(request, answer).await
    }

    /// A new network namespace with loopback up (brought up with `ip`) and a
    /// listening socket on 127.0.0.1 inside it, on a port of the kernel's choice.
    pub(super) async fn network(&self, ip: &Path) -> io::Result<(NetNs, TcpListener)> {
        let (reply, answer) = oneshot::channel();
        let request = Request::Network {
            ip: ip.to_path_buf(),
            reply,
        };
        self.ask(request, answer).await
    }

    async fn ask<T>(
        &self,
        request: Request,
        answer: oneshot::Receiver<io::Result<T>>,
    ) -> io::Result<T> {
        let gone = || io::Error::other("the sandbox's spawning thread stopped");
        self.requests.send(request).map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

fn serve(requests: mpsc::Receiver<Request>, runtime: tokio::runtime::Handle) {
    let _entered = runtime.enter();
    // Where this thread goes back to after each visit to a job's namespace.
    let home = own_namespace();
    let no_home = |err: &io::Error| {
        io::Error::new(
            err.kind(),
            format!("this thread's network namespace: {err}"),
        )
    };
    for request in requests {
        let back = match (request, &home) {
            (
                Request::Spawn {
                    mut command,
                    net: None,
                    reply,
                },
                _,
            ) => {
                let _ = reply.send(command.spawn());
                Ok(())
            }
            (
                Request::Spawn {
                    mut command,
                    net: Some(net),
                    reply,
                },
                Ok(home),
            ) => {
                let result = enter(&net).and_then(|()| command.spawn());
                let back = enter(home);
                let _ = reply.send(result);
                back
            }
            (Request::Network { ip, reply }, Ok(home)) => {
                let (result, back) = match unshare_network() {
                    Ok(()) => (set_up_network(&ip), enter(home)),
                    Err(err) => (Err(err), Ok(())),
                };
                let _ = reply.send(result);
                back
            }
            (Request::Spawn { reply, .. }, Err(err)) => {
                let _ = reply.send(Err(no_home(err)));
                Ok(())
            }
            (Request::Network { reply, .. }, Err(err)) => {
                let _ = reply.send(Err(no_home(err)));
                Ok(())
            }
        };
        if let Err(err) = back {
            // Stuck in a job's namespace: spawning anything more here would
            // give it that network. Ending the thread ends its steps too.
            tracing::error!(error = %err, "sandbox: cannot return to the server's network namespace; builds stop");
            return;
        }
    }
}

fn own_namespace() -> io::Result<OwnedFd> {
    Ok(std::fs::File::open("/proc/thread-self/ns/net")?.into())
}

fn enter(ns: &OwnedFd) -> io::Result<()> {
    nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(io::Error::from)
}

fn unshare_network() -> io::Result<()> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).map_err(io::Error::from)
}

/// In the fresh namespace this thread is in: loopback up, the listener.
fn set_up_network(ip: &Path) -> io::Result<(NetNs, TcpListener)> {
    let ns = own_namespace()?;
    let out = std::process::Command::new(ip)
        .args(["link", "set", "lo", "up"])
        .env_clear()
        .stdin(std::process::Stdio::null())
        .output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{} link set lo up: {}: {}",
            ip.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    listener.set_nonblocking(true)?;
    Ok((Arc::new(ns), listener))
}
