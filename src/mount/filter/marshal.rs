//! The subset of Ruby's Marshal 4.8 that RubyGems' legacy indexes
//! (`specs.4.8`, `latest_specs.4.8`, `prerelease_specs.4.8`) use: an array
//! of `[name, Gem::Version, platform]` tuples, strings with encoding ivars,
//! symbols and symbol links, object links, and `Gem::Version` as a
//! user-marshalled (`U`) object around `[version_string]`. Reads into
//! [`Spec`]s and writes them back the way `gem generate_index` does (equal
//! strings and versions written once and linked). Anything else is an
//! [`Error`], never a panic: lengths are checked against the input, nesting
//! is bounded, and links are shared (`Arc`), never copied, so no input makes
//! more work than its size.

use std::collections::HashMap;
use std::sync::Arc;

/// One entry of a legacy index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    /// The gem's name.
    pub name: Arc<str>,
    /// Its `Gem::Version`, as the version string.
    pub version: Arc<str>,
    /// `ruby`, or a platform such as `x86_64-linux`.
    pub platform: Arc<str>,
}

/// Why bytes are not a legacy index.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The input ended inside a value.
    #[error("truncated at byte {at}")]
    Truncated {
        /// Where the input ended.
        at: usize,
    },
    /// Not Marshal 4.8.
    #[error("not marshal 4.8 (starts {major}.{minor})")]
    Version {
        /// The first byte.
        major: u8,
        /// The second byte.
        minor: u8,
    },
    /// A value this subset does not read, or a value where another was due.
    #[error("unexpected {what} at byte {at}")]
    Unexpected {
        /// What was found.
        what: &'static str,
        /// Where.
        at: usize,
    },
    /// Bytes left after the value.
    #[error("{left} trailing bytes")]
    Trailing {
        /// How many.
        left: usize,
    },
}

/// Deeper than any legacy index nests (array, tuple, version, its array, string).
const MAX_DEPTH: usize = 8;

#[derive(Clone, Debug)]
enum Value {
    Nil,
    Bool,
    Int,
    Str(Arc<str>),
    Version(Arc<str>),
    Array(Arc<Vec<Value>>),
}

struct Reader<'a> {
    data: &'a [u8],
    at: usize,
    symbols: Vec<Arc<str>>,
    /// Objects by link index; `None` while an object is still being read.
    objects: Vec<Option<Value>>,
}

impl<'a> Reader<'a> {
    fn unexpected(&self, what: &'static str) -> Error {
        Error::Unexpected { what, at: self.at }
    }

    fn byte(&mut self) -> Result<u8, Error> {
        let b = *self
            .data
            .get(self.at)
            .ok_or(Error::Truncated { at: self.at })?;
        self.at += 1;
        Ok(b)
    }

