//! The npm upstream and clients: Verdaccio 6 (a real npm registry server, run offline with no
//! uplinks) serving packages that the fixture packs with `npm pack` and publishes once with
//! `npm publish` (and `npm deprecate`); each test gets its own copy of that registry's storage,
//! so it may tamper with a tarball. Real npm and pnpm run with fresh homes, caches and stores.
//!
//! Verdaccio is found in `VERDACCIO_DIR` (default `/opt/verdaccio`, where `.ci/run` installs it
//! with `npm install --prefix`). It writes `dist.tarball` from each request's `Host`, answers
//! the abbreviated form for `Accept: application/vnd.npm.install-v1+json` (with `Vary:
//! Accept-Encoding`, not `Accept`), sends ETags on packuments but none on tarballs, and takes
//! about 1 s to listen (120 MB RSS).

use super::cmd::{Cmd, Output};
use super::daemon::Daemon;
use super::fixtures::{script, shared};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Packages the fixture registry holds, as `npm ls`-style `NAME@VERSION`.
pub const PUBLISHED: &[&str] = &[
    "@acme/left-pad2@1.0.0",
    "acme-multi@1.0.0",
    "acme-multi@1.1.0",
    "acme-app@1.0.0",
];

/// Where Verdaccio is installed.
pub fn verdaccio_dir() -> PathBuf {
    std::env::var_os("VERDACCIO_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/verdaccio"))
}

/// The fixture: `DIR/tgz/*.tgz` (packed), `DIR/tampered/acme-multi-1.0.0.tgz`, and
/// `DIR/registry/{storage,htpasswd}`: a Verdaccio storage with every package published,
/// acme-multi 1.0.0 deprecated ("use acme-multi 1.1"), and acme-multi 1.1.0's `dist` carrying
/// `signatures` and `attestations` (Verdaccio serves them as stored; nothing checks them
/// unless `npm audit signatures` is run), so a proxy can be seen to keep them.
pub async fn fixture() -> PathBuf {
    shared("npm", |dir| async move {
        Cmd::new(script("npm_packages.sh"))
            .args([&dir])
            .limit(Duration::from_secs(120))
            .ok()
            .await;
        let registry = dir.join("registry");
        std::fs::create_dir_all(registry.join("storage")).expect("storage dir");
        let mut verdaccio = Verdaccio::start_in(&registry).await;
        let url = verdaccio.url();
        let npmrc = dir.join("publish.npmrc");
        let token = verdaccio.add_user("fixture", "fixture-pass").await;
        let nerf = url.trim_start_matches("http:");
        std::fs::write(
            &npmrc,
            format!("registry={url}/\n{nerf}/:_authToken={token}\n"),
        )
        .expect("write npmrc");
        let home = dir.join("publish-home");
        std::fs::create_dir_all(&home).expect("publish home");
        // 1.0.0 before 1.1.0, so that dist-tags.latest ends at 1.1.0.
        for tgz in [
            "acme-left-pad2-1.0.0.tgz",
            "acme-multi-1.0.0.tgz",
            "acme-multi-1.1.0.tgz",
            "acme-app-1.0.0.tgz",
        ] {
            npm(&home)
                .args(["publish".as_ref(), dir.join("tgz").join(tgz).as_os_str()])
                .args(["--registry", &format!("{url}/"), "--access", "public"])
                .args(["--no-provenance", "--userconfig"])
                .args([&npmrc])
                .ok()
                .await;
        }
        npm(&home)
            .args(["deprecate", "acme-multi@1.0.0", "use acme-multi 1.1"])
            .args(["--registry", &format!("{url}/"), "--userconfig"])
            .args([&npmrc])
            .ok()
            .await;
        verdaccio.stop().await;
        let stored = registry.join("storage/acme-multi/package.json");
        let mut doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&stored).expect("stored packument"))
                .expect("json");
        let dist = &mut doc["versions"]["1.1.0"]["dist"];
        dist["signatures"] = serde_json::json!([{
            "keyid": "SHA256:fixture-key",
            "sig": "MEUCIQDfixturesignatureAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
        }]);
        dist["attestations"] = serde_json::json!({
            "url": "https://attestations.example/-/npm/v1/attestations/acme-multi@1.1.0",
            "provenance": { "predicateType": "https://slsa.dev/provenance/v1" }
        });
        std::fs::write(&stored, serde_json::to_vec_pretty(&doc).expect("json")).expect("write");
        let _ = std::fs::remove_dir_all(&home);
    })
    .await
}

/// One request Verdaccio logged.
#[derive(Clone, Debug)]
pub struct Request {
    /// `GET`, `PUT`…
    pub method: String,
    /// Path and query as received.
    pub url: String,
    /// The client's User-Agent.
    pub user_agent: String,
}

impl Request {
    /// Whether this is [`Verdaccio::start_in`]'s own wait for the routes (a `/-/ping` with no
    /// User-Agent), which no client under test sent.
    pub fn is_readiness_probe(&self) -> bool {
        self.url == "/-/ping" && self.user_agent.is_empty()
    }
}

