//! Go's `h1:` hashes (golang.org/x/mod/sumdb/dirhash Hash1): a SHA-256 over
//! the text `"{sha256 hex}  {name}\n"` of every file in a module zip (names
//! as stored, with their `module@version/` prefix), lines sorted by name,
//! then base64. The `/go.mod` hash is the same over one file named `go.mod`.
//! Computed over a finished file: the caller runs it off the async runtime.

use super::Digest;
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::io::{Read, Seek};

/// Why a module zip's hash could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The zip is not a readable zip archive.
    #[error("module zip is unreadable")]
    Zip(#[source] zip::result::ZipError),
    /// Reading a file inside the zip failed (bad deflate data, I/O).
    #[error("module zip entry is unreadable")]
    Entry(#[source] std::io::Error),
    /// A file name holds a newline, which go refuses to hash.
    #[error("module zip has a file name with a newline")]
    Newline,
    /// The zip unpacks to more than [`MAX_UNZIPPED`] bytes.
    #[error("module zip unpacks to more than {MAX_UNZIPPED} bytes")]
    TooLarge,
}

/// The most bytes a module zip may unpack to (golang.org/x/mod/zip's
/// `MaxZipFile`): a bound on the work a hostile zip can cause.
pub const MAX_UNZIPPED: u64 = 500 << 20;

/// The `h1:` hash of a module zip, as go computes it for go.sum. Reads the
/// whole archive through `zip`; the caller decides where it comes from (and
/// runs this off the async runtime: it inflates every file).
pub fn of_zip<R: Read + Seek>(zip: R) -> Result<Digest, Error> {
    let mut archive = zip::ZipArchive::new(zip).map_err(Error::Zip)?;
    // Go hashes every name listed, and a duplicated name as its last entry
    // (dirhash.HashZip reads names into a list and files into a map).
    let mut names: Vec<Vec<u8>> = Vec::with_capacity(archive.len());
    let mut last: HashMap<Vec<u8>, usize> = HashMap::with_capacity(archive.len());
    for i in 0..archive.len() {
        let name = archive
            .by_index_raw(i)
            .map_err(Error::Zip)?
            .name_raw()
            .to_vec();
        if name.contains(&b'\n') {
            return Err(Error::Newline);
        }
        last.insert(name.clone(), i);
        names.push(name);
    }
    names.sort();
    let mut summary = Sha256::new();
    let mut budget = MAX_UNZIPPED;
    let mut buf = vec![0u8; 64 * 1024];
    for name in &names {
        let mut file = archive.by_index(last[name]).map_err(Error::Zip)?;
        let mut hash = Sha256::new();
        loop {
            let n = file.read(&mut buf).map_err(Error::Entry)?;
            if n == 0 {
                break;
            }
            budget = budget.checked_sub(n as u64).ok_or(Error::TooLarge)?;
            hash.update(&buf[..n]);
        }
        summary.update(hex::encode(hash.finalize()).as_bytes());
        summary.update(b"  ");
        summary.update(name);
        summary.update(b"\n");
    }
    Ok(Digest::GoH1(summary.finalize().into()))
}

/// The `/go.mod h1:` hash of a go.mod file's bytes.
pub fn of_mod(go_mod: &[u8]) -> Digest {
    of_mod_sha256(&Sha256::digest(go_mod))
}

/// The `/go.mod h1:` hash of a go.mod whose sha256 is `sha256`: the hash
/// covers only that one line, so a streamed body needs no second read.
pub fn of_mod_sha256(sha256: &[u8]) -> Digest {
    let line = format!("{}  go.mod\n", hex::encode(sha256));
    Digest::GoModH1(Sha256::digest(line.as_bytes()).into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD as BASE64;
    use base64::Engine;
    use std::io::{Cursor, Write};
    use zip::write::SimpleFileOptions;

    /// A zip of `files` (name, bytes) with the given compression.
    fn zip_of(files: &[(&str, &[u8])], method: zip::CompressionMethod) -> Vec<u8> {
        let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for (name, data) in files {
            writer
                .start_file(
                    *name,
                    SimpleFileOptions::default().compression_method(method),
                )
                .expect("start file");
            writer.write_all(data).expect("write");
        }
        writer.finish().expect("finish").into_inner()
    }

    /// dirhash.Hash1 written out, the reference this module must agree with.
    fn reference_h1(files: &[(&str, &[u8])]) -> String {
        let mut lines: Vec<String> = files
            .iter()
            .map(|(name, data)| format!("{}  {name}\n", hex::encode(Sha256::digest(data))))
            .collect();
        lines.sort_by(|a, b| a[66..].cmp(&b[66..]));
        format!(
            "h1:{}",
            BASE64.encode(Sha256::digest(lines.concat().as_bytes()))
        )
    }

    const FILES: &[(&str, &[u8])] = &[
        ("example.test/world@v1.0.0/world.go", b"package world\n"),
        (
            "example.test/world@v1.0.0/go.mod",
            b"module example.test/world\n",
        ),
        ("example.test/world@v1.0.0/internal/x/x.go", b"package x\n"),
        ("example.test/world@v1.0.0/LICENSE", b""),
    ];

    #[test]
    fn zip_hash_is_dirhash_h1_whatever_the_compression() {
        let expected = reference_h1(FILES);
        for method in [
            zip::CompressionMethod::Deflated,
            zip::CompressionMethod::Stored,
        ] {
            let zip = zip_of(FILES, method);
            let h1 = of_zip(Cursor::new(zip)).expect("hashes");
            assert_eq!(h1.to_string(), expected);
        }
        // Order in the archive does not matter; content does.
        let mut reversed = FILES.to_vec();
        reversed.reverse();
        let zip = zip_of(&reversed, zip::CompressionMethod::Deflated);
        assert_eq!(of_zip(Cursor::new(zip)).unwrap().to_string(), expected);
        let mut changed = FILES.to_vec();
        changed[0].1 = b"package world // changed\n";
        let zip = zip_of(&changed, zip::CompressionMethod::Deflated);
        assert_ne!(of_zip(Cursor::new(zip)).unwrap().to_string(), expected);
    }

    #[test]
    fn known_go_mod_hash() {
        // From go.sum of a module whose go.mod is exactly this text
        // (computed by `go mod download -json` in tests/fixtures/mk_goproxy.py's check).
        let go_mod = b"module example.test/hello\n\ngo 1.19\n";
        let expected = reference_h1(&[("go.mod", go_mod)]);
        assert_eq!(of_mod(go_mod).to_string(), expected);
    }

    #[test]
    fn bad_zips_are_errors() {
        assert!(matches!(
            of_zip(Cursor::new(b"not a zip".to_vec())),
            Err(Error::Zip(_))
        ));
        let zip = zip_of(&[("m@v1.0.0/a\nb", b"x")], zip::CompressionMethod::Stored);
        assert!(matches!(of_zip(Cursor::new(zip)), Err(Error::Newline)));
        let mut zip = zip_of(FILES, zip::CompressionMethod::Deflated);
        // Damage the first entry's compressed data (after its 30-byte header and name).
        let at = 30 + FILES[0].0.len() + 2;
        zip[at] ^= 0xff;
        assert!(of_zip(Cursor::new(zip)).is_err());
    }
}
