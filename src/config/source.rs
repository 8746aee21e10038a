//! `Authority` and `SourceUrl`: an upstream host and an upstream URL as the
//! options name them, normalised once (lower case, default port dropped,
//! no trailing `/`), so that equal hosts compare equal everywhere after.

use super::Error;
use http::uri::{Scheme, Uri};

/// An upstream host as `host` or `host:port` (lower case, default port omitted).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Authority(String);

impl Authority {
    /// Normalises `host[:port]` for `scheme`. Rejects anything that is not a
    /// plain host name, IPv4 address or bracketed IPv6 address.
    pub fn try_new(raw: &str, https: bool) -> Result<Authority, Error> {
        let auth: http::uri::Authority = raw.parse().map_err(|_| Error::Host(raw.to_string()))?;
        if raw.contains('@') {
            return Err(Error::Host(raw.to_string()));
        }
        let host = auth.host().to_ascii_lowercase();
        // The host names a directory under `.package-cache-hosts/`: no empty,
        // dot-led or dots-only names.
        let valid = !host.is_empty()
            && !host.starts_with('.')
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b));
        if !valid {
            return Err(Error::Host(raw.to_string()));
        }
        let default_port = if https { 443 } else { 80 };
        Ok(match auth.port_u16() {
            Some(port) if port != default_port => Authority(format!("{host}:{port}")),
            _ => Authority(host),
        })
    }

    /// The normalised text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One `--source` mirror: scheme, authority and path prefix (no trailing `/`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceUrl {
    /// `http` or `https`.
    pub https: bool,
    /// Normalised authority.
    pub authority: Authority,
    /// Path prefix, empty or starting with `/`, never ending with `/`.
    pub prefix: String,
}

impl SourceUrl {
    /// Parses an absolute `http://` or `https://` URL.
    pub fn try_new(url: &str) -> Result<SourceUrl, Error> {
        let err = |reason| Error::Source {
            url: url.to_string(),
            reason,
        };
        let uri: Uri = url.parse().map_err(|_| err("not a URL"))?;
        let https = match uri.scheme() {
            Some(s) if *s == Scheme::HTTP => false,
            Some(s) if *s == Scheme::HTTPS => true,
            _ => return Err(err("the scheme must be http or https")),
        };
        let raw_auth = uri.authority().ok_or_else(|| err("no host"))?.as_str();
        let authority = Authority::try_new(raw_auth, https).map_err(|_| err("bad host"))?;
        if uri.query().is_some() {
            return Err(err("a query string is not allowed"));
        }
        let prefix = uri.path().trim_end_matches('/').to_string();
        Ok(SourceUrl {
            https,
            authority,
            prefix,
        })
    }

    /// `scheme://authority`.
    pub fn origin(&self) -> String {
        format!(
            "{}://{}",
            if self.https { "https" } else { "http" },
            self.authority.as_str()
        )
    }

    /// The URL for a raw (still encoded) path and query on this source.
    pub fn url_for(&self, path_and_query: &str) -> String {
        format!("{}{}{}", self.origin(), self.prefix, path_and_query)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse_with_prefixes() {
        let s = SourceUrl::try_new("http://Mirror-A.example/gentoo/").unwrap();
        assert_eq!(s.authority.as_str(), "mirror-a.example");
        assert_eq!(s.prefix, "/gentoo");
        assert_eq!(
            s.url_for("/distfiles/x%2By"),
            "http://mirror-a.example/gentoo/distfiles/x%2By"
        );
        let s = SourceUrl::try_new("https://h:8443").unwrap();
        assert_eq!(s.url_for("/a"), "https://h:8443/a");
        assert_eq!(
            SourceUrl::try_new("https://h:443/")
                .unwrap()
                .authority
                .as_str(),
            "h"
        );
        assert!(SourceUrl::try_new("ftp://h/").is_err());
        assert!(SourceUrl::try_new("/relative").is_err());
        assert!(SourceUrl::try_new("http://u@h/").is_err());
    }

    #[test]
    fn authorities_normalise() {
        assert_eq!(
            Authority::try_new("Example.ORG:80", false)
                .unwrap()
                .as_str(),
            "example.org"
        );
        assert_eq!(
            Authority::try_new("[::1]:8080", false).unwrap().as_str(),
            "[::1]:8080"
        );
        assert!(Authority::try_new("a b", false).is_err());
        assert!(Authority::try_new("", false).is_err());
        assert!(Authority::try_new("..", false).is_err());
        assert!(Authority::try_new(".hidden", false).is_err());
    }
}
