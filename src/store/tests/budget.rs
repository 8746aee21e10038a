//! `--max-size`: room made at admission and before every commit.

use super::*;

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

#[tokio::test]
async fn a_reopened_cache_is_indexed_in_the_background_and_its_keys_read_back_to_evict() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cache");
    const LEN: usize = 50_000;
    let store = Store::open(&root).await.unwrap();
    for i in 0..4 {
        fill(&store, &key(&format!("/old{i}")), &body(LEN, i)).await;
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    drop(store);
    // A package-cache 0.2 entry: no metadata, its name kept in memory.
    std::fs::write(root.join("plain.bin"), body(LEN, 9)).unwrap();
    let store = Store::open(&root).await.unwrap();
    let max = 5 * (LEN as u64 + ENTRY_OVERHEAD);
    let evicted = limited(&store, max);
    assert!(hit(&store, &key("/old0")).await.small_body().is_some());
    tokio::time::timeout(Duration::from_secs(10), store.wait_indexed())
        .await
        .expect("the index is built");
    assert!(store.is_indexed());
    assert_eq!(
        store.usage(),
        (5 * LEN as u64, 5),
        "each entry counted once"
    );
    fill(&store, &key("/new"), &body(LEN, 10)).await;
    // /old0 was used after the reopen: /old1 and /old2 are the oldest now.
    assert_eq!(*evicted.0.lock().unwrap(), ["/old1", "/old2"]);
    assert!(charged(&store) <= max);
    for name in ["/old0", "/old1", "/old2", "/old3", "/new"] {
        consistent(&store, &key(name));
    }
    fill(&store, &key("/newer"), &body(LEN, 11)).await;
    fill(&store, &key("/newest"), &body(LEN, 12)).await;
    assert!(
        !root.join("plain.bin").exists(),
        "an entry without metadata is evicted by the name kept for it"
    );
}
