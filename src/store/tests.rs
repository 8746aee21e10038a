//! The fill state machine and removal, on a real temporary directory (as
//! sccache tests its disk cache): commit, abort, a short body, hold-back
//! with a digest, vacate, spill on a full disk, and commits racing
//! evictions of the same key.

use super::*;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

fn key(path: &str) -> CacheKey {
    CacheKey::try_from_path(Namespace::Mirrors, path).expect("a valid test key")
}

fn head(content_length: Option<u64>, expected_sha256: Option<String>) -> FillHead {
    FillHead {
        headers: vec![("content-type".into(), "application/octet-stream".into())],
        content_length,
        source: "http://origin.test/f".into(),
        expected_sha256,
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
    let indexed = store.indexed().into_iter().find(|e| e.key == *key);
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

#[tokio::test]
async fn a_complete_fill_is_followed_by_its_readers_and_then_hit() {
    let (_dir, store) = open().await;
    let k = key("/a/f.tgz");
    let bytes = body(200_000, 1);
    let permit = miss(&store, &k).await;
    let Lookup::Filling(mut joined) = store.lookup(&k).await.unwrap() else {
        panic!("a second lookup joins the fill");
    };
    let mut fill = permit
        .start(head(Some(bytes.len() as u64), None))
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    assert!(matches!(joined.started().await, FillStart::Started(_)));
    let reader = joined
        .reader(0, u64::MAX)
        .expect("a started fill has a file");
    let reading = tokio::spawn(drain(reader));
    fill.write(vec![bytes.slice(..1000)]).await.unwrap();
    fill.write(vec![bytes.slice(1000..)]).await.unwrap();
    assert_eq!(fill.commit().await.unwrap(), Committed::Stored);
    let (got, err) = reading.await.unwrap();
    assert!(err.is_none(), "{err:?}");
    assert_eq!(got, bytes);
    assert_eq!(
        joined.state(),
        FillState::Complete {
            len: bytes.len() as u64,
            committed: true
        }
    );
    let entry = hit(&store, &k).await;
    let meta = entry.meta.clone().expect("metadata bound to the body");
    assert_eq!(meta.sha256, sha(&bytes));
    assert_eq!(hit_body(&store, &k).await, bytes);
    assert_eq!(store.usage(), (bytes.len() as u64, 1));
    assert_eq!(store.fills_in_progress(), 0);
    assert_eq!(tmp_left(&store).await, 0);
    consistent(&store, &k);
}

#[tokio::test]
async fn a_dropped_fill_is_aborted_its_readers_fail_and_nothing_stays() {
    let (_dir, store) = open().await;
    let k = key("/aborted.bin");
    let bytes = body(100_000, 2);
    let permit = miss(&store, &k).await;
    let mut watch = permit.watch();
    let mut fill = permit
        .start(head(Some(bytes.len() as u64), None))
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    fill.write(vec![bytes.slice(..40_000)]).await.unwrap();
    assert!(watch.first_bytes().await);
    let reader = watch.reader(0, u64::MAX).unwrap();
    drop(fill);
    assert_eq!(watch.state(), FillState::Aborted);
    let (got, err) = drain(reader).await;
    assert_eq!(
        got,
        bytes[..40_000],
        "the bytes written still reach the reader"
    );
    assert!(err.is_some(), "then the body ends uncleanly, never cleanly");
    assert_eq!(tmp_left(&store).await, 0);
    assert!(!store.layout().entry(&k).exists());
    drop(miss(&store, &k).await);
    assert_eq!(store.usage(), (0, 0));
}

#[tokio::test]
async fn a_short_or_long_body_never_commits() {
    let (_dir, store) = open().await;
    let k = key("/short.bin");
    let bytes = body(10_000, 3);
    let permit = miss(&store, &k).await;
    let watch = permit.watch();
    let mut fill = permit
        .start(head(Some(20_000), None))
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    fill.write(vec![bytes.clone()]).await.unwrap();
    assert!(matches!(
        fill.commit().await,
        Err(Error::Short { got: 10_000, .. })
    ));
    assert_eq!(watch.state(), FillState::Aborted);
    let permit = miss(&store, &k).await;
    let mut fill = permit
        .start(head(Some(5_000), None))
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    assert!(matches!(
        fill.write(vec![bytes.clone()]).await,
        Err(Error::TooLong { .. })
    ));
    drop(fill);
    assert_eq!(tmp_left(&store).await, 0);
    assert!(!store.layout().entry(&k).exists());
}

#[tokio::test]
async fn hold_back_keeps_the_last_byte_until_the_digest_matches() {
    let (_dir, store) = open().await;
    let bytes = body(70_000, 4);
    for (path, listed, stored) in [
        ("/good.whl", sha(&bytes), true),
        ("/bad.whl", sha(b"another body"), false),
    ] {
        let k = key(path);
        let permit = miss(&store, &k).await;
        let mut watch = permit.watch();
        let mut fill = permit
            .start(head(Some(bytes.len() as u64), Some(listed)))
            .await
            .map_err(|(e, _)| e)
            .unwrap();
        fill.write(vec![bytes.clone()]).await.unwrap();
        assert!(watch.first_bytes().await);
        assert_eq!(
            watch.state(),
            FillState::Streaming {
                written: bytes.len() as u64 - 1
            },
            "{path}: one byte held back until the digest is checked"
        );
        let reader = watch.reader(0, u64::MAX).unwrap();
        let reading = tokio::spawn(drain(reader));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !reading.is_finished(),
            "{path}: the reader waits for the last byte"
        );
        let committed = fill.commit().await;
        let (got, err) = reading.await.unwrap();
        if stored {
            assert_eq!(committed.unwrap(), Committed::Stored);
            assert!(err.is_none());
            assert_eq!(got, bytes);
            assert_eq!(hit_body(&store, &k).await, bytes);
        } else {
            assert!(matches!(committed, Err(Error::Digest { .. })), "{path}");
            assert_eq!(
                got,
                bytes[..bytes.len() - 1],
                "{path}: never the whole body"
            );
            assert!(err.is_some(), "{path}: an unclean end");
            assert!(!store.layout().entry(&k).exists());
        }
    }
    assert_eq!(tmp_left(&store).await, 0);
}

#[tokio::test]
async fn a_vacated_permit_sends_its_waiters_to_look_again() {
    let (_dir, store) = open().await;
    let k = key("/vacated");
    let permit = miss(&store, &k).await;
    let Lookup::Filling(mut joined) = store.lookup(&k).await.unwrap() else {
        panic!("joins the fill");
    };
    drop(permit);
    assert!(matches!(joined.started().await, FillStart::Vacated));
    assert_eq!(store.fills_in_progress(), 0);
    // The next one competes for the key and wins it.
    let permit = miss(&store, &k).await;
    let Lookup::Filling(mut joined) = store.lookup(&k).await.unwrap() else {
        panic!("joins the fill");
    };
    permit.uncacheable();
    assert!(matches!(joined.started().await, FillStart::Uncacheable));
    drop(miss(&store, &k).await);
}

/// A tmpfs of `size` mounted for one test (the disk that fills up); needs
/// root, as tests/diskfull.rs does.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount runs");
        assert!(status.success(), "mount -t tmpfs (needs root)");
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.0.path())
            .status();
    }
}

