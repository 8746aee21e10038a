//! Real cargo (a fresh CARGO_HOME each time) against a sparse registry built from crates made
//! with `cargo package` — index files on every path rule (1/, 2/, 3/a/, ab/cd/, an upper-case
//! name), a dependency chain, a yanked version — as crates-io source replacement and as a named
//! registry: directly, and through package-cache: `cargo fetch` cold, then `cargo fetch` and
//! `cargo build --offline` with the registry stopped; a tampered `.crate` refused; `config.json`
//! pointing downloads at the cache; index files revalidated with cargo's own validators.

mod support;

use std::time::Duration;
use support::app::Binary;
use support::cargo_registry::{expected_lock, Consumer, Registry, Setup, EXPECTED_OUTPUT};
use support::client::{get, get_with, sha256};
use support::cmd::Output;
use support::site::Logged;
use tempfile::TempDir;

/// Index files the consumer needs, one on each path rule.
const INDEX_FILES: &[&str] = &[
    "/3/a/abc",
    "/fi/xt/fixture-core",
    "/2/xy",
    "/1/z",
    "/up/ca/upcase",
];

fn assert_ok(out: &Output, what: &str) {
    assert!(out.ok(), "{what}: {}", out.text());
}

fn paths(log: &[Logged]) -> Vec<String> {
    log.iter()
        .map(|l| format!("{} {} {}", l.method, l.path, l.status))
        .collect()
}

/// The registry and a temp dir for consumers and the cache.
struct World {
    tmp: TempDir,
    registry: Registry,
}

impl World {
    async fn start() -> World {
        World {
            tmp: tempfile::tempdir().expect("temp dir"),
            registry: Registry::start().await,
        }
    }

    fn consumer(&self, name: &str, index: &str, setup: Setup) -> Consumer {
        Consumer::new(&self.tmp.path().join(name), index, setup)
    }

    /// package-cache with the registry mounted as `crates` (the name for it).
    async fn proxy(&self, extra: &[&str]) -> Binary {
        let cache = self.tmp.path().join("cache");
        let mirror = format!("crates={}/", self.registry.site.url());
        let mut args = vec![
            "--cache",
            cache.to_str().expect("utf-8"),
            "--mirror",
            &mirror,
        ];
        args.extend_from_slice(extra);
        Binary::start(&args).await
    }
}

fn proxy_index(proxy: &Binary) -> String {
    format!("sparse+{}", proxy.url("/crates/"))
}

/// `cargo fetch`, `cargo build --offline` and the built binary's output.
async fn fetch_build_run(consumer: &Consumer) {
    assert_ok(&consumer.cargo(&["fetch"]).await, "cargo fetch");
    assert_eq!(consumer.locked(), expected_lock(), "abc 0.2.1 is yanked");
    assert_ok(
        &consumer.cargo(&["build", "--offline", "-q"]).await,
        "cargo build --offline",
    );
    let out = consumer.cargo(&["run", "--offline", "-q"]).await;
    assert_ok(&out, "cargo run --offline");
    assert_eq!(out.stdout.trim(), EXPECTED_OUTPUT);
}

#[tokio::test]
async fn cargo_fetches_and_builds_directly_with_source_replacement() {
    let world = World::start().await;
    let consumer = world.consumer("a", &world.registry.index(), Setup::SourceReplacement);
    world.registry.site.clear_log();
    fetch_build_run(&consumer).await;
    let log = world.registry.site.log();
    eprintln!("cargo fetch: {:#?}", paths(&log));
    assert_eq!(log[0].path, "/config.json");
    for file in INDEX_FILES {
        assert!(
            log.iter().any(|l| l.path == *file && l.status == 200),
            "{file}"
        );
    }
    for download in [
        "abc/0.1.0",
        "abc/0.2.0",
        "xy/0.1.0",
        "z/1.0.0",
        "fixture-core/0.1.0",
        "UpCase/0.1.0",
    ] {
        let path = format!("/api/v1/crates/{download}/download");
        assert_eq!(world.registry.site.requests_for(&path).len(), 1, "{path}");
    }
    assert!(world
        .registry
        .site
        .requests_for("/api/v1/crates/abc/0.2.1/download")
        .is_empty());
    assert!(log.iter().all(|l| l.ua().starts_with("cargo/")), "{log:?}");

    // A warm CARGO_HOME revalidates index files with the ETag it was given.
    world.registry.site.clear_log();
    assert_ok(&consumer.cargo(&["update"]).await, "cargo update");
    let abc = world.registry.site.requests_for("/3/a/abc");
    assert!(
        abc.iter()
            .any(|l| l.if_none_match.is_some() && l.status == 304),
        "{abc:?}"
    );
}

#[tokio::test]
async fn cargo_fetches_and_builds_directly_from_a_named_registry() {
    let world = World::start().await;
    let consumer = world.consumer("b", &world.registry.index(), Setup::Named);
    fetch_build_run(&consumer).await;
    // The lock names the registry itself, as the source of every package.
    let sources: Vec<String> = consumer.lock_sources().into_iter().collect();
    assert_eq!(sources, vec![world.registry.index()]);
}

