//! Runtimes: an operator-named interpreter (`--runtime py311=/usr/bin/python3.11`),
//! its family (Python or Ruby) and its ABI, which every artifact records so that
//! a changed interpreter behind a name means a rebuild, never a stale binary.
//! Owns probing the interpreter (a short child process with a cleared
//! environment and a timeout); knows nothing of packages or the sandbox.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::process::Command;

/// How long an interpreter gets to answer a probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);
/// Probe answers are one short line; anything longer is not an answer.
const PROBE_MAX_OUTPUT: usize = 4096;

/// Prints `python SOABI VERSION`. `-I` ignores `PYTHON*` variables and the user
/// site; SOABI is absent on some builds (Windows, very old ones), where the
/// cache tag (`cpython-311`) is the best available ABI name.
const PYTHON_PROBE: &str = "import sys, sysconfig; \
print('python', sysconfig.get_config_var('SOABI') or sys.implementation.cache_tag, \
sys.version.split()[0])";

/// Prints `ruby VERSION ARCH RUBY_VERSION_DIR`. Gems are not needed to answer.
const RUBY_PROBE: &str = "require 'rbconfig'; c = RbConfig::CONFIG; \
print 'ruby ', RUBY_VERSION, ' ', c['arch'], ' ', c['ruby_version'], \"\\n\"";

/// The interpreter families package types are built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// CPython (or a compatible interpreter with `sysconfig` and `pip`).
    Python,
    /// MRI Ruby with RubyGems.
    Ruby,
}

impl Family {
    /// `"python"` / `"ruby"`, for logs and records.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Python => "python",
            Family::Ruby => "ruby",
        }
    }
}

/// An interpreter's ABI as artifacts record it: for Python its SOABI and full
/// version (`"cpython-311-x86_64-linux-gnu 3.11.2"`), for Ruby its version and
/// arch (`"ruby 3.1.2 x86_64-linux-gnu"`, followed by RbConfig's `ruby_version`
/// only when that is not the usual `MAJOR.MINOR.0`). Two artifacts are
/// interchangeable only when their ABI strings are equal.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Abi(pub String);

impl fmt::Display for Abi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Errors probing an interpreter. All are the operator's to fix (a missing or
/// wrong interpreter), never a client's: [`Error::is_client`] is always false.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configured path is relative; runtimes are absolute paths.
    #[error("runtime {name}: interpreter {} is not an absolute path", path.display())]
    NotAbsolute {
        /// The runtime's name.
        name: String,
        /// The configured path.
        path: PathBuf,
    },
    /// The interpreter could not be inspected or started.
    #[error("runtime interpreter {}", path.display())]
    Io {
        /// The interpreter.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The interpreter did not answer in time.
    #[error("runtime interpreter {} did not answer within {}s", path.display(), PROBE_TIMEOUT.as_secs())]
    Timeout {
        /// The interpreter.
        path: PathBuf,
    },
    /// It answered neither the Python nor the Ruby probe.
    #[error("runtime interpreter {} is neither python nor ruby: {detail}", path.display())]
    Unknown {
        /// The interpreter.
        path: PathBuf,
        /// What it said (shortened), to help the operator.
        detail: String,
    },
    /// It answered the probe of `family`, but not in the expected shape.
    #[error("runtime interpreter {} ({}) gave an unexpected answer: {detail}", path.display(), family.as_str())]
    BadAnswer {
        /// The interpreter.
        path: PathBuf,
        /// Its family.
        family: Family,
        /// What it said (shortened).
        detail: String,
    },
}

impl Error {
    /// Whether the client is to blame: never, a runtime is the operator's.
    pub fn is_client(&self) -> bool {
        false
    }
}

/// Identity of the resolved interpreter file: a replaced or updated binary
/// changes at least one of these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
}

/// A named interpreter of a known family.
///
/// Clones share the ABI cache. [`Runtime::abi`] is safe to call concurrently;
/// two callers may both probe after a change, and both get the new answer.
#[derive(Clone, Debug)]
pub struct Runtime {
    /// The operator's name for it (`py311`), part of artifact names.
    pub name: String,
    /// Absolute path of the interpreter, as configured (symlinks allowed).
    pub interpreter: PathBuf,
    /// Python or Ruby.
    pub family: Family,
    cache: Arc<Mutex<Option<(FileId, Abi)>>>,
}

