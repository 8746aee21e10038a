//! The supply-chain policy on a PyPI mount, with real pip and uv: the newest
//! six (uploaded "two days ago" by the test clock) is hidden under
//! `--min-age 7d` and both resolve to the older one, then to the newest once
//! the clock passes; an idna that an OSV record (dropped into the deny-list
//! directory) names is skipped and its cached file no longer served; a direct
//! download of a too-young file is refused with 403 saying when it becomes
//! available; an exemption file re-read on SIGHUP shows and serves it; and a
//! page with nothing held back is byte for byte what a proxy without a
//! policy serves.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;
use support::app::Binary;
use support::client::get_with;
use support::pypi_world::{pip, uv, PypiWorld};
use support::site::PYPI_JSON;

const NEW_SIX: &str = "six-1.17.0-py2.py3-none-any.whl";
/// six 1.17.0's upload; every other file is from 2021.
const UPLOADED: &str = "2026-01-10T00:00:00Z";
/// Two days after the upload: too young for 7 days.
const EARLY: &str = "2026-01-12T00:00:00Z";
/// Past the seven days.
const LATE: &str = "2026-01-18T00:00:00Z";

async fn world() -> PypiWorld {
    let upload = format!("{NEW_SIX}={UPLOADED}");
    PypiWorld::start(&["--upload-time", &upload], None).await
}

/// What pip would install for `packages` (`name==version`), resolved against `index`.
async fn pip_resolves(venv: &Path, index: &str, packages: &[&str]) -> BTreeSet<String> {
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
    let out = pip(venv, &args).run().await;
    assert!(out.ok(), "pip: {}", out.text());
    let report: serde_json::Value = serde_json::from_str(&out.stdout).expect("pip report JSON");
    report["install"]
        .as_array()
        .expect("install list")
        .iter()
        .map(|i| {
            let m = &i["metadata"];
            format!(
                "{}=={}",
                m["name"].as_str().unwrap().to_ascii_lowercase(),
                m["version"].as_str().unwrap()
            )
        })
        .collect()
}

/// What uv would install (`name==version`), with a fresh cache `cache`.
async fn uv_resolves(
    venv: &Path,
    cache: &Path,
    index: &str,
    packages: &[&str],
) -> BTreeSet<String> {
    let python = venv.join("bin/python");
    let mut args = vec![
        "pip",
        "install",
        "--dry-run",
        "--python",
        python.to_str().unwrap(),
        "--index-url",
        index,
    ];
    args.extend_from_slice(packages);
    let out = uv(cache, &args).await.run().await;
    assert!(out.ok(), "uv: {}", out.text());
    out.text()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("+ "))
        .map(|l| l.trim().to_ascii_lowercase())
        .collect()
}

async fn set_clock(file: &Path, when: &str) {
    tokio::fs::write(file, when).await.expect("write clock");
}

