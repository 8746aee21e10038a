//! The cache directory's lock: one server at a time (and, while they run,
//! the maintenance steps that must exclude servers). The holder writes its
//! PID into the lock file, so whoever is refused can say who holds it.
//! An advisory `flock`-style lock: it goes with the process, also on a
//! crash, and the next holder overwrites the PID left behind.

use super::layout::Layout;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, OpenOptionsExt};

/// The lock, held until dropped.
#[derive(Debug)]
pub struct CacheLock {
    _file: File,
}

/// What trying the lock found.
#[derive(Debug)]
pub enum LockProbe {
    /// No one held it; this process now does, until the guard drops (a
    /// server started meanwhile refuses to start and names this process).
    Acquired(CacheLock),
    /// Another process holds it: the PID it wrote, if it could be read.
    Held {
        /// The holder's process ID.
        pid: Option<u32>,
    },
}

impl CacheLock {
    /// Tries to take the lock of the cache laid out as `layout`, without
    /// waiting, creating the lock file (0600) if needed; its state directory
    /// must exist. Blocking.
    pub fn try_acquire(layout: &Layout) -> io::Result<LockProbe> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(layout.lock_file())?;
        match file.try_lock() {
            Ok(()) => {
                let pid = format!("{}\n", std::process::id());
                file.set_len(0)?;
                file.write_all_at(pid.as_bytes(), 0)?;
                Ok(LockProbe::Acquired(CacheLock { _file: file }))
            }
            Err(fs::TryLockError::WouldBlock) => Ok(LockProbe::Held {
                pid: holder(&mut file),
            }),
            Err(fs::TryLockError::Error(e)) => Err(e),
        }
    }
}

/// The PID written in a held lock file. A holder that has just taken the
/// lock may not have written it yet: `None` then.
fn holder(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.take(32).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

/// Who holds a lock, for messages: "package-cache process 1234", or
/// "another package-cache process" when the PID is unknown.
pub fn describe(pid: Option<u32>) -> String {
    match pid {
        Some(pid) => format!("package-cache process {pid}"),
        None => "another package-cache process".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_holder_is_named_and_the_lock_goes_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        fs::create_dir_all(layout.state_dir()).unwrap();
        fs::write(layout.lock_file(), b"99999999\n").unwrap();
        let LockProbe::Acquired(held) = CacheLock::try_acquire(&layout).unwrap() else {
            panic!("free");
        };
        assert_eq!(
            fs::read_to_string(layout.lock_file()).unwrap(),
            format!("{}\n", std::process::id()),
            "the PID left by a crash is overwritten"
        );
        // Another open file description contends as another process would.
        match CacheLock::try_acquire(&layout).unwrap() {
            LockProbe::Held { pid } => assert_eq!(pid, Some(std::process::id())),
            LockProbe::Acquired(_) => panic!("held"),
        }
        drop(held);
        assert!(matches!(
            CacheLock::try_acquire(&layout).unwrap(),
            LockProbe::Acquired(_)
        ));
    }
}
