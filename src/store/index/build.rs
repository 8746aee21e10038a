//! Building the index of an existing cache in the background: a thread of
//! its own walks the namespaces (`maintenance::Scan`) while the server
//! serves. Hits need no index; commits, hits and removals meanwhile go to
//! the index at once and win over what the walk saw (see `Index::listed`),
//! so nothing is lost or counted twice. Eviction waits for the build (see
//! `budget`).
//!
//! Owned by the store: dropping the [`Build`] handle (the store closing)
//! stops the walk at its next entry.

use super::{now_ms, EntryId, Index, Slot};
use crate::store::layout::Layout;
use crate::store::maintenance::Scan;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Instant, UNIX_EPOCH};

/// The running build; dropping it cancels the walk.
pub(crate) struct Build {
    cancel: Arc<AtomicBool>,
}

impl Drop for Build {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
    }
}

/// Starts building `index` from the cache laid out as `layout`, on a thread
/// of its own (blocking directory walks stay off the runtime).
pub(crate) fn start(index: Arc<Index>, layout: Layout) -> Build {
    let cancel = Arc::new(AtomicBool::new(false));
    let stop = cancel.clone();
    let spawned = std::thread::Builder::new()
        .name("index-build".into())
        .spawn({
            let index = index.clone();
            let layout = layout.clone();
            move || run(&index, &layout, &stop)
        });
    if let Err(err) = spawned {
        // No thread to spare: build it here, as before background builds.
        tracing::warn!(error = %err, "cannot start the index build thread; indexing first");
        run(&index, &layout, &cancel);
    }
    Build { cancel }
}

/// Lists every entry into `index`, then marks it built. Stops, leaving it
/// unbuilt, once `cancel` is set. Blocking.
pub(crate) fn run(index: &Index, layout: &Layout, cancel: &AtomicBool) {
    let started = Instant::now();
    let named = meta_names(layout);
    let entries = match Scan::new(layout).without_meta().entries() {
        Ok(entries) => entries,
        Err(err) => {
            tracing::warn!(error = %err, "cannot list the cache; eviction sees only new entries");
            index.finish();
            return;
        }
    };
    // Parts that cannot be read are skipped: an entry the index misses is
    // only never evicted.
    for entry in entries.flatten() {
        if cancel.load(Ordering::Relaxed) {
            return;
        }
        let name = entry.key.canonical();
        let id = EntryId::of_canonical(&name);
        let mtime = entry
            .mtime
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let slot = Slot::new(entry.size, mtime.min(now_ms()), entry.inode);
        let kept_name = (named.binary_search(&prefix(&id.0)).is_err()).then(|| name.into());
        index.listed(id, slot, kept_name);
    }
    drop(named);
    index.finish();
    let (bytes, entries) = index.usage();
    tracing::info!(
        entries,
        bytes,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "cache indexed"
    );
}

/// The first 8 bytes of the names of every metadata file, sorted: whether
/// an entry's key can be read back from disk, at 8 bytes per file for the
/// length of the build (a false "yes" needs a 64-bit collision).
fn meta_names(layout: &Layout) -> Vec<u64> {
    let mut names = Vec::new();
    let Ok(fans) = std::fs::read_dir(layout.meta_dir()) else {
        return names;
    };
    for fan in fans.flatten() {
        let Ok(files) = std::fs::read_dir(fan.path()) else {
            continue;
        };
        for file in files.flatten() {
            use std::os::unix::ffi::OsStrExt;
            if let Some(digest) = Layout::meta_digest_of(file.file_name().as_bytes()) {
                names.push(prefix(&digest));
            }
        }
    }
    names.sort_unstable();
    names
}

fn prefix(digest: &[u8; 32]) -> u64 {
    let (head, _) = digest.split_at(8);
    u64::from_be_bytes(head.try_into().expect("8 bytes"))
}
