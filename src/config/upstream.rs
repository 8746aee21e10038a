//! Upstream access settings parsed from the command line: the hosts a
//! redirect may lead to although they resolve to a special address
//! (`--allow-redirect-host`), and the userinfo of a source URL — taken out of
//! the URL, so that every URL the app logs or stores is free of it.

use super::Error;
use percent_encoding::percent_decode_str;

/// A `--allow-redirect-host` entry: a host name or IP address (IPv6 in
/// brackets, as in URLs), optionally with a port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowedHost {
    /// Lower-case host as a URL spells it (`[::1]` for IPv6).
    pub host: String,
    /// Only this port, when given.
    pub port: Option<u16>,
}

impl AllowedHost {
    /// Parses `HOST` or `HOST:PORT`.
    pub fn try_new(raw: &str) -> Result<AllowedHost, Error> {
        let bad = || Error::Host(raw.to_string());
        if raw.contains(['@', '/']) {
            return Err(bad());
        }
        let auth: http::uri::Authority = raw.parse().map_err(|_| bad())?;
        let host = auth.host().to_ascii_lowercase();
        if host.is_empty() {
            return Err(bad());
        }
        let port = match auth.as_str().strip_prefix(auth.host()) {
            Some("") => None,
            Some(rest) => Some(
                rest.strip_prefix(':')
                    .and_then(|p| p.parse().ok())
                    .ok_or_else(bad)?,
            ),
            None => return Err(bad()),
        };
        Ok(AllowedHost { host, port })
    }

    /// Whether a URL's `host` (as `url::Url::host_str` gives it) and `port` match.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        self.host.eq_ignore_ascii_case(host) && self.port.is_none_or(|p| p == port)
    }
}

/// `(user, password)` decoded from the userinfo of an authority
/// (`user:password@host`), and the authority without it.
pub(super) fn split_userinfo(authority: &str) -> (Option<(String, String)>, &str) {
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return (None, authority);
    };
    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
    (Some((decode(user), decode(password))), host)
}

/// `url` with any userinfo replaced by `***`, for messages.
pub fn redact_userinfo(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(i) => (&url[..i + 3], &url[i + 3..]),
        None => ("", url),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => format!("{scheme}***@{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_hosts_parse_with_optional_ports() {
        let a = AllowedHost::try_new("Mirror.Example").unwrap();
        assert!(a.matches("mirror.example", 80) && a.matches("mirror.example", 8080));
        let a = AllowedHost::try_new("127.0.0.1:8080").unwrap();
        assert!(a.matches("127.0.0.1", 8080) && !a.matches("127.0.0.1", 8081));
        let a = AllowedHost::try_new("[::1]").unwrap();
        assert!(a.matches("[::1]", 1));
        for bad in ["", "u@h", "h/x", "h:port", ":80", "h:99999", "h:"] {
            assert!(AllowedHost::try_new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn userinfo_is_split_decoded_and_redacted() {
        assert_eq!(split_userinfo("h:1"), (None, "h:1"));
        assert_eq!(
            split_userinfo("u%40x:p%3Aw@h:1"),
            (Some(("u@x".into(), "p:w".into())), "h:1")
        );
        assert_eq!(
            split_userinfo("tok@h"),
            (Some(("tok".into(), "".into())), "h")
        );
        assert_eq!(redact_userinfo("http://u:secret@h/a@b"), "http://***@h/a@b");
        assert_eq!(redact_userinfo("http://h/a@b"), "http://h/a@b");
        assert_eq!(redact_userinfo("u:secret@h"), "***@h");
    }
}
