//! PyPI simple-index support: PEP 691 content negotiation, PEP 503 name normalisation and the
//! rewriting of index pages so that every file link points back at the proxy.
//! It owns the page formats only; fetching, caching and verifying the files are the callers' job,
//! and which URLs the proxy can serve is decided by the caller's `map` function.

mod html;
mod json;

pub use html::rewrite_html;
pub use json::rewrite_json;

use url::Url;

/// The ways rewriting an index page can fail; all mean the upstream page is unusable as is.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The HTML page is not UTF-8 (PEP 503 pages from PyPI and its mirrors always are).
    #[error("index page is not valid utf-8")]
    NotUtf8(#[source] std::str::Utf8Error),
    /// The JSON page does not parse (or, in theory, does not serialise back).
    #[error("index page is not valid json")]
    Json(#[source] serde_json::Error),
    /// The HTML rewriter gave up; with the settings used here this is not expected in practice.
    #[error("rewriting html index page failed")]
    Html(#[source] lol_html::errors::RewritingError),
}

/// Which representation of a simple-index page (PEP 691).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Repr {
    /// `application/vnd.pypi.simple.v1+json`.
    Json,
    /// `application/vnd.pypi.simple.v1+html` (served to clients that only know `text/html` too).
    Html,
}

impl Repr {
    /// Content-Type that labels a stored page of this representation.
    pub fn media_type(self) -> &'static str {
        match self {
            Repr::Json => JSON_V1,
            Repr::Html => HTML_V1,
        }
    }

    /// The Accept header value to send upstream for this representation.
    pub fn accept_header(self) -> &'static str {
        match self {
            Repr::Json => JSON_V1,
            // Indexes that predate PEP 691 only know text/html; take it as a last resort.
            Repr::Html => "application/vnd.pypi.simple.v1+html, text/html;q=0.01",
        }
    }

    /// Short suffix for cache keys and logs: `"json"` / `"html"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Repr::Json => "json",
            Repr::Html => "html",
        }
    }
}

const JSON_V1: &str = "application/vnd.pypi.simple.v1+json";
const HTML_V1: &str = "application/vnd.pypi.simple.v1+html";
const JSON_TYPES: [&str; 2] = [JSON_V1, "application/vnd.pypi.simple.latest+json"];
const HTML_TYPES: [&str; 3] = [
    HTML_V1,
    "application/vnd.pypi.simple.latest+html",
    "text/html",
];

/// Chooses the representation for a client's Accept header, following PEP 691.
///
/// JSON is chosen only when a JSON type is listed explicitly with q > 0 and at least the q of
/// the best HTML type; wildcards (`*/*`, `application/*`, `text/*`) count for HTML only, and the
/// most specific matching range sets a type's q (RFC 9110 §12.5.1). Anything else, including
/// a missing, empty or unparseable header, gives [`Repr::Html`]. Never fails.
pub fn negotiate(accept: Option<&str>) -> Repr {
    // (specificity, q) per concrete type; specificity 0 means "not matched".
    let mut json = [(0u8, 0f32); JSON_TYPES.len()];
    let mut html = [(0u8, 0f32); HTML_TYPES.len()];
    for (range, q) in accept
        .unwrap_or("")
        .split(',')
        .filter_map(parse_accept_entry)
    {
        for (slot, ty) in json.iter_mut().zip(JSON_TYPES) {
            if range == ty {
                update(slot, 3, q);
            }
        }
        for (slot, ty) in html.iter_mut().zip(HTML_TYPES) {
            let family = ty.split_once('/').map_or("", |(family, _)| family);
            if range == ty {
                update(slot, 3, q);
            } else if range.strip_suffix("/*") == Some(family) {
                update(slot, 2, q);
            } else if range == "*/*" {
                update(slot, 1, q);
            }
        }
    }
    let best = |slots: &[(u8, f32)]| slots.iter().map(|&(_, q)| q).fold(0f32, f32::max);
    let (json_q, html_q) = (best(&json), best(&html));
    if json_q > 0.0 && json_q >= html_q {
        Repr::Json
    } else {
        Repr::Html
    }
}

fn update(slot: &mut (u8, f32), specificity: u8, q: f32) {
    if specificity > slot.0 {
        *slot = (specificity, q);
    } else if specificity == slot.0 {
        slot.1 = slot.1.max(q);
    }
}

/// One Accept element as (lower-cased media range, q); a malformed q is ignored (q = 1).
fn parse_accept_entry(entry: &str) -> Option<(String, f32)> {
    let mut parts = entry.split(';');
    let range = parts.next()?.trim().to_ascii_lowercase();
    if !range.contains('/') {
        return None;
    }
    let q = parts
        .filter_map(|param| param.split_once('='))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("q"))
        .and_then(|(_, value)| value.trim().parse::<f32>().ok())
        .filter(|q| (0.0..=1.0).contains(q))
        .unwrap_or(1.0);
    Some((range, q))
}

/// PEP 503 normalisation: lower case, runs of `-`, `_` and `.` become one `-`.
pub fn normalize_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut in_separator = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !in_separator {
                out.push('-');
            }
            in_separator = true;
        } else {
            in_separator = false;
            // Python's str.lower(), which PEP 503 uses, is Unicode-aware.
            out.extend(c.to_lowercase());
        }
    }
    out
}

