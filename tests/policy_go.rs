//! The supply-chain policy on a Go mount, with real go (Debian's 1.19)
//! through the cache, the checksum database verified through it too:
//! example.test/hello v1.1.0 (published 2026-01-02) is a day and a half old
//! by the test clock under `--min-age 2d`, so `@v/list` leaves it out,
//! `@latest` names v1.0.0, its `.zip` is refused with 403 saying when it
//! becomes available, and `go get` picks v1.0.0; a query the upstream
//! resolves (`@v/master.info`, naming v1.1.0: the fixture's tree gets that
//! file) is refused as v1.1.0's files are, so `go get …@master` fails on the
//! 403, and `go get …@v1.1` finds no matching version in the filtered list;
//! once the clock passes, go picks v1.1.0 (for `@master` too) — until a deny
//! list names it, and its cached zip is refused. Dates come from each
//! version's `.info`, read through the cache.

mod support;

use std::path::Path;
use std::time::Duration;
use support::app::Binary;
use support::client::get;
use support::goproxy::{Consumer, GoProxy};

/// hello v1.0.0 is 2.5 days old, v1.1.0 1.5 days.
const EARLY: &str = "2026-01-03T12:00:00Z";
/// Both older than two days.
const LATE: &str = "2026-01-05T00:00:00Z";

/// A module that requires nothing yet, to `go get` into.
fn probe(at: &Path) -> Consumer {
    let consumer = Consumer::new(at);
    std::fs::write(
        consumer.dir.join("go.mod"),
        "module example.test/probe\n\ngo 1.19\n",
    )
    .expect("go.mod");
    std::fs::remove_file(consumer.dir.join("main.go")).expect("main.go");
    consumer
}

/// The version of example.test/hello that go.mod requires.
fn required_hello(consumer: &Consumer) -> Option<String> {
    let gomod = std::fs::read_to_string(consumer.dir.join("go.mod")).expect("go.mod");
    gomod.lines().find_map(|l| {
        let l = l.trim().trim_start_matches("require").trim();
        l.strip_prefix("example.test/hello ")
            .map(|v| v.split_whitespace().next().unwrap_or("").to_string())
    })
}

