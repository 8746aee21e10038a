//! Real go (Debian's 1.19; a fresh GOPATH, module cache and build cache each time) against a
//! module proxy fixture that also proxies its own checksum database (as proxy.golang.org does):
//! directly, and through package-cache: `go mod download` cold and with the upstream stopped,
//! the database verified through the cache, a tampered zip or go.mod refused when its hash is known
//! (also when it was cached by its URL before its lookup; a genuine zip so cached is checked once),
//! 404 passed so go moves to its next GOPROXY entry. Also the pure `h1:` code against go's own.
//!
//! The go profile's documents and immutable files need no rewriting; a zip is checked against
//! the `h1:` of a sumdb lookup the cache has served, before it is kept.

mod support;

use package_cache::mount::go;
use std::collections::BTreeSet;
use std::time::Duration;
use support::app::Binary;
use support::client::get;
use support::goproxy::{gosum, Consumer, GoProxy, EXPECTED_OUTPUT, SUMDB};
use tempfile::TempDir;

/// The go.sum lines of what the consumer needs.
fn consumer_sums(fixture: &std::path::Path) -> Vec<String> {
    let mut lines: Vec<String> = gosum(fixture)
        .into_iter()
        .filter(|l| {
            [
                "example.test/hello v1.1.0",
                "example.test/world v1.0.0",
                "example.test/Shout v0.1.0",
            ]
            .iter()
            .any(|m| l.starts_with(m))
        })
        .collect();
    lines.sort();
    lines
}

/// Paths of the requests a goproxy-fixture log holds.
fn paths(requests: &[String]) -> BTreeSet<String> {
    requests
        .iter()
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
        .collect()
}

struct World {
    tmp: TempDir,
    upstream: GoProxy,
}

impl World {
    async fn start() -> World {
        World {
            tmp: tempfile::tempdir().expect("temp dir"),
            upstream: GoProxy::start().await,
        }
    }

    fn consumer(&self, name: &str) -> Consumer {
        Consumer::new(&self.tmp.path().join(name))
    }