impl Runtime {
    /// Runs `interpreter` to decide its family (the Python probe first, then the
    /// Ruby one) and primes the ABI cache. Fails clearly when the path is not
    /// absolute, cannot be run, or answers neither probe.
    pub async fn probe(name: &str, interpreter: &Path) -> Result<Runtime, Error> {
        if !interpreter.is_absolute() {
            return Err(Error::NotAbsolute {
                name: name.to_string(),
                path: interpreter.to_path_buf(),
            });
        }
        let before = file_id(interpreter).await?;
        let mut unknown = Vec::new();
        for family in [Family::Python, Family::Ruby] {
            match ask(interpreter, family).await? {
                Answer::Yes(abi) => {
                    let runtime = Runtime {
                        name: name.to_string(),
                        interpreter: interpreter.to_path_buf(),
                        family,
                        cache: Arc::new(Mutex::new(None)),
                    };
                    runtime.remember(before, abi).await?;
                    return Ok(runtime);
                }
                Answer::No(said) => unknown.push(format!("{}: {said}", family.as_str())),
            }
        }
        Err(Error::Unknown {
            path: interpreter.to_path_buf(),
            detail: unknown.join("; "),
        })
    }

    /// The interpreter's ABI: from the cache while the resolved interpreter file
    /// keeps its (device, inode, size, mtime), else probed afresh.
    pub async fn abi(&self) -> Result<Abi, Error> {
        let now = file_id(&self.interpreter).await?;
        if let Some((id, abi)) = self.cache.lock().expect("abi cache lock").as_ref() {
            if *id == now {
                return Ok(abi.clone());
            }
        }
        let abi = match ask(&self.interpreter, self.family).await? {
            Answer::Yes(abi) => abi,
            Answer::No(detail) => {
                return Err(Error::BadAnswer {
                    path: self.interpreter.clone(),
                    family: self.family,
                    detail,
                })
            }
        };
        self.remember(now, abi).await
    }

    /// Caches `abi` for `before` unless the file changed while it was probed.
    async fn remember(&self, before: FileId, abi: Abi) -> Result<Abi, Error> {
        if file_id(&self.interpreter).await? == before {
            *self.cache.lock().expect("abi cache lock") = Some((before, abi.clone()));
        }
        Ok(abi)
    }
}

async fn file_id(path: &Path) -> Result<FileId, Error> {
    // `metadata` follows symlinks: a re-pointed /usr/bin/python3 counts as a change.
    let meta = tokio::fs::metadata(path)
        .await
        .map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(FileId {
        dev: meta.dev(),
        ino: meta.ino(),
        size: meta.size(),
        mtime: (meta.mtime(), meta.mtime_nsec()),
    })
}

enum Answer {
    Yes(Abi),
    /// Not this family; what it said, shortened.
    No(String),
}

