//! `Daemon`: a real server program (Verdaccio, the Go module proxy fixture) run as a child that
//! listens on `127.0.0.1:0`. Its port is read from the kernel (`/proc/PID/fd` socket inodes
//! matched against the LISTEN rows of `/proc/PID/net/tcp`), so nothing depends on what the
//! program prints or on a port picked in advance. Its stdout and stderr lines are kept. It is
//! stopped by PID (SIGKILL, then reaped) on `stop()` or when dropped (kill_on_drop); it never
//! sees the machine's proxy variables.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

/// A running server process; see the module docs.
pub struct Daemon {
    child: Child,
    name: String,
    /// Where it listens.
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    /// Spawns `command` (whose arguments make it listen on 127.0.0.1:0) and waits, at most
    /// `limit`, until it listens. Panics, with what it printed, if it exits or is too slow.
    pub async fn start(name: &str, mut command: Command, limit: Duration) -> Daemon {
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
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let log = Arc::new(Mutex::new(Vec::new()));
        collect(child.stdout.take().expect("piped stdout"), log.clone());
        collect(child.stderr.take().expect("piped stderr"), log.clone());
        let pid = child.id().expect("a running child");
        let started = Instant::now();
        let addr = loop {
            if let Some(addr) = listening(pid).into_iter().next() {
                break addr;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "{name} exited ({status}) before listening:\n{}",
                    log.lock().unwrap().join("\n")
                );
            }
            assert!(
                started.elapsed() < limit,
                "{name} did not listen within {limit:?}:\n{}",
                log.lock().unwrap().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        Daemon {
            child,
            name: name.to_string(),
            addr,
            log,
        }
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("running until stopped")
    }

    /// Everything it printed so far, one line an entry.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// SIGKILL by PID and reap; later connections are refused. Idempotent.
    pub async fn stop(&mut self) {
        if self.child.id().is_some() {
            let _ = self.child.start_kill();
            let waited = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
            assert!(waited.is_ok(), "{} did not exit after SIGKILL", self.name);
        }
    }
}

fn collect(stream: impl AsyncRead + Unpin + Send + 'static, log: Arc<Mutex<Vec<String>>>) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            log.lock().unwrap().push(line);
        }
    });
}

/// The IPv4 TCP addresses `pid` listens on.
pub fn listening(pid: u32) -> Vec<SocketAddr> {
    let proc = Path::new("/proc").join(pid.to_string());
    let Ok(fds) = std::fs::read_dir(proc.join("fd")) else {
        return Vec::new();
    };
    let inodes: Vec<String> = fds
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            Some(
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_string(),
            )
        })
        .collect();
    let Ok(table) = std::fs::read_to_string(proc.join("net/tcp")) else {
        return Vec::new();
    };
    // `sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode`
    table
        .lines()
        .skip(1)
        .filter_map(|row| {
            let fields: Vec<&str> = row.split_whitespace().collect();
            if fields.get(3) != Some(&"0A")
                || !inodes.iter().any(|i| Some(&i.as_str()) == fields.get(9))
            {
                return None;
            }
            let (ip, port) = fields.get(1)?.split_once(':')?;
            // The address is the kernel's u32 in host (little-endian) order.
            let ip = Ipv4Addr::from(u32::from_str_radix(ip, 16).ok()?.swap_bytes());
            Some(SocketAddr::new(
                ip.into(),
                u16::from_str_radix(port, 16).ok()?,
            ))
        })
        .collect()
}
