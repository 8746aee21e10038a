//! The supply-chain policy's hook on npm and Cargo mounts, over HTTP: a
//! packument and a sparse-index file served through the cache lose the
//! young version (a dist-tag naming it moves to the newest shown one), its
//! tarball, version manifest and crate download are refused with 403, and
//! without a policy both documents are the upstream's bytes. Real npm, pnpm
//! and cargo under the policy: tests/policy_npm_cargo_clients.rs.

mod support;

use std::time::Duration;
use support::app::Binary;
use support::client::get_with;
use support::origin::Origin;

/// 1.3.0 is a day old by the clock; the rest are from 2020.
const NOW: &str = "2026-01-11T00:00:00Z";

const PACKUMENT: &str = r#"{"_id":"left-pad","name":"left-pad","dist-tags":{"latest":"1.3.0","old":"1.1.0"},"versions":{"1.1.0":{"name":"left-pad","version":"1.1.0","dist":{"tarball":"http://registry.invalid/left-pad/-/left-pad-1.1.0.tgz"}},"1.2.0":{"name":"left-pad","version":"1.2.0","dist":{"tarball":"http://registry.invalid/left-pad/-/left-pad-1.2.0.tgz"}},"1.3.0":{"name":"left-pad","version":"1.3.0","dist":{"tarball":"http://registry.invalid/left-pad/-/left-pad-1.3.0.tgz"}}},"time":{"created":"2020-01-01T00:00:00Z","modified":"2026-01-10T00:00:00Z","1.1.0":"2020-01-01T00:00:00Z","1.2.0":"2020-02-01T00:00:00Z","1.3.0":"2026-01-10T00:00:00Z"}}"#;

const MANIFEST_130: &str = r#"{"name":"left-pad","version":"1.3.0","dist":{"tarball":"http://registry.invalid/left-pad/-/left-pad-1.3.0.tgz"}}"#;

const INDEX: &str = concat!(
    r#"{"name":"fixture-core","vers":"0.1.0","deps":[],"cksum":"aa","features":{},"yanked":false,"pubtime":"2020-01-01T00:00:00Z"}"#,
    "\n",
    r#"{"name":"fixture-core","vers":"0.2.0","deps":[],"cksum":"bb","features":{},"yanked":false,"pubtime":"2026-01-10T00:00:00Z"}"#,
    "\n"
);

async fn upstreams() -> (Origin, Origin) {
    let npm = Origin::builder()
        .file("/left-pad", PACKUMENT)
        .file("/left-pad/1.3.0", MANIFEST_130)
        .file("/left-pad/latest", MANIFEST_130)
        .file(
            "/left-pad/1.2.0",
            r#"{"name":"left-pad","version":"1.2.0"}"#,
        )
        .start()
        .await;
    let cargo = Origin::builder()
        .file("/fi/xt/fixture-core", INDEX)
        .start()
        .await;
    (npm, cargo)
}

async fn proxy(tmp: &std::path::Path, npm: &Origin, cargo: &Origin, policy: &[&str]) -> Binary {
    let cache = tmp.join(if policy.is_empty() {
        "plain"
    } else {
        "policed"
    });
    let (npm, cargo) = (
        format!("npm={}/", npm.url()),
        format!("cargo={}/", cargo.url()),
    );
    let mut args = vec![
        "--cache",
        cache.to_str().unwrap(),
        "--mirror",
        &npm,
        "--mirror",
        &cargo,
    ];
    args.extend_from_slice(policy);
    Binary::start(&args).await
}

#[tokio::test]
async fn npm_and_cargo_documents_lose_the_young_version_and_its_files_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (npm, cargo) = upstreams().await;
    let clock = tmp.path().join("clock");
    std::fs::write(&clock, NOW).unwrap();
    let clock_arg = clock.to_str().unwrap().to_string();
    let policed = proxy(
        tmp.path(),
        &npm,
        &cargo,
        &["--min-age", "3d", "--policy-clock-file", &clock_arg],
    )
    .await;

    let packument = get_with(
        &policed.url("/npm/left-pad"),
        &[("accept", "application/json")],
    )
    .await;
    assert_eq!(packument.status, 200);
    let doc: serde_json::Value = serde_json::from_slice(&packument.body).expect("JSON");
    let versions: Vec<&String> = doc["versions"].as_object().unwrap().keys().collect();
    assert_eq!(versions, ["1.1.0", "1.2.0"]);
    assert!(doc["time"].get("1.3.0").is_none(), "{doc}");
    assert_eq!(doc["dist-tags"]["latest"], "1.2.0");
    assert_eq!(doc["dist-tags"]["old"], "1.1.0");
    // A version manifest (or a dist-tag's) of the young version is refused as its tarball is.
    for manifest in ["/npm/left-pad/1.3.0", "/npm/left-pad/latest"] {
        let got = get_with(&policed.url(manifest), &[]).await;
        assert_eq!(got.status, 403, "{manifest}");
    }
    assert_eq!(
        get_with(&policed.url("/npm/left-pad/1.2.0"), &[])
            .await
            .status,
        200
    );
    let tarball = get_with(&policed.url("/npm/left-pad/-/left-pad-1.3.0.tgz"), &[]).await;
    let body = String::from_utf8_lossy(&tarball.body).into_owned();
    assert_eq!(tarball.status, 403, "{body}");
    assert!(body.contains("npm left-pad 1.3.0"), "{body}");
    assert!(
        body.contains("available from 2026-01-13T00:00:00Z"),
        "{body}"
    );

    let index = get_with(&policed.url("/cargo/fi/xt/fixture-core"), &[]).await;
    assert_eq!(index.status, 200);
    assert_eq!(
        String::from_utf8_lossy(&index.body),
        INDEX.lines().next().unwrap().to_string() + "\n"
    );
    let download = get_with(
        &policed.url("/cargo/api/v1/crates/fixture-core/0.2.0/download"),
        &[],
    )
    .await;
    let body = String::from_utf8_lossy(&download.body).into_owned();
    assert_eq!(download.status, 403, "{body}");
    assert!(body.contains("cargo fixture-core 0.2.0"), "{body}");

    // Once the clock passes, both documents are the upstream's again.
    std::fs::write(&clock, "2026-01-20T00:00:00Z").unwrap();
    let mut shown = false;
    for _ in 0..100 {
        let index = get_with(&policed.url("/cargo/fi/xt/fixture-core"), &[]).await;
        if index.body == INDEX.as_bytes() {
            shown = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(shown, "the index never showed 0.2.0");
    let packument = get_with(
        &policed.url("/npm/left-pad"),
        &[("accept", "application/json")],
    )
    .await;
    let doc: serde_json::Value = serde_json::from_slice(&packument.body).expect("JSON");
    assert_eq!(doc["dist-tags"]["latest"], "1.3.0");
}

#[tokio::test]
async fn without_a_policy_npm_and_cargo_documents_are_the_upstreams_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let (npm, cargo) = upstreams().await;
    let plain = proxy(tmp.path(), &npm, &cargo, &[]).await;
    let index = get_with(&plain.url("/cargo/fi/xt/fixture-core"), &[]).await;
    assert_eq!(index.body, INDEX.as_bytes());
    let packument = get_with(
        &plain.url("/npm/left-pad"),
        &[("accept", "application/json")],
    )
    .await;
    let doc: serde_json::Value = serde_json::from_slice(&packument.body).expect("JSON");
    assert_eq!(doc["dist-tags"]["latest"], "1.3.0");
    assert_eq!(doc["versions"].as_object().unwrap().len(), 3);
}