#[tokio::test]
async fn a_full_disk_spills_the_rest_to_the_readers_and_stores_nothing() {
    let disk = Tmpfs::mount("256k");
    let store = Store::open(disk.0.path().join("cache")).await.unwrap();
    let k = key("/big.iso");
    let bytes = body(3 << 20, 5);
    let permit = miss(&store, &k).await;
    let mut watch = permit.watch();
    let mut fill = permit
        .start(head(Some(bytes.len() as u64), None))
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    assert!(matches!(watch.started().await, FillStart::Started(_)));
    let reader = watch.reader(0, u64::MAX).unwrap();
    let reading = tokio::spawn(drain(reader));
    for chunk in bytes.chunks(64 * 1024) {
        fill.write(vec![Bytes::copy_from_slice(chunk)])
            .await
            .expect("a refused write spills, it does not fail");
    }
    assert!(matches!(watch.state(), FillState::Spilling { .. }));
    assert_eq!(fill.commit().await.unwrap(), Committed::NotStored);
    let (got, err) = reading.await.unwrap();
    assert!(err.is_none(), "{err:?}");
    assert_eq!(sha(&got), sha(&bytes), "every byte, from disk then memory");
    assert_eq!(tmp_left(&store).await, 0);
    assert!(!store.layout().entry(&k).exists());
    assert_eq!(store.usage(), (0, 0));
    drop(store);
}

