//! A store below another as a tier: hits filled from it, fills published to it.

use super::*;

/// A store on `dir` with a second store below it as a tier; both returned.
async fn two_tiers() -> (tempfile::TempDir, Store, Store) {
    let dir = tempfile::tempdir().unwrap();
    let local = Store::open(dir.path().join("local")).await.unwrap();
    let lower = Store::open(dir.path().join("lower")).await.unwrap();
    local.add_tier(Arc::new(DiskTier::new(lower.clone())));
    (dir, local, lower)
}

#[tokio::test]
async fn a_lower_tier_hit_becomes_a_local_entry_through_the_fill_machinery() {
    let (_dir, local, lower) = two_tiers().await;
    for (path, len) in [("/t/big.tgz", 300_000), ("/t/small.tgz", 3_000)] {
        let k = key(path);
        let bytes = body(len, 11);
        assert_eq!(fill(&lower, &k, &bytes).await, Committed::Stored);
        let permit = miss(&local, &k).await;
        let Lookup::Filling(mut joined) = local.lookup(&k).await.unwrap() else {
            panic!("{path}: a second request joins the fill");
        };
        let filling = tokio::spawn(permit.fill_from_lower());
        assert!(matches!(joined.started().await, FillStart::Started(_)));
        let (got, err) = drain(joined.reader(0, u64::MAX).unwrap()).await;
        assert!(err.is_none(), "{path}: {err:?}");
        assert_eq!(got, bytes, "{path}");
        assert!(matches!(filling.await.unwrap(), Ok(Committed::Stored)));
        let meta = hit(&local, &k).await.meta.expect("metadata");
        assert_eq!(meta.sha256, sha(&bytes), "{path}");
        assert_eq!(hit_body(&local, &k).await, bytes);
        assert_eq!(tmp_left(&local).await, 0);
        assert_eq!(
            tmp_left(&lower).await,
            0,
            "{path}: not written back to its source"
        );
    }
}

#[tokio::test]
async fn every_fill_is_published_to_the_lower_tier_once_complete() {
    let (_dir, local, lower) = two_tiers().await;
    let k = key("/t/new.whl");
    let bytes = body(150_000, 12);
    assert_eq!(fill(&local, &k, &bytes).await, Committed::Stored);
    assert_eq!(hit_body(&lower, &k).await, bytes);
    assert_eq!(
        hit(&lower, &k).await.meta.unwrap().sha256,
        sha(&bytes),
        "published with its digest"
    );
    // An aborted fill publishes nothing below either.
    let k = key("/t/aborted.whl");
    let mut aborted = miss(&local, &k)
        .await
        .start(head(Some(10_000), None))
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    aborted.write(vec![body(5_000, 13)]).await.unwrap();
    drop(aborted);
    assert_eq!(tmp_left(&lower).await, 0);
    drop(miss(&lower, &k).await);
}

#[tokio::test]
async fn a_damaged_lower_entry_is_never_served_whole_and_is_removed_there() {
    let (_dir, local, lower) = two_tiers().await;
    let k = key("/t/damaged.tgz");
    let bytes = body(200_000, 14);
    assert_eq!(fill(&lower, &k, &bytes).await, Committed::Stored);
    // One byte flipped in place: same inode, same size, metadata still bound.
    let path = lower.layout().entry(&k);
    let mut damaged = std::fs::read(&path).unwrap();
    damaged[150_000] ^= 0x55;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, &damaged))
        .unwrap();
    let permit = miss(&local, &k).await;
    let mut watch = permit.watch();
    let filling = tokio::spawn(permit.fill_from_lower());
    assert!(matches!(watch.started().await, FillStart::Started(_)));
    let (got, err) = drain(watch.reader(0, u64::MAX).unwrap()).await;
    assert!(err.is_some(), "an unclean end");
    assert!(got.len() < bytes.len(), "never the whole body");
    assert!(matches!(filling.await.unwrap(), Ok(Committed::NotStored)));
    assert!(!local.layout().entry(&k).exists());
    assert!(!path.exists(), "removed from the tier it came from");
    // The next request goes upstream.
    assert!(miss(&local, &k).await.fill_from_lower().await.is_err());
    assert_eq!(tmp_left(&local).await, 0);
}
