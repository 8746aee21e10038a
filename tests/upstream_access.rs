//! How the real binary reaches its upstreams: a `--resolve HOST:PORT:ADDR`
//! rule applies to that host and port only; redirects never downgrade https
//! and reach special addresses only where allowed; a 404 from the last source
//! is routine (info, "no more sources"), a failure that moves on a warning.

mod support;

use std::net::SocketAddr;
use support::app::Binary;
use support::client::curl;
use support::origin::Origin;

/// Two origins on the same port, one on 127.0.0.1 and one on 127.0.0.2:
/// only the address a rule picks tells them apart.
async fn twins() -> (Origin, Origin) {
    let one = Origin::builder().file("/which", "one").start().await;
    let port = one.addr().port();
    let two = Origin::builder()
        .file("/which", "two")
        .bind(SocketAddr::from(([127, 0, 0, 2], port)))
        .start()
        .await;
    (one, two)
}

async fn fetched(app: &Binary, path: &str) -> String {
    let (code, body, err) = curl(&["-sS", "--fail", &app.url(path)]).await;
    assert_eq!(code, 0, "{err}");
    String::from_utf8_lossy(&body).into_owned()
}

#[tokio::test]
async fn a_resolve_rule_applies_to_its_host_and_port_only() {
    let (one, two) = twins().await;
    let port = one.addr().port();
    let dir = tempfile::tempdir().unwrap();
    let source = format!("http://localhost:{port}");

    // The rule for this port sends `localhost` to 127.0.0.2.
    let cache = dir.path().join("a");
    let rule = format!("localhost:{port}:127.0.0.2");
    let app = Binary::start(&[
        "--cache",
        cache.to_str().unwrap(),
        "--source",
        &source,
        "--resolve",
        &rule,
    ])
    .await;
    assert_eq!(fetched(&app, "/which").await, "two");
    app.kill9().await;

    // A rule for another port of the same host does not apply: the name
    // resolves as usual, to 127.0.0.1 (the port is not dropped).
    let cache = dir.path().join("b");
    let other = format!("localhost:{}:127.0.0.2", port.wrapping_add(1).max(1));
    let app = Binary::start(&[
        "--cache",
        cache.to_str().unwrap(),
        "--source",
        &source,
        "--resolve",
        &other,
    ])
    .await;
    assert_eq!(fetched(&app, "/which").await, "one");
    app.kill9().await;

    // Two rules for one name, one per port, each to its own address.
    let three = Origin::builder().file("/only-three", "three").start().await;
    let cache = dir.path().join("c");
    let rules = [
        format!("mirror.test:{port}:127.0.0.2"),
        format!("mirror.test:{}:127.0.0.1", three.addr().port()),
    ];
    let sources = [
        format!("http://mirror.test:{port}"),
        format!("http://mirror.test:{}", three.addr().port()),
    ];
    let asked_one = one.hits("/which");
    let app = Binary::start(&[
        "--cache",
        cache.to_str().unwrap(),
        "--source",
        &sources[0],
        "--source",
        &sources[1],
        "--resolve",
        &rules[0],
        "--resolve",
        &rules[1],
    ])
    .await;
    assert_eq!(fetched(&app, "/which").await, "two");
    assert_eq!(fetched(&app, "/only-three").await, "three");
    assert_eq!(one.hits("/which"), asked_one, "127.0.0.1:{port} not asked");
    assert_eq!(
        two.hits("/only-three"),
        1,
        "the first source is tried first"
    );
    app.kill9().await;
}

/// `(status, body)` of `path` through `app`, by curl.
async fn status(app: &Binary, path: &str) -> (u16, String) {
    let (code, out, err) = curl(&["-sS", "-w", "\n%{http_code}", &app.url(path)]).await;
    assert_eq!(code, 0, "{err}");
    let text = String::from_utf8_lossy(&out).into_owned();
    let (body, status) = text.rsplit_once('\n').expect("status line");
    (status.parse().expect("a status"), body.to_string())
}

async fn logged(app: &Binary, words: &[&str]) -> bool {
    app.logged_within(words).await
}

