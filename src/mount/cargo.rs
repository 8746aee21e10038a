//! Cargo sparse registries: which paths are `config.json`, index files
//! (`1/a`, `2/ab`, `3/a/abc`, `ab/cd/name`) and crate downloads; the rewriting
//! of `config.json` so that `dl` points at the cache; the expansion of the
//! upstream's `dl` template for one crate; and the `cksum` an index line lists
//! for a version. Index files themselves pass byte for byte (`pubtime`,
//! `yanked` and fields unknown here included). Pure: no I/O.

use super::{artifact, document, Class};
use crate::config::Mount;
use crate::digest::Digest;
use bytes::Bytes;

/// Where the cache serves crate downloads on a Cargo mount: the default
/// layout of a registry's `dl` (`…/api/v1/crates/{crate}/{version}/download`).
/// `api` has 3 letters, so no index file (`3/a/abc`, `ab/cd/…`) can be here.
pub const DOWNLOADS: &str = "/api/v1/crates";

/// Why `config.json` could not be rewritten.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Not a JSON object.
    #[error("config.json is not a json object")]
    Json(#[source] Option<serde_json::Error>),
    /// No `dl` string: cargo could not download from this registry either.
    #[error("config.json has no dl")]
    NoDl,
}

/// What a path (after the mount's `/NAME`) is on a sparse registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// `/config.json`.
    Config,
    /// An index file, for the crate named (lower case) here.
    Index(String),
    /// A crate download on the cache's own `dl` ([`DOWNLOADS`]).
    Download {
        /// The crate's name as cargo spells it (case kept).
        krate: String,
        /// Its version.
        version: String,
    },
    /// Anything else: passed uncached.
    Pass,
}

/// Classifies `path` (raw, after `/NAME`).
pub fn route(path: &str) -> Route {
    if path == "/config.json" {
        return Route::Config;
    }
    if let Some(rest) = path
        .strip_prefix(DOWNLOADS)
        .and_then(|r| r.strip_prefix('/'))
    {
        return match rest.split('/').collect::<Vec<_>>().as_slice() {
            [krate, version, "download"] if is_crate_name(krate) && is_version(version) => {
                Route::Download {
                    krate: krate.to_string(),
                    version: version.to_string(),
                }
            }
            _ => Route::Pass,
        };
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Route::Pass;
    };
    let name = rest.rsplit('/').next().unwrap_or_default();
    // Cargo asks for index files in lower case only; another spelling is not one.
    let lower = name.bytes().all(|b| !b.is_ascii_uppercase());
    if lower && is_crate_name(name) && index_path(name).as_deref() == Some(rest) {
        return Route::Index(name.to_string());
    }
    Route::Pass
}

/// The index file of crate `name` (relative, lower case): `1/a`, `2/ab`,
/// `3/a/abc`, `ab/cd/abcd…`. `None` for a name cargo would not accept.
pub fn index_path(name: &str) -> Option<String> {
    if !is_crate_name(name) {
        return None;
    }
    let name = name.to_ascii_lowercase();
    Some(match name.len() {
        1 => format!("1/{name}"),
        2 => format!("2/{name}"),
        3 => format!("3/{}/{name}", &name[..1]),
        _ => format!("{}/{}/{name}", &name[..2], &name[2..4]),
    })
}

/// Crate names: ASCII letters, digits, `-` and `_`, at most 64 bytes.
fn is_crate_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A semver version's characters (cargo checks the rest).
fn is_version(version: &str) -> bool {
    !version.is_empty()
        && version.len() <= 128
        && version.starts_with(|c: char| c.is_ascii_digit())
        && version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.+".contains(&b))
}

/// The `dl` the cache writes into `config.json`: [`DOWNLOADS`] under
/// `mount_url`, the absolute URL clients reach the mount at (cargo refuses a
/// `dl` without a host).
pub fn proxy_dl(mount_url: &str) -> String {
    format!("{mount_url}{DOWNLOADS}/{{crate}}/{{version}}/download")
}

/// `config.json` as the cache serves it.
#[derive(Debug)]
pub struct RewrittenConfig {
    /// `dl` replaced by [`proxy_dl`]; `api`, `auth-required` and every other
    /// field as the upstream sent them, in their order.
    pub body: Bytes,
    /// The upstream's own `dl`, for [`download_url`].
    pub upstream_dl: String,
}

