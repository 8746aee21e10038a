//! The one thread that starts every step's first process. Owns no step: it
//! hands each child back and forgets it.
//!
//! A thread of its own because a child's parent-death signal (`setpriv
//! --pdeathsig`, at the head of every step) fires when the *thread* that
//! forked it exits, not the process: steps must be forked by a thread that
//! lives exactly as long as the executor, so that they die with the server
//! (also on SIGKILL) and never earlier; tokio's blocking threads come and go.

use std::io;
use std::sync::mpsc;
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

struct Request {
    command: Box<Command>,
    reply: oneshot::Sender<io::Result<Child>>,
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

    /// Spawns `command`.
    pub(super) async fn spawn(&self, command: Command) -> io::Result<Child> {
        let gone = || io::Error::other("the sandbox's spawning thread stopped");
        let (reply, answer) = oneshot::channel();
        let request = Request {
            command: Box::new(command),
            reply,
        };
        self.requests.send(request).map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

fn serve(requests: mpsc::Receiver<Request>, runtime: tokio::runtime::Handle) {
    let _entered = runtime.enter();
    for Request { mut command, reply } in requests {
        let _ = reply.send(command.spawn());
    }
}
