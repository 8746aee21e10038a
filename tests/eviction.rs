//! `--max-size`: least recently used entries are evicted in the background,
//! pinned ones never; a reader of an evicted entry keeps reading; a file that
//! can never fit passes through uncached.

mod support;

use http_body_util::BodyExt;
use std::time::Duration;
use support::app::{committed, source, TestApp};
use support::client::{bytes_of, get, open, sha256};
use support::origin::Origin;

const KIB: u64 = 1024;

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..100 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} did not happen within 5 s");
}

#[tokio::test]
async fn least_recently_used_entries_go_first_and_pinned_ones_stay() {
    let bodies: Vec<_> = (0..6).map(|i| bytes_of(100 * KIB as usize, i)).collect();
    let mut builder = Origin::builder();
    for (i, body) in bodies.iter().enumerate() {
        builder = builder.file(&format!("/f{i}"), body.clone());
    }
    builder = builder.file("/keep/pinned", bytes_of(100 * KIB as usize, 99));
    let origin = builder.start().await;
    let app = TestApp::start(|mut c| {
        c.policy.max_size = Some(450 * KIB);
        c.policy.pinned = vec!["/keep/**".into()];
        source(c, &origin.url())
    })
    .await;
    assert_eq!(get(&app.url("/keep/pinned")).await.status, 200);
    committed(&app.cache.join("keep/pinned")).await;
    for i in 0..3 {
        assert_eq!(get(&app.url(&format!("/f{i}"))).await.cache(), "MISS");
        committed(&app.cache.join(format!("f{i}"))).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // f0 is used again: now f1 is the least recently used.
    assert_eq!(get(&app.url("/f0")).await.cache(), "HIT");
    tokio::time::sleep(Duration::from_millis(20)).await;
    for i in 3..5 {
        assert_eq!(get(&app.url(&format!("/f{i}"))).await.cache(), "MISS");
        committed(&app.cache.join(format!("f{i}"))).await;
    }
    // 600 KiB > 450 KiB: down to 405 KiB, least recently used first.
    let cache = app.cache.clone();
    wait_until("eviction", || !cache.join("f1").exists()).await;
    wait_until("eviction to the low-water mark", || {
        !cache.join("f2").exists()
    })
    .await;
    for kept in ["keep/pinned", "f0", "f3", "f4"] {
        assert!(app.cache.join(kept).exists(), "{kept} kept");
    }
    // An evicted entry is simply fetched again.
    let again = get(&app.url("/f1")).await;
    assert_eq!(
        (again.cache(), again.body.clone()),
        ("MISS", bodies[1].to_vec())
    );
    assert_eq!(origin.hits("/f1"), 2);
    app.stop().await;
}

#[tokio::test]
async fn a_reader_keeps_reading_an_entry_evicted_under_it() {
    let big = bytes_of(8 << 20, 5);
    let filler = bytes_of(3 << 20, 6);
    let origin = Origin::builder()
        .file("/big", big.clone())
        .file("/other", filler.clone())
        .start()
        .await;
    let app = TestApp::start(|mut c| {
        c.policy.max_size = Some(10 << 20);
        source(c, &origin.url())
    })
    .await;
    assert_eq!(get(&app.url("/big")).await.body.len(), big.len());
    committed(&app.cache.join("big")).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    // A hit that takes its first bytes, then pauses while /big is evicted.
    let (parts, mut body, _) = open(&app.url("/big"), &[]).await;
    assert_eq!(parts.headers["x-cache"], "HIT");
    let mut got = body
        .frame()
        .await
        .unwrap()
        .unwrap()
        .into_data()
        .unwrap()
        .to_vec();
    assert_eq!(get(&app.url("/other")).await.status, 200);
    let cache = app.cache.clone();
    wait_until("eviction of /big", || !cache.join("big").exists()).await;
    while let Some(frame) = body.frame().await {
        got.extend_from_slice(&frame.expect("the body goes on").into_data().unwrap());
    }
    assert_eq!(sha256(&got), sha256(&big));
    app.stop().await;
}

#[tokio::test]
async fn a_file_larger_than_the_limit_passes_through_uncached() {
    let huge = bytes_of(2 << 20, 7);
    let origin = Origin::builder().file("/huge", huge.clone()).start().await;
    let app = TestApp::start(|mut c| {
        c.policy.max_size = Some(1 << 20);
        source(c, &origin.url())
    })
    .await;
    for _ in 0..2 {
        let got = get(&app.url("/huge")).await;
        assert_eq!((got.status.as_u16(), got.cache()), (200, "PASS"));
        assert_eq!(got.body, huge.to_vec());
    }
    assert_eq!(origin.hits("/huge"), 2);
    assert!(!app.cache.join("huge").exists());
    assert!(app.tmp_files().is_empty());
    app.stop().await;
}

#[tokio::test]
async fn entries_from_an_earlier_run_are_counted_and_evicted() {
    let mut builder = Origin::builder();
    for i in 0..4 {
        builder = builder.file(&format!("/d/f{i}"), bytes_of(100 * KIB as usize, 20 + i));
    }
    let origin = builder.start().await;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let first = TestApp::start_in(&cache, |c| source(c, &origin.url())).await;
    for i in 0..4 {
        assert_eq!(get(&first.url(&format!("/d/f{i}"))).await.status, 200);
        committed(&cache.join(format!("d/f{i}"))).await;
    }
    first.stop().await;
    let second = TestApp::start_in(&cache, |mut c| {
        c.policy.max_size = Some(250 * KIB);
        source(c, &origin.url())
    })
    .await;
    let count = || {
        (0..4)
            .filter(|i| cache.join(format!("d/f{i}")).exists())
            .count()
    };
    wait_until("eviction of the earlier run's entries", || count() == 2).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(count(), 2, "down to the low-water mark, no further");
    second.stop().await;
}
