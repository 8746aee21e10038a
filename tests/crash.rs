//! `kill -9` of the real binary during many fills at once, then a restart on the same cache
//! directory: no partial entry is ever served or left in place, every file cut by the crash is
//! fetched again from the upstream and arrives whole, and no temporary file remains.
//! `failure.rs` covers one fill; this covers twenty, in every framing, some finishing just
//! before the kill.

mod support;

use std::time::Duration;

use bytes::Bytes;
use support::app::{tmp_files, Binary};
use support::client::{bytes_of, get, sha256, Got};
use support::origin::{Origin, Reply};
use tokio::time::{timeout, Instant};

/// Every wait in this file ends within this.
const LIMIT: Duration = Duration::from_secs(30);
const FILES: usize = 20;
const SIZE: usize = 400 * 1024;
/// File `i` takes `(i + 1) * STEP` to stream, so the kill lands while some are done, one or two
/// are committing and the rest are mid-body.
const STEP: Duration = Duration::from_millis(300);
/// When the kill comes, after the last upstream request arrived.
const KILL_AT: Duration = Duration::from_millis(3000);

fn path(i: usize) -> String {
    format!("/distfiles/{i:02}/file-{i}.tar.gz")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_twenty_fills_then_restart_serves_only_whole_files() {
    let bodies: Vec<Bytes> = (0..FILES).map(|i| bytes_of(SIZE, 500 + i as u64)).collect();
    let mut builder = Origin::builder();
    for (i, body) in bodies.iter().enumerate() {
        let rate = (SIZE as f64 / (STEP.as_secs_f64() * (i + 1) as f64)) as u64;
        let reply = Reply::file(body.clone()).throttle(rate);
        let reply = match i % 3 {
            0 => reply,
            1 => reply.chunked(),
            _ => reply.close_delimited(),
        };
        builder = builder.route(&path(i), reply);
    }
    let origin = builder.start().await;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let args = [
        "--source",
        &origin.url(),
        "--cache",
        cache.to_str().unwrap(),
    ];
    let bin = Binary::start(&args).await;

    // One reader per file, and for every other file a second reader that joins the fill.
    let mut readers: Vec<(usize, tokio::task::JoinHandle<Got>)> = Vec::new();
    for i in 0..FILES {
        let url = bin.url(&path(i));
        readers.push((i, tokio::spawn(async move { get(&url).await })));
    }
    let started = Instant::now();
    while origin.total_hits() < FILES {
        assert!(started.elapsed() < LIMIT, "every fill reached the upstream");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let all_asked = Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in (0..FILES).step_by(2) {
        let url = bin.url(&path(i));
        readers.push((i, tokio::spawn(async move { get(&url).await })));
    }
    tokio::time::sleep_until(all_asked + KILL_AT).await;
    let in_progress = tmp_files(&cache).len();
    bin.kill9().await;

    // Every reader either got the whole file cleanly or saw its body end with an error.
    let mut cut = [false; FILES];
    for (i, reader) in readers {
        let got = timeout(LIMIT, reader)
            .await
            .expect("reader ends")
            .expect("no panic");
        assert_eq!(
            got.status,
            200,
            "{}: the head came before the crash",
            path(i)
        );
        match got.error {
            None => assert_eq!(
                sha256(&got.body),
                sha256(&bodies[i]),
                "{}: a body that ended cleanly is whole ({} bytes)",
                path(i),
                got.body.len()
            ),
            Some(_) => {
                assert_eq!(&got.body[..], &bodies[i][..got.body.len()], "{}", path(i));
                cut[i] = true;
            }
        }
    }
    // On disk after the crash: an entry in place is a whole one. A reader may be cut although
    // its fill had committed (the fill runs ahead of its slowest reader), never the reverse.
    let mut committed = [false; FILES];
    for (i, body) in bodies.iter().enumerate() {
        if let Ok(on_disk) = std::fs::read(cache.join(&path(i)[1..])) {
            assert_eq!(sha256(&on_disk), sha256(body), "{}: partial entry", path(i));
            committed[i] = true;
        }
    }
    let unfinished = committed.iter().filter(|c| !**c).count();
    let cut_count = cut.iter().filter(|c| **c).count();
    eprintln!(
        "crash: {unfinished} of {FILES} fills unfinished at the kill ({in_progress} temp files), \
         {cut_count} readers cut"
    );
    assert!(
        (FILES / 2..FILES).contains(&unfinished),
        "the kill came mid-way: {unfinished} of {FILES} fills unfinished"
    );

    let bin = Binary::start(&args).await;
    assert_eq!(
        tmp_files(&cache),
        Vec::<std::path::PathBuf>::new(),
        "crash leftovers removed at start-up"
    );
    let before: Vec<usize> = (0..FILES).map(|i| origin.hits(&path(i))).collect();
    let mut again = Vec::new();
    for i in 0..FILES {
        let url = bin.url(&path(i));
        again.push(tokio::spawn(async move { get(&url).await }));
    }
    for (i, task) in again.into_iter().enumerate() {
        let got = timeout(LIMIT, task)
            .await
            .expect("in time")
            .expect("no panic");
        let p = path(i);
        assert_eq!(
            (got.status.as_u16(), got.error.as_deref()),
            (200, None),
            "{p}"
        );
        assert_eq!(
            sha256(&got.body),
            sha256(&bodies[i]),
            "{p}: whole after restart"
        );
        let refetched = origin.hits(&p) - before[i];
        if committed[i] {
            assert_eq!(
                (got.cache(), refetched),
                ("HIT", 0),
                "{p}: committed before the kill"
            );
        } else {
            assert_eq!(
                (got.cache(), refetched),
                ("MISS", 1),
                "{p}: unfinished at the kill, so fetched again, once"
            );
        }
    }
    // Now every file is a hit, from disk, and the upstream is not asked again.
    let total = origin.total_hits();
    for (i, body) in bodies.iter().enumerate() {
        let got = get(&bin.url(&path(i))).await;
        assert_eq!(
            (got.status.as_u16(), got.cache(), got.error.as_deref()),
            (200, "HIT", None),
            "{}",
            path(i)
        );
        assert_eq!(sha256(&got.body), sha256(body));
    }
    assert_eq!(origin.total_hits(), total);
    assert_eq!(tmp_files(&cache), Vec::<std::path::PathBuf>::new());
    bin.kill9().await;
    origin.stop().await;
}
