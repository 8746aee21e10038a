//! PyPI upstreams that are not laid out or served like the reference, through
//! the real binary with real pip: index pages content-coded although we ask
//! for `identity` (decoded, rewritten, stored; files stay byte for byte); a
//! simple index that is not at `/simple/` (devpi's `/root/pypi/+simple/`,
//! Artifactory's `/api/pypi/NAME/simple/`); and supply-chain metadata (PEP
//! 700, 658/714, 740) passing through the rewriting, used by pip and uv.

mod support;

use std::time::Duration;
use support::app::Binary;
use support::client::{get_with, sha256};
use support::origin::{Origin, Reply};
use support::pypi_world::{install, installed, PypiWorld};
use support::site::PYPI_JSON;

const PACKAGES: &[&str] = &["six", "idna", "iniconfig"];

/// The JSON page of `project` through the proxy: every file URL leads through
/// the proxy, and the page itself is not content-coded.
async fn proxied_json(proxy: &Binary, project: &str) -> serde_json::Value {
    let page = get_with(
        &proxy.url(&format!("/pypi/simple/{project}/")),
        &[("accept", PYPI_JSON)],
    )
    .await;
    assert_eq!(page.status, 200);
    assert_eq!(page.header("content-encoding"), None);
    let json: serde_json::Value = serde_json::from_slice(&page.body).expect("a JSON page");
    for file in json["files"].as_array().expect("files") {
        let url = file["url"].as_str().unwrap();
        assert!(url.starts_with("/pypi/"), "rewritten: {url}");
    }
    json
}

#[tokio::test]
async fn a_gzipped_index_is_decoded_rewritten_and_installs_also_offline() {
    let world = PypiWorld::start(&["--relative", "iniconfig"], Some("gzip")).await;
    // The upstream codes its pages whatever we ask for.
    let direct = get_with(
        &format!("{}/simple/six/", world.index.url()),
        &[("accept-encoding", "identity")],
    )
    .await;
    assert_eq!(direct.header("content-encoding"), Some("gzip"));

    let proxy = world
        .proxy(&format!("{}/", world.index.url()), &["--index-ttl", "1"])
        .await;
    let index = proxy.url("/pypi/simple/");
    let cold = world.venv("cold").await;
    let out = install(&cold, &index, PACKAGES).await;
    assert!(out.ok(), "{}", out.text());
    let got = installed(&cold).await;
    for p in PACKAGES {
        assert!(
            got.iter().any(|i| i.starts_with(&format!("{p}=="))),
            "{got:?}"
        );
    }
    // Every download went through the cache (a page left coded would not
    // have been rewritten, and pip would have gone to the hosts itself).
    let files = world.files.log();
    assert!(!files.is_empty());
    assert!(
        files.iter().all(|l| l.ua().starts_with("package-cache/")),
        "{files:?}"
    );
    proxied_json(&proxy, "six").await;
    let html = get_with(
        &proxy.url("/pypi/simple/iniconfig/"),
        &[("accept", "text/html")],
    )
    .await;
    let html = String::from_utf8(html.body).expect("a decoded page");
    assert!(html.contains("href=\"/pypi/packages/iniconfig-"), "{html}");

    // Both upstreams down, pages past their TTL: the stored pages suffice.
    world.stop_upstreams().await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let offline = world.venv("offline").await;
    let out = install(&offline, &index, PACKAGES).await;
    assert!(out.ok(), "offline: {}", out.text());
    assert_eq!(installed(&offline).await, got);
}

#[tokio::test]
async fn brotli_and_deflate_pages_are_decoded_too() {
    for coding in ["br", "deflate"] {
        let world = PypiWorld::start(&[], Some(coding)).await;
        let proxy = world.proxy(&format!("{}/", world.index.url()), &[]).await;
        let json = proxied_json(&proxy, "idna").await;
        let html = get_with(&proxy.url("/pypi/simple/idna/"), &[("accept", "text/html")]).await;
        assert_eq!(html.header("content-encoding"), None, "{coding}");
        let html = String::from_utf8(html.body).expect("a decoded page");
        let link = format!("/pypi/files/{}/packages/", world.files.addr());
        assert!(html.contains(&link), "{coding}: {html}");
        // A file it lists comes through the cache, checked against the page.
        let file = &json["files"][0];
        let url = file["url"].as_str().unwrap().split('#').next().unwrap();
        let got = get_with(&proxy.url(url), &[]).await;
        assert_eq!(got.status, 200, "{coding}");
        assert_eq!(
            sha256(&got.body),
            file["hashes"]["sha256"].as_str().unwrap(),
            "{coding}"
        );
        proxy.kill9().await;
    }
}

