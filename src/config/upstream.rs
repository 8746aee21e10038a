//! Upstream access settings parsed from the command line: the hosts a
//! redirect may lead to although they resolve to a special address
//! (`--allow-redirect-host`).

use super::Error;

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
}
