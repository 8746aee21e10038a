//! A misbehaving upstream — one that stalls, resets, lies about Content-Length or sends a
//! malformed head — fails only the requests for its own paths: each of their clients sees a
//! clean error (502/504, or a body that ends short), nothing is stored for them, and downloads
//! of other files through the same proxy at the same time complete byte for byte.
//! Single faults on their own are in `failure.rs` and `failover.rs`; this file runs them together.

mod support;

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use support::app::{committed, source, TestApp};
use support::client::{bytes_of, get, sha256, Got};
use support::origin::{Origin, Reply};
use tokio::time::timeout;

/// Every wait in this file ends within this.
const LIMIT: Duration = Duration::from_secs(30);

/// What a client must see for a faulty path.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// This status, before any body byte of the file: the fetch failed on its head.
    Status(u16),
    /// 200 (the head had gone out), then a body that ends with an error, short of the file,
    /// and a true prefix of `body`.
    Short,
}

struct Fault {
    path: &'static str,
    reply: Reply,
    expect: Expect,
    /// The bytes a `Short` body must be a prefix of.
    body: Bytes,
}

fn fault(path: &'static str, reply: Reply, expect: Expect) -> Fault {
    let body = reply.body().clone();
    Fault {
        path,
        reply,
        expect,
        body,
    }
}

/// A raw response head and body; `head` lines are joined with CRLF.
fn wire(head: &[&str], body: &[u8]) -> Bytes {
    let mut out = head.join("\r\n").into_bytes();
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body);
    Bytes::from(out)
}

fn faults() -> Vec<Fault> {
    let body = bytes_of(300_000, 70);
    let small = bytes_of(5, 71);
    let len = body.len().to_string();
    let longer = (body.len() + 100_000).to_string();
    // A chunked body whose second chunk-size line is not hex.
    let mut bad_chunks = format!("{:x}\r\n", 16_384).into_bytes();
    bad_chunks.extend_from_slice(&body[..16_384]);
    bad_chunks.extend_from_slice(b"\r\nzz\r\n");
    bad_chunks.extend_from_slice(&body[16_384..32_768]);
    let raw = |head: &[&str], body: &[u8]| Reply::raw(wire(head, body));
    vec![
        // Stalls: before the head, after the head, mid-body.
        fault("/stall-head", Reply::stall_headers(), Expect::Status(504)),
        fault(
            "/stall-zero",
            Reply::file(body.clone()).stall_after(0),
            Expect::Status(504),
        ),
        fault(
            "/stall-mid",
            Reply::file(body.clone()).stall_after(100_000),
            Expect::Short,
        ),
        // Resets: right after the head, mid-body.
        fault(
            "/reset-zero",
            Reply::file(body.clone()).reset_after(0),
            Expect::Status(502),
        ),
        fault(
            "/reset-mid",
            Reply::file(body.clone()).reset_after(100_000),
            Expect::Short,
        ),
        // Content-Length announces more than is sent: then a FIN, or the connection kept open.
        fault(
            "/long-fin",
            Reply::file(body.clone()).truncate_after(120_000),
            Expect::Short,
        ),
        fault(
            "/long-open",
            Reply::file(body.clone()).header("content-length", &longer),
            Expect::Short,
        ),
        fault(
            "/chunked-cut",
            Reply::file(body.clone()).chunked().truncate_after(120_000),
            Expect::Short,
        ),
        fault(
            "/chunked-garbage",
            Reply::raw(wire(
                &["HTTP/1.1 200 OK", "Transfer-Encoding: chunked"],
                &bad_chunks,
            )),
            Expect::Short,
        )
        .with_body(body.clone()),
        // Malformed heads.
        fault("/empty", Reply::raw(Bytes::new()), Expect::Status(502)),
        fault(
            "/bad-status-line",
            raw(&["HTTP/1.1 OK", "Content-Length: 5"], &small),
            Expect::Status(502),
        ),
        fault(
            "/not-http",
            raw(&["SSH-2.0-OpenSSH_9.2p1 Debian-2"], &small),
            Expect::Status(502),
        ),
        fault(
            "/binary",
            Reply::raw(Bytes::from_static(b"\x00\x01\x02\xff\xfe garbage\r\n\r\n")),
            Expect::Status(502),
        ),
        fault(
            "/header-without-colon",
            raw(
                &[
                    "HTTP/1.1 200 OK",
                    "Content-Length: 5",
                    "this line has no colon",
                ],
                &small,
            ),
            Expect::Status(502),
        ),
        fault(
            "/length-not-a-number",
            raw(&["HTTP/1.1 200 OK", "Content-Length: five"], &small),
            Expect::Status(502),
        ),
        fault(
            "/length-negative",
            raw(&["HTTP/1.1 200 OK", "Content-Length: -5"], &small),
            Expect::Status(502),
        ),
        fault(
            "/lengths-conflict",
            raw(
                &["HTTP/1.1 200 OK", "Content-Length: 5", "Content-Length: 7"],
                &small,
            ),
            Expect::Status(502),
        ),
        fault(
            "/lengths-conflict-in-one",
            raw(
                &["HTTP/1.1 200 OK", &format!("Content-Length: 5, {len}")],
                &small,
            ),
            Expect::Status(502),
        ),
    ]
}

