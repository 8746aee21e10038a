//! The supply-chain policy with real npm, pnpm and cargo through the cache, on the test
//! clock (`--policy-clock-file`): the newest version of a package is a day old by the
//! clock, so npm and pnpm install the older one (`dist-tags.latest` moves back) and cargo
//! locks the older crate; once the clock passes, they take the newest; a deny-listed version
//! is skipped again. The dates are the upstreams' own fields, rewritten in each test's private
//! copy: the packument's `time` (pnpm reads the abbreviated form, which has none; the cache
//! dates it by the full one) and the sparse index's `pubtime`.

mod support;

use std::path::Path;
use std::time::Duration;
use support::app::Binary;
use support::cargo_registry::{Consumer, Registry, Setup};
use support::client::get_with;
use support::npm::{Project, Verdaccio};

/// The newest version is a day old by this clock; the older ones are from 2020.
const EARLY: &str = "2026-01-11T00:00:00Z";
/// Everything is older than three days.
const LATE: &str = "2026-01-20T00:00:00Z";
/// When the newest version was published.
const YOUNG: &str = "2026-01-10T00:00:00Z";

/// Waits (bounded) until `url`'s body satisfies `done`: the policy re-reads the clock file
/// and deny lists once a second.
async fn wait_for(url: &str, headers: &[(&str, &str)], done: impl Fn(&[u8]) -> bool) {
    for _ in 0..100 {
        let got = get_with(url, headers).await;
        if got.status == 200 && done(&got.body) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{url} never became as expected");
}

/// Dates acme-multi 1.0.0 in 2020 and 1.1.0 at [`YOUNG`] in Verdaccio's stored packument
/// (Verdaccio reads it from disk on each request).
fn date_acme_multi(verdaccio: &Verdaccio) {
    let stored = verdaccio.dir.join("storage/acme-multi/package.json");
    let mut doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&stored).expect("stored packument")).expect("json");
    doc["time"]["1.0.0"] = "2020-01-01T00:00:00.000Z".into();
    doc["time"]["1.1.0"] = YOUNG.into();
    std::fs::write(&stored, serde_json::to_vec(&doc).expect("json")).expect("write packument");
}

/// What `node_modules/acme-multi` holds after an npm or pnpm install.
async fn acme_multi(project: &Project) -> String {
    project.resolved("acme-multi").await.0
}

#[tokio::test]
async fn npm_and_pnpm_install_only_what_the_policy_shows() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let verdaccio = Verdaccio::start().await;
    date_acme_multi(&verdaccio);
    let clock = tmp.path().join("clock");
    std::fs::write(&clock, EARLY).unwrap();
    let deny = tmp.path().join("deny.txt");
    std::fs::write(&deny, "").unwrap();
    let cache = tmp.path().join("cache");
    let mirror = format!("npm={}/", verdaccio.url());
    let proxy = Binary::start(&[
        "--cache",
        cache.to_str().unwrap(),
        "--mirror",
        &mirror,
        "--min-age",
        "npm=3d",
        "--policy-clock-file",
        clock.to_str().unwrap(),
        "--deny-list",
        deny.to_str().unwrap(),
    ])
    .await;
    let registry = proxy.url("/npm/");
    let packument = proxy.url("/npm/acme-multi");
    let json = [("accept", "application/json")];
    let latest_is = |want: &'static str| {
        move |body: &[u8]| {
            serde_json::from_slice::<serde_json::Value>(body)
                .map(|d| d["dist-tags"]["latest"] == want)
                .unwrap_or(false)
        }
    };

    // 1.1.0 is a day old: both clients install 1.0.0.
    let npm = Project::new(&tmp.path().join("npm-early"));
    let out = npm.npm_install(&registry, &["acme-multi"]).await;
    assert!(out.ok(), "npm install: {}", out.text());
    assert_eq!(acme_multi(&npm).await, "acme-multi@1.0.0");
    let pnpm = Project::new(&tmp.path().join("pnpm-early"));
    let out = pnpm.pnpm_add(&registry, &["acme-multi"]).await;
    assert!(out.ok(), "pnpm add: {}", out.text());
    assert_eq!(acme_multi(&pnpm).await, "acme-multi@1.0.0");
    // Asking for the young version by range fails: nothing shown matches.
    let pinned = Project::new(&tmp.path().join("npm-pinned"));
    let out = pinned.npm_install(&registry, &["acme-multi@^1.1.0"]).await;
    assert!(!out.ok(), "npm installed a held version: {}", out.text());
    assert!(out.text().contains("ETARGET"), "{}", out.text());
    let pinned = Project::new(&tmp.path().join("pnpm-pinned"));
    let out = pinned.pnpm_add(&registry, &["acme-multi@^1.1.0"]).await;
    assert!(!out.ok(), "pnpm added a held version: {}", out.text());
    assert!(
        out.text().contains("ERR_PNPM_NO_MATCHING_VERSION"),
        "{}",
        out.text()
    );

    // The clock passes three days: both take 1.1.0.
    std::fs::write(&clock, LATE).unwrap();
    wait_for(&packument, &json, latest_is("1.1.0")).await;
    let npm = Project::new(&tmp.path().join("npm-late"));
    let out = npm.npm_install(&registry, &["acme-multi"]).await;
    assert!(out.ok(), "npm install: {}", out.text());
    assert_eq!(acme_multi(&npm).await, "acme-multi@1.1.0");
    let pnpm = Project::new(&tmp.path().join("pnpm-late"));
    let out = pnpm.pnpm_add(&registry, &["acme-multi"]).await;
    assert!(out.ok(), "pnpm add: {}", out.text());
    assert_eq!(acme_multi(&pnpm).await, "acme-multi@1.1.0");

    // Deny-listed: skipped again, though old enough and cached.
    std::fs::write(&deny, "npm acme-multi 1.1.0\n").unwrap();
    wait_for(&packument, &json, latest_is("1.0.0")).await;
    let npm = Project::new(&tmp.path().join("npm-denied"));
    let out = npm.npm_install(&registry, &["acme-multi"]).await;
    assert!(out.ok(), "npm install: {}", out.text());
    assert_eq!(acme_multi(&npm).await, "acme-multi@1.0.0");
    let pnpm = Project::new(&tmp.path().join("pnpm-denied"));
    let out = pnpm.pnpm_add(&registry, &["acme-multi"]).await;
    assert!(out.ok(), "pnpm add: {}", out.text());
    assert_eq!(acme_multi(&pnpm).await, "acme-multi@1.0.0");
}