    fn bytes(&mut self, len: usize) -> Result<&'a [u8], Error> {
        let end = self
            .at
            .checked_add(len)
            .filter(|&end| end <= self.data.len())
            .ok_or(Error::Truncated {
                at: self.data.len(),
            })?;
        let out = &self.data[self.at..end];
        self.at = end;
        Ok(out)
    }

    /// Marshal's packed integer (`w_long` in Ruby's marshal.c).
    fn int(&mut self) -> Result<i64, Error> {
        let c = self.byte()? as i8;
        Ok(match c {
            0 => 0,
            1..=4 => {
                let mut x: i64 = 0;
                for i in 0..c {
                    x |= i64::from(self.byte()?) << (8 * i);
                }
                x
            }
            -4..=-1 => {
                let mut x: i64 = -1;
                for i in 0..-c {
                    x &= !(0xff << (8 * i));
                    x |= i64::from(self.byte()?) << (8 * i);
                }
                x
            }
            5.. => i64::from(c) - 5,
            ..=-5 => i64::from(c) + 5,
        })
    }

    /// A length or index: an integer that is not negative.
    fn count(&mut self) -> Result<usize, Error> {
        let n = self.int()?;
        usize::try_from(n).map_err(|_| self.unexpected("negative length"))
    }

    fn text(&mut self) -> Result<Arc<str>, Error> {
        let len = self.count()?;
        let bytes = self.bytes(len)?;
        std::str::from_utf8(bytes)
            .map(Arc::from)
            .map_err(|_| self.unexpected("string that is not utf-8"))
    }

    fn symbol(&mut self) -> Result<Arc<str>, Error> {
        match self.byte()? {
            b':' => {
                let name = self.text()?;
                self.symbols.push(name.clone());
                Ok(name)
            }
            b';' => {
                let i = self.count()?;
                self.symbols
                    .get(i)
                    .cloned()
                    .ok_or_else(|| self.unexpected("symbol link to nothing"))
            }
            _ => Err(self.unexpected("non-symbol where a symbol was due")),
        }
    }

    /// Reserves the next link index for an object about to be read.
    fn reserve(&mut self) -> usize {
        self.objects.push(None);
        self.objects.len() - 1
    }

    fn value(&mut self, depth: usize) -> Result<Value, Error> {
        if depth > MAX_DEPTH {
            return Err(self.unexpected("nesting too deep"));
        }
        let start = self.at;
        match self.byte()? {
            b'0' => Ok(Value::Nil),
            b'T' | b'F' => Ok(Value::Bool),
            b'i' => self.int().map(|_| Value::Int),
            b'"' => {
                let slot = self.reserve();
                let s = Value::Str(self.text()?);
                self.objects[slot] = Some(s.clone());
                Ok(s)
            }
            b'I' => {
                // A string with instance variables: its encoding (`E` true for
                // UTF-8, false for US-ASCII, or `encoding` naming one).
                if self.data.get(self.at) != Some(&b'"') {
                    return Err(self.unexpected("ivars on something other than a string"));
                }
                let s = self.value(depth + 1)?;
                let n = self.count()?;
                for _ in 0..n {
                    self.symbol()?;
                    self.value(depth + 1)?;
                }
                Ok(s)
            }
            b'[' => {
                let slot = self.reserve();
                let n = self.count()?;
                // Each element takes at least a byte: no larger reservation than the input.
                let mut items = Vec::with_capacity(n.min(self.data.len() - self.at));
                for _ in 0..n {
                    items.push(self.value(depth + 1)?);
                }
                let array = Value::Array(Arc::new(items));
                self.objects[slot] = Some(array.clone());
                Ok(array)
            }
            b'U' => {
                let slot = self.reserve();
                if &*self.symbol()? != "Gem::Version" {
                    return Err(Error::Unexpected {
                        what: "user-marshalled object other than Gem::Version",
                        at: start,
                    });
                }
                let data = self.value(depth + 1)?;
                let version = match &data {
                    Value::Array(items) => match items.first() {
                        Some(Value::Str(s)) => Value::Version(s.clone()),
                        _ => return Err(self.unexpected("Gem::Version without a version string")),
                    },
                    _ => return Err(self.unexpected("Gem::Version without a version string")),
                };
                self.objects[slot] = Some(version.clone());
                Ok(version)
            }
            b'@' => {
                let i = self.count()?;
                match self.objects.get(i) {
                    Some(Some(v)) => Ok(v.clone()),
                    Some(None) => Err(self.unexpected("link to an object still being read")),
                    None => Err(self.unexpected("link to nothing")),
                }
            }
            b':' | b';' => {
                self.at = start;
                self.symbol().map(|_| Value::Nil)
            }
            _ => Err(Error::Unexpected {
                what: "type this index does not use",
                at: start,
            }),
        }
    }
}