/// Result of rewriting one page.
#[derive(Debug)]
pub struct Rewritten {
    /// The rewritten page bytes; the input bytes unchanged when nothing was rewritten.
    pub body: bytes::Bytes,
    /// (proxy path as written into the page, without fragment; lower-case hex sha256) for every
    /// rewritten file link that carried a sha256, and (path + ".metadata", sha256) for its
    /// PEP 658/714 metadata file when the page gives that hash. Invalid hex is skipped.
    pub hashes: Vec<(String, String)>,
    /// Links left as they were because `map` returned None (absolute URLs, for logging).
    pub unmapped: usize,
}

/// What became of one link.
enum Link<'a> {
    /// `map` accepted it: write `path` (+ `#fragment`).
    Mapped {
        path: String,
        fragment: Option<&'a str>,
    },
    /// `map` declined; the link resolved to this URL (fragment included).
    Unmapped(Url),
    /// The link does not parse as a URL, so it is left alone.
    Invalid,
}

/// Resolves an (already entity-decoded) link against `base` and asks `map` for a proxy path.
fn map_link<'a>(href: &'a str, base: &Url, map: &dyn Fn(&Url) -> Option<String>) -> Link<'a> {
    let (target, fragment) = match href.split_once('#') {
        Some((target, fragment)) => (target, Some(fragment)),
        None => (href, None),
    };
    let Ok(resolved) = base.join(target) else {
        return Link::Invalid;
    };
    match map(&resolved) {
        Some(path) => Link::Mapped { path, fragment },
        None => match base.join(href) {
            Ok(full) => Link::Unmapped(full),
            Err(_) => Link::Unmapped(resolved),
        },
    }
}

/// A sha256 in hex, validated and lower-cased.
fn sha256_hex(value: &str) -> Option<String> {
    (value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| value.to_ascii_lowercase())
}

/// The sha256 from a `<hashname>=<hex>` value, the form of PEP 503 URL fragments and of PEP 658
/// `data-core-metadata` attributes; `&`-separated extras are tolerated, as pip does.
fn hash_value_sha256(value: &str) -> Option<String> {
    value.split('&').find_map(|part| {
        let (name, hex) = part.split_once('=')?;
        if name.eq_ignore_ascii_case("sha256") {
            sha256_hex(hex)
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIP: &str = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01";

    #[test]
    fn negotiate_follows_pep_691() {
        assert_eq!(negotiate(Some(PIP)), Repr::Json);
        let browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
        assert_eq!(negotiate(Some(browser)), Repr::Html);
        assert_eq!(negotiate(None), Repr::Html);
        assert_eq!(negotiate(Some("")), Repr::Html);
        assert_eq!(negotiate(Some("*/*")), Repr::Html);
        assert_eq!(negotiate(Some("application/*")), Repr::Html);
        assert_eq!(negotiate(Some(&format!("{JSON_V1};q=0"))), Repr::Html);
        assert_eq!(
            negotiate(Some(&format!("{JSON_V1};q=0, */*;q=0.1"))),
            Repr::Html
        );
        assert_eq!(
            negotiate(Some(" Application/VND.PyPI.Simple.Latest+JSON ")),
            Repr::Json
        );
        // A tie goes to JSON because JSON is listed.
        assert_eq!(
            negotiate(Some(&format!("text/html, {JSON_V1}"))),
            Repr::Json
        );
        assert_eq!(
            negotiate(Some(&format!("text/html;q=0.9, {JSON_V1};q=0.5"))),
            Repr::Html
        );
        // Wildcards count for HTML, so a better-q `*/*` wins over a listed JSON.
        assert_eq!(
            negotiate(Some(&format!("{JSON_V1};q=0.5, */*"))),
            Repr::Html
        );
        assert_eq!(
            negotiate(Some(&format!("{JSON_V1};q=abc, text/html;q=0.5"))),
            Repr::Json
        );
        assert_eq!(negotiate(Some(",,;;=, /;q=,garbage;q=2")), Repr::Html);
        assert_eq!(negotiate(Some("text/html;q=0")), Repr::Html);
    }

    #[test]
    fn repr_strings() {
        assert_eq!(Repr::Json.media_type(), JSON_V1);
        assert_eq!(Repr::Html.media_type(), HTML_V1);
        assert_eq!(Repr::Json.accept_header(), JSON_V1);
        assert!(Repr::Html.accept_header().contains("text/html;q=0.01"));
        assert_eq!((Repr::Json.as_str(), Repr::Html.as_str()), ("json", "html"));
    }

    #[test]
    fn normalize_name_pep_503() {
        assert_eq!(normalize_name("Foo__Bar.baz"), "foo-bar-baz");
        assert_eq!(normalize_name("zope.interface"), "zope-interface");
        assert_eq!(normalize_name("a-_.-b"), "a-b");
        assert_eq!(normalize_name("six"), "six");
    }

    #[test]
    fn hash_parsing() {
        let hex = "AB".repeat(32);
        assert_eq!(sha256_hex(&hex), Some("ab".repeat(32)));
        assert_eq!(sha256_hex("abc"), None);
        assert_eq!(sha256_hex(&"g".repeat(64)), None);
        assert_eq!(
            hash_value_sha256(&format!("sha256={hex}")),
            Some("ab".repeat(32))
        );
        assert_eq!(
            hash_value_sha256(&format!("md5=00&sha256={hex}")),
            Some("ab".repeat(32))
        );
        assert_eq!(hash_value_sha256("true"), None);
        assert_eq!(hash_value_sha256(&format!("sha512={hex}")), None);
    }
}
