//! What a step may use (`Limits`) and how it ended (`Outcome`): plain values
//! shared by the in-process executor, the privileged helper and its wire.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// Resource limits of one step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// CPU time (RLIMIT_CPU, rounded up to whole seconds): SIGKILL past it.
    pub cpu: Duration,
    /// Address space in bytes (RLIMIT_AS): allocations fail past it.
    pub memory: u64,
    /// Largest file in bytes (RLIMIT_FSIZE): writes fail with EFBIG past it.
    /// Also the size of each private tmpfs.
    pub file_size: u64,
    /// Processes and threads of the build uid (RLIMIT_NPROC).
    pub processes: u64,
    /// Wall-clock time: every process of the step is killed past it.
    pub wall: Duration,
}

/// How a step ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// Exit status. Isolated, a step killed by a signal (say the CPU limit's
    /// SIGKILL) reports 128+N here, as its shell-init does.
    pub code: Option<i32>,
    /// The signal that killed the step's first process (SIGKILL when the
    /// sandbox killed it on the wall-clock limit).
    pub signal: Option<i32>,
    /// The wall-clock limit was reached and everything was killed.
    pub timed_out: bool,
}

impl Outcome {
    /// Exit status 0 within the time limit.
    pub fn success(&self) -> bool {
        !self.timed_out && self.code == Some(0)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.timed_out, self.code, self.signal) {
            (true, _, _) => f.write_str("timed out and was killed"),
            (false, Some(code), _) => write!(f, "exited with status {code}"),
            (false, None, Some(signal)) => write!(f, "was killed by signal {signal}"),
            (false, None, None) => f.write_str("ended in an unknown way"),
        }
    }
}
