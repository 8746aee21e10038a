//! Real npm 11 and pnpm 10 (fresh homes, caches and stores) against Verdaccio 6 run offline
//! with published fixture packages — a scoped package, a package with dependencies, two
//! versions of one package chosen by ranges — directly, and through package-cache: cold, then
//! with Verdaccio stopped; a tampered tarball refused, also when it was cached by its URL
//! before its packument (a genuine one so cached is checked once, offline); packuments keeping `time`,
//! `deprecated`, signatures and attestations; one entry per representation; 16 clients on a
//! 20 MB packument.
//!
//! Through the cache, `dist.tarball` names `--public-url` (here the listening address), the
//! tarballs are checked against `dist.integrity` before they are kept, and the 20 MB
//! packument is fetched once, rewritten once and served from one copy.

mod support;

use base64::Engine;
use sha2::{Digest, Sha512};
use std::path::PathBuf;
use std::time::Duration;
use support::app::Binary;
use support::client::{get, get_with};
use support::cmd::Output;
use support::npm::{Project, Verdaccio};
use tempfile::TempDir;

/// What the npm and pnpm installs ask for: acme-app (which needs @acme/left-pad2 ^1.0.0 and
/// acme-multi ^1.1.0) and acme-multi ~1.0.0, so both versions of acme-multi are installed.
const SPECS: &[&str] = &["acme-app", "acme-multi@~1.0.0"];
const ABBREVIATED: &str = "application/vnd.npm.install-v1+json";

/// Verdaccio with a private copy of the fixture registry, and a temp dir for projects.
struct World {
    tmp: TempDir,
    fixture: PathBuf,
    verdaccio: Verdaccio,
}

impl World {
    async fn start() -> World {
        World {
            tmp: tempfile::tempdir().expect("temp dir"),
            fixture: support::npm::fixture().await,
            verdaccio: Verdaccio::start().await,
        }
    }

    fn project(&self, name: &str) -> Project {
        Project::new(&self.tmp.path().join(name))
    }

    /// package-cache with an npm mount on Verdaccio.
    async fn proxy(&self, extra: &[&str]) -> Binary {
        let cache = self.tmp.path().join("cache");
        let mirror = format!("npm={}/", self.verdaccio.url());
        let mut args = vec![
            "--cache",
            cache.to_str().expect("utf-8 path"),
            "--mirror",
            &mirror,
        ];
        args.extend_from_slice(extra);
        Binary::start(&args).await
    }

    /// Another acme-multi 1.0.0, for [`Verdaccio::tamper`].
    fn tampered(&self) -> PathBuf {
        self.fixture.join("tampered/acme-multi-1.0.0.tgz")
    }
}

fn proxy_registry(proxy: &Binary) -> String {
    proxy.url("/npm/")
}

/// What a finished install left, as node resolves it: the top-level packages, and acme-app's
/// own dependencies from its directory (npm nests or hoists them, pnpm links them beside it).
async fn installed(project: &Project) -> Vec<(String, String)> {
    let app = Project {
        dir: std::fs::canonicalize(project.dir.join("node_modules/acme-app"))
            .expect("acme-app installed"),
        home: project.home.clone(),
        cache: project.cache.clone(),
        store: project.store.clone(),
    };
    vec![
        project.resolved("acme-app").await,
        project.resolved("acme-multi").await,
        app.resolved("@acme/left-pad2").await,
        app.resolved("acme-multi").await,
    ]
}

