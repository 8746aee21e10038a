//! The helper's channel: a `SOCK_SEQPACKET` socket pair carrying one JSON
//! request or reply per message (so a message is never split or merged) and,
//! with a `run` request, the log file's descriptor (`SCM_RIGHTS`), so the
//! root helper never opens a file by a path the server chose; with the
//! answer to `open_network`, the job network's listening socket.

use crate::builds::sandbox::error::Error;
use crate::builds::sandbox::limits::{Limits, Outcome};
use crate::builds::step::Step;
use rustix::net::{
    recvmsg, sendmsg, socketpair, AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage,
    RecvFlags, ReturnFlags, SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketFlags,
    SocketType,
};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::ffi::OsString;
use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::ops::Range;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;
use tokio::io::Interest;
use tokio::net::UnixDatagram;

/// The largest message either side sends or accepts.
pub const MAX_MESSAGE: usize = 128 * 1024;

/// A request to the helper; `id` pairs it with its reply.
#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    /// Chosen by the server, unique among its requests in flight.
    pub id: u64,
    /// What to do.
    pub op: Op,
}

/// The helper's operations.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// The first message and only then: what the helper may do from now on.
    Init(super::Init),
    /// Run a step as `uid`; the message carries the log descriptor.
    Run {
        /// A uid of the pool.
        uid: u32,
        /// The step.
        step: WireStep,
        /// Its limits.
        limits: Limits,
    },
    /// Kill the run request `run` (no reply of its own; the run replies `Cancelled`).
    Cancel {
        /// The id of the run request.
        run: u64,
    },
    /// Give trees below the work root to `uid`.
    HandOver {
        /// A uid of the pool.
        uid: u32,
        /// The trees.
        dirs: Vec<WireOs>,
    },
    /// Take trees back from `uid` to the server.
    TakeBack {
        /// A uid of the pool.
        uid: u32,
        /// The trees.
        dirs: Vec<WireOs>,
    },
    /// Make `uid`'s job network; the reply carries its listening socket.
    OpenNetwork {
        /// A uid of the pool.
        uid: u32,
    },
    /// Forget `uid`'s job network.
    CloseNetwork {
        /// A uid of the pool.
        uid: u32,
    },
}

/// The helper's answer to the request with the same id.
#[derive(Debug, Serialize, Deserialize)]
pub struct Reply {
    /// The request's id.
    pub id: u64,
    /// `Ok(Some(outcome))` for a run, `Ok(None)` for the others.
    pub result: Result<Option<Outcome>, Failure>,
    /// For `init`: build uids whose processes outlived SIGKILL when the
    /// helper cleared them at start; they must not be used.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub withdrawn: Vec<u32>,
}

/// A failed request, as `sandbox::Error` minus the unserialisable parts.
#[derive(Debug, Serialize, Deserialize)]
pub struct Failure {
    /// The error's class.
    pub kind: FailureKind,
    /// Its message.
    pub message: String,
    /// For `Leftover`: the uid and the surviving pids.
    #[serde(default)]
    pub leftover: Option<(u32, Vec<i32>)>,
}

/// Classes of `Failure`, mapped back to `sandbox::Error` variants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// `Error::Unavailable`.
    Unavailable,
    /// `Error::Invalid`.
    Invalid,
    /// `Error::Leftover`.
    Leftover,
    /// `Error::Cancelled`.
    Cancelled,
    /// Anything else (reported as `Error::Helper`).
    Other,
}

impl From<&Error> for Failure {
    fn from(err: &Error) -> Failure {
        let (kind, message, leftover) = match err {
            Error::Unavailable(reason) => (FailureKind::Unavailable, reason.clone(), None),
            Error::Invalid(reason) => (FailureKind::Invalid, reason.clone(), None),
            Error::Leftover { uid, pids } => (
                FailureKind::Leftover,
                err.to_string(),
                Some((*uid, pids.clone())),
            ),
            Error::Cancelled => (FailureKind::Cancelled, err.to_string(), None),
            other => (FailureKind::Other, other.to_string(), None),
        };
        Failure {
            kind,
            message,
            leftover,
        }
    }
}

