//! `Tools`: finding the programs a sandbox chains, by absolute path in fixed
//! directories, once at start; and which of them each mode (isolated, or
//! limits only) needs. The only part of `command` that touches the
//! filesystem.

use super::{Isolated, Limited, BUILD_DIR};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Where the tools are looked for: fixed directories, never `$PATH`, so the
/// server's environment cannot pick what runs as root.
pub const TOOL_DIRS: &[&str] = &["/usr/bin", "/bin", "/usr/sbin", "/sbin"];

/// Mount points that get a private tmpfs inside the sandbox (those that exist
/// as real directories at start): the world-writable directories of a usual
/// host, where a build could otherwise leave files for the next build of its uid.
const PRIVATE_TMP: &[&str] = &["/tmp", "/var/tmp", "/dev/shm", "/run/lock"];

/// The tools a sandbox runs, by absolute path.
#[derive(Clone, Debug)]
pub struct Tools {
    /// util-linux `unshare`; `None` when only the insecure mode is possible.
    pub unshare: Option<PathBuf>,
    /// util-linux `setpriv`.
    pub setpriv: Option<PathBuf>,
    /// util-linux `mount`.
    pub mount: Option<PathBuf>,
    /// util-linux `prlimit`.
    pub prlimit: Option<PathBuf>,
    /// coreutils `env`.
    pub env: Option<PathBuf>,
    /// A POSIX shell.
    pub sh: Option<PathBuf>,
    /// iproute2 `ip`, to bring up loopback in a job's network namespace.
    pub ip: Option<PathBuf>,
    /// Private tmpfs mount points that exist on this host.
    pub private_tmp: Vec<PathBuf>,
}

impl Tools {
    /// Looks for each tool in `dirs` (the first executable regular file wins).
    pub fn find(dirs: &[PathBuf]) -> Tools {
        let find = |name: &str| {
            dirs.iter().map(|dir| dir.join(name)).find(|path| {
                std::fs::metadata(path)
                    .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
            })
        };
        let private_tmp = PRIVATE_TMP
            .iter()
            .map(PathBuf::from)
            .filter(|dir| std::fs::symlink_metadata(dir).is_ok_and(|meta| meta.is_dir()))
            .collect();
        Tools {
            unshare: find("unshare"),
            setpriv: find("setpriv"),
            mount: find("mount"),
            prlimit: find("prlimit"),
            env: find("env"),
            sh: find("sh"),
            ip: find("ip"),
            private_tmp,
        }
    }

    /// The tools for isolated steps, or the names of those missing.
    pub fn isolated(&self) -> Result<Isolated<'_>, String> {
        let tools = match (
            &self.unshare,
            &self.setpriv,
            &self.mount,
            &self.prlimit,
            &self.env,
            &self.sh,
            &self.ip,
        ) {
            (
                Some(unshare),
                Some(setpriv),
                Some(mount),
                Some(prlimit),
                Some(env),
                Some(sh),
                Some(ip),
            ) => Isolated {
                unshare,
                setpriv,
                mount,
                limited: Limited {
                    prlimit,
                    env,
                    setpriv: Some(setpriv),
                },
                sh,
                ip,
                private_tmp: &self.private_tmp,
            },
            _ => {
                return Err(
                    self.missing(&["unshare", "setpriv", "mount", "prlimit", "env", "sh", "ip"])
                )
            }
        };
        if !self.private_tmp.iter().any(|dir| dir == Path::new("/tmp")) {
            return Err(format!("no /tmp directory to build in (at {BUILD_DIR})"));
        }
        Ok(tools)
    }

    /// The tools for insecure steps (limits only), or the names of those missing.
    pub fn limited(&self) -> Result<Limited<'_>, String> {
        match (&self.prlimit, &self.env) {
            (Some(prlimit), Some(env)) => Ok(Limited {
                prlimit,
                env,
                setpriv: self.setpriv.as_deref(),
            }),
            _ => Err(self.missing(&["prlimit", "env"])),
        }
    }

    fn missing(&self, names: &[&str]) -> String {
        let have = |name: &str| match name {
            "unshare" => self.unshare.is_some(),
            "setpriv" => self.setpriv.is_some(),
            "mount" => self.mount.is_some(),
            "prlimit" => self.prlimit.is_some(),
            "env" => self.env.is_some(),
            "ip" => self.ip.is_some(),
            _ => self.sh.is_some(),
        };
        let missing: Vec<&str> = names.iter().copied().filter(|n| !have(n)).collect();
        format!(
            "missing {} (util-linux, coreutils, iproute2)",
            missing.join(", ")
        )
    }
}
