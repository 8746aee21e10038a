//! The shared store as a live tier of the real app, against a real Ceph RGW
//! (tests/support/rgw.rs): a new node with an empty disk serves what another
//! fetched, upstream down and Range included; two nodes racing converge on one
//! reference; a store that stops costs no request; a node killed mid-upload
//! leaves nothing visible; a tampered body is never served and is replaced.

mod support;

use package_cache::config::{Config, ListenAddr, Profile, SharedStoreConfig};
use package_cache::store::shared::{SharedStatus, SharedStore};
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};
use support::app::{source, Binary, TestApp};
use support::client::{bytes_of, get, get_with};
use support::origin::{Origin, Reply};
use support::rgw::{self, Rgw};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A prefix no other test (or run) uses.
fn prefix(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("tier-{test}-{}-{nanos:08x}", std::process::id())
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// `config` with `shared` below its disk, a node name and a short breaker.
fn node(config: Config, origin: &str, mut shared: SharedStoreConfig, name: &str) -> Config {
    shared.set("node", name).unwrap();
    shared.breaker_cooldown = Duration::from_millis(300);
    let mut config = source(config, origin);
    config.shared_store = Some(shared);
    config.server.admin = Some(ListenAddr::loopback_any_port());
    config
}

fn status(app: &TestApp) -> SharedStatus {
    app.running().shared().expect("a shared tier").status()
}

/// Waits (at most `limit`) until `done` holds.
async fn until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let began = Instant::now();
    while !done() {
        assert!(began.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Object names under `prefix/what/` in the bucket.
async fn objects(rgw: &Rgw, prefix: &str, what: &str) -> Vec<String> {
    rgw.s3().list(&format!("{prefix}/{what}/")).await
}

async fn rgw() -> Option<&'static Rgw> {
    rgw::shared().await
}

const SMALL: usize = 3_000;
const MEDIUM: usize = 300_000;
/// Past the 5 MiB part size of the tests: a multipart upload of three parts.
const LARGE: usize = 12 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_node_serves_every_file_from_the_shared_store_with_the_upstream_down() {
    let Some(rgw) = rgw().await else { return };
    let p = prefix("newnode");
    let files = [
        ("/d/small.tgz", bytes_of(SMALL, 1)),
        ("/d/medium.whl", bytes_of(MEDIUM, 2)),
        ("/d/large.tar.xz", bytes_of(LARGE, 3)),
    ];
    let mut builder = Origin::builder();
    for (path, body) in &files {
        builder = builder.file(path, body.clone());
    }
    let origin = builder.start().await;
    let a = TestApp::start(|c| node(c, &origin.url(), rgw.config(&p), "a")).await;
    for (path, body) in &files {
        let got = get(&a.url(path)).await;
        assert_eq!(got.status, 200, "{path}");
        assert!(got.body == body[..] && got.error.is_none(), "{path}");
    }
    until("node a publishes 3 files", Duration::from_secs(60), || {
        status(&a).streamed == 3
    })
    .await;
    assert_eq!(objects(rgw, &p, "refs").await.len(), 3);
    origin.stop().await;

    let b = TestApp::start(|c| node(c, &origin.url(), rgw.config(&p), "b")).await;
    // A Range first, while the large file is still streaming in from the store.
    let got = get_with(&b.url(files[2].0), &[("range", "bytes=6000000-6000099")]).await;
    assert_eq!(got.status, 206);
    assert_eq!(got.body, files[2].1[6_000_000..6_000_100]);
    for (path, body) in &files {
        let got = get(&b.url(path)).await;
        assert_eq!(got.status, 200, "{path}: {:?}", got.error);
        assert!(got.body == body[..] && got.error.is_none(), "{path}");
        let ranged = get_with(&b.url(path), &[("range", "bytes=10-19")]).await;
        assert_eq!(
            (ranged.status.as_u16(), &ranged.body[..]),
            (206, &body[10..20])
        );
    }
    for (path, _) in &files {
        assert_eq!(origin.hits(path), 1, "{path}: fetched upstream once, by a");
    }
    let s = status(&b);
    assert_eq!(s.served, 3, "{s:?}");
    // Filled from the store, nothing was published again.
    assert_eq!(
        (s.streamed, s.stats.published, s.backlog),
        (0, 0, 0),
        "{s:?}"
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_racing_without_a_balancer_converge_on_one_reference() {
    let Some(rgw) = rgw().await else { return };
    let p = prefix("race");
    // Both large (streamed up in parts under random names) and small (one PUT
    // under the digest) bodies.
    let files = [
        ("/r/big.tgz", bytes_of(6 << 20, 7)),
        ("/r/small.tgz", bytes_of(40_000, 8)),
    ];
    let mut builder = Origin::builder();
    for (path, body) in &files {
        // Slow enough that the two fills overlap.
        let reply = Reply::file(body.clone()).first_byte_delay(Duration::from_millis(200));
        builder = builder.route(path, reply);
    }
    let origin = builder.start().await;
    let a = TestApp::start(|c| node(c, &origin.url(), rgw.config(&p), "a")).await;
    let b = TestApp::start(|c| node(c, &origin.url(), rgw.config(&p), "b")).await;
    for (path, body) in &files {
        let (ua, ub) = (a.url(path), b.url(path));
        let (ga, gb) = tokio::join!(get(&ua), get(&ub));
        assert!(ga.body == body[..] && gb.body == body[..], "{path}");
        assert!(origin.hits(path) <= 2, "{path}: at most one fetch per node");
    }
    // Every fill from upstream ends in a publication, won or lost.
    let fetched: usize = files.iter().map(|(path, _)| origin.hits(path)).sum();
    until("both nodes publish", Duration::from_secs(60), || {
        let (sa, sb) = (status(&a), status(&b));
        let tried = sa.stats.published + sa.stats.races_lost + sb.stats.published;
        tried + sb.stats.races_lost == fetched as u64
    })
    .await;
    let (sa, sb) = (status(&a), status(&b));
    eprintln!("race: {fetched} upstream fetches; a {sa:?}; b {sb:?}");
    assert_eq!(
        sa.stats.published + sb.stats.published,
        2,
        "one winner per key"
    );
    assert_eq!(
        objects(rgw, &p, "refs").await.len(),
        2,
        "one reference per key"
    );
    // The losers' bodies are deleted at once (after the publication returned).
    until_bodies(rgw, &p, 2).await;
    a.stop().await;
    b.stop().await;
}

/// Waits until exactly `n` bodies are under the prefix.
async fn until_bodies(rgw: &Rgw, p: &str, n: usize) {
    let began = Instant::now();
    loop {
        let bodies = objects(rgw, p, "bodies").await;
        if bodies.len() == n {
            return;
        }
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "bodies: {bodies:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_store_costs_no_request_and_the_backlog_is_published_when_it_returns() {
    let Some(rgw) = rgw().await else { return };
    let gateway = rgw.gateway().await;
    let p = prefix("outage");
    let mut shared = rgw.config_for(&gateway.endpoint(), &p);
    shared.timeout = Duration::from_secs(1);
    shared.connect_timeout = Duration::from_millis(500);
    shared.breaker_failures = 2;
    let paths: Vec<String> = (0..6).map(|i| format!("/o/pkg-{i}.tgz")).collect();
    let mut builder = Origin::builder();
    for (i, path) in paths.iter().enumerate() {
        builder = builder.file(path, bytes_of(MEDIUM + i, 20 + i as u64));
    }
    let origin = builder.start().await;
    let app = TestApp::start(|c| node(c, &origin.url(), shared, "o")).await;
    assert_eq!(get(&app.url(&paths[0])).await.status, 200);
    until("published", Duration::from_secs(30), || {
        status(&app).streamed == 1
    })
    .await;

    gateway.stop().await;
    for (i, path) in paths.iter().enumerate() {
        let began = Instant::now();
        let got = timeout(Duration::from_secs(10), get(&app.url(path)))
            .await
            .expect("answered");
        assert_eq!(got.status, 200, "{path}");
        assert_eq!(got.body, bytes_of(MEDIUM + i, 20 + i as u64), "{path}");
        eprintln!("outage: {path} answered in {:?}", began.elapsed());
        assert!(began.elapsed() < Duration::from_secs(4), "{path}");
    }
    // Publications still waiting for the store's time-outs land in the backlog too.
    until("5 entries backlogged", Duration::from_secs(15), || {
        status(&app).backlog == 5
    })
    .await;
    eprintln!("outage: {:?}", status(&app));
    let metrics = get(&app.admin_url("/metrics")).await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains("package_cache_shared_store_backlog 5"),
        "{text}"
    );
    let page = String::from_utf8_lossy(&get(&app.admin_url("/")).await.body).to_string();
    assert!(
        page.contains("id=\"shared-backlog\" data-value=\"5\""),
        "{page}"
    );

    gateway.start().await;
    until("the backlog is published", Duration::from_secs(60), || {
        let s = status(&app);
        s.backlog == 0 && s.backlog_published == 5
    })
    .await;
    assert_eq!(objects(rgw, &p, "refs").await.len(), 6);
    let text = String::from_utf8_lossy(&get(&app.admin_url("/metrics")).await.body).to_string();
    assert!(text.contains("package_cache_shared_store_up 1"), "{text}");
    for path in &paths {
        assert_eq!(origin.hits(path), 1, "{path}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_body_is_never_served_and_its_reference_is_replaced() {
    let Some(rgw) = rgw().await else { return };
    let p = prefix("tamper");
    let good = bytes_of(MEDIUM, 30);
    let origin = Origin::builder()
        .file("/t/pkg.whl", good.clone())
        .start()
        .await;
    let a = TestApp::start(|c| node(c, &origin.url(), rgw.config(&p), "a")).await;
    assert_eq!(get(&a.url("/t/pkg.whl")).await.body, good);
    until("published", Duration::from_secs(30), || {
        status(&a).streamed == 1
    })
    .await;
    let bodies = objects(rgw, &p, "bodies").await;
    assert_eq!(bodies.len(), 1);
    let mut bad = good.to_vec();
    bad[MEDIUM / 2] ^= 0x55;
    rgw.s3().put(&bodies[0], &bad).await;

    let b = TestApp::start(|c| node(c, &origin.url(), rgw.config(&p), "b")).await;
    let got = get(&b.url("/t/pkg.whl")).await;
    assert!(
        got.body != bad && (got.error.is_some() || got.body == good),
        "the tampered body was served whole"
    );
    eprintln!(
        "tamper: first answer {} bytes, error {:?}",
        got.body.len(),
        got.error
    );
    let again = get(&b.url("/t/pkg.whl")).await;
    assert!(again.body == good && again.error.is_none());
    assert_eq!(origin.hits("/t/pkg.whl"), 2, "fetched again upstream");
    until("replaced", Duration::from_secs(30), || {
        status(&b).streamed == 1
    })
    .await;
    // The reference names the good body now, and the bucket holds it.
    let refs = objects(rgw, &p, "refs").await;
    assert_eq!(refs.len(), 1);
    let (_, reference) = rgw.s3().get(&refs[0]).await;
    let reference: serde_json::Value = serde_json::from_slice(&reference).unwrap();
    assert_eq!(reference["sha256"], sha256(&good));
    let body = format!("{p}/{}", reference["body"].as_str().unwrap());
    assert_eq!(rgw.s3().get(&body).await, (200, good.to_vec()));
    let s = status(&b);
    assert_eq!(s.damaged_removed, 1, "{s:?}");
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_upload_leaves_nothing_visible() {
    let Some(rgw) = rgw().await else { return };
    let p = prefix("kill");
    let body = bytes_of(LARGE, 40);
    // The first fetch stalls after two parts' worth; the next is whole.
    let origin = Origin::builder()
        .route_first(
            "/k/big.tar.xz",
            1,
            Reply::file(body.clone()).stall_after(11 << 20),
        )
        .file("/k/big.tar.xz", body.clone())
        .start()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let endpoint = rgw.endpoint();
    let url = format!("s3://{}/{p}", rgw::BUCKET);
    let opts = [
        format!("endpoint={endpoint}"),
        "access_key_id=test".into(),
        "secret_access_key=testtesttest".into(),
        "region=us-east-1".into(),
        "aws_allow_http=true".into(),
        "part_size=5M".into(),
        "node=k1".into(),
    ];
    let mut args = vec![
        "--source".to_string(),
        origin.url(),
        "--cache".into(),
        cache.display().to_string(),
        "--shared-store".into(),
        url,
    ];
    for opt in &opts {
        args.extend(["--shared-store-opt".into(), opt.clone()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let bin = Binary::start(&args).await;
    let admin = bin.admin.expect("admin");
    let big = bin.url("/k/big.tar.xz");
    let client = tokio::spawn(async move { get(&big).await });
    // Wait until the node has sent a part (5 MiB) of the body up.
    timeout(Duration::from_secs(60), async {
        loop {
            let m = get(&format!("http://{admin}/metrics")).await;
            let text = String::from_utf8_lossy(&m.body).to_string();
            let up = text
                .lines()
                .find(|l| l.starts_with("package_cache_shared_store_events{event=\"bytes_up\"}"))
                .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                .unwrap_or(0);
            if up >= 5 << 20 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("a part goes up");
    bin.kill9().await;
    client.abort();

    assert_eq!(objects(rgw, &p, "refs").await, Vec::<String>::new());
    assert_eq!(objects(rgw, &p, "bodies").await, Vec::<String>::new());
    let (tracker, cancel) = (TaskTracker::new(), CancellationToken::new());
    let probe = SharedStore::open(&rgw.config(&p), tracker.clone(), cancel.clone())
        .await
        .unwrap();
    let pending = probe.pending_uploads().await.unwrap();
    assert_eq!(pending.len(), 1, "the killed node's upload: {pending:?}");

    // The node comes back under its name: it aborts what it left at once.
    let bin = Binary::start(&args).await;
    timeout(Duration::from_secs(30), async {
        while !probe.pending_uploads().await.unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the abandoned upload is aborted at start-up");
    let got = get(&bin.url("/k/big.tar.xz")).await;
    assert!(got.body == body[..] && got.error.is_none());
    let began = Instant::now();
    while objects(rgw, &p, "refs").await.len() != 1 {
        assert!(began.elapsed() < Duration::from_secs(30), "published");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bin.kill9().await;
    cancel.cancel();
    tracker.close();
    tracker.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_node_serves_a_stale_index_from_the_shared_store_when_the_upstream_is_down() {
    let Some(rgw) = rgw().await else { return };
    let p = prefix("docs");
    let versions = "created_at: x\n---\na 1.0 abc\n";
    let origin = Origin::builder().file("/versions", versions).start().await;
    let with_mount = |c: Config, name: &str| {
        let mut c = node(c, &origin.url(), rgw.config(&p), name);
        c.policy.index_ttl = Duration::from_secs(1);
        c.with_mount("rubygems", Profile::Rubygems, &origin.url())
            .expect("valid mount")
    };
    let a = TestApp::start(|c| with_mount(c, "a")).await;
    let fresh = get(&a.url("/rubygems/versions")).await;
    assert_eq!((fresh.status.as_u16(), fresh.cache()), (200, "MISS"));
    // Stored below in the background.
    let began = Instant::now();
    while objects(rgw, &p, "docs").await.is_empty() {
        assert!(began.elapsed() < Duration::from_secs(30), "document stored");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    origin.stop().await;
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let b = TestApp::start(|c| with_mount(c, "b")).await;
    let stale = get(&b.url("/rubygems/versions")).await;
    assert_eq!(stale.status, 200);
    assert_eq!(stale.body, fresh.body);
    assert!(
        stale
            .header("warning")
            .is_some_and(|w| w.starts_with("111 ")),
        "served stale: {:?}",
        stale.headers
    );
    assert_eq!(origin.hits("/versions"), 1);
    a.stop().await;
    b.stop().await;
}

/// Runs `package-cache ARGS --shared-store s3://fleet/<p> …`: exit code and stdout.
async fn maintain(rgw: &Rgw, p: &str, args: &[&str]) -> (i32, String) {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_package-cache"));
    command
        .args(args)
        .args(["--shared-store", &format!("s3://{}/{p}", rgw::BUCKET)]);
    for opt in [
        format!("endpoint={}", rgw.endpoint()),
        "access_key_id=test".into(),
        "secret_access_key=testtesttest".into(),
        "region=us-east-1".into(),
        "aws_allow_http=true".into(),
    ] {
        command.args(["--shared-store-opt", &opt]);
    }
    let out = timeout(Duration::from_secs(60), command.output())
        .await
        .expect("in time")
        .expect("run package-cache");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    eprintln!(
        "maintain {args:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_commands_work_on_the_bucket() {
    let Some(rgw) = rgw().await else { return };
    let p = prefix("maint");
    let files = [
        ("/m/one.tgz", bytes_of(10_000, 70)),
        ("/m/two.tgz", bytes_of(20_000, 71)),
        ("/m/three.tgz", bytes_of(30_000, 72)),
    ];
    let mut builder = Origin::builder();
    for (path, body) in &files {
        builder = builder.file(path, body.clone());
    }
    let origin = builder.start().await;
    let a = TestApp::start(|c| node(c, &origin.url(), rgw.config(&p), "a")).await;
    for (path, _) in &files {
        assert_eq!(get(&a.url(path)).await.status, 200);
    }
    until("published", Duration::from_secs(30), || {
        status(&a).streamed == 3
    })
    .await;
    a.stop().await;

    let (code, out) = maintain(rgw, &p, &["stats", "--json"]).await;
    assert_eq!(code, 0);
    let stats: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (stats["references"].as_u64(), stats["bodies"].as_u64()),
        (Some(3), Some(3))
    );
    assert_eq!(stats["body_bytes"], 60_000);

    // A damaged body: verify finds it, exits 1 and removes its reference.
    let two = format!("{p}/bodies/{}", sha256(&files[1].1));
    let mut bad = files[1].1.to_vec();
    bad[5] ^= 1;
    rgw.s3().put(&two, &bad).await;
    let (code, out) = maintain(rgw, &p, &["verify"]).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("DAMAGED") && out.contains("2 bodies match"),
        "{out}"
    );
    assert_eq!(objects(rgw, &p, "refs").await.len(), 2);

    let (code, out) = maintain(rgw, &p, &["purge", "/m/one*"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("removed /m/one.tgz"), "{out}");
    assert_eq!(objects(rgw, &p, "refs").await.len(), 1);

    // Unreferenced bodies go, past the grace period only.
    let (_, out) = maintain(rgw, &p, &["gc", "--shared", "--grace", "1h"]).await;
    assert!(out.contains("and 0 unreferenced bodies"), "{out}");
    let (code, out) = maintain(rgw, &p, &["gc", "--shared", "--grace", "0s"]).await;
    assert_eq!(code, 0);
    assert_eq!(objects(rgw, &p, "bodies").await.len(), 1, "{out}");

    // Over the size bound: the least recently used references go, then their bodies.
    let (code, out) = maintain(
        rgw,
        &p,
        &["gc", "--shared", "--max-size", "1000", "--grace", "0s"],
    )
    .await;
    assert_eq!(code, 0);
    assert!(out.contains("removed 1 least recently used"), "{out}");
    assert!(objects(rgw, &p, "refs").await.is_empty());
    assert!(objects(rgw, &p, "bodies").await.is_empty());
}
