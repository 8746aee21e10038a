//! Shared by tests/sandbox.rs and tests/sandbox_helper.rs: a job layout on a
//! temp dir reachable by build uids, shell steps, the /proc check for
//! leftover processes, and bounded waits.
#![allow(dead_code)]

use package_cache::builds::sandbox::{Lease, Limits, Outcome, Sandbox, SandboxConfig, Step};
use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A double fork that leaves its session: a process group kill misses it.
pub const ESCAPEE: &str = "setsid sh -c 'sleep 300 & '; sleep 300";

pub async fn within<T>(secs: u64, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), fut)
        .await
        .expect("bounded wait passed")
}

pub fn limits() -> Limits {
    Limits {
        cpu: Duration::from_secs(30),
        memory: 1 << 30,
        file_size: 64 << 20,
        processes: 64,
        wall: Duration::from_secs(30),
    }
}

/// A temp root (0711, reachable by the build uids) with `work/job/{install,home}`
/// and a server-owned `private/` and `logs/` beside the work root.
pub struct Layout {
    _tmp: tempfile::TempDir,
    pub top: PathBuf,
    pub work: PathBuf,
    pub job: PathBuf,
    pub install: PathBuf,
    pub log: PathBuf,
}

impl Layout {
    /// Under the target's temp dir when build uids can reach it and it is
    /// not below a directory the sandbox covers with a private tmpfs (a
    /// checkout under /tmp is); else under /var/cache/package-cache-tests.
    pub fn new() -> Layout {
        let target = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let reachable = target.ancestors().all(|dir| {
            std::fs::metadata(dir).is_ok_and(|meta| meta.permissions().mode() & 0o001 != 0)
        });
        let covered = ["/tmp", "/var/tmp", "/dev/shm", "/run/lock"]
            .iter()
            .any(|dir| target.starts_with(dir));
        if reachable && !covered {
            return Layout::in_dir(target);
        }
        let base = Path::new("/var/cache/package-cache-tests");
        std::fs::create_dir_all(base).unwrap();
        std::fs::set_permissions(base, std::fs::Permissions::from_mode(0o711)).unwrap();
        Layout::in_dir(base)
    }

    /// Under /tmp, which the sandbox covers: the work root is bound back in.
    pub fn under_tmp() -> Layout {
        Layout::in_dir(&std::env::temp_dir())
    }

    fn in_dir(base: &Path) -> Layout {
        let tmp = tempfile::tempdir_in(base).unwrap();
        let top = tmp.path().canonicalize().unwrap();
        let work = top.join("work");
        let job = work.join("job");
        let install = job.join("install");
        for dir in [
            &install,
            &job.join("home"),
            &top.join("private"),
            &top.join("logs"),
        ] {
            std::fs::create_dir_all(dir).unwrap();
        }
        for dir in [&top, &work, &job] {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711)).unwrap();
        }
        Layout {
            log: top.join("logs/step.log"),
            _tmp: tmp,
            top,
            work,
            job,
            install,
        }
    }

    pub fn config(&self, uid: u32, limits: Limits) -> SandboxConfig {
        SandboxConfig {
            uids: uid..uid + 1,
            limits,
            insecure: false,
            work_root: self.work.clone(),
        }
    }

    /// Gives the job's tree to `uid`, as a server that dropped root to it owns it.
    pub fn job_owned_by(&self, uid: u32) {
        fn walk(path: &Path, uid: u32) {
            std::os::unix::fs::lchown(path, Some(uid), Some(uid)).unwrap();
            if std::fs::symlink_metadata(path).unwrap().is_dir() {
                for entry in std::fs::read_dir(path).unwrap() {
                    walk(&entry.unwrap().path(), uid);
                }
            }
        }
        walk(&self.job, uid);
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

pub fn sh(script: &str, cwd: &Path) -> Step {
    Step {
        program: "/bin/sh".into(),
        args: vec!["-c".into(), script.into()],
        env: vec![
            ("PATH".into(), "/usr/bin:/bin".into()),
            ("HOME".into(), cwd.into()),
        ],
        cwd: cwd.to_path_buf(),
        network: false,
        job: None,
    }
}

/// Live (not zombie) processes of `uid`, as their command lines.
pub fn processes_of(uid: u32) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .unwrap_or("")
        };
        let ours = field("Uid:")
            .split_whitespace()
            .any(|id| id == uid.to_string());
        if ours && !field("State:").trim_start().starts_with('Z') {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            found.push(String::from_utf8_lossy(&cmdline).replace('\0', " "));
        }
    }
    found
}

pub async fn run(sandbox: &Sandbox, lease: &Lease, step: &Step, log: &Path) -> Outcome {
    within(60, sandbox.run(lease, step, log, &CancellationToken::new()))
        .await
        .expect("the step runs")
}
