//! Go's `h1:` hashes (golang.org/x/mod/sumdb/dirhash Hash1): a SHA-256 over
//! the text `"{sha256 hex}  {name}\n"` of every file in a module zip (names
//! as stored, with their `module@version/` prefix), lines sorted by name,
//! then base64. The `/go.mod` hash is the same over one file named `go.mod`.
//! Also the two places the proxy learns them: go.sum lines and the records
//! of checksum-database lookups.

use super::{version_path, VersionFile};
use crate::mount::Checksum;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::{Read, Seek};

/// The most bytes a module zip may unpack to (golang.org/x/mod/zip's
/// `MaxZipFile`): a bound on the work a hostile zip can cause.
pub const MAX_UNZIPPED: u64 = 500 << 20;

/// Why a hash could not be computed or a lookup not read.
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
    /// A lookup answer does not start with a record number and go.sum lines.
    #[error("sumdb lookup answer is malformed")]
    Lookup,
}

/// The `h1:` hash of a module zip, as go computes it for go.sum. Reads the
/// whole archive through `zip`; the caller decides where it comes from (and
/// runs this off the async runtime: it inflates every file).
pub fn h1_of_zip<R: Read + Seek>(zip: R) -> Result<Checksum, Error> {
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
    Ok(Checksum::GoH1(summary.finalize().into()))
}

/// The `/go.mod h1:` hash of a go.mod file's bytes.
pub fn h1_of_mod(go_mod: &[u8]) -> Checksum {
    let line = format!("{}  go.mod\n", hex::encode(Sha256::digest(go_mod)));
    Checksum::GoH1(Sha256::digest(line.as_bytes()).into())
}

/// One go.sum line: `MODULE VERSION h1:…` (the zip) or
/// `MODULE VERSION/go.mod h1:…` (the go.mod).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SumLine {
    /// The module path (unescaped, as written).
    pub module: String,
    /// The version (unescaped).
    pub version: String,
    /// Whether this is the go.mod's hash rather than the zip's.
    pub go_mod: bool,
    /// The hash ([`Checksum::GoH1`]).
    pub hash: Checksum,
}

impl SumLine {
    /// The path on a module proxy (after the mount) of the file this line
    /// checks: `/M/@v/V.zip` or `/M/@v/V.mod`, escaped.
    pub fn artifact_path(&self) -> Option<String> {
        let file = if self.go_mod {
            VersionFile::Mod
        } else {
            VersionFile::Zip
        };
        version_path(&self.module, &self.version, file)
    }
}

/// The `h1:` lines of a go.sum text; other hash kinds and malformed lines are
/// skipped (go itself ignores hash kinds it does not know).
pub fn parse_go_sum(text: &str) -> Vec<SumLine> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<SumLine> {
    let mut fields = line.split_ascii_whitespace();
    let (module, version, hash) = (fields.next()?, fields.next()?, fields.next()?);
    if fields.next().is_some() {
        return None;
    }
    let (version, go_mod) = match version.strip_suffix("/go.mod") {
        Some(v) => (v, true),
        None => (version, false),
    };
    let digest = BASE64.decode(hash.strip_prefix("h1:")?).ok()?;
    Some(SumLine {
        module: module.to_string(),
        version: version.to_string(),
        go_mod,
        hash: Checksum::GoH1(digest.try_into().ok()?),
    })
}

/// The go.sum lines of a checksum database's answer to `/lookup/M@V`: a
/// record number line, the record's go.sum lines, a blank line, then the
/// signed tree head (which `go` verifies; the proxy only reads the hashes).
pub fn parse_lookup(body: &[u8]) -> Result<Vec<SumLine>, Error> {
    let text = std::str::from_utf8(body).map_err(|_| Error::Lookup)?;
    let mut lines = text.split('\n');
    let id = lines.next().ok_or(Error::Lookup)?;
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::Lookup);
    }
    let mut record = Vec::new();
    for line in lines {
        if line.is_empty() {
            return if record.is_empty() {
                Err(Error::Lookup)
            } else {
                Ok(record)
            };
        }
        record.push(parse_line(line).ok_or(Error::Lookup)?);
    }
    Err(Error::Lookup)
}