impl Fault {
    fn with_body(mut self, body: Bytes) -> Self {
        self.body = body;
        self
    }

    fn check(&self, got: &Got) {
        let path = self.path;
        match self.expect {
            Expect::Status(status) => {
                assert_eq!(got.status, status, "{path}: {got:?}");
                assert!(got.error.is_none(), "{path}: the error page is whole");
                assert!(
                    String::from_utf8_lossy(&got.body).starts_with("package-cache: "),
                    "{path}: the proxy's own error text, never the upstream's bytes: {:?}",
                    String::from_utf8_lossy(&got.body)
                );
            }
            // A client that joined the fill after it had failed gets a whole 502.
            Expect::Short if got.status == 502 => {
                assert!(got.error.is_none(), "{path}: the error page is whole");
                assert!(
                    String::from_utf8_lossy(&got.body).starts_with("package-cache: "),
                    "{path}: {:?}",
                    String::from_utf8_lossy(&got.body)
                );
            }
            Expect::Short => {
                assert_eq!(got.status, 200, "{path}: the head had gone out");
                assert!(
                    got.error.is_some(),
                    "{path}: the body must end uncleanly, got {} bytes cleanly",
                    got.body.len()
                );
                // `/long-open` sends all it has; its Content-Length announced more.
                assert!(got.body.len() <= self.body.len(), "{path}");
                assert_eq!(
                    &got.body[..],
                    &self.body[..got.body.len()],
                    "{path}: what arrived is a true prefix"
                );
            }
        }
    }
}

/// Files under `<cache>/.package-cache/<sub>`, recursively.
fn state_files(cache: &Path, sub: &str) -> Vec<std::path::PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&cache.join(".package-cache").join(sub), &mut out);
    out
}