#[tokio::test]
async fn a_spilled_fill_without_readers_gives_up() {
    let disk = Tmpfs::mount("256k");
    let store = Store::open(disk.0.path().join("cache")).await.unwrap();
    let k = key("/nobody.iso");
    let bytes = body(2 << 20, 6);
    let mut fill = miss(&store, &k)
        .await
        .start(head(Some(bytes.len() as u64), None))
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    let mut failed = None;
    for chunk in bytes.chunks(64 * 1024) {
        if let Err(err) = fill.write(vec![Bytes::copy_from_slice(chunk)]).await {
            failed = Some(err);
            break;
        }
    }
    assert!(
        matches!(failed, Some(Error::NoReaders { .. })),
        "{failed:?}"
    );
    drop(fill);
    assert_eq!(tmp_left(&store).await, 0);
    drop(store);
}

#[tokio::test]
async fn an_eviction_removes_only_the_body_it_chose() {
    let (_dir, store) = open().await;
    store.track_recency(true);
    let k = key("/e/entry.tgz");
    let first = body(100_000, 7);
    assert_eq!(fill(&store, &k, &first).await, Committed::Stored);
    let chosen = store.indexed().pop().expect("indexed");
    // Meanwhile the body is refused and fetched again: a new inode.
    let old = hit(&store, &k).await;
    store.discard(&k, &old).await.unwrap();
    let second = body(90_000, 8);
    assert_eq!(fill(&store, &k, &second).await, Committed::Stored);
    assert_eq!(
        store.evict(&chosen).await.unwrap(),
        0,
        "not the body chosen"
    );
    assert_eq!(hit_body(&store, &k).await, second);
    consistent(&store, &k);

    // Used after it was chosen: it stays.
    let chosen = store.indexed().pop().unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    hit(&store, &k).await;
    assert_eq!(store.evict(&chosen).await.unwrap(), 0, "used since");
    consistent(&store, &k);

    // Being filled: it stays.
    let chosen = store.indexed().pop().unwrap();
    let other = key("/e/other");
    let permit = miss(&store, &other).await;
    let other_chosen = Indexed {
        key: other.clone(),
        ..chosen.clone()
    };
    assert_eq!(store.evict(&other_chosen).await.unwrap(), 0);
    drop(permit);

    // Chosen and untouched: removed, metadata too.
    assert_eq!(store.evict(&chosen).await.unwrap(), second.len() as u64);
    assert!(!store.layout().entry(&k).exists());
    assert!(!store.layout().meta_file(&k).exists());
    assert_eq!(store.usage(), (0, 0));
    consistent(&store, &k);
    drop(miss(&store, &k).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn commits_racing_evictions_of_the_same_key_leave_it_consistent() {
    let (_dir, store) = open().await;
    let k = key("/race/hot.bin");
    assert_eq!(fill(&store, &k, &body(20_000, 0)).await, Committed::Stored);
    for round in 1..=150u8 {
        let chosen = store.indexed().into_iter().find(|e| e.key == k);
        let refill = {
            let (store, k) = (store.clone(), k.clone());
            tokio::spawn(async move {
                if let Lookup::Hit(old) = store.lookup(&k).await.unwrap() {
                    store.discard(&k, &old).await.unwrap();
                }
                let Lookup::Miss(permit) = store.lookup(&k).await.unwrap() else {
                    return None;
                };
                let bytes = body(20_000 + usize::from(round), round);
                let mut fill = permit
                    .start(head(Some(bytes.len() as u64), None))
                    .await
                    .map_err(|(e, _)| e)
                    .unwrap();
                fill.write(vec![bytes.clone()]).await.unwrap();
                (fill.commit().await.unwrap() == Committed::Stored).then_some(bytes)
            })
        };
        let evict = {
            let store = store.clone();
            // Spread the evictions over the refill, its commit included.
            let delay = Duration::from_micros(u64::from(round % 20) * 150);
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                match chosen {
                    Some(chosen) => store.evict(&chosen).await.unwrap(),
                    None => 0,
                }
            })
        };
        let stored = refill.await.unwrap();
        evict.await.unwrap();
        consistent(&store, &k);
        if let Some(bytes) = stored {
            // The victim was the body before: the new one always stays.
            assert_eq!(hit_body(&store, &k).await, bytes, "round {round}");
        }
    }
    assert_eq!(tmp_left(&store).await, 0);
}

