//! The store on real temporary directories, as sccache tests its disk
//! cache: the fill state machine (`fill`: commit, abort, short and long
//! bodies, hold-back with a digest, vacate, spill on a full disk), removal
//! racing commits (`removal`), names of earlier versions (`names`), damage
//! at rest and adoption (`integrity`), hits checked against a listed
//! digest (`confirm`), the
//! `--max-size` budget (`budget`) and tiers (`tiers`).

mod budget;
mod confirm;
mod fill;
mod integrity;
mod names;
mod removal;
mod tiers;

use super::*;
use crate::digest::Digest;
use bytes::Bytes;
use sha2::{Digest as _, Sha256};
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

fn key(path: &str) -> CacheKey {
    CacheKey::try_from_path(Namespace::Mirrors, path).expect("a valid test key")
}

fn head(content_length: Option<u64>, expected: Option<Digest>) -> FillHead {
    FillHead {
        headers: vec![("content-type".into(), "application/octet-stream".into())],
        content_length,
        source: "http://origin.test/f".into(),
        expected,
    }
}

fn body(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect::<Vec<u8>>()
        .into()
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

async fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = Store::open(dir.path().join("cache"))
        .await
        .expect("the store opens");
    (dir, store)
}

/// A store over a directory that existed before (as one of package-cache
/// 0.2 does), not adopted yet: a body without metadata is a plain file.
async fn open_unadopted() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::create_dir(dir.path().join("cache")).expect("the cache directory");
    let store = Store::open(dir.path().join("cache"))
        .await
        .expect("the store opens");
    assert!(!store.is_adopted());
    (dir, store)
}

async fn miss(store: &Store, key: &CacheKey) -> FillPermit {
    match store.lookup(key).await.expect("lookup") {
        Lookup::Miss(permit) => permit,
        Lookup::Hit(_) => panic!("{key}: a hit, expected a miss"),
        Lookup::Filling(_) => panic!("{key}: filling, expected a miss"),
        Lookup::Conflict => panic!("{key}: a conflict, expected a miss"),
    }
}

async fn hit(store: &Store, key: &CacheKey) -> Entry {
    match store.lookup(key).await.expect("lookup") {
        Lookup::Hit(entry) => entry,
        _ => panic!("{key}: expected a hit"),
    }
}

/// Everything a reader yields until its end, or the error that ended it
/// with the bytes before it.
async fn drain(mut reader: BodyReader) -> (Vec<u8>, Option<std::io::Error>) {
    let mut got = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), reader.next_chunk())
            .await
            .expect("a reader never hangs")
        {
            Ok(Some(chunk)) => got.extend_from_slice(&chunk),
            Ok(None) => return (got, None),
            Err(err) => return (got, Some(err)),
        }
    }
}

async fn hit_body(store: &Store, key: &CacheKey) -> Vec<u8> {
    let entry = hit(store, key).await;
    match entry.small_body() {
        Some(small) => small.to_vec(),
        None => {
            let (got, err) = drain(entry.reader(0, entry.len)).await;
            assert!(err.is_none(), "{err:?}");
            got
        }
    }
}

/// Fills `key` with `bytes` in two writes and commits.
async fn fill(store: &Store, key: &CacheKey, bytes: &Bytes) -> Committed {
    let permit = miss(store, key).await;
    let mut fill = permit
        .start(head(Some(bytes.len() as u64), None))
        .await
        .map_err(|(err, _)| err)
        .expect("the fill starts");
    let half = bytes.len() / 2;
    fill.write(vec![bytes.slice(..half)]).await.expect("write");
    fill.write(vec![bytes.slice(half..)]).await.expect("write");
    fill.commit().await.expect("a complete body commits")
}

/// Temporary files left in the store's `tmp/`, once pending removals ran.
async fn tmp_left(store: &Store) -> usize {
    let dir = store.layout().tmp_dir();
    for _ in 0..100 {
        let n = std::fs::read_dir(&dir).expect("tmp/ exists").count();
        if n == 0 {
            return 0;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    std::fs::read_dir(&dir).expect("tmp/ exists").count()
}

/// The index, the body on disk and its metadata agree about `key`.
fn consistent(store: &Store, key: &CacheKey) {
    let path = store.layout().entry(key);
    let indexed = store.indexed(key);
    match (std::fs::metadata(&path), indexed) {
        (Ok(md), Some(entry)) => {
            assert_eq!(md.ino(), entry.inode, "the index names the body on disk");
            assert_eq!(md.len(), entry.size);
            let meta = EntryMeta::read(&store.layout().meta_file(key))
                .expect("a committed body has metadata");
            assert_eq!(meta.inode, md.ino(), "metadata bound to the body");
        }
        (Err(_), None) => {}
        (Ok(_), None) => panic!("{key}: a body the index does not know"),
        (Err(_), Some(_)) => panic!("{key}: the index names a body that is gone"),
    }
}