/// Waits until the proxy's JSON page of `project` does (or does not) list `file`.
async fn wait_for_page(proxy: &Binary, project: &str, file: &str, listed: bool) {
    let url = proxy.url(&format!("/pypi/simple/{project}/"));
    for _ in 0..100 {
        let got = get_with(&url, &[("accept", PYPI_JSON)]).await;
        if String::from_utf8_lossy(&got.body).contains(file) == listed {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "{project}'s page never {} {file}",
        if listed { "listed" } else { "dropped" }
    );
}

#[tokio::test]
async fn pip_and_uv_see_only_what_the_policy_shows() {
    let world = world().await;
    let clock = world.tmp.path().join("clock");
    set_clock(&clock, EARLY).await;
    // A directory of OSV records, empty for now.
    let deny = world.tmp.path().join("osv");
    tokio::fs::create_dir(&deny).await.unwrap();
    let proxy = world
        .proxy(
            &format!("{}/", world.index.url()),
            &[
                "--min-age",
                "pypi=7d",
                "--deny-list",
                deny.to_str().unwrap(),
                "--policy-clock-file",
                clock.to_str().unwrap(),
            ],
        )
        .await;
    let index = proxy.url("/pypi/simple/");
    let venv = world.venv("venv").await;

    // Too young: both resolve to the older six, from JSON pages.
    let before = pip_resolves(&venv, &index, &["six"]).await;
    assert_eq!(before, BTreeSet::from(["six==1.16.0".to_string()]));
    let uv_before = uv_resolves(&venv, &world.tmp.path().join("uv-1"), &index, &["six"]).await;
    assert!(uv_before.contains("six==1.16.0"), "{uv_before:?}");
    // The HTML page (no dates of its own) is filtered with the JSON page's dates.
    let html = get_with(&proxy.url("/pypi/simple/six/"), &[("accept", "text/html")]).await;
    let html = String::from_utf8(html.body).unwrap();
    assert!(
        html.contains("six-1.16.0-py2.py3-none-any.whl") && !html.contains(NEW_SIX),
        "{html}"
    );

    // A direct download of the young file: 403, saying why and when.
    let direct = proxy.url(&format!(
        "/pypi/files/{}/packages/{NEW_SIX}",
        world.files.addr()
    ));
    let refused = get_with(&direct, &[]).await;
    let body = String::from_utf8_lossy(&refused.body).into_owned();
    assert_eq!(refused.status, 403, "{body}");
    assert!(body.contains("pypi six 1.17.0"), "{body}");
    assert!(
        body.contains("available from 2026-01-17T00:00:00Z"),
        "{body}"
    );
    let metadata = get_with(&format!("{direct}.metadata"), &[]).await;
    assert_eq!(
        metadata.status, 403,
        "the PEP 658 metadata of a held file too"
    );
    // The status page shows what is held back, and the refusals.
    let admin = proxy.admin.expect("admin listener");
    let page = get_with(&format!("http://{admin}/"), &[]).await;
    let page = String::from_utf8(page.body).unwrap();
    assert!(page.contains("Supply-chain policy"), "{page}");
    let held = page.split("policy-held-table").nth(1).expect("held table");
    assert!(
        held.contains("<td class=\"key\">six</td><td>1.17.0</td><td>min-age</td><td>2026-01-17T00:00:00Z</td>"),
        "{held}"
    );
    let refusals = page
        .split("policy-refusals-table")
        .nth(1)
        .expect("refusals table");
    assert!(
        refusals.contains("<td>127.0.0.1:") && refusals.contains("1.17.0"),
        "{refusals}"
    );

    // Exempted (a file re-read on SIGHUP), the young file is shown and served;
    // the exemption gone, it is held again.
    let exempt = world.tmp.path().join("exempt");
    tokio::fs::write(&exempt, "pypi=six@1.17.0\n")
        .await
        .unwrap();
    // The proxy was started without the file: a second proxy reads it.
    let cache = world.tmp.path().join("cache-exempt");
    let mirror = format!("pypi={}/", world.index.url());
    let files = format!("pypi={}", world.files.url());
    let exempting = Binary::start(&[
        "--cache",
        cache.to_str().unwrap(),
        "--mirror",
        &mirror,
        "--files-host",
        &files,
        "--min-age",
        "pypi=7d",
        "--min-age-exempt-file",
        exempt.to_str().unwrap(),
        "--policy-clock-file",
        clock.to_str().unwrap(),
    ])
    .await;
    wait_for_page(&exempting, "six", NEW_SIX, true).await;
    let exempt_direct = exempting.url(&format!(
        "/pypi/files/{}/packages/{NEW_SIX}",
        world.files.addr()
    ));
    assert_eq!(get_with(&exempt_direct, &[]).await.status, 200);
    tokio::fs::write(&exempt, "# none\n").await.unwrap();
    exempting.signal(rustix::process::Signal::HUP);
    wait_for_page(&exempting, "six", NEW_SIX, false).await;
    assert_eq!(get_with(&exempt_direct, &[]).await.status, 403);
    // The whole project exempted, the file changed without a signal: shown again.
    tokio::fs::write(&exempt, "pypi=six\n").await.unwrap();
    wait_for_page(&exempting, "six", NEW_SIX, true).await;
    assert_eq!(get_with(&exempt_direct, &[]).await.status, 200);

    // The clock passes the seven days: the newest six, for both.
    set_clock(&clock, LATE).await;
    wait_for_page(&proxy, "six", NEW_SIX, true).await;
    let after = pip_resolves(&venv, &index, &["six"]).await;
    assert_eq!(after, BTreeSet::from(["six==1.17.0".to_string()]));
    let uv_after = uv_resolves(&venv, &world.tmp.path().join("uv-2"), &index, &["six"]).await;
    assert!(uv_after.contains("six==1.17.0"), "{uv_after:?}");
    assert_eq!(get_with(&direct, &[]).await.status, 200);

    // idna 3.7, fetched and cached, then deny-listed: skipped, and its
    // cached file no longer served.
    let idna = proxy.url(&format!(
        "/pypi/files/{}/packages/idna-3.7-py3-none-any.whl",
        world.files.addr()
    ));
    assert_eq!(get_with(&idna, &[]).await.status, 200);
    assert_eq!(get_with(&idna, &[]).await.cache(), "HIT");
    let record = r#"{"id": "MAL-2026-0001", "summary": "malicious code in idna",
        "affected": [{"package": {"ecosystem": "PyPI", "name": "idna"}, "versions": ["3.7"]}]}"#;
    tokio::fs::write(deny.join("MAL-2026-0001.json"), record)
        .await
        .unwrap();
    wait_for_page(&proxy, "idna", "idna-3.7", false).await;
    let resolved = pip_resolves(&venv, &index, &["idna"]).await;
    assert_eq!(resolved, BTreeSet::from(["idna==3.6".to_string()]));
    let uv_idna = uv_resolves(&venv, &world.tmp.path().join("uv-3"), &index, &["idna"]).await;
    assert!(uv_idna.contains("idna==3.6"), "{uv_idna:?}");
    let denied = get_with(&idna, &[]).await;
    let body = String::from_utf8_lossy(&denied.body).into_owned();
    assert_eq!(denied.status, 403, "{body}");
    assert!(body.contains("on a deny list (MAL-2026-0001)"), "{body}");
    let metrics = get_with(&format!("http://{admin}/metrics"), &[]).await;
    let metrics = String::from_utf8(metrics.body).unwrap();
    for series in [
        "package_cache_policy_refusals_total{mount=\"pypi\",rule=\"min-age\"} 2",
        "package_cache_policy_refusals_total{mount=\"pypi\",rule=\"deny-list\"} 1",
    ] {
        assert!(metrics.contains(series), "{series}: {metrics}");
    }

    // Every refusal was logged with the client, mount, project, version and
    // rule (stderr is read by a task of its own: give it a moment).
    let mut log = String::new();
    for _ in 0..50 {
        log = proxy.log_lines().join("\n");
        if log.contains("\"rule\":\"deny-list\"") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        log.contains("download refused by the supply-chain policy"),
        "{log}"
    );
    assert!(
        log.contains("\"rule\":\"deny-list\"") && log.contains("\"rule\":\"min-age\""),
        "{log}"
    );
    assert!(log.contains("\"client\":\"127.0.0.1:"), "{log}");
}

