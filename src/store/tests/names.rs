//! Metadata and digests written under the names of earlier versions.

use super::*;

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
        blocks: None,
        adopted: false,
        verified: Vec::new(),
    };
    let meta_path = store.layout().meta_file_named(name);
    std::fs::create_dir_all(meta_path.parent().unwrap()).unwrap();
    std::fs::write(meta_path, serde_json::to_vec(&meta).unwrap()).unwrap();
}

#[tokio::test]
async fn metadata_written_under_the_old_lossy_names_is_still_found() {
    let (_dir, store) = open_unadopted().await;
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
        "hashes": [[legacy, "00ff".repeat(16)], ["mount:pypi\nfiles/plain.whl", "11ee".repeat(16)]],
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
            (
                listed.canonical(),
                Digest::sha256(&"00ff".repeat(16)).unwrap()
            ),
            (
                "mount:pypi\nfiles/plain.whl".to_string(),
                Digest::sha256(&"11ee".repeat(16)).unwrap()
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
