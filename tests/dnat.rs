//! Transparent interception for real: network namespaces made by the test (a
//! client, a gateway running package-cache with the DNAT rule that
//! contrib/dnat/package-cache-dnat installs, and an upstream mirror), so that
//! `SO_ORIGINAL_DST` differs from the listener. Both the nft and iptables
//! variants and their --delete are exercised. Nothing changes in the root
//! namespace. Needs root, iproute2, nft and iptables.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Namespaces and processes of one topology; removed on drop.
struct Topology {
    prefix: String,
    net: u8,
    children: Vec<Child>,
}

fn sh(args: &[&str]) {
    let status = Command::new(args[0])
        .args(&args[1..])
        .status()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(status.success(), "{args:?} failed");
}

fn ns_exec(ns: &str, args: &[&str]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).args(args);
    c
}

impl Topology {
    fn up() -> Topology {
        let pid = std::process::id();
        let prefix = format!("pc{:04x}", pid & 0xffff);
        let net = 100 + (pid % 150) as u8;
        let t = Topology {
            prefix,
            net,
            children: Vec::new(),
        };
        let (cli, gw, up) = (t.ns("cli"), t.ns("gw"), t.ns("up"));
        let p = &t.prefix;
        let n = t.net;
        for ns in [&cli, &gw, &up] {
            // No DNS server anywhere: lookups must fail fast, not hang
            // (python's http.server does a reverse lookup of its address).
            let etc = std::path::Path::new("/etc/netns").join(ns);
            std::fs::create_dir_all(&etc).expect("/etc/netns/NS");
            std::fs::write(etc.join("resolv.conf"), "nameserver 127.0.0.1\n").expect("resolv.conf");
            sh(&["ip", "netns", "add", ns]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        sh(&[
            "ip",
            "link",
            "add",
            &format!("{p}h0"),
            "netns",
            &gw,
            "type",
            "veth",
            "peer",
            "name",
            &format!("{p}c0"),
            "netns",
            &cli,
        ]);
        sh(&[
            "ip",
            "link",
            "add",
            &format!("{p}h1"),
            "netns",
            &gw,
            "type",
            "veth",
            "peer",
            "name",
            &format!("{p}u0"),
            "netns",
            &up,
        ]);
        for (ns, dev, addr) in [
            (&gw, format!("{p}h0"), format!("10.{n}.0.1/24")),
            (&cli, format!("{p}c0"), format!("10.{n}.0.2/24")),
            (&gw, format!("{p}h1"), format!("10.{n}.1.1/24")),
            (&up, format!("{p}u0"), format!("10.{n}.1.2/24")),
        ] {
            sh(&["ip", "-n", ns, "addr", "add", &addr, "dev", &dev]);
            sh(&["ip", "-n", ns, "link", "set", &dev, "up"]);
        }
        sh(&[
            "ip",
            "-n",
            &cli,
            "route",
            "add",
            "default",
            "via",
            &format!("10.{n}.0.1"),
        ]);
        sh(&[
            "ip",
            "-n",
            &up,
            "route",
            "add",
            "default",
            "via",
            &format!("10.{n}.1.1"),
        ]);
        t
    }

    /// Runs contrib/dnat/package-cache-dnat in the gateway with `args`.
    fn dnat(&self, args: &[&str]) {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/contrib/dnat/package-cache-dnat"
        );
        let iif = format!("{}h0", self.prefix);
        let to = format!("10.{}.0.1:8080", self.net);
        let mirror = format!("10.{}.1.2", self.net);
        let mut all = vec!["sh", script];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--iif", &iif, "--to", &to, &mirror]);
        let status = ns_exec(&self.ns("gw"), &all)
            .status()
            .expect("dnat script runs");
        assert!(status.success(), "package-cache-dnat {args:?}");
    }

    fn ns(&self, role: &str) -> String {
        format!("{}{role}", self.prefix)
    }

    fn spawn(&mut self, ns: &str, args: &[&str], stderr: Stdio) -> usize {
        let child = ns_exec(ns, args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn in namespace");
        self.children.push(child);
        self.children.len() - 1
    }

    fn stop(&mut self, index: usize) {
        let _ = self.children[index].kill();
        let _ = self.children[index].wait();
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for role in ["cli", "gw", "up"] {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(role)])
                .status();
            let _ = std::fs::remove_dir_all(std::path::Path::new("/etc/netns").join(self.ns(role)));
        }
    }
}

