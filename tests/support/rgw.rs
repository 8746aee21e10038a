//! `Rgw`: a real single-node Ceph RGW (S3) on 127.0.0.1 for the shared-store tests, run by
//! `tests/fixtures/rgw.sh` (mon + osd on memstore + radosgw, every file under a temp dir).
//! It takes 15-20 s to start, so a test binary starts one and its tests share it, each under
//! a prefix of its own: the one static fixture of the suite. Nothing drops a static, so the
//! script's watchdog stops the daemons (by pid) once this process is gone, however it ends.
//! A test that needs an outage gets its own [`Gateway`] (another radosgw on the same cluster)
//! and stops that. [`S3`] reads and writes the bucket behind the client's back with curl.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use package_cache::config::SharedStoreConfig;

/// The bucket every test binary's cluster has.
pub const BUCKET: &str = "fleet";
const ACCESS_KEY: &str = "test";
const SECRET_KEY: &str = "testtesttest";

/// A running cluster with its first gateway.
#[derive(Debug)]
pub struct Rgw {
    dir: PathBuf,
    port: u16,
    /// How long `start` took.
    pub started_in: Duration,
}

/// The cluster, or why it could not start (kept, so that one failed start fails every
/// test at once instead of each trying again).
static RGW: OnceLock<Result<Option<Rgw>, String>> = OnceLock::new();

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rgw.sh")
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

/// Whether Ceph's daemons are installed; without them the test is skipped (with the reason
/// printed), except under `CI`, which installs them: there it fails.
fn installed() -> bool {
    let missing: Vec<&str> = ["radosgw", "ceph-mon", "ceph-osd", "ceph", "curl"]
        .into_iter()
        .filter(|tool| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI installs radosgw ceph-mon ceph-osd: missing {missing:?}"
    );
    eprintln!("skipped: needs {missing:?} (apt-get install radosgw ceph-mon ceph-osd)");
    false
}

/// The binary's cluster, started on first use; `None` when Ceph is not installed.
pub async fn shared() -> Option<&'static Rgw> {
    let started = tokio::task::spawn_blocking(|| RGW.get_or_init(Rgw::start).as_ref())
        .await
        .expect("rgw start task");
    match started {
        Ok(rgw) => rgw.as_ref(),
        Err(why) => panic!("{why}"),
    }
}

