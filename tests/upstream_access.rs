//! How the real binary reaches its upstreams: a `--resolve HOST:PORT:ADDR`
//! rule applies to that host and port only.

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
