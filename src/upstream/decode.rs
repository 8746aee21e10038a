//! Decoding a content-coded body (`Content-Encoding: gzip`, `deflate`, `br`,
//! or a list of them) as it streams, for index documents: some upstreams
//! (object stores serving pre-compressed files) send them coded although we
//! ask for `identity`, and a page must be read to be rewritten. Files are
//! never decoded: they are stored byte for byte.
//!
//! Decoding is push-based (each network chunk in, whatever it decodes to
//! out), bounded in output, and strict at the end: a stream that stops short
//! of its end (or, for gzip, fails its CRC) is an error, not a short page.

use bytes::Bytes;
use flate2::write::MultiGzDecoder;
use flate2::{Decompress, FlushDecompress, Status};
use http::{header, HeaderMap};
use std::io::{self, Write};

/// A body's decoders, outermost coding first.
pub(super) struct Decoder {
    stages: Vec<Stage>,
    saw_input: bool,
}

impl Decoder {
    /// The decoder for `headers`' `Content-Encoding`, each stage's output
    /// bounded by `limit` bytes: `Ok(None)` for none or `identity`, `Err`
    /// with the coding's name for one it does not know.
    pub(super) fn for_headers(headers: &HeaderMap, limit: u64) -> Result<Option<Decoder>, String> {
        let mut codings: Vec<String> = headers
            .get_all(header::CONTENT_ENCODING)
            .iter()
            .flat_map(|v| v.to_str().unwrap_or("?").split(','))
            .map(|c| c.trim().to_ascii_lowercase())
            .filter(|c| !c.is_empty() && c != "identity")
            .collect();
        if codings.is_empty() {
            return Ok(None);
        }
        // Codings are listed in the order they were applied (RFC 9110 §8.4).
        codings.reverse();
        let stages = codings
            .iter()
            .map(|coding| {
                let sink = Sink {
                    out: Vec::new(),
                    total: 0,
                    limit,
                };
                Ok(match coding.as_str() {
                    "gzip" | "x-gzip" => Stage::Gzip(Box::new(MultiGzDecoder::new(sink))),
                    "deflate" => Stage::Deflate(Deflate {
                        head: Vec::new(),
                        inflate: None,
                        done: false,
                        sink,
                    }),
                    "br" => {
                        Stage::Brotli(Box::new(brotli::DecompressorWriter::new(sink, 64 * 1024)))
                    }
                    other => return Err(other.to_string()),
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(Some(Decoder {
            stages,
            saw_input: false,
        }))
    }

    /// Decodes `input`; returns what it decoded to (possibly nothing yet).
    pub(super) fn push(&mut self, input: &[u8]) -> io::Result<Bytes> {
        self.saw_input |= !input.is_empty();
        let mut data = input.to_vec();
        for stage in &mut self.stages {
            data = stage.push(&data)?;
        }
        Ok(data.into())
    }

    /// Ends the body: what is left, or an error if it stopped short.
    pub(super) fn finish(&mut self) -> io::Result<Bytes> {
        if !self.saw_input {
            // No body at all (a HEAD-like answer): nothing to decode.
            return Ok(Bytes::new());
        }
        let mut data = Vec::new();
        for stage in &mut self.stages {
            let mut out = stage.push(&data)?;
            out.extend(stage.finish()?);
            data = out;
        }
        Ok(data.into())
    }
}

enum Stage {
    Gzip(Box<MultiGzDecoder<Sink>>),
    Deflate(Deflate),
    Brotli(Box<brotli::DecompressorWriter<Sink>>),
}

impl Stage {
    fn push(&mut self, input: &[u8]) -> io::Result<Vec<u8>> {
        if input.is_empty() {
            return Ok(Vec::new());
        }
        match self {
            Stage::Gzip(d) => {
                d.write_all(input)?;
                d.flush()?;
                Ok(d.get_mut().take())
            }
            Stage::Deflate(d) => {
                d.push(input)?;
                Ok(d.sink.take())
            }
            Stage::Brotli(d) => {
                d.write_all(input)?;
                Ok(d.get_mut().take())
            }
        }
    }

    fn finish(&mut self) -> io::Result<Vec<u8>> {
        match self {
            Stage::Gzip(d) => {
                d.try_finish()?;
                Ok(d.get_mut().take())
            }
            Stage::Deflate(d) => {
                d.finish()?;
                Ok(d.sink.take())
            }
            Stage::Brotli(d) => {
                d.close()?;
                Ok(d.get_mut().take())
            }
        }
    }
}

/// HTTP's `deflate` is a zlib stream (RFC 9110 §8.4.1.2), but servers have
/// long sent raw deflate under that name too; the first two bytes tell.
struct Deflate {
    head: Vec<u8>,
    inflate: Option<Decompress>,
    done: bool,
    sink: Sink,
}

impl Deflate {
    fn push(&mut self, input: &[u8]) -> io::Result<()> {
        if self.inflate.is_some() {
            return self.run(input);
        }
        self.head.extend_from_slice(input);
        if self.head.len() < 2 {
            return Ok(());
        }
        self.start()
    }

    fn start(&mut self) -> io::Result<()> {
        let zlib = self.head.len() >= 2 && {
            let (cmf, flg) = (self.head[0], self.head[1]);
            cmf & 0x0f == 8 && (u16::from(cmf) << 8 | u16::from(flg)) % 31 == 0
        };
        self.inflate = Some(Decompress::new(zlib));
        let head = std::mem::take(&mut self.head);
        self.run(&head)
    }

    fn run(&mut self, mut input: &[u8]) -> io::Result<()> {
        let inflate = self.inflate.as_mut().expect("started before running");
        while !self.done {
            let mut out = Vec::with_capacity(64 * 1024);
            let before = inflate.total_in();
            let status = inflate
                .decompress_vec(input, &mut out, FlushDecompress::None)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            input = &input[(inflate.total_in() - before) as usize..];
            let full = out.len() == out.capacity();
            self.sink.write_all(&out)?;
            self.done = status == Status::StreamEnd;
            if input.is_empty() && !full {
                break;
            }
            if out.is_empty() && inflate.total_in() == before {
                break;
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        if self.inflate.is_none() {
            self.start()?;
        }
        if !self.done {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "deflate stream ends early",
            ));
        }
        Ok(())
    }
}

/// Collects a stage's output; refuses to grow past its limit (a small coded
/// body can decode to gigabytes).
struct Sink {
    out: Vec<u8>,
    total: u64,
    limit: u64,
}

impl Sink {
    fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.total += buf.len() as u64;
        if self.total > self.limit {
            return Err(io::Error::other(format!(
                "decoded body larger than {} bytes",
                self.limit
            )));
        }
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Whether the last segment of `path` names a compressed file: then a
/// `Content-Encoding` on it is a server's label for the file's own format
/// (Apache's `AddEncoding x-gzip .gz`), and the bytes are the document.
pub(super) fn names_compressed_file(path_and_query: &str) -> bool {
    let path = path_and_query.split('?').next().unwrap_or("");
    let name = path.rsplit('/').next().unwrap_or("").to_ascii_lowercase();
    [".gz", ".tgz", ".z", ".bz2", ".xz", ".zst", ".br", ".zip"]
        .iter()
        .any(|ext| name.ends_with(ext))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn coded(encoding: &str) -> Decoder {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_ENCODING,
            HeaderValue::from_str(encoding).unwrap(),
        );
        Decoder::for_headers(&h, 1 << 20).unwrap().unwrap()
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn raw_deflate(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn br(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut e = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
            e.write_all(data).unwrap();
        }
        out
    }

    /// Feeds `coded` in pieces of `step` bytes.
    fn decode(decoder: &mut Decoder, coded: &[u8], step: usize) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        for piece in coded.chunks(step) {
            out.extend_from_slice(&decoder.push(piece)?);
        }
        out.extend_from_slice(&decoder.finish()?);
        Ok(out)
    }

    fn page() -> Vec<u8> {
        (0..5000)
            .flat_map(|i| format!("<a href=\"/p/pkg-{i}.tar.gz\">pkg-{i}</a>\n").into_bytes())
            .collect()
    }

    #[test]
    fn every_coding_decodes_in_any_chunking() {
        let page = page();
        for (name, coded_page) in [
            ("gzip", gzip(&page)),
            ("x-gzip", gzip(&page)),
            ("deflate", zlib(&page)),
            ("deflate", raw_deflate(&page)),
            ("br", br(&page)),
        ] {
            for step in [1, 7, 4096, usize::MAX] {
                let got = decode(&mut coded(name), &coded_page, step).unwrap();
                assert!(got == page, "{name} in steps of {step}");
            }
        }
        // Applied gzip, then br: decoded br first.
        let twice = br(&gzip(&page));
        assert!(decode(&mut coded("gzip, br"), &twice, 1000).unwrap() == page);
    }

    #[test]
    fn truncated_corrupt_and_oversized_bodies_fail() {
        let page = page();
        for (name, coded_page) in [
            ("gzip", gzip(&page)),
            ("deflate", zlib(&page)),
            ("deflate", raw_deflate(&page)),
            ("br", br(&page)),
        ] {
            let short = &coded_page[..coded_page.len() - 5];
            assert!(
                decode(&mut coded(name), short, 512).is_err(),
                "{name} truncated"
            );
        }
        let mut bad = gzip(&page);
        let n = bad.len();
        bad[n - 6] ^= 0xff;
        assert!(decode(&mut coded("gzip"), &bad, 512).is_err(), "gzip crc");
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        let mut small = Decoder::for_headers(&h, 1000).unwrap().unwrap();
        assert!(
            decode(&mut small, &gzip(&page), 512).is_err(),
            "over the limit"
        );
    }

    #[test]
    fn identity_and_unknown_codings() {
        let mut h = HeaderMap::new();
        assert!(Decoder::for_headers(&h, 10).unwrap().is_none());
        h.insert(
            header::CONTENT_ENCODING,
            HeaderValue::from_static("identity"),
        );
        assert!(Decoder::for_headers(&h, 10).unwrap().is_none());
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("zstd"));
        assert_eq!(Decoder::for_headers(&h, 10).err().as_deref(), Some("zstd"));
        assert!(decode(&mut coded("gzip"), b"", 1).unwrap().is_empty());
    }

    #[test]
    fn compressed_file_names() {
        assert!(names_compressed_file("/specs.4.8.gz"));
        assert!(names_compressed_file("/Marshal.4.8.Z?x=1"));
        assert!(!names_compressed_file("/simple/six/"));
        assert!(!names_compressed_file("/info/gz"));
    }
}
