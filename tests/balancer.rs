//! `contrib/haproxy/package-cache.cfg` run by the real HAProxy in front of three test
//! nodes: consistent hashing on the path sends each URI to one node, health checks on the
//! nodes' admin `/healthz` take a stopped node out, and only that node's keys move. Then
//! three real nodes sharing a real RGW bucket behind it: a herd costs one upstream
//! request, and a node that leaves costs none (its keys are found in the shared store).

mod support;

use package_cache::config::ListenAddr;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use support::app::{source, TestApp};
use support::client::{self, bytes_of, get};
use support::haproxy::{self, Haproxy, Node};
use support::origin::{Origin, Reply};
use support::rgw::{self, Rgw};

const PATHS: usize = 60;

/// A node: its proxy port answers every path with its own name; its admin port answers
/// `/healthz`.
async fn node(name: &str) -> (Origin, Origin) {
    let traffic = Origin::builder()
        .fallback(Reply::file(name.to_string()))
        .start()
        .await;
    let admin = Origin::builder().file("/healthz", "ok").start().await;
    (traffic, admin)
}

/// Which node served each path (by the body), asked twice in a row.
async fn owners(lb: &Haproxy) -> HashMap<String, String> {
    let mut owners = HashMap::new();
    for i in 0..PATHS {
        let path = format!("/distfiles/{:02x}/pkg-{i}.tar.gz", i * 37 % 256);
        let first = get(&lb.url(&path)).await;
        assert_eq!(first.status, 200, "{path}: {}", lb.log());
        let again = get(&lb.url(&path)).await;
        assert_eq!(first.body, again.body, "{path}: one URI, one node");
        // The query is not part of the key.
        let query = get(&lb.url(&format!("{path}?x=1"))).await;
        assert_eq!(first.body, query.body, "{path}: the query does not move it");
        owners.insert(path, String::from_utf8(first.body).unwrap());
    }
    owners
}