async fn wait_for_list(proxy: &Binary, want: &str) {
    let url = proxy.url("/go/example.test/hello/@v/list");
    for _ in 0..100 {
        if String::from_utf8_lossy(&get(&url).await.body) == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("@v/list never became {want:?}");
}

#[tokio::test]
async fn go_sees_only_what_the_policy_shows() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let upstream = GoProxy::start().await;
    // A branch query, as a real module proxy answers it: the version it names.
    std::fs::copy(
        upstream.tree.join("example.test/hello/@v/v1.1.0.info"),
        upstream.tree.join("example.test/hello/@v/master.info"),
    )
    .expect("a query's .info in the upstream's tree");
    let clock = tmp.path().join("clock");
    std::fs::write(&clock, EARLY).unwrap();
    let deny = tmp.path().join("deny.txt");
    std::fs::write(&deny, "").unwrap();
    let cache = tmp.path().join("cache");
    let mirror = format!("go={}/", upstream.url());
    let proxy = Binary::start(&[
        "--cache",
        cache.to_str().unwrap(),
        "--mirror",
        &mirror,
        "--index-ttl",
        "0",
        "--min-age",
        "go=2d",
        "--policy-clock-file",
        clock.to_str().unwrap(),
        "--deny-list",
        deny.to_str().unwrap(),
    ])
    .await;
    let goproxy = proxy.url("/go");
    let key = upstream.sumdb_key();

    // The documents: the young version left out, @latest moved back.
    let list = get(&proxy.url("/go/example.test/hello/@v/list")).await;
    assert_eq!(list.status, 200);
    assert_eq!(String::from_utf8_lossy(&list.body), "v1.0.0\n");
    let latest = get(&proxy.url("/go/example.test/hello/@latest")).await;
    let latest: serde_json::Value = serde_json::from_slice(&latest.body).expect("@latest JSON");
    assert_eq!(latest["Version"], "v1.0.0");
    // An old version's files are served; the young one's refused, saying when.
    let old = get(&proxy.url("/go/example.test/hello/@v/v1.0.0.zip")).await;
    assert_eq!(old.status, 200);
    let young = get(&proxy.url("/go/example.test/hello/@v/v1.1.0.zip")).await;
    let body = String::from_utf8_lossy(&young.body).into_owned();
    assert_eq!(young.status, 403, "{body}");
    assert!(body.contains("go example.test/hello v1.1.0"), "{body}");
    assert!(
        body.contains("available from 2026-01-04T00:00:00Z"),
        "{body}"
    );

    // Real go resolves to the older version, verified through the proxied database.
    let early = probe(&tmp.path().join("early"));
    let out = early
        .go(&goproxy, &key, &["get", "example.test/hello"])
        .run()
        .await;
    assert!(out.ok(), "{}", out.text());
    assert_eq!(required_hello(&early).as_deref(), Some("v1.0.0"));
    // And a build that needs the young one fails on the 403.
    let pinned = probe(&tmp.path().join("pinned"));
    let out = pinned
        .go(&goproxy, &key, &["get", "example.test/hello@v1.1.0"])
        .run()
        .await;
    assert!(!out.ok(), "{}", out.text());
    assert!(out.text().contains("403"), "{}", out.text());

    // Queries: one the upstream resolves to the young version is refused as
    // its files are (go asks `@v/master.info` for a branch); a version prefix
    // go resolves itself from the filtered list, which has no v1.1.x.
    let query = get(&proxy.url("/go/example.test/hello/@v/master.info")).await;
    let body = String::from_utf8_lossy(&query.body).into_owned();
    assert_eq!(query.status, 403, "{body}");
    assert!(body.contains("go example.test/hello v1.1.0"), "{body}");
    assert!(
        body.contains("available from 2026-01-04T00:00:00Z"),
        "{body}"
    );
    let branch = probe(&tmp.path().join("branch"));
    let out = branch
        .go(&goproxy, &key, &["get", "example.test/hello@master"])
        .run()
        .await;
    eprintln!(
        "go get example.test/hello@master, v1.1.0 held:\n{}",
        out.text()
    );
    assert!(!out.ok(), "{}", out.text());
    assert!(out.text().contains("403"), "{}", out.text());
    assert_eq!(required_hello(&branch), None);
    let prefix = probe(&tmp.path().join("prefix"));
    let out = prefix
        .go(&goproxy, &key, &["get", "example.test/hello@v1.1"])
        .run()
        .await;
    eprintln!(
        "go get example.test/hello@v1.1, v1.1.0 held:\n{}",
        out.text()
    );
    assert!(!out.ok(), "{}", out.text());
    assert!(
        out.text()
            .contains("no matching versions for query \"v1.1\""),
        "{}",
        out.text()
    );

    // The clock passes the two days: go picks v1.1.0.
    std::fs::write(&clock, LATE).unwrap();
    wait_for_list(&proxy, "v1.0.0\nv1.1.0\n").await;
    let late = probe(&tmp.path().join("late"));
    let out = late
        .go(&goproxy, &key, &["get", "example.test/hello"])
        .run()
        .await;
    assert!(out.ok(), "{}", out.text());
    assert_eq!(required_hello(&late).as_deref(), Some("v1.1.0"));
    let latest = get(&proxy.url("/go/example.test/hello/@latest")).await;
    let latest: serde_json::Value = serde_json::from_slice(&latest.body).expect("@latest JSON");
    assert_eq!(latest["Version"], "v1.1.0");
    let query = get(&proxy.url("/go/example.test/hello/@v/master.info")).await;
    assert_eq!(query.status, 200);
    let branch = probe(&tmp.path().join("branch-late"));
    let out = branch
        .go(&goproxy, &key, &["get", "example.test/hello@master"])
        .run()
        .await;
    assert!(out.ok(), "{}", out.text());
    assert_eq!(required_hello(&branch).as_deref(), Some("v1.1.0"));

    // Deny-listed: gone from the list again, and its cached zip refused.
    let zip = proxy.url("/go/example.test/hello/@v/v1.1.0.zip");
    assert_eq!(get(&zip).await.cache(), "HIT");
    std::fs::write(&deny, "Go example.test/hello v1.1.0\n").unwrap();
    wait_for_list(&proxy, "v1.0.0\n").await;
    let denied = get(&zip).await;
    let body = String::from_utf8_lossy(&denied.body).into_owned();
    assert_eq!(denied.status, 403, "{body}");
    assert!(body.contains("deny list"), "{body}");

    // Refusals were counted by mount and rule.
    let admin = proxy.admin.expect("admin listener");
    let metrics = get(&format!("http://{admin}/metrics")).await;
    let metrics = String::from_utf8(metrics.body).unwrap();
    assert!(
        metrics.contains("package_cache_policy_refusals_total{mount=\"go\",rule=\"min-age\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("package_cache_policy_refusals_total{mount=\"go\",rule=\"deny-list\"} 1"),
        "{metrics}"
    );
}
