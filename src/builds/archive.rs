//! The deterministic gzip tar of a build's install directory: the same tree
//! gives the same bytes whoever built it, when, and with which umask. Owns the
//! archive format only; where the archive goes (temp file, rename, artifact
//! name) is the caller's. Blocking: call it from `spawn_blocking`.

use flate2::write::GzEncoder;
use flate2::{Compression, GzBuilder};
use sha2::{Digest, Sha256};
use std::fs::{self, File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The modification time of every entry: 1980-01-01T00:00:00Z, the earliest
/// time zip can store, so a tree re-packed into a wheel keeps its dates valid.
pub const MTIME: u64 = 315_532_800;

/// Blocking. Writes a deterministic gzip tar of the *contents* of `dir` to `out`
/// (created or truncated, then synced) and returns the sha256 (lower-case hex)
/// of the bytes written.
///
/// Entries are walked depth-first with each directory's names sorted by their
/// bytes; every header has mtime [`MTIME`], uid/gid 0 and empty user/group
/// names; directories are 0755, files 0755 when any execute bit is set and
/// 0644 otherwise, symlinks 0777 and kept as symlinks with their target as
/// read (never followed, even when it points outside `dir`). Hard links are
/// stored as separate copies. The gzip header has mtime 0 and no file name.
/// Devices, FIFOs and sockets are an `InvalidData` error, as is a file that
/// changes size while it is read. Same tree and same package-cache build → same
/// bytes (another compressor version may compress differently).
///
/// Entries are opened with `O_NOFOLLOW`, so a file swapped for a symlink
/// after the walk saw it fails instead of archiving what the link points to;
/// still, `dir` should be quiescent (no build process left).
pub fn write_tgz(dir: &Path, out: &Path) -> io::Result<String> {
    let file = File::create(out)?;
    let hashing = HashingWriter {
        inner: file,
        hasher: Sha256::new(),
    };
    let gz = GzBuilder::new()
        .mtime(0)
        .write(hashing, Compression::default());
    let mut builder = tar::Builder::new(gz);
    builder.follow_symlinks(false);
    append_tree(&mut builder, dir)?;
    let gz: GzEncoder<HashingWriter> = builder.into_inner()?;
    let mut hashing = gz.finish()?;
    hashing.flush()?;
    hashing.inner.sync_all()?;
    Ok(hex::encode(hashing.hasher.finalize()))
}

/// Walks `root` depth-first without recursion (an untrusted tree may be deep).
fn append_tree<W: Write>(builder: &mut tar::Builder<W>, root: &Path) -> io::Result<()> {
    // (relative path, absolute path) still to visit, in reverse order.
    let mut stack: Vec<(PathBuf, PathBuf)> = sorted_children(root, Path::new(""))?;
    stack.reverse();
    while let Some((rel, abs)) = stack.pop() {
        let meta = fs::symlink_metadata(&abs)?;
        let kind = meta.file_type();
        if kind.is_dir() {
            let mut header = header(tar::EntryType::Directory, 0o755, 0);
            builder.append_data(&mut header, &rel, io::empty())?;
            let mut children = sorted_children(&abs, &rel)?;
            children.reverse();
            stack.extend(children);
        } else if kind.is_symlink() {
            let target = fs::read_link(&abs)?;
            let mut header = header(tar::EntryType::Symlink, 0o777, 0);
            builder.append_link(&mut header, &rel, &target)?;
        } else if kind.is_file() {
            append_file(builder, &rel, &abs, &meta)?;
        } else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: a {} cannot be archived (only files, directories and symlinks)",
                    abs.display(),
                    special_name(&meta)
                ),
            ));
        }
    }
    Ok(())
}

fn append_file<W: Write>(
    builder: &mut tar::Builder<W>,
    rel: &Path,
    abs: &Path,
    walked: &Metadata,
) -> io::Result<()> {
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags((rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits() as i32)
        .open(abs)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: changed into a {}", abs.display(), special_name(&meta)),
        ));
    }
    let len = meta.len();
    let executable = meta.permissions().mode() & 0o111 != 0;
    // The walk's mode decides too, so a file cannot gain +x between the two looks.
    let walked_executable = walked.permissions().mode() & 0o111 != 0;
    let mode = if executable || walked_executable {
        0o755
    } else {
        0o644
    };
    let mut header = header(tar::EntryType::Regular, mode, len);
    let exact = Exact {
        inner: file.take(len),
        left: len,
        path: abs,
    };
    builder.append_data(&mut header, rel, exact)
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_mtime(MTIME);
    header.set_uid(0);
    header.set_gid(0);
    // new_gnu() leaves user and group names empty (all zero bytes).
    header
}

/// `dir`'s entries as (path under `rel`, absolute path), sorted by name bytes.
fn sorted_children(dir: &Path, rel: &Path) -> io::Result<Vec<(PathBuf, PathBuf)>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir)? {
        names.push(entry?.file_name());
    }
    names.sort_by(|a, b| {
        use std::os::unix::ffi::OsStrExt;
        a.as_bytes().cmp(b.as_bytes())
    });
    Ok(names
        .into_iter()
        .map(|name| (rel.join(&name), dir.join(&name)))
        .collect())
}

fn special_name(meta: &Metadata) -> &'static str {
    let kind = meta.file_type();
    if kind.is_fifo() {
        "fifo"
    } else if kind.is_socket() {
        "socket"
    } else if kind.is_block_device() || kind.is_char_device() {
        "device"
    } else if kind.is_symlink() {
        "symlink"
    } else if kind.is_dir() {
        "directory"
    } else {
        "special file"
    }
}

