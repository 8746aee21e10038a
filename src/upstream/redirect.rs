//! Following redirects: where a `Location` leads (resolved against the
//! current URL, http(s) only, never with userinfo), whether two URLs share an
//! origin (scheme, host, port), and whether a hop would leave https for http.

use super::Error;
use http::{header, HeaderMap};

pub(super) fn same_origin(a: &str, b: &str) -> bool {
    match (url::Url::parse(a), url::Url::parse(b)) {
        (Ok(a), Ok(b)) => a.origin() == b.origin(),
        _ => false,
    }
}

/// Whether following `from` → `to` leaves https for http.
pub(super) fn is_downgrade(from: &str, to: &str) -> bool {
    from.starts_with("https:") && to.starts_with("http:")
}

pub(super) fn redirect_target(current: &str, headers: &HeaderMap) -> Result<String, Error> {
    let bad = |reason| Error::Redirect {
        url: current.to_string(),
        reason,
    };
    let location = headers
        .get(header::LOCATION)
        .ok_or_else(|| bad("no Location"))?;
    let location = location.to_str().map_err(|_| bad("Location is not text"))?;
    let base = url::Url::parse(current).map_err(|_| bad("current URL unparsable"))?;
    let next = base
        .join(location)
        .map_err(|_| bad("Location unparsable"))?;
    if next.scheme() != "http" && next.scheme() != "https" {
        return Err(bad("Location is not http(s)"));
    }
    // Credentials in a Location are the upstream's to give, not to us: they
    // would be logged and stored with the URL, and are never sent.
    let mut next = next;
    let _ = next.set_username("");
    let _ = next.set_password(None);
    Ok(next.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn loc(l: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::LOCATION, HeaderValue::from_str(l).unwrap());
        h
    }

    #[test]
    fn origins_compare_scheme_host_and_port() {
        assert!(same_origin("http://a/x", "http://a:80/y"));
        assert!(!same_origin("http://a/x", "https://a/x"));
        assert!(!same_origin("http://a/x", "http://b/x"));
        assert!(!same_origin("http://a:1/x", "http://a:2/x"));
    }

    #[test]
    fn only_https_to_http_is_a_downgrade() {
        assert!(is_downgrade("https://a/x", "http://a/x"));
        assert!(!is_downgrade("http://a/x", "https://b/x"));
        assert!(!is_downgrade("https://a/x", "https://b/x"));
        assert!(!is_downgrade("http://a/x", "http://b/x"));
    }

    #[test]
    fn redirects_resolve_against_the_current_url() {
        assert_eq!(
            redirect_target("http://a/x/y", &loc("/z")).unwrap(),
            "http://a/z"
        );
        assert_eq!(
            redirect_target("http://a/x/y", &loc("z")).unwrap(),
            "http://a/x/z"
        );
        assert_eq!(
            redirect_target("http://a/x", &loc("https://b/q")).unwrap(),
            "https://b/q"
        );
        assert_eq!(
            redirect_target("http://a/x", &loc("http://u:secret@b/q")).unwrap(),
            "http://b/q"
        );
        assert!(redirect_target("http://a/x", &loc("ftp://b/q")).is_err());
        assert!(redirect_target("http://a/x", &HeaderMap::new()).is_err());
    }
}