/// The entries of a legacy index (uncompressed Marshal bytes).
pub fn read_specs(data: &[u8]) -> Result<Vec<Spec>, Error> {
    let mut r = Reader {
        data,
        at: 0,
        symbols: Vec::new(),
        objects: Vec::new(),
    };
    let (major, minor) = (r.byte()?, r.byte()?);
    if (major, minor) != (4, 8) {
        return Err(Error::Version { major, minor });
    }
    let Value::Array(items) = r.value(0)? else {
        return Err(Error::Unexpected {
            what: "index that is not an array",
            at: 2,
        });
    };
    if r.at != data.len() {
        return Err(Error::Trailing {
            left: data.len() - r.at,
        });
    }
    items
        .iter()
        .map(|item| match item {
            Value::Array(tuple) => match tuple.as_slice() {
                [Value::Str(name), Value::Version(version), Value::Str(platform)] => Ok(Spec {
                    name: name.clone(),
                    version: version.clone(),
                    platform: platform.clone(),
                }),
                _ => Err(Error::Unexpected {
                    what: "entry other than [name, version, platform]",
                    at: 0,
                }),
            },
            Value::Nil | Value::Bool | Value::Int | Value::Str(_) | Value::Version(_) => {
                Err(Error::Unexpected {
                    what: "entry that is not an array",
                    at: 0,
                })
            }
        })
        .collect()
}

struct Writer {
    out: Vec<u8>,
    symbols: HashMap<&'static str, usize>,
    objects: usize,
    strings: HashMap<Arc<str>, usize>,
    versions: HashMap<Arc<str>, usize>,
}

impl Writer {
    fn int(&mut self, n: usize) {
        // Lengths and indexes only: never negative.
        let n = n as u64;
        if n == 0 {
            self.out.push(0);
        } else if n < 123 {
            self.out.push(n as u8 + 5);
        } else {
            let bytes = n.to_le_bytes();
            let len = 8 - (n.leading_zeros() / 8) as usize;
            self.out.push(len as u8);
            self.out.extend_from_slice(&bytes[..len]);
        }
    }

    fn symbol(&mut self, name: &'static str) {
        if let Some(&i) = self.symbols.get(name) {
            self.out.push(b';');
            self.int(i);
        } else {
            self.symbols.insert(name, self.symbols.len());
            self.out.push(b':');
            self.int(name.len());
            self.out.extend_from_slice(name.as_bytes());
        }
    }

    fn link(&mut self, index: usize) {
        self.out.push(b'@');
        self.int(index);
    }

    /// A UTF-8 string (`I"…` with `E` true), as Ruby writes one.
    fn fresh_string(&mut self, s: &str) -> usize {
        let index = self.objects;
        self.objects += 1;
        self.out.extend_from_slice(b"I\"");
        self.int(s.len());
        self.out.extend_from_slice(s.as_bytes());
        self.int(1);
        self.symbol("E");
        self.out.push(b'T');
        index
    }

    fn string(&mut self, s: &Arc<str>) {
        match self.strings.get(s) {
            Some(&i) => self.link(i),
            None => {
                let i = self.fresh_string(s);
                self.strings.insert(s.clone(), i);
            }
        }
    }

    fn version(&mut self, v: &Arc<str>) {
        if let Some(&i) = self.versions.get(v) {
            return self.link(i);
        }
        let index = self.objects;
        self.objects += 2; // the version and its array
        self.versions.insert(v.clone(), index);
        self.out.push(b'U');
        self.symbol("Gem::Version");
        self.out.push(b'[');
        self.int(1);
        self.fresh_string(v);
    }
}