/// Dates abc 0.2.0 (the newest not yanked) at [`YOUNG`] in the registry's index file.
fn date_abc(registry: &Registry) {
    let path = registry.root.join("3/a/abc");
    let index = std::fs::read_to_string(&path).expect("abc's index file");
    let dated: Vec<String> = index
        .lines()
        .map(|line| {
            let mut entry: serde_json::Value = serde_json::from_str(line).expect("index line");
            let pubtime = if entry["vers"] == "0.2.0" {
                YOUNG
            } else {
                "2020-01-01T00:00:00Z"
            };
            entry["pubtime"] = pubtime.into();
            entry.to_string() + "\n"
        })
        .collect();
    std::fs::write(&path, dated.concat()).expect("write index file");
}

/// A consumer that takes any abc 0.x: the newest shown.
fn abc_consumer(at: &Path, index: &str) -> Consumer {
    let consumer = Consumer::new(at, index, Setup::SourceReplacement);
    std::fs::write(
        consumer.dir.join("Cargo.toml"),
        "[package]\nname = \"consumer\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
         [dependencies]\nabc = \"0\"\n",
    )
    .expect("Cargo.toml");
    std::fs::write(consumer.dir.join("src/main.rs"), "fn main() {}\n").expect("main.rs");
    consumer
}

/// The abc version that `cargo generate-lockfile` and `cargo fetch` settle on.
async fn fetched_abc(consumer: &Consumer) -> String {
    for args in [&["generate-lockfile"][..], &["fetch"][..]] {
        let out = consumer.cargo(args).await;
        assert!(out.ok(), "cargo {args:?}: {}", out.text());
    }
    let locked = consumer.locked();
    let abc: Vec<&String> = locked.iter().filter(|p| p.starts_with("abc ")).collect();
    assert_eq!(abc.len(), 1, "{locked:?}");
    abc[0].clone()
}

#[tokio::test]
async fn cargo_locks_only_what_the_policy_shows() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let registry = Registry::start().await;
    date_abc(&registry);
    let clock = tmp.path().join("clock");
    std::fs::write(&clock, EARLY).unwrap();
    let deny = tmp.path().join("deny.txt");
    std::fs::write(&deny, "").unwrap();
    let cache = tmp.path().join("cache");
    let mirror = format!("crates={}/", registry.site.url());
    let proxy = Binary::start(&[
        "--cache",
        cache.to_str().unwrap(),
        "--mirror",
        &mirror,
        "--min-age",
        "crates=3d",
        "--policy-clock-file",
        clock.to_str().unwrap(),
        "--deny-list",
        deny.to_str().unwrap(),
    ])
    .await;
    let index = format!("sparse+{}", proxy.url("/crates/"));
    let abc_file = proxy.url("/crates/3/a/abc");
    let shows_020 = |body: &[u8]| String::from_utf8_lossy(body).contains(r#""vers":"0.2.0""#);

    // 0.2.0 is a day old: cargo takes 0.1.0 (0.2.1 is yanked).
    let early = abc_consumer(&tmp.path().join("early"), &index);
    assert_eq!(fetched_abc(&early).await, "abc 0.1.0");
    // Asking for it by version fails: the index does not have it.
    let pinned = abc_consumer(&tmp.path().join("pinned"), &index);
    let manifest = std::fs::read_to_string(pinned.dir.join("Cargo.toml")).unwrap();
    std::fs::write(
        pinned.dir.join("Cargo.toml"),
        manifest.replace("abc = \"0\"", "abc = \"=0.2.0\""),
    )
    .unwrap();
    let out = pinned.cargo(&["generate-lockfile"]).await;
    assert!(!out.ok(), "cargo locked a held version: {}", out.text());
    assert!(
        out.text()
            .contains("candidate versions found which didn't match: 0.1.0"),
        "{}",
        out.text()
    );

    // The clock passes three days: 0.2.0, also for the consumer that locked 0.1.0.
    std::fs::write(&clock, LATE).unwrap();
    wait_for(&abc_file, &[], shows_020).await;
    let late = abc_consumer(&tmp.path().join("late"), &index);
    assert_eq!(fetched_abc(&late).await, "abc 0.2.0");
    // `cargo update` revalidates its cached index file: the filtered one has its own ETag.
    let out = early.cargo(&["update"]).await;
    assert!(out.ok(), "cargo update: {}", out.text());
    assert!(early.locked().contains("abc 0.2.0"), "{:?}", early.locked());

    // Deny-listed: back to 0.1.0.
    std::fs::write(&deny, "crates.io abc 0.2.0\n").unwrap();
    wait_for(&abc_file, &[], |b| !shows_020(b)).await;
    let denied = abc_consumer(&tmp.path().join("denied"), &index);
    assert_eq!(fetched_abc(&denied).await, "abc 0.1.0");
}
