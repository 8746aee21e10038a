//! The Cargo upstream and client: a sparse registry built from crates made with
//! `cargo package` (tests/fixtures/cargo_crates.sh, mk_sparse_registry.py), served by a
//! [`Site`] (ETag, Last-Modified, 304) from a private copy per test, and consumer projects run
//! by real cargo with a fresh `CARGO_HOME`, as crates-io source replacement or as a named
//! registry. `config.json` is written once the site listens, since `dl` must name it.

use super::cmd::{Cmd, Output};
use super::fixtures::{copy_tree, script, shared};
use super::site::Site;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The fixture: `DIR/crates/*.crate` and `DIR/registry/` (index files, downloads in both
/// layouts; abc 0.2.1 yanked). See tests/fixtures/cargo_crates.sh for the crates.
pub async fn fixture() -> PathBuf {
    shared("cargo", |dir| async move {
        Cmd::new(script("cargo_crates.sh"))
            .args([dir.join("build")])
            .env_remove_prefixed("CARGO_")
            .limit(Duration::from_secs(300))
            .ok()
            .await;
        std::fs::rename(dir.join("build/crates"), dir.join("crates")).expect("move crates");
        std::fs::remove_dir_all(dir.join("build")).expect("remove sources");
        Cmd::new("python3")
            .args([script("mk_sparse_registry.py")])
            .args([dir.join("crates"), dir.join("registry")])
            .args(["--yank", "abc@0.2.1"])
            .limit(Duration::from_secs(60))
            .ok()
            .await;
    })
    .await
}

/// A sparse registry served from a private copy of the fixture.
pub struct Registry {
    /// The static server (its request log tells what cargo asked for).
    pub site: Site,
    /// The registry's root directory (a copy: tests may change it).
    pub root: PathBuf,
    /// The fixture's `.crate` files.
    pub crates: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Registry {
    /// Serves a copy of the fixture on 127.0.0.1:0, with `dl` on the same host.
    pub async fn start() -> Registry {
        let fixture = fixture().await;
        let tmp = tempfile::tempdir().expect("temp dir");
        let root = tmp.path().join("registry");
        copy_tree(&fixture.join("registry"), &root).await;
        let site = Site::start(&root, "127.0.0.1").await;
        let config = serde_json::json!({
            "dl": format!("{}/api/v1/crates", site.url()),
            "api": site.url(),
        });
        std::fs::write(root.join("config.json"), config.to_string()).expect("config.json");
        Registry {
            site,
            root,
            crates: fixture.join("crates"),
            _tmp: tmp,
        }
    }

    /// `sparse+http://127.0.0.1:PORT/`, what cargo's configuration names.
    pub fn index(&self) -> String {
        format!("sparse+{}/", self.site.url())
    }

    /// Replaces the download of `name` `version` with `bytes` (its index line keeps the old cksum).
    pub fn tamper(&self, name: &str, version: &str, bytes: &[u8]) {
        let path = self
            .root
            .join(format!("api/v1/crates/{name}/{version}/download"));
        assert!(path.exists(), "{} is published", path.display());
        std::fs::write(path, bytes).expect("replace crate");
    }
}

/// `cargo` with its own CARGO_HOME and nothing from the environment that changes where it
/// builds or what it runs (`CARGO_*`, `RUSTFLAGS`, `RUSTC_WRAPPER`): the test runner's own
/// `CARGO_TARGET_DIR` must never receive a consumer's build.
pub fn cargo(home: &Path) -> Cmd {
    Cmd::new("cargo")
        .env_remove_prefixed("CARGO_")
        .env_remove_prefixed("RUSTFLAGS")
        .env_remove_prefixed("RUSTC_WRAPPER")
        .env_remove_prefixed("RUSTDOCFLAGS")
        .env("CARGO_HOME", home)
        .env("CARGO_TERM_COLOR", "never")
        .env("CARGO_NET_RETRY", "0")
        .limit(Duration::from_secs(300))
}

/// How a consumer reaches the registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setup {
    /// `[source.crates-io] replace-with`: plain dependencies come from the registry.
    SourceReplacement,
    /// `[registries.fixture]` and `registry = "fixture"` on the dependencies.
    Named,
}

/// A binary crate depending on fixture-core 0.1 (hence abc ^0.2, xy, z), UpCase 0.1 and
/// abc =0.1.0 (renamed abc_old), with its own CARGO_HOME.
pub struct Consumer {
    /// The project directory.
    pub dir: PathBuf,
    /// Its CARGO_HOME (registry cache, downloaded crates).
    pub home: PathBuf,
}

impl Consumer {
    /// A fresh consumer under `at` for the registry at `index` (`sparse+http://…/`).
    pub fn new(at: &Path, index: &str, setup: Setup) -> Consumer {
        let dir = at.join("consumer");
        let home = at.join("cargo-home");
        std::fs::create_dir_all(dir.join("src")).expect("consumer dir");
        std::fs::create_dir_all(dir.join(".cargo")).expect(".cargo dir");
        std::fs::create_dir_all(&home).expect("cargo home");
        let registry = match setup {
            Setup::SourceReplacement => "",
            Setup::Named => ", registry = \"fixture\"",
        };
        let manifest = format!(
            "[package]\nname = \"consumer\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
             [dependencies]\n\
             fixture-core = {{ version = \"0.1\"{registry} }}\n\
             UpCase = {{ version = \"0.1\"{registry} }}\n\
             abc_old = {{ package = \"abc\", version = \"=0.1.0\"{registry} }}\n"
        );
        std::fs::write(dir.join("Cargo.toml"), manifest).expect("Cargo.toml");
        std::fs::write(
            dir.join("src/main.rs"),
            "fn main() {\n    println!(\"{} | {} | {}\", fixture_core::hello(), UpCase::up(), abc_old::abc());\n}\n",
        )
        .expect("main.rs");
        let config = match setup {
            Setup::SourceReplacement => format!(
                "[source.crates-io]\nreplace-with = \"fixture\"\n\n[source.fixture]\nregistry = \"{index}\"\n"
            ),
            Setup::Named => format!("[registries.fixture]\nindex = \"{index}\"\n"),
        };
        std::fs::write(dir.join(".cargo/config.toml"), config).expect("config.toml");
        Consumer { dir, home }
    }

    /// `cargo ARGS` in the project.
    pub async fn cargo(&self, args: &[&str]) -> Output {
        cargo(&self.home)
            .current_dir(&self.dir)
            .args(args)
            .run()
            .await
    }

    /// `NAME VERSION` of every registry package in Cargo.lock.
    pub fn locked(&self) -> BTreeSet<String> {
        let lock = std::fs::read_to_string(self.dir.join("Cargo.lock")).unwrap_or_default();
        let lock: toml::Table = toml::from_str(&lock).expect("Cargo.lock is TOML");
        lock.get("package")
            .and_then(|p| p.as_array())
            .into_iter()
            .flatten()
            .filter(|p| p.get("source").is_some())
            .map(|p| {
                format!(
                    "{} {}",
                    p["name"].as_str().unwrap_or(""),
                    p["version"].as_str().unwrap_or("")
                )
            })
            .collect()
    }

    /// The `source` lines of Cargo.lock's registry packages.
    pub fn lock_sources(&self) -> BTreeSet<String> {
        let lock = std::fs::read_to_string(self.dir.join("Cargo.lock")).unwrap_or_default();
        let lock: toml::Table = toml::from_str(&lock).expect("Cargo.lock is TOML");
        lock.get("package")
            .and_then(|p| p.as_array())
            .into_iter()
            .flatten()
            .filter_map(|p| p.get("source")?.as_str().map(str::to_string))
            .collect()
    }
}

/// What the fixture consumer locks: abc 0.2.1 is yanked, so fixture-core's "0.2" takes 0.2.0.
pub fn expected_lock() -> BTreeSet<String> {
    [
        "UpCase 0.1.0",
        "abc 0.1.0",
        "abc 0.2.0",
        "fixture-core 0.1.0",
        "xy 0.1.0",
        "z 1.0.0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// What the fixture consumer prints when run.
pub const EXPECTED_OUTPUT: &str = "fixture-core 0.1.0 -> abc 0.2.0 xy=2 | UpCase 0.1.0 | abc 0.1.0";