#[tokio::test]
async fn redirects_to_special_addresses_are_refused_unless_allowed() {
    let target = Origin::builder()
        .file("/real.tgz", "the real file")
        .start()
        .await;
    let port = target.addr().port();
    let source = Origin::builder()
        .route(
            "/lit.tgz",
            support::origin::Reply::redirect(302, &format!("http://127.0.0.1:{port}/real.tgz")),
        )
        .route(
            "/name.tgz",
            support::origin::Reply::redirect(302, &format!("http://localhost:{port}/real.tgz")),
        )
        .route(
            "/same.tgz",
            support::origin::Reply::redirect(302, "/moved/same.tgz"),
        )
        .file("/moved/same.tgz", "same origin")
        .start()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let src = source.url();
    let start = |name: &str, extra: &[&str]| {
        let cache = dir.path().join(name);
        let mut args = vec![
            "--cache".to_string(),
            cache.to_str().unwrap().to_string(),
            "--source".to_string(),
            src.clone(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            (Binary::start(&args).await, cache)
        }
    };

    // No allowance: another port of 127.0.0.1, by address or by a name that
    // resolves there, is refused with a 502 and a log line; the target is
    // never asked and nothing is stored. A redirect within the source's own
    // origin is followed as before.
    let (app, cache) = start("none", &[]).await;
    for path in ["/lit.tgz", "/name.tgz"] {
        let (code, body) = status(&app, path).await;
        assert_eq!(code, 502, "{path}: {body}");
        assert!(!cache.join(&path[1..]).exists(), "{path} not stored");
    }
    assert_eq!(target.total_hits(), 0, "the refused target was never asked");
    assert!(
        logged(&app, &["redirect refused", "loopback", "127.0.0.1"]).await,
        "{:?}",
        app.log_lines()
    );
    assert!(logged(&app, &["redirect refused", &format!("localhost:{port}")]).await);
    assert_eq!(status(&app, "/same.tgz").await, (200, "same origin".into()));
    app.kill9().await;

    // HOST:PORT allows that port only; a bare HOST allows every port; the
    // name and the address are allowed separately.
    let other_port = format!("127.0.0.1:{}", port.wrapping_add(1).max(1));
    let (app, _) = start("other-port", &["--allow-redirect-host", &other_port]).await;
    assert_eq!(status(&app, "/lit.tgz").await.0, 502);
    app.kill9().await;
    let exact = format!("127.0.0.1:{port}");
    let (app, cache) = start("exact", &["--allow-redirect-host", &exact]).await;
    assert_eq!(
        status(&app, "/lit.tgz").await,
        (200, "the real file".into())
    );
    assert_eq!(
        status(&app, "/name.tgz").await.0,
        502,
        "localhost is not allowed"
    );
    support::app::committed(&cache.join("lit.tgz")).await;
    assert_eq!(status(&app, "/lit.tgz").await.0, 200);
    assert_eq!(target.hits("/real.tgz"), 1, "the second one was a hit");
    app.kill9().await;

    // The environment variable, space-separated like PC_SOURCES.
    let cache = dir.path().join("env");
    let app = Binary::start_with_env(
        &["--cache", cache.to_str().unwrap(), "--source", &src],
        &[("PC_ALLOW_REDIRECT_HOSTS", "localhost 127.0.0.1")],
    )
    .await;
    for path in ["/lit.tgz", "/name.tgz"] {
        assert_eq!(
            status(&app, path).await,
            (200, "the real file".into()),
            "{path}"
        );
    }
    app.kill9().await;
}

#[tokio::test]
async fn an_https_source_never_follows_a_redirect_to_http() {
    let plain = Origin::builder()
        .file("/pkg.tgz", "planted by an attacker")
        .start()
        .await;
    let identity = support::tls::TlsIdentity::generate();
    let secure = Origin::builder()
        .route(
            "/pkg.tgz",
            support::origin::Reply::redirect(302, &plain.url_for("/pkg.tgz")),
        )
        .route(
            "/moved.tgz",
            support::origin::Reply::redirect(301, "/real/moved.tgz"),
        )
        .file("/real/moved.tgz", "over https")
        .tls(identity.clone())
        .start()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, identity.ca_pem()).unwrap();
    let cache = dir.path().join("cache");
    let src = format!("https://localhost:{}", secure.addr().port());
    // Even with the target's host allowed: a downgrade is never followed.
    let app = Binary::start(&[
        "--cache",
        cache.to_str().unwrap(),
        "--source",
        &src,
        "--ca-file",
        ca.to_str().unwrap(),
        "--allow-redirect-host",
        "127.0.0.1",
    ])
    .await;
    let (code, body) = status(&app, "/pkg.tgz").await;
    assert_eq!(code, 502, "{body}");
    assert!(!body.contains("planted"), "{body}");
    assert_eq!(plain.total_hits(), 0, "the plain URL was never requested");
    assert!(!cache.join("pkg.tgz").exists());
    assert!(
        logged(&app, &["https must not fall back to http", "WARN"]).await,
        "{:?}",
        app.log_lines()
    );
    assert_eq!(status(&app, "/moved.tgz").await, (200, "over https".into()));
    app.kill9().await;
}

