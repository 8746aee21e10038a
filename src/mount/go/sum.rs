//! The two places the proxy learns Go's `h1:` hashes (computed in
//! `crate::digest::h1`): go.sum lines and the records of checksum-database
//! lookups.

use super::{version_path, VersionFile};
use crate::digest::Digest;

/// Why a checksum database's answer could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A lookup answer does not start with a record number and go.sum lines.
    #[error("sumdb lookup answer is malformed")]
    Lookup,
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
    /// The hash: [`Digest::GoH1`] for the zip, [`Digest::GoModH1`] for the go.mod.
    pub hash: Digest,
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
    read_go_sum(text).lines
}

/// A go.sum text read line by line: its `h1:` lines, and how many lines were
/// neither that, a line of another hash kind, nor blank.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct GoSum {
    /// The `h1:` lines, in file order.
    pub lines: Vec<SumLine>,
    /// Lines skipped as malformed (an `h1:` that does not decode, too few or
    /// too many fields).
    pub malformed: usize,
}

/// Reads a go.sum text (or several concatenated), counting what it skips.
pub fn read_go_sum(text: &str) -> GoSum {
    let mut read = GoSum::default();
    for line in text.lines() {
        match parse_line(line) {
            Some(sum) => read.lines.push(sum),
            None if line.trim().is_empty() || other_hash_kind(line) => {}
            None => read.malformed += 1,
        }
    }
    read
}

/// A well-formed line of a hash kind other than `h1:` (`h2:` and on): go
/// skips those, so they are not malformed.
fn other_hash_kind(line: &str) -> bool {
    let fields: Vec<&str> = line.split_ascii_whitespace().collect();
    let [_, _, hash] = fields[..] else {
        return false;
    };
    hash.split_once(':').is_some_and(|(kind, _)| {
        kind != "h1"
            && kind.len() > 1
            && kind.starts_with('h')
            && kind[1..].bytes().all(|b| b.is_ascii_digit())
    })
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
    let hash = match Digest::from_go_h1(hash)? {
        Digest::GoH1(bytes) if go_mod => Digest::GoModH1(bytes),
        zip => zip,
    };
    Some(SumLine {
        module: module.to_string(),
        version: version.to_string(),
        go_mod,
        hash,
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
    use base64::engine::general_purpose::STANDARD as BASE64;
    use base64::Engine;

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
        assert_eq!(read_go_sum(&text).malformed, 2, "garbage and a short h1");
        assert_eq!(read_go_sum("\n  \n").malformed, 0);
        assert_eq!(
            lines[0],
            SumLine {
                module: "example.test/Shout".into(),
                version: "v0.1.0".into(),
                go_mod: false,
                hash: Digest::GoH1([1; 32]),
            }
        );
        assert!(lines[1].go_mod);
        assert_eq!(lines[1].hash, Digest::GoModH1([2; 32]));
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