/// Waits (bounded) until no fill has a temporary file, then says what is left.
async fn tmp_settled(app: &TestApp) -> Vec<std::path::PathBuf> {
    for _ in 0..250 {
        if app.tmp_files().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.tmp_files()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faulty_replies_fail_cleanly_while_other_downloads_complete() {
    let faults = faults();
    // Good files stream for about 2.5 s, across every fault (idle timeout: 1 s).
    let good: Vec<(String, Bytes)> = (0..8)
        .map(|i| (format!("/good/{i}.bin"), bytes_of(1 << 20, 100 + i)))
        .collect();
    let hit = bytes_of(200_000, 99);
    let mut builder = Origin::builder().file("/hit.bin", hit.clone());
    for (i, (path, body)) in good.iter().enumerate() {
        let reply = Reply::file(body.clone()).throttle(400 * 1024);
        builder = builder.route(path, if i % 2 == 0 { reply } else { reply.chunked() });
    }
    for f in &faults {
        builder = builder.route(f.path, f.reply.clone());
    }
    let origin = builder.start().await;
    let app = TestApp::start(|mut c| {
        c.upstream.idle_timeout = Duration::from_secs(1);
        source(c, &origin.url())
    })
    .await;
    assert_eq!(get(&app.url("/hit.bin")).await.body, hit.to_vec());
    committed(&app.cache.join("hit.bin")).await;

    // Two readers per good file (the second joins the fill), and a client re-reading a hit.
    let mut downloads = Vec::new();
    for (path, body) in &good {
        for _ in 0..2 {
            let (url, want) = (app.url(path), sha256(body));
            downloads.push(tokio::spawn(async move {
                let got = get(&url).await;
                (url, got.status, got.error, sha256(&got.body) == want)
            }));
        }
    }
    let hits = {
        let url = app.url("/hit.bin");
        let want = sha256(&hit);
        tokio::spawn(async move {
            let mut n = 0;
            let until = tokio::time::Instant::now() + Duration::from_secs(2);
            while tokio::time::Instant::now() < until {
                let got = get(&url).await;
                assert_eq!(
                    (
                        got.status.as_u16(),
                        got.error.as_deref(),
                        sha256(&got.body) == want
                    ),
                    (200, None, true),
                    "a hit during the faults"
                );
                n += 1;
            }
            n
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Every faulty path, twice at once: the second client joins the first one's fill.
    let mut tries = Vec::new();
    for (i, f) in faults.iter().enumerate() {
        for _ in 0..2 {
            let url = app.url(f.path);
            tries.push((i, tokio::spawn(async move { get(&url).await })));
        }
    }
    for (i, task) in tries {
        let got = timeout(LIMIT, task)
            .await
            .expect("in time")
            .unwrap_or_else(|err| panic!("{}: {err}", faults[i].path));
        faults[i].check(&got);
    }

    for task in downloads {
        let (url, status, error, hash_ok) = timeout(LIMIT, task)
            .await
            .expect("in time")
            .expect("no panic");
        assert_eq!(
            (status.as_u16(), error, hash_ok),
            (200, None, true),
            "{url}: unaffected by the faults"
        );
    }
    assert!(timeout(LIMIT, hits).await.unwrap().unwrap() > 0);
    for (path, _) in &good {
        committed(&app.cache.join(&path[1..])).await;
        assert_eq!(origin.hits(path), 1, "{path}: one fetch for both readers");
    }

    // Nothing of the faulty paths is stored: no body, no metadata, no temporary file.
    assert_eq!(tmp_settled(&app).await, Vec::<std::path::PathBuf>::new());
    for f in &faults {
        assert!(
            !app.cache.join(&f.path[1..]).exists(),
            "{}: nothing committed",
            f.path
        );
    }
    assert_eq!(
        state_files(&app.cache, "meta").len(),
        good.len() + 1,
        "metadata only for the good files and the hit"
    );

    // And the next request asks the upstream again.
    let before: Vec<usize> = faults.iter().map(|f| origin.hits(f.path)).collect();
    let mut again = Vec::new();
    for f in &faults {
        let url = app.url(f.path);
        again.push(tokio::spawn(async move { get(&url).await }));
    }
    for ((f, task), n) in faults.iter().zip(again).zip(before) {
        let got = timeout(LIMIT, task)
            .await
            .expect("in time")
            .expect("no panic");
        f.check(&got);
        assert!(origin.hits(f.path) > n, "{}: fetched afresh", f.path);
    }
    assert_eq!(tmp_settled(&app).await, Vec::<std::path::PathBuf>::new());
    app.stop().await;
}

/// RFC 9112 §6.3: bytes past a response's Content-Length must never be processed, cached or
/// forwarded as a separate response (cache poisoning). The origin sends a 1000-byte body
/// announced as such, directly followed by a complete fake response, on a kept-alive
/// connection; then the real answer to the next request on that connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_past_content_length_are_never_a_response() {
    let announced = bytes_of(1000, 80);
    let fake = b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nETag: \"poison\"\r\n\r\nPOISONED";
    let mut sent = announced.to_vec();
    sent.extend_from_slice(fake);
    let rounds = 12;
    let mut builder = Origin::builder();
    for i in 0..rounds {
        builder = builder
            .route(
                &format!("/liar/{i}.bin"),
                Reply::file(sent.clone()).header("content-length", "1000"),
            )
            .file(&format!("/victim/{i}.bin"), bytes_of(3000, 81 + i));
    }
    let origin = builder.start().await;
    let app = TestApp::start(|c| source(c, &origin.url())).await;
    for i in 0..rounds {
        let liar = get(&app.url(&format!("/liar/{i}.bin"))).await;
        assert_eq!(
            (liar.status.as_u16(), liar.error.as_deref()),
            (200, None),
            "round {i}: the announced message is whole"
        );
        assert_eq!(
            liar.body,
            announced.to_vec(),
            "round {i}: only the announced bytes"
        );
        // Right after it, on the pooled connection if the proxy reuses it.
        let victim = get(&app.url(&format!("/victim/{i}.bin"))).await;
        assert_eq!(victim.status, 200, "round {i}");
        assert_eq!(
            victim.body,
            bytes_of(3000, 81 + i).to_vec(),
            "round {i}: the surplus bytes were taken as the next response"
        );
    }
    // Whatever was stored is the message as framed, never the surplus.
    for i in 0..rounds {
        let path = format!("/liar/{i}.bin");
        let again = get(&app.url(&path)).await;
        assert_eq!(again.body, announced.to_vec(), "{path}");
        let victim = format!("/victim/{i}.bin");
        let again = get(&app.url(&victim)).await;
        assert_eq!(again.body, bytes_of(3000, 81 + i).to_vec(), "{victim}");
    }
    app.stop().await;
}

/// A server may close an idle keep-alive connection just as the proxy sends the next request on
/// it (Apache closes idle connections after 5 s; the proxy keeps pooled ones for 30 s). Nothing
/// was answered and GET is idempotent, so it is safe to send again on a new connection
/// (RFC 9112 §9.3.1); the client must not get a 502 for this.
#[tokio::test]
async fn a_pooled_connection_closed_under_a_request_is_not_a_failure() {
    let (first, second) = (bytes_of(10_000, 90), bytes_of(10_000, 91));
    let origin = Origin::builder()
        .file("/first.bin", first.clone())
        .file("/second.bin", second.clone())
        .close_reused_connections()
        .start()
        .await;
    let app = TestApp::start(|c| source(c, &origin.url())).await;
    let got = get(&app.url("/first.bin")).await;
    assert_eq!((got.status.as_u16(), got.body), (200, first.to_vec()));
    committed(&app.cache.join("first.bin")).await;
    // The fill has read the whole body, so its connection is back in the proxy's pool.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let got = timeout(LIMIT, get(&app.url("/second.bin")))
        .await
        .expect("in time");
    assert_eq!(
        (got.status.as_u16(), got.error.as_deref()),
        (200, None),
        "{:?} (upstream requests for it: {}, connections: {})",
        String::from_utf8_lossy(&got.body),
        origin.hits("/second.bin"),
        origin.connections()
    );
    assert_eq!(got.body, second.to_vec());
    app.stop().await;
}