fn wait_port(ns: &str, addr: &str) {
    let started = Instant::now();
    loop {
        let ok = ns_exec(
            ns,
            &[
                "bash",
                "-c",
                &format!("exec 3<>/dev/tcp/{}", addr.replace(':', "/")),
            ],
        )
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
        if ok {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{addr} in {ns} did not open"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wget(ns: &str, url: &str, host: Option<&str>) -> (bool, Vec<u8>, String) {
    wget_within(ns, url, host, "10")
}

/// As `wget`, giving up after `secs` (for requests expected to fail: without
/// a DNAT rule the gateway, which does not forward, drops them).
fn wget_within(ns: &str, url: &str, host: Option<&str>, secs: &str) -> (bool, Vec<u8>, String) {
    let mut args = vec!["wget", "-S", "-q", "-O", "-", "-T", secs, "-t", "1"];
    let header;
    if let Some(h) = host {
        header = format!("--header=Host: {h}");
        args.push(&header);
    }
    args.push(url);
    let out = ns_exec(ns, &args).output().expect("wget runs");
    (
        out.status.success(),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn dnat_redirected_requests_are_cached_for_allowed_hosts_only() {
    if !support::needs_root("for network namespaces") {
        return;
    }
    let mut topo = Topology::up();
    let n = topo.net;
    let (cli, gw, up) = (topo.ns("cli"), topo.ns("gw"), topo.ns("up"));
    let files = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(files.path().join("distfiles/ab")).unwrap();
    let body = support::client::bytes_of(123_456, 70);
    std::fs::write(files.path().join("distfiles/ab/pkg-1.0.tar.gz"), &body).unwrap();
    let mirror_addr = format!("10.{n}.1.2");
    let upstream = topo.spawn(
        &up,
        &[
            "python3",
            "-m",
            "http.server",
            "80",
            "--bind",
            &mirror_addr,
            "--directory",
            files.path().to_str().unwrap(),
        ],
        Stdio::null(),
    );
    wait_port(&up, &format!("{mirror_addr}:80"));

    let cache = tempfile::tempdir().unwrap();
    let log = cache.path().join("proxy.log");
    let log_file = std::fs::File::create(&log).unwrap();
    let allowed = format!("--transparent-host={mirror_addr}");
    topo.spawn(
        &gw,
        &[
            env!("CARGO_BIN_EXE_package-cache"),
            "--host",
            &format!("10.{n}.0.1"),
            "--port",
            "8080",
            "--admin",
            "off",
            "--api",
            "off",
            "--cache",
            cache.path().join("c").to_str().unwrap(),
            &allowed,
            "--log-format",
            "json",
        ],
        Stdio::from(log_file),
    );
    wait_port(&gw, &format!("10.{n}.0.1:8080"));

    topo.dnat(&["--nft"]);
    // A plain wget to the mirror's own address, as a client behind the gateway would run it.
    let url = format!("http://{mirror_addr}/distfiles/ab/pkg-1.0.tar.gz");
    let (ok, out, headers) = wget(&cli, &url, None);
    assert!(ok, "{headers}");
    assert_eq!(out, body.to_vec());
    assert!(
        headers.to_ascii_lowercase().contains("x-cache: miss"),
        "answered through the cache: {headers}"
    );
    let stored = cache
        .path()
        .join("c/.package-cache-hosts")
        .join(&mirror_addr)
        .join("distfiles/ab/pkg-1.0.tar.gz");
    let started = Instant::now();
    while !stored.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "entry committed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // The mirror goes away; the cache still answers.
    topo.stop(upstream);
    let (ok, out, headers) = wget(&cli, &url, None);
    assert!(ok, "{headers}");
    assert_eq!(out, body.to_vec());
    assert!(
        headers.to_ascii_lowercase().contains("x-cache: hit"),
        "{headers}"
    );

    // A host that is not allowed, even with the DNATed destination: refused.
    let (ok, _, headers) = wget(&cli, &url, Some("evil.example"));
    assert!(!ok);
    assert!(headers.contains("403"), "{headers}");

    // The original destination is in the request log.
    std::thread::sleep(Duration::from_millis(200));
    let text = std::fs::read_to_string(&log).unwrap();
    let hit_line = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["fields"]["message"] == "request" && v["fields"]["cache"] == "HIT")
        .unwrap_or_else(|| panic!("a HIT request line in {text}"));
    assert_eq!(
        hit_line["fields"]["orig_dst"],
        format!("{mirror_addr}:80"),
        "orig_dst of the served request"
    );

    // --delete undoes it: without the rule the client reaches the (stopped) mirror itself.
    topo.dnat(&["--nft", "--delete"]);
    let (ok, _, headers) = wget_within(&cli, &url, None, "2");
    assert!(!ok, "no redirect after --delete: {headers}");
    // The iptables variant redirects the same way, and its --delete undoes it too.
    topo.dnat(&["--iptables"]);
    let (ok, out, headers) = wget(&cli, &url, None);
    assert!(ok, "{headers}");
    assert_eq!(out, body.to_vec());
    assert!(
        headers.to_ascii_lowercase().contains("x-cache: hit"),
        "{headers}"
    );
    topo.dnat(&["--iptables", "--delete"]);
    let (ok, _, _) = wget_within(&cli, &url, None, "2");
    assert!(!ok, "no redirect after the iptables --delete");
    let _ = &gw;
}