/// Writes a body and, as an earlier version did, its metadata under
/// `name` (bound to the body's inode).
fn plant(store: &Store, key: &CacheKey, bytes: &[u8], name: &str) {
    let path = store.layout().entry(key);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, bytes).unwrap();
    let meta = EntryMeta {
        key: name.to_string(),
        size: bytes.len() as u64,
        sha256: sha(bytes),
        headers: Vec::new(),
        fetched_at: 1,
        source: "http://origin.test/old".into(),
        inode: std::fs::metadata(&path).unwrap().ino(),
    };
    let meta_path = store.layout().meta_file_named(name);
    std::fs::create_dir_all(meta_path.parent().unwrap()).unwrap();
    std::fs::write(meta_path, serde_json::to_vec(&meta).unwrap()).unwrap();
}

#[tokio::test]
async fn metadata_written_under_the_old_lossy_names_is_still_found() {
    let (_dir, store) = open().await;
    store.track_recency(true);
    let odd =
        CacheKey::try_from_segments(Namespace::Mirrors, vec![b"odd\xff%.tgz".to_vec()]).unwrap();
    let legacy = odd.legacy_canonical().expect("the old name differs");
    assert_ne!(legacy, odd.canonical());
    plant(&store, &odd, b"old body", &legacy);
    let meta = hit(&store, &odd)
        .await
        .meta
        .expect("found under the old name");
    assert_eq!(meta.sha256, sha(b"old body"));

    // The mirrors' `/x` and a host named `mirrors` shared one old name: the
    // metadata binds only to the body it was written for.
    let mirrors = key("/x");
    let host = CacheKey::try_from_path(Namespace::Host("mirrors".into()), "/x").unwrap();
    assert_eq!(
        host.legacy_canonical().as_deref(),
        Some(mirrors.canonical().as_str())
    );
    plant(&store, &mirrors, b"mirror's", &mirrors.canonical());
    let path = store.layout().entry(&host);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, b"host's x").unwrap();
    assert!(hit(&store, &mirrors).await.meta.is_some());
    assert!(
        hit(&store, &host).await.meta.is_none(),
        "not the mirrors' metadata"
    );

    // Removing the host's body leaves the shared old name to the mirrors' entry.
    let old = Entry {
        meta: Some(Arc::new(EntryMeta {
            inode: std::fs::metadata(&path).unwrap().ino(),
            ..(*meta).clone()
        })),
        ..hit(&store, &host).await
    };
    store.discard(&host, &old).await.unwrap();
    assert!(!path.exists());
    assert!(store.layout().meta_file(&mirrors).exists());
    // A new commit writes the new name; the old file, now unbound, is gc's.
    let odd_entry = hit(&store, &odd).await;
    store.discard(&odd, &odd_entry).await.unwrap();
    assert!(!store.layout().entry(&odd).exists(), "discarded");
    assert!(
        !store.layout().meta_file_named(&legacy).exists(),
        "bound to the body removed"
    );
    assert_eq!(fill(&store, &odd, &body(1000, 9)).await, Committed::Stored);
    assert!(store.layout().meta_file(&odd).exists());
    assert!(hit(&store, &odd).await.meta.is_some());
}

