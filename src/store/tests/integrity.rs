//! Damage at rest: block sums recorded at commit and checked by every read
//! of a committed body, quarantine, the binding of metadata by inode (a body
//! of another length is damage), and adoption of a 0.2 directory.

use super::*;
use std::os::unix::fs::FileExt;
use std::sync::atomic::AtomicU64;

const LEN: usize = 3 * BLOCK as usize + 1000;

/// Counts what the store reports.
#[derive(Default)]
struct Seen(AtomicU64);

impl DamageObserver for Seen {
    fn damaged(&self, _key: &CacheKey, _damage: &Damage) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

async fn filled(name: &str, len: usize) -> (tempfile::TempDir, Store, CacheKey, Bytes, Arc<Seen>) {
    let (dir, store) = open().await;
    let seen = Arc::new(Seen::default());
    store.observe_damage(seen.clone());
    let key = key(name);
    let bytes = body(len, 3);
    assert_eq!(fill(&store, &key, &bytes).await, Committed::Stored);
    (dir, store, key, bytes, seen)
}

fn flip(store: &Store, key: &CacheKey, at: u64) {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(store.layout().entry(key))
        .unwrap();
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, at).unwrap();
    file.write_all_at(&[byte[0] ^ 0x20], at).unwrap();
}

fn quarantined(store: &Store) -> usize {
    std::fs::read_dir(store.layout().quarantine_dir())
        .map(|d| d.count())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_flipped_byte_ends_the_read_before_its_block_and_quarantines_the_entry() {
    let (_dir, store, key, bytes, seen) = filled("/f.tgz", LEN).await;
    let meta = EntryMeta::read(&store.layout().meta_file(&key)).unwrap();
    assert_eq!(meta.blocks.as_ref().map(|b| b.sums.len()), Some(4));
    flip(&store, &key, BLOCK + 17);
    let entry = hit(&store, &key).await;
    // A range that ends before the damaged block is served whole.
    let (got, err) = drain(entry.reader(10, 1000)).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(got, bytes[10..1000]);
    let (got, err) = drain(entry.reader(0, entry.len)).await;
    let err = err.expect("the read fails");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    assert_eq!(got, bytes[..BLOCK as usize], "nothing of the damaged block");
    assert!(!store.layout().entry(&key).exists());
    assert!(!store.layout().meta_file(&key).exists());
    assert_eq!(quarantined(&store), 2, "body and metadata");
    assert_eq!(seen.0.load(Ordering::Relaxed), 1);
    assert!(matches!(store.lookup(&key).await.unwrap(), Lookup::Miss(_)));
    assert_eq!(store.usage(), (0, 0), "forgotten");
}

#[tokio::test]
async fn a_range_inside_a_damaged_block_fails_and_one_elsewhere_does_not() {
    let (_dir, store, key, bytes, _) = filled("/r.tgz", LEN).await;
    flip(&store, &key, 2 * BLOCK + 5);
    let entry = hit(&store, &key).await;
    let (got, err) = drain(entry.reader(3 * BLOCK, entry.len)).await;
    assert!(err.is_none());
    assert_eq!(got, bytes[3 * BLOCK as usize..]);
    let (got, err) = drain(entry.reader(2 * BLOCK + 100, 2 * BLOCK + 200)).await;
    assert!(
        err.is_some() && got.is_empty(),
        "the block is checked whole"
    );
}

#[tokio::test]
async fn bodies_of_another_length_or_inode_are_damage_and_miss() {
    for how in ["truncated", "extended", "replaced", "small"] {
        let len = if how == "small" { 5000 } else { LEN };
        let (_dir, store, key, _, seen) = filled("/t.tgz", len).await;
        let path = store.layout().entry(&key);
        match how {
            "truncated" => std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_len(BLOCK))
                .unwrap(),
            "extended" => std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .and_then(|mut f| std::io::Write::write_all(&mut f, b"more"))
                .unwrap(),
            "replaced" => {
                let other = path.with_extension("new");
                std::fs::write(&other, body(len, 4)).unwrap();
                std::fs::rename(&other, &path).unwrap();
            }
            _ => flip(&store, &key, 100),
        }
        assert!(
            matches!(store.lookup(&key).await.unwrap(), Lookup::Miss(_)),
            "{how}"
        );
        assert!(!path.exists(), "{how}: moved aside");
        assert_eq!(seen.0.load(Ordering::Relaxed), 1, "{how}");
    }
}

#[tokio::test]
async fn a_reader_that_followed_a_fill_checks_what_it_reads_after_the_commit() {
    let (_dir, store) = open().await;
    let key = key("/g.tgz");
    let bytes = body(LEN, 5);
    let permit = miss(&store, &key).await;
    let watch = permit.watch();
    let mut fill = permit
        .start(head(Some(LEN as u64), None))
        .await
        .map_err(|(err, _)| err)
        .unwrap();
    let reader = watch
        .reader(0, u64::MAX)
        .expect("a started fill has a file");
    fill.write(vec![bytes.clone()]).await.unwrap();
    assert_eq!(fill.commit().await.unwrap(), Committed::Stored);
    flip(&store, &key, 3 * BLOCK + 1);
    let (got, err) = drain(reader).await;
    assert!(err.is_some(), "the damaged last block is held back");
    assert_eq!(got, bytes[..3 * BLOCK as usize]);
}

#[tokio::test]
async fn entries_without_block_sums_are_checked_whole() {
    let (_dir, store, key, bytes, _) = filled("/old.tgz", LEN).await;
    let path = store.layout().meta_file(&key);
    let mut meta = EntryMeta::read(&path).unwrap();
    meta.blocks = None;
    std::fs::write(&path, serde_json::to_vec(&meta).unwrap()).unwrap();
    assert_eq!(hit_body(&store, &key).await, bytes.to_vec());
    flip(&store, &key, 7);
    let entry = hit(&store, &key).await;
    let (got, err) = drain(entry.reader(0, entry.len)).await;
    assert!(err.is_some(), "the last chunk is held back");
    assert!(got.len() < LEN);
}

#[tokio::test]
async fn an_adopted_directory_gets_metadata_and_then_knows_damage() {
    let (_dir, store) = open_unadopted().await;
    let plain = key("/distfiles/plain.tgz");
    let path = store.layout().entry(&plain);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let bytes = body(LEN, 7);
    std::fs::write(&path, &bytes).unwrap();
    let entry = hit(&store, &plain).await;
    assert!(entry.meta.is_none(), "a plain file before adoption");

    let done = store
        .adopt(tokio_util::sync::CancellationToken::new())
        .await
        .unwrap()
        .expect("adopted now");
    assert_eq!((done.files, done.damaged), (1, 0));
    assert!(store.is_adopted() && store.layout().adopted_marker().exists());
    let meta = hit(&store, &plain).await.meta.expect("metadata now");
    assert!(meta.adopted && meta.blocks.is_some());
    assert_eq!(meta.sha256, sha(&bytes));
    assert_eq!(hit_body(&store, &plain).await, bytes.to_vec());
    assert!(store
        .adopt(tokio_util::sync::CancellationToken::new())
        .await
        .unwrap()
        .is_none());

    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_len(1000))
        .unwrap();
    assert!(matches!(
        store.lookup(&plain).await.unwrap(),
        Lookup::Miss(_)
    ));
    // A file dropped in after adoption has no metadata: damage too.
    let late = key("/distfiles/late.tgz");
    std::fs::write(store.layout().entry(&late), b"late").unwrap();
    assert!(matches!(
        store.lookup(&late).await.unwrap(),
        Lookup::Miss(_)
    ));
}
