//! The command line that isolates one step: the argument vector that chains
//! the tools. Pure: finding the tools (once, at start) is `tools`' job, and
//! spawning lives in `exec`.
//!
//! The chain, run as root: `setpriv --pdeathsig` (killed when the thread that
//! started it dies: see `spawner`) → `unshare` (new PID, mount, IPC and, for
//! a step without the job's network, network namespaces) → `sh` as the
//! namespace's init (private tmpfs mounts, the job's tree bound at
//! [`BUILD_DIR`], then waits for the step and reaps orphans) → `setpriv` (the
//! lease's uid and gid, no groups, no capabilities, no new privileges) →
//! `prlimit` → `env -i` (exactly the step's environment) → the program.

mod tools;

pub use tools::{Tools, TOOL_DIRS};

use super::limits::Limits;
use crate::builds::step::Step;
use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// Where a step sees its job's tree: one path for every job on every host,
/// so that what a build records of where it ran (debug info, build ids, the
/// Makefiles of native extensions) is the same wherever it ran. Inside the
/// step's private `/tmp`, so making it touches nothing on the host.
pub const BUILD_DIR: &str = "/tmp/build";

/// The namespace's init: mounts the private tmpfs (binding the work root back
/// in when a tmpfs covers it), binds the job's tree (when there is one) at
/// `BUILD_DIR` and changes into the step's directory there, then runs the
/// rest of the chain as a child and exits with its status. As PID 1 it reaps
/// orphans while it waits, and its exit (or its death with `unshare`) kills
/// every process left in the namespace. A step killed by a signal therefore
/// reports 128+N, as in any shell. The directory is entered again by its
/// path after the bind (so that the step's own view of where it is, `pwd`,
/// is inside `BUILD_DIR`), and must be that path with no symlink on the way.
const INIT_SCRIPT: &str = r#"set -e
root=$1 mount=$2 rebind=$3 size=$4 job=$5 cwd=$6 build=$7
shift 7
exec 3<"$root"
if [ -n "$job" ]; then exec 4<"$job"; fi
while [ "$1" != -- ]; do
  "$mount" -t tmpfs -o "mode=1777,nosuid,nodev,size=$size" tmpfs "$1"
  shift
done
shift
if [ "$rebind" = 1 ]; then
  "$mount" --no-canonicalize --bind --mkdir /proc/self/fd/3 "$root"
fi
exec 3<&-
if [ -n "$job" ]; then
  "$mount" --no-canonicalize --bind --mkdir /proc/self/fd/4 "$build"
  exec 4<&-
  cd -P -- "$cwd"
  if [ "$(pwd -P)" != "$cwd" ]; then
    echo "sandbox: $cwd is not a plain directory" >&2
    exit 125
  fi
fi
set +e
"$@"
"#;

/// Everything an isolated step needs.
pub struct Isolated<'a> {
    unshare: &'a Path,
    setpriv: &'a Path,
    mount: &'a Path,
    limited: Limited<'a>,
    sh: &'a Path,
    ip: &'a Path,
    private_tmp: &'a [PathBuf],
}

/// What an insecure step needs: limits and a cleared environment (and,
/// when there is a `setpriv`, death with the thread that started it).
pub struct Limited<'a> {
    prlimit: &'a Path,
    env: &'a Path,
    setpriv: Option<&'a Path>,
}

/// Where an isolated step runs, besides its program and environment.
#[derive(Clone, Copy, Debug)]
pub struct Place<'a> {
    /// The canonical work root (re-bound at its path when a private tmpfs covers it).
    pub work_root: &'a Path,
    /// The job's tree, bound at [`BUILD_DIR`]; then the step's cwd is there.
    pub job: Option<&'a Path>,
    /// `true`: the step's process is started inside the job's network
    /// namespace and stays there; `false`: a new, empty one.
    pub job_network: bool,
}

/// Checks what `env -i` and `execve` could misread: the program must be an
/// absolute path without `=` (env would take it for a variable), variable
/// names must be non-empty without `=`, and nothing may hold a NUL byte.
pub fn validate(step: &Step) -> Result<(), String> {
    let nul = |s: &[u8]| s.contains(&0);
    let program = step.program.as_os_str().as_bytes();
    if !step.program.is_absolute() || program.contains(&b'=') || nul(program) {
        return Err(format!(
            "program {:?}: not an absolute path without '='",
            step.program
        ));
    }
    if step.args.iter().any(|arg| nul(arg.as_bytes())) {
        return Err("an argument holds a NUL byte".into());
    }
    for (name, value) in &step.env {
        let name = name.as_bytes();
        if name.is_empty() || name.contains(&b'=') || nul(name) || nul(value.as_bytes()) {
            return Err(format!(
                "environment variable {:?}: bad name or value",
                String::from_utf8_lossy(name)
            ));
        }
    }
    Ok(())
}

