//! `Haproxy`: the real HAProxy (Debian's) running `contrib/haproxy/package-cache.cfg` on
//! `127.0.0.1` in front of test backends. Only the listener, the servers' addresses and
//! the stats socket's path are rewritten; every other line is the operator's file. It runs
//! in the foreground as a child that is killed when the handle drops, or (through
//! `setpriv --pdeathsig`) when the test process dies first.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The operator's configuration.
pub const CONFIG: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/contrib/haproxy/package-cache.cfg"
);
/// The backend section's name in [`CONFIG`].
const BACKEND: &str = "package-cache";

/// One node behind the balancer: where traffic goes, and where its health is checked.
#[derive(Clone, Copy, Debug)]
pub struct Node {
    /// The proxy port.
    pub traffic: SocketAddr,
    /// The admin port (`GET /healthz`).
    pub admin: SocketAddr,
}

/// A running HAProxy.
#[derive(Debug)]
pub struct Haproxy {
    child: tokio::process::Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
    /// The server names of the config, in node order.
    pub names: Vec<String>,
}

/// Whether HAProxy is installed; without it the test is skipped (with the reason
/// printed), except under `CI`, which installs it: there it fails.
pub fn installed() -> bool {
    if Path::new("/usr/sbin/haproxy").exists() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI installs haproxy: it is missing"
    );
    eprintln!("skipped: needs haproxy (apt-get install haproxy)");
    false
}

/// Rewrites [`CONFIG`] for loopback: `bind` on `listen`, the stats socket under `dir`, and
/// the server lines' addresses and check ports for `nodes` (as many as the file has).
pub fn render(
    config: &str,
    listen: SocketAddr,
    socket: &Path,
    nodes: &[Node],
) -> (String, Vec<String>) {
    let mut out = String::new();
    let mut names = Vec::new();
    let mut servers = nodes.iter();
    for line in config.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let indent = &line[..line.len() - line.trim_start().len()];
        let rewritten = match words.as_slice() {
            ["bind", ..] => format!("{indent}bind {listen}"),
            ["stats", "socket", _, rest @ ..] => {
                format!(
                    "{indent}stats socket {} {}",
                    socket.display(),
                    rest.join(" ")
                )
            }
            ["server", name, _addr, rest @ ..] => {
                let node = servers
                    .next()
                    .expect("as many test nodes as the config has servers");
                names.push(name.to_string());
                let mut rest: Vec<String> = rest.iter().map(|s| s.to_string()).collect();
                if let Some(i) = rest.iter().position(|w| w == "port") {
                    rest[i + 1] = node.admin.port().to_string();
                }
                format!("{indent}server {name} {} {}", node.traffic, rest.join(" "))
            }
            _ => line.to_string(),
        };
        out.push_str(&rewritten);
        out.push('\n');
    }
    assert!(
        servers.next().is_none(),
        "more test nodes than servers in the config"
    );
    (out, names)
}

impl Haproxy {
    /// Starts HAProxy with [`CONFIG`] in front of `nodes` and waits until it listens.
    pub async fn start(nodes: &[Node]) -> Haproxy {
        let dir = tempfile::Builder::new()
            .prefix("fleet-haproxy-")
            .tempdir()
            .expect("temp dir");
        let addr: SocketAddr = format!("127.0.0.1:{}", super::rgw::free_port())
            .parse()
            .expect("an address");
        let config = std::fs::read_to_string(CONFIG).expect("read contrib config");
        let (text, names) = render(&config, addr, &dir.path().join("admin.sock"), nodes);
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, text).expect("write config");
        let log = std::fs::File::create(dir.path().join("haproxy.log")).expect("log file");
        let child = tokio::process::Command::new("setpriv")
            .args(["--pdeathsig", "KILL", "--", "haproxy", "-db", "-f"])
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start haproxy");
        let haproxy = Haproxy {
            child,
            addr,
            dir,
            names,
        };
        let began = Instant::now();
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            assert!(
                began.elapsed() < Duration::from_secs(10),
                "haproxy did not listen on {addr}: {}",
                haproxy.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        haproxy
    }

    /// `http://127.0.0.1:PORT` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// What HAProxy logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("haproxy.log")).unwrap_or_default()
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("admin.sock")
    }

    /// Each server of the backend and whether it is UP, from the stats socket.
    pub async fn servers(&self) -> Vec<(String, bool)> {
        let mut stream = tokio::net::UnixStream::connect(self.socket())
            .await
            .expect("connect to the stats socket");
        stream.write_all(b"show stat\n").await.expect("ask");
        let mut csv = String::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut csv))
            .await
            .expect("stats in time")
            .expect("read stats");
        csv.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split(',').collect::<Vec<_>>())
            .filter(|f| f.len() > 17 && f[0] == BACKEND && f[1] != "BACKEND" && f[1] != "FRONTEND")
            .map(|f| (f[1].to_string(), f[17].starts_with("UP")))
            .collect()
    }

    /// Waits until server `name` is UP (or DOWN) in HAProxy's view.
    pub async fn wait_until(&self, name: &str, up: bool, limit: Duration) {
        let began = Instant::now();
        loop {
            let servers = self.servers().await;
            if servers.iter().any(|(n, u)| n == name && *u == up) {
                return;
            }
            assert!(
                began.elapsed() < limit,
                "{name} not {} within {limit:?}: {servers:?}",
                if up { "UP" } else { "DOWN" }
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops HAProxy and waits for it to exit.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}
