//! Reading the one member of an untrusted sdist that the fetching stage needs:
//! its top-level `pyproject.toml`. Nothing is unpacked; sizes, member counts
//! and the expanded length are bounded. `.tar.gz` via tar/flate2, `.zip` via
//! its central directory (stored or deflated members, no zip64). Blocking.

use super::Error;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

/// Largest pyproject.toml read.
const MAX_PYPROJECT: u64 = 1024 * 1024;
/// Most members looked at.
const MAX_MEMBERS: usize = 100_000;
/// Most bytes a `.tar.gz` may expand to while looking (a gzip bomb stops here).
const MAX_EXPANDED: u64 = 2 * 1024 * 1024 * 1024;

/// The sdist's top-level `pyproject.toml` (`TOP/pyproject.toml`, or
/// `pyproject.toml` in a flat archive), `None` when it has none. The format
/// is told by the file's first bytes, not its name.
pub(super) fn pyproject(path: &Path) -> Result<Option<String>, Error> {
    let bad = |reason: String| Error::BadSource {
        path: path.to_path_buf(),
        reason,
    };
    let mut file = File::open(path).map_err(Error::io(path))?;
    let mut magic = [0u8; 4];
    let n = read_up_to(&mut file, &mut magic).map_err(Error::io(path))?;
    file.rewind().map_err(Error::io(path))?;
    let found = match &magic[..n] {
        [0x1f, 0x8b, ..] => from_tar_gz(file),
        [b'P', b'K', 3, 4] => from_zip(file),
        _ => return Err(bad("not a .tar.gz or .zip sdist".into())),
    };
    let found = found.map_err(|e| bad(e.to_string()))?;
    found
        .map(|bytes| {
            String::from_utf8(bytes).map_err(|_| bad("pyproject.toml is not UTF-8".into()))
        })
        .transpose()
}

/// Whether a member path is the top-level pyproject.toml: `pyproject.toml`
/// or `TOP/pyproject.toml` (empty and `.` components ignored, `..` never).
fn is_top_pyproject(path: &[u8]) -> bool {
    let parts: Vec<&[u8]> = path
        .split(|b| *b == b'/')
        .filter(|p| !p.is_empty() && *p != b".")
        .collect();
    match parts.as_slice() {
        [name] => *name == b"pyproject.toml",
        [top, name] => *name == b"pyproject.toml" && *top != b"..",
        _ => false,
    }
}

fn from_tar_gz(file: File) -> io::Result<Option<Vec<u8>>> {
    let gz = flate2::read::GzDecoder::new(BufReader::new(file));
    let mut archive = tar::Archive::new(Capped {
        inner: gz,
        left: MAX_EXPANDED,
    });
    for entry in archive.entries()?.take(MAX_MEMBERS) {
        let entry = entry?;
        if !is_top_pyproject(&entry.path_bytes()) || !entry.header().entry_type().is_file() {
            continue;
        }
        return read_member(entry).map(Some);
    }
    Ok(None)
}

/// Reads a member of at most [`MAX_PYPROJECT`] bytes.
fn read_member(reader: impl Read) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    reader.take(MAX_PYPROJECT + 1).read_to_end(&mut out)?;
    if out.len() as u64 > MAX_PYPROJECT {
        return Err(invalid("pyproject.toml is larger than 1 MiB"));
    }
    Ok(out)
}

