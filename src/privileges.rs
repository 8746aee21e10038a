//! Dropping root: a server started as root (to bind port 80) becomes
//! `--user`/`--group` once its listeners are bound and before it opens the
//! cache, so nothing it writes belongs to root.
//!
//! glibc's setuid/setgid apply to every thread of the process (the runtime's
//! workers and the log writer included), which is why this goes through
//! libc (by way of nix) rather than a per-thread raw syscall.

use nix::unistd::{self, Gid, Group, Uid, User};
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

/// Why privileges could not be dropped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No such user or group on this system.
    #[error("no {kind} named {name:?}")]
    Unknown {
        /// "user" or "group".
        kind: &'static str,
        /// The name given.
        name: String,
    },
    /// Only root can become another user.
    #[error("--user {user} needs the server to start as root (it runs as uid {uid})")]
    NotRoot {
        /// The user asked for.
        user: String,
        /// Who we are.
        uid: u32,
    },
    /// A system call failed.
    #[error("{op}: {source}")]
    Sys {
        /// What was being done.
        op: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

fn sys(op: &'static str) -> impl FnOnce(nix::Error) -> Error {
    move |errno| Error::Sys {
        op,
        source: std::io::Error::from(errno),
    }
}

/// The uid and gid `drop_to` would switch to. Blocking.
pub fn resolve(user: &str, group: Option<&str>) -> Result<(u32, u32), Error> {
    let (account, gid) = lookup(user, group)?;
    Ok((account.uid.as_raw(), gid.as_raw()))
}

fn lookup(user: &str, group: Option<&str>) -> Result<(User, Gid), Error> {
    let account = User::from_name(user)
        .map_err(sys("looking up the user"))?
        .ok_or_else(|| Error::Unknown {
            kind: "user",
            name: user.to_string(),
        })?;
    let gid = match group {
        Some(name) => {
            Group::from_name(name)
                .map_err(sys("looking up the group"))?
                .ok_or_else(|| Error::Unknown {
                    kind: "group",
                    name: name.to_string(),
                })?
                .gid
        }
        None => account.gid,
    };
    Ok((account, gid))
}

/// Becomes `user` (and `group`, else the user's primary group), first
/// creating `cache_dir` for them if it does not exist. Blocking.
pub fn drop_to(user: &str, group: Option<&str>, cache_dir: &Path) -> Result<(), Error> {
    let (account, gid) = lookup(user, group)?;
    let me = Uid::effective();
    if me == account.uid && Gid::effective() == gid {
        return Ok(());
    }
    if !me.is_root() {
        return Err(Error::NotRoot {
            user: user.to_string(),
            uid: me.as_raw(),
        });
    }
    if !cache_dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(cache_dir)
            .map_err(|source| Error::Sys {
                op: "creating the cache directory",
                source,
            })?;
        unistd::chown(cache_dir, Some(account.uid), Some(gid))
            .map_err(sys("giving the cache directory to the user"))?;
    }
    // Supplementary groups first, then the group, then the user: after
    // setuid there is no way back to change the others.
    unistd::setgroups(&[gid]).map_err(sys("setgroups"))?;
    unistd::setgid(gid).map_err(sys("setgid"))?;
    unistd::setuid(account.uid).map_err(sys("setuid"))?;
    if unistd::setuid(Uid::from_raw(0)).is_ok() {
        return Err(Error::Sys {
            op: "dropping root",
            source: std::io::Error::other("root could be regained"),
        });
    }
    tracing::info!(
        user,
        uid = account.uid.as_raw(),
        gid = gid.as_raw(),
        "dropped root"
    );
    Ok(())
}
