//! Real pip (a fresh venv, `--no-cache-dir`, the machine's pip configuration neutralised)
//! against a local PEP 503/691 index whose file links point at a second host (127.0.0.2),
//! directly and through package-cache: cold, then with both upstreams stopped; yanked and
//! requires-python-excluded files skipped as upstream; a tampered file refused and not kept;
//! an HTML-only upstream; `Cache-Control: max-age=0` on a fresh page.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::app::Binary;
use support::client::get_with;
use support::cmd::{Cmd, Output};
use support::fixtures;
use support::site::{Site, PYPI_JSON};
use tempfile::TempDir;

/// The newest idna is yanked: pip must pick the older one.
const YANKED: &str = "idna-3.7-py3-none-any.whl";
/// The newest six requires a Python that does not exist: pip must pick the older one.
const TOO_NEW: &str = "six-1.17.0-py2.py3-none-any.whl";
const TOO_NEW_SPEC: &str = "six-1.17.0-py2.py3-none-any.whl=>=3.99";
/// iniconfig's links are relative (served by the index host itself).
const RELATIVE: &str = "iniconfig";
const PACKAGES: &[&str] = &["six", "idna", "iniconfig", "attrs", "packaging"];
/// pip 23's Accept header for index pages.
const PIP_ACCEPT: &str = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01";

/// A files host on 127.0.0.2 (the shared packages) and an index host on 127.0.0.1 (a
/// per-test index linking to it), in a temp dir that also holds venvs and the cache.
struct World {
    tmp: TempDir,
    files: Site,
    index: Site,
}

fn standard() -> Vec<&'static str> {
    vec![
        "--yank",
        YANKED,
        "--requires-python",
        TOO_NEW_SPEC,
        "--relative",
        RELATIVE,
    ]
}

impl World {
    async fn start(options: &[&str]) -> World {
        let packages = fixtures::pypi().await;
        let files = Site::start(&packages, "127.0.0.2").await;
        let tmp = tempfile::tempdir().expect("temp dir");
        let root = tmp.path().join("index");
        fixtures::pypi_index(&root, &format!("{}/packages", files.url()), options).await;
        let index = Site::start(&root, "127.0.0.1").await;
        World { tmp, files, index }
    }

    fn direct(&self) -> String {
        format!("{}/simple/", self.index.url())
    }

    async fn proxy(&self, extra: &[&str]) -> Binary {
        let cache = self.tmp.path().join("cache");
        let mirror = format!("pypi={}/", self.index.url());
        let files = format!("pypi={}", self.files.url());
        let mut args = vec![
            "--cache",
            cache.to_str().expect("utf-8 path"),
            "--mirror",
            &mirror,
            "--files-host",
            &files,
        ];
        args.extend_from_slice(extra);
        Binary::start(&args).await
    }

    async fn venv(&self, name: &str) -> PathBuf {
        let dir = self.tmp.path().join(name);
        Cmd::new("python3")
            .args(["-m".as_ref(), "venv".as_ref(), dir.as_os_str()])
            .limit(Duration::from_secs(120))
            .ok()
            .await;
        dir
    }

    async fn stop_upstreams(&self) {
        self.files.stop().await;
        self.index.stop().await;
    }
}

fn proxy_index(proxy: &Binary) -> String {
    proxy.url("/pypi/simple/")
}

/// `VENV/bin/python -m pip ARGS` with only the index under test: no PIP_* variables, no
/// configuration files, no cache, no version check.
fn pip(venv: &Path, args: &[&str]) -> Cmd {
    Cmd::new(venv.join("bin/python"))
        .args(["-m", "pip"])
        .args(args)
        .env_remove_prefixed("PIP_")
        // requests lets these override pip's own --cert.
        .env_remove_prefixed("REQUESTS_CA_BUNDLE")
        .env_remove_prefixed("CURL_CA_BUNDLE")
        .env("PIP_CONFIG_FILE", "/dev/null")
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
        .env("PIP_NO_INPUT", "1")
        .limit(Duration::from_secs(300))
}

async fn install(venv: &Path, index: &str, packages: &[&str]) -> Output {
    let mut args = vec!["install", "--no-cache-dir", "--index-url", index];
    args.extend_from_slice(packages);
    pip(venv, &args).run().await
}

