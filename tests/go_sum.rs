//! `--go-sum NAME=FILE` with real go (Debian's 1.19, `GOSUMDB=off`: a client that checks
//! nothing itself, as with private modules under GOPRIVATE/GONOSUMDB) against the module
//! proxy fixture: a tampered zip or go.mod refused from the go.sum alone, with no lookup ever
//! made; a SIGHUP picking up a rewritten file (and a broken one keeping the hashes); a cached
//! lookup still protecting a zip after a restart with no new sumdb request; a go.sum that
//! disagrees with a cached lookup refusing the file without fetching it.

mod support;

use package_cache::mount::go;
use std::path::{Path, PathBuf};
use support::app::{committed, Binary};
use support::client::get;
use support::cmd::Output;
use support::goproxy::{gosum, Consumer, GoProxy, SUMDB};
use tempfile::TempDir;

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

    fn cache(&self) -> PathBuf {
        self.tmp.path().join("cache")
    }

    /// package-cache with a go mount on the upstream, `extra` args and `env`.
    async fn proxy(&self, extra: &[&str], env: &[(&str, &str)]) -> Binary {
        let cache = self.cache();
        let mirror = format!("go={}/", self.upstream.url());
        let mut args = vec![
            "--cache",
            cache.to_str().expect("utf-8"),
            "--mirror",
            &mirror,
        ];
        args.extend_from_slice(extra);
        Binary::start_with_env(&args, env).await
    }

    /// Writes `lines` as the go.sum at `name`.
    fn go_sum(&self, name: &str, lines: &[String]) -> PathBuf {
        let path = self.tmp.path().join(name);
        std::fs::write(&path, lines.join("\n") + "\n").expect("write go.sum");
        path
    }

    /// `go mod download -json MODULE@VERSION` through `proxy` by a fresh consumer that
    /// checks nothing itself (`GOSUMDB=off`).
    async fn download(&self, proxy: &Binary, consumer: &str, module: &str) -> Output {
        Consumer::new(&self.tmp.path().join(consumer))
            .go(
                &proxy.url("/go"),
                "off",
                &["mod", "download", "-json", module],
            )
            .run()
            .await
    }

    /// Appends a requirement to world v1.0.0's go.mod upstream.
    fn tamper_world_mod(&self) {
        let path = self.upstream.tree.join("example.test/world/@v/v1.0.0.mod");
        let mut tampered = std::fs::read(&path).expect("go.mod");
        tampered.extend_from_slice(b"require evil.test/backdoor v1.0.0\n");
        std::fs::write(&path, tampered).expect("tamper");
    }

    /// Requests the upstream got for the checksum database.
    fn sumdb_requests(&self) -> usize {
        let asked = self.upstream.requests();
        asked.iter().filter(|l| l.contains("/sumdb/")).count()
    }
}

/// The go.sum line go writes for what `go mod download -json` printed.
fn sum_line(out: &Output, module: &str, version: &str) -> String {
    let got: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    format!("{module} {version} {}", got["Sum"].as_str().expect("Sum"))
}

/// Asserts go failed, and shows what it printed.
fn refused(out: &Output, what: &str) {
    assert!(!out.ok(), "{what}: {}", out.text());
    eprintln!("go ({what}) saw:\n{}", out.text().trim());
}

/// The lines of the fixture's go.sum for `prefix` (`example.test/hello v1.1.0`).
fn lines_of(fixture: &Path, prefix: &str) -> Vec<String> {
    gosum(fixture)
        .into_iter()
        .filter(|l| l.starts_with(&format!("{prefix} ")))
        .collect()
}

#[tokio::test]
async fn a_go_sum_refuses_a_tampered_zip_and_go_mod_with_no_lookup_made() {
    let world = World::start().await;
    let fixture = world.upstream.fixture.clone();
    let file = world.go_sum("go.sum", &gosum(&fixture));
    let go_sum = format!("go={}", file.display());
    let proxy = world.proxy(&["--go-sum", &go_sum], &[]).await;
    assert!(
        proxy
            .logged_within(&["go.sum read", "\"hashes\":10", "\"mount\":\"go\""])
            .await,
        "{:#?}",
        proxy.log_lines()
    );

    // The genuine module comes through, with the hash go.sum lists.
    let out = world
        .download(&proxy, "genuine", "example.test/Shout@v0.1.0")
        .await;
    assert!(out.ok(), "{}", out.text());
    let line = sum_line(&out, "example.test/Shout", "v0.1.0");
    assert!(gosum(&fixture).contains(&line), "{line}");

    world.upstream.tamper_hello();
    let out = world
        .download(&proxy, "zip", "example.test/hello@v1.1.0")
        .await;
    refused(&out, "tampered zip, --go-sum");
    assert!(
        proxy
            .logged_within(&[
                "does not match the digest its index lists",
                "hello/@v/v1.1.0.zip"
            ])
            .await,
        "{:#?}",
        proxy.log_lines()
    );

    world.tamper_world_mod();
    let out = world
        .download(&proxy, "mod", "example.test/world@v1.0.0")
        .await;
    refused(&out, "tampered go.mod, --go-sum");
    let got = get(&proxy.url("/go/example.test/world/@v/v1.0.0.mod")).await;
    assert!(
        got.status != 200 || got.error.is_some(),
        "refused before commit: {} {:?}",
        got.status,
        got.error
    );
    assert_eq!(
        world.sumdb_requests(),
        0,
        "{:#?}",
        world.upstream.requests()
    );
}