impl Limited<'_> {
    /// `[setpriv --pdeathsig KILL --] prlimit … -- env -i -- NAME=VALUE… program args…`.
    pub fn argv(&self, step: &Step, limits: &Limits) -> Vec<OsString> {
        let mut argv = match self.setpriv {
            Some(setpriv) => pdeathsig(setpriv),
            None => Vec::new(),
        };
        argv.extend(self.limits(step, limits));
        argv
    }

    /// `prlimit … -- env -i -- NAME=VALUE… program args…`.
    fn limits(&self, step: &Step, limits: &Limits) -> Vec<OsString> {
        let cpu = limits.cpu.as_secs() + u64::from(limits.cpu.subsec_nanos() > 0);
        let mut argv: Vec<OsString> = vec![
            self.prlimit.into(),
            format!("--cpu={}", cpu.max(1)).into(),
            format!("--as={}", limits.memory).into(),
            format!("--fsize={}", limits.file_size).into(),
            format!("--nproc={}", limits.processes).into(),
            "--core=0".into(),
            "--".into(),
            self.env.into(),
            "-i".into(),
            "--".into(),
        ];
        for (name, value) in &step.env {
            let mut pair = name.clone().into_vec();
            pair.push(b'=');
            pair.extend_from_slice(value.as_bytes());
            argv.push(OsString::from_vec(pair));
        }
        argv.push(step.program.clone().into());
        argv.extend(step.args.iter().cloned());
        argv
    }
}

/// `setpriv --pdeathsig KILL --`: what follows gets SIGKILL when the thread
/// that started it dies (the flag survives the exec of a program that is not
/// set-user-ID).
fn pdeathsig(setpriv: &Path) -> Vec<OsString> {
    vec![
        setpriv.into(),
        "--pdeathsig".into(),
        "KILL".into(),
        "--".into(),
    ]
}