/// Reads exactly `left` bytes or fails: the header already promised the size.
struct Exact<'a, R> {
    inner: R,
    left: u64,
    path: &'a Path,
}

impl<R: Read> Read for Exact<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && self.left > 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: shrank while being archived", self.path.display()),
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

struct HashingWriter {
    inner: File,
    hasher: Sha256,
}

impl Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tree(root: &Path, file_mode: u32, exec_mode: u32) {
        fs::create_dir_all(root.join("lib/pkg")).unwrap();
        fs::create_dir_all(root.join("bin")).unwrap();
        fs::create_dir_all(root.join("empty")).unwrap();
        fs::write(root.join("lib/pkg/__init__.py"), "VALUE = 42\n").unwrap();
        fs::write(root.join("lib/pkg/B.txt"), "upper\n").unwrap();
        fs::write(root.join("lib/pkg/a.txt"), "lower\n").unwrap();
        fs::write(root.join("bin/tool"), "#!/bin/sh\necho hi\n").unwrap();
        let long = "x".repeat(150);
        fs::write(root.join("lib").join(&long), "long name\n").unwrap();
        fs::set_permissions(
            root.join("lib/pkg/a.txt"),
            fs::Permissions::from_mode(file_mode),
        )
        .unwrap();
        fs::set_permissions(root.join("bin/tool"), fs::Permissions::from_mode(exec_mode)).unwrap();
        symlink("/etc/passwd", root.join("outside")).unwrap();
        symlink("pkg/a.txt", root.join("lib/inside")).unwrap();
    }

    fn entries(archive: &Path) -> Vec<(String, tar::EntryType, u32, u64, u64, String)> {
        let file = File::open(archive).unwrap();
        let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
        tar.entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                let link = e
                    .link_name()
                    .unwrap()
                    .map(|l| l.display().to_string())
                    .unwrap_or_default();
                (
                    e.path().unwrap().display().to_string(),
                    h.entry_type(),
                    h.mode().unwrap(),
                    h.mtime().unwrap(),
                    h.uid().unwrap() + h.gid().unwrap(),
                    link,
                )
            })
            .collect()
    }

    #[test]
    fn same_tree_same_bytes_whatever_the_times_modes_and_owners() {
        let tmp = tempfile::tempdir().unwrap();
        let (one, two) = (tmp.path().join("one"), tmp.path().join("two"));
        tree(&one, 0o644, 0o755);
        tree(&two, 0o600, 0o700);
        // Different times and (when root) owners on the second copy.
        let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        for path in ["lib/pkg/a.txt", "bin/tool", "lib/pkg"] {
            File::options()
                .write(true)
                .open(two.join(path))
                .or_else(|_| File::open(two.join(path)))
                .unwrap()
                .set_modified(old)
                .unwrap();
        }
        if rustix::process::geteuid().is_root() {
            for path in ["lib/pkg/a.txt", "bin", "lib/pkg/__init__.py"] {
                std::os::unix::fs::chown(two.join(path), Some(12345), Some(54321)).unwrap();
            }
        }
        let (a, b) = (tmp.path().join("a.tgz"), tmp.path().join("b.tgz"));
        let sha_a = write_tgz(&one, &a).unwrap();
        let sha_b = write_tgz(&two, &b).unwrap();
        assert_eq!(fs::read(&a).unwrap(), fs::read(&b).unwrap());
        assert_eq!(sha_a, sha_b);
        assert_eq!(sha_a, hex::encode(Sha256::digest(fs::read(&a).unwrap())));
        let bytes = fs::read(&a).unwrap();
        assert_eq!(&bytes[4..8], &[0, 0, 0, 0], "gzip mtime 0");
        assert_eq!(bytes[3] & 0x08, 0, "no file name in the gzip header");

        let list = entries(&a);
        let names: Vec<&str> = list.iter().map(|e| e.0.as_str()).collect();
        let long = format!("lib/{}", "x".repeat(150));
        assert_eq!(
            names,
            vec![
                "bin",
                "bin/tool",
                "empty",
                "lib",
                "lib/inside",
                "lib/pkg",
                "lib/pkg/B.txt",
                "lib/pkg/__init__.py",
                "lib/pkg/a.txt",
                &long,
                "outside",
            ]
        );
        for (name, kind, mode, mtime, ids, link) in &list {
            assert_eq!((*mtime, *ids), (MTIME, 0), "{name}");
            let expected = match name.as_str() {
                "bin/tool" => 0o755,
                _ if kind.is_dir() => 0o755,
                _ if kind.is_symlink() => 0o777,
                _ => 0o644,
            };
            assert_eq!(*mode, expected, "{name}");
            match name.as_str() {
                "outside" => assert_eq!((kind.is_symlink(), link.as_str()), (true, "/etc/passwd")),
                "lib/inside" => assert_eq!((kind.is_symlink(), link.as_str()), (true, "pkg/a.txt")),
                _ => assert!(!kind.is_symlink()),
            }
        }
    }

    #[test]
    fn fifos_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("tree");
        fs::create_dir_all(root.join("d")).unwrap();
        fs::write(root.join("d/file"), "x").unwrap();
        nix::unistd::mkfifo(
            &root.join("d/pipe"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        let err = write_tgz(&root, &tmp.path().join("out.tgz")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("fifo"), "{err}");
    }

    #[test]
    fn an_empty_directory_is_an_empty_archive() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("tree");
        fs::create_dir(&root).unwrap();
        let out = tmp.path().join("out.tgz");
        write_tgz(&root, &out).unwrap();
        assert!(entries(&out).is_empty());
    }
}