/// Rewrites a registry's `config.json` so crates are downloaded through the
/// mount at `mount_url`. `api` is kept: it serves publishing, yanking, owners
/// and search, which are writes or live queries that a cache must not answer,
/// so cargo keeps sending them to the registry itself (and refuses to publish
/// to a replaced source anyway).
pub fn rewrite_config(body: &[u8], mount_url: &str) -> Result<RewrittenConfig, Error> {
    let mut config: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| Error::Json(Some(e)))?;
    let object = config.as_object_mut().ok_or(Error::Json(None))?;
    let upstream_dl = object
        .get("dl")
        .and_then(|dl| dl.as_str())
        .ok_or(Error::NoDl)?
        .to_string();
    object.insert("dl".into(), proxy_dl(mount_url).into());
    let body = serde_json::to_vec(&config).map_err(|e| Error::Json(Some(e)))?;
    Ok(RewrittenConfig {
        body: body.into(),
        upstream_dl,
    })
}

/// The upstream URL of a crate, from the registry's `dl`, as cargo builds it:
/// with none of the markers `{crate}`, `{version}`, `{prefix}`,
/// `{lowerprefix}`, `{sha256-checksum}`, `/{crate}/{version}/download` is
/// appended; otherwise each marker is replaced (`prefix` is the index
/// directory of the crate's name in its own case). `None` when the template
/// needs the checksum and none is known, or the name is not a crate name.
pub fn download_url(
    dl: &str,
    krate: &str,
    version: &str,
    cksum: Option<&Digest>,
) -> Option<String> {
    const MARKERS: [&str; 5] = [
        "{crate}",
        "{version}",
        "{prefix}",
        "{lowerprefix}",
        "{sha256-checksum}",
    ];
    if !MARKERS.iter().any(|m| dl.contains(m)) {
        return Some(format!("{dl}/{krate}/{version}/download"));
    }
    let lower = index_path(krate)?;
    let dir_len = lower.rfind('/').expect("an index path has a directory");
    // The same directory in the name's own case (the path is ASCII).
    let prefix = match krate.len() {
        1 | 2 => lower[..dir_len].to_string(),
        3 => format!("3/{}", &krate[..1]),
        _ => format!("{}/{}", &krate[..2], &krate[2..4]),
    };
    let mut url = dl
        .replace("{crate}", krate)
        .replace("{version}", version)
        .replace("{prefix}", &prefix)
        .replace("{lowerprefix}", &lower[..dir_len]);
    if url.contains("{sha256-checksum}") {
        let Some(Digest::Sha256(sha)) = cksum else {
            return None;
        };
        url = url.replace("{sha256-checksum}", &hex::encode(sha));
    }
    Some(url)
}

/// Where a crate download of `mount` comes from: the upstream `dl` (from the
/// stored `config.json`) expanded for the crate, on one of the mount's sources
/// or files hosts. `None` when the template cannot be expanded or points at a
/// host the operator did not configure.
pub fn download_upstream(
    mount: &Mount,
    upstream_dl: &str,
    krate: &str,
    version: &str,
    cksum: Option<&Digest>,
) -> Option<(crate::mount::MountUpstream, String)> {
    let url = url::Url::parse(&download_url(upstream_dl, krate, version, cksum)?).ok()?;
    super::link::locate(mount, &url)
}

/// One version of a crate, as one line of its index file says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    /// The crate's name (case as published).
    pub name: String,
    /// The version.
    pub version: String,
    /// The sha256 of the `.crate`, when the line has a valid one.
    pub cksum: Option<Digest>,
    /// Whether the version is yanked (cargo does not choose it for new locks).
    pub yanked: bool,
}

#[derive(serde::Deserialize)]
struct Line {
    name: String,
    vers: String,
    cksum: Option<String>,
    #[serde(default)]
    yanked: bool,
}

/// The entries of an index file (one JSON object a line); lines that do not
/// parse are skipped, as cargo skips them.
pub fn index_entries(index: &[u8]) -> Vec<IndexEntry> {
    index
        .split(|&b| b == b'\n')
        .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
        .filter_map(|line| serde_json::from_slice::<Line>(line).ok())
        .map(|line| IndexEntry {
            cksum: line
                .cksum
                .as_deref()
                .and_then(|hex| Digest::from_hex("sha256", hex)),
            name: line.name,
            version: line.vers,
            yanked: line.yanked,
        })
        .collect()
}

/// The `cksum` that index file `index` lists for `krate` (any case) at
/// `version`: what a download of that `.crate` must hash to.
pub fn checksum_for(index: &[u8], krate: &str, version: &str) -> Option<Digest> {
    index_entries(index)
        .into_iter()
        .rev() // a republished line (which registries never write) would come last
        .find(|e| e.name.eq_ignore_ascii_case(krate) && e.version == version)?
        .cksum
}

