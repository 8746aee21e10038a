//! The Go upstream and client: a GOPROXY tree (tests/fixtures/mk_goproxy.py: module zips made
//! by the module zip rules, an upper-case module path and version) served by
//! `goproxy-fixture` (tests/fixtures/goproxy/main.go, built offline from the golang.org/x/mod
//! vendored in GOROOT), which also proxies a local checksum database under `/sumdb/NAME/`, as
//! proxy.golang.org does; and real `go` (Debian's 1.19) with a fresh GOPATH, module cache and
//! build cache, `GOSUMDB` set to that database's key, no GOPRIVATE/GONOSUMDB (which would make
//! go bypass the proxy or the database).
//!
//! Traps seen: go percent-encodes the `!` of escaped capitals in module proxy paths
//! (`/example.test/%21shout/@v/…`) but not in sumdb lookups (`/lookup/example.test/!shout@…`);
//! `go mod tidy` fetches a `.zip` before the sumdb lookup that verifies it; with a key but no
//! URL in GOSUMDB, go asks `GOPROXY/sumdb/NAME/supported` first and, on 200, reads the database
//! through the proxy only.

use super::cmd::{Cmd, Output};
use super::daemon::Daemon;
use super::fixtures::{copy_tree, script, shared};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The checksum database's name (the part of its key before `+`).
pub const SUMDB: &str = "sum.example.test";

/// The fixture: `DIR/proxy/` (the tree), `DIR/gosum.txt` (every version's go.sum lines),
/// `DIR/tampered/hello-v1.1.0.zip`, `DIR/bin/goproxy-fixture`, and the database's keys
/// `DIR/keys/sumdb.skey`, `DIR/keys/sumdb.vkey`.
pub async fn fixture() -> PathBuf {
    shared("go", |dir| async move {
        Cmd::new("python3")
            .args([script("mk_goproxy.py").as_os_str(), dir.as_os_str()])
            .limit(Duration::from_secs(60))
            .ok()
            .await;
        Cmd::new(script("goproxy/build.sh"))
            .args([dir.join("bin")])
            .env_remove_prefixed("GO")
            .limit(Duration::from_secs(600))
            .ok()
            .await;
        std::fs::create_dir_all(dir.join("keys")).expect("keys dir");
        Cmd::new(dir.join("bin/goproxy-fixture"))
            .args([
                "keygen".as_ref(),
                SUMDB.as_ref(),
                dir.join("keys").as_os_str(),
            ])
            .limit(Duration::from_secs(30))
            .ok()
            .await;
    })
    .await
}

/// A running goproxy-fixture over a private copy of the tree.
pub struct GoProxy {
    daemon: Daemon,
    /// The tree it serves (a copy: tests may change or remove files).
    pub tree: PathBuf,
    /// The fixture directory.
    pub fixture: PathBuf,
    _tmp: tempfile::TempDir,
}

impl GoProxy {
    /// Serves a copy of the fixture tree, and the database, on 127.0.0.1:0.
    pub async fn start() -> GoProxy {
        GoProxy::start_without(&[]).await
    }

    /// As [`GoProxy::start`], with the escaped module directories `missing` removed from the
    /// copy (the database still knows them).
    pub async fn start_without(missing: &[&str]) -> GoProxy {
        let fixture = fixture().await;
        let tmp = tempfile::tempdir().expect("temp dir");
        let tree = tmp.path().join("proxy");
        copy_tree(&fixture.join("proxy"), &tree).await;
        for module in missing {
            std::fs::remove_dir_all(tree.join(module)).expect("remove a module");
        }
        let mut command = tokio::process::Command::new(fixture.join("bin/goproxy-fixture"));
        command
            .arg("serve")
            .args([
                &tree,
                &fixture.join("gosum.txt"),
                &fixture.join("keys/sumdb.skey"),
            ])
            .args([SUMDB, "127.0.0.1:0"]);
        let daemon = Daemon::start("goproxy-fixture", command, Duration::from_secs(30)).await;
        GoProxy {
            daemon,
            tree,
            fixture,
            _tmp: tmp,
        }
    }

    /// `http://127.0.0.1:PORT` (no trailing slash): a GOPROXY entry.
    pub fn url(&self) -> String {
        self.daemon.url()
    }

    /// The database's verifier key: a GOSUMDB value that makes go ask GOPROXY for it.
    pub fn sumdb_key(&self) -> String {
        std::fs::read_to_string(self.fixture.join("keys/sumdb.vkey"))
            .expect("verifier key")
            .trim()
            .to_string()
    }

