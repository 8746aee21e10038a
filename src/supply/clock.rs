//! The policy's clock: the system's, or for tests the time written in a
//! file (`--policy-clock-file`), re-read by the reloader when it changes, so
//! tests move time forward without sleeping.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};

/// Now, in Unix seconds. Cheap to read on every request.
#[derive(Debug)]
pub struct Clock {
    file: Option<PathBuf>,
    /// The file's time; unused without a file.
    fixed: AtomicI64,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock {
            file: None,
            fixed: AtomicI64::new(0),
        }
    }

    /// The time in `file` (blocking read). A file that cannot be read is an error.
    pub fn from_file(file: &Path) -> Result<Clock, String> {
        let clock = Clock {
            file: Some(file.to_path_buf()),
            fixed: AtomicI64::new(0),
        };
        clock.reload()?;
        Ok(clock)
    }

    /// The file it follows, if any.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// Re-reads the file (blocking); `Ok(true)` when the time changed. A
    /// file that cannot be read keeps the time in use.
    pub fn reload(&self) -> Result<bool, String> {
        let Some(file) = &self.file else {
            return Ok(false);
        };
        let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
        let now = crate::config::supply::parse_instant(&text)
            .ok_or_else(|| format!("{}: not a time: {:?}", file.display(), text.trim()))?;
        Ok(self.fixed.swap(now, Ordering::Relaxed) != now)
    }

    /// Now.
    pub fn now(&self) -> i64 {
        if self.file.is_some() {
            return self.fixed.load(Ordering::Relaxed);
        }
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_clock_moves_when_its_file_does() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("now");
        assert!(Clock::from_file(&file).is_err(), "missing file");
        std::fs::write(&file, "2026-01-01T00:00:00Z\n").unwrap();
        let clock = Clock::from_file(&file).unwrap();
        assert_eq!(clock.now(), 1_767_225_600);
        assert_eq!(clock.reload(), Ok(false));
        std::fs::write(&file, "1767225700").unwrap();
        assert_eq!(clock.reload(), Ok(true));
        assert_eq!(clock.now(), 1_767_225_700);
        std::fs::write(&file, "garbage").unwrap();
        assert!(clock.reload().is_err());
        assert_eq!(clock.now(), 1_767_225_700, "kept");
        assert!(Clock::system().now() > 1_700_000_000);
    }
}
