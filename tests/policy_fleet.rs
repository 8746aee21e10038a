//! First-seen times shared by a fleet through the shared store, with two
//! real proxy nodes on one bucket of a real Ceph RGW (tests/support/rgw.rs)
//! and each its own cache directory and test clock: node A sees crtiny's
//! undated releases first at T0 and publishes the times; node B, asked two
//! days later, holds them until T0 + 3 days (A's time), not B's own first
//! sighting + 3 days, and shows them once its clock passes that. Restarted
//! with its store down, B keeps those times (its local record), dates a new
//! release itself without waiting on the store, logs why, and publishes the
//! time once the store is back. On the store itself: the first time published
//! for a release stays (a second writer reads it back), and a record that is
//! not one is an error.

mod support;

use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};
use support::app::Binary;
use support::client::{get_with, info_versions};
use support::fixtures;
use support::rgw::{self, Rgw, BUCKET};
use support::site::{ETags, Site};

const T0: &str = "2026-01-01T00:00:00Z";
/// Two days on: B's first sighting.
const T2: &str = "2026-01-03T00:00:00Z";
/// An hour past T0 + 3 days: old enough by A's time, not by B's (T2 + 3 days).
const T3: &str = "2026-01-04T01:00:00Z";
const T3_SECS: i64 = 1_767_488_400;

/// crtiny's releases in the fixture (no dates in its compact index).
const UNDATED: &[&str] = &["0.1.0", "0.2.0", "1.0.0"];

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// A prefix no other test (or run) uses.
fn prefix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("policy-fleet-{}-{nanos:08x}", std::process::id())
}

/// A node: `--min-age 3d` on the RubyGems mirror `site`, its own cache and
/// clock, the bucket at `prefix` through `endpoint` with short time limits.
async fn node(site: &Site, cache: &Path, clock: &Path, endpoint: &str, prefix: &str) -> Binary {
    let mirror = format!("rubygems={}/", site.url());
    let store = format!("s3://{BUCKET}/{prefix}");
    let opts = [
        format!("endpoint={endpoint}"),
        "access_key_id=test".into(),
        "secret_access_key=testtesttest".into(),
        "region=us-east-1".into(),
        "aws_allow_http=true".into(),
        "timeout=1s".into(),
        "connect_timeout=500ms".into(),
        "breaker_failures=2".into(),
        "breaker_cooldown=300ms".into(),
    ];
    let mut args = vec![
        "--cache",
        cache.to_str().unwrap(),
        "--mirror",
        &mirror,
        "--index-ttl",
        "0",
        "--min-age",
        "rubygems=3d",
        "--policy-clock-file",
        clock.to_str().unwrap(),
        "--shared-store",
        &store,
    ];
    for opt in &opts {
        args.extend(["--shared-store-opt", opt.as_str()]);
    }
    Binary::start(&args).await
}