#[tokio::test]
async fn digests_listed_by_documents_of_earlier_versions_keep_their_files() {
    let (_dir, store) = open().await;
    let listed =
        CacheKey::try_from_path(Namespace::Mount("pypi".into()), "/files/a%25b.whl").unwrap();
    let legacy = listed.legacy_canonical().expect("a `%` in the name");
    // An earlier version's file: length, JSON head without `names`, body.
    let head = serde_json::json!({
        "key": "pypi\n/simple/a/\nhtml", "headers": [], "validated_at": 1,
        "upstream_etag": null, "upstream_last_modified": null, "source": "http://origin.test/simple/a/",
        "hashes": [[legacy, "00ff"], ["mount:pypi\nfiles/plain.whl", "11ee"]],
    });
    let head = serde_json::to_vec(&head).unwrap();
    let path = store.layout().doc_file("pypi\n/simple/a/\nhtml");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut file = (head.len() as u32).to_be_bytes().to_vec();
    file.extend_from_slice(&head);
    file.extend_from_slice(b"<html>");
    std::fs::write(&path, file).unwrap();
    let doc = store
        .read_doc("pypi\n/simple/a/\nhtml")
        .await
        .unwrap()
        .expect("read");
    assert_eq!(
        doc.meta.hashes,
        vec![
            (listed.canonical(), "00ff".to_string()),
            (
                "mount:pypi\nfiles/plain.whl".to_string(),
                "11ee".to_string()
            ),
        ]
    );
    // Written again, the names stay as they are.
    store.write_doc(doc.clone()).await.unwrap();
    drop(store);
    let store = Store::open(path.ancestors().nth(4).unwrap()).await.unwrap();
    let again = store
        .read_doc("pypi\n/simple/a/\nhtml")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.meta, doc.meta);
    assert_eq!(again.body, doc.body);
}

/// Least recently used first (what `evict::Lru` does, without pins).
struct Oldest(std::sync::Mutex<Vec<String>>);

impl Evictor for Oldest {
    fn candidates<'a>(&self, entries: &'a [Indexed]) -> Vec<&'a Indexed> {
        let mut all: Vec<&Indexed> = entries.iter().collect();
        all.sort_by_key(|e| e.last_used);
        all
    }

    fn evicted(&self, key: &CacheKey, _bytes: u64) {
        self.0.lock().unwrap().push(key.to_string());
    }
}

fn limited(store: &Store, max: u64) -> Arc<Oldest> {
    let evictor = Arc::new(Oldest(std::sync::Mutex::new(Vec::new())));
    store.limit(max, evictor.clone());
    evictor
}

/// Bytes counted against the limit: bodies plus their metadata allowance.
fn charged(store: &Store) -> u64 {
    let (bytes, entries) = store.usage();
    bytes + entries * ENTRY_OVERHEAD
}

