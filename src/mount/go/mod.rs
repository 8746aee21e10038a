//! Go module proxies (the GOPROXY protocol of `go help goproxy`) and the
//! checksum database they proxy: which paths are documents (`@v/list`,
//! `@latest`, a `.info` for a query, sumdb `supported` and `latest`), which
//! are immutable (a canonical version's `.info`, `.mod`, `.zip`; sumdb
//! lookups and tiles), the case-encoding of module paths (`!x` for `X`), and
//! in `sum` the `h1:` hashes that go.sum lines, sumdb lookups and module zips
//! carry. Pure: no I/O.

mod sum;

pub use crate::digest::h1::{of_mod as h1_of_mod, of_zip as h1_of_zip};
pub use sum::{parse_go_sum, parse_lookup, read_go_sum, Error, GoSum, SumLine};

use super::{keyed_document, Class, MountUpstream};
use crate::config::Mount;
use percent_encoding::percent_decode_str;

/// What a path (after the mount's `/NAME`) is on a module proxy. Module
/// paths and versions are kept in their escaped form (`!x`), which is what
/// the proxy protocol and the module cache use; `go` sends `!` as `%21`,
/// and the route is the same either way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// `/M/@v/list`: the known versions (changes).
    List(String),
    /// `/M/@latest`: the newest version's info, asked for only when the list
    /// is empty (changes).
    Latest(String),
    /// `/M/@v/V.info`, `.mod` or `.zip` for a canonical version V (never changes).
    Version {
        /// Escaped module path.
        module: String,
        /// Escaped canonical version.
        version: String,
        /// Which file.
        file: VersionFile,
    },
    /// `/M/@v/QUERY.info` for a branch, tag or other query: answers change.
    Query {
        /// Escaped module path.
        module: String,
        /// Escaped query.
        query: String,
    },
    /// `/sumdb/DB/...`: the checksum database `DB` through this proxy.
    Sumdb {
        /// The database's name (`sum.golang.org` and the like).
        db: String,
        /// Which of its paths.
        path: SumdbPath,
    },
    /// Anything else: passed uncached.
    Pass,
}

/// The files of one module version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VersionFile {
    /// `V.info`: `{"Version": .., "Time": ..}`.
    Info,
    /// `V.mod`: the go.mod (its hash is the `/go.mod h1:` of go.sum).
    Mod,
    /// `V.zip`: the module zip (its hash is the `h1:` of go.sum).
    Zip,
}

impl VersionFile {
    /// The file extension, without the dot.
    pub fn as_str(self) -> &'static str {
        match self {
            VersionFile::Info => "info",
            VersionFile::Mod => "mod",
            VersionFile::Zip => "zip",
        }
    }
}

/// A path under `/sumdb/DB/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SumdbPath {
    /// `supported`: the proxy's answer whether it proxies DB (200, else 404/410
    /// and go asks the database directly). A document.
    Supported,
    /// `latest`: the signed tree head. A document.
    Latest,
    /// `lookup/M@V`: the record of one module version, immutable once it exists.
    Lookup {
        /// Escaped module path.
        module: String,
        /// Escaped version.
        version: String,
    },
    /// `tile/H/L/N[.p/W]` or `tile/H/data/N[.p/W]`: immutable tiles of the log
    /// (a partial tile of width W never changes either).
    Tile(String),
}

/// Classifies `path` (raw, after `/NAME`). The path is percent-decoded first,
/// so `%21shout` and `!shout` are one module.
pub fn route(path: &str) -> Route {
    let Ok(decoded) = percent_decode_str(path).decode_utf8() else {
        return Route::Pass;
    };
    let Some(rest) = decoded.strip_prefix('/') else {
        return Route::Pass;
    };
    if let Some(sumdb) = rest.strip_prefix("sumdb/") {
        return sumdb_route(sumdb);
    }
    if let Some(module) = rest.strip_suffix("/@latest") {
        return match unescape(module) {
            Some(_) if is_module_path(module) => Route::Latest(module.to_string()),
            _ => Route::Pass,
        };
    }
    let Some((module, file)) = rest.split_once("/@v/") else {
        return Route::Pass;
    };
    if !is_module_path(module) || unescape(module).is_none() {
        return Route::Pass;
    }
    if file == "list" {
        return Route::List(module.to_string());
    }
    let Some((version, ext)) = file.rsplit_once('.') else {
        return Route::Pass;
    };
    let file = match ext {
        "info" => VersionFile::Info,
        "mod" => VersionFile::Mod,
        "zip" => VersionFile::Zip,
        _ => return Route::Pass,
    };
    let Some(unescaped) = unescape(version).filter(|v| !v.is_empty() && !v.contains('/')) else {
        return Route::Pass;
    };
    if is_canonical(&unescaped) {
        Route::Version {
            module: module.to_string(),
            version: version.to_string(),
            file,
        }
    } else if file == VersionFile::Info && is_query(&unescaped) {
        Route::Query {
            module: module.to_string(),
            query: version.to_string(),
        }
    } else {
        Route::Pass
    }
}

