//! `contrib/haproxy/package-cache.cfg` run by the real HAProxy in front of three test
//! nodes: consistent hashing on the path sends each URI to one node, health checks on the
//! nodes' admin `/healthz` take a stopped node out, and only that node's keys move.

mod support;

use std::collections::HashMap;
use std::time::Duration;
use support::client::get;
use support::haproxy::{self, Haproxy, Node};
use support::origin::{Origin, Reply};

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
