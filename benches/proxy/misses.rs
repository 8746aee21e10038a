//! Cold-miss scenarios against the throttled `/slow/` location: (c) time to first byte against
//! the upstream's own, (d) 32 concurrent clients on one cold file (upstream requests, first-byte
//! spread, bodies). Every run of every side gets its own fresh file, so each one is cold.

use crate::client::{self, Response};
use crate::report::{self, Floor, Row, Samples, Side};
use crate::{Bench, EXT, GIB, MIB};
use anyhow::{Context, Result};
use std::thread::sleep;
use std::time::Duration;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn cpu_per_gib(cpu_seconds: f64, bytes: u64) -> f64 {
    cpu_seconds / (bytes as f64 / GIB as f64)
}

/// Time the throttled upstream needs for `len` bytes, plus slack: the request deadline.
fn timeout_for(bench: &Bench, len: u64) -> Duration {
    Duration::from_secs(len / bench.settings.throttle + 60)
}

/// (c) TTFB of a cold miss through each proxy minus the upstream's own TTFB in the same run.
pub fn cold_ttfb(bench: &mut Bench) -> Result<Vec<Row>> {
    let len = bench.settings.cold_len;
    let timeout = timeout_for(bench, len);
    let (mut ttfb, mut over, mut upstream) = (Samples::default(), Samples::default(), Vec::new());
    // One cold fetch is a few clock ticks of CPU: sum over all runs, then divide.
    let mut cpu_used = [0.0f64; 2];
    let mut statuses: [Vec<String>; 2] = Default::default();
    for run in 1..=bench.settings.runs {
        let direct_path = format!("/slow/c-r{run}-direct{EXT}");
        let direct_body = bench.fixture(&direct_path, len)?;
        let bodies = Side::BOTH.map(|side| {
            let path = format!("/slow/c-r{run}-{}{EXT}", side_tag(side));
            bench.fixture(&path, len).map(|body| (path, body))
        });
        let direct = client::get(
            bench.upstream_addr,
            &direct_path,
            timeout,
            Some(&direct_body),
        )?;
        direct
            .expect_ok(len)
            .context("direct GET from the upstream")?;
        let upstream_ms = ms(direct.ttfb());
        upstream.push(upstream_ms);
        print!("   run {run} upstream {upstream_ms:.2} ms");
        for (side, fixture) in Side::BOTH.into_iter().zip(bodies) {
            let (path, body) = fixture?;
            let target = bench.target(side);
            target.server.ensure_alive()?;
            let before = target.server.cpu_seconds();
            let r = client::get(target.addr, &path, timeout, Some(&body))
                .with_context(|| side.label())?;
            let used = target.server.cpu_seconds() - before;
            r.expect_ok(len)
                .with_context(|| format!("{} GET {path}", side.label()))?;
            let t = ms(r.ttfb());
            ttfb.push(side, t);
            over.push(side, t - upstream_ms);
            cpu_used[side as usize] += used;
            statuses[side as usize].push(r.x_cache.clone());
            print!(
                "  {} {t:.2} ms (x-cache {:?}, total {:.0} ms)",
                side.label(),
                r.x_cache,
                ms(r.finished - r.started)
            );
        }
        println!();
    }
    let miss = |v: &[String]| v.iter().all(|s| s.eq_ignore_ascii_case("miss"));
    let show = |v: &[String]| {
        if miss(v) {
            "MISS".to_string()
        } else {
            v.join(",")
        }
    };
    let metric = format!(
        "TTFB - upstream TTFB, ms (upstream median {:.2} ms)",
        report::median(&upstream)
    );
    let mut cpu = Samples::default();
    for side in Side::BOTH {
        let bytes = len * bench.settings.runs as u64;
        cpu.push(side, cpu_per_gib(cpu_used[side as usize], bytes));
    }
    Ok(vec![
        Row::check(
            "c",
            "x-cache of the cold request",
            show(&statuses[0]),
            show(&statuses[1]),
            "MISS",
            miss(&statuses[0]),
        ),
        Row::measured("c", "TTFB ms", &ttfb, 2, Floor::None),
        Row::measured("c", &metric, &over, 2, Floor::OursAtMost(5.0)),
        Row::measured(
            "c",
            &format!("CPU s per GiB served (all runs, {} MiB each)", len / MIB),
            &cpu,
            2,
            Floor::None,
        ),
    ])
}

