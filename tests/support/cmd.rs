//! `Cmd`: a real client program (pip, gem, bundle, wget, python3, ruby) run as a child with a
//! time limit. The child is killed if the limit passes or the test ends first (kill_on_drop),
//! and never sees the machine's proxy variables, so it talks to loopback only.

use std::ffi::OsStr;
use std::path::Path;
use std::time::Duration;

/// What a finished command left.
#[derive(Debug)]
pub struct Output {
    /// The exit code (-1 if killed by a signal).
    pub code: i32,
    /// Standard output, lossily decoded.
    pub stdout: String,
    /// Standard error, lossily decoded.
    pub stderr: String,
}

impl Output {
    /// Whether the command exited with 0.
    pub fn ok(&self) -> bool {
        self.code == 0
    }

    /// Both streams, for assertion messages.
    pub fn text(&self) -> String {
        format!(
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// A command to run; see the module docs.
pub struct Cmd {
    command: tokio::process::Command,
    program: String,
    limit: Duration,
}

impl Cmd {
    /// `program` with a default limit of 180 s.
    pub fn new(program: impl AsRef<OsStr>) -> Cmd {
        let program_name = program.as_ref().to_string_lossy().into_owned();
        let mut command = tokio::process::Command::new(program);
        for var in [
            "http_proxy",
            "HTTP_PROXY",
            "https_proxy",
            "HTTPS_PROXY",
            "all_proxy",
            "ALL_PROXY",
            "no_proxy",
            "NO_PROXY",
        ] {
            command.env_remove(var);
        }
        command
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        Cmd {
            command,
            program: program_name,
            limit: Duration::from_secs(180),
        }
    }

    /// Adds arguments.
    pub fn args<I, S>(mut self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.command.args(args);
        self
    }

    /// Sets an environment variable.
    pub fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> Cmd {
        self.command.env(key, value);
        self
    }

    /// Removes every inherited variable whose name starts with `prefix`.
    pub fn env_remove_prefixed(mut self, prefix: &str) -> Cmd {
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with(prefix) {
                self.command.env_remove(key);
            }
        }
        self
    }

    /// Runs in `dir`.
    pub fn current_dir(mut self, dir: &Path) -> Cmd {
        self.command.current_dir(dir);
        self
    }

    /// Sets the time limit.
    pub fn limit(mut self, limit: Duration) -> Cmd {
        self.limit = limit;
        self
    }

    /// Runs to completion; panics if it cannot start or exceeds its limit (it is then killed).
    pub async fn run(mut self) -> Output {
        let program = self.program;
        let output = tokio::time::timeout(self.limit, self.command.output())
            .await
            .unwrap_or_else(|_| panic!("{program} did not finish within {:?}", self.limit))
            .unwrap_or_else(|e| panic!("{program} runs: {e}"));
        Output {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Runs and asserts success, returning the output.
    pub async fn ok(self) -> Output {
        let what = self.program.clone();
        let output = self.run().await;
        assert!(output.ok(), "{what} failed: {}", output.text());
        output
    }
}
