//! Evictions remove only the body they chose, also racing commits.

use super::*;

#[tokio::test]
async fn an_eviction_removes_only_the_body_it_chose() {
    let (_dir, store) = open().await;
    store.track_recency(true);
    let k = key("/e/entry.tgz");
    let first = body(100_000, 7);
    assert_eq!(fill(&store, &k, &first).await, Committed::Stored);
    let chosen = store.indexed(&k).expect("indexed");
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
    let chosen = store.indexed(&k).unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    hit(&store, &k).await;
    assert_eq!(store.evict(&chosen).await.unwrap(), 0, "used since");
    consistent(&store, &k);

    // Being filled: it stays.
    let chosen = store.indexed(&k).unwrap();
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
        let chosen = store.indexed(&k);
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
