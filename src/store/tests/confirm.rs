//! A hit checked against a digest its sha256 cannot decide (`confirm`):
//! read once, recorded, never read again; a mismatch reported; concurrent
//! hits of one key read the body once; a fill's verified digest recorded
//! at its commit.

use super::*;
use crate::digest::h1;
use sha2::Sha512;

fn sha512(bytes: &[u8]) -> Digest {
    Digest::Sha512(Sha512::digest(bytes).into())
}

fn verified(store: &Store, k: &CacheKey) -> Vec<Digest> {
    EntryMeta::read(&store.layout().meta_file(k))
        .expect("metadata")
        .verified
}

#[tokio::test]
async fn a_matching_body_is_read_once_then_known_from_its_metadata() {
    let (_dir, store) = open().await;
    for (path, len) in [("/a/small.tgz", 1_000), ("/a/large.tgz", 300_000)] {
        let k = key(path);
        let bytes = body(len, 3);
        // Cached by its URL alone: nothing listed, nothing recorded.
        assert_eq!(fill(&store, &k, &bytes).await, Committed::Stored);
        assert!(verified(&store, &k).is_empty());
        let listed = sha512(&bytes);
        let first = store.confirm(&k, &hit(&store, &k).await, &listed).await;
        assert!(
            matches!(first, Ok(Confirmed::Hashed { bytes: n, .. }) if n == len as u64),
            "{first:?}"
        );
        assert_eq!(verified(&store, &k), vec![listed.clone()]);
        // The next hit reads the new metadata (a small body is not held
        // in memory with the old one) and reads no body.
        let entry = hit(&store, &k).await;
        assert_eq!(entry.meta.as_ref().unwrap().verified, vec![listed.clone()]);
        assert_eq!(
            store.confirm(&k, &entry, &listed).await.unwrap(),
            Confirmed::Known
        );
        assert_eq!(hit_body(&store, &k).await, bytes, "still served whole");
        // Its sha256 decides a sha256 without reading or recording it.
        let sha256 = Digest::sha256(&sha(&bytes)).unwrap();
        assert_eq!(
            store.confirm(&k, &entry, &sha256).await.unwrap(),
            Confirmed::Known
        );
        assert_eq!(verified(&store, &k), vec![listed]);
    }
}

#[tokio::test]
async fn a_body_that_differs_is_reported_with_its_own_digest_and_not_recorded() {
    let (_dir, store) = open().await;
    let k = key("/a/tampered.tgz");
    let bytes = body(200_000, 4);
    fill(&store, &k, &bytes).await;
    let genuine = body(200_000, 5);
    let entry = hit(&store, &k).await;
    let got = store.confirm(&k, &entry, &sha512(&genuine)).await.unwrap();
    assert_eq!(
        got,
        Confirmed::Differs {
            found: sha512(&bytes).to_string()
        }
    );
    assert!(verified(&store, &k).is_empty());
    // A sha256 or a go.mod's h1 is decided from the recorded sha256.
    let sha256 = Digest::sha256(&sha(&genuine)).unwrap();
    assert_eq!(
        store.confirm(&k, &entry, &sha256).await.unwrap(),
        Confirmed::Differs {
            found: format!("sha256:{}", sha(&bytes))
        }
    );
    assert!(matches!(
        store.confirm(&k, &entry, &h1::of_mod(&genuine)).await,
        Ok(Confirmed::Differs { .. })
    ));
    assert_eq!(
        store
            .confirm(&k, &entry, &h1::of_mod(&bytes))
            .await
            .unwrap(),
        Confirmed::Known
    );
}

