//! `TestApp`: the real proxy started in-process on `127.0.0.1:0` over a real
//! temporary cache directory; and `Binary`: the real `package-cache` executable
//! as a child process, for crash, signal and CLI tests.

use package_cache::app::{self, Running};
use package_cache::config::Config;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A running in-process proxy with its own cache directory.
pub struct TestApp {
    running: Option<Running>,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Where the admin endpoints listen, when the config enables them.
    pub admin: Option<SocketAddr>,
    /// Where the build API listens, when the config enables it.
    pub api: Option<SocketAddr>,
    /// The cache root.
    pub cache: PathBuf,
    _dir: Option<TempDir>,
}

impl TestApp {
    /// Starts with a fresh temporary cache; `configure` adjusts the test config.
    pub async fn start(configure: impl FnOnce(Config) -> Config) -> TestApp {
        let dir = tempfile::tempdir().expect("temp dir");
        // Traversable (not listable), as /var/cache is: build uids and local
        // clients reach their paths inside the cache by name.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o711),
        )
        .expect("chmod temp dir");
        let cache = dir.path().join("cache");
        let mut app = TestApp::start_in(&cache, configure).await;
        app._dir = Some(dir);
        app
    }

    /// Starts on an existing (or new) cache directory that the caller owns.
    pub async fn start_in(cache: &Path, configure: impl FnOnce(Config) -> Config) -> TestApp {
        let config = configure(Config::for_test(cache));
        let running = app::start(config).await.expect("app starts");
        TestApp {
            addr: running.proxy_addr,
            admin: running.admin_addr,
            api: running.api_addr,
            running: Some(running),
            cache: cache.to_path_buf(),
            _dir: None,
        }
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// `http://ADMIN{path}`; panics unless the admin listener is on.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin.expect("admin listener on"), path)
    }

    /// `http://API{path}`; panics unless the build API is on.
    pub fn api_url(&self, path: &str) -> String {
        format!("http://{}{}", self.api.expect("build API on"), path)
    }

    /// The running app (its metrics, its store).
    pub fn running(&self) -> &Running {
        self.running.as_ref().expect("running until stopped")
    }

    /// Graceful shutdown.
    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            tokio::time::timeout(Duration::from_secs(10), running.shutdown())
                .await
                .expect("shutdown in time");
        }
    }

    /// Files left in the store's temporary directory.
    pub fn tmp_files(&self) -> Vec<PathBuf> {
        tmp_files(&self.cache)
    }
}

/// Waits (at most 5 s) until an entry's body is at `path`: a fill commits
/// (fsync, rename) just after its last byte reached the clients.
pub async fn committed(path: &Path) {
    for _ in 0..500 {
        if path.exists() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{} was not committed", path.display());
}

/// Files in `<cache>/.package-cache/tmp`.
pub fn tmp_files(cache: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(cache.join(".package-cache/tmp"))
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default()
}

/// Adds `url` as a source.
pub fn source(config: Config, url: &str) -> Config {
    config.with_source(url).expect("valid source URL")
}

/// Runs the real binary with `args` on `127.0.0.1:0` (admin off unless
/// `args` set it), expects it to refuse to start within 10 s, and returns
/// what it printed on stderr.
pub async fn refused_start(args: &[&str]) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_package-cache"));
    command
        .args(args)
        .args(["--host", "127.0.0.1", "--port", "0"]);
    if !args.iter().any(|a| a.starts_with("--admin")) {
        command.args(["--admin", "off"]);
    }
    if !args.iter().any(|a| a.starts_with("--api")) {
        command.args(["--api", "off"]);
    }
    let out = tokio::time::timeout(Duration::from_secs(10), command.kill_on_drop(true).output())
        .await
        .expect("exits at once")
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "started, but should not have: {stderr}"
    );
    stderr
}

