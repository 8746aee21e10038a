//! The inbox: local sources handed in by untrusted clients on the same machine.
//!
//! A client copies its file into `public/` (01733: anyone creates, nobody but
//! the server lists, sticky) under a random name, then names that entry and the
//! file's SHA1 in its build request; or it uploads the bytes over HTTP. The
//! inbox takes the bytes out of the clients' reach into `private/` (0700),
//! hashing the private copy, and removes stale leftovers. It owns nothing else:
//! it does not know jobs, artifacts or who sent a request.
//!
//! # Threat model
//!
//! Clients are other local users. They may place symlinks, hard links, FIFOs,
//! devices or directories in `public/`, keep a writable descriptor on their file
//! and rewrite or grow it while the server reads it, or replace the entry
//! between two system calls. So [`Inbox::take`] opens the entry once
//! (`O_NOFOLLOW | O_NONBLOCK`, relative to a descriptor of `public/`), checks
//! the *open* file, and hashes the bytes of its own private copy, which no
//! client can write: what is verified is what is built.
//!
//! # Entry names are random, never the SHA1
//!
//! VCAP named entries `<sha1>.gem`, so anyone could create that name first and
//! block another user's package (its TODO's name-squatting bug). Here the entry
//! name is chosen at random by the client ([`random_entry_name`], [`hand_in`])
//! and is unrelated to the content; the SHA1 travels in the request. Nobody can
//! list `public/`, so nobody can learn or pre-empt another client's name.

mod name;
mod private;
mod sweep;
mod take;
mod upload;

use bytes::Bytes;
use futures_util::Stream;
use rustix::fd::OwnedFd;
use rustix::fs::{Mode, OFlags};
use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use name::{hand_in, random_entry_name, HandedIn, MAX_ENTRY_LEN};

/// Mode of the inbox directory itself: others may traverse it, not list it.
pub const INBOX_MODE: u32 = 0o711;
/// Mode of `public/`: sticky, anyone may create entries, only the owner lists.
pub const PUBLIC_MODE: u32 = 0o1733;
/// Mode of `private/`: the server's alone.
pub const PRIVATE_MODE: u32 = 0o700;
/// Mode of every private copy.
pub const SOURCE_MODE: u32 = 0o600;

/// Limits of the inbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboxConfig {
    /// Largest source accepted, in bytes (taken or uploaded).
    pub max_size: u64,
    /// Most bytes one uid may hold in `public/` at the moment of a take,
    /// counting the entry being taken (top-level entries only).
    pub per_user_bytes: u64,
    /// Entries of `public/` whose ctime is older than this, and files of
    /// `private/` not kept, are removed by [`Inbox::sweep`].
    pub stale_after: Duration,
}

/// A source taken in: a private copy whose bytes were hashed as they were
/// written. Nobody but the server can open or change it. The inbox forgets it
/// once returned: the caller moves or removes `path`, and lists it in
/// [`Inbox::sweep`]'s `keep` for as long as it is still needed there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    /// The private copy (server-owned, mode 0600, in `private/`).
    pub path: PathBuf,
    /// SHA1 of the copy's bytes, lowercase hex; always the one the request named.
    pub sha1: String,
    /// SHA256 of the copy's bytes, lowercase hex.
    pub sha256: String,
    /// Length of the copy in bytes.
    pub size: u64,
    /// Uid that owned the inbox entry; `None` for uploads. The inbox does not
    /// know who sent the request: a caller that does can compare.
    pub owner: Option<u32>,
}

