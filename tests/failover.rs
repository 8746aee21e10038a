//! Sources are tried in order; 404, 5xx, connect errors, resets and timeouts
//! before the first body byte move on; the final status is the most
//! meaningful one; redirects are followed; https sources work.

mod support;

use package_cache::config::AllowedHost;
use std::time::Duration;
use support::app::{committed, source, TestApp};
use support::client::{bytes_of, get};
use support::origin::{Origin, Reply};
use support::tls::TlsIdentity;

/// An address nothing listens on.
async fn dead_url() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}")
}

#[tokio::test]
async fn each_kind_of_failure_moves_on_to_the_next_source() {
    let body = bytes_of(20_000, 30);
    let good = Origin::builder()
        .file("/a404", body.clone())
        .file("/a500", body.clone())
        .file("/conn", body.clone())
        .file("/rst", body.clone())
        .file("/hang", body.clone())
        .file("/stall0", body.clone())
        .start()
        .await;
    let bad = Origin::builder()
        .route("/a500", Reply::status(503))
        .route("/rst", Reply::file(body.clone()).reset_after(0))
        .route("/hang", Reply::stall_headers())
        .route("/stall0", Reply::file(body.clone()).stall_after(0))
        .start()
        .await;
    let app = TestApp::start(|mut c| {
        c.upstream.idle_timeout = Duration::from_secs(1);
        source(source(c, &bad.url()), &good.url())
    })
    .await;
    for path in ["/a404", "/a500", "/rst", "/hang", "/stall0"] {
        let got = get(&app.url(path)).await;
        assert_eq!(got.status, 200, "{path}");
        assert!(got.error.is_none(), "{path}: {:?}", got.error);
        assert_eq!(got.body, body.to_vec(), "{path}");
        assert_eq!(bad.hits(path), 1, "{path} tried on the first source");
        assert_eq!(good.hits(path), 1, "{path} then on the second");
    }
    app.stop().await;

    let dead = dead_url().await;
    let app = TestApp::start(|c| source(source(c, &dead), &good.url())).await;
    let got = get(&app.url("/conn")).await;
    assert_eq!(
        (got.status.as_u16(), got.body.len()),
        (200, body.len()),
        "connect refused moves on"
    );
    app.stop().await;
}

#[tokio::test]
async fn when_every_source_fails_the_status_says_why() {
    let a = Origin::builder()
        .route("/five", Reply::status(500))
        .route("/hang", Reply::stall_headers())
        .start()
        .await;
    let b = Origin::builder()
        .route("/five", Reply::status(404))
        .route("/hang", Reply::stall_headers())
        .start()
        .await;
    let app = TestApp::start(|mut c| {
        c.upstream.idle_timeout = Duration::from_secs(1);
        source(source(c, &a.url()), &b.url())
    })
    .await;
    let got = get(&app.url("/missing")).await;
    assert_eq!(got.status, 404, "404 when every source said 404");
    assert!(String::from_utf8_lossy(&got.body).contains("not found"));
    assert_eq!((a.hits("/missing"), b.hits("/missing")), (1, 1));
    let got = get(&app.url("/five")).await;
    assert_eq!(got.status, 502, "a 500 and a 404: bad gateway");
    let got = get(&app.url("/hang")).await;
    assert_eq!(got.status, 504, "every source timed out");
    assert!(!got.body.is_empty(), "a short text body");
    app.stop().await;

    let dead = dead_url().await;
    let app = TestApp::start(|c| source(c, &dead)).await;
    assert_eq!(get(&app.url("/x")).await.status, 502);
    app.stop().await;
}

#[tokio::test]
async fn only_200_is_cached_and_redirects_are_followed() {
    let body = bytes_of(5000, 31);
    let origin = Origin::builder()
        .route("/moved.tgz", Reply::redirect(302, "/real/moved.tgz"))
        .file("/real/moved.tgz", body.clone())
        .route("/forbidden", Reply::status(403))
        .route("/partial", Reply::file(body.clone()).with_status(203))
        .start()
        .await;
    let app = TestApp::start(|c| source(c, &origin.url())).await;
    let got = get(&app.url("/moved.tgz")).await;
    assert_eq!((got.status.as_u16(), got.body.len()), (200, body.len()));
    committed(&app.cache.join("moved.tgz")).await;
    assert_eq!(get(&app.url("/moved.tgz")).await.cache(), "HIT");
    for _ in 0..2 {
        let got = get(&app.url("/forbidden")).await;
        assert_eq!((got.status.as_u16(), got.cache()), (403, "PASS"));
        let got = get(&app.url("/partial")).await;
        assert_eq!((got.status.as_u16(), got.cache()), (203, "PASS"));
    }
    assert_eq!(origin.hits("/forbidden"), 2);
    assert_eq!(origin.hits("/partial"), 2);
    assert!(!app.cache.join("forbidden").exists() && !app.cache.join("partial").exists());
    app.stop().await;
}

#[tokio::test]
async fn https_sources_work_with_a_private_ca() {
    let identity = TlsIdentity::generate();
    let body = bytes_of(50_000, 32);
    let origin = Origin::builder()
        .file("/secure.tar.gz", body.clone())
        .tls(identity.clone())
        .start()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, identity.ca_pem()).unwrap();
    let url = format!("https://localhost:{}", origin.addr().port());

    // Without the CA the certificate is not trusted: no source works.
    let app = TestApp::start(|c| source(c, &url)).await;
    assert_eq!(get(&app.url("/secure.tar.gz")).await.status, 502);
    app.stop().await;

    let app = TestApp::start(|mut c| {
        c.upstream.ca_file = Some(ca.clone());
        source(c, &url)
    })
    .await;
    let got = get(&app.url("/secure.tar.gz")).await;
    assert_eq!((got.status.as_u16(), got.cache()), (200, "MISS"));
    assert_eq!(got.body, body.to_vec());
    app.stop().await;
}

#[tokio::test]
async fn credentials_never_reach_another_server() {
    let other = Origin::builder().file("/leak", "landed").start().await;
    let first = Origin::builder()
        .route("/redir", Reply::redirect(302, &other.url_for("/leak")))
        .start()
        .await;
    let second = Origin::builder()
        .file("/only-second", "second")
        .start()
        .await;
    // `other` is another port on 127.0.0.1: a redirect there is refused
    // unless the operator allows the host, as here.
    let app = TestApp::start(|mut c| {
        c.upstream
            .allow_redirect_hosts
            .push(AllowedHost::try_new("127.0.0.1").unwrap());
        source(source(c, &first.url()), &second.url())
    })
    .await;
    let creds = [
        ("authorization", "Bearer SECRET"),
        ("cookie", "session=abc"),
    ];
    let got = support::client::get_with(&app.url("/redir"), &creds).await;
    assert_eq!(
        (got.status.as_u16(), got.body.as_slice()),
        (200, &b"landed"[..])
    );
    let at_first = first.requests();
    assert!(
        at_first[0].headers.get("authorization").is_some(),
        "the server asked gets them"
    );
    let leaked = other.requests();
    assert_eq!(leaked.len(), 1);
    assert!(
        leaked[0].headers.get("authorization").is_none(),
        "not across a redirect to another host"
    );
    assert!(leaked[0].headers.get("cookie").is_none());
    // No failover with credentials: the second mirror is not asked.
    let got = support::client::get_with(&app.url("/only-second"), &creds).await;
    assert_eq!(got.status, 404);
    assert_eq!(second.total_hits(), 0);
    app.stop().await;
}
