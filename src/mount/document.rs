//! What an index document fetched for a mount becomes before the cache keeps
//! and serves it: one pure entry point, [`rewrite_document`], dispatching on
//! the mount's profile. PyPI simple pages are rewritten so that every file
//! link leads through the cache, and the digests they list are returned;
//! every other document (RubyGems, Gentoo, PyPI's JSON API) is kept byte for
//! byte with its headers, so RubyGems' MD5 ETags keep matching their bodies.
//! npm packuments and version manifests get every `dist.tarball` led through
//! the cache and list their integrity; Cargo's `config.json` gets a `dl` on
//! the cache (the registry's own `dl` is kept beside it, in
//! `upstream_note`). Policy filters plug in here too, not in the proxy. No I/O and no logging: what did not go as
//! planned is in the result, for the caller to log.

use super::{cargo, npm, pypi, DocSpec, Repr};
use crate::config::{Authority, Mount, Profile};
use crate::digest::Digest;
use bytes::Bytes;
use sha2::{Digest as _, Sha256};
use url::Url;

/// A document as the cache keeps it.
#[derive(Debug)]
pub struct Rewritten {
    /// The body to store and serve.
    pub body: Bytes,
    /// The headers to store and send with it (lower-case names): the
    /// upstream's, with `ETag` and `Content-Length` replaced when the body
    /// changed, since the upstream's validator no longer names it.
    pub headers: Vec<(String, String)>,
    /// The files the document lists with their digests, by raw path under
    /// the mount (`/packages/…`, `/files/HOST/…`), as a request names them.
    pub listed: Vec<(String, Digest)>,
    /// Links to hosts the mount does not serve, left as they were: those
    /// downloads bypass the cache.
    pub unmapped_links: usize,
    /// Why a document of a kind its profile rewrites is kept as sent.
    pub unrewritten: Option<Error>,
    /// What the upstream's document said that `body` no longer does and
    /// later requests need: a Cargo registry's own `dl`
    /// ([`super::cargo::download_upstream`]).
    pub upstream_note: Option<String>,
}