#[tokio::test]
async fn consistent_hashing_keeps_keys_on_their_node_and_moves_only_a_lost_nodes() {
    if !haproxy::installed() {
        return;
    }
    let mut nodes = Vec::new();
    for name in ["node1", "node2", "node3"] {
        nodes.push(node(name).await);
    }
    let addrs: Vec<Node> = nodes
        .iter()
        .map(|(traffic, admin)| Node {
            traffic: traffic.addr(),
            admin: admin.addr(),
        })
        .collect();
    let lb = Haproxy::start(&addrs).await;
    assert_eq!(lb.names, ["node1", "node2", "node3"]);
    // HAProxy starts with every server UP; wait for its checks to have reached each node.
    tokio::time::timeout(Duration::from_secs(10), async {
        while nodes.iter().any(|(_, admin)| admin.hits("/healthz") < 2) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("health checks reach every node's admin port");
    for name in &lb.names {
        lb.wait_until(name, true, Duration::from_secs(10)).await;
    }

    let before = owners(&lb).await;
    for name in &lb.names {
        let owned = before.values().filter(|o| *o == name).count();
        assert!(
            owned >= PATHS / 10,
            "{name} owns {owned} of {PATHS}: {before:?}"
        );
    }
    // Only the traffic ports served files; health checks went to the admin ports.
    let served: usize = nodes.iter().map(|(t, _)| t.total_hits()).sum();
    assert_eq!(served, PATHS * 3);
    assert!(nodes.iter().all(|(t, _)| t.hits("/healthz") == 0));

    // node2 goes away (its proxy and admin ports close): it leaves the ring.
    nodes[1].0.stop().await;
    nodes[1].1.stop().await;
    lb.wait_until("node2", false, Duration::from_secs(10)).await;
    let after = owners(&lb).await;
    let mut moved = 0;
    for (path, owner) in &before {
        if owner == "node2" {
            assert_ne!(after[path], "node2", "{path}");
            moved += 1;
        } else {
            assert_eq!(&after[path], owner, "{path}: a survivor's key stayed");
        }
    }
    assert!(moved > 0);
    // The survivors took node2's keys between them, each key to one node.
    assert_eq!(
        nodes[1].0.total_hits(),
        before.values().filter(|o| *o == "node2").count() * 3
    );
    lb.stop().await;
}

#[test]
fn the_contrib_config_renders_for_loopback() {
    let config = std::fs::read_to_string(haproxy::CONFIG).unwrap();
    assert!(config.contains("balance uri"));
    assert!(config.contains("hash-type consistent"));
    assert!(config.contains("option httpchk GET /healthz"));
    let node = |a: &str, b: &str| Node {
        traffic: a.parse().unwrap(),
        admin: b.parse().unwrap(),
    };
    let (text, names) = haproxy::render(
        &config,
        "127.0.0.1:8080".parse().unwrap(),
        std::path::Path::new("/tmp/x.sock"),
        &[
            node("127.0.0.1:1", "127.0.0.1:2"),
            node("127.0.0.1:3", "127.0.0.1:4"),
            node("127.0.0.1:5", "127.0.0.1:6"),
        ],
    );
    assert_eq!(names, ["node1", "node2", "node3"]);
    assert!(text.contains("    bind 127.0.0.1:8080\n"));
    assert!(text.contains("    stats socket /tmp/x.sock mode 600 level admin\n"));
    assert!(text.contains("    server node2 127.0.0.1:3 id 2 check port 4\n"));
    assert!(!text.contains(".internal"));
}

/// Three real nodes sharing one RGW bucket behind the contrib HAProxy config.
struct Fleet {
    nodes: Vec<Option<TestApp>>,
    lb: Haproxy,
}

impl Fleet {
    async fn start(origin: &Origin, rgw: &Rgw, prefix: &str) -> Fleet {
        let mut nodes = Vec::new();
        for i in 0..3 {
            let mut shared = rgw.config(prefix);
            shared.set("node", &format!("n{i}")).unwrap();
            let origin = origin.url();
            let app = TestApp::start(move |c| {
                let mut c = source(c, &origin);
                c.shared_store = Some(shared);
                c.server.admin = Some(ListenAddr::loopback_any_port());
                c
            })
            .await;
            nodes.push(Some(app));
        }
        let addrs: Vec<Node> = nodes
            .iter()
            .flatten()
            .map(|app| Node {
                traffic: app.addr,
                admin: app.admin.expect("admin on"),
            })
            .collect();
        let lb = Haproxy::start(&addrs).await;
        for name in lb.names.clone() {
            lb.wait_until(&name, true, Duration::from_secs(10)).await;
        }
        Fleet { nodes, lb }
    }

    fn running(&self) -> impl Iterator<Item = &TestApp> {
        self.nodes.iter().flatten()
    }

    /// References published by the fleet so far.
    fn published(&self) -> u64 {
        self.running()
            .map(|n| n.running().shared().unwrap().status().stats.published)
            .sum()
    }

    async fn stop(self) {
        self.lb.stop().await;
        for node in self.nodes.into_iter().flatten() {
            node.stop().await;
        }
    }
}

fn shared_prefix(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("lb-{test}-{}-{nanos:08x}", std::process::id())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_the_balancer_a_herd_costs_one_fetch_and_a_lost_node_costs_none() {
    if !haproxy::installed() {
        return;
    }
    let Some(rgw) = rgw::shared().await else {
        return;
    };
    let herd = bytes_of(1 << 20, 50);
    let files: Vec<(String, bytes::Bytes)> = (0..12)
        .map(|i| {
            (
                format!("/f/pkg-{i}.tgz"),
                bytes_of(100_000 + i, 60 + i as u64),
            )
        })
        .collect();
    // About a second for the herd's file: every client joins the one fill.
    let mut builder = Origin::builder().route(
        "/herd/big.tar.xz",
        Reply::file(herd.clone()).throttle(1 << 20),
    );
    for (path, body) in &files {
        builder = builder.file(path, body.clone());
    }
    let origin = builder.start().await;
    let fleet = Fleet::start(&origin, rgw, &shared_prefix("herd")).await;

    let url = fleet.lb.url("/herd/big.tar.xz");
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(32));
    let mut clients = Vec::new();
    for _ in 0..32 {
        let (url, barrier) = (url.clone(), barrier.clone());
        clients.push(tokio::spawn(async move {
            barrier.wait().await;
            let (parts, body, _) = client::open(&url, &[]).await;
            let head_at = Instant::now();
            let (bytes, err) = client::read_body(body).await;
            (head_at, parts.status, bytes, err)
        }));
    }
    let mut results = Vec::new();
    for c in clients {
        results.push(c.await.unwrap());
    }
    let first = results.iter().map(|r| r.0).min().unwrap();
    let spread = results.iter().map(|r| r.0 - first).max().unwrap();
    eprintln!("herd: every first byte within {spread:?} of the first");
    for (_, status, bytes, err) in &results {
        assert_eq!(*status, 200);
        assert!(err.is_none() && bytes[..] == herd[..], "{err:?}");
    }
    assert!(spread < Duration::from_millis(50), "{spread:?}");
    assert_eq!(origin.hits("/herd/big.tar.xz"), 1, "one upstream request");

    // Twelve files through the balancer, each fetched once and published.
    for (path, body) in &files {
        let got = get(&fleet.lb.url(path)).await;
        assert!(got.status == 200 && got.body == body[..], "{path}");
    }
    let began = Instant::now();
    while fleet.published() < 13 {
        assert!(began.elapsed() < Duration::from_secs(60), "published");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The node holding the most entries leaves; its keys move to nodes that
    // find them in the shared store.
    let owner = (0..3)
        .max_by_key(|i| {
            fleet.nodes[*i]
                .as_ref()
                .map_or(0, |n| n.running().store().usage().1)
        })
        .unwrap();
    let name = fleet.lb.names[owner].clone();
    let mut fleet = fleet;
    let owned = fleet.nodes[owner]
        .as_ref()
        .unwrap()
        .running()
        .store()
        .usage()
        .1;
    eprintln!("balancer: {name} owned {owned} of 13 entries; stopping it");
    fleet.nodes[owner].take().unwrap().stop().await;
    fleet
        .lb
        .wait_until(&name, false, Duration::from_secs(10))
        .await;
    let hits_before = origin.total_hits();
    for (path, body) in &files {
        let got = get(&fleet.lb.url(path)).await;
        assert!(got.status == 200 && got.body == body[..], "{path}");
    }
    let got = get(&fleet.lb.url("/herd/big.tar.xz")).await;
    assert!(got.body == herd[..]);
    assert_eq!(origin.total_hits(), hits_before, "0 new upstream requests");
    let served: u64 = fleet
        .running()
        .map(|n| n.running().shared().unwrap().status().served)
        .sum();
    assert!(
        served >= owned,
        "the survivors served {served} from the store"
    );
    fleet.stop().await;
}