impl Failure {
    /// A failure of class `kind`.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            message: message.into(),
            leftover: None,
        }
    }

    /// The `sandbox::Error` this stands for.
    pub fn into_error(self) -> Error {
        match (self.kind, self.leftover) {
            (FailureKind::Unavailable, _) => Error::Unavailable(self.message),
            (FailureKind::Invalid, _) => Error::Invalid(self.message),
            (FailureKind::Leftover, Some((uid, pids))) => Error::Leftover { uid, pids },
            (FailureKind::Cancelled, _) => Error::Cancelled,
            _ => Error::Helper(self.message),
        }
    }
}

/// An `OsString` on the wire: a JSON string when it is UTF-8, else an array
/// of bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WireOs(pub OsString);

impl Serialize for WireOs {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0.to_str() {
            Some(text) => serializer.serialize_str(text),
            None => self.0.as_bytes().serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for WireOs {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<WireOs, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Text(String),
            Bytes(Vec<u8>),
        }
        Ok(WireOs(match Repr::deserialize(deserializer)? {
            Repr::Text(text) => text.into(),
            Repr::Bytes(bytes) => OsString::from_vec(bytes),
        }))
    }
}

impl From<&std::path::Path> for WireOs {
    fn from(path: &std::path::Path) -> WireOs {
        WireOs(path.as_os_str().to_owned())
    }
}

impl WireOs {
    /// As a path.
    pub fn into_path(self) -> PathBuf {
        PathBuf::from(self.0)
    }
}

/// `Step` on the wire (fields as in `Step`).
#[derive(Debug, Serialize, Deserialize)]
pub struct WireStep {
    /// `Step::program`.
    pub program: WireOs,
    /// `Step::args`.
    pub args: Vec<WireOs>,
    /// `Step::env`.
    pub env: Vec<(WireOs, WireOs)>,
    /// `Step::cwd`.
    pub cwd: WireOs,
    /// `Step::network`.
    pub network: bool,
    /// `Step::job`.
    #[serde(default)]
    pub job: Option<WireOs>,
}

impl From<&Step> for WireStep {
    fn from(step: &Step) -> WireStep {
        let os = |s: &OsString| WireOs(s.clone());
        WireStep {
            program: step.program.as_path().into(),
            args: step.args.iter().map(os).collect(),
            env: step.env.iter().map(|(k, v)| (os(k), os(v))).collect(),
            cwd: step.cwd.as_path().into(),
            network: step.network,
            job: step.job.as_deref().map(WireOs::from),
        }
    }
}

impl From<WireStep> for Step {
    fn from(step: WireStep) -> Step {
        Step {
            program: step.program.into_path(),
            args: step.args.into_iter().map(|a| a.0).collect(),
            env: step.env.into_iter().map(|(k, v)| (k.0, v.0)).collect(),
            cwd: step.cwd.into_path(),
            network: step.network,
            job: step.job.map(WireOs::into_path),
        }
    }
}

/// `Range<u32>` as `[start, end]`.
pub mod range {
    use super::*;

    /// Serialises `start..end` as `[start, end]`.
    pub fn serialize<S: Serializer>(range: &Range<u32>, s: S) -> Result<S::Ok, S::Error> {
        (range.start, range.end).serialize(s)
    }

    /// Reads `[start, end]`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Range<u32>, D::Error> {
        let (start, end) = <(u32, u32)>::deserialize(d)?;
        Ok(start..end)
    }
}

/// One end of the channel, registered with the runtime. (Tokio has no
/// seqpacket type; its datagram socket registers the descriptor, and every
/// call goes through `sendmsg`/`recvmsg` here.)
pub struct Channel {
    socket: UnixDatagram,
}