/// Why a document could not be rewritten (it is then kept as sent).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A PyPI page that is not valid HTML or JSON of its kind.
    #[error(transparent)]
    Pypi(#[from] pypi::Error),
    /// An npm packument that is not JSON.
    #[error(transparent)]
    Npm(#[from] npm::Error),
    /// A Cargo `config.json` without a usable `dl`.
    #[error(transparent)]
    Cargo(#[from] cargo::Error),
}

/// The stored form of the document `spec` of `mount`, fetched from
/// `page_url` (after redirects) with `headers` (the upstream's end-to-end
/// headers, lower-case names) and `body`. `mount_url` is the absolute URL
/// clients reach the mount at (`--public-url` and `/NAME`, no trailing `/`),
/// for the documents whose clients need absolute links (npm, Cargo); never
/// one built from a request's `Host`, since the document is kept and served
/// to every client.
pub fn rewrite_document(
    mount: &Mount,
    spec: &DocSpec,
    page_url: &str,
    headers: &[(String, String)],
    body: Bytes,
    mount_url: &str,
) -> Rewritten {
    match (mount.profile, spec.repr) {
        (Profile::Pypi, Some(_)) => pypi_page(mount, page_url, headers, body),
        (Profile::Npm, Some(Repr::Npm(_))) => packument(mount, page_url, headers, body, mount_url),
        (Profile::Cargo, _) if spec.path == "/config.json" => {
            cargo_config(headers, body, mount_url)
        }
        (
            Profile::Pypi
            | Profile::Rubygems
            | Profile::Gentoo
            | Profile::Generic
            | Profile::Npm
            | Profile::Cargo
            | Profile::Go,
            _,
        ) => as_sent(headers, body),
    }
}

/// An npm packument or version manifest: tarballs through the cache, their
/// integrity listed. Every other byte is kept.
fn packument(
    mount: &Mount,
    page_url: &str,
    headers: &[(String, String)],
    body: Bytes,
    mount_url: &str,
) -> Rewritten {
    let Ok(page_url) = Url::parse(page_url) else {
        return as_sent(headers, body);
    };
    match npm::rewrite_for(mount, mount_url, &page_url, body.clone()) {
        Ok(rewritten) => Rewritten {
            headers: revalidated_headers(headers, &rewritten.body, Some(&body)),
            body: rewritten.body,
            listed: rewritten.digests,
            unmapped_links: rewritten.unmapped,
            unrewritten: None,
            upstream_note: None,
        },
        Err(err) => Rewritten {
            unrewritten: Some(err.into()),
            ..as_sent(headers, body)
        },
    }
}

/// Cargo's `config.json`: `dl` on the cache, the registry's own kept aside.
fn cargo_config(headers: &[(String, String)], body: Bytes, mount_url: &str) -> Rewritten {
    match cargo::rewrite_config(&body, mount_url) {
        Ok(rewritten) => Rewritten {
            headers: revalidated_headers(headers, &rewritten.body, Some(&body)),
            body: rewritten.body,
            listed: Vec::new(),
            unmapped_links: 0,
            unrewritten: None,
            upstream_note: Some(rewritten.upstream_dl),
        },
        Err(err) => Rewritten {
            unrewritten: Some(err.into()),
            ..as_sent(headers, body)
        },
    }
}

/// The upstream's headers for a body the cache changed (`new`; `old` is the
/// upstream's, `None` when it surely changed): its validator and length named
/// the upstream's body, so they give way to the new body's.
fn revalidated_headers(
    headers: &[(String, String)],
    new: &[u8],
    old: Option<&[u8]>,
) -> Vec<(String, String)> {
    if old == Some(new) {
        return headers.to_vec();
    }
    let etag = format!("\"{}\"", &hex::encode(Sha256::digest(new))[..32]);
    let mut headers: Vec<(String, String)> = headers
        .iter()
        .filter(|(name, _)| name != "etag" && name != "content-length")
        .cloned()
        .collect();
    headers.push(("etag".into(), etag));
    headers
}

fn as_sent(headers: &[(String, String)], body: Bytes) -> Rewritten {
    Rewritten {
        body,
        headers: headers.to_vec(),
        listed: Vec::new(),
        unmapped_links: 0,
        unrewritten: None,
        upstream_note: None,
    }
}

/// A PEP 503 (HTML) or PEP 691 (JSON) page: links through the cache.
fn pypi_page(
    mount: &Mount,
    page_url: &str,
    headers: &[(String, String)],
    body: Bytes,
) -> Rewritten {
    let Ok(page_url) = Url::parse(page_url) else {
        return as_sent(headers, body);
    };
    let is_json = header(headers, "content-type").is_some_and(|t| t.contains("json"));
    let map = |link: &Url| proxy_path(mount, link);
    let rewritten = if is_json {
        pypi::rewrite_json(&body, &page_url, &map)
    } else {
        pypi::rewrite_html(&body, &page_url, &map)
    };
    let rewritten = match rewritten {
        Ok(rewritten) => rewritten,
        Err(err) => {
            return Rewritten {
                unrewritten: Some(err.into()),
                ..as_sent(headers, body)
            }
        }
    };
    let prefix = format!("/{}", mount.name);
    let listed = rewritten
        .hashes
        .iter()
        .filter_map(|(path, sha)| {
            let under_mount = path.strip_prefix(&prefix)?;
            Some((under_mount.to_string(), Digest::sha256(sha)?))
        })
        .collect();
    Rewritten {
        headers: revalidated_headers(headers, &rewritten.body, None),
        body: rewritten.body,
        listed,
        unmapped_links: rewritten.unmapped,
        unrewritten: None,
        upstream_note: None,
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// The proxy path (`/NAME/…`, raw, query kept) for a link to a file on the
/// mount's sources or on one of its files hosts; `None` for anything else,
/// which a page keeps as it was.
pub fn proxy_path(mount: &Mount, link: &Url) -> Option<String> {
    let https = match link.scheme() {
        "http" => false,
        "https" => true,
        _ => return None,
    };
    let host = link.host_str()?;
    let authority = match link.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    };
    let authority = Authority::try_new(&authority, https).ok()?;
    let tail = |prefix: &str| -> Option<String> {
        let rest = link.path().strip_prefix(prefix)?;
        if !rest.starts_with('/') {
            return None;
        }
        Some(match link.query() {
            Some(q) => format!("{rest}?{q}"),
            None => rest.to_string(),
        })
    };
    for source in &mount.sources {
        if source.https == https && source.authority == authority {
            if let Some(rest) = tail(&source.prefix) {
                return Some(format!("/{}{rest}", mount.name));
            }
        }
    }
    for files in &mount.files_hosts {
        if files.https == https && files.authority == authority {
            if let Some(rest) = tail(&files.prefix) {
                return Some(format!(
                    "/{}/files/{}{rest}",
                    mount.name,
                    authority.as_str()
                ));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SourceUrl;
    use crate::mount::{classify, Class};

    fn mount(profile: Profile) -> Mount {
        Mount {
            name: "m".into(),
            profile,
            sources: vec![SourceUrl::try_new("http://index.example/").unwrap()],
            files_hosts: vec![SourceUrl::try_new("http://files.example:8080/").unwrap()],
            index_path: None,
            go_sums: Vec::new(),
        }
    }

    fn spec(m: &Mount, path: &str, accept: Option<&str>) -> DocSpec {
        match classify(m, path, accept) {
            Class::Document(spec) => spec,
            other => panic!("{other:?}"),
        }
    }

    const MOUNT_URL: &str = "http://cache.example:4000/m";

    fn upstream_headers(content_type: &str) -> Vec<(String, String)> {
        vec![
            ("content-type".into(), content_type.into()),
            ("etag".into(), "\"upstream\"".into()),
            ("content-length".into(), "123".into()),
        ]
    }

    #[test]
    fn pypi_pages_lead_through_the_cache_and_list_their_digests() {
        let m = mount(Profile::Pypi);
        let sha = "ab".repeat(32);
        let page = format!(
            "<a href=\"http://files.example:8080/packages/a-1.whl#sha256={sha}\">a</a>\n\
             <a href=\"/packages/b-1.whl\">b</a>\n\
             <a href=\"http://elsewhere.example/c-1.whl\">c</a>\n"
        );
        let got = rewrite_document(
            &m,
            &spec(&m, "/simple/a/", Some("text/html")),
            "http://index.example/simple/a/",
            &upstream_headers("text/html"),
            Bytes::from(page),
            MOUNT_URL,
        );
        let body = String::from_utf8(got.body.to_vec()).unwrap();
        assert!(body.contains("href=\"/m/files/files.example:8080/packages/a-1.whl#sha256="));
        assert!(body.contains("href=\"/m/packages/b-1.whl\""));
        assert_eq!(
            got.listed,
            vec![(
                "/files/files.example:8080/packages/a-1.whl".to_string(),
                Digest::sha256(&sha).unwrap()
            )]
        );
        assert_eq!(got.unmapped_links, 1);
        assert!(got.unrewritten.is_none());
        let etag = header(&got.headers, "etag").unwrap();
        assert_ne!(
            etag, "\"upstream\"",
            "the body changed, so does its validator"
        );
        assert!(header(&got.headers, "content-length").is_none());
        assert_eq!(header(&got.headers, "content-type"), Some("text/html"));
    }

    #[test]
    fn other_documents_are_kept_byte_for_byte_with_their_headers() {
        let body = Bytes::from_static(b"created_at: x\n---\na 1.0 abc\n");
        for (profile, path) in [
            (Profile::Rubygems, "/versions"),
            (Profile::Gentoo, "/distfiles/layout.conf"),
            (Profile::Pypi, "/pypi/a/json"),
        ] {
            let m = mount(profile);
            let headers = upstream_headers("text/plain");
            let got = rewrite_document(
                &m,
                &spec(&m, path, None),
                &format!("http://index.example{path}"),
                &headers,
                body.clone(),
                MOUNT_URL,
            );
            assert_eq!((&got.body, &got.headers), (&body, &headers), "{path}");
            assert!(got.listed.is_empty() && got.unrewritten.is_none());
        }
    }

    #[test]
    fn npm_packuments_lead_tarballs_through_the_cache_and_list_their_integrity() {
        let m = mount(Profile::Npm);
        let integrity = format!("sha512-{}", "A".repeat(86) + "==");
        let body = format!(
            r#"{{"name":"@s/a","time":{{"1.0.0":"2026-01-01"}},"versions":{{"1.0.0":{{"dist":{{"tarball":"http://index.example/@s/a/-/a-1.0.0.tgz","integrity":"{integrity}","signatures":[{{"keyid":"k"}}]}}}},"2.0.0":{{"dist":{{"tarball":"http://files.example:8080/a-2.0.0.tgz","shasum":"{}"}}}},"3.0.0":{{"dist":{{"tarball":"http://elsewhere.example/a-3.tgz"}}}}}}}}"#,
            "ab".repeat(20)
        );
        for accept in ["application/json", "application/vnd.npm.install-v1+json"] {
            let got = rewrite_document(
                &m,
                &spec(&m, "/@s%2fa", Some(accept)),
                "http://index.example/@s%2fa",
                &upstream_headers("application/json"),
                Bytes::from(body.clone()),
                MOUNT_URL,
            );
            let doc: serde_json::Value = serde_json::from_slice(&got.body).unwrap();
            let dist = |v: &str| doc["versions"][v]["dist"].clone();
            assert_eq!(
                dist("1.0.0")["tarball"],
                "http://cache.example:4000/m/@s/a/-/a-1.0.0.tgz"
            );
            assert_eq!(dist("1.0.0")["signatures"][0]["keyid"], "k");
            assert_eq!(doc["time"]["1.0.0"], "2026-01-01");
            assert_eq!(
                dist("2.0.0")["tarball"],
                "http://cache.example:4000/m/_files/files.example:8080/a-2.0.0.tgz"
            );
            assert_eq!(dist("3.0.0")["tarball"], "http://elsewhere.example/a-3.tgz");
            assert_eq!(
                got.listed,
                vec![
                    (
                        "/@s/a/-/a-1.0.0.tgz".into(),
                        Digest::from_sri(&integrity).unwrap()
                    ),
                    (
                        "/_files/files.example:8080/a-2.0.0.tgz".into(),
                        Digest::from_hex("sha1", &"ab".repeat(20)).unwrap()
                    ),
                ]
            );
            assert_eq!(got.unmapped_links, 1);
            assert_ne!(header(&got.headers, "etag"), Some("\"upstream\""));
        }
    }

    #[test]
    fn cargo_config_gets_the_cache_dl_and_keeps_the_registrys() {
        let m = mount(Profile::Cargo);
        let body = Bytes::from_static(
            br#"{"dl":"http://files.example:8080/crates","api":"http://index.example"}"#,
        );
        let got = rewrite_document(
            &m,
            &spec(&m, "/config.json", None),
            "http://index.example/config.json",
            &upstream_headers("application/json"),
            body,
            MOUNT_URL,
        );
        let config: serde_json::Value = serde_json::from_slice(&got.body).unwrap();
        assert_eq!(
            config["dl"],
            "http://cache.example:4000/m/api/v1/crates/{crate}/{version}/download"
        );
        assert_eq!(config["api"], "http://index.example");
        assert_eq!(
            got.upstream_note.as_deref(),
            Some("http://files.example:8080/crates")
        );
        // Index files pass byte for byte.
        let line = Bytes::from_static(b"{\"name\":\"abc\",\"vers\":\"0.1.0\",\"pubtime\":\"x\"}\n");
        let headers = upstream_headers("text/plain");
        let got = rewrite_document(
            &m,
            &spec(&m, "/3/a/abc", None),
            "http://index.example/3/a/abc",
            &headers,
            line.clone(),
            MOUNT_URL,
        );
        assert_eq!((&got.body, &got.headers), (&line, &headers));
    }

    #[test]
    fn a_page_that_cannot_be_read_is_kept_as_sent() {
        let m = mount(Profile::Pypi);
        let body = Bytes::from_static(b"{not json");
        let headers = upstream_headers("application/vnd.pypi.simple.v1+json");
        let got = rewrite_document(
            &m,
            &spec(
                &m,
                "/simple/a/",
                Some("application/vnd.pypi.simple.v1+json"),
            ),
            "http://index.example/simple/a/",
            &headers,
            body.clone(),
            MOUNT_URL,
        );
        assert_eq!((&got.body, &got.headers), (&body, &headers));
        assert!(matches!(got.unrewritten, Some(Error::Pypi(_))));
    }
}