#[tokio::test]
async fn room_is_made_when_a_fill_is_admitted_and_the_limit_holds_at_every_commit() {
    let (_dir, store) = open().await;
    const LEN: usize = 100_000;
    let max = 5 * (LEN as u64 + ENTRY_OVERHEAD);
    let evicted = limited(&store, max);
    for i in 0..5 {
        fill(&store, &key(&format!("/f{i}")), &body(LEN, i)).await;
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    assert_eq!(charged(&store), max, "full, not over");
    // f0 is used again: f1 is now the least recently used.
    hit(&store, &key("/f0")).await;
    let permit = miss(&store, &key("/f5")).await;
    let mut fill5 = permit
        .start(head(Some(LEN as u64), None))
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    // Down to the low-water mark (90 %): a batch, least recently used first.
    assert_eq!(
        *evicted.0.lock().unwrap(),
        ["/f1", "/f2"],
        "room made at admission, least recently used first"
    );
    assert!(charged(&store) + LEN as u64 + ENTRY_OVERHEAD <= max);
    fill5.write(vec![body(LEN, 5)]).await.unwrap();
    assert_eq!(fill5.commit().await.unwrap(), Committed::Stored);
    assert!(charged(&store) <= max);
    assert!(store.layout().entry(&key("/f0")).exists());
    assert!(!store.layout().entry(&key("/f1")).exists());

    // Fills at once: every commit finds room before its rename.
    let concurrent = |range: std::ops::Range<u8>| {
        let store = store.clone();
        async move {
            let mut fills = Vec::new();
            for i in range {
                let store = store.clone();
                fills.push(tokio::spawn(async move {
                    fill(&store, &key(&format!("/g{i}")), &body(LEN, i)).await
                }));
            }
            let mut outcomes = Vec::new();
            for f in fills {
                outcomes.push(f.await.unwrap());
                assert!(charged(&store) <= max);
            }
            outcomes
        }
    };
    assert_eq!(concurrent(10..14).await, [Committed::Stored; 4]);
    // More commits at once than the limit holds: some are served unstored,
    // and the limit still holds.
    let outcomes = concurrent(20..32).await;
    assert!(outcomes.contains(&Committed::Stored), "{outcomes:?}");
    assert!(charged(&store) <= max);
    for i in 10..32 {
        consistent(&store, &key(&format!("/g{i}")));
    }
    assert_eq!(tmp_left(&store).await, 0);
}

#[tokio::test]
async fn small_entries_used_from_memory_count_as_used() {
    let (_dir, store) = open().await;
    const LEN: usize = 10_000;
    let max = 4 * (LEN as u64 + ENTRY_OVERHEAD);
    let evicted = limited(&store, max);
    for i in 0..4 {
        fill(&store, &key(&format!("/s{i}")), &body(LEN, i)).await;
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    // Read from disk once, then served from memory: still a use.
    for _ in 0..3 {
        assert!(hit(&store, &key("/s0")).await.small_body().is_some());
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    fill(&store, &key("/s4"), &body(LEN, 4)).await;
    let gone = evicted.0.lock().unwrap().clone();
    assert!(!gone.contains(&"/s0".to_string()), "{gone:?}");
    assert_eq!(gone.first().map(String::as_str), Some("/s1"));
    assert!(hit(&store, &key("/s0")).await.small_body().is_some());
}

#[tokio::test]
async fn a_body_of_unknown_length_makes_room_as_it_grows_and_one_too_big_is_not_stored() {
    let (_dir, store) = open().await;
    const LEN: usize = 1 << 20;
    let max = 4 * (LEN as u64 + ENTRY_OVERHEAD);
    let evicted = limited(&store, max);
    for i in 0..4 {
        fill(&store, &key(&format!("/u{i}")), &body(LEN, i)).await;
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let grown = body(LEN, 7);
    let mut fill_u = miss(&store, &key("/grows"))
        .await
        .start(head(None, None))
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    assert!(evicted.0.lock().unwrap().is_empty(), "no room asked yet");
    fill_u.write(vec![grown.slice(..1000)]).await.unwrap();
    assert_eq!(
        *evicted.0.lock().unwrap(),
        ["/u0", "/u1"],
        "room made as it grows, down to the low-water mark"
    );
    fill_u.write(vec![grown.slice(1000..)]).await.unwrap();
    assert_eq!(fill_u.commit().await.unwrap(), Committed::Stored);
    assert!(charged(&store) <= max);

    // Larger than the limit itself: streamed, never stored; room is made
    // for it only while it could still fit.
    let huge = body(5 * LEN, 8);
    let permit = miss(&store, &key("/huge")).await;
    let mut watch = permit.watch();
    let mut fill_h = permit
        .start(head(None, None))
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    assert!(matches!(watch.started().await, FillStart::Started(_)));
    let reading = tokio::spawn(drain(watch.reader(0, u64::MAX).unwrap()));
    for chunk in huge.chunks(LEN) {
        fill_h
            .write(vec![Bytes::copy_from_slice(chunk)])
            .await
            .unwrap();
    }
    assert_eq!(fill_h.commit().await.unwrap(), Committed::NotStored);
    let (got, err) = reading.await.unwrap();
    assert!(err.is_none());
    assert_eq!(sha(&got), sha(&huge));
    assert!(charged(&store) <= max);
    assert!(!store.layout().entry(&key("/huge")).exists());
    assert_eq!(tmp_left(&store).await, 0);
}
