//! Header hygiene between client, cache and upstream: hop-by-hop headers are
//! dropped both ways (RFC 9110 §7.6.1), and what is stored with an entry is
//! the upstream's end-to-end headers minus per-response ones.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Headers that describe one response, not the stored representation.
const NOT_STORED: &[&str] = &[
    "content-length",
    "set-cookie",
    "date",
    "age",
    "x-cache",
    "accept-ranges",
    "content-range",
];

fn connection_listed(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

fn is_hop(name: &str, listed: &[String]) -> bool {
    HOP_BY_HOP.contains(&name) || listed.iter().any(|l| l == name)
}

/// The upstream headers to store and replay with an entry.
pub fn storable(upstream: &HeaderMap) -> Vec<(String, String)> {
    let listed = connection_listed(upstream);
    upstream
        .iter()
        .filter(|(name, _)| !is_hop(name.as_str(), &listed) && !NOT_STORED.contains(&name.as_str()))
        .filter_map(|(name, value)| {
            Some((name.as_str().to_string(), value.to_str().ok()?.to_string()))
        })
        .collect()
}

/// The client's headers to forward on a pass-through request.
pub fn forwardable(client: &HeaderMap) -> HeaderMap {
    let listed = connection_listed(client);
    let mut out = HeaderMap::new();
    for (name, value) in client {
        if is_hop(name.as_str(), &listed) || name == header::HOST {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    out
}

/// A pass-through response's headers, hop-by-hop removed.
pub fn response_passable(upstream: &HeaderMap) -> HeaderMap {
    let listed = connection_listed(upstream);
    let mut out = HeaderMap::new();
    for (name, value) in upstream {
        if is_hop(name.as_str(), &listed) {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    out
}

/// Headers for a cache fill: the whole identity-encoded body, nothing conditional.
pub fn fill_request() -> HeaderMap {
    let mut out = HeaderMap::new();
    // Bodies are stored byte for byte; a compressed variant negotiated for one
    // client must not be served to another.
    out.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    out.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
    out
}

/// Converts stored headers back into a map, skipping any that became invalid.
pub fn to_map(stored: &[(String, String)]) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(stored.len() + 4);
    for (name, value) in stored {
        if let (Ok(name), Ok(value)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.as_str()),
        ) {
            out.append(name, value);
        }
    }
    out
}

/// Whether a response is an HTML page (what a login or captive portal sends).
pub fn is_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| {
            let t = t.trim_start().to_ascii_lowercase();
            t.starts_with("text/html") || t.starts_with("application/xhtml")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_never_cross() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("close, x-private"));
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("content-length", HeaderValue::from_static("5"));
        h.insert("etag", HeaderValue::from_static("\"e\""));
        h.insert("content-encoding", HeaderValue::from_static("gzip"));
        h.insert("set-cookie", HeaderValue::from_static("a=b"));
        let stored = storable(&h);
        let names: Vec<_> = stored.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(names.contains(&"etag") && names.contains(&"content-encoding"));
        let mut c = HeaderMap::new();
        c.insert("host", HeaderValue::from_static("x"));
        c.insert("keep-alive", HeaderValue::from_static("5"));
        c.insert("range", HeaderValue::from_static("bytes=0-1"));
        let f = forwardable(&c);
        assert_eq!(f.len(), 1);
        assert!(f.contains_key("range"));
    }
}