#[tokio::test]
async fn sighup_rereads_the_go_sum_and_a_broken_one_keeps_the_hashes() {
    let world = World::start().await;
    let fixture = world.upstream.fixture.clone();
    // hello's zip listed with Shout's hash: the genuine zip is refused.
    let shout_zip = &lines_of(&fixture, "example.test/Shout v0.1.0")
        .into_iter()
        .find(|l| !l.contains("/go.mod"))
        .expect("Shout's zip line");
    let wrong_hash = shout_zip.split_whitespace().nth(2).expect("a hash");
    let mut lines: Vec<String> = gosum(&fixture)
        .into_iter()
        .filter(|l| !l.starts_with("example.test/hello v1.1.0 "))
        .collect();
    lines.push(format!("example.test/hello v1.1.0 {wrong_hash}"));
    lines.push("not a go.sum line".into());
    let file = world.go_sum("go.sum", &lines);
    let go_sum = format!("go={}", file.display());
    // From the environment, as an init script would set it.
    let proxy = world.proxy(&[], &[("PC_GO_SUM", &go_sum)]).await;
    assert!(
        proxy
            .logged_within(&["go.sum read", "\"malformed\":1"])
            .await,
        "{:#?}",
        proxy.log_lines()
    );
    let out = world
        .download(&proxy, "before", "example.test/hello@v1.1.0")
        .await;
    refused(&out, "genuine zip, a wrong go.sum line");

    // The right lines, then SIGHUP: the genuine zip comes through.
    world.go_sum("go.sum", &gosum(&fixture));
    proxy.signal(rustix::process::Signal::HUP);
    assert!(
        proxy
            .logged_within(&["go.sum reloaded", "\"hashes\":10"])
            .await,
        "{:#?}",
        proxy.log_lines()
    );
    let out = world
        .download(&proxy, "after", "example.test/hello@v1.1.0")
        .await;
    assert!(out.ok(), "{}", out.text());
    let line = sum_line(&out, "example.test/hello", "v1.1.0");
    assert!(gosum(&fixture).contains(&line), "{line}");

    // A broken file on SIGHUP keeps the hashes in use.
    std::fs::write(&file, b"\xff\xfe not text").expect("break go.sum");
    proxy.signal(rustix::process::Signal::HUP);
    assert!(
        proxy
            .logged_within(&["go.sum not reloaded", "not UTF-8"])
            .await,
        "{:#?}",
        proxy.log_lines()
    );
    world.tamper_world_mod();
    let out = world
        .download(&proxy, "broken", "example.test/world@v1.0.0")
        .await;
    refused(
        &out,
        "tampered go.mod, the go.sum kept after a broken reload",
    );
    proxy.kill9().await;
}

#[tokio::test]
async fn a_cached_lookup_protects_a_zip_after_a_restart() {
    let world = World::start().await;
    let first = world.proxy(&[], &[]).await;
    let lookup = format!("/sumdb/{SUMDB}/lookup/example.test/hello@v1.1.0");
    let got = get(&first.url(&format!("/go{lookup}"))).await;
    assert_eq!(got.status, 200);
    committed(
        &world
            .cache()
            .join(format!(".package-cache-mounts/go{lookup}")),
    )
    .await;
    first.kill9().await;

    let asked = world.sumdb_requests();
    let second = world.proxy(&[], &[]).await;
    world.upstream.tamper_hello();
    let out = world
        .download(&second, "restarted", "example.test/hello@v1.1.0")
        .await;
    refused(&out, "tampered zip, a lookup cached before a restart");
    assert!(
        second
            .logged_within(&[
                "does not match the digest its index lists",
                "hello/@v/v1.1.0.zip"
            ])
            .await,
        "{:#?}",
        second.log_lines()
    );
    assert_eq!(world.sumdb_requests(), asked, "no new sumdb request");
    second.kill9().await;
}

#[tokio::test]
async fn a_go_sum_that_disagrees_with_a_cached_lookup_refuses_the_file() {
    let world = World::start().await;
    let fixture = world.upstream.fixture.clone();
    // The go.sum lists the tampered zip's own hash; the database the genuine one.
    let tampered =
        std::fs::File::open(fixture.join("tampered/hello-v1.1.0.zip")).expect("tampered zip");
    let tampered_h1 = go::h1_of_zip(tampered).expect("a module zip");
    let genuine = lines_of(&fixture, "example.test/hello v1.1.0")
        .into_iter()
        .find(|l| !l.contains("/go.mod"))
        .expect("hello's zip line");
    let genuine_h1 = genuine
        .split_whitespace()
        .nth(2)
        .expect("a hash")
        .to_string();
    let file = world.go_sum(
        "go.sum",
        &[format!("example.test/hello v1.1.0 {tampered_h1}")],
    );
    let go_sum = format!("go={}", file.display());
    let proxy = world.proxy(&["--go-sum", &go_sum], &[]).await;
    let lookup = get(&proxy.url(&format!(
        "/go/sumdb/{SUMDB}/lookup/example.test/hello@v1.1.0"
    )))
    .await;
    assert_eq!(lookup.status, 200);
    world.upstream.tamper_hello();

    let out = world
        .download(&proxy, "disagree", "example.test/hello@v1.1.0")
        .await;
    refused(&out, "go.sum and lookup disagree");
    let zip = get(&proxy.url("/go/example.test/hello/@v/v1.1.0.zip")).await;
    assert_eq!(zip.status, 502);
    let body = String::from_utf8_lossy(&zip.body);
    assert!(body.contains("disagree"), "{body}");
    assert!(
        proxy
            .logged_within(&["disagree", &tampered_h1.to_string(), &genuine_h1])
            .await,
        "both hashes logged: {:#?}",
        proxy.log_lines()
    );
    let fetched = world.upstream.requests();
    assert!(
        !fetched.iter().any(|l| l.contains("hello/@v/v1.1.0.zip")),
        "never fetched: {fetched:#?}"
    );
    proxy.kill9().await;
}