/// What pip would install (`name==version`), resolved against `index`.
async fn resolve(venv: &Path, index: &str, packages: &[&str]) -> BTreeSet<String> {
    let mut args = vec![
        "install",
        "--quiet",
        "--dry-run",
        "--ignore-installed",
        "--report",
        "-",
        "--no-cache-dir",
        "--index-url",
        index,
    ];
    args.extend_from_slice(packages);
    let out = pip(venv, &args).ok().await;
    let report: serde_json::Value = serde_json::from_str(&out.stdout).expect("pip report JSON");
    report["install"]
        .as_array()
        .expect("install list")
        .iter()
        .map(|i| {
            let m = &i["metadata"];
            normalize(&format!(
                "{}=={}",
                m["name"].as_str().unwrap(),
                m["version"].as_str().unwrap()
            ))
        })
        .collect()
}

/// What is installed in `venv` (`pip freeze`: without pip and setuptools).
async fn installed(venv: &Path) -> BTreeSet<String> {
    let out = pip(venv, &["freeze"]).ok().await;
    out.stdout.lines().map(normalize).collect()
}

fn normalize(req: &str) -> String {
    req.trim().to_ascii_lowercase().replace('_', "-")
}

#[tokio::test]
async fn pip_installs_directly_from_the_fixture_index() {
    let world = World::start(&standard()).await;
    let venv = world.venv("direct").await;
    let expected = resolve(&venv, &world.direct(), PACKAGES).await;
    // The fixture works as intended: the yanked and the too-new file are skipped.
    assert!(
        expected.contains("six==1.16.0"),
        "{TOO_NEW} skipped: {expected:?}"
    );
    assert!(
        expected.contains("idna==3.6"),
        "{YANKED} skipped: {expected:?}"
    );
    assert_eq!(expected.len(), PACKAGES.len(), "{expected:?}");

    world.index.clear_log();
    world.files.clear_log();
    let out = install(&venv, &world.direct(), PACKAGES).await;
    assert!(out.ok(), "{}", out.text());
    assert_eq!(installed(&venv).await, expected);

    // pip 23: JSON pages, `Cache-Control: max-age=0`, PEP 658 metadata then the wheel, files
    // from the host in the link (so a proxy must rewrite links), relative links resolved.
    let page = world.index.requests_for("/simple/six/");
    assert!(!page.is_empty());
    assert_eq!(page[0].content_type.as_deref(), Some(PYPI_JSON));
    assert_eq!(page[0].cache_control.as_deref(), Some("max-age=0"));
    let files = world.files.log();
    assert!(
        files.iter().all(|l| l.ua().starts_with("pip/")),
        "{files:?}"
    );
    for path in [
        "/packages/six-1.16.0-py2.py3-none-any.whl.metadata",
        "/packages/six-1.16.0-py2.py3-none-any.whl",
    ] {
        assert_eq!(world.files.requests_for(path).len(), 1, "{path}: {files:?}");
    }
    assert!(world
        .files
        .requests_for(&format!("/packages/{TOO_NEW}"))
        .is_empty());
    assert_eq!(
        world
            .index
            .requests_for("/packages/iniconfig-2.0.0-py3-none-any.whl")
            .len(),
        1,
        "relative link resolved against the index host"
    );
}

#[tokio::test]
async fn pip_directly_refuses_a_tampered_file_and_reads_an_html_only_index() {
    let world = World::start(&["--wrong-sha256", "attrs-26.1.0-py3-none-any.whl"]).await;
    let venv = world.venv("direct").await;
    let out = install(&venv, &world.direct(), &["attrs"]).await;
    assert!(!out.ok(), "{}", out.text());
    assert!(
        out.stderr.contains("DO NOT MATCH THE HASHES"),
        "{}",
        out.text()
    );

    let html = World::start(&["--html-only"]).await;
    let expected = resolve(&venv, &html.direct(), &["six", "iniconfig"]).await;
    assert!(
        expected.contains("six==1.17.0"),
        "no requires-python here: {expected:?}"
    );
    let page = html.index.requests_for("/simple/six/");
    assert_eq!(page[0].content_type.as_deref(), Some("text/html"));
}