/// Why a source was not taken in. [`Error::is_client`] tells a bad request
/// (the client's file or name) from a failure of the server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The entry name is not `[A-Za-z0-9._-]{1,255}` without a leading dot.
    #[error("bad inbox entry name {name:?}: {reason}")]
    BadName {
        /// The name as given.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// The SHA1 is not 40 lowercase hex digits.
    #[error("bad sha1 {sha1:?}: expected 40 lowercase hex digits")]
    BadSha1 {
        /// The SHA1 as given.
        sha1: String,
    },
    /// No such entry in `public/`.
    #[error("no inbox entry {entry:?}")]
    Missing {
        /// The entry name.
        entry: String,
    },
    /// The entry is a symbolic link (never followed).
    #[error("inbox entry {entry:?} is a symbolic link; copy the file itself")]
    Symlink {
        /// The entry name.
        entry: String,
    },
    /// The entry is a directory, FIFO, socket or device.
    #[error("inbox entry {entry:?} is a {kind}, not a regular file")]
    NotRegular {
        /// The entry name.
        entry: String,
        /// What it is instead.
        kind: &'static str,
    },
    /// The entry has more than one name (a hard link to a file elsewhere).
    #[error("inbox entry {entry:?} has {links} links; copy the file instead of linking it")]
    HardLink {
        /// The entry name.
        entry: String,
        /// Its link count.
        links: u64,
    },
    /// The server may not open the entry (its mode keeps the server out).
    #[error("inbox entry {entry:?} is not readable by the server; make it readable (mode 0644)")]
    Unreadable {
        /// The entry name.
        entry: String,
    },
    /// Another process holds a write lease on the entry (`F_SETLEASE`): an
    /// open that waited would stall for the lease-break time, so it fails at once.
    #[error("inbox entry {entry:?} is leased by another process; release it and retry")]
    Busy {
        /// The entry name.
        entry: String,
    },
    /// The source is larger than `max_size`.
    #[error("source is larger than the limit of {limit} bytes")]
    TooBig {
        /// The limit.
        limit: u64,
    },
    /// The entry's owner holds more than `per_user_bytes` in `public/`.
    #[error("uid {uid} holds {used} bytes in the inbox, over the limit of {limit}")]
    OverQuota {
        /// The owner.
        uid: u32,
        /// Bytes of its entries, the one being taken included.
        used: u64,
        /// The limit.
        limit: u64,
    },
    /// The bytes do not have the SHA1 the request named. Nothing is kept.
    #[error("sha1 mismatch: the request names {expected}, the bytes hash to {actual}")]
    Mismatch {
        /// The SHA1 named.
        expected: String,
        /// The SHA1 of the bytes read.
        actual: String,
    },
    /// The upload's body failed (the client went away or sent garbage).
    #[error("upload body failed: {0}")]
    Body(#[source] io::Error),
    /// A filesystem operation of the server failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// Whether the client is to blame (a 4xx): everything but [`Error::Io`].
    pub fn is_client(&self) -> bool {
        !matches!(self, Error::Io { .. })
    }

    fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { op, path, source }
    }
}

/// The inbox directory, opened. Shareable (`Send + Sync`); every method may
/// run concurrently with the others, each take or upload writing its own
/// randomly named private file.
#[derive(Debug)]
pub struct Inbox {
    public: PathBuf,
    private: PathBuf,
    // Everything inside public/ and private/ is reached relative to these, so
    // a path component swapped for a symlink cannot redirect the server.
    public_fd: OwnedFd,
    private_fd: OwnedFd,
    config: InboxConfig,
    // Names of private files being written, which a sweep must leave alone
    // however long their writer stalls (a slow upload).
    in_flight: Arc<Mutex<HashSet<String>>>,
}

impl Inbox {
    /// Blocking. Opens the inbox at `dir` (its parent must exist), creating
    /// `dir` (0711), `public/` (01733) and `private/` (0700) as needed and
    /// setting those modes on existing ones. Fails if any is not a directory
    /// (a symlink included) or its mode cannot be set (owned by someone else).
    pub fn open(dir: &Path, config: InboxConfig) -> Result<Inbox, Error> {
        let top = ensure_dir(rustix::fs::CWD, dir, dir, INBOX_MODE)?;
        let public = dir.join("public");
        let private = dir.join("private");
        let public_fd = ensure_dir(&top, "public", &public, PUBLIC_MODE)?;
        let private_fd = ensure_dir(&top, "private", &private, PRIVATE_MODE)?;
        Ok(Inbox {
            public,
            private,
            public_fd,
            private_fd,
            config,
            in_flight: Arc::default(),
        })
    }

