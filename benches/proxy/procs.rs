//! Processes the bench starts: spawn with output to a file, wait until the port accepts,
//! read CPU time and peak RSS from /proc, and stop by PID (SIGTERM, wait, then SIGKILL).
//! Nothing here finds or kills a process by name.

use anyhow::{bail, Context, Result};
use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// How long a server gets to exit after SIGTERM before it is sent SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(15);

/// A port that was free a moment ago: bind 127.0.0.1:0, read the port, release it.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// The effective uid, from /proc/self/status (`Uid: real effective saved fs`).
pub fn effective_uid() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Clock ticks per second, the unit of utime/stime in /proc/<pid>/stat.
fn clock_ticks_per_sec() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Runs a short-lived tool (wrk) to completion, SIGKILLing it (by its PID) after `timeout`.
pub fn run_bounded(mut cmd: Command, timeout: Duration) -> Result<ExitStatus> {
    let mut child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{cmd:?} still running after {timeout:?}; killed");
        }
        sleep(Duration::from_millis(20));
    }
}

/// A server process started by the bench. Dropping it stops it (also during a panic).
///
/// With `tree` set (nginx), accounting covers the master and all of its children.
pub struct Server {
    name: String,
    child: Child,
    log: PathBuf,
    tree: bool,
    ticks_per_sec: f64,
    stopped: bool,
}

impl Server {
    /// Starts `cmd` with stdin closed and stdout+stderr appended to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path, tree: bool) -> Result<Server> {
        let out = fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name}: {cmd:?}"))?;
        Ok(Server {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
            tree,
            ticks_per_sec: clock_ticks_per_sec(),
            stopped: false,
        })
    }

    /// The PID of the process the bench started (the nginx master).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until `addr` accepts a connection; fails early if the process exits.
    pub fn wait_ready(&mut self, addr: SocketAddr, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                self.stopped = true;
                bail!(
                    "{} exited during start-up ({status}); last lines of {}:\n{}",
                    self.name,
                    self.log.display(),
                    self.log_tail(20)
                );
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("{} did not accept on {addr} within {timeout:?}", self.name);
            }
            sleep(Duration::from_millis(50));
        }
    }

    /// Fails with the log tail when the process is gone (crashed) or a zombie.
    pub fn ensure_alive(&self) -> Result<()> {
        match proc_stat(self.pid()) {
            Some(stat) if stat.state != 'Z' => Ok(()),
            _ => bail!(
                "{} (pid {}) is no longer running; last lines of {}:\n{}",
                self.name,
                self.pid(),
                self.log.display(),
                self.log_tail(20)
            ),
        }
    }

    /// The started process plus, for a tree, its current children.
    fn pids(&self) -> Vec<u32> {
        let mut pids = vec![self.pid()];
        if self.tree {
            pids.extend(children(self.pid()));
        }
        pids
    }

    /// utime + stime, in seconds, summed over [`Server::pids`]. Take it before and after a run.
    pub fn cpu_seconds(&self) -> f64 {
        let ticks: u64 = self
            .pids()
            .into_iter()
            .filter_map(proc_stat)
            .map(|s| s.cpu_ticks)
            .sum();
        ticks as f64 / self.ticks_per_sec
    }

    /// VmHWM (peak RSS) in KiB of the started process itself.
    pub fn peak_rss_kib(&self) -> u64 {
        vm_hwm_kib(self.pid()).unwrap_or(0)
    }

    /// Sum of VmHWM in KiB over the children whose command line says "worker process" (nginx).
    pub fn workers_peak_rss_kib(&self) -> u64 {
        children(self.pid())
            .into_iter()
            .filter(|pid| {
                fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|c| String::from_utf8_lossy(&c).contains("worker process"))
                    .unwrap_or(false)
            })
            .filter_map(vm_hwm_kib)
            .sum()
    }

    /// The last `lines` lines of the process's output file.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// SIGTERM by PID, wait up to [`STOP_GRACE`], then SIGKILL (and SIGKILL known children).
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let kids = if self.tree {
            children(self.pid())
        } else {
            Vec::new()
        };
        signal(self.pid(), "TERM");
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            sleep(Duration::from_millis(20));
        }
        eprintln!(
            "{} (pid {}) still running {STOP_GRACE:?} after SIGTERM; sending SIGKILL",
            self.name,
            self.pid()
        );
        for kid in kids {
            signal(kid, "KILL");
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends a signal to one PID with kill(1), so the bench needs no libc dependency.
fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The fields of /proc/<pid>/stat the bench uses.
struct ProcStat {
    state: char,
    ppid: u32,
    cpu_ticks: u64,
}

fn proc_stat(pid: u32) -> Option<ProcStat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        cpu_ticks: utime + stime,
    })
}

/// Direct children of `pid`: /proc/<pid>/task/<pid>/children, else a scan of every /proc/<n>/stat.
fn children(pid: u32) -> Vec<u32> {
    if let Ok(text) = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) {
        return text
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
    }
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| proc_stat(p).is_some_and(|s| s.ppid == pid))
        .collect()
}

fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