    /// Requests served so far, as `METHOD PATH STATUS "USER-AGENT"` (the path as sent).
    pub fn requests(&self) -> Vec<String> {
        self.daemon
            .log_lines()
            .into_iter()
            .filter(|l| l.starts_with("GET ") || l.starts_with("HEAD "))
            .collect()
    }

    /// Stops it (by PID).
    pub async fn stop(&mut self) {
        self.daemon.stop().await;
    }

    /// Replaces example.test/hello v1.1.0's zip with one of other contents.
    pub fn tamper_hello(&self) {
        std::fs::copy(
            self.fixture.join("tampered/hello-v1.1.0.zip"),
            self.tree.join("example.test/hello/@v/v1.1.0.zip"),
        )
        .expect("replace zip");
    }
}

/// The go.sum lines the fixture's modules must have (what `go` writes after verifying).
pub fn gosum(fixture: &Path) -> Vec<String> {
    std::fs::read_to_string(fixture.join("gosum.txt"))
        .expect("gosum.txt")
        .lines()
        .map(str::to_string)
        .collect()
}

/// A main module requiring example.test/world v1.0.0 (hence hello v1.1.0) and
/// example.test/Shout v0.1.0, with its own GOPATH, module cache, build cache and HOME.
pub struct Consumer {
    /// The module directory.
    pub dir: PathBuf,
    root: PathBuf,
}

/// What the consumer prints.
pub const EXPECTED_OUTPUT: &str = "HELLO, V1.1, WORLD";

impl Consumer {
    /// A fresh consumer under `at`.
    pub fn new(at: &Path) -> Consumer {
        let dir = at.join("consumer");
        std::fs::create_dir_all(&dir).expect("consumer dir");
        std::fs::write(
            dir.join("go.mod"),
            "module example.test/consumer\n\ngo 1.19\n\nrequire (\n\texample.test/Shout v0.1.0\n\texample.test/world v1.0.0\n)\n\nrequire example.test/hello v1.1.0 // indirect\n",
        )
        .expect("go.mod");
        std::fs::write(
            dir.join("main.go"),
            "package main\n\nimport (\n\t\"fmt\"\n\n\tshout \"example.test/Shout\"\n\t\"example.test/world\"\n)\n\nfunc main() { fmt.Println(shout.Shout(world.World())) }\n",
        )
        .expect("main.go");
        Consumer {
            dir,
            root: at.to_path_buf(),
        }
    }

    /// `go ARGS` in the module with `GOPROXY=goproxy` and `GOSUMDB=gosumdb`, a fresh GOPATH
    /// under this consumer, `-mod=mod`, and nothing else from the environment's `GO*`.
    pub fn go(&self, goproxy: &str, gosumdb: &str, args: &[&str]) -> Cmd {
        let gopath = self.root.join("gopath");
        Cmd::new("go")
            .env_remove_prefixed("GO")
            .env("HOME", &self.root)
            .env("GOPATH", &gopath)
            .env("GOMODCACHE", gopath.join("mod"))
            .env("GOCACHE", self.root.join("gocache"))
            .env("GOENV", "off")
            .env("GOFLAGS", "-mod=mod")
            .env("GOPROXY", goproxy)
            .env("GOSUMDB", gosumdb)
            .env("GOTOOLCHAIN", "local")
            .current_dir(&self.dir)
            .args(args)
            .limit(Duration::from_secs(300))
    }

    /// `go mod download` then `go build`, verified against `gosumdb`, and the program's output.
    pub async fn download_and_run(&self, goproxy: &str, gosumdb: &str) -> Result<String, Output> {
        for args in [
            &["mod", "download"][..],
            &["mod", "tidy"],
            &["build", "-o", "consumer", "."],
        ] {
            let out = self.go(goproxy, gosumdb, args).run().await;
            if !out.ok() {
                return Err(out);
            }
        }
        let run = Cmd::new(self.dir.join("consumer"))
            .limit(Duration::from_secs(30))
            .ok()
            .await;
        Ok(run.stdout.trim().to_string())
    }

    /// The go.sum lines go wrote, sorted.
    pub fn go_sum(&self) -> Vec<String> {
        let mut lines: Vec<String> = std::fs::read_to_string(self.dir.join("go.sum"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        lines.sort();
        lines
    }
}