#[tokio::test]
async fn a_module_zip_is_checked_by_its_h1() {
    use std::io::Write;
    let (_dir, store) = open().await;
    let k = key("/go/example.test/m/@v/v1.0.0.zip");
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    zip.start_file(
        "example.test/m@v1.0.0/m.go",
        zip::write::SimpleFileOptions::default(),
    )
    .unwrap();
    zip.write_all(&body(100_000, 6)).unwrap();
    let bytes = Bytes::from(zip.finish().unwrap().into_inner());
    fill(&store, &k, &bytes).await;
    let listed = h1::of_zip(std::io::Cursor::new(&bytes[..])).unwrap();
    assert!(matches!(
        store.confirm(&k, &hit(&store, &k).await, &Digest::GoH1([0; 32])).await,
        Ok(Confirmed::Differs { found }) if found == listed.to_string()
    ));
    assert!(matches!(
        store.confirm(&k, &hit(&store, &k).await, &listed).await,
        Ok(Confirmed::Hashed { .. })
    ));
    assert_eq!(
        store
            .confirm(&k, &hit(&store, &k).await, &listed)
            .await
            .unwrap(),
        Confirmed::Known
    );
    // Not a zip: no h1, so it differs.
    let other = key("/go/example.test/m/@v/v1.0.1.zip");
    fill(&store, &other, &body(1000, 7)).await;
    assert!(matches!(
        store.confirm(&other, &hit(&store, &other).await, &listed).await,
        Ok(Confirmed::Differs { found }) if found.starts_with("no h1")
    ));
}

#[tokio::test]
async fn concurrent_hits_read_the_body_once() {
    let (_dir, store) = open().await;
    let k = key("/a/big.tgz");
    let bytes = body(16 << 20, 8);
    fill(&store, &k, &bytes).await;
    let listed = sha512(&bytes);
    let mut entries = Vec::new();
    for _ in 0..8 {
        entries.push(hit(&store, &k).await);
    }
    let checks: Vec<_> = entries
        .into_iter()
        .map(|entry| {
            let (store, k, listed) = (store.clone(), k.clone(), listed.clone());
            tokio::spawn(async move { store.confirm(&k, &entry, &listed).await })
        })
        .collect();
    let mut hashed = 0;
    for check in checks {
        let got = tokio::time::timeout(Duration::from_secs(60), check)
            .await
            .expect("a check never hangs")
            .unwrap()
            .expect("checked");
        match got {
            Confirmed::Hashed { .. } => hashed += 1,
            Confirmed::Followed | Confirmed::Known => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(hashed, 1, "one read of the body for eight hits");
    assert_eq!(verified(&store, &k), vec![listed]);
}

#[tokio::test]
async fn a_fill_records_the_digest_it_was_verified_against() {
    let (_dir, store) = open().await;
    let k = key("/a/listed.tgz");
    let bytes = body(100_000, 9);
    let listed = sha512(&bytes);
    let permit = miss(&store, &k).await;
    let mut fill = permit
        .start(head(Some(bytes.len() as u64), Some(listed.clone())))
        .await
        .map_err(|(err, _)| err)
        .unwrap();
    fill.write(vec![bytes.clone()]).await.unwrap();
    assert_eq!(fill.commit().await.unwrap(), Committed::Stored);
    assert_eq!(verified(&store, &k), vec![listed.clone()]);
    assert_eq!(
        store
            .confirm(&k, &hit(&store, &k).await, &listed)
            .await
            .unwrap(),
        Confirmed::Known
    );
    // A sha256 is the recorded sha256: not recorded again.
    let k2 = key("/a/sha256.tgz");
    let permit = miss(&store, &k2).await;
    let mut fill = permit
        .start(head(Some(bytes.len() as u64), Digest::sha256(&sha(&bytes))))
        .await
        .map_err(|(err, _)| err)
        .unwrap();
    fill.write(vec![bytes.clone()]).await.unwrap();
    fill.commit().await.unwrap();
    assert!(verified(&store, &k2).is_empty());
}

#[tokio::test]
async fn a_body_replaced_during_its_check_is_not_recorded() {
    let (_dir, store) = open().await;
    let k = key("/a/replaced.tgz");
    let old = body(200_000, 10);
    fill(&store, &k, &old).await;
    let entry = hit(&store, &k).await;
    // Another commit puts a new body in place before the check records.
    let new = body(200_000, 11);
    let entry_new = {
        let removed = store.discard(&k, &entry).await;
        assert!(removed.is_ok());
        fill(&store, &k, &new).await;
        hit(&store, &k).await
    };
    // The old entry still reads (its descriptor is open) and matches, but
    // nothing is recorded against the new body.
    assert!(matches!(
        store.confirm(&k, &entry, &sha512(&old)).await,
        Ok(Confirmed::Hashed { .. })
    ));
    assert!(verified(&store, &k).is_empty());
    assert!(matches!(
        store.confirm(&k, &entry_new, &sha512(&old)).await,
        Ok(Confirmed::Differs { .. })
    ));
}
