//! Entry names and SHA1s as clients give them, and the client's side of a
//! hand-in: a fresh random name, created exclusively.

use super::Error;
use sha1::{Digest, Sha1};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Longest entry name (a file name's limit on Linux).
pub const MAX_ENTRY_LEN: usize = 255;

/// Checks an entry name: `[A-Za-z0-9._-]{1,255}`, no leading dot. So it is
/// one path component, never `.`, `..` or hidden.
pub(super) fn check_entry(entry: &str) -> Result<(), Error> {
    let bad = |reason| {
        Err(Error::BadName {
            name: entry.chars().take(MAX_ENTRY_LEN + 1).collect(),
            reason,
        })
    };
    if entry.is_empty() {
        return bad("empty");
    }
    if entry.len() > MAX_ENTRY_LEN {
        return bad("longer than 255 bytes");
    }
    if entry.starts_with('.') {
        return bad("starts with a dot");
    }
    if !entry
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return bad("only letters, digits, '.', '_' and '-' are allowed");
    }
    Ok(())
}

/// Checks a SHA1 as requests name it: 40 lowercase hex digits.
pub(super) fn check_sha1(sha1: &str) -> Result<(), Error> {
    if sha1.len() == 40 && sha1.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(())
    } else {
        Err(Error::BadSha1 {
            sha1: sha1.chars().take(64).collect(),
        })
    }
}

/// 128 random bits as 32 lowercase hex digits, from the OS.
pub(super) fn random_hex() -> io::Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| io::Error::other(format!("getrandom: {e}")))?;
    Ok(hex::encode(bytes))
}

/// A fresh entry name for a client: 32 random hex digits, a valid entry name
/// that tells nothing about the content and that nobody can guess.
pub fn random_entry_name() -> io::Result<String> {
    random_hex()
}

/// What [`hand_in`] put into the inbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandedIn {
    /// The entry name to put in the build request.
    pub entry: String,
    /// SHA1 of the bytes copied, lowercase hex.
    pub sha1: String,
    /// Bytes copied.
    pub size: u64,
}

/// The client's side: copies `file` into `public_dir` under a fresh random
/// name, created with `O_EXCL` (never writing into a file or through a symlink
/// someone else placed there; another name is drawn if the name exists) and mode 0644 so
/// that a server without root can read it. Returns the name and the SHA1 of
/// the bytes copied. Blocking. The client may remove the entry until the
/// server has taken it; the server removes stale ones.
pub fn hand_in(public_dir: &Path, file: &Path) -> io::Result<HandedIn> {
    let mut input = File::open(file)?;
    let (entry, mut output) = loop {
        let entry = random_entry_name()?;
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(public_dir.join(&entry))
        {
            Ok(output) => break (entry, output),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    };
    let mut hasher = Sha1::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    let copied = loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => break Err(e),
        };
        hasher.update(&buf[..n]);
        size += n as u64;
        if let Err(e) = output.write_all(&buf[..n]) {
            break Err(e);
        }
    };
    // umask may have narrowed 0644; the server must be able to read it.
    let copied =
        copied.and_then(|()| output.set_permissions(std::fs::Permissions::from_mode(0o644)));
    if let Err(e) = copied {
        let _ = std::fs::remove_file(public_dir.join(&entry));
        return Err(e);
    }
    Ok(HandedIn {
        entry,
        sha1: hex::encode(hasher.finalize()),
        size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names_are_one_plain_component() {
        for good in ["a", "A-b_c.9", "0123abcd.gem", "six-1.16.0.tar.gz", "x..y"] {
            assert!(check_entry(good).is_ok(), "{good}");
        }
        let long_ok = "a".repeat(255);
        assert!(check_entry(&long_ok).is_ok());
        let long = "a".repeat(256);
        let cases = [
            "",
            ".",
            "..",
            ".hidden",
            "../x",
            "a/b",
            "/abs",
            "a b",
            "a\0b",
            "a\nb",
            "é",
            "a:b",
            "~x",
            long.as_str(),
        ];
        for bad in cases {
            let err = check_entry(bad).expect_err(bad);
            assert!(matches!(err, Error::BadName { .. }), "{bad}: {err}");
            assert!(err.is_client());
        }
    }

    #[test]
    fn sha1s_are_40_lowercase_hex_digits() {
        assert!(check_sha1("da39a3ee5e6b4b0d3255bfef95601890afd80709").is_ok());
        for bad in [
            "",
            "da39a3ee5e6b4b0d3255bfef95601890afd8070",
            "da39a3ee5e6b4b0d3255bfef95601890afd807090",
            "DA39A3EE5E6B4B0D3255BFEF95601890AFD80709",
            "da39a3ee5e6b4b0d3255bfef95601890afd8070g",
            "../39a3ee5e6b4b0d3255bfef95601890afd80709",
        ] {
            let err = check_sha1(bad).expect_err(bad);
            assert!(matches!(err, Error::BadSha1 { .. }) && err.is_client());
        }
    }

    #[test]
    fn random_names_are_valid_and_distinct() {
        let a = random_entry_name().unwrap();
        let b = random_entry_name().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(check_entry(&a).is_ok());
    }
}
