//! The shared object-store tier's client against a real Ceph RGW (tests/support/rgw.rs):
//! publication and read-back, racing writers, partial and abandoned uploads, tampered
//! objects, an outage (breaker open, then closed), documents, artifacts, maintenance.
//! No mocks: every request goes to radosgw on loopback; each test has its own prefix.

mod support;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use package_cache::config::SharedStoreConfig;
use package_cache::store::shared::{
    ArtifactInfo, BreakerState, Damage, EntryInfo, Error, Published, SharedBody, SharedStore,
    UploadHint,
};
use package_cache::store::DocMeta;
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};
use support::rgw::{self, Rgw, S3};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const LIMIT: Duration = Duration::from_secs(120);

/// One node's client with the tracker and token that own its background tasks.
struct Node {
    store: SharedStore,
    tracker: TaskTracker,
    cancel: CancellationToken,
}

impl Node {
    async fn open(config: &SharedStoreConfig) -> Node {
        let tracker = TaskTracker::new();
        let cancel = CancellationToken::new();
        let store = SharedStore::open(config, tracker.clone(), cancel.clone())
            .await
            .expect("open the shared store");
        Node {
            store,
            tracker,
            cancel,
        }
    }

    /// Waits until the background tasks spawned so far (aborts, deletes) are done.
    async fn settle(&self) {
        timeout(Duration::from_secs(30), async {
            while !self.tracker.is_empty() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("background tasks finish");
    }

    async fn close(self) {
        self.cancel.cancel();
        self.tracker.close();
        timeout(Duration::from_secs(30), self.tracker.wait())
            .await
            .expect("tasks stop");
    }
}

/// A prefix no other test (or run) uses.
fn prefix(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{test}-{}-{nanos:08x}", std::process::id())
}

/// `len` bytes of a deterministic pseudo-random sequence named by `seed`.
fn body(seed: u64, len: usize) -> Bytes {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn info(source: &str) -> EntryInfo {
    EntryInfo {
        headers: vec![("content-type".into(), "application/octet-stream".into())],
        source: source.into(),
        fetched_at: 1_700_000_000,
    }
}

/// Uploads `bytes` in uneven chunks (as an upstream delivers them).
async fn upload(
    store: &SharedStore,
    bytes: &Bytes,
    hint: UploadHint,
) -> Result<package_cache::store::shared::UploadedBody, Error> {
    let mut up = store.upload(hint).await?;
    let mut at = 0;
    let mut step = 1000;
    while at < bytes.len() {
        let end = (at + step).min(bytes.len());
        up.write(bytes.slice(at..end)).await?;
        at = end;
        step = (step * 3).min(700_000);
    }
    up.finish().await
}

/// Reads a verified body whole, or the error it ended with and what came before it.
async fn read_all(mut body: SharedBody) -> (Vec<u8>, Option<Error>) {
    let mut out = Vec::new();
    while let Some(item) = timeout(LIMIT, body.next())
        .await
        .expect("body chunk in time")
    {
        match item {
            Ok(chunk) => out.extend_from_slice(&chunk),
            Err(err) => return (out, Some(err)),
        }
    }
    (out, None)
}

async fn rgw() -> Option<&'static Rgw> {
    rgw::shared().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_publish_and_read_back_whole() {
    let Some(rgw) = rgw().await else { return };
    let p = prefix("publish");
    let node = Node::open(&rgw.config(&p)).await;
    let store = &node.store;
    let s3 = rgw.s3();

    // A small body goes up in one PUT under its digest; a large one in parts under a
    // random name, or under its digest when the index listed one.
    let small = body(1, 70_000);
    let large = body(2, 12 * 1024 * 1024 + 4321);
    let listed = body(3, 6 * 1024 * 1024 + 5);
    let cases = [
        ("/distfiles/small.tar.gz", &small, UploadHint::default()),
        (
            "/distfiles/large.tar.xz",
            &large,
            UploadHint {
                size: Some(large.len() as u64),
                sha256: None,
            },
        ),
        (
            "/pypi/packages/listed-1.0.whl",
            &listed,
            UploadHint {
                size: None,
                sha256: Some(sha256(&listed)),
            },
        ),
    ];
    for (key, bytes, hint) in cases {
        assert!(store.lookup(key).await.unwrap().is_none(), "{key}: cold");
        let uploaded = timeout(LIMIT, upload(store, bytes, hint))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(uploaded.sha256(), sha256(bytes));
        let name = uploaded.name().to_string();
        let published = store.publish(key, uploaded, info(key)).await.unwrap();
        assert!(published.won(), "{key}: first writer wins");

        let found = store.lookup(key).await.unwrap().expect("published");
        assert_eq!(found.reference.key, key);
        assert_eq!(found.reference.body, name);
        assert_eq!(found.reference.size, bytes.len() as u64);
        assert_eq!(found.reference.sha256, sha256(bytes));
        assert_eq!(found.reference.meta, info(key));
        let (read, err) = read_all(store.body(&found).await.unwrap()).await;
        assert!(err.is_none(), "{key}: {err:?}");
        assert_eq!(read.len(), bytes.len());
        assert!(read == bytes[..], "{key}: the bytes published");

        // The layout: one reference object named by the key's hash, one body.
        let refs = s3.list(&format!("{p}/refs/")).await;
        assert!(refs.contains(&format!("{p}/{}", found.name())), "{refs:?}");
        let expected_body = match key {
            "/distfiles/large.tar.xz" => name.starts_with("bodies/u-"),
            _ => name == format!("bodies/{}", sha256(bytes)),
        };
        assert!(expected_body, "{key}: body named {name}");
    }
    assert_eq!(s3.list(&format!("{p}/bodies/")).await.len(), 3);
    assert!(store.pending_uploads().await.unwrap().is_empty());
    let stats = store.stats();
    assert_eq!(stats.published, 3);
    assert_eq!(stats.failures, 0);
    assert!(stats.bytes_up >= (small.len() + large.len() + listed.len()) as u64);
    assert_eq!(store.breaker(), BreakerState::Closed);

    // The same bytes under another key (listed digest): not sent again.
    let before = store.stats().bytes_up;
    let again = upload(
        store,
        &listed,
        UploadHint {
            size: Some(listed.len() as u64),
            sha256: Some(sha256(&listed)),
        },
    )
    .await
    .unwrap();
    assert_eq!(
        store.stats().bytes_up,
        before,
        "an existing body is not re-sent"
    );
    let published = store
        .publish("/pypi/files/mirror/listed-1.0.whl", again, info("x"))
        .await
        .unwrap();
    assert_eq!(
        published.found().reference.body,
        format!("bodies/{}", sha256(&listed))
    );
    assert_eq!(s3.list(&format!("{p}/bodies/")).await.len(), 3);
    node.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_writers_converge_on_one_reference_and_one_body() {
    let Some(rgw) = rgw().await else { return };
    let p = prefix("race");
    let a = Node::open(&rgw.config(&p)).await;
    let b = Node::open(&rgw.config(&p)).await;
    let s3 = rgw.s3();
    for round in 0..3u64 {
        let key = format!("/distfiles/race-{round}.tar.gz");
        // Different bytes (a mirror changed the file between two fetches), big enough
        // to go up in parts under random names: the loser's must be deleted.
        let (bytes_a, bytes_b) = (body(10 + round, 6 << 20), body(20 + round, 6 << 20));
        let (up_a, up_b) = tokio::join!(
            upload(&a.store, &bytes_a, UploadHint::default()),
            upload(&b.store, &bytes_b, UploadHint::default())
        );
        let (up_a, up_b) = (up_a.unwrap(), up_b.unwrap());
        assert_ne!(up_a.name(), up_b.name());
        assert_eq!(
            s3.list(&format!("{p}/bodies/")).await.len(),
            round as usize + 2
        );
        let (pa, pb) = tokio::join!(
            a.store.publish(&key, up_a, info("a")),
            b.store.publish(&key, up_b, info("b"))
        );
        let (pa, pb) = (pa.unwrap(), pb.unwrap());
        assert!(
            pa.won() ^ pb.won(),
            "round {round}: exactly one writer wins"
        );
        assert_eq!(
            pa.found().reference,
            pb.found().reference,
            "both see one reference"
        );
        let winner = pa.found().reference.clone();
        let winning_bytes = match (pa, pb) {
            (Published::Won(_), _) => &bytes_a,
            _ => &bytes_b,
        };
        // The loser deleted its body at once: one body per round is left.
        let bodies = s3.list(&format!("{p}/bodies/")).await;
        assert_eq!(
            bodies.len(),
            round as usize + 1,
            "round {round}: {bodies:?}"
        );
        assert!(bodies.contains(&format!("{p}/{}", winner.body)));
        for node in [&a, &b] {
            let found = node.store.lookup(&key).await.unwrap().unwrap();
            assert_eq!(found.reference, winner);
            let (read, err) = read_all(node.store.body(&found).await.unwrap()).await;
            assert!(err.is_none() && read == winning_bytes[..]);
        }
    }
    // Identical small bodies share one digest-named object: the loser keeps it.
    let same = body(99, 10_000);
    let (up_a, up_b) = tokio::join!(
        upload(&a.store, &same, UploadHint::default()),
        upload(&b.store, &same, UploadHint::default())
    );
    let (pa, pb) = tokio::join!(
        a.store.publish("/same", up_a.unwrap(), info("a")),
        b.store.publish("/same", up_b.unwrap(), info("b"))
    );
    let (pa, pb) = (pa.unwrap(), pb.unwrap());
    assert!(pa.won() ^ pb.won());
    a.settle().await;
    b.settle().await;
    let found = a.store.lookup("/same").await.unwrap().unwrap();
    let (read, err) = read_all(a.store.body(&found).await.unwrap()).await;
    assert!(
        err.is_none() && read == same[..],
        "the shared body survived the loser"
    );
    let stats = (a.store.stats(), b.store.stats());
    assert_eq!(stats.0.published + stats.1.published, 4);
    assert_eq!(stats.0.races_lost + stats.1.races_lost, 4);
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_and_abandoned_uploads_are_never_visible() {
    let Some(rgw) = rgw().await else { return };
    let p = prefix("partial");
    let node = Node::open(&rgw.config(&p)).await;
    let store = &node.store;
    let s3 = rgw.s3();
    let bytes = body(5, 11 << 20);

    // Two parts are up, the upload is not finished: nothing is visible.
    let mut up = store.upload(UploadHint::default()).await.unwrap();
    up.write(bytes.slice(..(10 << 20) + 1)).await.unwrap();
    assert!(s3.list(&format!("{p}/")).await.is_empty(), "no object yet");
    assert!(store.lookup("/a").await.unwrap().is_none());
    let pending = store.pending_uploads().await.unwrap();
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert!(pending[0].name.starts_with("bodies/u-"));
    // Dropped (the fill failed): the upload is aborted.
    drop(up);
    node.settle().await;
    assert!(
        store.pending_uploads().await.unwrap().is_empty(),
        "aborted on drop"
    );
    assert!(s3.list(&format!("{p}/")).await.is_empty());

    // A body that is not what was announced is never completed.
    for hint in [
        UploadHint {
            size: Some(bytes.len() as u64 + 1),
            sha256: None,
        },
        UploadHint {
            size: None,
            sha256: Some(sha256(b"something else")),
        },
    ] {
        let err = match upload(store, &bytes, hint.clone()).await {
            Err(err) => err,
            Ok(_) => panic!("{hint:?}: a mismatching body was accepted"),
        };
        assert!(matches!(err, Error::Rejected { .. }), "{err}");
        node.settle().await;
        assert!(s3.list(&format!("{p}/")).await.is_empty(), "{hint:?}");
        assert!(
            store.pending_uploads().await.unwrap().is_empty(),
            "{hint:?}"
        );
    }
    let err = upload(
        store,
        &bytes,
        UploadHint {
            size: Some(100),
            sha256: None,
        },
    )
    .await
    .err()
    .expect("too long");
    assert!(matches!(
        err,
        Error::Rejected {
            damage: Damage::Long { .. }
        }
    ));

    // A node killed mid-upload never aborts: the sweep does, once the upload is stale.
    let mut up = store.upload(UploadHint::default()).await.unwrap();
    up.write(bytes.slice(..6 << 20)).await.unwrap();
    std::mem::forget(up);
    assert_eq!(store.pending_uploads().await.unwrap().len(), 1);
    assert_eq!(
        store
            .abort_stale_uploads(Duration::from_secs(3600))
            .await
            .unwrap(),
        0
    );
    assert_eq!(store.abort_stale_uploads(Duration::ZERO).await.unwrap(), 1);
    assert!(store.pending_uploads().await.unwrap().is_empty());
    assert!(s3.list(&format!("{p}/")).await.is_empty());
    assert_eq!(store.stats().published, 0);
    node.close().await;

    // A node restarted under its name aborts what it left at once, and only that.
    let named = |node: &str| {
        let mut config = rgw.config(&p);
        config.node = Some(node.into());
        config
    };
    let (n1, n2) = (
        Node::open(&named("n1")).await,
        Node::open(&named("n2")).await,
    );
    let mut left = n1.store.upload(UploadHint::default()).await.unwrap();
    left.write(bytes.slice(..6 << 20)).await.unwrap();
    std::mem::forget(left);
    let mut live = n2.store.upload(UploadHint::default()).await.unwrap();
    live.write(bytes.slice(..6 << 20)).await.unwrap();
    let restarted = Node::open(&named("n1")).await;
    assert_eq!(restarted.store.abort_own_uploads().await.unwrap(), 1);
    let pending = restarted.store.pending_uploads().await.unwrap();
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert!(pending[0].name.starts_with("bodies/u-n2-"), "{pending:?}");
    let finished = live.finish().await.unwrap();
    assert!(finished.name().starts_with("bodies/u-n2-"));
    // Never published: deleted when dropped.
    drop(finished);
    n2.settle().await;
    assert!(s3.list(&format!("{p}/")).await.is_empty());
    for node in [n1, n2, restarted] {
        node.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_bodies_are_detected_never_delivered_and_replaced() {
    let Some(rgw) = rgw().await else { return };
    let p = prefix("tamper");
    let node = Node::open(&rgw.config(&p)).await;
    let store = &node.store;
    let s3 = rgw.s3();

    for (case, len) in [("small", 300_000usize), ("large", 7 << 20)] {
        let key = format!("/distfiles/{case}.tar.gz");
        let good = body(len as u64, len);
        let uploaded = upload(store, &good, UploadHint::default()).await.unwrap();
        store.publish(&key, uploaded, info(&key)).await.unwrap();
        let found = store.lookup(&key).await.unwrap().unwrap();
        let object = format!("{p}/{}", found.reference.body);

        // Same length, one byte flipped near the end.
        let mut bad = good.to_vec();
        bad[len - 10] ^= 0x40;
        s3.put(&object, &bad).await;
        let before = store.stats().damaged;
        let (read, err) = read_all(store.body(&found).await.unwrap()).await;
        let err = err.expect("a tampered body ends in an error");
        assert!(err.is_damaged(), "{case}: {err}");
        assert!(matches!(
            err,
            Error::Damaged {
                damage: Damage::Digest { .. },
                ..
            }
        ));
        assert!(
            read.len() < len,
            "{case}: the whole body was never handed out"
        );
        assert!(
            read == bad[..read.len()],
            "what came was what the store had"
        );
        assert_eq!(store.stats().damaged, before + 1);
        node.settle().await;
        assert_eq!(
            s3.get(&object).await.0,
            404,
            "{case}: the damaged body was deleted"
        );
        let err = store.body(&found).await.err().expect("missing body");
        assert!(matches!(
            err,
            Error::Damaged {
                damage: Damage::Missing,
                ..
            }
        ));

        // Fetched again (from upstream): the reference is swapped for a good one.
        let again = upload(store, &good, UploadHint::default()).await.unwrap();
        let replaced = store.replace(&found, again, info(&key)).await.unwrap();
        assert!(replaced.won());
        let fresh = store.lookup(&key).await.unwrap().unwrap();
        let (read, err) = read_all(store.body(&fresh).await.unwrap()).await;
        assert!(err.is_none() && read == good[..], "{case}: replaced");
        // The stale handle cannot swap it back.
        let other = upload(store, &body(7, 1000), UploadHint::default())
            .await
            .unwrap();
        let lost = store.replace(&found, other, info("stale")).await.unwrap();
        assert!(!lost.won());
        assert_eq!(lost.found().reference, fresh.reference);

        // Truncated and extended bodies are refused before a byte is read.
        let object = format!("{p}/{}", fresh.reference.body);
        for tampered in [&good[..len - 1], &[&good[..], b"!"].concat()[..]] {
            s3.put(&object, tampered).await;
            let err = store.body(&fresh).await.err().expect("refused");
            assert!(err.is_damaged(), "{err}");
        }
    }
    // A reference that is not one: reported, removable.
    s3.put(&format!("{p}/{}", rgw_ref("/junk")), b"{not json")
        .await;
    let err = store.lookup("/junk").await.expect_err("damaged reference");
    assert!(matches!(
        err,
        Error::Damaged {
            damage: Damage::Unreadable(_),
            ..
        }
    ));
    store.remove("/junk").await.unwrap();
    assert!(store.lookup("/junk").await.unwrap().is_none());
    node.close().await;
}

/// The reference name of `key` (`refs/<sha256 of key>`), as the layout documents it.
fn rgw_ref(key: &str) -> String {
    format!("refs/{}", sha256(key.as_bytes()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_opens_the_breaker_and_a_restart_closes_it() {
    let Some(rgw) = rgw().await else { return };
    let gateway = rgw.gateway().await;
    let p = prefix("outage");
    let mut config = rgw.config_for(&gateway.endpoint(), &p);
    config.timeout = Duration::from_secs(2);
    config.connect_timeout = Duration::from_secs(1);
    config.breaker_failures = 2;
    config.breaker_cooldown = Duration::from_millis(500);
    let node = Node::open(&config).await;
    let store = &node.store;
    let bytes = body(42, 50_000);
    let uploaded = upload(store, &bytes, UploadHint::default()).await.unwrap();
    store
        .publish("/kept", uploaded, info("/kept"))
        .await
        .unwrap();

    gateway.stop().await;
    for attempt in 0..2 {
        let began = Instant::now();
        let err = store.lookup("/kept").await.expect_err("store down");
        assert!(err.is_unavailable(), "{err}");
        eprintln!("outage: attempt {attempt} failed in {:?}", began.elapsed());
        assert!(
            began.elapsed() < config.timeout * 2 + Duration::from_secs(1),
            "attempt {attempt}: failed within the limits ({:?})",
            began.elapsed()
        );
    }
    assert_eq!(store.breaker(), BreakerState::Open);
    let began = Instant::now();
    let err = store.upload(UploadHint {
        size: None,
        sha256: Some(sha256(&bytes)),
    });
    let err = err.await.err().expect("skipped");
    assert!(matches!(err, Error::Unavailable { .. }), "{err}");
    assert!(
        began.elapsed() < Duration::from_millis(100),
        "skipped at once"
    );
    let stats = store.stats();
    assert_eq!((stats.trips, stats.skipped), (1, 1));
    assert!(stats.failures >= 2);

    // After the cooldown one call probes; the store is still down: open again.
    tokio::time::sleep(config.breaker_cooldown).await;
    assert!(store.lookup("/kept").await.unwrap_err().is_unavailable());
    assert_eq!(store.breaker(), BreakerState::Open);

    // Back: the upkeep task's probe closes the breaker without a request.
    gateway.start().await;
    store.spawn_upkeep();
    let back = Instant::now();
    timeout(Duration::from_secs(20), async {
        while store.breaker() != BreakerState::Closed {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the breaker closes once radosgw is back");
    eprintln!(
        "outage: breaker closed {:?} after the restart",
        back.elapsed()
    );
    let found = store
        .lookup("/kept")
        .await
        .unwrap()
        .expect("the data survived");
    let (read, err) = read_all(store.body(&found).await.unwrap()).await;
    assert!(err.is_none() && read == bytes[..]);
    node.close().await;

    // A store that accepts connections but never answers: bounded by the head timeout.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = rgw.config_for(&format!("http://{}", silent.local_addr().unwrap()), &p);
    config.timeout = Duration::from_secs(1);
    let node = Node::open(&config).await;
    let began = Instant::now();
    let err = node.store.lookup("/kept").await.expect_err("no answer");
    assert!(err.is_unavailable(), "{err}");
    let took = began.elapsed();
    eprintln!("outage: a silent store failed in {took:?}");
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(4),
        "{took:?}"
    );
    node.close().await;
    drop(silent);
}

/// A TCP relay in front of RGW that forwards the store's answers until `budget` bytes have
/// gone through (negative: no limit), then holds every connection open in silence.
async fn stalling_relay(
    upstream: std::net::SocketAddr,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicI64>,
) {
    use std::sync::atomic::{AtomicI64, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let budget = std::sync::Arc::new(AtomicI64::new(-1));
    let shared = budget.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let budget = shared.clone();
            tokio::spawn(async move {
                let server = tokio::net::TcpStream::connect(upstream).await.unwrap();
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                tokio::spawn(async move { tokio::io::copy(&mut cr, &mut sw).await });
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    let n = match sr.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    let left = budget.load(Ordering::SeqCst);
                    let send = if left < 0 { n } else { n.min(left as usize) };
                    if left >= 0 {
                        budget.fetch_sub(send as i64, Ordering::SeqCst);
                    }
                    if cw.write_all(&buf[..send]).await.is_err() {
                        return;
                    }
                    if send < n {
                        // Silence, with the connection open, until the test ends.
                        std::future::pending::<()>().await;
                    }
                }
            });
        }
    });
    (addr, budget)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stalls_fails_within_the_idle_timeout() {
    let Some(rgw) = rgw().await else { return };
    let upstream = rgw
        .endpoint()
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let (relay, budget) = stalling_relay(upstream).await;
    let p = prefix("stall");
    let mut config = rgw.config_for(&format!("http://{relay}"), &p);
    config.idle_timeout = Duration::from_secs(1);
    let node = Node::open(&config).await;
    let bytes = body(77, 3 << 20);
    let up = upload(&node.store, &bytes, UploadHint::default())
        .await
        .unwrap();
    node.store
        .publish("/stall", up, info("/stall"))
        .await
        .unwrap();
    let found = node.store.lookup("/stall").await.unwrap().unwrap();

    // The head and 256 KiB of the body come through, then nothing.
    budget.store(256 * 1024, std::sync::atomic::Ordering::SeqCst);
    let began = Instant::now();
    let (read, err) = read_all(node.store.body(&found).await.unwrap()).await;
    let took = began.elapsed();
    eprintln!("stall: failed after {} bytes in {took:?}", read.len());
    let err = err.expect("a stalled body fails");
    assert!(err.is_unavailable(), "{err}");
    assert!(read.len() < bytes.len() && read == bytes[..read.len()]);
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(5),
        "{took:?}"
    );
    node.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_and_artifacts_round_trip() {
    let Some(rgw) = rgw().await else { return };
    let p = prefix("docs");
    let node = Node::open(&rgw.config(&p)).await;
    let store = &node.store;
    let s3 = rgw.s3();

    let key = "/pypi/simple/six/#json";
    assert!(store.read_doc::<DocMeta>(key).await.unwrap().is_none());
    let mut meta = DocMeta {
        key: key.into(),
        headers: vec![(
            "content-type".into(),
            "application/vnd.pypi.simple.v1+json".into(),
        )],
        validated_at: 1_700_000_000,
        upstream_etag: Some("\"abc\"".into()),
        upstream_last_modified: None,
        source: "http://index.example/simple/six/".into(),
        hashes: vec![(
            "/pypi/packages/six.whl".into(),
            package_cache::digest::Digest::sha256(&"00".repeat(32)).unwrap(),
        )],
        upstream_note: None,
    };
    let v1 = Bytes::from_static(b"{\"files\": []}");
    store.write_doc(key, &meta, v1.clone()).await.unwrap();
    let doc = store.read_doc::<DocMeta>(key).await.unwrap().unwrap();
    assert_eq!((doc.meta.clone(), doc.body.clone()), (meta.clone(), v1));
    // The last writer wins.
    meta.validated_at += 300;
    let v2 = body(8, 3 << 20);
    store.write_doc(key, &meta, v2.clone()).await.unwrap();
    let doc = store.read_doc::<DocMeta>(key).await.unwrap().unwrap();
    assert_eq!((doc.meta, doc.body), (meta.clone(), v2.clone()));
    // Damaged in the bucket: reported, never returned.
    let object = format!("{p}/docs/{}", sha256(key.as_bytes()));
    let (status, stored) = s3.get(&object).await;
    assert_eq!(status, 200);
    let mut bad = stored.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    s3.put(&object, &bad).await;
    let err = store.read_doc::<DocMeta>(key).await.expect_err("damaged");
    assert!(err.is_damaged(), "{err}");
    s3.put(&object, &stored[..stored.len() - 1]).await;
    assert!(store
        .read_doc::<DocMeta>(key)
        .await
        .unwrap_err()
        .is_damaged());
    store.remove_doc(key).await.unwrap();
    assert!(store.read_doc::<DocMeta>(key).await.unwrap().is_none());

    // Artifacts by name and ABI.
    let abi = "cpython-311-x86_64-linux-gnu 3.11.2";
    let name = "six-1.16.0@py311.tgz";
    let archive = body(9, 200_000);
    let artifact = ArtifactInfo {
        abi: abi.into(),
        source_sha256: None,
        built: 1_700_000_100,
        job: "0f3c".into(),
    };
    assert!(store.lookup_artifact(abi, name).await.unwrap().is_none());
    let up = upload(store, &archive, UploadHint::default())
        .await
        .unwrap();
    let published = store
        .publish_artifact(name, up, artifact.clone())
        .await
        .unwrap();
    assert!(published.won());
    let found = store.lookup_artifact(abi, name).await.unwrap().unwrap();
    assert_eq!(found.reference.meta, artifact);
    assert!(found.name().starts_with("artifacts/") && found.name().ends_with(name));
    let (read, err) = read_all(store.body(&found).await.unwrap()).await;
    assert!(err.is_none() && read == archive[..]);
    assert!(store
        .lookup_artifact("cpython-312 3.12.1", name)
        .await
        .unwrap()
        .is_none());
    assert!(store.lookup_artifact(abi, "../x").await.unwrap().is_none());
    // A second build of the same artifact elsewhere adopts the first.
    let up = upload(store, &body(10, 200_000), UploadHint::default())
        .await
        .unwrap();
    let second = store.publish_artifact(name, up, artifact).await.unwrap();
    assert!(!second.won());
    node.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_lists_collects_and_touches() {
    let Some(rgw) = rgw().await else { return };
    let p = prefix("maint");
    let node = Node::open(&rgw.config(&p)).await;
    let store = &node.store;
    let s3: S3 = rgw.s3();
    for i in 0..3u64 {
        let key = format!("/f/{i}");
        let up = upload(
            store,
            &body(30 + i, 1000 + i as usize),
            UploadHint::default(),
        )
        .await
        .unwrap();
        store.publish(&key, up, info(&key)).await.unwrap();
    }
    let refs: Vec<_> = store.list_references().try_collect().await.unwrap();
    assert_eq!(refs.len(), 3);
    for listed in &refs {
        let found = store.read_listed(&listed.name).await.unwrap().unwrap();
        assert!(found.reference.key.starts_with("/f/"));
    }
    assert!(store
        .orphan_bodies(Duration::ZERO)
        .await
        .unwrap()
        .is_empty());

    // A purged key leaves its body to gc, which waits out the grace period.
    let gone = store.lookup("/f/1").await.unwrap().unwrap();
    store.remove("/f/1").await.unwrap();
    assert!(store
        .orphan_bodies(Duration::from_secs(3600))
        .await
        .unwrap()
        .is_empty());
    let orphans = store.orphan_bodies(Duration::ZERO).await.unwrap();
    assert_eq!(orphans.len(), 1);
    assert_eq!(orphans[0].name, gone.reference.body);
    store.delete_body(&orphans[0].name).await.unwrap();
    assert_eq!(store.list_bodies().count().await, 2);
    assert!(store.delete_body("refs/x").await.is_err(), "only bodies");

    // Last use: recorded at most once a day, with a conditional rewrite.
    let found = store.lookup("/f/0").await.unwrap().unwrap();
    assert!(!store.touch(&found).await.unwrap(), "used today already");
    let object = format!("{p}/{}", found.name());
    let mut old = found.reference.clone();
    old.last_used = 86_400;
    s3.put(&object, &serde_json::to_vec(&old).unwrap()).await;
    let stale = store.lookup("/f/0").await.unwrap().unwrap();
    assert_eq!(stale.reference.last_used, 86_400);
    assert!(store.touch(&stale).await.unwrap(), "a day old: recorded");
    let touched = store.lookup("/f/0").await.unwrap().unwrap();
    assert!(touched.reference.last_used > 86_400);
    assert!(!store.touch(&stale).await.unwrap(), "a stale handle loses");
    assert_eq!(store.stats().touches, 1);
    node.close().await;
}
