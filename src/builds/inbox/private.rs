//! A private copy being written: its random name, its digests, and its
//! removal unless it becomes a [`Source`].

use super::name::random_hex;
use super::{Error, Inbox, Source};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The digests of every byte written to a private copy, in order.
pub(super) struct Digests {
    sha1: Sha1,
    sha256: Sha256,
    size: u64,
}

impl Digests {
    pub(super) fn new() -> Digests {
        Digests {
            sha1: Sha1::new(),
            sha256: Sha256::new(),
            size: 0,
        }
    }

    pub(super) fn update(&mut self, bytes: &[u8]) {
        self.sha1.update(bytes);
        self.sha256.update(bytes);
        self.size += bytes.len() as u64;
    }

    pub(super) fn size(&self) -> u64 {
        self.size
    }
}

/// A new file in `private/` with a random name. Dropped without
/// [`PrivateFile::into_source`], it is unlinked (on tokio's blocking pool when
/// a runtime is there), so a cancelled upload leaves nothing behind; error
/// paths call [`PrivateFile::remove_now`] or [`PrivateFile::remove`] so the
/// file is gone when the error is returned.
pub(super) struct PrivateFile {
    name: String,
    path: PathBuf,
    armed: bool,
    in_flight: Arc<Mutex<HashSet<String>>>,
}

impl PrivateFile {
    /// A fresh name (`<prefix>-<32 hex>`); the file is created by the caller
    /// with `O_EXCL`.
    pub(super) fn new(inbox: &Inbox, prefix: &str) -> Result<PrivateFile, Error> {
        let name = format!(
            "{prefix}-{}",
            random_hex().map_err(Error::io("naming a file in", &inbox.private))?
        );
        let path = inbox.private.join(&name);
        lock(&inbox.in_flight).insert(name.clone());
        Ok(PrivateFile {
            name,
            path,
            armed: true,
            in_flight: Arc::clone(&inbox.in_flight),
        })
    }

    pub(super) fn name(&self) -> &str {
        &self.name
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Keeps the file if its SHA1 is `expected`, else removes it (blocking).
    pub(super) fn verify_blocking(
        self,
        expected: &str,
        digests: Digests,
        owner: Option<u32>,
    ) -> Result<Source, Error> {
        match self.into_source(expected, digests, owner) {
            Ok(source) => Ok(source),
            Err((file, err)) => {
                file.remove_now();
                Err(err)
            }
        }
    }

    /// Keeps the file if its SHA1 is `expected`, else removes it.
    pub(super) async fn verify(
        self,
        expected: &str,
        digests: Digests,
        owner: Option<u32>,
    ) -> Result<Source, Error> {
        match self.into_source(expected, digests, owner) {
            Ok(source) => Ok(source),
            Err((file, err)) => {
                file.remove().await;
                Err(err)
            }
        }
    }

    fn into_source(
        mut self,
        expected: &str,
        digests: Digests,
        owner: Option<u32>,
    ) -> Result<Source, (PrivateFile, Error)> {
        let sha1 = hex::encode(digests.sha1.finalize());
        if sha1 != expected {
            let err = Error::Mismatch {
                expected: expected.to_owned(),
                actual: sha1,
            };
            return Err((self, err));
        }
        self.armed = false;
        Ok(Source {
            path: std::mem::take(&mut self.path),
            sha1,
            sha256: hex::encode(digests.sha256.finalize()),
            size: digests.size,
            owner,
        })
    }

    /// Blocking: unlinks the file now.
    pub(super) fn remove_now(mut self) {
        self.armed = false;
        let _ = unlink(&self.path);
    }

    /// Unlinks the file on the blocking pool and waits for it.
    pub(super) async fn remove(mut self) {
        self.armed = false;
        let path = std::mem::take(&mut self.path);
        let _ = tokio::task::spawn_blocking(move || unlink(&path)).await;
    }
}

impl Drop for PrivateFile {
    fn drop(&mut self) {
        lock(&self.in_flight).remove(&self.name);
        if !self.armed {
            return;
        }
        let path = std::mem::take(&mut self.path);
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn_blocking(move || unlink(&path));
            }
            Err(_) => {
                let _ = unlink(&path);
            }
        }
    }
}

/// Whether a private file of this name is being written.
pub(super) fn is_in_flight(inbox: &Inbox, name: &str) -> bool {
    lock(&inbox.in_flight).contains(name)
}

fn lock(set: &Mutex<HashSet<String>>) -> std::sync::MutexGuard<'_, HashSet<String>> {
    // The set stays consistent whatever panicked while holding it.
    set.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn unlink(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            tracing::warn!(path = %path.display(), error = %e, "could not remove a private inbox file");
            Err(e)
        }
        _ => Ok(()),
    }
}