/// `(level, message)` of each upstream-failure log line about `path`.
fn failure_lines(app: &Binary, path: &str) -> Vec<(String, String)> {
    let text =
        |v: &serde_json::Value, key: &str| v["fields"][key].as_str().unwrap_or("").to_string();
    app.log_lines()
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| {
            let message = text(v, "message");
            (message.contains("no more sources") || message.contains("trying next"))
                && text(v, "error").contains(path)
        })
        .map(|v| {
            (
                v["level"].as_str().unwrap_or("").to_string(),
                text(&v, "message"),
            )
        })
        .collect()
}

async fn wait_for_lines(app: &Binary, path: &str, n: usize) -> Vec<(String, String)> {
    for _ in 0..100 {
        let lines = failure_lines(app, path);
        if lines.len() >= n {
            return lines;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("no {n} failure lines for {path}: {:?}", app.log_lines());
}

#[tokio::test]
async fn a_404_from_the_last_source_is_routine_and_says_no_more_sources() {
    let first = Origin::builder()
        .route("/both-500.tgz", support::origin::Reply::status(404))
        .start()
        .await;
    let second = Origin::builder()
        .route("/both-500.tgz", support::origin::Reply::status(500))
        .start()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("one");
    let only = first.url();
    let app = Binary::start(&["--cache", cache.to_str().unwrap(), "--source", &only]).await;
    assert_eq!(status(&app, "/distfiles/probe.tgz").await.0, 404);
    let lines = wait_for_lines(&app, "/distfiles/probe.tgz", 1).await;
    assert_eq!(
        lines,
        [("INFO".into(), "not found upstream; no more sources".into())],
        "a 404 from the only source is not a warning"
    );
    // A mount's only source, the same.
    app.kill9().await;
    let cache = dir.path().join("mount");
    let mirror = format!("gentoo={}", first.url());
    let app = Binary::start(&["--cache", cache.to_str().unwrap(), "--mirror", &mirror]).await;
    assert_eq!(status(&app, "/gentoo/distfiles/ab/x.tgz").await.0, 404);
    let lines = wait_for_lines(&app, "/distfiles/ab/x.tgz", 1).await;
    assert_eq!(lines[0].0, "INFO", "{lines:?}");
    app.kill9().await;

    // Two sources: the failure that moves on keeps its warning; the last
    // source's 404 is routine, its 500 is not.
    let cache = dir.path().join("two");
    let (a, b) = (first.url(), second.url());
    let app = Binary::start(&[
        "--cache",
        cache.to_str().unwrap(),
        "--source",
        &a,
        "--source",
        &b,
    ])
    .await;
    assert_eq!(status(&app, "/distfiles/gone.tgz").await.0, 404);
    let lines = wait_for_lines(&app, "/distfiles/gone.tgz", 2).await;
    assert_eq!(
        lines,
        [
            ("WARN".into(), "upstream failed; trying next".into()),
            ("INFO".into(), "not found upstream; no more sources".into()),
        ]
    );
    assert_eq!(status(&app, "/both-500.tgz").await.0, 502);
    let lines = wait_for_lines(&app, "/both-500.tgz", 2).await;
    assert_eq!(
        lines,
        [
            ("WARN".into(), "upstream failed; trying next".into()),
            ("WARN".into(), "upstream failed; no more sources".into()),
        ]
    );
    app.kill9().await;
}
