//! `cargo bench --bench startup`: one node on a cache of millions of entries
//! (issue 9, "One node, ten million entries"). Against the crate's own
//! binary, on a synthetic cache generated once under `target/bench-startup/`
//! (see `cache`), and on a cache of 1,000 entries as the reference in the
//! same run, it measures:
//!
//! - the time from process start to the first served hit;
//! - hit latency while the index builds in the background, and after;
//! - RSS once the index is built, per entry (net of the reference's RSS).
//!
//! Environment: BENCH_ENTRIES (default 2000000), BENCH_WORK (default
//! `target/bench-startup`). See benches/README.md.

mod cache;

use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PACKAGE_CACHE: &str = env!("CARGO_BIN_EXE_package-cache");
const REFERENCE_ENTRIES: usize = 1_000;
/// Hits timed after the build (and at most as many during it).
const HITS: usize = 2_000;
/// Longest wait for the first hit and for the index.
const LIMIT: Duration = Duration::from_secs(1_800);

fn main() -> Result<()> {
    let entries: usize = match std::env::var("BENCH_ENTRIES") {
        Ok(v) => v.parse().with_context(|| format!("BENCH_ENTRIES={v:?}"))?,
        Err(_) => 2_000_000,
    };
    if entries < cache::PROBE_EVERY * 4 {
        bail!("BENCH_ENTRIES must be at least {}", cache::PROBE_EVERY * 4);
    }
    let work = match std::env::var("BENCH_WORK") {
        Ok(dir) => PathBuf::from(dir),
        Err(_) => Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-startup"),
    };
    let reference = cache::ensure(&work, REFERENCE_ENTRIES)?;
    let big = cache::ensure(&work, entries)?;
    let reference = run(&reference, REFERENCE_ENTRIES, &work)?;
    let measured = run(&big, entries, &work)?;
    report(&reference, &measured);
    Ok(())
}

/// What one start of a node on one cache gave.
struct Figures {
    entries: usize,
    first_hit: Duration,
    indexed_ms: u64,
    indexed_entries: u64,
    rss: u64,
    during: Vec<Duration>,
    after: Vec<Duration>,
}

