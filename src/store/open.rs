//! Opening a cache directory: its directories with their modes, the lock,
//! the temporary files a crash left, and the start of the background build
//! of the index of committed entries (nothing to build in a new directory).

use super::flight::Flights;
use super::layout::{Layout, DIR_MODE, PRIVATE_DIR_MODE};
use super::lock::{CacheLock, LockProbe};
use super::{adopt, doc, durable, guard, hot, index, Error, Inner, Store, HOT_BUDGET};
use rustix::fs::{Mode, OFlags};
use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;
use std::sync::{Arc, Mutex};

impl Store {
    pub(super) fn open_blocking(layout: Layout) -> Result<Store, Error> {
        let io = |op: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Io { op, path, source }
        };
        let root = layout.root().to_path_buf();
        let created = !root.exists();
        if created {
            DirBuilder::new()
                .recursive(true)
                .mode(DIR_MODE)
                .create(&root)
                .map_err(io("create", &root))?;
            fs::set_permissions(&root, fs::Permissions::from_mode(DIR_MODE))
                .map_err(io("chmod", &root))?;
        }
        let state = layout.state_dir();
        let tmp_dir = layout.tmp_dir();
        for dir in [state.clone(), tmp_dir.clone(), layout.meta_dir()] {
            match DirBuilder::new().mode(PRIVATE_DIR_MODE).create(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io("create", &dir)(e)),
            }
        }
        // Traversable, not listable: local clients open built artifacts under
        // `build/artifacts/` by exact name; everything else in here is 0700.
        fs::set_permissions(&state, fs::Permissions::from_mode(0o711))
            .map_err(io("chmod", &state))?;
        let lock_path = layout.lock_file();
        let lock = match CacheLock::try_acquire(&layout).map_err(io("lock", &lock_path))? {
            LockProbe::Acquired(lock) => lock,
            LockProbe::Held { pid } => {
                return Err(Error::Locked {
                    root,
                    path: lock_path,
                    pid,
                })
            }
        };
        let removed = durable::clear_dir(&tmp_dir).map_err(io("clear", &tmp_dir))?;
        if removed > 0 {
            tracing::info!(
                count = removed,
                "removed temporary files left by an earlier run"
            );
        }
        let (index, index_build) = if created {
            (Arc::new(index::Index::built()), None)
        } else {
            let index = Arc::new(index::Index::building());
            let build = index::build::start(index.clone(), layout.clone());
            (index, Some(build))
        };
        // A directory this version created holds no plain files to adopt.
        let adopted =
            (created && adopt::mark_adopted(&layout).is_ok()) || adopt::is_adopted(&layout);
        let root_fd = rustix::fs::open(
            &root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io("open", &root)(e.into()))?;
        Ok(Store {
            inner: Arc::new(Inner {
                layout,
                root_fd,
                fills: Flights::new(),
                docs_in_flight: Flights::new(),
                checks: Flights::new(),
                hot: hot::HotSet::new(HOT_BUDGET),
                index,
                _index_build: index_build,
                track_recency: std::sync::atomic::AtomicBool::new(false),
                docs: Mutex::new(doc::DocMemo::default()),
                guards: guard::KeyGuards::new(),
                budget: std::sync::OnceLock::new(),
                lower: std::sync::RwLock::new(Vec::new()),
                adopted: std::sync::atomic::AtomicBool::new(adopted),
                damage_observer: std::sync::OnceLock::new(),
                _lock: lock,
            }),
        })
    }
}
