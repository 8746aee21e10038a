//! Commit, abort, short and long bodies, hold-back, vacate, spill.

use super::*;

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
    let plain = body(70_000, 4);
    let zip = module_zip(&plain);
    let h1 = crate::digest::h1::of_zip(std::io::Cursor::new(&zip)).unwrap();
    let sha512 = |b: &[u8]| Digest::Sha512(<sha2::Sha512 as sha2::Digest>::digest(b).into());
    let sha1 = |b: &[u8]| Digest::Sha1(<sha1::Sha1 as sha2::Digest>::digest(b).into());
    for (path, bytes, listed, stored) in [
        ("/good.whl", &plain, Digest::sha256(&sha(&plain)), true),
        (
            "/bad.whl",
            &plain,
            Digest::sha256(&sha(b"another body")),
            false,
        ),
        ("/good.tgz", &plain, Some(sha512(&plain)), true),
        ("/bad.tgz", &plain, Some(sha512(b"another body")), false),
        ("/bad-sha1.tgz", &plain, Some(sha1(b"another body")), false),
        ("/good.zip", &zip, Some(h1.clone()), true),
        ("/bad.zip", &zip, Some(Digest::GoH1([7; 32])), false),
        ("/not-a.zip", &plain, Some(h1.clone()), false),
    ] {
        let bytes = bytes.clone();
        let k = key(path);
        let permit = miss(&store, &k).await;
        let mut watch = permit.watch();
        let mut fill = permit
            .start(head(Some(bytes.len() as u64), listed))
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
            let cause = watch.abort_cause().expect("the commit gives its cause");
            assert!(
                matches!(cause.downcast_ref::<Error>(), Some(Error::Digest { .. })),
                "{path}: followers can read why: {cause}"
            );
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

/// A module zip holding `data` as one stored file.
fn module_zip(data: &[u8]) -> Bytes {
    use std::io::Write;
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    writer
        .start_file(
            "example.test/m@v1.0.0/data",
            zip::write::SimpleFileOptions::default(),
        )
        .unwrap();
    writer.write_all(data).unwrap();
    writer.finish().unwrap().into_inner().into()
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
