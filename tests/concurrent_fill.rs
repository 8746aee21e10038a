//! One fetch, many readers: concurrent requests for one uncached path make one
//! upstream request, everyone streams at their own pace, and nobody — a client
//! that never reads, or the first client leaving — holds up or cancels the fill.

mod support;

use std::time::{Duration, Instant};
use support::app::{committed, source, TestApp};
use support::client::{self, bytes_of, get, sha256};
use support::origin::{Origin, Reply};
use tokio::io::AsyncWriteExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_clients_one_upstream_request() {
    let body = bytes_of(512 * 1024, 10);
    // About 2.5 s for the whole file upstream.
    let origin = Origin::builder()
        .route(
            "/big.tar.xz",
            Reply::file(body.clone()).throttle(200 * 1024),
        )
        .start()
        .await;
    let app = TestApp::start(|c| source(c, &origin.url())).await;
    let url = app.url("/big.tar.xz");
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(32));
    let mut clients = Vec::new();
    for _ in 0..32 {
        let url = url.clone();
        let barrier = barrier.clone();
        clients.push(tokio::spawn(async move {
            barrier.wait().await;
            let sent = Instant::now();
            let (parts, body, _) = client::open(&url, &[]).await;
            let head_at = Instant::now();
            let (bytes, err) = client::read_body(body).await;
            (sent, head_at, parts.status, bytes, err)
        }));
    }
    let mut results = Vec::new();
    for c in clients {
        results.push(c.await.unwrap());
    }
    let first_sent = results.iter().map(|r| r.0).min().unwrap();
    let last_sent = results.iter().map(|r| r.0).max().unwrap();
    assert!(
        last_sent - first_sent < Duration::from_millis(50),
        "clients started together"
    );
    let first_head = results.iter().map(|r| r.1).min().unwrap();
    for (_, head_at, status, bytes, err) in &results {
        assert_eq!(*status, 200);
        assert!(err.is_none(), "{err:?}");
        assert_eq!(sha256(bytes), sha256(&body));
        // Every client got its head at once, not after the 2.5 s download.
        assert!(
            *head_at - first_head < Duration::from_millis(250),
            "head {:?} after the first",
            *head_at - first_head
        );
    }
    assert_eq!(
        origin.hits("/big.tar.xz"),
        1,
        "exactly one upstream request"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_delays_nobody() {
    // 16 MiB at 8 MiB/s: far more than socket buffers hold.
    let body = bytes_of(16 * 1024 * 1024, 11);
    let origin = Origin::builder()
        .route(
            "/huge.bin",
            Reply::file(body.clone()).throttle(8 * 1024 * 1024),
        )
        .start()
        .await;
    let app = TestApp::start(|c| source(c, &origin.url())).await;

    let mut stuck = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    stuck
        .write_all(b"GET /huge.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    let started = Instant::now();
    let other = get(&app.url("/huge.bin")).await;
    let other_took = started.elapsed();
    assert!(other.error.is_none());
    assert_eq!(sha256(&other.body), sha256(&body));
    assert!(
        other_took < Duration::from_secs(6),
        "second reader took {other_took:?}"
    );
    committed(&app.cache.join("huge.bin")).await;
    assert_eq!(origin.hits("/huge.bin"), 1);
    drop(stuck);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fill_finishes_when_the_first_client_leaves() {
    let body = bytes_of(300 * 1024, 12);
    let origin = Origin::builder()
        .route("/leave.bin", Reply::file(body.clone()).throttle(300 * 1024))
        .start()
        .await;
    let app = TestApp::start(|c| source(c, &origin.url())).await;
    {
        let (parts, incoming, _) = client::open(&app.url("/leave.bin"), &[]).await;
        assert_eq!(parts.status, 200);
        drop(incoming);
    }
    committed(&app.cache.join("leave.bin")).await;
    origin.stop().await;
    let hit = get(&app.url("/leave.bin")).await;
    assert_eq!(hit.cache(), "HIT");
    assert_eq!(sha256(&hit.body), sha256(&body));
    assert_eq!(origin.hits("/leave.bin"), 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_clients_arriving_mid_download_stream_the_growing_file() {
    let body = bytes_of(400 * 1024, 13);
    let origin = Origin::builder()
        .route("/mid.tgz", Reply::file(body.clone()).throttle(200 * 1024))
        .start()
        .await;
    let app = TestApp::start(|c| source(c, &origin.url())).await;
    let dir = tempfile::tempdir().unwrap();
    let first_out = dir.path().join("first");
    let url = app.url("/mid.tgz");
    let (u1, o1) = (url.clone(), first_out.to_str().unwrap().to_string());
    let first = tokio::spawn(async move { client::curl(&["-sS", "-o", &o1, &u1]).await });
    tokio::time::sleep(Duration::from_millis(700)).await;
    let late_out = dir.path().join("late");
    let (code, _, err) =
        client::curl(&["-sS", "-D", "-", "-o", late_out.to_str().unwrap(), &url]).await;
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = first.await.unwrap();
    assert_eq!(code, 0, "{err}");
    assert_eq!(sha256(&std::fs::read(&first_out).unwrap()), sha256(&body));
    assert_eq!(sha256(&std::fs::read(&late_out).unwrap()), sha256(&body));
    assert_eq!(origin.hits("/mid.tgz"), 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_leaving_before_the_upstream_answers_cancels_nothing() {
    let body = bytes_of(100_000, 14);
    let origin = Origin::builder()
        .route(
            "/slowhead.bin",
            Reply::file(body.clone()).first_byte_delay(Duration::from_secs(2)),
        )
        .start()
        .await;
    let app = TestApp::start(|mut c| {
        c.upstream.idle_timeout = Duration::from_secs(5);
        source(c, &origin.url())
    })
    .await;
    // The first client gives up after 300 ms, long before the upstream's headers.
    let mut leader = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    leader
        .write_all(b"GET /slowhead.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let url = app.url("/slowhead.bin");
    let follower = tokio::spawn(async move { get(&url).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(leader);
    let got = follower.await.unwrap();
    assert_eq!(got.status, 200);
    assert_eq!(sha256(&got.body), sha256(&body));
    committed(&app.cache.join("slowhead.bin")).await;
    assert_eq!(
        origin.hits("/slowhead.bin"),
        1,
        "one upstream request although the first client left"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_store_cannot_take_a_fill_every_waiter_is_served_uncached() {
    let body = bytes_of(50_000, 15);
    let origin = Origin::builder()
        .route(
            "/nofill.bin",
            Reply::file(body.clone()).first_byte_delay(Duration::from_millis(300)),
        )
        .start()
        .await;
    let app = TestApp::start(|c| source(c, &origin.url())).await;
    // Without its temporary directory the store cannot start any fill
    // (as with a full disk or no free descriptors).
    std::fs::remove_dir(app.cache.join(".package-cache/tmp")).unwrap();
    let mut clients = Vec::new();
    for _ in 0..8 {
        let url = app.url("/nofill.bin");
        clients.push(tokio::spawn(async move { get(&url).await }));
    }
    for c in clients {
        let got = c.await.unwrap();
        assert_eq!((got.status.as_u16(), got.cache()), (200, "PASS"));
        assert_eq!(sha256(&got.body), sha256(&body));
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_fill_limit_misses_pass_uncached() {
    let body = bytes_of(200_000, 16);
    let origin = Origin::builder()
        .route("/one.bin", Reply::file(body.clone()).throttle(200_000))
        .route("/two.bin", Reply::file(body.clone()))
        .start()
        .await;
    let app = TestApp::start(|mut c| {
        c.upstream.max_fills = 1;
        source(c, &origin.url())
    })
    .await;
    let url = app.url("/one.bin");
    let first = tokio::spawn(async move { get(&url).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = get(&app.url("/two.bin")).await;
    assert_eq!(
        (second.status.as_u16(), second.cache()),
        (200, "PASS"),
        "the only fill slot is taken"
    );
    assert_eq!(sha256(&second.body), sha256(&body));
    assert_eq!(first.await.unwrap().cache(), "MISS");
    committed(&app.cache.join("one.bin")).await;
    assert!(!app.cache.join("two.bin").exists());
    app.stop().await;
}

/// A fill that fails before its first body byte (the upstream resets right after the head)
/// fails only its leader, whose own attempt it was. The requests that joined it compete to
/// lead a new fill, as pingora's cache lock lets them: one fetches again, the others follow
/// it, and all of them get the file; a 404 or a refusal would still be shared as it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_joined_a_fill_that_failed_before_its_first_byte_fetch_again() {
    let body = bytes_of(300_000, 17);
    let origin = Origin::builder()
        .route_first(
            "/flaky.bin",
            1,
            Reply::file(body.clone())
                .first_byte_delay(Duration::from_millis(400))
                .reset_after(0),
        )
        .route(
            "/flaky.bin",
            Reply::file(body.clone()).first_byte_delay(Duration::from_millis(200)),
        )
        .start()
        .await;
    let app = TestApp::start(|c| source(c, &origin.url())).await;
    let url = app.url("/flaky.bin");
    let leader = {
        let url = url.clone();
        tokio::spawn(async move { get(&url).await })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    let followers: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { get(&url).await })
        })
        .collect();
    let led = leader.await.unwrap();
    assert_eq!(led.status, 502, "the leader's own attempt failed");
    assert!(String::from_utf8_lossy(&led.body).starts_with("package-cache: "));
    for follower in followers {
        let got = follower.await.unwrap();
        assert_eq!(
            (got.status.as_u16(), got.error.as_deref()),
            (200, None),
            "{:?}",
            String::from_utf8_lossy(&got.body)
        );
        assert_eq!(sha256(&got.body), sha256(&body));
    }
    assert_eq!(
        origin.hits("/flaky.bin"),
        2,
        "the failed attempt, then one more for every follower"
    );
    committed(&app.cache.join("flaky.bin")).await;
    let later = get(&url).await;
    assert_eq!((later.status.as_u16(), later.cache()), (200, "HIT"));
    assert_eq!(sha256(&later.body), sha256(&body));
    assert_eq!(origin.hits("/flaky.bin"), 2);
    app.stop().await;
}

/// An upstream that answers with an error (as one that cannot be reached, or does not answer
/// in time) would do the same again at once: every client that joined the attempt shares its
/// answer, and many clients still cost one upstream request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_error_is_shared_by_every_client_that_joined_the_attempt() {
    let origin = Origin::builder()
        .route(
            "/down.bin",
            Reply::status(503).first_byte_delay(Duration::from_millis(400)),
        )
        .start()
        .await;
    let app = TestApp::start(|c| source(c, &origin.url())).await;
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let url = app.url("/down.bin");
            tokio::spawn(async move { get(&url).await })
        })
        .collect();
    for client in clients {
        let got = client.await.unwrap();
        assert_eq!(got.status, 502);
        assert!(String::from_utf8_lossy(&got.body).starts_with("package-cache: "));
    }
    assert_eq!(origin.hits("/down.bin"), 1, "eight clients, one attempt");
    app.stop().await;
}