#[tokio::test]
async fn pip_installs_through_the_cache_cold_then_with_both_upstreams_stopped() {
    let world = World::start(&standard()).await;
    let proxy = world.proxy(&["--index-ttl", "1"]).await;
    let cold = world.venv("cold").await;
    let expected = resolve(&cold, &world.direct(), PACKAGES).await;
    world.index.clear_log();
    world.files.clear_log();

    let out = install(&cold, &proxy_index(&proxy), PACKAGES).await;
    assert!(out.ok(), "{}", out.text());
    assert_eq!(installed(&cold).await, expected, "same choices as upstream");

    // pip only talked to the proxy: every upstream request is the proxy's.
    let files = world.files.log();
    let index = world.index.log();
    assert!(!files.is_empty(), "wheels come from the files host");
    for l in files.iter().chain(&index) {
        assert!(
            l.ua().starts_with("package-cache/"),
            "{} by {:?}",
            l.path,
            l.ua()
        );
    }
    assert!(
        files.iter().any(|l| l.path.ends_with(".whl.metadata")),
        "PEP 658 metadata went through the proxy: {files:?}"
    );
    assert!(files
        .iter()
        .all(|l| !l.path.ends_with(TOO_NEW) && !l.path.ends_with(YANKED)));
    assert!(
        index
            .iter()
            .any(|l| l.path.starts_with("/packages/iniconfig-")),
        "the relative link was fetched from the index host: {index:?}"
    );

    // Both upstreams down and the pages past their TTL: stale pages and kept files suffice.
    world.stop_upstreams().await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let offline = world.venv("offline").await;
    let out = install(&offline, &proxy_index(&proxy), PACKAGES).await;
    assert!(out.ok(), "offline install: {}", out.text());
    assert_eq!(installed(&offline).await, expected);
}

#[tokio::test]
async fn a_tampered_file_is_refused_through_the_cache_and_not_kept() {
    const TAMPERED: &str = "attrs-26.1.0-py3-none-any.whl";
    let world = World::start(&["--wrong-sha256", TAMPERED]).await;
    let proxy = world.proxy(&[]).await;
    let venv = world.venv("venv").await;
    let upstream_path = format!("/packages/{TAMPERED}");
    let fetches = || world.files.requests_for(&upstream_path).len();

    let out = install(&venv, &proxy_index(&proxy), &["attrs"]).await;
    assert!(!out.ok(), "{}", out.text());
    let first = fetches();
    assert!(first >= 1);
    let out = install(&venv, &proxy_index(&proxy), &["attrs"]).await;
    assert!(!out.ok(), "second attempt: {}", out.text());
    assert!(
        fetches() > first,
        "the second attempt fetched afresh: nothing was kept"
    );
    assert!(!installed(&venv)
        .await
        .iter()
        .any(|p| p.starts_with("attrs==")));

    // The proxy's own link to the file: never a clean, complete 200, never a HIT.
    let page_url = proxy.url("/pypi/simple/attrs/");
    let page = get_with(&page_url, &[("accept", PYPI_JSON)]).await;
    assert_eq!(page.status, 200);
    let page: serde_json::Value = serde_json::from_slice(&page.body).expect("JSON page");
    let link = page["files"]
        .as_array()
        .expect("files")
        .iter()
        .find(|f| f["filename"] == TAMPERED)
        .and_then(|f| f["url"].as_str())
        .expect("the file is listed");
    let file_url = url::Url::parse(&page_url)
        .and_then(|base| base.join(link))
        .expect("a URL");
    let authority = format!(
        "{}:{}",
        file_url.host_str().unwrap_or(""),
        file_url.port().unwrap_or(80)
    );
    assert_eq!(
        authority,
        proxy.addr.to_string(),
        "link rewritten to the proxy"
    );
    let true_bytes = std::fs::read(world.files.root().join("packages").join(TAMPERED)).unwrap();
    for _ in 0..2 {
        let before = fetches();
        let got = get_with(file_url.as_str(), &[]).await;
        assert_ne!(got.cache(), "HIT");
        let clean_full = got.status == 200 && got.error.is_none() && got.body == true_bytes;
        assert!(
            !clean_full,
            "a mismatching file must not look like a good download"
        );
        assert_eq!(fetches(), before + 1, "not served from the cache");
    }
    assert!(
        proxy.log_lines().iter().any(|l| l.contains("sha256")),
        "the mismatch is logged"
    );
}

