//! `cargo bench --bench proxy`: package-cache against nginx `proxy_cache`, side by side, on one
//! nginx upstream. Both proxies run for the whole bench; each scenario alternates
//! package-cache, nginx, package-cache, ... over BENCH_RUNS runs and reports the median of the
//! per-run ours/nginx ratios, their spread, CPU seconds per GiB served, and a floor verdict.
//!
//! Environment: BENCH_RUNS (default 5), BENCH_QUICK=1 (small sizes, 2 runs), BENCH_ONLY=a,b, BENCH_ACCESS_LOG=1, BENCH_KEEP=1
//! (keep the work dir with all configs and logs). See benches/README.md.

mod client;
mod hits;
mod misses;
mod nginx;
mod procs;
mod report;

use anyhow::{bail, Context, Result};
use procs::{free_port, Server};
use report::{Row, Side};
use std::fs;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PACKAGE_CACHE: &str = env!("CARGO_BIN_EXE_package-cache");
pub const KIB: u64 = 1024;
pub const MIB: u64 = 1024 * KIB;
pub const GIB: u64 = 1024 * MIB;
/// Every fixture is named like a package archive, in case a route only caches those.
pub const EXT: &str = ".tar.gz";

/// Sizes and counts for one bench run, from the environment.
pub struct Settings {
    pub runs: usize,
    pub quick: bool,
    keep: bool,
    /// nginx `worker_processes`: the cores, which is also package-cache's tokio worker count.
    pub workers: usize,
    pub wrk_secs: u64,
    pub small_len: u64,
    pub big_len: u64,
    pub big_clients: usize,
    pub cold_len: u64,
    pub herd_len: u64,
    pub herd_clients: usize,
    pub rss_len: u64,
    pub rss_clients: usize,
    /// `limit_rate` of the upstream's `/slow/` location, bytes per second.
    pub throttle: u64,
}

impl Settings {
    fn from_env() -> Result<Settings> {
        let quick = std::env::var("BENCH_QUICK").is_ok_and(|v| v == "1");
        let runs = match std::env::var("BENCH_RUNS") {
            Ok(v) => v
                .parse()
                .with_context(|| format!("BENCH_RUNS={v:?} is not a number"))?,
            Err(_) if quick => 2,
            Err(_) => 5,
        };
        if runs == 0 {
            bail!("BENCH_RUNS must be at least 1");
        }
        let pick = |full: u64, small: u64| if quick { small } else { full };
        Ok(Settings {
            runs,
            quick,
            keep: std::env::var("BENCH_KEEP").is_ok_and(|v| v == "1"),
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            wrk_secs: pick(5, 2),
            small_len: 4 * KIB,
            big_len: pick(256 * MIB, 32 * MIB),
            big_clients: 4,
            cold_len: pick(8 * MIB, MIB),
            herd_len: pick(64 * MIB, 16 * MIB),
            herd_clients: 32,
            rss_len: pick(GIB, 128 * MIB),
            rss_clients: 64,
            throttle: 32 * MIB,
        })
    }
}

/// A proxy under test and where it listens.
pub struct Target {
    pub addr: SocketAddr,
    pub server: Server,
}

/// Everything the scenarios share: settings, the work dir, the upstream and both proxies.
/// Fields drop in order, so the proxies stop before the upstream.
pub struct Bench {
    pub settings: Settings,
    pub dir: PathBuf,
    data: PathBuf,
    pub upstream_addr: SocketAddr,
    upstream_log: PathBuf,
    ours: Target,
    nginx: Target,
    ours_starts: usize,
    _upstream: Server,
}

