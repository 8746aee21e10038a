//! Forward-proxy and named-host modes: only allowed hosts are fetched, each
//! host has its own namespace, the `--source` mirrors share one, and anything
//! else is refused with 403 — never an open proxy.

mod support;

use package_cache::config::Authority;
use support::app::{committed, source, TestApp};
use support::client::{self, bytes_of, get, raw, raw_status};
use support::origin::Origin;

fn allow(mut c: package_cache::config::Config, host: &str) -> package_cache::config::Config {
    c.upstream
        .transparent_hosts
        .push(Authority::try_new(host, false).unwrap());
    c
}

#[tokio::test]
async fn absolute_form_requests_are_fetched_from_allowed_hosts_only() {
    let files = Origin::builder()
        .file("/pkg/one.tgz", bytes_of(3000, 40))
        .start()
        .await;
    let other = Origin::builder()
        .file("/pkg/one.tgz", bytes_of(3000, 41))
        .start()
        .await;
    let host = files.addr().to_string();
    let app = TestApp::start(|c| allow(c, &host)).await;
    let proxy = format!("http://{}", app.addr);

    // curl as a forward-proxy client (http_proxy style).
    let (code, out, err) = client::curl(&[
        "-sS",
        "-x",
        &proxy,
        "-D",
        "/dev/stderr",
        &files.url_for("/pkg/one.tgz"),
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, bytes_of(3000, 40).to_vec());
    assert!(err.to_ascii_lowercase().contains("x-cache: miss"), "{err}");
    let stored = app
        .cache
        .join(".package-cache-hosts")
        .join(&host)
        .join("pkg/one.tgz");
    committed(&stored).await;
    let (_, out, err) = client::curl(&[
        "-sS",
        "-x",
        &proxy,
        "-D",
        "/dev/stderr",
        &files.url_for("/pkg/one.tgz"),
    ])
    .await;
    assert_eq!(out, bytes_of(3000, 40).to_vec());
    assert!(err.to_ascii_lowercase().contains("x-cache: hit"), "{err}");
    assert_eq!(files.hits("/pkg/one.tgz"), 1);

    // Not allowed: 403 with a message, and the host is never contacted.
    let (code, out, _) = client::curl(&[
        "-s",
        "-x",
        &proxy,
        "-w",
        "%{http_code}",
        "-o",
        "/dev/null",
        &other.url_for("/pkg/one.tgz"),
    ])
    .await;
    assert_eq!((code, String::from_utf8_lossy(&out).as_ref()), (0, "403"));
    assert_eq!(other.total_hits(), 0);
    let r = raw(
        app.addr,
        b"GET http://example.invalid/x HTTP/1.1\r\nHost: example.invalid\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(&r), 403);
    assert!(String::from_utf8_lossy(&r).contains("not an open proxy"));
    let r = raw(
        app.addr,
        b"CONNECT example.invalid:443 HTTP/1.1\r\nHost: example.invalid:443\r\n\r\n",
    )
    .await;
    assert!(
        matches!(raw_status(&r), 400 | 403 | 405),
        "{}",
        String::from_utf8_lossy(&r)
    );
    app.stop().await;
}

#[tokio::test]
async fn hosts_do_not_collide_and_mirrors_share_one_namespace() {
    let a = Origin::builder().file("/same.bin", "from a").start().await;
    let b = Origin::builder().file("/same.bin", "from b").start().await;
    let (ha, hb) = (a.addr().to_string(), b.addr().to_string());
    let app = TestApp::start(|c| allow(allow(c, &ha), &hb)).await;
    let ra = client::get_with(&format!("http://{}/same.bin", app.addr), &[("host", &ha)]).await;
    let rb = client::get_with(&format!("http://{}/same.bin", app.addr), &[("host", &hb)]).await;
    assert_eq!(
        (ra.body.as_slice(), rb.body.as_slice()),
        (&b"from a"[..], &b"from b"[..])
    );
    app.stop().await;

    // Two mirrors: a file fetched from the second (first said 404) is a hit
    // under the shared namespace, whoever serves it next.
    let m1 = Origin::builder().start().await;
    let m2 = Origin::builder()
        .file("/distfiles/x.tar.gz", "x")
        .start()
        .await;
    let app = TestApp::start(|c| source(source(c, &m1.url()), &m2.url())).await;
    assert_eq!(get(&app.url("/distfiles/x.tar.gz")).await.cache(), "MISS");
    committed(&app.cache.join("distfiles/x.tar.gz")).await;
    m2.stop().await;
    assert_eq!(get(&app.url("/distfiles/x.tar.gz")).await.cache(), "HIT");
    // The mirror's own host name in absolute form maps to the same entry.
    let r = raw(
        app.addr,
        format!(
            "GET {}/distfiles/x.tar.gz HTTP/1.1\r\nHost: {}\r\n\r\n",
            m2.url(),
            m2.addr()
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(raw_status(&r), 200);
    assert!(String::from_utf8_lossy(&r)
        .to_ascii_lowercase()
        .contains("x-cache: hit"));
    app.stop().await;
}

#[tokio::test]
async fn origin_form_goes_to_the_mirrors_whatever_the_host_says() {
    let m = Origin::builder().file("/f", "mirror").start().await;
    let app = TestApp::start(|c| source(c, &m.url())).await;
    let r = client::get_with(&app.url("/f"), &[("host", "evil.example")]).await;
    assert_eq!(
        (r.status.as_u16(), r.body.as_slice()),
        (200, &b"mirror"[..])
    );
    app.stop().await;
}

#[tokio::test]
async fn resolve_overrides_pick_the_upstream_address_not_the_client() {
    let origin = Origin::builder().file("/pool/x.deb", "deb").start().await;
    let port = origin.addr().port();
    let name = format!("mirror.test:{port}");
    let app = TestApp::start(|mut c| {
        c.upstream
            .resolve
            .push((("mirror.test".into(), port), origin.addr()));
        allow(c, &name)
    })
    .await;
    let r = raw(
        app.addr,
        format!("GET http://{name}/pool/x.deb HTTP/1.1\r\nHost: {name}\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(raw_status(&r), 200, "{}", String::from_utf8_lossy(&r));
    assert!(r.ends_with(b"deb"));
    assert_eq!(origin.hits("/pool/x.deb"), 1);
    let host = origin.requests()[0]
        .headers
        .get("host")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(host, name, "the upstream is asked for the allowed name");
    app.stop().await;
}