/// Cargo: `config.json` and index files are documents; a download on the
/// cache's own `dl` is an artifact. Its upstream path here is the default
/// `dl` layout on the sources (`/api/v1/crates/C/V/download`); a registry
/// whose `dl` is elsewhere needs the stored `config.json`
/// ([`download_url`]) to find it.
pub(super) fn classify(mount: &Mount, path: &str) -> Class {
    match route(path) {
        Route::Config | Route::Index(_) => document(mount, path, None),
        Route::Download { .. } => artifact(path),
        Route::Pass => Class::Pass,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_paths_follow_the_name_length_rules() {
        assert_eq!(index_path("z").as_deref(), Some("1/z"));
        assert_eq!(index_path("xy").as_deref(), Some("2/xy"));
        assert_eq!(index_path("abc").as_deref(), Some("3/a/abc"));
        assert_eq!(
            index_path("fixture-core").as_deref(),
            Some("fi/xt/fixture-core")
        );
        assert_eq!(index_path("UpCase").as_deref(), Some("up/ca/upcase"));
        assert_eq!(index_path("a/b"), None);
        assert_eq!(index_path(""), None);
    }

    #[test]
    fn routes() {
        assert_eq!(route("/config.json"), Route::Config);
        for (path, name) in [
            ("/1/z", "z"),
            ("/2/xy", "xy"),
            ("/3/a/abc", "abc"),
            ("/fi/xt/fixture-core", "fixture-core"),
            ("/up/ca/upcase", "upcase"),
            ("/se/rd/serde_json", "serde_json"),
        ] {
            assert_eq!(route(path), Route::Index(name.into()), "{path}");
        }
        assert_eq!(
            route("/api/v1/crates/UpCase/0.1.0/download"),
            Route::Download {
                krate: "UpCase".into(),
                version: "0.1.0".into()
            }
        );
        assert_eq!(
            route("/api/v1/crates/abc/1.0.0-rc.1+build.5/download"),
            Route::Download {
                krate: "abc".into(),
                version: "1.0.0-rc.1+build.5".into()
            }
        );
        for pass in [
            "/",
            "/1/ab",
            "/2/a",
            "/3/b/abc",
            "/3/a/abcd",
            "/ab/ce/abcd",
            "/ab/cd/abcd/x",
            "/Up/Ca/UpCase",
            "/up/ca/UpCase",
            "/api/v1/crates/abc/1.0.0",
            "/api/v1/crates/abc/1.0.0/download/x",
            "/api/v1/crates/a%2fb/1.0.0/download",
            "/api/v1/crates/abc/x.0/download",
            "/api/v1/crates",
            "/me",
            "config.json",
        ] {
            assert_eq!(route(pass), Route::Pass, "{pass}");
        }
    }

    #[test]
    fn config_gets_the_proxy_dl_and_keeps_the_rest() {
        let body = br#"{"dl":"https://static.example/crates","api":"https://registry.example","auth-required":false,"extra":[1,2]}"#;
        let out = rewrite_config(body, "http://cache.example:4000/crates").expect("rewrites");
        assert_eq!(out.upstream_dl, "https://static.example/crates");
        assert_eq!(
            String::from_utf8_lossy(&out.body),
            r#"{"dl":"http://cache.example:4000/crates/api/v1/crates/{crate}/{version}/download","api":"https://registry.example","auth-required":false,"extra":[1,2]}"#
        );
        assert!(matches!(
            rewrite_config(b"[]", "http://c"),
            Err(Error::Json(None))
        ));
        assert!(matches!(
            rewrite_config(b"<html>", "http://c"),
            Err(Error::Json(Some(_)))
        ));
        assert!(matches!(
            rewrite_config(br#"{"api":"x","dl":5}"#, "http://c"),
            Err(Error::NoDl)
        ));
    }

    #[test]
    fn download_urls_follow_cargo() {
        let sum = Digest::Sha256([0xab; 32]);
        assert_eq!(
            download_url("http://r.example/api/v1/crates", "UpCase", "0.1.0", None).as_deref(),
            Some("http://r.example/api/v1/crates/UpCase/0.1.0/download")
        );
        let template =
            "https://s.example/{prefix}/{lowerprefix}/{crate}/{crate}-{version}.crate?h={sha256-checksum}";
        assert_eq!(
            download_url(template, "UpCase", "0.1.0", Some(&sum)).as_deref(),
            Some(
                format!(
                    "https://s.example/Up/Ca/up/ca/UpCase/UpCase-0.1.0.crate?h={}",
                    "ab".repeat(32)
                )
                .as_str()
            )
        );
        assert_eq!(
            download_url("https://s.example/{prefix}/{crate}", "Abc", "1.0.0", None).as_deref(),
            Some("https://s.example/3/A/Abc")
        );
        assert_eq!(
            download_url(
                "https://s.example/{lowerprefix}/{crate}",
                "z",
                "1.0.0",
                None
            )
            .as_deref(),
            Some("https://s.example/1/z")
        );
        assert_eq!(download_url(template, "abc", "0.1.0", None), None);
        assert_eq!(
            download_url(template, "abc", "0.1.0", Some(&Digest::Sha1([0; 20]))),
            None
        );
    }

    #[test]
    fn index_lines_give_checksums_and_yanked_flags() {
        let a = "a".repeat(64);
        let b = "B".repeat(64);
        let index = format!(
            "{{\"name\":\"abc\",\"vers\":\"0.1.0\",\"deps\":[],\"cksum\":\"{a}\",\"features\":{{}},\"yanked\":false,\"pubtime\":\"2026-01-01T00:00:00Z\"}}\n\
             not json\n\
             \n\
             {{\"name\":\"Abc\",\"vers\":\"0.2.1\",\"deps\":[],\"cksum\":\"{b}\",\"features\":{{}},\"yanked\":true,\"v\":2,\"features2\":{{}}}}\n\
             {{\"name\":\"abc\",\"vers\":\"0.3.0\",\"cksum\":\"short\"}}"
        );
        let entries = index_entries(index.as_bytes());
        assert_eq!(entries.len(), 3);
        assert!(!entries[0].yanked && entries[1].yanked);
        assert_eq!(
            checksum_for(index.as_bytes(), "ABC", "0.1.0"),
            Some(Digest::Sha256([0xaa; 32]))
        );
        assert_eq!(
            checksum_for(index.as_bytes(), "abc", "0.2.1"),
            Some(Digest::Sha256([0xbb; 32]))
        );
        assert_eq!(checksum_for(index.as_bytes(), "abc", "0.3.0"), None);
        assert_eq!(checksum_for(index.as_bytes(), "abc", "9.9.9"), None);
        assert_eq!(checksum_for(index.as_bytes(), "xyz", "0.1.0"), None);
    }

    #[test]
    fn cargo_index_files_are_documents_and_downloads_artifacts() {
        let m = crate::mount::tests::mount(crate::config::Profile::Cargo);
        for p in [
            "/config.json",
            "/1/z",
            "/2/xy",
            "/3/a/abc",
            "/fi/xt/fixture-core",
        ] {
            match crate::mount::classify(&m, p, None) {
                Class::Document(spec) => {
                    assert_eq!((spec.path.as_str(), spec.repr), (p, None));
                    assert_eq!(spec.key, format!("m\n{p}\n-"));
                }
                other => panic!("{p}: {other:?}"),
            }
        }
        assert_eq!(
            crate::mount::classify(&m, "/api/v1/crates/abc/0.2.0/download", None),
            Class::Artifact {
                upstream: crate::mount::MountUpstream::Sources,
                path: "/api/v1/crates/abc/0.2.0/download".into()
            }
        );
        assert_eq!(crate::mount::classify(&m, "/3/b/abc", None), Class::Pass);
        assert_eq!(
            crate::mount::classify(&m, "/api/v1/crates/new", None),
            Class::Pass
        );
    }

    #[test]
    fn downloads_are_fetched_only_from_configured_hosts() {
        use crate::mount::MountUpstream;
        let m = crate::mount::tests::mount(crate::config::Profile::Cargo);
        assert_eq!(
            download_upstream(
                &m,
                "http://index.example/api/v1/crates",
                "abc",
                "0.2.0",
                None
            ),
            Some((
                MountUpstream::Sources,
                "/api/v1/crates/abc/0.2.0/download".into()
            ))
        );
        assert_eq!(
            download_upstream(
                &m,
                "http://files.example:8080/crates/{crate}/{crate}-{version}.crate",
                "UpCase",
                "0.1.0",
                None
            ),
            Some((
                MountUpstream::Files(0),
                "/crates/UpCase/UpCase-0.1.0.crate".into()
            ))
        );
        assert_eq!(
            download_upstream(&m, "https://elsewhere.example/dl", "abc", "0.2.0", None),
            None
        );
    }
}