    /// package-cache with a go mount on `upstream`.
    async fn proxy(&self, upstream: &GoProxy, extra: &[&str]) -> Binary {
        let cache = self.tmp.path().join("cache");
        let mirror = format!("go={}/", upstream.url());
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

#[tokio::test]
async fn go_downloads_directly_and_verifies_through_the_proxied_sumdb() {
    let world = World::start().await;
    let consumer = world.consumer("direct");
    let key = world.upstream.sumdb_key();
    let out = consumer.download_and_run(&world.upstream.url(), &key).await;
    assert_eq!(out.map_err(|o| o.text()), Ok(EXPECTED_OUTPUT.to_string()));
    assert_eq!(consumer.go_sum(), consumer_sums(&world.upstream.fixture));

    let requests = world.upstream.requests();
    let seen = paths(&requests);
    eprintln!("go asked: {requests:#?}");
    // The database through GOPROXY: supported first, then lookups and tiles.
    for path in [
        format!("/sumdb/{SUMDB}/supported"),
        format!("/sumdb/{SUMDB}/lookup/example.test/!shout@v0.1.0"),
        "/example.test/%21shout/@v/v0.1.0.zip".to_string(),
        "/example.test/hello/@v/v1.1.0.zip".to_string(),
    ] {
        assert!(seen.contains(&path), "{path} in {seen:#?}");
    }
    assert!(seen
        .iter()
        .any(|p| p.starts_with(&format!("/sumdb/{SUMDB}/tile/"))));
    assert!(
        requests.iter().all(|l| l.contains("\"Go-http-client/")),
        "{requests:#?}"
    );

    // Built from the module cache alone.
    let out = consumer
        .go("off", &key, &["build", "-o", "again", "."])
        .run()
        .await;
    assert!(out.ok(), "{}", out.text());
}

#[tokio::test]
async fn go_directly_refuses_a_tampered_zip() {
    let world = World::start().await;
    world.upstream.tamper_hello();
    let consumer = world.consumer("tampered");
    let err = consumer
        .download_and_run(&world.upstream.url(), &world.upstream.sumdb_key())
        .await
        .expect_err("go refuses the zip");
    assert!(err.stderr.contains("SECURITY ERROR"), "{}", err.text());
}

#[tokio::test]
async fn h1_hashes_agree_with_go_and_its_checksum_database() {
    let world = World::start().await;
    let expected: BTreeSet<String> = gosum(&world.upstream.fixture).into_iter().collect();
    // Every zip and go.mod of the tree, hashed by the pure code, is what go.sum says.
    let mut hashed = BTreeSet::new();
    for line in &expected {
        let parsed = &go::parse_go_sum(line)[0];
        let path = parsed.artifact_path().expect("an escapable path");
        let file = world.upstream.tree.join(&path[1..]);
        let bytes = std::fs::read(&file).expect("a file of the tree");
        let h1 = if parsed.go_mod {
            go::h1_of_mod(&bytes)
        } else {
            go::h1_of_zip(std::io::Cursor::new(bytes)).expect("a module zip")
        };
        assert_eq!(h1, parsed.hash, "{line}");
        hashed.insert(line.clone());
    }
    assert_eq!(hashed.len(), 10);

    // go's own: an upper-case prerelease, escaped as !r!c1 and sent as %21r%21c1.
    let consumer = world.consumer("rc");
    let out = consumer
        .go(
            &world.upstream.url(),
            &world.upstream.sumdb_key(),
            &["mod", "download", "-json", "example.test/Shout@v0.2.0-RC1"],
        )
        .ok()
        .await;
    let download: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    let sum = format!(
        "example.test/Shout v0.2.0-RC1 {}",
        download["Sum"].as_str().expect("Sum")
    );
    assert!(expected.contains(&sum), "{sum}");
    let seen = paths(&world.upstream.requests());
    assert!(
        seen.contains("/example.test/%21shout/@v/v0.2.0-%21r%21c1.zip"),
        "{seen:#?}"
    );

    // A lookup answer of the real database reads as the same go.sum lines.
    let answer = get(&format!(
        "{}/sumdb/{SUMDB}/lookup/example.test/!shout@v0.1.0",
        world.upstream.url()
    ))
    .await;
    assert_eq!(answer.status, 200);
    let record = go::parse_lookup(&answer.body).expect("a lookup record");
    let lines: BTreeSet<String> = record
        .iter()
        .map(|l| {
            let version = if l.go_mod {
                format!("{}/go.mod", l.version)
            } else {
                l.version.clone()
            };
            format!("{} {version} {}", l.module, l.hash)
        })
        .collect();
    assert_eq!(lines.len(), 2);
    assert!(lines.is_subset(&expected), "{lines:?}");
}

#[tokio::test]
async fn go_through_the_cache_cold_then_with_the_upstream_stopped() {
    let mut world = World::start().await;
    let proxy = world.proxy(&world.upstream, &["--index-ttl", "1"]).await;
    let goproxy = proxy.url("/go");
    let key = world.upstream.sumdb_key();

    let cold = world.consumer("cold");
    let out = cold.download_and_run(&goproxy, &key).await;
    assert_eq!(out.map_err(|o| o.text()), Ok(EXPECTED_OUTPUT.to_string()));
    assert_eq!(cold.go_sum(), consumer_sums(&world.upstream.fixture));
    // go talked to the cache only, the database included.
    let requests = world.upstream.requests();
    assert!(
        requests.iter().any(|l| l.contains("/sumdb/")),
        "{requests:#?}"
    );
    for l in &requests {
        assert!(l.contains("\"package-cache/"), "{l}");
    }

    // The database's signed head, as a client that checks the log's growth asks for it.
    let latest = get(&proxy.url(&format!("/go/sumdb/{SUMDB}/latest"))).await;
    assert_eq!(latest.status, 200);

    // The upstream gone, documents past their TTL, a fresh module cache: still verified.
    world.upstream.stop().await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let offline = world.consumer("offline");
    let out = offline.download_and_run(&goproxy, &key).await;
    assert_eq!(out.map_err(|o| o.text()), Ok(EXPECTED_OUTPUT.to_string()));
    for doc in ["supported", "latest"] {
        let got = get(&proxy.url(&format!("/go/sumdb/{SUMDB}/{doc}"))).await;
        assert_eq!(got.status, 200, "{doc} offline");
    }
    assert_eq!(
        get(&proxy.url(&format!("/go/sumdb/{SUMDB}/latest")))
            .await
            .body,
        latest.body,
        "the stored head"
    );
}

#[tokio::test]
async fn a_tampered_zip_is_refused_when_its_hash_is_known() {
    let world = World::start().await;
    let proxy = world.proxy(&world.upstream, &[]).await;
    let goproxy = proxy.url("/go");
    // The proxy learns hello v1.1.0's h1 from a lookup it serves.
    let lookup = get(&proxy.url(&format!(
        "/go/sumdb/{SUMDB}/lookup/example.test/hello@v1.1.0"
    )))
    .await;
    assert_eq!(lookup.status, 200);
    let genuine =
        std::fs::read(world.upstream.tree.join("example.test/hello/@v/v1.1.0.zip")).expect("zip");
    world.upstream.tamper_hello();

    // A client that checks nothing itself still never gets the tampered zip.
    unchecked_go_is_refused(&world, &proxy, "zip").await;
    let download = ["mod", "download", "-json", "example.test/hello@v1.1.0"];

    // Nothing was kept: with the genuine zip back upstream it comes through, with its h1.
    std::fs::write(
        world.upstream.tree.join("example.test/hello/@v/v1.1.0.zip"),
        genuine,
    )
    .expect("restore");
    let again = world.consumer("again");
    let out = again.go(&goproxy, "off", &download).ok().await;
    let got: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    let line = format!(
        "example.test/hello v1.1.0 {}",
        got["Sum"].as_str().expect("Sum")
    );
    assert!(gosum(&world.upstream.fixture).contains(&line), "{line}");
}

#[tokio::test]
async fn a_tampered_go_mod_is_refused_when_its_hash_is_known() {
    let world = World::start().await;
    let proxy = world.proxy(&world.upstream, &[]).await;
    let goproxy = proxy.url("/go");
    let lookup = get(&proxy.url(&format!(
        "/go/sumdb/{SUMDB}/lookup/example.test/hello@v1.1.0"
    )))
    .await;
    assert_eq!(lookup.status, 200);
    let path = world.upstream.tree.join("example.test/hello/@v/v1.1.0.mod");
    let genuine = std::fs::read(&path).expect("go.mod");
    let mut tampered = genuine.clone();
    tampered.extend_from_slice(b"require evil.test/backdoor v1.0.0\n");
    std::fs::write(&path, &tampered).expect("tamper");

    // A client that checks nothing itself never gets the tampered go.mod.
    unchecked_go_is_refused(&world, &proxy, "mod").await;
    let download = ["mod", "download", "-json", "example.test/hello@v1.1.0"];
    assert!(
        proxy
            .logged_within(&["does not match the digest its index lists"])
            .await,
        "{:?}",
        proxy.log_lines()
    );

    // Nothing was kept: with the genuine go.mod back it comes through.
    std::fs::write(&path, &genuine).expect("restore");
    let got = get(&proxy.url("/go/example.test/hello/@v/v1.1.0.mod")).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body, genuine);
    let again = world.consumer("again");
    again.go(&goproxy, "off", &download).ok().await;
}

/// `go mod download` of hello v1.1.0 through `proxy` with GOSUMDB=off fails,
/// and the cache answers its tampered `.EXT` with an error, not the file.
async fn unchecked_go_is_refused(world: &World, proxy: &Binary, ext: &str) {
    let consumer = world.consumer("unchecked");
    let download = ["mod", "download", "-json", "example.test/hello@v1.1.0"];
    let out = consumer.go(&proxy.url("/go"), "off", &download).run().await;
    assert!(!out.ok(), "{}", out.text());
    eprintln!(
        "go (tampered .{ext} through the cache) saw:\n{}",
        out.text().trim()
    );
    let got = get(&proxy.url(&format!("/go/example.test/hello/@v/v1.1.0.{ext}"))).await;
    assert!(
        got.status != 200 || got.error.is_some(),
        "refused before commit: {} {:?}",
        got.status,
        got.error
    );
}

/// The `verified` digests the cache records beside it, once committed.
async fn zip_verified(cache: &std::path::Path) -> Vec<String> {
    support::verified_digests(cache, "example.test/hello/@v/v1.1.0.zip").await
}

/// hello v1.1.0's `h1:` as the checksum database lists it.
fn hello_h1(fixture: &std::path::Path) -> String {
    gosum(fixture)
        .iter()
        .find_map(|l| l.strip_prefix("example.test/hello v1.1.0 h1:"))
        .map(|h| format!("h1:{h}"))
        .expect("hello v1.1.0 in gosum.txt")
}

/// Has the proxy serve hello v1.1.0's lookup, and waits until it is stored: a zip's `h1:`
/// is known to the cache from then on.
async fn lookup_hello(proxy: &Binary) {
    let lookup = get(&proxy.url(&format!(
        "/go/sumdb/{SUMDB}/lookup/example.test/hello@v1.1.0"
    )))
    .await;
    assert_eq!(lookup.status, 200);
    assert!(
        proxy
            .logged_within(&["entry committed", "lookup/example.test/hello@v1.1.0"])
            .await,
        "{:?}",
        proxy.log_lines()
    );
}

const CHECKED: &str = "cached file checked against the digest its index lists";

#[tokio::test]
async fn a_tampered_zip_cached_by_its_url_before_its_lookup_is_dropped_when_go_asks() {
    let world = World::start().await;
    let proxy = world.proxy(&world.upstream, &[]).await;
    let goproxy = proxy.url("/go");
    let cache = world.tmp.path().join("cache");
    let path = world.upstream.tree.join("example.test/hello/@v/v1.1.0.zip");
    let genuine = std::fs::read(&path).expect("zip");
    world.upstream.tamper_hello();

    // Fetched by its URL before any lookup: nothing lists its h1 yet, so it is kept.
    let url = proxy.url("/go/example.test/hello/@v/v1.1.0.zip");
    let direct = get(&url).await;
    assert_eq!(direct.status, 200, "{:?}", direct.error);
    assert_ne!(direct.body, genuine, "the upstream serves another zip");
    assert!(zip_verified(&cache).await.is_empty());
    // Then the proxy serves the lookup that lists the zip's h1.
    lookup_hello(&proxy).await;

    // A client that checks nothing itself (no go.sum line, GOSUMDB=off) never gets it: the
    // cached copy is dropped, and the refill is refused while the upstream still serves it.
    let consumer = world.consumer("unchecked");
    let download = ["mod", "download", "-json", "example.test/hello@v1.1.0"];
    let out = consumer.go(&goproxy, "off", &download).run().await;
    eprintln!(
        "go (zip cached by URL, tampered upstream) saw:\n{}",
        out.text().trim()
    );
    assert!(!out.ok(), "{}", out.text());
    assert!(
        proxy
            .logged_within(&[
                "cached file does not match the digest its index lists",
                "v1.1.0.zip"
            ])
            .await,
        "{:?}",
        proxy.log_lines()
    );

    // The genuine zip back upstream: refilled, checked at its commit, its h1 recorded.
    std::fs::write(&path, &genuine).expect("restore");
    let again = world.consumer("again");
    let out = again.go(&goproxy, "off", &download).ok().await;
    let got: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    let h1 = hello_h1(&world.upstream.fixture);
    assert_eq!(got["Sum"].as_str(), Some(h1.as_str()));
    assert_eq!(zip_verified(&cache).await, vec![h1]);
    assert_eq!(
        proxy
            .log_lines()
            .iter()
            .filter(|l| l.contains(CHECKED))
            .count(),
        0
    );
}

#[tokio::test]
async fn a_tampered_go_mod_cached_by_its_url_before_its_lookup_is_dropped_on_its_next_hit() {
    let world = World::start().await;
    let proxy = world.proxy(&world.upstream, &[]).await;
    let path = world.upstream.tree.join("example.test/hello/@v/v1.1.0.mod");
    let genuine = std::fs::read(&path).expect("go.mod");
    let mut tampered = genuine.clone();
    tampered.extend_from_slice(b"require evil.test/backdoor v1.0.0\n");
    std::fs::write(&path, &tampered).expect("tamper");
    let url = proxy.url("/go/example.test/hello/@v/v1.1.0.mod");
    let direct = get(&url).await;
    assert_eq!(direct.body, tampered, "kept: nothing lists its hash yet");
    assert!(
        proxy
            .logged_within(&["entry committed", "v1.1.0.mod"])
            .await
    );
    lookup_hello(&proxy).await;

    // Its `/go.mod h1:` follows from the sha256 recorded with it: no read, dropped, refused.
    let got = get(&url).await;
    assert!(
        got.status != 200 || got.error.is_some(),
        "{} {:?}",
        got.status,
        got.error
    );
    assert!(
        proxy
            .logged_within(&[
                "cached file does not match the digest its index lists",
                "v1.1.0.mod"
            ])
            .await,
        "{:?}",
        proxy.log_lines()
    );
    std::fs::write(&path, &genuine).expect("restore");
    let got = get(&url).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body, genuine);
}