impl Isolated<'_> {
    /// `ip`, to make a job's network.
    pub fn ip(&self) -> &Path {
        self.ip
    }

    /// The whole chain for `step` as `uid` (gid = uid) at `place`. With a
    /// job, `step.cwd` is a path inside [`BUILD_DIR`].
    pub fn argv(&self, uid: u32, step: &Step, limits: &Limits, place: Place<'_>) -> Vec<OsString> {
        let mut argv = pdeathsig(self.setpriv);
        argv.extend([
            self.unshare.into(),
            "--pid".into(),
            "--fork".into(),
            "--kill-child".into(),
            "--mount-proc".into(),
            "--ipc".into(),
        ]);
        if !place.job_network {
            argv.push("--net".into());
        }
        let rebind = self
            .private_tmp
            .iter()
            .any(|dir| place.work_root.starts_with(dir));
        let (job, cwd) = match place.job {
            Some(job) => (job.as_os_str(), step.cwd.as_os_str()),
            None => ("".as_ref(), "".as_ref()),
        };
        argv.extend([
            "--".into(),
            self.sh.into(),
            "-c".into(),
            INIT_SCRIPT.into(),
            "sh".into(),
            place.work_root.into(),
            self.mount.into(),
            if rebind { "1" } else { "0" }.into(),
            limits.file_size.max(1 << 20).to_string().into(),
            job.into(),
            cwd.into(),
            BUILD_DIR.into(),
        ]);
        argv.extend(self.private_tmp.iter().map(OsString::from));
        argv.extend([
            "--".into(),
            self.setpriv.into(),
            format!("--reuid={uid}").into(),
            format!("--regid={uid}").into(),
            "--clear-groups".into(),
            "--no-new-privs".into(),
            "--inh-caps=-all".into(),
            "--ambient-caps=-all".into(),
            "--bounding-set=-all".into(),
            "--".into(),
        ]);
        argv.extend(self.limited.limits(step, limits));
        argv
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn step() -> Step {
        Step {
            program: "/usr/bin/python3".into(),
            args: vec!["-c".into(), "print(1)".into()],
            env: vec![("HOME".into(), "/w/home".into())],
            cwd: "/w".into(),
            network: false,
            job: None,
        }
    }

    fn limits() -> Limits {
        Limits {
            cpu: Duration::from_millis(1500),
            memory: 1 << 30,
            file_size: 1 << 20,
            processes: 64,
            wall: Duration::from_secs(60),
        }
    }

    fn tools() -> Tools {
        let p = |name: &str| Some(PathBuf::from(format!("/usr/bin/{name}")));
        Tools {
            unshare: p("unshare"),
            setpriv: p("setpriv"),
            mount: p("mount"),
            prlimit: p("prlimit"),
            env: p("env"),
            sh: Some("/bin/sh".into()),
            ip: Some("/usr/sbin/ip".into()),
            private_tmp: vec!["/tmp".into(), "/dev/shm".into()],
        }
    }

    fn at(work_root: &str) -> Place<'_> {
        Place {
            work_root: Path::new(work_root),
            job: None,
            job_network: false,
        }
    }

    fn strings(argv: &[OsString]) -> Vec<String> {
        argv.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn missing_tools_are_named() {
        let empty = tempfile::tempdir().unwrap();
        let tools = Tools::find(&[empty.path().to_path_buf()]);
        let err = tools.isolated().err().expect("nothing found");
        assert!(
            err.contains("unshare, setpriv, mount, prlimit, env, sh, ip"),
            "{err}"
        );
        assert!(tools.limited().is_err());
        let mut no_tmp = self::tools();
        no_tmp.private_tmp.retain(|dir| dir != Path::new("/tmp"));
        let err = no_tmp.isolated().err().expect("no /tmp to build in");
        assert!(err.contains("/tmp"), "{err}");
    }

    #[test]
    fn the_chain_drops_everything_and_ends_with_the_program() {
        let tools = tools();
        let argv = strings(&tools.isolated().unwrap().argv(
            62100,
            &step(),
            &limits(),
            at("/var/cache/w"),
        ));
        // Dies with the thread that started it, then new namespaces.
        assert_eq!(
            &argv[..5],
            [
                "/usr/bin/setpriv",
                "--pdeathsig",
                "KILL",
                "--",
                "/usr/bin/unshare"
            ]
        );
        assert!(argv.contains(&"--net".to_string()));
        for flag in [
            "--reuid=62100",
            "--regid=62100",
            "--clear-groups",
            "--no-new-privs",
            "--bounding-set=-all",
            "--cpu=2",
            "--fsize=1048576",
            "--nproc=64",
        ] {
            assert!(argv.contains(&flag.to_string()), "{flag} in {argv:?}");
        }
        let at = argv.iter().position(|a| a == "/var/cache/w").unwrap();
        assert_eq!(
            &argv[at..at + 9],
            [
                "/var/cache/w",
                "/usr/bin/mount",
                "0",
                "1048576",
                "",
                "",
                BUILD_DIR,
                "/tmp",
                "/dev/shm"
            ]
        );
        assert_eq!(
            &argv[argv.len() - 4..],
            ["HOME=/w/home", "/usr/bin/python3", "-c", "print(1)"]
        );
    }

    #[test]
    fn a_job_network_step_keeps_its_namespace_and_the_job_is_bound() {
        let tools = tools();
        let mut step = step();
        step.cwd = format!("{BUILD_DIR}/tmp").into();
        let place = Place {
            work_root: Path::new("/tmp/x/w"),
            job: Some(Path::new("/tmp/x/w/job-1")),
            job_network: true,
        };
        let argv = strings(&tools.isolated().unwrap().argv(1, &step, &limits(), place));
        assert!(!argv.contains(&"--net".to_string()));
        let at = argv.iter().position(|a| a == "/tmp/x/w").unwrap();
        assert_eq!(argv[at + 2], "1", "a work root under /tmp is bound back");
        assert_eq!(
            &argv[at + 4..at + 7],
            ["/tmp/x/w/job-1", "/tmp/build/tmp", BUILD_DIR]
        );
    }

    #[test]
    fn insecure_steps_die_with_their_thread_when_setpriv_is_there() {
        let mut tools = tools();
        let argv = strings(&tools.limited().unwrap().argv(&step(), &limits()));
        assert_eq!(&argv[..2], ["/usr/bin/setpriv", "--pdeathsig"]);
        tools.setpriv = None;
        let argv = strings(&tools.limited().unwrap().argv(&step(), &limits()));
        assert_eq!(argv[0], "/usr/bin/prlimit");
    }

    #[test]
    fn validation_refuses_what_env_would_misread() {
        assert!(validate(&step()).is_ok());
        let mut bad = step();
        bad.program = "python3".into();
        assert!(validate(&bad).is_err());
        bad.program = "/opt/a=b/python".into();
        assert!(validate(&bad).is_err());
        let mut bad = step();
        bad.env.push(("A=B".into(), "c".into()));
        assert!(validate(&bad).is_err());
        let mut bad = step();
        bad.env.push(("".into(), "c".into()));
        assert!(validate(&bad).is_err());
        let mut bad = step();
        bad.args.push(OsString::from_vec(b"a\0b".to_vec()));
        assert!(validate(&bad).is_err());
    }
}