/// Waits until `node` lists exactly `want` (the clock file is re-read on change).
async fn wait_for_versions(node: &Binary, want: &BTreeSet<String>) {
    let mut got = BTreeSet::new();
    for _ in 0..100 {
        got = info_versions(&node.url("/rubygems/info/crtiny")).await;
        if &got == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("listed {got:?}, never {want:?}");
}

/// The first-seen records in the bucket under `prefix`.
async fn records(rgw: &Rgw, prefix: &str) -> Vec<String> {
    rgw.s3().list(&format!("{prefix}/policy/first-seen/")).await
}

async fn wait_for_records(rgw: &Rgw, prefix: &str, count: usize) {
    let began = Instant::now();
    loop {
        let listed = records(rgw, prefix).await;
        if listed.len() >= count {
            return;
        }
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "{} of {count} first-seen records published: {listed:?}",
            listed.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The record of crtiny `version` in the bucket, as JSON.
async fn record_of(rgw: &Rgw, prefix: &str, version: &str) -> serde_json::Value {
    let key = format!("rubygems\tcrtiny\t{version}");
    let name = hex::encode(Sha256::digest(key.as_bytes()));
    let (status, body) = rgw
        .s3()
        .get(&format!("{prefix}/policy/first-seen/{name}"))
        .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).expect("a json record")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_holds_a_release_from_when_the_fleet_first_saw_it() {
    let Some(rgw) = rgw::shared().await else {
        return;
    };
    // B reaches the cluster through a gateway of its own, stopped for the outage.
    let gateway = rgw.gateway().await;
    let p = prefix();
    let tmp = tempfile::tempdir().unwrap();
    let fixture = fixtures::rubygems().await;
    let repo = tmp.path().join("repo");
    fixtures::copy_tree(&fixture.join("repo"), &repo).await;
    let site = Site::start_with(&repo, "127.0.0.1", ETags::Md5).await;
    let (clock_a, clock_b) = (tmp.path().join("clock-a"), tmp.path().join("clock-b"));
    std::fs::write(&clock_a, T0).unwrap();
    std::fs::write(&clock_b, T2).unwrap();
    let cache_b = tmp.path().join("cache-b");

    // A sees every release first at T0 (none shown) and publishes the times:
    // crdep, crplat and crtiny's three (through /versions and /info).
    let a = node(
        &site,
        &tmp.path().join("cache-a"),
        &clock_a,
        &rgw.endpoint(),
        &p,
    )
    .await;
    assert_eq!(
        info_versions(&a.url("/rubygems/info/crtiny")).await,
        set(&[])
    );
    wait_for_records(rgw, &p, 3).await;
    assert_eq!(
        record_of(rgw, &p, "0.2.0").await["first_seen"],
        1_767_225_600
    );

    // B, two days later and with an empty cache, dates them from A's T0.
    let b = node(&site, &cache_b, &clock_b, &gateway.endpoint(), &p).await;
    let refused = get_with(&b.url("/rubygems/gems/crtiny-0.2.0.gem"), &[]).await;
    let body = String::from_utf8_lossy(&refused.body).into_owned();
    eprintln!("B at T2 for crtiny-0.2.0.gem: {} {body}", refused.status);
    assert_eq!(refused.status, 403, "{body}");
    assert!(
        body.contains("available from 2026-01-04T00:00:00Z"),
        "A's time plus 3 days, not B's: {body}"
    );
    assert_eq!(
        info_versions(&b.url("/rubygems/info/crtiny")).await,
        set(&[])
    );
    // Past T0 + 3 days (B's own sighting would hold them until T2 + 3 days).
    std::fs::write(&clock_b, T3).unwrap();
    wait_for_versions(&b, &set(UNDATED)).await;
    let shown = get_with(&b.url("/rubygems/gems/crtiny-0.2.0.gem"), &[]).await;
    assert_eq!(shown.status, 200);

    // Restarted with its store down: the times are B's own record now.
    b.signal(rustix::process::Signal::TERM);
    let mut b = b;
    let exited = tokio::time::timeout(Duration::from_secs(30), b.child.wait()).await;
    assert!(exited.is_ok(), "B stops on SIGTERM");
    gateway.stop().await;
    let b = node(&site, &cache_b, &clock_b, &gateway.endpoint(), &p).await;
    let began = Instant::now();
    assert_eq!(
        info_versions(&b.url("/rubygems/info/crtiny")).await,
        set(UNDATED)
    );
    eprintln!("B restarted, store down: /info in {:?}", began.elapsed());

    // A new release while the store is down: dated by B itself, at once.
    fixtures::gem_publish(&repo, &fixture.join("extra/crtiny-0.3.0.gem")).await;
    let began = Instant::now();
    let versions = info_versions(&b.url("/rubygems/info/crtiny")).await;
    let took = began.elapsed();
    eprintln!("B, store down, new release: /info in {took:?}: {versions:?}");
    assert_eq!(versions, set(UNDATED), "0.3.0 is held: first seen now");
    assert!(took < Duration::from_secs(5), "{took:?}");
    let young = get_with(&b.url("/rubygems/gems/crtiny-0.3.0.gem"), &[]).await;
    let body = String::from_utf8_lossy(&young.body).into_owned();
    assert_eq!(young.status, 403, "{body}");
    assert!(
        body.contains("available from 2026-01-07T01:00:00Z"),
        "{body}"
    );
    assert!(
        b.logged_within(&["shared store unavailable for first-seen times"])
            .await,
        "{:#?}",
        b.log_lines()
    );

    // The store back: B's time for 0.3.0 is published from its backlog.
    gateway.start().await;
    let began = Instant::now();
    loop {
        let name = hex::encode(Sha256::digest(b"rubygems\tcrtiny\t0.3.0"));
        let (status, _) = rgw.s3().get(&format!("{p}/policy/first-seen/{name}")).await;
        if status == 200 {
            break;
        }
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "0.3.0's time published once the store is back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(record_of(rgw, &p, "0.3.0").await["first_seen"], T3_SECS);
    drop(a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_node_to_publish_a_time_sets_it_for_the_fleet() {
    let Some(rgw) = rgw::shared().await else {
        return;
    };
    let p = prefix();
    let tracker = tokio_util::task::TaskTracker::new();
    let cancel = tokio_util::sync::CancellationToken::new();
    let store = package_cache::store::shared::SharedStore::open(
        &rgw.config(&p),
        tracker.clone(),
        cancel.clone(),
    )
    .await
    .expect("open the shared store");
    let key = "rubygems\tcrtiny\t9.9.9";
    assert_eq!(store.first_seen(key).await.unwrap(), None);
    assert_eq!(store.publish_first_seen(key, 2_000).await.unwrap(), 2_000);
    // A second writer, even with an earlier time, gets the first one back
    // (If-None-Match: * honoured by RGW); its node keeps its own if earlier.
    assert_eq!(store.publish_first_seen(key, 1_000).await.unwrap(), 2_000);
    assert_eq!(store.first_seen(key).await.unwrap(), Some(2_000));
    // A record that is not one is an error, not a time.
    let name = hex::encode(Sha256::digest(b"rubygems\tcrtiny\t8.8.8"));
    rgw.s3()
        .put(&format!("{p}/policy/first-seen/{name}"), b"garbage")
        .await;
    assert!(store.first_seen("rubygems\tcrtiny\t8.8.8").await.is_err());
    cancel.cancel();
    tracker.close();
}
