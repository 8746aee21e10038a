//! Cached-hit scenarios: (a) 4 KiB hits under wrk, (b) a large hit fetched by 4 parallel
//! clients, (e) peak RSS of a freshly started package-cache while 64 clients stream a large hit.
//! Each file is first fetched twice through each proxy; the second fetch must be a HIT.

use crate::client::{self, Response};
use crate::procs::run_bounded;
use crate::report::{Floor, Row, Samples, Side};
use crate::{Bench, EXT, GIB, KIB, MIB};
use anyhow::{bail, Context, Result};
use std::fs;
use std::net::SocketAddr;
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};

const WARM_TIMEOUT: Duration = Duration::from_secs(120);

/// How long warm-up keeps re-requesting a file whose second fetch was not yet a HIT.
const HIT_WAIT: Duration = Duration::from_secs(5);

/// X-Cache seen per side: during warm-up, and how many measured responses were not HITs.
#[derive(Default)]
struct HitTally {
    /// X-Cache of the second fetch, and how long until a HIT if that was not one.
    warm: [String; 2],
    not_hit: [usize; 2],
}

impl HitTally {
    fn count(&mut self, side: Side, response: &Response) {
        if !response.is_hit() {
            self.not_hit[side as usize] += 1;
        }
    }

    fn row(&self, scenario: &'static str) -> Row {
        let show = |i: usize| match self.not_hit[i] {
            0 => self.warm[i].clone(),
            n => format!("{}; {n} measured not HIT", self.warm[i]),
        };
        // Strict: the fetch right after a complete first response must already be a HIT.
        let pass = self.warm[0].eq_ignore_ascii_case("hit") && self.not_hit[0] == 0;
        Row::check(
            scenario,
            "x-cache of 2nd fetch (warm-up)",
            show(0),
            show(1),
            "HIT",
            pass,
        )
    }
}

/// Fetches `path` through each proxy until a fetch is a HIT (at most [`HIT_WAIT`] after the
/// first one completed), checking every body. The 2nd fetch is expected to be the HIT.
fn warm(bench: &Bench, path: &str, expected: &[u8]) -> Result<HitTally> {
    let mut tally = HitTally::default();
    for side in Side::BOTH {
        let addr = bench.target(side).addr;
        let fetch = |n: usize| {
            client::get(addr, path, WARM_TIMEOUT, Some(expected))
                .and_then(|r| r.expect_ok(expected.len() as u64).map(|()| r))
                .with_context(|| format!("{} warm-up GET {path} #{n}", side.label()))
        };
        let mut seen = vec![fetch(1)?.x_cache];
        let first_done = Instant::now();
        let hit_after = loop {
            let r = fetch(seen.len() + 1)?;
            seen.push(r.x_cache.clone());
            if r.is_hit() {
                break Some(first_done.elapsed());
            }
            if first_done.elapsed() > HIT_WAIT {
                break None;
            }
            sleep(Duration::from_millis(10));
        };
        let shown = match seen.len() {
            n if n <= 6 => seen.join(", "),
            n => format!(
                "{}, ... ({n} fetches), {}",
                seen[..3].join(", "),
                seen[n - 1]
            ),
        };
        println!("   warm-up {:<13} {path}: x-cache {shown}", side.label());
        let i = side as usize;
        tally.warm[i] = match hit_after {
            Some(_) if seen.len() == 2 => seen[1].clone(),
            Some(t) => format!("{}, HIT after {} ms", seen[1], t.as_millis()),
            None => format!("{}, no HIT in {} s", seen[1], HIT_WAIT.as_secs()),
        };
    }
    Ok(tally)
}

fn cpu_per_gib(cpu_seconds: f64, bytes: u64) -> f64 {
    cpu_seconds / (bytes as f64 / GIB as f64)
}

/// What wrk reported for one run.
struct Wrk {
    requests_per_sec: f64,
    requests: u64,
    errors: u64,
}