/// The real binary, started as a child process with piped stderr.
pub struct Binary {
    /// The child.
    pub child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Where its admin endpoints listen (`None` with `--admin off`).
    pub admin: Option<SocketAddr>,
    /// Every stderr line so far (JSON log lines).
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Binary {
    /// Starts `package-cache ARGS --host 127.0.0.1 --port 0` (and, unless ARGS
    /// name `--admin`, `--admin 127.0.0.1:0`) and waits for its "listening"
    /// log lines to learn the ports.
    pub async fn start(args: &[&str]) -> Binary {
        Binary::start_on("127.0.0.1", args).await
    }

    /// As `start`, with `RUST_LOG` set to `filter` (`start` logs `package_cache=info`).
    pub async fn start_logging(filter: &str, args: &[&str]) -> Binary {
        Binary::spawn("127.0.0.1", args, filter, &[]).await
    }

    /// As `start`, listening on `host`.
    pub async fn start_on(host: &str, args: &[&str]) -> Binary {
        Binary::spawn(host, args, "package_cache=info", &[]).await
    }

    /// As `start`, with these environment variables set too.
    pub async fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Binary {
        Binary::spawn("127.0.0.1", args, "package_cache=info", env).await
    }

    async fn spawn(host: &str, args: &[&str], filter: &str, env: &[(&str, &str)]) -> Binary {
        // Never the default admin port: tests run in parallel.
        let admin = if host.contains(':') {
            format!("[{host}]:0")
        } else {
            format!("{host}:0")
        };
        let mut admin_args = if args.iter().any(|a| a.starts_with("--admin")) {
            Vec::new()
        } else {
            vec!["--admin", admin.as_str()]
        };
        // Never the default API port either.
        if !args.iter().any(|a| a.starts_with("--api")) {
            admin_args.extend(["--api", admin.as_str()]);
        }
        let mut child = Command::new(env!("CARGO_BIN_EXE_package-cache"))
            .args(args)
            .args(admin_args)
            .args(["--host", host, "--port", "0", "--log-format", "json"])
            .env("RUST_LOG", filter)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn package-cache");
        let stderr = child.stderr.take().expect("piped stderr");
        let mut lines = BufReader::new(stderr).lines();
        let addr_of = |line: &str| -> SocketAddr {
            let v: serde_json::Value = serde_json::from_str(line).expect("json log line");
            v["fields"]["addr"]
                .as_str()
                .expect("addr field")
                .parse()
                .expect("socket addr")
        };
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (addr, admin) = tokio::time::timeout(Duration::from_secs(10), async {
            // The admin line comes first (app::start logs it before the proxy's).
            let mut admin = None;
            while let Some(line) = lines.next_line().await.expect("read stderr") {
                log.lock().unwrap().push(line.clone());
                if line.contains("admin listening") {
                    admin.get_or_insert(addr_of(&line));
                }
                if line.contains("package-cache listening") {
                    return (addr_of(&line), admin);
                }
            }
            panic!("package-cache exited before listening");
        })
        .await
        .expect("package-cache starts in time");
        // Keep draining stderr so the child never blocks on a full pipe.
        let sink = log.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        Binary {
            child,
            addr,
            admin,
            log,
        }
    }

    /// `http://ADDR{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Where the TLS listener (`--tls-port`) listens, from its log line.
    pub fn tls_addr(&self) -> SocketAddr {
        self.listening("tls listening")
    }

    /// Where the build API listens, from its log line.
    pub fn api_addr(&self) -> SocketAddr {
        self.listening("build API listening")
    }

    fn listening(&self, what: &str) -> SocketAddr {
        let line = self
            .log_lines()
            .into_iter()
            .find(|l| l.contains(what))
            .unwrap_or_else(|| panic!("a {what:?} line"));
        let v: serde_json::Value = serde_json::from_str(&line).expect("json log line");
        v["fields"]["addr"]
            .as_str()
            .expect("addr field")
            .parse()
            .expect("socket addr")
    }

    /// The log lines so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Whether a log line holding every one of `words` appears within five
    /// seconds: the server may answer before the line reaches its stdout and
    /// the reader thread that collects it.
    pub async fn logged_within(&self, words: &[&str]) -> bool {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            if self
                .log_lines()
                .iter()
                .any(|l| words.iter().all(|w| l.contains(w)))
            {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL, and reap.
    pub async fn kill9(mut self) {
        self.child.kill().await.expect("kill -9");
    }

    /// Sends a signal by PID.
    pub fn signal(&self, sig: rustix::process::Signal) {
        let pid = self.child.id().expect("running child");
        let pid = rustix::process::Pid::from_raw(pid as i32).expect("positive pid");
        rustix::process::kill_process(pid, sig).expect("send signal");
    }
}
