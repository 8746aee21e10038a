//! The synthetic cache: `entries` committed entries written straight into
//! the store's layout (`Layout::entry`, `Layout::meta_file`, metadata as a
//! commit writes it), generated once into `target/bench-startup/<entries>/`
//! and reused (a `complete` file beside the cache marks a finished one).
//!
//! Disk: every 100th entry (a probe, the ones the bench requests) has a
//! 64-byte body; the others are empty, so they take an inode and no data
//! block. Each metadata file takes one 4 KiB block: about 8.2 GB for 2
//! million entries.

use anyhow::{Context, Result};
use package_cache::store::{BlockSums, CacheKey, EntryMeta, Layout, Namespace, BLOCK};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Every this many entries, one is a probe with a body.
pub const PROBE_EVERY: usize = 100;
const PROBE_LEN: usize = 64;

/// The request path of entry `i`: 65,536 directories of about 30 entries
/// at 2 million, named like source archives.
pub fn path(i: usize) -> String {
    format!(
        "/packages/{:02x}/{:02x}/pkg{i}-1.0.tar.gz",
        i % 256,
        (i / 256) % 256
    )
}

/// The body of probe `i`.
pub fn probe_body(i: usize) -> Vec<u8> {
    (0..PROBE_LEN)
        .map(|n| (n as u8).wrapping_mul(31) ^ (i as u8))
        .collect()
}

/// The cache root of `entries` entries under `work`, generated if needed.
pub fn ensure(work: &Path, entries: usize) -> Result<PathBuf> {
    let dir = work.join(entries.to_string());
    let root = dir.join("cache");
    let complete = dir.join("complete");
    if complete.exists() {
        return Ok(root);
    }
    if root.exists() {
        fs::remove_dir_all(&root).context("removing a partial synthetic cache")?;
    }
    let started = Instant::now();
    eprintln!("generating {entries} entries into {}", root.display());
    let layout = Layout::new(&root);
    for a in 0..256 {
        fs::create_dir_all(layout.meta_dir().join(format!("{a:02x}")))?;
        for b in 0..256.min(entries.div_ceil(256)) {
            fs::create_dir_all(root.join(format!("packages/{a:02x}/{b:02x}")))?;
        }
    }
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    std::thread::scope(|scope| -> Result<()> {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let layout = &layout;
                scope.spawn(move || -> Result<()> {
                    for i in (t..entries).step_by(threads) {
                        write_entry(layout, i)?;
                        if t == 0 && i % 200_000 == 0 && i > 0 {
                            eprintln!("  {i} entries, {:.0?}", started.elapsed());
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        for worker in workers {
            worker.join().expect("a generator thread panicked")?;
        }
        Ok(())
    })?;
    // Written by this version: nothing to adopt.
    let marker = layout.adopted_marker();
    fs::create_dir_all(marker.parent().context("the marker's directory")?)?;
    fs::write(marker, b"{}\n")?;
    fs::write(&complete, b"")?;
    eprintln!("generated in {:.1?}", started.elapsed());
    Ok(root)
}

fn write_entry(layout: &Layout, i: usize) -> Result<()> {
    let key = CacheKey::try_from_path(Namespace::Mirrors, &path(i))?;
    let body = if i.is_multiple_of(PROBE_EVERY) {
        probe_body(i)
    } else {
        Vec::new()
    };
    let body_path = layout.entry(&key);
    let mut file = fs::File::create(&body_path)?;
    file.write_all(&body)?;
    let inode = file.metadata()?.ino();
    let meta = EntryMeta {
        key: key.canonical(),
        size: body.len() as u64,
        sha256: hex::encode(Sha256::digest(&body)),
        headers: vec![(
            "content-type".to_string(),
            "application/octet-stream".to_string(),
        )],
        fetched_at: 1_700_000_000 + i as u64,
        source: format!("http://upstream.invalid{}", path(i)),
        inode,
        // As a commit records them: one xxh3 per 256 KiB block (bodies here
        // are one block at most), so the entries need no adoption pass.
        blocks: Some(BlockSums {
            size: BLOCK,
            sums: match body.is_empty() {
                true => Vec::new(),
                false => vec![xxhash_rust::xxh3::xxh3_64(&body)],
            },
        }),
        adopted: false,
        verified: Vec::new(),
    };
    fs::write(layout.meta_file(&key), serde_json::to_vec(&meta)?)?;
    Ok(())
}