    /// Where clients put their entries (`<dir>/public`).
    pub fn public_dir(&self) -> &Path {
        &self.public
    }

    /// Where private copies live (`<dir>/private`).
    pub fn private_dir(&self) -> &Path {
        &self.private
    }

    /// The limits this inbox enforces.
    pub fn config(&self) -> &InboxConfig {
        &self.config
    }

    /// Blocking. Takes `entry` (a name in `public/`, `[A-Za-z0-9._-]+`, no
    /// leading dot, at most 255 bytes) out of clients' reach and checks that its
    /// bytes have `sha1` (40 lowercase hex digits).
    ///
    /// The entry is opened once without following symlinks and without
    /// blocking (a FIFO answers at once); the open file must be a regular file
    /// with one link and at most `max_size` bytes, and its owner must hold at
    /// most `per_user_bytes` in `public/`. An entry refused by these checks is
    /// left in place. Otherwise the entry is unlinked (only if the name still
    /// points to the opened inode) and at most `max_size` bytes are copied from
    /// the open file into a new private file while hashing; a client rewriting
    /// or growing its file meanwhile only gets a mismatch or a too-big refusal.
    /// On any error after the unlink, the private copy is removed.
    pub fn take(&self, entry: &str, sha1: &str) -> Result<Source, Error> {
        take::take(self, entry, sha1)
    }

    /// An HTTP upload: body chunks go into a new private file, at most
    /// `max_size` bytes, hashed as written; the SHA1 must be `sha1`. On error,
    /// and if the future is dropped before it completes, the private file is
    /// removed. File writes run on tokio's blocking pool.
    pub async fn upload<S: Stream<Item = io::Result<Bytes>> + Unpin>(
        &self,
        sha1: &str,
        body: S,
    ) -> Result<Source, Error> {
        upload::upload(self, sha1, body).await
    }

    /// Blocking. Removes entries of `public/` whose ctime is older than
    /// `stale_after` (directories with their contents), and files of
    /// `private/` older than that whose path is not in `keep` (compared as
    /// [`Source::path`] gives it) and that no take or upload is still
    /// writing. Returns how many were removed. So the caller lists in `keep`
    /// every [`Source`] it still needs. An entry that cannot be removed is
    /// logged and skipped; only an unreadable directory is an error.
    ///
    /// ctime, not mtime, because a client can set its file's mtime to any
    /// value (`touch -d`, `cp -p`) but not its ctime.
    pub fn sweep(&self, keep: &[PathBuf]) -> io::Result<usize> {
        sweep::sweep(self, keep)
    }
}

/// Blocking. While builds are off nothing in the cache is world-writable:
/// `<dir>/public` is not created, and one left by a run with builds on is
/// closed (mode 0700, so local users can no longer drop files in it). A
/// missing `dir` or `public/` is fine.
pub fn close_public(dir: &Path) -> io::Result<()> {
    let public = dir.join("public");
    match rustix::fs::open(
        &public,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => Ok(rustix::fs::fchmod(&fd, Mode::from_raw_mode(PRIVATE_MODE))?),
        Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(err) => Err(io::Error::other(format!(
            "closing {}: {err}",
            public.display()
        ))),
    }
}

/// Creates directory `name` under `parent` if missing (0700 until its mode is
/// set, so it is never briefly open), opens it without following a symlink
/// and sets `mode`. `path` is for errors only.
fn ensure_dir<Fd: rustix::fd::AsFd>(
    parent: Fd,
    name: impl rustix::path::Arg + Copy,
    path: &Path,
    mode: u32,
) -> Result<OwnedFd, Error> {
    match rustix::fs::mkdirat(&parent, name, Mode::RWXU) {
        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
        Err(e) => return Err(Error::io("creating", path)(e.into())),
    }
    let fd = rustix::fs::openat(
        &parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::io("opening directory", path)(e.into()))?;
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))
        .map_err(|e| Error::io("setting the mode of", path)(e.into()))?;
    Ok(fd)
}