fn sumdb_route(rest: &str) -> Route {
    let Some((db, tail)) = rest.split_once('/') else {
        return Route::Pass;
    };
    let db_ok = !db.is_empty()
        && !db.starts_with('.')
        && db
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.".contains(&b));
    if !db_ok {
        return Route::Pass;
    }
    let path = match tail {
        "supported" => SumdbPath::Supported,
        "latest" => SumdbPath::Latest,
        _ => {
            if let Some(record) = tail.strip_prefix("lookup/") {
                let Some((module, version)) = record.rsplit_once('@') else {
                    return Route::Pass;
                };
                let valid = is_module_path(module)
                    && unescape(module).is_some()
                    && unescape(version).is_some_and(|v| is_canonical(&v));
                if !valid {
                    return Route::Pass;
                }
                SumdbPath::Lookup {
                    module: module.to_string(),
                    version: version.to_string(),
                }
            } else if let Some(tile) = tail.strip_prefix("tile/") {
                if !is_tile(tile) {
                    return Route::Pass;
                }
                SumdbPath::Tile(tile.to_string())
            } else {
                return Route::Pass;
            }
        }
    };
    Route::Sumdb {
        db: db.to_string(),
        path,
    }
}

/// `H/L/N[.p/W]` or `H/data/N[.p/W]` (golang.org/x/mod/sumdb/tlog): H and W
/// small numbers, L a level, N in 3-digit groups, all but the last led by `x`.
fn is_tile(tile: &str) -> bool {
    let parts: Vec<&str> = tile.split('/').collect();
    let (height, level, index) = match parts.as_slice() {
        [h, l, index @ ..] if !index.is_empty() => (h, l, index),
        _ => return false,
    };
    let small = |s: &str| !s.is_empty() && s.len() <= 2 && s.bytes().all(|b| b.is_ascii_digit());
    if !small(height) || !(small(level) || *level == "data") {
        return false;
    }
    // A partial tile ends in `NNN.p/W`.
    let (index, width) = match index {
        [groups @ .., last, w] if last.ends_with(".p") => {
            let mut all: Vec<&str> = groups.to_vec();
            all.push(&last[..last.len() - 2]);
            (all, Some(*w))
        }
        all => (all.to_vec(), None),
    };
    let digits3 = |s: &str| s.len() == 3 && s.bytes().all(|b| b.is_ascii_digit());
    let Some((last, groups)) = index.split_last() else {
        return false;
    };
    let groups_ok = groups
        .iter()
        .all(|g| g.strip_prefix('x').is_some_and(digits3));
    let width_ok = width.is_none_or(|w| {
        !w.is_empty() && w.len() <= 3 && w.bytes().all(|b| b.is_ascii_digit()) && w != "0"
    });
    digits3(last) && groups_ok && width_ok
}

/// An escaped module path's shape: `/`-separated elements of lower-case
/// letters, digits, `-._~` and `!` escapes, none empty, none led or ended by
/// a dot (golang.org/x/mod/module.CheckPath, escaped).
fn is_module_path(escaped: &str) -> bool {
    !escaped.is_empty()
        && escaped.len() <= 1024
        && escaped.split('/').all(|elem| {
            !elem.is_empty()
                && !elem.starts_with('.')
                && !elem.ends_with('.')
                && elem
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._~!".contains(&b))
        })
}