impl Rgw {
    fn start() -> Result<Option<Rgw>, String> {
        if !installed() {
            return Ok(None);
        }
        let dir = tempfile::Builder::new()
            .prefix("fleet-rgw-")
            .tempdir()
            .expect("rgw temp dir")
            // The watchdog removes it, after the daemons are gone.
            .keep();
        let port = free_port();
        let began = Instant::now();
        let out = Command::new("bash")
            .arg(script())
            .arg("start")
            .arg(&dir)
            .args([
                port.to_string(),
                free_port().to_string(),
                std::process::id().to_string(),
                BUCKET.to_string(),
            ])
            .output()
            .expect("run rgw.sh");
        let started_in = began.elapsed();
        if !out.status.success() {
            return Err(format!(
                "rgw.sh start failed:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        eprintln!(
            "rgw: started in {started_in:.1?} on 127.0.0.1:{port} ({})",
            dir.display()
        );
        Ok(Some(Rgw {
            dir,
            port,
            started_in,
        }))
    }

    /// `http://127.0.0.1:PORT` of the first gateway.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A client configuration for `s3://fleet/<prefix>` through `endpoint`: explicit
    /// credentials, no environment, and time limits short enough for tests.
    pub fn config_for(&self, endpoint: &str, prefix: &str) -> SharedStoreConfig {
        let mut config = SharedStoreConfig::new(BUCKET, prefix);
        config.read_env = false;
        for (key, value) in [
            ("endpoint", endpoint),
            ("access_key_id", ACCESS_KEY),
            ("secret_access_key", SECRET_KEY),
            ("region", "us-east-1"),
            ("aws_allow_http", "true"),
        ] {
            config.set(key, value).expect("valid S3 option");
        }
        config.part_size = 5 << 20;
        config.timeout = Duration::from_secs(10);
        config
    }

    /// [`Rgw::config_for`] the first gateway.
    pub fn config(&self, prefix: &str) -> SharedStoreConfig {
        self.config_for(&self.endpoint(), prefix)
    }

    /// A raw S3 client (curl) on the first gateway.
    pub fn s3(&self) -> S3 {
        S3 {
            endpoint: self.endpoint(),
        }
    }

    /// Starts another radosgw on this cluster, on a port of its own.
    pub async fn gateway(&'static self) -> Gateway {
        let port = free_port();
        let gateway = Gateway {
            rgw: self,
            name: format!("p{port}"),
            port,
        };
        gateway.start().await;
        gateway
    }

    async fn run(&self, args: Vec<String>) {
        let mut command = tokio::process::Command::new("bash");
        command.arg(script()).arg(args[0].as_str()).arg(&self.dir);
        command.args(&args[1..]).kill_on_drop(true);
        let out = tokio::time::timeout(Duration::from_secs(60), command.output())
            .await
            .expect("rgw.sh within 60 s")
            .expect("run rgw.sh");
        assert!(
            out.status.success(),
            "rgw.sh {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// One more radosgw on the shared cluster (same data): stop and start it for an outage.
/// Dropped, it is killed (by its recorded pid).
#[derive(Debug)]
pub struct Gateway {
    rgw: &'static Rgw,
    name: String,
    port: u16,
}

impl Gateway {
    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stops it (TERM, then KILL) and waits until it is gone.
    pub async fn stop(&self) {
        self.rgw
            .run(vec!["gateway-stop".into(), self.name.clone()])
            .await;
    }

    /// Starts it (again) and waits until it answers HTTP.
    pub async fn start(&self) {
        let args = vec![
            "gateway-start".into(),
            self.name.clone(),
            self.port.to_string(),
        ];
        self.rgw.run(args).await;
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let pid_file = self.rgw.dir.join(format!("gw.{}.pid", self.name));
        let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
        else {
            return;
        };
        // Only the process we started: its command line names our cluster's config.
        let ours = std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmd| {
            let conf = self.rgw.dir.join("ceph.conf");
            String::from_utf8_lossy(&cmd).contains(conf.to_string_lossy().as_ref())
        });
        if let (true, Some(pid)) = (ours, rustix::process::Pid::from_raw(pid)) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
        let _ = std::fs::remove_file(pid_file);
    }
}

/// Plain S3 requests with curl (SigV4), behind the client's back.
#[derive(Clone, Debug)]
pub struct S3 {
    endpoint: String,
}

impl S3 {
    async fn curl(&self, method: &str, key: &str, extra: &[&str]) -> (u16, Vec<u8>) {
        let url = format!("{}/{BUCKET}/{key}", self.endpoint);
        let user = format!("{ACCESS_KEY}:{SECRET_KEY}");
        let mut command = tokio::process::Command::new("curl");
        command
            .args([
                "-s",
                "-m",
                "30",
                "-o",
                "-",
                "-w",
                "\n%{http_code}",
                "-X",
                method,
            ])
            .args(["--user", &user, "--aws-sigv4", "aws:amz:us-east-1:s3"])
            .args(["-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD"])
            .args(extra)
            .arg(&url)
            .kill_on_drop(true);
        let out = tokio::time::timeout(Duration::from_secs(40), command.output())
            .await
            .expect("curl within 40 s")
            .expect("run curl");
        let mut body = out.stdout;
        let split = body
            .iter()
            .rposition(|b| *b == b'\n')
            .expect("curl printed the status");
        let status = std::str::from_utf8(&body[split + 1..])
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .expect("an HTTP status");
        body.truncate(split);
        (status, body)
    }

    /// GET `key` (the full object name in the bucket): status and body.
    pub async fn get(&self, key: &str) -> (u16, Vec<u8>) {
        self.curl("GET", key, &[]).await
    }

    /// PUT `body` at `key`, overwriting.
    pub async fn put(&self, key: &str, body: &[u8]) {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), body).expect("write temp file");
        let data = format!("@{}", file.path().display());
        let (status, text) = self.curl("PUT", key, &["--data-binary", &data]).await;
        assert_eq!(status, 200, "PUT {key}: {}", String::from_utf8_lossy(&text));
    }

    /// Every object name under `prefix` (one page: tests keep fewer than 1000).
    pub async fn list(&self, prefix: &str) -> Vec<String> {
        // Encoded as SigV4 canonicalises it: curl signs the query as written.
        let query = format!("?list-type=2&prefix={}", prefix.replace('/', "%2F"));
        let (status, body) = self.curl("GET", &query, &[]).await;
        assert_eq!(status, 200, "list {prefix}");
        let text = String::from_utf8_lossy(&body);
        text.split("<Key>")
            .skip(1)
            .filter_map(|s| s.split_once("</Key>").map(|(k, _)| k.to_string()))
            .collect()
    }
}