fn from_zip(mut file: File) -> io::Result<Option<Vec<u8>>> {
    let len = file.metadata()?.len();
    // End of central directory: 22 bytes plus a comment of up to 64 KiB.
    let tail_len = len.min(22 + 65_535);
    file.seek(SeekFrom::Start(len - tail_len))?;
    let mut tail = vec![0u8; tail_len as usize];
    file.read_exact(&mut tail)?;
    let eocd = (0..tail.len().saturating_sub(21))
        .rev()
        .find(|&i| tail[i..i + 4] == [b'P', b'K', 5, 6])
        .ok_or_else(|| invalid("zip: no end of central directory"))?;
    let eocd = &tail[eocd..];
    let count = u16_at(eocd, 10) as usize;
    let cd_size = u32_at(eocd, 12) as u64;
    let cd_offset = u32_at(eocd, 16) as u64;
    if count == 0xffff || cd_offset == 0xffff_ffff || cd_size == 0xffff_ffff {
        return Err(invalid("zip64 sdists are not supported"));
    }
    if cd_offset.checked_add(cd_size).is_none_or(|end| end > len) || cd_size > 64 << 20 {
        return Err(invalid("zip: central directory out of bounds"));
    }
    file.seek(SeekFrom::Start(cd_offset))?;
    let mut cd = vec![0u8; cd_size as usize];
    file.read_exact(&mut cd)?;
    let mut at = 0usize;
    for _ in 0..count.min(MAX_MEMBERS) {
        let header = cd
            .get(at..at + 46)
            .filter(|h| h[..4] == [b'P', b'K', 1, 2])
            .ok_or_else(|| invalid("zip: bad central directory entry"))?;
        let flags = u16_at(header, 8);
        let method = u16_at(header, 10);
        let compressed = u32_at(header, 20) as u64;
        let name_len = u16_at(header, 28) as usize;
        let extra_len = u16_at(header, 30) as usize;
        let comment_len = u16_at(header, 32) as usize;
        let local = u32_at(header, 42) as u64;
        let name = cd
            .get(at + 46..at + 46 + name_len)
            .ok_or_else(|| invalid("zip: bad central directory entry"))?;
        at += 46 + name_len + extra_len + comment_len;
        if !is_top_pyproject(name) || name.ends_with(b"/") {
            continue;
        }
        if flags & 1 != 0 {
            return Err(invalid("zip: pyproject.toml is encrypted"));
        }
        if compressed > MAX_PYPROJECT * 16 {
            return Err(invalid("pyproject.toml is larger than 1 MiB"));
        }
        file.seek(SeekFrom::Start(local))?;
        let mut local_header = [0u8; 30];
        file.read_exact(&mut local_header)?;
        if local_header[..4] != [b'P', b'K', 3, 4] {
            return Err(invalid("zip: bad local header"));
        }
        let skip = u16_at(&local_header, 26) as i64 + u16_at(&local_header, 28) as i64;
        file.seek(SeekFrom::Current(skip))?;
        let data = (&mut file).take(compressed);
        return match method {
            0 => read_member(data).map(Some),
            8 => read_member(flate2::read::DeflateDecoder::new(data)).map(Some),
            other => Err(invalid(&format!(
                "zip: compression method {other} not supported"
            ))),
        };
    }
    Ok(None)
}

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_string())
}