async fn ask(interpreter: &Path, family: Family) -> Result<Answer, Error> {
    let mut command = Command::new(interpreter);
    match family {
        Family::Python => command.args(["-I", "-c", PYTHON_PROBE]),
        Family::Ruby => command.args(["--disable-gems", "-e", RUBY_PROBE]),
    };
    command
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("LANG", "C.UTF-8")
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let io = |source| Error::Io {
        path: interpreter.to_path_buf(),
        source,
    };
    let child = command.spawn().map_err(io)?;
    let out = tokio::time::timeout(PROBE_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| Error::Timeout {
            path: interpreter.to_path_buf(),
        })?
        .map_err(io)?;
    let said = |bytes: &[u8]| shorten(&String::from_utf8_lossy(bytes));
    if !out.status.success() || out.stdout.len() > PROBE_MAX_OUTPUT {
        let detail = if out.stderr.is_empty() {
            format!("{} {}", out.status, said(&out.stdout))
        } else {
            said(&out.stderr)
        };
        return Ok(Answer::No(detail));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(match parse_answer(family, &text) {
        Some(abi) => Answer::Yes(abi),
        None => Answer::No(said(&out.stdout)),
    })
}

/// The ABI from a probe's output: exactly one line of `FAMILY FIELD...`, fields
/// of printable ASCII.
fn parse_answer(family: Family, text: &str) -> Option<Abi> {
    let line = text.strip_suffix('\n').unwrap_or(text);
    if line.contains('\n') {
        return None;
    }
    let fields: Vec<&str> = line.split(' ').collect();
    let valid = |f: &&str| !f.is_empty() && f.bytes().all(|b| b.is_ascii_graphic());
    if !fields.iter().all(valid) {
        return None;
    }
    match (family, fields.as_slice()) {
        (Family::Python, ["python", soabi, version]) => Some(Abi(format!("{soabi} {version}"))),
        (Family::Ruby, ["ruby", version, arch, abi_dir]) => {
            let usual = version
                .rsplit_once('.')
                .map(|(minor, _)| format!("{minor}.0"));
            Some(Abi(if usual.as_deref() == Some(*abi_dir) {
                format!("ruby {version} {arch}")
            } else {
                format!("ruby {version} {arch} {abi_dir}")
            }))
        }
        _ => None,
    }
}

fn shorten(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn answers_parse_strictly() {
        let py = parse_answer(
            Family::Python,
            "python cpython-311-x86_64-linux-gnu 3.11.2\n",
        );
        assert_eq!(py, Some(Abi("cpython-311-x86_64-linux-gnu 3.11.2".into())));
        let rb = parse_answer(Family::Ruby, "ruby 3.1.2 x86_64-linux-gnu 3.1.0\n");
        assert_eq!(rb, Some(Abi("ruby 3.1.2 x86_64-linux-gnu".into())));
        let custom = parse_answer(Family::Ruby, "ruby 3.1.2 x86_64-linux 3.1.2");
        assert_eq!(custom, Some(Abi("ruby 3.1.2 x86_64-linux 3.1.2".into())));
        for bad in [
            "python cpython-311 3.11.2\nmore\n",
            "python  3.11.2",
            "ruby 3.1.2 x86_64-linux-gnu 3.1.0",
            "python a b c",
            "",
        ] {
            assert_eq!(parse_answer(Family::Python, bad), None, "{bad:?}");
        }
        assert_eq!(parse_answer(Family::Ruby, "python a b"), None);
    }

    /// A fake interpreter: a shell script that answers the Python probe with
    /// `answer` and counts its runs in `runs`.
    fn fake_python(dir: &Path, answer: &str) -> PathBuf {
        let path = dir.join("python");
        let runs = dir.join("runs");
        let script = format!(
            "#!/bin/sh\necho run >> '{}'\necho '{answer}'\n",
            runs.display()
        );
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn runs(dir: &Path) -> usize {
        std::fs::read_to_string(dir.join("runs"))
            .unwrap_or_default()
            .lines()
            .count()
    }

    #[tokio::test]
    async fn abi_is_cached_until_the_interpreter_file_changes() {
        let tmp = tempfile::tempdir().unwrap();
        let path = fake_python(tmp.path(), "python cpython-399-fake 3.99.0");
        let rt = Runtime::probe("fake", &path).await.unwrap();
        assert_eq!(rt.family, Family::Python);
        assert_eq!(runs(tmp.path()), 1);
        for _ in 0..3 {
            assert_eq!(rt.abi().await.unwrap().0, "cpython-399-fake 3.99.0");
        }
        assert_eq!(runs(tmp.path()), 1, "answered from the cache");

        // Replaced by a new build: a new inode, size and mtime.
        let new = tmp.path().join("python.new");
        std::fs::write(
            &new,
            format!(
                "#!/bin/sh\necho run >> '{}'\necho 'python cpython-399-fake 3.99.1'\n",
                tmp.path().join("runs").display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&new, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::rename(&new, &path).unwrap();
        assert_eq!(rt.clone().abi().await.unwrap().0, "cpython-399-fake 3.99.1");
        assert_eq!(rt.abi().await.unwrap().0, "cpython-399-fake 3.99.1");
        assert_eq!(runs(tmp.path()), 2, "probed once after the change");
    }

    #[tokio::test]
    async fn neither_python_nor_ruby_is_refused_clearly() {
        let tmp = tempfile::tempdir().unwrap();
        let path = fake_python(tmp.path(), "hello");
        let err = Runtime::probe("odd", &path).await.unwrap_err();
        assert!(matches!(err, Error::Unknown { .. }), "{err}");
        assert!(err.to_string().contains("neither python nor ruby"), "{err}");
        let err = Runtime::probe("rel", Path::new("python3"))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::NotAbsolute { .. }), "{err}");
        let missing = tmp.path().join("missing");
        let err = Runtime::probe("gone", &missing).await.unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err}");
        assert!(!err.is_client());
    }
}