#[tokio::test]
async fn coded_files_and_compressed_documents_stay_byte_for_byte() {
    let tarball = {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(&support::client::bytes_of(50_000, 97)).unwrap();
        e.finish().unwrap()
    };
    // Served with a Content-Encoding that describes the file's own format,
    // as Apache's `AddEncoding x-gzip .gz` does.
    let origin = Origin::builder()
        .route(
            "/dist/pkg-1.0.tar.gz",
            Reply::file(tarball.clone()).header("content-encoding", "gzip"),
        )
        .route(
            "/specs.4.8.gz",
            Reply::file(tarball.clone()).header("content-encoding", "x-gzip"),
        )
        .start()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let generic = format!("tarballs={}/dist/", origin.url());
    let gems = format!("rubygems={}/", origin.url());
    let app = Binary::start(&[
        "--cache",
        cache.to_str().unwrap(),
        "--mirror",
        &generic,
        "--mirror",
        &gems,
    ])
    .await;
    for path in ["/tarballs/pkg-1.0.tar.gz", "/rubygems/specs.4.8.gz"] {
        for _ in 0..2 {
            let got = get_with(&app.url(path), &[]).await;
            assert_eq!(got.status, 200, "{path}");
            assert_eq!(sha256(&got.body), sha256(&tarball), "{path}: as sent");
            assert!(got.header("content-encoding").is_some(), "{path}");
        }
    }
    app.kill9().await;
}

#[tokio::test]
async fn a_devpi_style_index_installs_through_the_cache_cold_then_offline() {
    let world = PypiWorld::start(&["--layout", "devpi"], None).await;
    // The mirror given as pip would be given it: the index's own URL.
    let mirror = format!("{}/root/pypi/+simple/", world.index.url());
    let proxy = world.proxy(&mirror, &["--index-ttl", "1"]).await;
    let index = proxy.url("/pypi/simple/");
    let cold = world.venv("cold").await;
    let out = install(&cold, &index, PACKAGES).await;
    assert!(out.ok(), "{}", out.text());
    let got = installed(&cold).await;
    assert_eq!(got.len(), PACKAGES.len(), "{got:?}");
    let log = world.index.log();
    assert!(
        log.iter().all(|l| l.ua().starts_with("package-cache/")),
        "pip only talked to the proxy: {log:?}"
    );
    assert!(
        log.iter().any(|l| l.path == "/root/pypi/+simple/six/"),
        "{log:?}"
    );
    // pip quotes the `+` of devpi's `+f` as `%2B`; the upstream decodes it.
    assert!(
        log.iter()
            .any(|l| l.path.starts_with("/root/pypi/%2Bf/") || l.path.starts_with("/root/pypi/+f/")),
        "{log:?}"
    );
    // Pages are cached documents; devpi's own spelling of a page leads to it.
    let page = get_with(&proxy.url("/pypi/simple/six/"), &[("accept", PYPI_JSON)]).await;
    assert_eq!((page.status.as_u16(), page.cache()), (200, "HIT"));
    let odd = get_with(&proxy.url("/pypi/+simple/six/"), &[]).await;
    assert_eq!(odd.status, 301);
    assert_eq!(odd.header("location"), Some("/pypi/simple/six/"));

    world.stop_upstreams().await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let offline = world.venv("offline").await;
    let out = install(&offline, &index, PACKAGES).await;
    assert!(out.ok(), "offline: {}", out.text());
    assert_eq!(installed(&offline).await, got);
}

#[tokio::test]
async fn index_paths_by_option_and_under_a_path_prefix() {
    // devpi given as a base URL plus --index-path.
    let world = PypiWorld::start(&["--layout", "devpi"], None).await;
    let cache = world.tmp.path().join("by-option");
    let mirror = format!("pypi={}/", world.index.url());
    let app = Binary::start(&[
        "--cache",
        cache.to_str().unwrap(),
        "--mirror",
        &mirror,
        "--index-path",
        "pypi=/root/pypi/+simple/",
    ])
    .await;
    let json = proxied_json(&app, "idna").await;
    let url = json["files"][0]["url"].as_str().unwrap();
    assert!(url.starts_with("/pypi/root/pypi/+f/"), "{url}");
    let file = get_with(&app.url(url.split('#').next().unwrap()), &[]).await;
    assert_eq!(
        sha256(&file.body),
        json["files"][0]["hashes"]["sha256"].as_str().unwrap()
    );
    app.kill9().await;

    // Artifactory's layout: the index under a path prefix, files on another host.
    let packages = support::fixtures::pypi().await;
    let files = support::site::Site::start(&packages, "127.0.0.2").await;
    let root = world.tmp.path().join("artifactory");
    let index_root = root.join("api/pypi/pypi-remote");
    support::fixtures::pypi_index(&index_root, &format!("{}/packages", files.url()), &[]).await;
    let site = support::site::Site::start(&root, "127.0.0.1").await;
    let cache = world.tmp.path().join("artifactory-cache");
    let mirror = format!("pypi={}/api/pypi/pypi-remote/simple/", site.url());
    let files_host = format!("pypi={}", files.url());
    let app = Binary::start(&[
        "--cache",
        cache.to_str().unwrap(),
        "--mirror",
        &mirror,
        "--files-host",
        &files_host,
    ])
    .await;
    proxied_json(&app, "six").await;
    let paths: Vec<String> = site.log().into_iter().map(|l| l.path).collect();
    assert_eq!(paths, ["/api/pypi/pypi-remote/simple/six/"]);
    app.kill9().await;
}