/// A Verdaccio serving a private copy of the fixture registry; see the module docs.
pub struct Verdaccio {
    daemon: Daemon,
    /// Its working directory: `config.yaml`, `storage/`, `htpasswd`.
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl Verdaccio {
    /// Copies the fixture's registry into a temporary directory and serves it.
    pub async fn start() -> Verdaccio {
        let fixture = fixture().await;
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().join("registry");
        super::fixtures::copy_tree(&fixture.join("registry"), &dir).await;
        let mut verdaccio = Verdaccio::start_in(&dir).await;
        verdaccio._tmp = Some(tmp);
        verdaccio
    }

    /// Serves the registry in `dir` (`storage/`, `htpasswd`), writing its `config.yaml` there.
    pub async fn start_in(dir: &Path) -> Verdaccio {
        let bin = verdaccio_dir().join("node_modules/.bin/verdaccio");
        assert!(
            bin.exists(),
            "no Verdaccio at {} (npm install --prefix /opt/verdaccio verdaccio@6, or set VERDACCIO_DIR)",
            bin.display()
        );
        let config = format!(
            "storage: {storage}\n\
             plugins: {plugins}\n\
             auth:\n  htpasswd:\n    file: {htpasswd}\n    max_users: 1000\n\
             uplinks: {{}}\n\
             packages:\n\
             \x20 '@*/*':\n    access: $all\n    publish: $authenticated\n    unpublish: $authenticated\n\
             \x20 '**':\n    access: $all\n    publish: $authenticated\n    unpublish: $authenticated\n\
             server:\n  keepAliveTimeout: 60\n\
             publish:\n  allow_offline: true\n\
             web:\n  enable: false\n\
             log: {{ type: stdout, format: json, level: http }}\n",
            storage = dir.join("storage").display(),
            plugins = dir.join("plugins").display(),
            htpasswd = dir.join("htpasswd").display(),
        );
        std::fs::create_dir_all(dir.join("plugins")).expect("plugins dir");
        std::fs::write(dir.join("config.yaml"), config).expect("write config.yaml");
        let mut command = tokio::process::Command::new(bin);
        command
            .args(["--config".as_ref(), dir.join("config.yaml").as_os_str()])
            .args(["--listen", "127.0.0.1:0"])
            .env("HOME", dir)
            .env_remove("NODE_OPTIONS");
        let daemon = Daemon::start("verdaccio", command, Duration::from_secs(60)).await;
        let verdaccio = Verdaccio {
            daemon,
            dir: dir.to_path_buf(),
            _tmp: None,
        };
        // Listening comes a moment before the routes are mounted.
        for _ in 0..200 {
            let ping = super::client::get(&format!("{}/-/ping", verdaccio.url())).await;
            if ping.status == 200 {
                return verdaccio;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "verdaccio never answered /-/ping:\n{}",
            verdaccio.daemon.log_lines().join("\n")
        );
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn url(&self) -> String {
        self.daemon.url()
    }

    /// `http://127.0.0.1:PORT/`, the form npm's `--registry` takes.
    pub fn registry(&self) -> String {
        format!("{}/", self.daemon.url())
    }

    /// Stops it (by PID); clients then see connection refused.
    pub async fn stop(&mut self) {
        self.daemon.stop().await;
    }

    /// What Verdaccio logged (JSON lines).
    pub fn log_lines(&self) -> Vec<String> {
        self.daemon.log_lines()
    }

    /// The requests it received so far: (method, url, user agent), from its log's "requested"
    /// lines. Verdaccio logs asynchronously, so this waits until the count stops changing.
    pub async fn requests(&self) -> Vec<Request> {
        let parse = |lines: Vec<String>| -> Vec<Request> {
            lines
                .iter()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter(|v| v["sub"] == "in" && v["req"].is_object())
                .map(|v| Request {
                    method: v["req"]["method"].as_str().unwrap_or_default().to_string(),
                    url: v["req"]["url"].as_str().unwrap_or_default().to_string(),
                    user_agent: v["req"]["headers"]["user-agent"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                })
                .collect()
        };
        let mut seen = parse(self.log_lines());
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = parse(self.log_lines());
            if now.len() == seen.len() {
                break;
            }
            seen = now;
        }
        seen
    }

    /// Creates a user (or logs in) through the CouchDB user API; returns its token.
    pub async fn add_user(&self, name: &str, password: &str) -> String {
        let body = serde_json::json!({ "name": name, "password": password }).to_string();
        let out = Cmd::new("curl")
            .args([
                "-sf",
                "-X",
                "PUT",
                "-H",
                "Content-Type: application/json",
                "-d",
            ])
            .args([&body])
            .args([format!("{}/-/user/org.couchdb.user:{name}", self.url())])
            .limit(Duration::from_secs(30))
            .ok()
            .await;
        let answer: serde_json::Value = serde_json::from_str(&out.stdout).expect("json answer");
        answer["token"].as_str().expect("a token").to_string()
    }

    /// Replaces a stored tarball (`storage/PACKAGE/FILE`) with `with`: the packument still lists
    /// the old integrity.
    pub fn tamper(&self, package: &str, file: &str, with: &Path) {
        let target = self.dir.join("storage").join(package).join(file);
        assert!(target.exists(), "{} is published", target.display());
        std::fs::copy(with, &target).expect("replace tarball");
    }
}

/// `npm` with only the configuration given on its command line: its own HOME, empty user and
/// global configs, no `npm_config_*` from the environment, no update check, no audit or fund,
/// no retries.
pub fn npm(home: &Path) -> Cmd {
    // npm refuses one file as both the user and the global config.
    let (user, global) = (home.join(".npmrc"), home.join(".npmrc-global"));
    std::fs::create_dir_all(home).expect("npm home");
    for empty in [&user, &global] {
        if !empty.exists() {
            std::fs::write(empty, "").expect("empty npmrc");
        }
    }
    Cmd::new("npm")
        .env_remove_prefixed("npm_config_")
        .env_remove_prefixed("NPM_CONFIG_")
        .env("HOME", home)
        .env("npm_config_userconfig", &user)
        .env("npm_config_globalconfig", &global)
        .env("npm_config_update_notifier", "false")
        .env("npm_config_audit", "false")
        .env("npm_config_fund", "false")
        // A refused tarball is retried after 10 to 60 s by default; one try tells the same.
        .env("npm_config_fetch_retries", "0")
        .limit(Duration::from_secs(180))
}

/// A directory with a private `package.json`, its own npm HOME and cache.
pub struct Project {
    /// The project directory (`package.json`, `node_modules/`).
    pub dir: PathBuf,
    /// The client's HOME.
    pub home: PathBuf,
    /// npm's `--cache` (pnpm: `--cache-dir`).
    pub cache: PathBuf,
    /// pnpm's `--store-dir`.
    pub store: PathBuf,
}

impl Project {
    /// A fresh project under `at`.
    pub fn new(at: &Path) -> Project {
        let project = Project {
            dir: at.join("app"),
            home: at.join("home"),
            cache: at.join("cache"),
            store: at.join("store"),
        };
        std::fs::create_dir_all(&project.dir).expect("project dir");
        std::fs::create_dir_all(&project.home).expect("home dir");
        std::fs::write(
            project.dir.join("package.json"),
            r#"{"name":"consumer","version":"0.0.0","private":true}"#,
        )
        .expect("package.json");
        project
    }

    /// `npm install --registry REGISTRY SPECS…` with a fresh cache (`--cache`).
    pub async fn npm_install(&self, registry: &str, specs: &[&str]) -> Output {
        npm(&self.home)
            .current_dir(&self.dir)
            .args(["install", "--registry", registry, "--cache"])
            .args([&self.cache])
            .args(["--no-audit", "--no-fund", "--loglevel", "warn"])
            .args(specs)
            .run()
            .await
    }

    /// `pnpm add SPECS… --registry REGISTRY` with a fresh store and cache.
    pub async fn pnpm_add(&self, registry: &str, specs: &[&str]) -> Output {
        Cmd::new("pnpm")
            .env_remove_prefixed("npm_config_")
            .env_remove_prefixed("NPM_CONFIG_")
            .env_remove_prefixed("PNPM_")
            .env("HOME", &self.home)
            .env("XDG_DATA_HOME", self.home.join(".local/share"))
            .env("XDG_CACHE_HOME", self.home.join(".cache"))
            .env("XDG_CONFIG_HOME", self.home.join(".config"))
            .env("XDG_STATE_HOME", self.home.join(".local/state"))
            .env("npm_config_update_notifier", "false")
            .current_dir(&self.dir)
            .args(["add"])
            .args(specs)
            .args(["--registry", registry, "--store-dir"])
            .args([&self.store])
            .args(["--cache-dir".as_ref(), self.cache.as_os_str()])
            .args(["--reporter", "append-only"])
            .limit(Duration::from_secs(180))
            .run()
            .await
    }

    /// `NAME@VERSION` of what `node_modules/NAME` holds (`require(NAME/package.json)`), and what
    /// its `index.js` returns, as node sees them.
    pub async fn resolved(&self, name: &str) -> (String, String) {
        let script = format!(
            "const p = require('{name}/package.json'); console.log(p.name + '@' + p.version); console.log(require('{name}')())"
        );
        let out = Cmd::new("node")
            .current_dir(&self.dir)
            .args(["-e", &script])
            .limit(Duration::from_secs(30))
            .ok()
            .await;
        let mut lines = out.stdout.lines();
        (
            lines.next().unwrap_or_default().to_string(),
            lines.next().unwrap_or_default().to_string(),
        )
    }
}
