//! `cargo bench --bench shared`: the shared store tier against its references in the
//! same run. A real single-node Ceph RGW (tests/fixtures/rgw.sh), the crate's app
//! started in-process, an in-bench upstream serving files from memory, and the contrib
//! HAProxy config in front of three nodes. Per run, on a fresh file each:
//!
//! - upstream: node A's cold miss (TTFB, MiB/s), which also publishes the file;
//! - local hit: node A again;
//! - shared hit: node B, empty disk, filled from the store;
//! - through HAProxy vs straight to the node that owns the key (both local hits).
//!
//! Prints medians and the ratios shared/local, shared/upstream, haproxy/direct.
//! `BENCH_RUNS=N` (default 5), `BENCH_MIB=N` file size (default 64).

#[path = "../../tests/support/haproxy.rs"]
#[allow(dead_code)]
mod haproxy;
#[path = "../../tests/support/rgw.rs"]
#[allow(dead_code)]
mod rgw;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use package_cache::app::{self, Running};
use package_cache::config::{Config, ListenAddr, SharedStoreConfig};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One transfer: time to the response head, and throughput of the whole body.
#[derive(Clone, Copy, Debug)]
struct Took {
    ttfb: Duration,
    mib_s: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    v[v.len() / 2]
}

/// GET `path` from `addr`, read to the end, check the length.
async fn fetch(addr: SocketAddr, path: &str, len: usize) -> Took {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let request = Request::get(path)
        .header("host", addr.to_string())
        .body(Empty::<Bytes>::new())
        .expect("request");
    let began = Instant::now();
    let response = sender.send_request(request).await.expect("response");
    let ttfb = began.elapsed();
    assert_eq!(response.status(), 200, "{path}");
    let mut body = response.into_body();
    let mut got = 0;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.expect("body").into_data() {
            got += data.len();
        }
    }
    assert_eq!(got, len, "{path}: whole body");
    let secs = began.elapsed().as_secs_f64();
    Took {
        ttfb,
        mib_s: len as f64 / (1 << 20) as f64 / secs,
    }
}

/// An upstream serving `files` from memory.
async fn upstream(files: Arc<HashMap<String, Bytes>>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let files = files.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let body = files.get(req.uri().path()).cloned();
                    async move {
                        let response = match body {
                            Some(body) => Response::new(Full::new(body)),
                            None => {
                                let mut r = Response::new(Full::new(Bytes::new()));
                                *r.status_mut() = hyper::StatusCode::NOT_FOUND;
                                r
                            }
                        };
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

async fn node(cache: &std::path::Path, origin: SocketAddr, shared: SharedStoreConfig) -> Running {
    let mut config = Config::for_test(cache)
        .with_source(&format!("http://{origin}/"))
        .expect("source");
    config.shared_store = Some(shared);
    config.server.admin = Some(ListenAddr::loopback_any_port());
    config.upstream.idle_timeout = Duration::from_secs(30);
    config.server.client_timeout = Duration::from_secs(60);
    app::start(config).await.expect("node starts")
}

async fn published(node: &Running, n: u64) {
    let began = Instant::now();
    while node.shared().expect("shared").status().stats.published < n {
        assert!(began.elapsed() < Duration::from_secs(120), "published");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let mib: usize = std::env::var("BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let Some(rgw) = rgw::shared().await else {
        eprintln!("skipped: Ceph is not installed");
        return;
    };
    if !haproxy::installed() {
        eprintln!("skipped: HAProxy is not installed");
        return;
    }
    let len = mib << 20;
    let mut files = HashMap::new();
    for i in 0..runs {
        let mut body = vec![0u8; len];
        let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ i as u64;
        for chunk in body.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let bytes = x.to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        files.insert(format!("/bench/f{i}.bin"), Bytes::from(body));
    }
    let origin = upstream(Arc::new(files)).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let prefix = format!("bench-{}", std::process::id());
    let config = |name: &str| {
        let mut c = rgw.config(&prefix);
        c.set("node", name).expect("node name");
        c.part_size = 16 << 20;
        c
    };
    let a = node(&dir.path().join("a"), origin, config("a")).await;
    let c = node(&dir.path().join("c"), origin, config("c")).await;
    let d = node(&dir.path().join("d"), origin, config("d")).await;
    let (mut up, mut local, mut shared) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..runs {
        let path = format!("/bench/f{i}.bin");
        up.push(fetch(a.proxy_addr, &path, len).await);
        published(&a, i as u64 + 1).await;
        local.push(fetch(a.proxy_addr, &path, len).await);
        // A fresh node each run: its disk is empty.
        let b = node(&dir.path().join(format!("b{i}")), origin, config("b")).await;
        shared.push(fetch(b.proxy_addr, &path, len).await);
        b.shutdown().await;
    }
    // Through the balancer against straight to the owner, on local hits.
    let nodes = [&a, &c, &d];
    let lb = haproxy::Haproxy::start(
        &nodes
            .iter()
            .map(|n| haproxy::Node {
                traffic: n.proxy_addr,
                admin: n.admin_addr.expect("admin"),
            })
            .collect::<Vec<_>>(),
    )
    .await;
    for name in lb.names.clone() {
        lb.wait_until(&name, true, Duration::from_secs(10)).await;
    }
    let lb_addr: SocketAddr = lb
        .url("")
        .trim_start_matches("http://")
        .parse()
        .expect("lb addr");
    let path = "/bench/f0.bin";
    fetch(lb_addr, path, len).await;
    let entries = |n: &Running| n.store().usage().1;
    // The owner is the node the balancer sent it to (a has every file; the
    // others only what the balancer gave them).
    let owner = [&c, &d].into_iter().find(|n| entries(n) > 0).unwrap_or(&a);
    fetch(owner.proxy_addr, path, len).await;
    let (mut via_lb, mut direct) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        via_lb.push(fetch(lb_addr, path, len).await);
        direct.push(fetch(owner.proxy_addr, path, len).await);
    }
    lb.stop().await;
    a.shutdown().await;
    c.shutdown().await;
    d.shutdown().await;

    let ttfb = |v: &[Took]| median(v.iter().map(|t| t.ttfb.as_secs_f64() * 1e3).collect());
    let rate = |v: &[Took]| median(v.iter().map(|t| t.mib_s).collect());
    println!("shared tier, {mib} MiB files, {runs} runs (medians)");
    println!("{:<24} {:>10} {:>10}", "", "TTFB ms", "MiB/s");
    for (name, v) in [
        ("upstream (cold miss)", &up),
        ("local hit", &local),
        ("shared hit (new node)", &shared),
        ("local hit via HAProxy", &via_lb),
        ("local hit direct", &direct),
    ] {
        println!("{name:<24} {:>10.2} {:>10.0}", ttfb(v), rate(v));
    }
    println!(
        "ratios: shared/local TTFB {:.2}, MiB/s {:.2}; shared/upstream TTFB {:.2}, MiB/s {:.2}; \
         haproxy/direct TTFB {:.2}, MiB/s {:.2}",
        ttfb(&shared) / ttfb(&local),
        rate(&shared) / rate(&local),
        ttfb(&shared) / ttfb(&up),
        rate(&shared) / rate(&up),
        ttfb(&via_lb) / ttfb(&direct),
        rate(&via_lb) / rate(&direct),
    );
}