#[tokio::test]
async fn with_nothing_held_back_pages_are_byte_for_byte_as_without_a_policy() {
    let world = world().await;
    let clock = world.tmp.path().join("clock");
    set_clock(&clock, "2030-01-01T00:00:00Z").await;
    let mirror = format!("{}/", world.index.url());
    let plain = world.proxy(&mirror, &[]).await;
    let cache2 = world.tmp.path().join("cache2");
    let files = format!("pypi={}", world.files.url());
    let mirror_arg = format!("pypi={mirror}");
    let policed = Binary::start(&[
        "--cache",
        cache2.to_str().unwrap(),
        "--mirror",
        &mirror_arg,
        "--files-host",
        &files,
        "--min-age",
        "7d",
        "--policy-clock-file",
        clock.to_str().unwrap(),
    ])
    .await;
    for accept in [PYPI_JSON, "text/html"] {
        for page in ["/pypi/simple/six/", "/pypi/simple/"] {
            let a = get_with(&plain.url(page), &[("accept", accept)]).await;
            let b = get_with(&policed.url(page), &[("accept", accept)]).await;
            assert_eq!(a.status, 200);
            assert_eq!(a.body, b.body, "{page} {accept}");
            assert_eq!(a.header("etag"), b.header("etag"), "{page} {accept}");
        }
    }
    // And the policy does hide something once the clock is set back.
    set_clock(&clock, EARLY).await;
    wait_for_page(&policed, "six", NEW_SIX, false).await;
    let b = get_with(&policed.url("/pypi/simple/six/"), &[("accept", PYPI_JSON)]).await;
    let a = get_with(&plain.url("/pypi/simple/six/"), &[("accept", PYPI_JSON)]).await;
    assert_ne!(
        a.header("etag"),
        b.header("etag"),
        "a filtered page has its own ETag"
    );
    let page: serde_json::Value = serde_json::from_slice(&b.body).unwrap();
    assert_eq!(page["versions"], serde_json::json!(["1.16.0"]));
}
