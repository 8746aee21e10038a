//! `Authority` and `SourceUrl`: an upstream host and an upstream URL as the
//! options name them, normalised once (lower case, default port dropped,
//! no trailing `/`, userinfo moved to a credential), so that equal hosts
//! compare equal everywhere after.

use super::upstream::{self, redact_userinfo};
use super::{Credential, Error};
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

/// One `--source` mirror: scheme, authority and path prefix (no trailing `/`),
/// and the operator's credential for its origin, if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceUrl {
    /// `http` or `https`.
    pub https: bool,
    /// Normalised authority (never with userinfo).
    pub authority: Authority,
    /// Path prefix, empty or starting with `/`, never ending with `/`.
    pub prefix: String,
    /// Sent as `Authorization` to this origin only: the URL's
    /// `user:password@`, or a mount's `--mirror-auth` file.
    pub credential: Option<Credential>,
}

impl SourceUrl {
    /// Parses an absolute `http://` or `https://` URL. Its userinfo, if any,
    /// becomes the credential (`Basic`) and leaves the URL.
    pub fn try_new(url: &str) -> Result<SourceUrl, Error> {
        let err = |reason| Error::Source {
            url: redact_userinfo(url),
            reason,
        };
        let uri: Uri = url.parse().map_err(|_| err("not a URL"))?;
        let https = match uri.scheme() {
            Some(s) if *s == Scheme::HTTP => false,
            Some(s) if *s == Scheme::HTTPS => true,
            _ => return Err(err("the scheme must be http or https")),
        };
        let raw_auth = uri.authority().ok_or_else(|| err("no host"))?.as_str();
        let (userinfo, raw_auth) = upstream::split_userinfo(raw_auth);
        let authority = Authority::try_new(raw_auth, https).map_err(|_| err("bad host"))?;
        let credential = userinfo
            .map(|(user, password)| Credential::basic(authority.as_str(), &user, &password))
            .transpose()
            .map_err(err)?;
        if uri.query().is_some() {
            return Err(err("a query string is not allowed"));
        }
        let prefix = uri.path().trim_end_matches('/').to_string();
        Ok(SourceUrl {
            https,
            authority,
            prefix,
            credential,
        })
    }

    /// Whether `other` has the same scheme and authority.
    pub fn same_origin(&self, other: &SourceUrl) -> bool {
        self.https == other.https && self.authority == other.authority
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