impl Bench {
    fn start(settings: Settings, dir: &Path) -> Result<Bench> {
        let data = dir.join("data");
        fs::create_dir_all(&data)?;

        let upstream_addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let up_prefix = dir.join("upstream");
        let up_conf = nginx::upstream_conf(&up_prefix, upstream_addr, &data, settings.throttle);
        let upstream = nginx::start("nginx upstream", &up_prefix, &up_conf, upstream_addr)?;
        println!(
            "upstream: nginx pid {} on http://{upstream_addr}/ (root {}; /slow/ limit_rate {} MiB/s)",
            upstream.pid(),
            data.display(),
            settings.throttle / MIB
        );

        let ref_addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let ref_prefix = dir.join("reference");
        let ref_conf =
            nginx::reference_conf(&ref_prefix, ref_addr, upstream_addr, settings.workers);
        let reference = nginx::start("nginx proxy_cache", &ref_prefix, &ref_conf, ref_addr)?;
        println!(
            "reference: nginx proxy_cache pid {} on http://{ref_addr}/, config {}:",
            reference.pid(),
            ref_prefix.join("nginx.conf").display()
        );
        println!(
            "{}",
            ref_conf
                .lines()
                .map(|l| format!("    {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        );

        let ours = launch_ours(dir, upstream_addr, 1)?;
        Ok(Bench {
            settings,
            dir: dir.to_path_buf(),
            data,
            upstream_addr,
            upstream_log: up_prefix.join("access.log"),
            ours,
            nginx: Target {
                addr: ref_addr,
                server: reference,
            },
            ours_starts: 1,
            _upstream: upstream,
        })
    }

    /// Stops the current package-cache and starts a fresh one on the same cache dir and source.
    pub fn restart_ours(&mut self) -> Result<()> {
        self.ours.server.stop();
        self.ours_starts += 1;
        self.ours = launch_ours(&self.dir, self.upstream_addr, self.ours_starts)?;
        Ok(())
    }

    pub fn target(&self, side: Side) -> &Target {
        match side {
            Side::Ours => &self.ours,
            Side::Nginx => &self.nginx,
        }
    }

    /// Writes a pseudo-random file of `len` bytes at URL path `path` under the upstream's root
    /// and returns its content. The seed comes from the path, so every fixture differs.
    /// The file is synced to disk before this returns.
    pub fn fixture(&self, path: &str, len: u64) -> Result<Vec<u8>> {
        let file = self.data.join(path.trim_start_matches('/'));
        fs::create_dir_all(file.parent().expect("a fixture path has a parent"))?;
        let seed = path.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        let content = pseudo_random(len as usize, seed);
        let mut out = fs::File::create(&file)?;
        out.write_all(&content)?;
        // Flushed now, so its writeback does not land in the middle of a measurement.
        out.sync_all()
            .with_context(|| format!("writing {}", file.display()))?;
        Ok(content)
    }

    /// How many requests for `path` the upstream has logged so far.
    pub fn upstream_requests(&self, path: &str) -> usize {
        let log = fs::read_to_string(&self.upstream_log).unwrap_or_default();
        log.lines()
            .filter(|l| l.split_whitespace().nth(1) == Some(path))
            .count()
    }
}

/// Starts package-cache (start number `n`, for the log name) on a free port, with the
/// upstream as its only source and `<dir>/ours-cache` as its cache.
fn launch_ours(dir: &Path, upstream: SocketAddr, n: usize) -> Result<Target> {
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let log = dir.join(format!("package-cache-{n}.log"));
    let mut cmd = Command::new(PACKAGE_CACHE);
    cmd.arg("--source").arg(format!("http://{upstream}/"));
    cmd.arg("--cache").arg(dir.join("ours-cache"));
    cmd.args(["--host", "127.0.0.1", "--port", &addr.port().to_string()]);
    cmd.args(["--admin", "off"]);
    // Like for like: the nginx reference runs with `access_log off`, so by
    // default package-cache runs without its per-request line too.
    // BENCH_ACCESS_LOG=1 keeps it on (an explicit RUST_LOG wins either way).
    if std::env::var_os("RUST_LOG").is_none()
        && std::env::var("BENCH_ACCESS_LOG").as_deref() != Ok("1")
    {
        cmd.env("RUST_LOG", "warn");
    }
    println!("package-cache: {cmd:?} > {}", log.display());
    let mut server = Server::spawn("package-cache", cmd, &log, false)?;
    server.wait_ready(addr, Duration::from_secs(15))?;
    println!("package-cache: pid {} on http://{addr}/", server.pid());
    Ok(Target { addr, server })
}

/// SplitMix64 output as bytes: fast (well over 1 GB/s) and incompressible.
fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    let mut out = vec![0u8; len.next_multiple_of(8)];
    for chunk in out.chunks_exact_mut(8) {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        chunk.copy_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

fn require(tool: &str, arg: &str) -> Result<()> {
    let ok = Command::new(tool)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !ok {
        bail!("`{tool}` is not installed (apt-get install nginx-light wrk)");
    }
    Ok(())
}

type Scenario = fn(&mut Bench) -> Result<Vec<Row>>;

/// Runs every scenario and prints the table; `Ok(false)` when a scenario could not be measured.
fn run() -> Result<bool> {
    let settings = Settings::from_env()?;
    require(nginx::binary(), "-v")?;
    require("wrk", "--version")?;
    let base = if Path::new("/var/tmp").is_dir() {
        PathBuf::from("/var/tmp")
    } else {
        std::env::temp_dir()
    };
    let tmp = tempfile::Builder::new()
        .prefix("package-cache-bench-")
        .tempdir_in(&base)?;
    let (runs, quick, keep) = (settings.runs, settings.quick, settings.keep);
    println!(
        "proxy bench: {runs} alternating runs per scenario{}, work dir {}",
        if quick { " (BENCH_QUICK)" } else { "" },
        tmp.path().display()
    );

    let started = Instant::now();
    let (mut rows, mut all_measured) = (Vec::new(), true);
    {
        let mut bench = Bench::start(settings, tmp.path())?;
        let scenarios: [(&str, &str, Scenario); 5] = [
            (
                "a",
                "4 KiB cached hits, keep-alive, 64 connections (wrk)",
                hits::small_hits,
            ),
            ("b", "large cached hit, 4 parallel clients", hits::big_hits),
            (
                "c",
                "cold miss from the throttled upstream: time to first byte",
                misses::cold_ttfb,
            ),
            (
                "d",
                "32 concurrent clients on one cold file from the throttled upstream",
                misses::herd,
            ),
            (
                "e",
                "peak RSS while 64 clients stream a large cached file",
                hits::peak_rss,
            ),
        ];
        let only = std::env::var("BENCH_ONLY").unwrap_or_default();
        for (id, title, scenario) in scenarios {
            if !only.is_empty() && !only.split(',').any(|o| o == id) {
                continue;
            }
            println!("\n== {id}. {title}");
            let t0 = Instant::now();
            match scenario(&mut bench) {
                Ok(r) => rows.extend(r),
                Err(err) => {
                    println!("   scenario {id} FAILED: {err:#}");
                    rows.push(Row::error(id, &err));
                    all_measured = false;
                }
            }
            println!("   ({:.1} s)", t0.elapsed().as_secs_f64());
        }
    } // every server stops here, before the table and before the work dir goes

    println!(
        "\n== results ({runs} runs per side, alternating; {:.0} s total)\n",
        started.elapsed().as_secs_f64()
    );
    report::print_table(&rows);
    let failed = rows.iter().filter(|r| r.failed()).count();
    println!("\n{failed} of {} rows FAIL", rows.len());
    if keep {
        println!("work dir kept: {}", tmp.keep().display());
    }
    Ok(all_measured)
}

/// Floor misses are reported, not fatal; the exit status is 1 only when the bench could not
/// start or a scenario could not be measured (an ERROR row).
fn main() {
    match run() {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(err) => {
            eprintln!("proxy bench failed: {err:#}");
            std::process::exit(1);
        }
    }
}
