//! The index on its own: what a build lists against commits, hits and
//! removals that come first, and victims offered oldest first with their
//! keys read back.

use super::*;
use crate::store::key::Namespace;
use crate::store::layout::Layout;

fn key(path: &str) -> CacheKey {
    CacheKey::try_from_path(Namespace::Mirrors, path).unwrap()
}

fn list(index: &Index, path: &str, size: u64, last_used: u64, inode: u64) {
    let k = key(path);
    let name: Box<str> = k.canonical().into();
    index.listed(
        EntryId::of(&k),
        Slot::new(size, last_used, inode),
        Some(name),
    );
}

#[test]
fn what_happens_during_the_build_is_neither_lost_nor_counted_twice() {
    let index = Index::building();
    // Committed while the walk runs, then listed with the body it saw
    // before the commit: the commit wins, counted once.
    index.record(&key("/committed"), 10, 2);
    list(&index, "/committed", 7, 1, 1);
    assert_eq!(index.get(&key("/committed")).unwrap().inode, 2);
    // Listed, then removed: gone.
    list(&index, "/listed-then-removed", 5, 1, 3);
    index.forget_if(&key("/listed-then-removed"), 3);
    // Removed before the walk lists the body it stat'ed earlier: never counted.
    index.forget_if(&key("/removed-then-listed"), 4);
    list(&index, "/removed-then-listed", 100, 1, 4);
    // Removed, committed again, and the new body removed too: neither counted.
    index.forget_if(&key("/twice"), 5);
    index.record(&key("/twice"), 8, 6);
    index.forget_if(&key("/twice"), 6);
    list(&index, "/twice", 100, 1, 5);
    // A removal of another body than the one listed takes nothing.
    list(&index, "/other-body", 3, 1, 7);
    index.forget_if(&key("/other-body"), 70);
    // Hit before it is listed: the hit is its last use.
    index.touch(&key("/hit-early"));
    list(&index, "/hit-early", 1, 1, 8);
    assert!(index.get(&key("/hit-early")).unwrap().last_used > 1);
    assert!(!index.is_built());
    index.finish();
    assert!(index.is_built());
    assert_eq!(index.usage(), (10 + 3 + 1, 3));
    assert!(index.get(&key("/removed-then-listed")).is_none());
    assert!(index.get(&key("/twice")).is_none());
    // After the build, a removal leaves nothing behind.
    index.forget_if(&key("/other-body"), 7);
    assert_eq!(index.charged(100), 10 + 1 + 2 * 100);
}

#[test]
fn the_oldest_entries_are_offered_first_and_kept_ones_never() {
    let layout = Layout::new("/nonexistent");
    let index = Index::built();
    for i in 0..100u64 {
        // Last use 1000 - i: /e99 is the oldest.
        list(&index, &format!("/e{i}"), 10, 1000 - i, i);
    }
    list(&index, "/tie-small", 5, 1, 500);
    list(&index, "/tie-large", 50, 1, 501);
    let offered = index.oldest(&layout, 20 * 10, 0);
    let names: Vec<String> = offered.iter().map(|e| e.key.to_string()).collect();
    assert_eq!(names[..4], ["/tie-large", "/tie-small", "/e99", "/e98"]);
    assert_eq!(offered.len(), super::oldest::MIN_BATCH + 1);
    let sum: u64 = offered.iter().map(|e| e.size).sum();
    assert!(sum >= 200, "enough bytes: {sum}");
    index.keep(&offered[0]);
    let again = index.oldest(&layout, 1, 0);
    assert_eq!(again[0].key.to_string(), "/tie-small", "kept ones stay out");
    // Committed again: offered again.
    assert!(index.get(&key("/tie-large")).unwrap().kept());
    index.record(&key("/tie-large"), 50, 502);
    assert!(!index.get(&key("/tie-large")).unwrap().kept());
}

#[test]
fn keys_are_read_back_from_their_metadata_files() {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::new(dir.path());
    let index = Index::built();
    let with_meta = key("/with/meta.whl");
    let meta = crate::store::EntryMeta {
        key: with_meta.canonical(),
        size: 3,
        sha256: String::new(),
        headers: Vec::new(),
        fetched_at: 0,
        source: String::new(),
        inode: 1,
        blocks: None,
        adopted: false,
        verified: Vec::new(),
    };
    let path = layout.meta_file(&with_meta);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, serde_json::to_vec(&meta).unwrap()).unwrap();
    index.listed(EntryId::of(&with_meta), Slot::new(3, 1, 1), None);
    // No metadata and no name kept: it cannot be evicted, and says so once.
    index.listed(EntryId::of(&key("/lost")), Slot::new(3, 2, 2), None);
    let offered = index.oldest(&layout, 1_000, 0);
    assert_eq!(offered.len(), 1);
    assert_eq!(offered[0].key, with_meta);
    assert!(index.get(&key("/lost")).unwrap().kept());
}