/// `wrk -t1 -c64 -d<secs>s`, bounded by a wall-clock timeout.
fn wrk(bench: &Bench, addr: SocketAddr, path: &str) -> Result<Wrk> {
    let secs = bench.settings.wrk_secs;
    let out_path = bench.dir.join("wrk.out");
    let out = fs::File::create(&out_path)?;
    let mut cmd = Command::new("wrk");
    cmd.args([
        "-t1",
        "-c64",
        &format!("-d{secs}s"),
        "--timeout",
        "5s",
        &format!("http://{addr}{path}"),
    ]);
    cmd.stdout(out.try_clone()?).stderr(out);
    let status = run_bounded(cmd, Duration::from_secs(secs + 30))?;
    let text = fs::read_to_string(&out_path)?;
    if !status.success() {
        bail!("wrk failed ({status}):\n{text}");
    }
    let number_after = |key: &str| -> Option<f64> {
        let line = text.lines().find(|l| l.contains(key))?;
        line.split(key)
            .nth(1)?
            .split_whitespace()
            .next()?
            .trim_end_matches(',')
            .parse()
            .ok()
    };
    let requests_per_sec = number_after("Requests/sec:")
        .with_context(|| format!("no Requests/sec in wrk output:\n{text}"))?;
    let requests = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no request count in wrk output:\n{text}"))?;
    // "Socket errors: connect 0, read 12, write 0, timeout 0" appears only when one is non-zero.
    let socket_errors: u64 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Socket errors:"))
        .map(|rest| {
            rest.split(',')
                .filter_map(|kv| kv.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    let non_2xx = number_after("Non-2xx or 3xx responses:").unwrap_or(0.0) as u64;
    Ok(Wrk {
        requests_per_sec,
        requests,
        errors: socket_errors + non_2xx,
    })
}

/// (a) 4 KiB hits, keep-alive, 64 connections.
pub fn small_hits(bench: &mut Bench) -> Result<Vec<Row>> {
    let len = bench.settings.small_len;
    let path = format!("/a/hit-{}k{EXT}", len / KIB);
    let body = bench.fixture(&path, len)?;
    let tally = warm(bench, &path, &body)?;
    let (mut rps, mut cpu, mut errors) = (Samples::default(), Samples::default(), [0u64; 2]);
    for run in 1..=bench.settings.runs {
        for side in Side::BOTH {
            let target = bench.target(side);
            target.server.ensure_alive()?;
            let before = target.server.cpu_seconds();
            let w = wrk(bench, target.addr, &path)?;
            let used = target.server.cpu_seconds() - before;
            rps.push(side, w.requests_per_sec);
            cpu.push(side, cpu_per_gib(used, w.requests * len));
            errors[side as usize] += w.errors;
            println!(
                "   run {run} {:<13} {:>9.0} req/s  {:>8} requests  cpu {used:.2} s  errors {}",
                side.label(),
                w.requests_per_sec,
                w.requests,
                w.errors
            );
        }
    }
    Ok(vec![
        tally.row("a"),
        Row::measured("a", "requests/s", &rps, 0, Floor::RatioAtLeast(1.0)),
        Row::check(
            "a",
            "wrk socket errors + non-2xx",
            errors[0].to_string(),
            errors[1].to_string(),
            "0",
            errors[0] == 0,
        ),
        Row::measured("a", "CPU s per GiB served", &cpu, 1, Floor::None),
    ])
}

/// (b) aggregate throughput of `big_clients` parallel GETs of one large cached file.
pub fn big_hits(bench: &mut Bench) -> Result<Vec<Row>> {
    let (len, clients) = (bench.settings.big_len, bench.settings.big_clients);
    let path = format!("/b/hit-{}m{EXT}", len / MIB);
    let mut tally = warm(bench, &path, &bench.fixture(&path, len)?)?;
    let (mut mibps, mut cpu) = (Samples::default(), Samples::default());
    let timeout = Duration::from_secs(120);
    for run in 1..=bench.settings.runs {
        for side in Side::BOTH {
            let target = bench.target(side);
            target.server.ensure_alive()?;
            let before = target.server.cpu_seconds();
            let responses = client::get_many(clients, target.addr, &path, timeout, None);
            let used = target.server.cpu_seconds() - before;
            let responses = responses
                .into_iter()
                .collect::<Result<Vec<_>>>()
                .with_context(|| side.label())?;
            for r in &responses {
                r.expect_ok(len).with_context(|| side.label())?;
                tally.count(side, r);
            }
            let first = responses
                .iter()
                .map(|r| r.started)
                .min()
                .expect("at least one client");
            let last = responses
                .iter()
                .map(|r| r.finished)
                .max()
                .expect("at least one client");
            let wall = (last - first).as_secs_f64();
            let total = len * clients as u64;
            mibps.push(side, total as f64 / MIB as f64 / wall);
            cpu.push(side, cpu_per_gib(used, total));
            println!(
                "   run {run} {:<13} {:>7.0} MiB/s aggregate  wall {wall:.3} s  cpu {used:.2} s",
                side.label(),
                total as f64 / MIB as f64 / wall
            );
        }
    }
    let metric = format!("aggregate MiB/s, {clients} x {} MiB", len / MIB);
    Ok(vec![
        tally.row("b"),
        Row::measured("b", &metric, &mibps, 0, Floor::RatioAtLeast(0.9)),
        Row::measured("b", "CPU s per GiB served", &cpu, 2, Floor::None),
    ])
}

/// (e) peak RSS (VmHWM) of a package-cache started fresh on the warm cache dir while
/// `rss_clients` clients stream one large cached file; nginx: the sum of its workers' VmHWM.
pub fn peak_rss(bench: &mut Bench) -> Result<Vec<Row>> {
    let (len, clients) = (bench.settings.rss_len, bench.settings.rss_clients);
    let path = format!("/e/hit-{}m{EXT}", len / MIB);
    let mut tally = warm(bench, &path, &bench.fixture(&path, len)?)?;
    bench.restart_ours()?;
    let (mut rss, mut cpu, mut mibps) =
        (Samples::default(), Samples::default(), Samples::default());
    let timeout = Duration::from_secs(600);
    for side in Side::BOTH {
        let target = bench.target(side);
        let before = target.server.cpu_seconds();
        let responses = client::get_many(clients, target.addr, &path, timeout, None);
        let used = target.server.cpu_seconds() - before;
        let peak_kib = match side {
            Side::Ours => target.server.peak_rss_kib(),
            Side::Nginx => target.server.workers_peak_rss_kib(),
        };
        target.server.ensure_alive()?;
        let responses = responses
            .into_iter()
            .collect::<Result<Vec<_>>>()
            .with_context(|| side.label())?;
        for r in &responses {
            r.expect_ok(len).with_context(|| side.label())?;
            tally.count(side, r);
        }
        let first = responses
            .iter()
            .map(|r| r.started)
            .min()
            .expect("at least one client");
        let last = responses
            .iter()
            .map(|r| r.finished)
            .max()
            .expect("at least one client");
        let total = len * clients as u64;
        let rate = total as f64 / MIB as f64 / (last - first).as_secs_f64();
        rss.push(side, peak_kib as f64 / KIB as f64);
        cpu.push(side, cpu_per_gib(used, total));
        mibps.push(side, rate);
        println!(
            "   {:<13} peak RSS {:.1} MiB  {rate:.0} MiB/s aggregate  cpu {used:.2} s",
            side.label(),
            peak_kib as f64 / KIB as f64
        );
    }
    Ok(vec![
        tally.row("e"),
        Row::measured(
            "e",
            "peak RSS MiB (nginx: sum of workers)",
            &rss,
            1,
            Floor::OursAtMost(64.0),
        ),
        Row::measured(
            "e",
            &format!("aggregate MiB/s, {clients} clients"),
            &mibps,
            0,
            Floor::None,
        ),
        Row::measured("e", "CPU s per GiB served", &cpu, 2, Floor::None),
    ])
}