#[tokio::test]
async fn cargo_directly_refuses_a_tampered_crate() {
    let world = World::start().await;
    let other = std::fs::read(world.registry.crates.join("abc-0.2.1.crate")).expect("crate");
    world.registry.tamper("abc", "0.2.0", &other);
    let consumer = world.consumer("a", &world.registry.index(), Setup::SourceReplacement);
    let out = consumer.cargo(&["fetch"]).await;
    assert!(!out.ok(), "{}", out.text());
    assert!(
        out.stderr
            .contains("failed to verify the checksum of `abc v0.2.0"),
        "{}",
        out.text()
    );
}

#[tokio::test]
async fn cargo_through_the_cache_cold_then_with_the_registry_stopped() {
    let world = World::start().await;
    let proxy = world.proxy(&["--index-ttl", "1"]).await;
    let index = proxy_index(&proxy);
    for (name, setup) in [("a", Setup::SourceReplacement), ("b", Setup::Named)] {
        let cold = world.consumer(&format!("cold-{name}"), &index, setup);
        fetch_build_run(&cold).await;
    }
    // cargo talked to the proxy only: config.json told it to download from there.
    let log = world.registry.site.log();
    assert!(
        log.iter().any(|l| l.path.ends_with("/download")),
        "{:#?}",
        paths(&log)
    );
    for l in &log {
        assert!(
            l.ua().starts_with("package-cache/"),
            "{} by {:?}",
            l.path,
            l.ua()
        );
    }
    // One upstream download per crate, whatever the number of consumers.
    assert_eq!(
        world
            .registry
            .site
            .requests_for("/api/v1/crates/abc/0.2.0/download")
            .len(),
        1
    );

    // The registry gone and the index past its TTL: fresh CARGO_HOMEs still fetch and build.
    world.registry.site.stop().await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for (name, setup) in [("a", Setup::SourceReplacement), ("b", Setup::Named)] {
        let offline = world.consumer(&format!("offline-{name}"), &index, setup);
        fetch_build_run(&offline).await;
        // And a second `cargo fetch` with its warm CARGO_HOME.
        assert_ok(&offline.cargo(&["fetch"]).await, "cargo fetch again");
    }
}

#[tokio::test]
async fn a_tampered_crate_is_refused_through_the_cache_and_not_kept() {
    let world = World::start().await;
    let proxy = world.proxy(&[]).await;
    let index = proxy_index(&proxy);
    let genuine =
        std::fs::read(world.registry.root.join("api/v1/crates/abc/0.2.0/download")).expect("crate");
    let other = std::fs::read(world.registry.crates.join("abc-0.2.1.crate")).expect("crate");
    world.registry.tamper("abc", "0.2.0", &other);

    let first = world.consumer("first", &index, Setup::SourceReplacement);
    let out = first.cargo(&["fetch"]).await;
    assert!(!out.ok(), "{}", out.text());
    eprintln!(
        "cargo (tampered .crate through the cache) saw:\n{}",
        out.stderr.trim()
    );
    // The cache's own answer for it is never a clean, complete copy of the wrong bytes.
    let got = get(&proxy.url("/crates/api/v1/crates/abc/0.2.0/download")).await;
    assert!(
        got.status != 200 || got.error.is_some(),
        "refused before commit: {} {:?} {}",
        got.status,
        got.error,
        sha256(&got.body)
    );
    let fetched = world
        .registry
        .site
        .requests_for("/api/v1/crates/abc/0.2.0/download")
        .len();

    // Nothing was kept: once the registry is repaired, the next fetch goes upstream and works.
    std::fs::write(
        world.registry.root.join("api/v1/crates/abc/0.2.0/download"),
        genuine,
    )
    .expect("restore");
    let second = world.consumer("second", &index, Setup::SourceReplacement);
    fetch_build_run(&second).await;
    assert!(
        world
            .registry
            .site
            .requests_for("/api/v1/crates/abc/0.2.0/download")
            .len()
            > fetched
    );
}

#[tokio::test]
async fn config_points_downloads_at_the_cache_and_index_files_pass_unchanged() {
    let world = World::start().await;
    let proxy = world.proxy(&[]).await;
    let config = get(&proxy.url("/crates/config.json")).await;
    assert_eq!(config.status, 200);
    let config: serde_json::Value = serde_json::from_slice(&config.body).expect("json");
    let dl = config["dl"].as_str().expect("dl");
    assert!(dl.starts_with(&proxy.url("/crates/")), "{dl}");
    // api stays the registry's: publishing and search are not the cache's to answer.
    assert_eq!(config["api"], world.registry.site.url().as_str());

    for file in INDEX_FILES {
        let direct = std::fs::read(world.registry.root.join(&file[1..])).expect("index file");
        let got = get(&proxy.url(&format!("/crates{file}"))).await;
        assert_eq!((got.status.as_u16(), &got.body), (200, &direct), "{file}");
        assert!(String::from_utf8_lossy(&got.body).contains("\"pubtime\""));
        // cargo revalidates with the validator it was given: the cache answers 304.
        let etag = got.header("etag").expect("an ETag").to_string();
        let again = get_with(
            &proxy.url(&format!("/crates{file}")),
            &[("if-none-match", &etag)],
        )
        .await;
        assert_eq!(again.status, 304, "{file}");
    }
}
