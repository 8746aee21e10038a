//! `--max-size` holds under load, against the real binary: 8 clients, 40
//! files of 1 MiB, `--max-size 20M`, two hot files making half of the
//! requests. Disk use is sampled every 100 ms; no sample may exceed the
//! limit by more than the bytes of the fills in flight (the files in
//! `.package-cache/tmp`), and no hot file may be fetched upstream twice
//! while colder files are cached (least recently used means that).
//!
//! The samples are printed (`cargo test --test disk_bound -- --nocapture`).

mod support;

use bytes::Bytes;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::app::Binary;
use support::client::{bytes_of, get, sha256};
use support::origin::Origin;

const FILES: usize = 40;
const SIZE: usize = 1 << 20;
const HOT: usize = 2;
const CLIENTS: usize = 8;
const LIMIT: u64 = 20 << 20;
/// Each client stops after this many requests or [`LOAD_FOR`], whichever first.
const REQUESTS: usize = 250;
const LOAD_FOR: Duration = Duration::from_secs(6);

/// One look at the cache directory.
#[derive(Clone, Copy, Debug)]
struct Sample {
    at_ms: u128,
    /// Bodies and metadata: what is committed.
    committed: u64,
    /// Files in `.package-cache/tmp`: fills in flight.
    in_flight: u64,
}

/// Apparent sizes of the regular files under `dir`, recursively; `skip`
/// leaves one subdirectory out.
fn bytes_under(dir: &Path, skip: Option<&Path>) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if Some(path.as_path()) == skip {
                continue;
            }
            // Gone since the listing (evicted, renamed): not on disk now.
            let Ok(md) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if md.is_dir() {
                stack.push(path);
            } else if md.is_file() {
                total += md.len();
            }
        }
    }
    total
}

fn sample(cache: &Path, started: Instant) -> Sample {
    let state = cache.join(".package-cache");
    let tmp = state.join("tmp");
    // In flight first: a fill that commits meanwhile is then counted twice
    // (as in flight and as committed), never missed.
    let in_flight = bytes_under(&tmp, None);
    let bodies = bytes_under(cache, Some(&state));
    let meta = bytes_under(&state.join("meta"), None);
    Sample {
        at_ms: started.elapsed().as_millis(),
        committed: bodies + meta,
        in_flight,
    }
}

fn path(i: usize) -> String {
    format!("/pool/f{i:02}.bin")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn disk_use_stays_within_max_size_under_load_and_hot_files_stay() {
    let bodies: Vec<Bytes> = (0..FILES).map(|i| bytes_of(SIZE, 900 + i as u64)).collect();
    let mut builder = Origin::builder();
    for (i, body) in bodies.iter().enumerate() {
        builder = builder.file(&path(i), body.clone());
    }
    let origin = builder.start().await;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let bin = Binary::start(&[
        "--source",
        &origin.url(),
        "--cache",
        cache.to_str().unwrap(),
        "--max-size",
        "20M",
    ])
    .await;

    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (cache, stop): (PathBuf, _) = (cache.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut samples = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                samples.push(sample(&cache, started));
                std::thread::sleep(Duration::from_millis(100));
            }
            samples.push(sample(&cache, started));
            samples
        })
    };

    let bodies = Arc::new(bodies);
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let (bodies, url) = (bodies.clone(), bin.url(""));
        clients.push(tokio::spawn(async move {
            // Every other request goes to a hot file, in turn; the others
            // to a cold one, pseudo-randomly (a fixed LCG per client).
            let mut seed = 0x9e37_79b9_u64.wrapping_mul(c as u64 + 1);
            let mut done = 0;
            while done < REQUESTS && started.elapsed() < LOAD_FOR {
                let file = if done % 2 == 0 {
                    (done / 2 + c) % HOT
                } else {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    HOT + (seed >> 33) as usize % (FILES - HOT)
                };
                let got = tokio::time::timeout(
                    Duration::from_secs(20),
                    get(&format!("{url}{}", path(file))),
                )
                .await
                .expect("a request never hangs");
                assert_eq!(got.status.as_u16(), 200, "{}", path(file));
                assert_eq!(sha256(&got.body), sha256(&bodies[file]), "{}", path(file));
                done += 1;
            }
            done
        }));
    }
    let mut requests = 0;
    for client in clients {
        requests += client.await.unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let samples = sampler.join().unwrap();

    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    println!(
        "t_ms committed_MiB in_flight_MiB disk_MiB (limit {} MiB)",
        mib(LIMIT)
    );
    for s in &samples {
        println!(
            "{:>5} {:>8.2} {:>8.2} {:>8.2}{}",
            s.at_ms,
            mib(s.committed),
            mib(s.in_flight),
            mib(s.committed + s.in_flight),
            if s.committed > LIMIT { "  OVER" } else { "" }
        );
    }
    let over: Vec<_> = samples.iter().filter(|s| s.committed > LIMIT).collect();
    let peak = samples
        .iter()
        .map(|s| s.committed + s.in_flight)
        .max()
        .unwrap_or(0);
    let peak_committed = samples.iter().map(|s| s.committed).max().unwrap_or(0);
    let hits: Vec<usize> = (0..FILES).map(|i| origin.hits(&path(i))).collect();
    let upstream: usize = hits.iter().sum();
    println!(
        "{} requests, {} upstream fetches; {} samples, {} over the limit plus fills in flight; \
         peak committed {:.2} MiB, peak disk {:.2} MiB (limit {:.2} MiB); hot files fetched {:?} times",
        requests,
        upstream,
        samples.len(),
        over.len(),
        mib(peak_committed),
        mib(peak),
        mib(LIMIT),
        &hits[..HOT]
    );
    assert!(samples.len() >= 20, "sampled the whole run");
    assert!(
        upstream > FILES + 20,
        "the load went past the limit many times over (evictions happened)"
    );
    assert!(
        over.is_empty(),
        "disk use over --max-size plus fills in flight: {over:?}"
    );
    // Half of all requests go to the hot files, so each was used within the
    // last few requests whenever a cold file came in: a second upstream fetch
    // of one means it was evicted while colder files were cached.
    let hot_fetches: Vec<_> = origin
        .requests()
        .into_iter()
        .filter(|r| (0..HOT).any(|i| r.path() == path(i)))
        .map(|r| {
            (
                r.path().to_string(),
                Instant::from(r.at).saturating_duration_since(started),
            )
        })
        .collect();
    assert_eq!(
        &hits[..HOT],
        &[1; HOT],
        "hot files are never evicted; fetched at {hot_fetches:?}"
    );
    bin.kill9().await;
}