fn read_up_to(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// Fails once more than `left` bytes were read.
struct Capped<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.left = self
            .left
            .checked_sub(n as u64)
            .ok_or_else(|| invalid("sdist expands to more than 2 GiB"))?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn tar_gz(path: &Path, members: &[(&str, &[u8])]) {
        let file = File::create(path).unwrap();
        let gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
        let mut tar = tar::Builder::new(gz);
        for (name, data) in members {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            tar.append_data(&mut header, name, *data).unwrap();
        }
        tar.into_inner().unwrap().finish().unwrap();
    }

    /// A minimal zip with stored or deflated members.
    fn zip(path: &Path, members: &[(&str, &[u8], bool)]) {
        let mut out = Vec::new();
        let mut central = Vec::new();
        for (name, data, deflate) in members {
            let body = if *deflate {
                let mut e =
                    flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            } else {
                data.to_vec()
            };
            let method: u16 = if *deflate { 8 } else { 0 };
            let offset = out.len() as u32;
            let mut local = vec![b'P', b'K', 3, 4, 20, 0, 0, 0];
            local.extend(method.to_le_bytes());
            local.extend([0u8; 8]); // time, date, crc (unchecked here)
            local.extend((body.len() as u32).to_le_bytes());
            local.extend((data.len() as u32).to_le_bytes());
            local.extend((name.len() as u16).to_le_bytes());
            local.extend(0u16.to_le_bytes());
            local.extend(name.as_bytes());
            out.extend(local);
            out.extend(&body);
            let mut entry = vec![b'P', b'K', 1, 2, 20, 0, 20, 0, 0, 0];
            entry.extend(method.to_le_bytes());
            entry.extend([0u8; 8]);
            entry.extend((body.len() as u32).to_le_bytes());
            entry.extend((data.len() as u32).to_le_bytes());
            entry.extend((name.len() as u16).to_le_bytes());
            entry.extend([0u8; 12]); // extra, comment, disk, internal attrs, external attrs (part)
            entry.extend(offset.to_le_bytes());
            assert_eq!(entry.len(), 46);
            entry.extend(name.as_bytes());
            central.extend(entry);
        }
        let cd_offset = out.len() as u32;
        out.extend(&central);
        out.extend([b'P', b'K', 5, 6, 0, 0, 0, 0]);
        out.extend((members.len() as u16).to_le_bytes());
        out.extend((members.len() as u16).to_le_bytes());
        out.extend((central.len() as u32).to_le_bytes());
        out.extend(cd_offset.to_le_bytes());
        out.extend(0u16.to_le_bytes());
        std::fs::write(path, out).unwrap();
    }

    const TOML: &[u8] = b"[build-system]\nrequires = ['flit_core']\n";

    #[test]
    fn the_top_level_pyproject_of_a_tar_gz() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("x.tar.gz");
        tar_gz(
            &path,
            &[
                ("x-1.0/PKG-INFO", b"Name: x\n"),
                ("x-1.0/sub/pyproject.toml", b"not this"),
                ("x-1.0/pyproject.toml", TOML),
            ],
        );
        assert_eq!(pyproject(&path).unwrap().unwrap().as_bytes(), TOML);
        tar_gz(&path, &[("x-1.0/setup.py", b"")]);
        assert_eq!(pyproject(&path).unwrap(), None);
        tar_gz(&path, &[("./pyproject.toml", TOML)]);
        assert!(pyproject(&path).unwrap().is_some());
        let big = vec![b'#'; MAX_PYPROJECT as usize + 1];
        tar_gz(&path, &[("x-1.0/pyproject.toml", &big)]);
        assert!(pyproject(&path).unwrap_err().to_string().contains("1 MiB"));
    }

    #[test]
    fn the_top_level_pyproject_of_a_zip() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("x.zip");
        zip(
            &path,
            &[
                ("x-1.0/a/pyproject.toml", b"no", false),
                ("x-1.0/pyproject.toml", TOML, true),
            ],
        );
        assert_eq!(pyproject(&path).unwrap().unwrap().as_bytes(), TOML);
        zip(&path, &[("x-1.0/pyproject.toml", TOML, false)]);
        assert_eq!(pyproject(&path).unwrap().unwrap().as_bytes(), TOML);
        zip(&path, &[("x-1.0/setup.py", b"", false)]);
        assert_eq!(pyproject(&path).unwrap(), None);
    }

    #[test]
    fn other_files_are_bad_sources() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("x.tar.gz");
        std::fs::write(&path, b"<html>not found</html>").unwrap();
        let err = pyproject(&path).unwrap_err();
        assert!(
            err.is_client() && err.to_string().contains("not a .tar.gz"),
            "{err}"
        );
        std::fs::write(&path, [0x1f, 0x8b, 8, 0, 0, 0]).unwrap();
        assert!(pyproject(&path).unwrap_err().is_client());
        std::fs::write(&path, b"PK\x03\x04garbage").unwrap();
        assert!(pyproject(&path).unwrap_err().is_client());
    }

    #[test]
    fn member_paths() {
        assert!(is_top_pyproject(b"pyproject.toml"));
        assert!(is_top_pyproject(b"x-1.0/pyproject.toml"));
        assert!(is_top_pyproject(b"./x-1.0//pyproject.toml"));
        assert!(!is_top_pyproject(b"../pyproject.toml"));
        assert!(!is_top_pyproject(b"x/y/pyproject.toml"));
        assert!(!is_top_pyproject(b"x/pyproject.toml.bak"));
    }
}