#[tokio::test]
async fn a_genuine_zip_cached_by_its_url_is_checked_by_its_h1_with_the_upstream_stopped() {
    let mut world = World::start().await;
    let proxy = world.proxy(&world.upstream, &[]).await;
    let goproxy = proxy.url("/go");
    let cache = world.tmp.path().join("cache");
    for file in ["info", "mod", "zip"] {
        let got = get(&proxy.url(&format!("/go/example.test/hello/@v/v1.1.0.{file}"))).await;
        assert_eq!(got.status, 200, "{file}: {:?}", got.error);
    }
    assert!(zip_verified(&cache).await.is_empty());
    lookup_hello(&proxy).await;
    world.upstream.stop().await;

    // The hit is checked against the lookup's h1 from the cached zip alone, once.
    let download = ["mod", "download", "-json", "example.test/hello@v1.1.0"];
    let h1 = hello_h1(&world.upstream.fixture);
    for name in ["first", "second"] {
        let consumer = world.consumer(name);
        let out = consumer.go(&goproxy, "off", &download).ok().await;
        let got: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
        assert_eq!(got["Sum"].as_str(), Some(h1.as_str()), "{name}");
        let checked = proxy
            .log_lines()
            .iter()
            .filter(|l| l.contains(CHECKED))
            .count();
        assert_eq!(checked, 1, "{name}: {:?}", proxy.log_lines());
    }
    assert_eq!(zip_verified(&cache).await, vec![h1]);
}

#[tokio::test]
async fn not_found_upstream_lets_go_try_its_next_proxy() {
    let world = World::start().await;
    // The cache's upstream lacks example.test/Shout; the next GOPROXY entry has it.
    let partial = GoProxy::start_without(&["example.test/!shout"]).await;
    let proxy = world.proxy(&partial, &[]).await;
    let goproxy = format!("{},{}", proxy.url("/go"), world.upstream.url());
    let missing = get(&proxy.url("/go/example.test/%21shout/@v/v0.1.0.info")).await;
    assert!(
        [404, 410].contains(&missing.status.as_u16()),
        "go moves on only on 404 or 410: {}",
        missing.status
    );
    let consumer = world.consumer("next");
    let out = consumer
        .download_and_run(&goproxy, &world.upstream.sumdb_key())
        .await;
    assert_eq!(out.map_err(|o| o.text()), Ok(EXPECTED_OUTPUT.to_string()));
    let from_next = paths(&world.upstream.requests());
    assert!(
        from_next
            .iter()
            .all(|p| p.contains("shout") || p.contains("/sumdb/")),
        "{from_next:#?}"
    );
    assert!(from_next.iter().any(|p| p.contains("shout")));
}