/// The fixture's default upload time, and the one the newest six gets.
const OLD_UPLOAD: &str = "2021-05-05T14:18:17.000000Z";
const NEW_UPLOAD: &str = "2024-12-04T10:41:03.000000Z";

#[tokio::test]
async fn supply_chain_metadata_survives_rewriting_and_clients_use_it() {
    let world = PypiWorld::start(
        &[
            "--provenance",
            "--upload-time",
            &format!("six-1.17.0-py2.py3-none-any.whl={NEW_UPLOAD}"),
        ],
        None,
    )
    .await;
    let proxy = world.proxy(&format!("{}/", world.index.url()), &[]).await;

    // JSON: upload-time (PEP 700) as upstream, core-metadata and
    // dist-info-metadata (PEP 658/714) as upstream, provenance (PEP 740)
    // leading through the cache to the upstream's document.
    let upstream: serde_json::Value = serde_json::from_slice(
        &get_with(
            &format!("{}/simple/six/", world.index.url()),
            &[("accept", PYPI_JSON)],
        )
        .await
        .body,
    )
    .unwrap();
    let json = proxied_json(&proxy, "six").await;
    assert_eq!(json["meta"], upstream["meta"]);
    let files = json["files"].as_array().unwrap();
    for (ours, theirs) in files.iter().zip(upstream["files"].as_array().unwrap()) {
        for key in ["upload-time", "size", "hashes"] {
            assert_eq!(ours[key], theirs[key], "{key}");
            assert!(!ours[key].is_null(), "{key}");
        }
        if theirs.get("core-metadata").is_some() {
            assert_eq!(ours["core-metadata"], theirs["core-metadata"]);
            assert_eq!(ours["dist-info-metadata"], theirs["dist-info-metadata"]);
        }
        let provenance = ours["provenance"].as_str().expect("provenance kept");
        assert!(
            provenance.starts_with("/pypi/integrity/six/"),
            "{provenance}"
        );
        let got = get_with(&proxy.url(provenance), &[]).await;
        assert_eq!(got.status, 200, "{provenance}");
        let doc: serde_json::Value = serde_json::from_slice(&got.body).expect("provenance JSON");
        assert_eq!(doc["version"], 1);
    }
    // HTML: the same attributes.
    let html = get_with(&proxy.url("/pypi/simple/six/"), &[("accept", "text/html")]).await;
    let html = String::from_utf8(html.body).unwrap();
    for attribute in [
        "data-core-metadata=\"sha256=",
        "data-dist-info-metadata=\"sha256=",
        "data-provenance=\"/pypi/integrity/six/",
    ] {
        assert!(html.contains(attribute), "{attribute}: {html}");
    }

    // pip reads the PEP 658 metadata, through the cache, before the wheel.
    let venv = world.venv("pip").await;
    world.files.clear_log();
    let out = install(&venv, &proxy.url("/pypi/simple/"), &["six", "idna"]).await;
    assert!(out.ok(), "{}", out.text());
    let files_log = world.files.log();
    assert!(
        files_log.iter().any(
            |l| l.path == "/packages/six-1.17.0-py2.py3-none-any.whl.metadata"
                && l.ua().starts_with("package-cache/")
        ),
        "{files_log:?}"
    );
    let stored = world.cache().join(format!(
        ".package-cache-mounts/pypi/files/{}/packages/six-1.17.0-py2.py3-none-any.whl.metadata",
        world.files.addr()
    ));
    support::app::committed(&stored).await;

    // uv reads upload-time: with --exclude-newer before the newest six's
    // upload, it picks the older one; without, the newest.
    for (exclude, want) in [
        (Some("2023-01-01T00:00:00Z"), "six==1.16.0"),
        (None, "six==1.17.0"),
    ] {
        let target = world.venv(&format!("uv-{}", exclude.is_some())).await;
        let python = target.join("bin/python");
        let uv_cache = world
            .tmp
            .path()
            .join(format!("uv-cache-{}", exclude.is_some()));
        let index = proxy.url("/pypi/simple/");
        let mut args = vec![
            "pip",
            "install",
            "--python",
            python.to_str().unwrap(),
            "--index-url",
            &index,
        ];
        if let Some(date) = exclude {
            args.extend(["--exclude-newer", date]);
        }
        args.push("six");
        let out = support::pypi_world::uv(&uv_cache, &args).await.run().await;
        assert!(out.ok(), "{}", out.text());
        assert!(
            installed(&target).await.contains(want),
            "{exclude:?}: {}",
            out.text()
        );
    }
    assert_eq!(OLD_UPLOAD, upstream["files"][0]["upload-time"]);
}
