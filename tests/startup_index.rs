//! A node serves at once, whatever the size of its cache: the index that
//! `--max-size` works from is built in the background, against the real
//! binary, on a cache of 50,000 entries left by an earlier run (0.2-style
//! plain files, empty so that they take no data blocks). Hits are served
//! before the index is built, and once it is, eviction brings the cache
//! under the limit, least recently used first, and keeps it there.

mod support;

use std::fs::{self, File};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};
use support::app::Binary;
use support::client::{bytes_of, get};
use support::origin::Origin;

const OLD: usize = 50_000;
const RECENT: usize = 10;
/// What `store::ENTRY_OVERHEAD` charges each entry besides its body.
const OVERHEAD: u64 = 4096;
const MAX_SIZE: u64 = 100 << 20;

/// Entries of an earlier run: `old/<i % 100>/<i>.bin`, empty and a day old,
/// and `recent/<i>.tar.gz`, 64 KiB each, written now.
fn fill_cache(cache: &Path) {
    let day_ago = SystemTime::now() - Duration::from_secs(86_400);
    for d in 0..100 {
        fs::create_dir_all(cache.join(format!("old/{d}"))).unwrap();
    }
    for i in 0..OLD {
        let file = File::create(cache.join(format!("old/{}/{i}.bin", i % 100))).unwrap();
        file.set_modified(day_ago).unwrap();
    }
    fs::create_dir_all(cache.join("recent")).unwrap();
    for i in 0..RECENT {
        fs::write(
            cache.join(format!("recent/{i}.tar.gz")),
            bytes_of(64 << 10, i as u64),
        )
        .unwrap();
    }
}

fn files_under(dir: &Path) -> usize {
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.file_type() {
                    Ok(t) if t.is_dir() => files_under(&e.path()),
                    _ => 1,
                })
                .sum()
        })
        .unwrap_or(0)
}

fn indexed_line(bin: &Binary) -> Option<serde_json::Value> {
    let log = bin.log.lock().unwrap();
    log.iter()
        .find(|line| line.contains("cache indexed"))
        .map(|line| serde_json::from_str(line).expect("json log line"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hits_are_served_before_the_index_is_built_and_max_size_holds_after() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    fill_cache(&cache);
    let new_body = bytes_of(256 << 10, 77);
    let origin = Origin::builder()
        .file("/new.tar.gz", new_body.clone())
        .start()
        .await;
    let max = MAX_SIZE.to_string();
    let started = Instant::now();
    let bin = Binary::start(&[
        "--source",
        &origin.url(),
        "--cache",
        cache.to_str().unwrap(),
        "--max-size",
        &max,
    ])
    .await;

    let hit = get(&bin.url("/recent/0.tar.gz")).await;
    let first_hit = started.elapsed();
    assert_eq!(
        (hit.status.as_u16(), hit.cache(), hit.body.len()),
        (200, "HIT", 64 << 10)
    );
    assert_eq!(hit.body, bytes_of(64 << 10, 0).to_vec());
    assert!(
        indexed_line(&bin).is_none(),
        "the first hit ({first_hit:?} after start) came after the index of {OLD} entries was built"
    );

    let indexed = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            if let Some(line) = indexed_line(&bin) {
                return line;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the index is built within 2 minutes");
    assert_eq!(
        indexed["fields"]["entries"].as_u64(),
        Some((OLD + RECENT) as u64),
        "every entry listed once: {indexed}"
    );

    eprintln!("first hit {first_hit:?}; {indexed}");
    // Charged 4 KiB each, the old entries alone are about twice the limit:
    // down to the low-water mark (90 %), the oldest first.
    let fit = (MAX_SIZE / 100 * 90 / OVERHEAD) as usize;
    let deadline = Instant::now() + Duration::from_secs(60);
    while files_under(&cache.join("old")) + RECENT > fit {
        assert!(
            Instant::now() < deadline,
            "not evicted within 60 s: {} old entries left",
            files_under(&cache.join("old"))
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for i in 0..RECENT {
        assert!(
            cache.join(format!("recent/{i}.tar.gz")).exists(),
            "recent/{i} is newer than every old entry"
        );
    }
    // A new entry is stored beside them, and the limit still holds.
    assert_eq!(get(&bin.url("/new.tar.gz")).await.cache(), "MISS");
    let again = get(&bin.url("/new.tar.gz")).await;
    assert_eq!(again.cache(), "HIT");
    assert_eq!(again.body, new_body.to_vec());
    let entries = files_under(&cache.join("old")) + RECENT + 1;
    let bytes = (RECENT as u64) * (64 << 10) + (256 << 10);
    assert!(
        entries as u64 * OVERHEAD + bytes <= MAX_SIZE,
        "{entries} entries, {bytes} bytes: over --max-size"
    );
    assert_eq!(origin.hits("/new.tar.gz"), 1);
}