/// A running node, killed (by its PID) when dropped.
struct Node {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Node {
    fn start(cache: &Path, work: &Path) -> Result<Node> {
        let port = free_port()?;
        // Nothing listens there: a miss would fail, and no hit needs it.
        let upstream = free_port()?;
        let log = work.join("node.log");
        let out = std::fs::File::create(&log)?;
        let child = Command::new(PACKAGE_CACHE)
            .args(["--source", &format!("http://127.0.0.1:{upstream}/")])
            .arg("--cache")
            .arg(cache)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--admin", "off", "--api", "off", "--log-format", "json"])
            // Hits then record their use in the index, as under eviction.
            .args(["--max-size", "1000G"])
            .env("RUST_LOG", "package_cache=info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .context("starting package-cache")?;
        Ok(Node {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            log,
        })
    }

    /// The fields of the "cache indexed" log line, once it is written.
    fn indexed(&self) -> Option<serde_json::Value> {
        let log = std::fs::read_to_string(&self.log).ok()?;
        let line = log.lines().find(|l| l.contains("cache indexed"))?;
        serde_json::from_str::<serde_json::Value>(line)
            .ok()
            .map(|v| v["fields"].clone())
    }

    fn rss(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .context("VmRSS")?;
        Ok(kib * 1024)
    }
}

fn run(cache: &Path, entries: usize, work: &Path) -> Result<Figures> {
    // Cold page cache is not what is measured: the same tree was just
    // written or read; dropping caches would need root and disturb others.
    let started = Instant::now();
    let node = Node::start(cache, work)?;
    let probes: Vec<usize> = (0..entries).step_by(cache::PROBE_EVERY).collect();
    let mut client = loop {
        if started.elapsed() > LIMIT {
            bail!("no connection within {LIMIT:?}");
        }
        match TcpStream::connect(node.addr) {
            Ok(stream) => break Client::new(stream)?,
            Err(_) => std::thread::sleep(Duration::from_millis(1)),
        }
    };
    client.hit(probes[0])?;
    let first_hit = started.elapsed();
    // Odd probes while the index builds, even ones after: each read from disk once.
    let mut during = Vec::new();
    let mut odd = probes.iter().skip(1).step_by(2);
    while during.len() < HITS {
        if during.len() % 32 == 0 && node.indexed().is_some() {
            break;
        }
        let Some(&probe) = odd.next() else { break };
        let t = Instant::now();
        client.hit(probe)?;
        during.push(t.elapsed());
    }
    let indexed = loop {
        if let Some(fields) = node.indexed() {
            break fields;
        }
        if started.elapsed() > LIMIT {
            bail!("the index was not built within {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // Let freed build-time memory go back before reading RSS.
    std::thread::sleep(Duration::from_secs(1));
    let rss = node.rss()?;
    // A connection idle through the build is closed by the server's header timeout.
    let mut client = Client::new(TcpStream::connect(node.addr)?)?;
    let mut after = Vec::new();
    for &probe in probes.iter().skip(2).step_by(2).take(HITS) {
        let t = Instant::now();
        client.hit(probe)?;
        after.push(t.elapsed());
    }
    Ok(Figures {
        entries,
        first_hit,
        indexed_ms: indexed["elapsed_ms"].as_u64().unwrap_or(0),
        indexed_entries: indexed["entries"].as_u64().unwrap_or(0),
        rss,
        during,
        after,
    })
}

/// One keep-alive HTTP/1.1 connection.
struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    fn new(stream: TcpStream) -> Result<Client> {
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        // One write per request, and no Nagle delay behind the server's delayed ACK.
        stream.set_nodelay(true)?;
        Ok(Client {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        })
    }

    /// GETs probe `i`; fails unless it is a HIT with the probe's body.
    fn hit(&mut self, i: usize) -> Result<()> {
        let path = cache::path(i);
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: keep-alive\r\n\r\n");
        self.writer.write_all(request.as_bytes())?;
        let mut status = String::new();
        self.reader.read_line(&mut status)?;
        let (mut len, mut hit) = (0usize, false);
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line)?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').unwrap_or((line, ""));
            match name.to_ascii_lowercase().as_str() {
                "content-length" => len = value.trim().parse()?,
                "x-cache" => hit = value.trim() == "HIT",
                _ => {}
            }
        }
        let mut body = vec![0; len];
        self.reader.read_exact(&mut body)?;
        if !status.contains(" 200 ") || !hit || body != cache::probe_body(i) {
            bail!("{path}: {} (X-Cache HIT: {hit})", status.trim_end());
        }
        Ok(())
    }
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn percentile(times: &[Duration], p: f64) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort();
    match sorted.len() {
        0 => Duration::ZERO,
        n => sorted[((n - 1) as f64 * p).round() as usize],
    }
}

fn report(reference: &Figures, big: &Figures) {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!("\n## startup: one node, {} entries\n", big.entries);
    println!(
        "| | {} entries (reference) | {} entries | ratio |",
        reference.entries, big.entries
    );
    println!("|---|---|---|---|");
    println!(
        "| start to first served hit | {:.1} ms | {:.1} ms | {:.2} |",
        ms(reference.first_hit),
        ms(big.first_hit),
        ms(big.first_hit) / ms(reference.first_hit)
    );
    println!(
        "| index built (background), entries listed | {} ms, {} | {} ms, {} | |",
        reference.indexed_ms, reference.indexed_entries, big.indexed_ms, big.indexed_entries
    );
    println!(
        "| RSS once indexed | {:.1} MiB | {:.1} MiB | |",
        reference.rss as f64 / 1048576.0,
        big.rss as f64 / 1048576.0
    );
    let net = big.rss.saturating_sub(reference.rss) as f64 / big.entries as f64;
    let gross = big.rss as f64 / big.entries as f64;
    println!("| RSS per entry (net of the reference; gross) | | {net:.0} B; {gross:.0} B | |");
    for (name, p) in [("median", 0.5), ("p99", 0.99)] {
        let during = percentile(&big.during, p);
        let after = percentile(&big.after, p);
        println!(
            "| hit latency {name}, during the build / after ({} / {} hits) | {:.0} µs after | {:.0} µs / {:.0} µs | {:.2} |",
            big.during.len(),
            big.after.len(),
            us(percentile(&reference.after, p)),
            us(during),
            us(after),
            us(during) / us(after).max(1.0)
        );
    }
    let verdict = if net <= 150.0 {
        "≤ 150: ok"
    } else {
        "> 150: FAIL"
    };
    println!(
        "\nbytes per entry {net:.0} ({verdict}); first hit before the index: {}",
        if ms(big.first_hit) < big.indexed_ms as f64 {
            "yes"
        } else {
            "NO"
        }
    );
}