/// (d) `herd_clients` clients released together on one cold file: the upstream must see one
/// request, every client must get its first byte about when the first client does, and every
/// body must be byte-identical to the upstream file.
pub fn herd(bench: &mut Bench) -> Result<Vec<Row>> {
    let (len, clients) = (bench.settings.herd_len, bench.settings.herd_clients);
    let timeout = timeout_for(bench, len);
    let (mut spread, mut cpu, mut wall) =
        (Samples::default(), Samples::default(), Samples::default());
    let mut fetches: [Vec<usize>; 2] = Default::default();
    let mut good_bodies = [0usize; 2];
    for run in 1..=bench.settings.runs {
        for side in Side::BOTH {
            let path = format!("/slow/d-r{run}-{}{EXT}", side_tag(side));
            let body = bench.fixture(&path, len)?;
            let target = bench.target(side);
            target.server.ensure_alive()?;
            let before = target.server.cpu_seconds();
            let results = client::get_many(clients, target.addr, &path, timeout, Some(&body));
            let used = target.server.cpu_seconds() - before;
            // The upstream logs a request when it has sent the last byte; give the write a moment.
            sleep(Duration::from_millis(200));
            let upstream_requests = bench.upstream_requests(&path);

            let mut ok: Vec<&Response> = Vec::new();
            for (i, result) in results.iter().enumerate() {
                match result
                    .as_ref()
                    .map_err(|e| format!("{e:#}"))
                    .and_then(|r| r.expect_ok(len).map(|()| r).map_err(|e| format!("{e:#}")))
                {
                    Ok(r) => ok.push(r),
                    Err(e) => println!("   run {run} {} client {i}: {e}", side.label()),
                }
            }
            let firsts: Vec<_> = results.iter().flatten().map(|r| r.first_byte).collect();
            let (Some(first), Some(last)) = (firsts.iter().min(), firsts.iter().max()) else {
                anyhow::bail!(
                    "{}: no client got a response: {:#}",
                    side.label(),
                    results
                        .into_iter()
                        .find_map(Result::err)
                        .expect("all failed")
                );
            };
            let started = results
                .iter()
                .flatten()
                .map(|r| r.started)
                .min()
                .expect("a response");
            let finished = results
                .iter()
                .flatten()
                .map(|r| r.finished)
                .max()
                .expect("a response");
            let spread_ms = ms(*last - *first);
            spread.push(side, spread_ms);
            wall.push(side, ms(finished - started));
            cpu.push(side, cpu_per_gib(used, len * clients as u64));
            fetches[side as usize].push(upstream_requests);
            good_bodies[side as usize] += ok.len();
            println!(
                "   run {run} {:<13} upstream requests {upstream_requests}  first-byte spread {spread_ms:>8.2} ms  (first {:.1} ms)  bodies ok {}/{clients}  last byte {:.0} ms  cpu {used:.2} s",
                side.label(),
                ms(*first - started),
                ok.len(),
                ms(finished - started),
            );
        }
    }
    let total = clients * bench.settings.runs;
    let show_fetches = |v: &[usize]| v.iter().map(usize::to_string).collect::<Vec<_>>().join(",");
    Ok(vec![
        Row::check(
            "d",
            "upstream requests per run",
            show_fetches(&fetches[0]),
            show_fetches(&fetches[1]),
            "1 every run",
            fetches[0].iter().all(|&n| n == 1),
        ),
        Row::check(
            "d",
            "bodies byte-identical",
            format!("{}/{total}", good_bodies[0]),
            format!("{}/{total}", good_bodies[1]),
            "all",
            good_bodies[0] == total,
        ),
        Row::measured(
            "d",
            "first-byte spread ms (max - min)",
            &spread,
            1,
            Floor::OursAtMost(50.0),
        ),
        Row::measured(
            "d",
            &format!(
                "last byte ms ({} MiB at {} MiB/s)",
                len / MIB,
                bench.settings.throttle / MIB
            ),
            &wall,
            0,
            Floor::None,
        ),
        Row::measured("d", "CPU s per GiB served", &cpu, 2, Floor::None),
    ])
}

fn side_tag(side: Side) -> &'static str {
    match side {
        Side::Ours => "ours",
        Side::Nginx => "nginx",
    }
}