/// `specs` as a legacy index (uncompressed Marshal bytes).
pub fn write_specs(specs: &[Spec]) -> Vec<u8> {
    let mut w = Writer {
        out: vec![4, 8, b'['],
        symbols: HashMap::new(),
        objects: 1,
        strings: HashMap::new(),
        versions: HashMap::new(),
    };
    w.int(specs.len());
    for spec in specs {
        w.out.push(b'[');
        w.objects += 1;
        w.int(3);
        w.string(&spec.name);
        w.version(&spec.version);
        w.string(&spec.platform);
    }
    w.out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `specs.4.8` as `gem generate_index` (RubyGems 3.3) wrote it for the
    /// test repository: crdep 0.1.0, crplat 0.1.0 x86_64-linux, crtiny
    /// 0.1.0, 0.2.0 and 1.0.0 — strings and versions linked where repeated.
    const GENERATED: &str = "04085b0a5b0849220a6372646570063a064554553a1147656d3a3a56657273696f6e5b0649220a302e312e30063b005449220972756279063b00545b0849220b6372706c6174063b005440084922117838365f36342d6c696e7578063b00545b0849220b637274696e79063b00544008400b5b084010553b065b0649220a302e322e30063b0054400b5b084010553b065b0649220a312e302e30063b0054400b";

    fn spec(name: &str, version: &str, platform: &str) -> Spec {
        Spec {
            name: name.into(),
            version: version.into(),
            platform: platform.into(),
        }
    }

    #[test]
    fn reads_and_writes_what_generate_index_wrote() {
        let bytes = hex::decode(GENERATED).unwrap();
        let specs = read_specs(&bytes).unwrap();
        assert_eq!(
            specs,
            vec![
                spec("crdep", "0.1.0", "ruby"),
                spec("crplat", "0.1.0", "x86_64-linux"),
                spec("crtiny", "0.1.0", "ruby"),
                spec("crtiny", "0.2.0", "ruby"),
                spec("crtiny", "1.0.0", "ruby"),
            ]
        );
        // The same links Ruby made: byte for byte.
        assert_eq!(hex::encode(write_specs(&specs)), GENERATED);
        assert_eq!(write_specs(&[]), b"\x04\x08[\x00");
        assert_eq!(read_specs(b"\x04\x08[\x00").unwrap(), vec![]);
    }

    #[test]
    fn long_lists_and_long_strings_round_trip() {
        let long = "x".repeat(300);
        let specs: Vec<Spec> = (0..1000)
            .map(|i| spec(&format!("g{}", i % 70), &format!("1.{i}"), &long))
            .collect();
        assert_eq!(read_specs(&write_specs(&specs)).unwrap(), specs);
    }

    #[test]
    fn packed_integers_follow_ruby() {
        // Values from Marshal.dump in Ruby 3.
        for (bytes, n) in [
            (&b"\x00"[..], 0),
            (b"\x06", 1),
            (b"\x7f", 122),
            (b"\x01\x7b", 123),
            (b"\x02\x00\x01", 256),
            (b"\xfa", -1),
            (b"\x80", -123),
            (b"\xff\x84", -124),
            (b"\xfe\x00\xff", -256),
        ] {
            let mut r = Reader {
                data: bytes,
                at: 0,
                symbols: vec![],
                objects: vec![],
            };
            assert_eq!(r.int(), Ok(n), "{bytes:?}");
            assert_eq!(r.at, bytes.len());
        }
    }

    #[test]
    fn bad_input_is_an_error_never_a_panic() {
        let good = hex::decode(GENERATED).unwrap();
        for cut in 0..good.len() {
            assert!(read_specs(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut trailing = good.clone();
        trailing.push(0);
        assert_eq!(read_specs(&trailing), Err(Error::Trailing { left: 1 }));
        assert!(matches!(
            read_specs(b"\x04\x09[\x00"),
            Err(Error::Version { .. })
        ));
        // A negative length, a link to the array being read, deep nesting.
        assert!(read_specs(b"\x04\x08[\x06\"\xfa").is_err());
        assert!(read_specs(b"\x04\x08[\x06@\x00").is_err());
        assert!(read_specs(&[&b"\x04\x08"[..], &[b'['; 64], &[b'\x06'; 64]].concat()).is_err());
        // Every byte flipped, and random bytes behind a valid header
        // (xorshift: deterministic, no dependency).
        for i in 2..good.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut bad = good.clone();
                bad[i] ^= flip;
                let _ = read_specs(&bad);
            }
        }
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..20_000 {
            let mut bytes = vec![4, 8];
            let len = (seed % 48) as usize;
            for _ in 0..len {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                // Mostly type bytes and small integers, so parsing gets somewhere.
                let alphabet = b"[\"I@U:;TF0i\x06\x07\x08\x00\xfa\x01\x04";
                bytes.push(alphabet[(seed % alphabet.len() as u64) as usize]);
            }
            let _ = read_specs(&bytes);
        }
    }
}