#[tokio::test]
async fn an_html_only_upstream_works_through_the_cache() {
    // PEP 503 HTML only, with the yanked file and the HTML-escaped
    // data-requires-python (`&gt;=3.99`): pip must read them from the
    // rewritten page and skip them as it does upstream.
    let mut options = standard();
    options.push("--html-only");
    let world = World::start(&options).await;
    let proxy = world.proxy(&[]).await;
    let venv = world.venv("venv").await;
    let expected = resolve(&venv, &world.direct(), &["six", "iniconfig", "idna"]).await;
    world.files.clear_log();
    let out = install(&venv, &proxy_index(&proxy), &["six", "iniconfig", "idna"]).await;
    assert!(out.ok(), "{}", out.text());
    assert_eq!(installed(&venv).await, expected);
    assert!(
        expected
            .iter()
            .all(|r| !r.starts_with("six==1.17") && !r.starts_with("idna==3.7")),
        "{expected:?}"
    );
    let files = world.files.log();
    assert!(!files.is_empty());
    assert!(
        files
            .iter()
            .all(|l| !l.path.ends_with(TOO_NEW) && !l.path.ends_with(YANKED)),
        "{files:?}"
    );
    let page = world.index.requests_for("/simple/six/");
    assert!(
        page.iter()
            .all(|l| l.content_type.as_deref() == Some("text/html")),
        "{page:?}"
    );
    assert!(
        files.iter().all(|l| l.ua().starts_with("package-cache/")),
        "{files:?}"
    );
}

#[tokio::test]
async fn pages_keep_their_attributes_and_max_age_zero_does_not_reach_a_fresh_upstream_page() {
    let world = World::start(&standard()).await;
    let proxy = world.proxy(&[]).await;
    let six = proxy.url("/pypi/simple/six/");
    let pip_headers = [("accept", PIP_ACCEPT), ("cache-control", "max-age=0")];

    let first = get_with(&six, &pip_headers).await;
    assert_eq!(first.status, 200);
    let upstream = world.index.requests_for("/simple/six/").len();
    assert_eq!(upstream, 1);
    let again = get_with(&six, &pip_headers).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body, first.body);
    assert_eq!(
        world.index.requests_for("/simple/six/").len(),
        upstream,
        "a fresh page is not refetched because pip sends max-age=0"
    );

    // Both representations keep PEP 592 / 503 attributes; no link leads to the files host.
    let json = String::from_utf8_lossy(&first.body).into_owned();
    let html = get_with(&six, &[("accept", "text/html")]).await;
    assert_eq!(html.status, 200);
    let html = String::from_utf8_lossy(&html.body).into_owned();
    assert!(
        html.contains("data-requires-python=\"&gt;=3.99\""),
        "{html}"
    );
    assert!(json.contains("\"requires-python\""), "{json}");
    for body in [&json, &html] {
        assert!(
            !body.contains(&world.files.url()),
            "links rewritten: {body}"
        );
        assert!(body.contains("sha256"), "hashes kept: {body}");
    }
    let idna = get_with(&proxy.url("/pypi/simple/idna/"), &[("accept", "text/html")]).await;
    assert!(String::from_utf8_lossy(&idna.body).contains("data-yanked"));

    // Other spellings redirect to the proxy's normalised URL, never upstream.
    let odd = get_with(&proxy.url("/pypi/simple/Six/"), &[]).await;
    assert!(odd.status.is_redirection(), "{}", odd.status);
    let location = odd.header("location").unwrap_or_default();
    assert!(location.ends_with("/pypi/simple/six/"), "{location}");
    assert!(
        !location.contains(&world.index.addr().to_string()),
        "{location}"
    );
}

#[tokio::test]
async fn pip_installs_over_the_tls_listener_verifying_its_certificate() {
    let world = World::start(&standard()).await;
    let identity = support::tls::TlsIdentity::generate();
    let (tls_args, ca) = identity.write_listener_files(world.tmp.path(), "pip");
    let tls_args: Vec<&str> = tls_args.iter().map(String::as_str).collect();
    let proxy = world.proxy(&tls_args).await;
    let port = proxy.tls_addr().port();
    // `localhost` names the certificate; no --trusted-host, the CA verifies it.
    let index = format!("https://localhost:{port}/pypi/simple/");
    let venv = world.venv("tls").await;
    let expected = resolve(&venv, &world.direct(), &["six", "idna"]).await;
    let mut args = vec![
        "install",
        "--no-cache-dir",
        "--cert",
        ca.to_str().unwrap(),
        "--index-url",
        &index,
    ];
    args.extend_from_slice(&["six", "idna"]);
    let out = pip(&venv, &args).run().await;
    assert!(out.ok(), "{}", out.text());
    assert_eq!(installed(&venv).await, expected);
    // Without the CA, pip refuses the certificate.
    let other = world.venv("untrusted").await;
    let out = pip(
        &other,
        &["install", "--no-cache-dir", "--index-url", &index, "six"],
    )
    .run()
    .await;
    assert!(!out.ok(), "{}", out.text());
}
