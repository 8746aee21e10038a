//! `Step`: one command of a build, as a package type describes it and the
//! sandbox runs it. A plain value: no I/O here; the sandbox decides how the
//! command is isolated, this only says what to run, where and with what.

use std::ffi::OsString;
use std::path::PathBuf;

/// One command to run isolated.
///
/// The environment is the whole environment: the sandbox clears it first and
/// adds nothing, so `HOME`, `TMPDIR`, `PATH` and `LANG` are the caller's to set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// Absolute path of the executable (e.g. the runtime's interpreter).
    pub program: PathBuf,
    /// Arguments, without the program name.
    pub args: Vec<OsString>,
    /// The whole environment.
    pub env: Vec<(OsString, OsString)>,
    /// Working directory.
    pub cwd: PathBuf,
    /// `false`: a new network namespace (no network at all). `true`: the
    /// job's network, where the only address that answers is the proxy's
    /// listener made for the job (`Sandbox::open_network`); the fetching
    /// stage talks to the proxy there. (Insecure builds: the host's network.)
    pub network: bool,
    /// The job's tree on the host (below the work root), which the sandbox
    /// binds at `sandbox::BUILD_DIR` for the step: then `cwd`, and every
    /// path the step is given, are paths inside that. Set by the worker for
    /// isolated builds, never by a package type; `None`: host paths.
    pub job: Option<PathBuf>,
}