fn expected_install() -> Vec<(String, String)> {
    [
        ("acme-app@1.0.0", "acme-app@1.0.0"),
        ("acme-multi@1.0.0", "acme-multi@1.0.0"),
        ("@acme/left-pad2@1.0.0", "@acme/left-pad2@1.0.0"),
        ("acme-multi@1.1.0", "acme-multi@1.1.0"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect()
}

fn assert_ok(out: &Output, what: &str) {
    assert!(out.ok(), "{what}: {}", out.text());
}

/// The `resolved` URLs of a package-lock.json.
fn lock_urls(project: &Project) -> Vec<String> {
    let lock: serde_json::Value = serde_json::from_slice(
        &std::fs::read(project.dir.join("package-lock.json")).expect("package-lock.json"),
    )
    .expect("json lock");
    lock["packages"]
        .as_object()
        .expect("packages")
        .values()
        .filter_map(|p| p["resolved"].as_str().map(str::to_string))
        .collect()
}

fn sri(data: &[u8]) -> String {
    format!(
        "sha512-{}",
        base64::engine::general_purpose::STANDARD.encode(Sha512::digest(data))
    )
}

#[tokio::test]
async fn npm_and_pnpm_install_directly_from_verdaccio() {
    let world = World::start().await;
    let registry = world.verdaccio.registry();

    let project = world.project("npm");
    assert_ok(&project.npm_install(&registry, SPECS).await, "npm install");
    assert_eq!(installed(&project).await, expected_install());
    let urls = lock_urls(&project);
    assert_eq!(urls.len(), 4, "{urls:?}");
    assert!(urls.iter().all(|u| u.starts_with(&registry)), "{urls:?}");
    // npm's installer asks for full packuments, with %2f in scoped names.
    let requests = world.verdaccio.requests().await;
    assert!(
        requests.iter().any(|r| r.url == "/@acme%2fleft-pad2"),
        "{requests:?}"
    );

    let project = world.project("pnpm");
    assert_ok(&project.pnpm_add(&registry, SPECS).await, "pnpm add");
    assert_eq!(installed(&project).await, expected_install());
    let lock = std::fs::read_to_string(project.dir.join("pnpm-lock.yaml")).expect("pnpm lock");
    assert!(
        lock.contains("acme-multi@1.0.0") && lock.contains("acme-multi@1.1.0"),
        "{lock}"
    );
}

#[tokio::test]
async fn verdaccio_serves_both_representations_with_what_clients_check() {
    let world = World::start().await;
    let url = format!("{}/acme-multi", world.verdaccio.url());
    let full = get(&url).await;
    assert_eq!(full.status, 200);
    let full: serde_json::Value = serde_json::from_slice(&full.body).expect("json");
    let abbreviated = get_with(&url, &[("accept", ABBREVIATED)]).await;
    assert_eq!(
        abbreviated.header("content-type"),
        Some("application/vnd.npm.install-v1+json; charset=utf-8")
    );
    let abbreviated: serde_json::Value = serde_json::from_slice(&abbreviated.body).expect("json");

    // The full document has the manifests whole; the abbreviated one only what installers
    // read (Verdaccio 6 keeps `time` in it too, where the npm registry leaves it out).
    assert!(full["time"]["1.1.0"].is_string(), "{full}");
    assert!(full["versions"]["1.1.0"]["_id"].is_string(), "{full}");
    assert!(
        abbreviated["versions"]["1.1.0"].get("_id").is_none(),
        "{abbreviated}"
    );
    assert!(abbreviated["modified"].is_string(), "{abbreviated}");
    for doc in [&full, &abbreviated] {
        assert_eq!(doc["dist-tags"]["latest"], "1.1.0");
        assert_eq!(doc["versions"]["1.0.0"]["deprecated"], "use acme-multi 1.1");
        let dist = &doc["versions"]["1.1.0"]["dist"];
        assert_eq!(dist["signatures"][0]["keyid"], "SHA256:fixture-key");
        assert!(dist["attestations"]["provenance"].is_object(), "{dist}");
        // dist.tarball is on the registry (Verdaccio builds it from the Host it was asked on),
        // and the integrity is the sha512 of what it serves.
        let tarball = dist["tarball"].as_str().expect("tarball");
        assert!(tarball.starts_with(&world.verdaccio.url()), "{tarball}");
        let body = get(tarball).await;
        assert_eq!(body.status, 200);
        assert_eq!(dist["integrity"], sri(&body.body).as_str());
    }
    // One packument whatever the spelling of the scoped name.
    for path in [
        "/@acme%2fleft-pad2",
        "/@acme%2Fleft-pad2",
        "/@acme/left-pad2",
    ] {
        let got = get(&format!("{}{path}", world.verdaccio.url())).await;
        assert_eq!(got.status, 200, "{path}");
    }
    assert_eq!(
        get(&format!("{}/no-such-package", world.verdaccio.url()))
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn npm_directly_refuses_a_tampered_tarball() {
    let world = World::start().await;
    world
        .verdaccio
        .tamper("acme-multi", "acme-multi-1.0.0.tgz", &world.tampered());
    let project = world.project("npm");
    let out = project
        .npm_install(&world.verdaccio.registry(), &["acme-multi@1.0.0"])
        .await;
    assert!(!out.ok(), "{}", out.text());
    assert!(out.stderr.contains("EINTEGRITY"), "{}", out.text());
}

#[tokio::test]
async fn npm_installs_through_the_cache_cold_then_with_verdaccio_stopped() {
    let mut world = World::start().await;
    let proxy = world.proxy(&["--index-ttl", "1"]).await;
    let registry = proxy_registry(&proxy);

    let cold = world.project("cold");
    assert_ok(
        &cold.npm_install(&registry, SPECS).await,
        "cold npm install",
    );
    assert_eq!(installed(&cold).await, expected_install());
    // Every tarball came through the cache, never from Verdaccio's own URLs.
    let urls = lock_urls(&cold);
    assert!(urls.iter().all(|u| u.starts_with(&registry)), "{urls:?}");
    let requests = world.verdaccio.requests().await;
    assert!(!requests.is_empty());
    for r in requests.iter().filter(|r| !r.is_readiness_probe()) {
        assert!(r.user_agent.starts_with("package-cache/"), "{r:?}");
    }

    // Verdaccio gone, the packuments past their TTL, a fresh client cache: all from the cache.
    world.verdaccio.stop().await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let offline = world.project("offline");
    assert_ok(
        &offline.npm_install(&registry, SPECS).await,
        "offline npm install",
    );
    assert_eq!(installed(&offline).await, expected_install());
}

#[tokio::test]
async fn pnpm_installs_through_the_cache_cold_then_with_verdaccio_stopped() {
    let mut world = World::start().await;
    let proxy = world.proxy(&["--index-ttl", "1"]).await;
    let registry = proxy_registry(&proxy);

    let cold = world.project("cold");
    assert_ok(&cold.pnpm_add(&registry, SPECS).await, "cold pnpm add");
    assert_eq!(installed(&cold).await, expected_install());
    let lock = std::fs::read_to_string(cold.dir.join("pnpm-lock.yaml")).expect("pnpm lock");
    assert!(!lock.contains(&world.verdaccio.url()), "{lock}");
    // pnpm asks for abbreviated packuments; the proxy asked Verdaccio for them once each.
    let requests = world.verdaccio.requests().await;
    for r in requests.iter().filter(|r| !r.is_readiness_probe()) {
        assert!(r.user_agent.starts_with("package-cache/"), "{r:?}");
    }

    world.verdaccio.stop().await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let offline = world.project("offline");
    assert_ok(
        &offline.pnpm_add(&registry, SPECS).await,
        "offline pnpm add",
    );
    assert_eq!(installed(&offline).await, expected_install());
}

#[tokio::test]
async fn a_tampered_tarball_is_refused_through_the_cache_and_not_kept() {
    let world = World::start().await;
    let proxy = world.proxy(&[]).await;
    let registry = proxy_registry(&proxy);
    let genuine = std::fs::read(
        world
            .verdaccio
            .dir
            .join("storage/acme-multi/acme-multi-1.0.0.tgz"),
    )
    .expect("published tarball");
    world
        .verdaccio
        .tamper("acme-multi", "acme-multi-1.0.0.tgz", &world.tampered());

    // The client never gets the tampered bytes as a good file: npm fails the install.
    let first = world.project("first");
    let out = first.npm_install(&registry, &["acme-multi@1.0.0"]).await;
    assert!(!out.ok(), "{}", out.text());
    eprintln!(
        "npm (tampered tarball through the cache) saw:\n{}",
        out.stderr.trim()
    );
    let packument = get(&proxy.url("/npm/acme-multi")).await;
    let doc: serde_json::Value = serde_json::from_slice(&packument.body).expect("json");
    let tarball = doc["versions"]["1.0.0"]["dist"]["tarball"]
        .as_str()
        .expect("tarball")
        .to_string();
    assert!(tarball.starts_with(&registry), "{tarball}");
    let direct = get(&tarball).await;
    assert!(
        direct.status != 200 || direct.error.is_some(),
        "the cache never serves a tarball that fails its integrity: {} {:?}",
        direct.status,
        direct.error
    );
    assert!(
        proxy
            .log_lines()
            .iter()
            .any(|l| l.contains("acme-multi-1.0.0.tgz")
                && (l.contains("\"ERROR\"") || l.contains("\"WARN\""))),
        "the refusal is logged"
    );

    // Nothing was kept: with the genuine tarball back upstream, the same install works.
    std::fs::write(
        world
            .verdaccio
            .dir
            .join("storage/acme-multi/acme-multi-1.0.0.tgz"),
        &genuine,
    )
    .expect("restore");
    let second = world.project("second");
    assert_ok(
        &second.npm_install(&registry, &["acme-multi@1.0.0"]).await,
        "install after the upstream is repaired",
    );
    assert_eq!(
        second.resolved("acme-multi").await,
        (
            "acme-multi@1.0.0".to_string(),
            "acme-multi@1.0.0".to_string()
        )
    );
}

/// Log lines of `proxy` that contain `words`.
fn logged(proxy: &Binary, words: &str) -> usize {
    proxy
        .log_lines()
        .iter()
        .filter(|l| l.contains(words))
        .count()
}

/// The `verified` digests the cache records beside it, once committed.
async fn tarball_verified(world: &World) -> Vec<String> {
    support::verified_digests(&world.tmp.path().join("cache"), "acme-multi-1.0.0.tgz").await
}

fn sha512_text(data: &[u8]) -> String {
    format!("sha512:{}", hex::encode(Sha512::digest(data)))
}

const CHECKED: &str = "cached file checked against the digest its index lists";

#[tokio::test]
async fn a_tarball_cached_by_its_url_before_the_packument_is_checked_when_npm_asks() {
    let world = World::start().await;
    let proxy = world.proxy(&[]).await;
    let registry = proxy_registry(&proxy);
    let stored = world
        .verdaccio
        .dir
        .join("storage/acme-multi/acme-multi-1.0.0.tgz");
    let genuine = std::fs::read(&stored).expect("published tarball");
    world
        .verdaccio
        .tamper("acme-multi", "acme-multi-1.0.0.tgz", &world.tampered());

    // Fetched by its URL before any packument: nothing lists a digest yet, so it is kept.
    let url = proxy.url("/npm/acme-multi/-/acme-multi-1.0.0.tgz");
    let direct = get(&url).await;
    assert_eq!(direct.status, 200, "{:?}", direct.error);
    assert_ne!(direct.body, genuine, "the upstream serves other bytes");
    assert!(tarball_verified(&world).await.is_empty());

    // npm asks once the packument lists the tarball's sha512: the cached copy does not have
    // it, so it is dropped and fetched again, and the upstream still serves the other bytes.
    // npm sees the cache refuse them (a 502), never a tarball that fails its integrity.
    let first = world.project("first");
    let out = first.npm_install(&registry, &["acme-multi@1.0.0"]).await;
    eprintln!(
        "npm (tarball cached by URL, tampered upstream) saw:\n{}",
        out.stderr.trim()
    );
    assert!(!out.ok(), "{}", out.text());
    assert!(!out.stderr.contains("EINTEGRITY"), "{}", out.text());
    assert!(out.stderr.contains("502"), "{}", out.text());
    assert!(
        proxy
            .logged_within(&[
                "cached file does not match the digest its index lists",
                "acme-multi-1.0.0.tgz"
            ])
            .await,
        "{:?}",
        proxy.log_lines()
    );
    for line in proxy
        .log_lines()
        .iter()
        .filter(|l| l.contains("cached file does not match"))
    {
        eprintln!("the cache logged: {line}");
    }
    let again = get(&url).await;
    assert!(
        again.status != 200 || again.error.is_some(),
        "the tampered copy is gone: {} {:?}",
        again.status,
        again.error
    );

    // The genuine tarball back upstream: fetched, verified at its commit, recorded.
    std::fs::write(&stored, &genuine).expect("restore");
    let second = world.project("second");
    assert_ok(
        &second.npm_install(&registry, &["acme-multi@1.0.0"]).await,
        "install after the upstream is repaired",
    );
    assert_eq!(lock_urls(&second), vec![url.clone()]);
    assert_eq!(tarball_verified(&world).await, vec![sha512_text(&genuine)]);
    // A later install is a hit that reads nothing to check it: the record says it matches.
    let fetched = world.verdaccio.requests().await.len();
    let third = world.project("third");
    assert_ok(
        &third.npm_install(&registry, &["acme-multi@1.0.0"]).await,
        "install from the cache",
    );
    let tarball_requests = world.verdaccio.requests().await[fetched..]
        .iter()
        .filter(|r| r.url.ends_with(".tgz"))
        .count();
    assert_eq!(tarball_requests, 0, "a hit");
    assert_eq!(logged(&proxy, CHECKED), 0, "{:?}", proxy.log_lines());
}

#[tokio::test]
async fn a_genuine_tarball_cached_by_its_url_is_checked_locally_with_verdaccio_stopped() {
    let mut world = World::start().await;
    let proxy = world.proxy(&[]).await;
    let registry = proxy_registry(&proxy);
    let url = proxy.url("/npm/acme-multi/-/acme-multi-1.0.0.tgz");
    let genuine = get(&url).await;
    assert_eq!(genuine.status, 200, "{:?}", genuine.error);
    // The packument in both representations npm may ask for, then Verdaccio gone.
    for accept in ["application/json", ABBREVIATED] {
        let doc = get_with(&proxy.url("/npm/acme-multi"), &[("accept", accept)]).await;
        assert_eq!(doc.status, 200, "{accept}");
    }
    world.verdaccio.stop().await;
    assert!(tarball_verified(&world).await.is_empty());

    // The hit is checked against the packument's sha512 from the cached body alone.
    let first = world.project("first");
    assert_ok(
        &first.npm_install(&registry, &["acme-multi@1.0.0"]).await,
        "offline install of a tarball cached before its packument",
    );
    assert_eq!(logged(&proxy, CHECKED), 1, "{:?}", proxy.log_lines());
    assert_eq!(
        tarball_verified(&world).await,
        vec![sha512_text(&genuine.body)]
    );
    let second = world.project("second");
    assert_ok(
        &second.npm_install(&registry, &["acme-multi@1.0.0"]).await,
        "second offline install",
    );
    assert_eq!(
        logged(&proxy, CHECKED),
        1,
        "checked once: {:?}",
        proxy.log_lines()
    );
    for line in proxy.log_lines().iter().filter(|l| l.contains(CHECKED)) {
        eprintln!("the cache logged: {line}");
    }
}

#[tokio::test]
async fn packuments_keep_their_meaning_and_are_cached_per_representation() {
    let world = World::start().await;
    let proxy = world.proxy(&[]).await;
    let upstream = format!("{}/acme-multi", world.verdaccio.url());
    let proxied = proxy.url("/npm/acme-multi");
    let registry = proxy_registry(&proxy);
    for accept in ["application/json", ABBREVIATED] {
        let direct = get_with(&upstream, &[("accept", accept)]).await;
        let first = get_with(&proxied, &[("accept", accept)]).await;
        let again = get_with(&proxied, &[("accept", accept)]).await;
        assert_eq!(
            (first.status.as_u16(), first.cache()),
            (200, "MISS"),
            "{accept}"
        );
        assert_eq!(
            (again.cache(), &again.body),
            ("HIT", &first.body),
            "{accept}"
        );
        assert_eq!(first.header("vary"), Some("Accept"));
        // The same document but for dist.tarball, which leads to the cache.
        let mut expected: serde_json::Value = serde_json::from_slice(&direct.body).expect("json");
        let got: serde_json::Value = serde_json::from_slice(&first.body).expect("json");
        for (version, manifest) in expected["versions"].as_object_mut().expect("versions") {
            let tarball = &mut manifest["dist"]["tarball"];
            let path = tarball
                .as_str()
                .and_then(|t| t.strip_prefix(&world.verdaccio.url()))
                .expect("a tarball on Verdaccio")
                .to_string();
            *tarball = format!("{}{}", registry.trim_end_matches('/'), path).into();
            assert!(got["versions"][version]["dist"]["integrity"].is_string());
        }
        assert_eq!(got, expected, "{accept}");
    }
    // One upstream request per representation, whatever the client's exact Accept.
    let pnpm = "application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8, */*";
    assert_eq!(get_with(&proxied, &[("accept", pnpm)]).await.cache(), "HIT");
    let asked = world
        .verdaccio
        .requests()
        .await
        .into_iter()
        .filter(|r| r.url == "/acme-multi" && r.user_agent.starts_with("package-cache/"))
        .count();
    assert_eq!(asked, 2);
}

/// A packument of about 20 MB: `versions` many manifests with long fields.
fn big_packument(url: &str) -> Vec<u8> {
    let mut versions = Vec::new();
    let mut n = 0;
    let mut size = 0;
    while size < 20 << 20 {
        let v = format!("{}.{}.{}", n / 400, (n / 20) % 20, n % 20);
        let manifest = serde_json::json!({
            "name": "big-package",
            "version": v,
            "description": "x".repeat(1000),
            "dist": {
                "tarball": format!("{url}/big-package/-/big-package-{v}.tgz"),
                "integrity": format!("sha512-{}==", "A".repeat(86)),
                "shasum": "0".repeat(40),
            }
        });
        size += manifest.to_string().len();
        versions.push((v, manifest));
        n += 1;
    }
    let versions: serde_json::Map<String, serde_json::Value> = versions.into_iter().collect();
    serde_json::to_vec(&serde_json::json!({
        "name": "big-package",
        "dist-tags": { "latest": "0.0.0" },
        "versions": versions,
    }))
    .expect("json")
}

/// Peak resident memory of a process (VmHWM), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    kb * 1024
}

#[tokio::test]
async fn sixteen_clients_fetch_a_20_mb_packument_without_sixteen_copies() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let root = tmp.path().join("registry");
    std::fs::create_dir_all(&root).expect("dir");
    let site = support::site::Site::start(&root, "127.0.0.1").await;
    let body = big_packument(&site.url());
    std::fs::write(root.join("big-package"), &body).expect("write packument");
    let cache = tmp.path().join("cache");
    let mirror = format!("npm={}/", site.url());
    let proxy = Binary::start(&[
        "--cache",
        cache.to_str().expect("utf-8"),
        "--mirror",
        &mirror,
    ])
    .await;
    let pid = proxy.child.id().expect("running");
    let before = peak_rss(pid);

    let url = proxy.url("/npm/big-package");
    let clients: Vec<_> = (0..16)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { get(&url).await })
        })
        .collect();
    for client in clients {
        let got = tokio::time::timeout(Duration::from_secs(120), client)
            .await
            .expect("in time")
            .expect("client task");
        assert_eq!(got.status, 200);
        assert!(got.body.len() >= body.len(), "{}", got.body.len());
    }
    assert_eq!(
        site.requests_for("/big-package").len(),
        1,
        "one upstream fetch"
    );
    let grown = peak_rss(pid).saturating_sub(before);
    eprintln!(
        "peak RSS grew {:.1} MB while 16 clients fetched a {:.1} MB packument",
        grown as f64 / (1 << 20) as f64,
        body.len() as f64 / (1 << 20) as f64
    );
    assert!(
        grown < 5 * body.len() as u64,
        "peak RSS grew {grown} bytes for a {}-byte packument",
        body.len()
    );
}