#[cfg(test)]
mod tests {
    use super::*;
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
            let h1 = h1_of_zip(Cursor::new(zip)).expect("hashes");
            assert_eq!(h1.to_string(), expected);
        }
        // Order in the archive does not matter; content does.
        let mut reversed = FILES.to_vec();
        reversed.reverse();
        let zip = zip_of(&reversed, zip::CompressionMethod::Deflated);
        assert_eq!(h1_of_zip(Cursor::new(zip)).unwrap().to_string(), expected);
        let mut changed = FILES.to_vec();
        changed[0].1 = b"package world // changed\n";
        let zip = zip_of(&changed, zip::CompressionMethod::Deflated);
        assert_ne!(h1_of_zip(Cursor::new(zip)).unwrap().to_string(), expected);
    }

    #[test]
    fn known_go_mod_hash() {
        // From go.sum of a module whose go.mod is exactly this text
        // (computed by `go mod download -json` in tests/fixtures/mk_goproxy.py's check).
        let go_mod = b"module example.test/hello\n\ngo 1.19\n";
        let expected = reference_h1(&[("go.mod", go_mod)]);
        assert_eq!(h1_of_mod(go_mod).to_string(), expected);
    }

    #[test]
    fn bad_zips_are_errors() {
        assert!(matches!(
            h1_of_zip(Cursor::new(b"not a zip".to_vec())),
            Err(Error::Zip(_))
        ));
        let zip = zip_of(&[("m@v1.0.0/a\nb", b"x")], zip::CompressionMethod::Stored);
        assert!(matches!(h1_of_zip(Cursor::new(zip)), Err(Error::Newline)));
        let mut zip = zip_of(FILES, zip::CompressionMethod::Deflated);
        // Damage the first entry's compressed data (after its 30-byte header and name).
        let at = 30 + FILES[0].0.len() + 2;
        zip[at] ^= 0xff;
        assert!(h1_of_zip(Cursor::new(zip)).is_err());
    }

    #[test]
    fn go_sum_lines_and_lookups() {
        let zip_hash = BASE64.encode([1u8; 32]);
        let mod_hash = BASE64.encode([2u8; 32]);
        let text = format!(
            "example.test/Shout v0.1.0 h1:{zip_hash}\n\
             example.test/Shout v0.1.0/go.mod h1:{mod_hash}\n\
             example.test/x v1.0.0 h2:{zip_hash}\n\
             garbage\n\
             example.test/y v1.0.0 h1:short\n"
        );
        let lines = parse_go_sum(&text);
        assert_eq!(lines.len(), 2);
        assert_eq!(
            lines[0],
            SumLine {
                module: "example.test/Shout".into(),
                version: "v0.1.0".into(),
                go_mod: false,
                hash: Checksum::GoH1([1; 32]),
            }
        );
        assert!(lines[1].go_mod);
        assert_eq!(
            lines[0].artifact_path().as_deref(),
            Some("/example.test/!shout/@v/v0.1.0.zip")
        );
        assert_eq!(
            lines[1].artifact_path().as_deref(),
            Some("/example.test/!shout/@v/v0.1.0.mod")
        );

        let answer = format!(
            "7\nexample.test/Shout v0.1.0 h1:{zip_hash}\nexample.test/Shout v0.1.0/go.mod h1:{mod_hash}\n\ngo.sum database tree\n8\nAAAA\n\n— sum.example.test Az3g\n"
        );
        let record = parse_lookup(answer.as_bytes()).expect("parses");
        assert_eq!(record, lines);
        for bad in [
            "",
            "x\nexample.test/a v1.0.0 h1:AAAA\n\n",
            "7\n\n",
            "7\nexample.test/a v1.0.0 h1:short\n\n",
            "7\nexample.test/Shout v0.1.0 h1:AAAA",
        ] {
            assert!(parse_lookup(bad.as_bytes()).is_err(), "{bad:?}");
        }
    }
}
