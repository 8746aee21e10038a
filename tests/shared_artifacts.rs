//! Built artifacts through the shared store (issue 9), against a real Ceph RGW
//! (tests/support/rgw.rs) and real builds in the sandbox (as root): node A builds a
//! pure gem and publishes it; node B, same bucket, empty disk, serves the same archive
//! by name and answers a build request for it with no job and no upstream request.

mod support;

use package_cache::config::Config;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use support::api::{call, post};
use support::app::TestApp;
use support::build_world::Upstreams;
use support::client::sha256;
use support::needs_root;
use support::rgw;

/// A prefix no other test (or run) uses.
fn prefix(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("artifacts-{test}-{}-{nanos:08x}", std::process::id())
}

/// `up`'s mounts, the ruby runtime on uids from `uid_base`, and `shared` below the disk.
async fn node(up: &Upstreams, uid_base: u32, prefix: &str, name: &str) -> TestApp {
    let mut shared = rgw::shared().await.expect("rgw").config(prefix);
    shared.set("node", name).unwrap();
    TestApp::start(|c: Config| {
        let mut c = up.mount(c);
        c.build.runtimes = vec![("ruby31".into(), "/usr/bin/ruby".into())];
        c.build.uids = uid_base..uid_base + 4;
        c.shared_store = Some(shared);
        c
    })
    .await
}

fn gem(name: &str, version: &str) -> Value {
    json!({"location": "remote", "type": "gem", "name": name, "version": version, "runtime": "ruby31"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_artifact_built_on_one_node_is_served_by_another_without_building() {
    if !needs_root("to run builds as other uids") {
        return;
    }
    let Some(rgw) = rgw::shared().await else {
        return;
    };
    let p = prefix("pure");
    let up_a = Upstreams::start(&[], None).await;
    let a = node(&up_a, 62900, &p, "a").await;
    let api_a = a.api_url("/api/v1/builds");
    let queued = post(&api_a, &gem("pcpure", "1.0.0")).await;
    assert_eq!(queued.status, 202, "{queued:?}");
    let id = queued.json["id"].as_str().expect("id").to_string();
    let until = Instant::now() + Duration::from_secs(240);
    loop {
        let job = call("GET", &a.api_url(&format!("/api/v1/builds/{id}")), "", &[]).await;
        match job.json["state"].as_str() {
            Some("complete") => break,
            Some("failed" | "cancelled") => panic!("{}", job.json),
            _ => assert!(Instant::now() < until, "not built in time"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let name = "pcpure-1.0.0@ruby31.tgz";
    let built = call(
        "GET",
        &a.api_url(&format!("/api/v1/artifacts/{name}")),
        "",
        &[],
    )
    .await;
    assert_eq!(built.status, 200);
    // Published in the background: one artifact reference in the bucket.
    let until = Instant::now() + Duration::from_secs(60);
    while rgw.s3().list(&format!("{p}/artifacts/")).await.is_empty() {
        assert!(
            Instant::now() < until,
            "node a never published the artifact"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Node B: its own (empty) upstreams, which must see no request at all.
    let up_b = Upstreams::start(&[], None).await;
    let b = node(&up_b, 62910, &p, "b").await;
    let got = call(
        "GET",
        &b.api_url(&format!("/api/v1/artifacts/{name}")),
        "",
        &[],
    )
    .await;
    assert_eq!(got.status, 200, "{got:?}");
    assert_eq!(sha256(&got.bytes), sha256(&built.bytes));
    assert_eq!(got.bytes, built.bytes);
    // A build request for it is answered at once as an existing artifact.
    let again = post(&b.api_url("/api/v1/builds"), &gem("pcpure", "1.0.0")).await;
    assert_eq!(again.status, 200, "{again:?}");
    assert_eq!(again.json["artifact"], name);
    assert_eq!(
        b.running().builds.list(None, 0, 100).1,
        0,
        "node b ran a job"
    );
    for site in [&up_b.gems, &up_b.index, &up_b.files] {
        assert!(site.log().is_empty(), "node b's upstream was asked");
    }
    assert_eq!(
        std::fs::read(b.cache.join(".package-cache/build/artifacts").join(name)).unwrap(),
        built.bytes
    );
}
