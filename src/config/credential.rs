//! `Credential`: the operator's secret for one private upstream — the
//! `user:password` of a source URL, or the bearer token or `user:password` in
//! a `--mirror-auth NAME=FILE` file, read at start and again on SIGHUP.
//!
//! It owns the secret and nothing else: which origin it is sent to is the
//! upstream's business. The secret never appears in `Debug`, in an error or
//! in a log line; errors name the file, never its content.

use base64::Engine;
use http::HeaderValue;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// Why a credential could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file holds nothing usable (empty, several lines, or bytes a header cannot carry).
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, without quoting the secret.
        reason: &'static str,
    },
}

/// An `Authorization` value for one mount's (or one source's) upstream.
/// Clones share the value, so a reload is seen by every source that holds it.
/// Two credentials are equal only when they are the same one.
#[derive(Clone)]
pub struct Credential(Arc<Inner>);

struct Inner {
    /// The mount (or `--source`) it belongs to, for log lines.
    label: String,
    /// Where it is read from; `None` for the userinfo of a URL (never reloaded).
    file: Option<PathBuf>,
    value: RwLock<HeaderValue>,
}

impl Credential {
    /// `Basic` with `user` and `password` (the userinfo of a URL, decoded).
    pub fn basic(label: &str, user: &str, password: &str) -> Result<Credential, &'static str> {
        let value =
            basic_value(user, password).ok_or("the user or password holds control characters")?;
        Ok(Credential::new(label, None, value))
    }

    /// Reads `file`: `user:password` (sent as `Basic`) or a bearer token, on
    /// one line. Blocking.
    pub fn load(label: &str, file: &Path) -> Result<Credential, Error> {
        let value = read_value(file)?;
        Ok(Credential::new(label, Some(file.to_path_buf()), value))
    }

    fn new(label: &str, file: Option<PathBuf>, value: HeaderValue) -> Credential {
        Credential(Arc::new(Inner {
            label: label.to_string(),
            file,
            value: RwLock::new(value),
        }))
    }

    /// The mount (or source) it belongs to.
    pub fn label(&self) -> &str {
        &self.0.label
    }

    /// The file it is read from, if any.
    pub fn file(&self) -> Option<&Path> {
        self.0.file.as_deref()
    }

    /// The `Authorization` header value (marked sensitive).
    pub fn header(&self) -> HeaderValue {
        self.0
            .value
            .read()
            .expect("credential lock is never poisoned")
            .clone()
    }

    /// Reads the file again; on failure the value in use stays. A credential
    /// from a URL has no file: nothing to do. Blocking.
    pub fn reload(&self) -> Result<(), Error> {
        let Some(file) = &self.0.file else {
            return Ok(());
        };
        let fresh = read_value(file)?;
        *self
            .0
            .value
            .write()
            .expect("credential lock is never poisoned") = fresh;
        Ok(())
    }
}

impl PartialEq for Credential {
    fn eq(&self, other: &Credential) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Credential {}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("label", &self.0.label)
            .field("file", &self.0.file)
            .field("value", &"<redacted>")
            .finish()
    }
}

impl super::Config {
    /// Every credential read from a file (`--mirror-auth`), once each: what
    /// SIGHUP reloads.
    pub fn credentials(&self) -> Vec<Credential> {
        let mut found: Vec<Credential> = Vec::new();
        let sources = self.upstream.sources.iter().chain(
            self.mounts
                .iter()
                .flat_map(|m| m.sources.iter().chain(&m.files_hosts)),
        );
        for credential in sources.filter_map(|s| s.credential.as_ref()) {
            if credential.file().is_some() && !found.contains(credential) {
                found.push(credential.clone());
            }
        }
        found
    }
}

fn read_value(path: &Path) -> Result<HeaderValue, Error> {
    let invalid = |reason| Error::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    let raw = std::fs::read(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let text = std::str::from_utf8(&raw).map_err(|_| invalid("not UTF-8 text"))?;
    let secret = text.trim();
    if secret.is_empty() {
        return Err(invalid("empty: expected a token or user:password"));
    }
    if secret.contains(['\n', '\r']) {
        return Err(invalid(
            "more than one line: expected a token or user:password",
        ));
    }
    let value = match secret.split_once(':') {
        Some((user, password)) => basic_value(user, password),
        None => {
            let mut v = HeaderValue::from_str(&format!("Bearer {secret}")).ok();
            if let Some(v) = &mut v {
                v.set_sensitive(true);
            }
            v
        }
    };
    value.ok_or_else(|| invalid("holds characters a header cannot carry"))
}

fn basic_value(user: &str, password: &str) -> Option<HeaderValue> {
    if user.chars().chain(password.chars()).any(char::is_control) {
        return None;
    }
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let mut value = HeaderValue::from_str(&format!("Basic {encoded}")).ok()?;
    value.set_sensitive(true);
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_hold_a_token_or_user_and_password() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("auth");
        std::fs::write(&file, "s3cr3t-token\n").unwrap();
        let c = Credential::load("pypi", &file).unwrap();
        assert_eq!(c.header(), "Bearer s3cr3t-token");
        assert!(c.header().is_sensitive());
        std::fs::write(&file, "alice:pa:ss\n").unwrap();
        c.reload().unwrap();
        // base64("alice:pa:ss")
        assert_eq!(c.header(), "Basic YWxpY2U6cGE6c3M=");
        for bad in ["", "\n\n", "SEKRIT\nb", "SEKRIT\u{7f}x"] {
            std::fs::write(&file, bad).unwrap();
            let err = c.reload().unwrap_err().to_string();
            assert!(!err.contains("SEKRIT"), "{err}");
        }
        assert_eq!(
            c.header(),
            "Basic YWxpY2U6cGE6c3M=",
            "a failed reload keeps the value"
        );
        assert!(Credential::load("x", &dir.path().join("none")).is_err());
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let c = Credential::basic("pypi", "alice", "hunter2").unwrap();
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("YWxp"),
            "{shown}"
        );
        assert_eq!(c, c.clone());
        assert_ne!(c, Credential::basic("pypi", "alice", "hunter2").unwrap());
    }
}