/// A query `go` may ask `.info` for: a branch, tag or commit name.
fn is_query(query: &str) -> bool {
    query.len() <= 255
        && query
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+".contains(&b))
}

/// Escapes a module path or version for the protocol: each upper-case letter
/// becomes `!` and its lower case (golang.org/x/mod/module.EscapePath).
/// `None` for a `!` or a non-ASCII character, which no module path has.
pub fn escape(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len() + 4);
    for c in s.chars() {
        match c {
            '!' => return None,
            'A'..='Z' => {
                out.push('!');
                out.push(c.to_ascii_lowercase());
            }
            c if c.is_ascii() => out.push(c),
            _ => return None,
        }
    }
    Some(out)
}

/// The inverse of [`escape`]: `None` for an upper-case letter, a `!` not
/// followed by a lower-case letter, or non-ASCII (module.UnescapePath).
pub fn unescape(escaped: &str) -> Option<String> {
    let mut out = String::with_capacity(escaped.len());
    let mut bang = false;
    for c in escaped.chars() {
        if !c.is_ascii() {
            return None;
        }
        if bang {
            bang = false;
            if !c.is_ascii_lowercase() {
                return None;
            }
            out.push(c.to_ascii_uppercase());
        } else if c == '!' {
            bang = true;
        } else if c.is_ascii_uppercase() {
            return None;
        } else {
            out.push(c);
        }
    }
    (!bang).then_some(out)
}

/// Whether `v` is a canonical module version (golang.org/x/mod/module
/// CanonicalVersion): `vMAJOR.MINOR.PATCH`, an optional `-prerelease` and
/// no build metadata but `+incompatible`; numbers without leading zeros.
pub fn is_canonical(v: &str) -> bool {
    let Some(rest) = v.strip_prefix('v') else {
        return false;
    };
    let rest = rest.strip_suffix("+incompatible").unwrap_or(rest);
    let (core, pre) = match rest.split_once('-') {
        Some((core, pre)) => (core, Some(pre)),
        None => (rest, None),
    };
    let number = |n: &str| {
        !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && (n == "0" || !n.starts_with('0'))
    };
    let core_ok = {
        let parts: Vec<&str> = core.split('.').collect();
        parts.len() == 3 && parts.iter().all(|p| number(p))
    };
    let pre_ok = pre.is_none_or(|pre| {
        pre.split('.').all(|id| {
            !id.is_empty()
                && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && (!id.bytes().all(|b| b.is_ascii_digit()) || number(id))
        })
    });
    core_ok && pre_ok
}

/// Whether an upstream status means "no such module or version" in the GOPROXY
/// protocol: 404 and 410, on which `go` moves to the next entry of a
/// comma-separated GOPROXY list. Any other failure stops it, so a proxy must
/// pass these two as they are and never answer them for an upstream it could
/// not reach.
pub fn is_not_found(status: u16) -> bool {
    status == 404 || status == 410
}

/// The path on a module proxy (after the mount) of one version's file, from
/// the module path and version as go.sum spells them (unescaped).
pub fn version_path(module: &str, version: &str, file: VersionFile) -> Option<String> {
    Some(format!(
        "/{}/@v/{}.{}",
        escape(module)?,
        escape(version)?,
        file.as_str()
    ))
}

/// Go: lists, `@latest`, query answers and the sumdb's `supported` and
/// `latest` are documents; a canonical version's files and sumdb lookups and
/// tiles never change. Paths are fetched with `!` unencoded.
pub(super) fn classify(mount: &Mount, path: &str) -> Class {
    let decoded = || percent_decode_str(path).decode_utf8_lossy().into_owned();
    match route(path) {
        Route::List(_)
        | Route::Latest(_)
        | Route::Query { .. }
        | Route::Sumdb {
            path: SumdbPath::Supported | SumdbPath::Latest,
            ..
        } => {
            let decoded = decoded();
            keyed_document(mount, &decoded, &decoded, None)
        }
        Route::Version { .. }
        | Route::Sumdb {
            path: SumdbPath::Lookup { .. } | SumdbPath::Tile(_),
            ..
        } => Class::Artifact {
            upstream: MountUpstream::Sources,
            path: decoded(),
        },
        Route::Pass => Class::Pass,
    }
}

#[cfg(test)]
mod tests;