/// A connected pair of close-on-exec `SOCK_SEQPACKET` sockets.
pub fn pair() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?)
}

impl Channel {
    /// Takes over `fd` (made non-blocking). Needs a runtime.
    pub fn new(fd: OwnedFd) -> io::Result<Channel> {
        rustix::io::ioctl_fionbio(&fd, true)?;
        let socket = std::os::unix::net::UnixDatagram::from(fd);
        Ok(Channel {
            socket: UnixDatagram::from_std(socket)?,
        })
    }

    /// Sends `message` as JSON, with `fd` attached when given.
    pub async fn send<T: Serialize>(
        &self,
        message: &T,
        fd: Option<BorrowedFd<'_>>,
    ) -> io::Result<()> {
        let bytes = serde_json::to_vec(message)?;
        if bytes.len() > MAX_MESSAGE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a message of {} bytes is over {MAX_MESSAGE}", bytes.len()),
            ));
        }
        loop {
            self.socket.writable().await?;
            match self.socket.try_io(Interest::WRITABLE, || {
                send_now(self.socket.as_fd(), &bytes, fd)
            }) {
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
                sent => return sent,
            }
        }
    }

    /// Ends both directions: the other side reads end-of-file.
    pub fn shutdown(&self) {
        let _ = rustix::net::shutdown(&self.socket, rustix::net::Shutdown::Both);
    }

    /// Sends `message` now or never (for `Drop`): fails rather than wait.
    pub fn send_now<T: Serialize>(&self, message: &T) -> io::Result<()> {
        send_now(self.socket.as_fd(), &serde_json::to_vec(message)?, None)
    }

    /// The next message and the descriptors it carried; `None` once the
    /// other end is closed.
    pub async fn recv(&self, buf: &mut Vec<u8>) -> io::Result<Option<(usize, Vec<OwnedFd>)>> {
        buf.resize(MAX_MESSAGE, 0);
        loop {
            self.socket.readable().await?;
            let received = self.socket.try_io(Interest::READABLE, || {
                let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
                let mut control = RecvAncillaryBuffer::new(&mut space);
                let msg = recvmsg(
                    &self.socket,
                    &mut [IoSliceMut::new(buf)],
                    &mut control,
                    RecvFlags::CMSG_CLOEXEC,
                )?;
                let fds: Vec<OwnedFd> = control
                    .drain()
                    .filter_map(|message| match message {
                        RecvAncillaryMessage::ScmRights(fds) => Some(fds),
                        _ => None,
                    })
                    .flatten()
                    .collect();
                if msg
                    .flags
                    .intersects(ReturnFlags::TRUNC | ReturnFlags::CTRUNC)
                {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "a message or its descriptors were cut short",
                    ));
                }
                Ok((msg.bytes, fds))
            });
            match received {
                Ok((0, _)) => return Ok(None),
                Ok(message) => return Ok(Some(message)),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
                Err(err) => return Err(err),
            }
        }
    }
}

fn send_now(socket: BorrowedFd<'_>, bytes: &[u8], fd: Option<BorrowedFd<'_>>) -> io::Result<()> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let fds: Vec<BorrowedFd<'_>> = fd.into_iter().collect();
    if !fds.is_empty() {
        control.push(SendAncillaryMessage::ScmRights(&fds));
    }
    sendmsg(
        socket,
        &[IoSlice::new(bytes)],
        &mut control,
        SendFlags::NOSIGNAL,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_strings_survive_the_wire_also_when_not_utf8() {
        for value in [
            OsString::from("plain"),
            OsString::from_vec(vec![b'a', 0xff, b'b']),
        ] {
            let json = serde_json::to_string(&WireOs(value.clone())).unwrap();
            let back: WireOs = serde_json::from_str(&json).unwrap();
            assert_eq!(back.0, value, "{json}");
        }
    }
}
