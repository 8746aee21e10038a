//! PEP 691 JSON pages: `files[].url` (and PEP 740 `files[].provenance`) is re-pointed at the
//! proxy; every other value — PEP 700 `upload-time`, `size`, PEP 658/714 `core-metadata` and
//! `dist-info-metadata`, `yanked`, `requires-python` — and the key order (serde_json's
//! `preserve_order`) are kept.

use serde_json::Value;
use url::Url;

use super::{hash_value_sha256, map_link, sha256_hex, Error, Link, Rewritten};

/// Rewrites a PEP 691 JSON page fetched from `page_url` (the final URL after redirects).
///
/// Each `files[].url` is resolved against `page_url` and, without its fragment, given to `map`;
/// `Some(path)` makes it `path` plus the original `#fragment`, `None` leaves it as it was.
/// Hashes come from `hashes.sha256` (else a `#sha256=` fragment) and from `core-metadata`,
/// else `dist-info-metadata`, when that is `{"sha256": ..}`. Pages with nothing rewritten
/// (project lists, pages without mappable files) are returned byte for byte.
/// Fails only when `body` is not JSON ([`Error::Json`]).
pub fn rewrite_json(
    body: &[u8],
    page_url: &Url,
    map: &dyn Fn(&Url) -> Option<String>,
) -> Result<Rewritten, Error> {
    let mut page: Value = serde_json::from_slice(body).map_err(Error::Json)?;
    let mut hashes = Vec::new();
    let mut unmapped = 0;
    let mut rewrote = false;

    let files = page.get_mut("files").and_then(Value::as_array_mut);
    for file in files.into_iter().flatten().filter_map(Value::as_object_mut) {
        // PEP 740: the file's provenance leads through the cache too.
        let provenance = file
            .get("provenance")
            .and_then(Value::as_str)
            .map(str::to_owned);
        if let Some(Link::Mapped { path, fragment }) =
            provenance.as_deref().map(|p| map_link(p, page_url, map))
        {
            let value = match fragment {
                Some(fragment) => format!("{path}#{fragment}"),
                None => path,
            };
            file.insert("provenance".to_owned(), Value::String(value));
            rewrote = true;
        }
        let Some(url) = file.get("url").and_then(Value::as_str).map(str::to_owned) else {
            continue;
        };
        let (path, fragment) = match map_link(&url, page_url, map) {
            Link::Mapped { path, fragment } => (path, fragment),
            Link::Unmapped(_) => {
                unmapped += 1;
                continue;
            }
            Link::Invalid => continue,
        };
        let sha256 = file
            .get("hashes")
            .and_then(|hashes| hashes.get("sha256")?.as_str())
            .and_then(sha256_hex)
            .or_else(|| fragment.and_then(hash_value_sha256));
        if let Some(hash) = sha256 {
            hashes.push((path.clone(), hash));
        }
        // PEP 714 renamed dist-info-metadata; the new name wins when both exist.
        let metadata = ["core-metadata", "dist-info-metadata"]
            .iter()
            .find_map(|key| sha256_hex(file.get(*key)?.get("sha256")?.as_str()?));
        if let Some(hash) = metadata {
            hashes.push((format!("{path}.metadata"), hash));
        }
        let new_url = match fragment {
            Some(fragment) => format!("{path}#{fragment}"),
            None => path,
        };
        file.insert("url".to_owned(), Value::String(new_url));
        rewrote = true;
    }

    let body = if rewrote {
        serde_json::to_vec(&page).map_err(Error::Json)?.into()
    } else {
        bytes::Bytes::copy_from_slice(body)
    };
    Ok(Rewritten {
        body,
        hashes,
        unmapped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "8abb2f1d86890a2dfb989f9a77cfcfd3e47c2a354b01111771326f8aa26e0254";

    fn map(url: &Url) -> Option<String> {
        (url.host_str()? == "files.example")
            .then(|| format!("/pypi/files/files.example{}", url.path()))
    }

    fn page() -> Url {
        Url::parse("https://pypi.example/simple/six/").expect("valid url")
    }

    #[test]
    fn file_urls_rewritten_with_order_and_hashes() {
        let upper = SHA.to_ascii_uppercase();
        let meta = "c".repeat(64);
        let body = format!(
            r#"{{"meta":{{"api-version":"1.1","_last-serial":3}},"name":"six","versions":["1.16.0"],"files":[{{"filename":"six.whl","url":"https://files.example/p/six.whl","hashes":{{"sha256":"{upper}","md5":"00"}},"requires-python":">=2.7","core-metadata":{{"sha256":"{meta}"}},"dist-info-metadata":{{"sha256":"{meta}"}},"yanked":false,"size":11053,"upload-time":"2021-05-05T14:18:17.123456Z"}},{{"url":"../../p/rel.tar.gz#sha256={SHA}","filename":"rel.tar.gz","hashes":{{}},"dist-info-metadata":true}},{{"filename":"other.whl","url":"https://other.example/other.whl","hashes":{{"sha256":"{SHA}"}}}}]}}"#
        );
        let out = rewrite_json(body.as_bytes(), &page(), &map).expect("json");
        let expected = body
            .replace(
                "https://files.example/p/six.whl",
                "/pypi/files/files.example/p/six.whl",
            )
            .replace(
                "../../p/rel.tar.gz#",
                "/pypi/files/files.example/p/rel.tar.gz#",
            );
        // The relative url resolves to pypi.example, which this map declines.
        assert_eq!(
            String::from_utf8_lossy(&out.body),
            expected.replace("/pypi/files/files.example/p/rel", "../../p/rel")
        );
        assert_eq!(
            out.hashes,
            vec![
                (
                    "/pypi/files/files.example/p/six.whl".to_owned(),
                    SHA.to_owned()
                ),
                (
                    "/pypi/files/files.example/p/six.whl.metadata".to_owned(),
                    meta
                ),
            ]
        );
        assert_eq!(out.unmapped, 2);
    }

    #[test]
    fn relative_url_fragment_kept_and_hash_taken_from_it() {
        let body = format!(
            r#"{{"files":[{{"url":"../../p/rel.tar.gz#sha256={SHA}","hashes":{{}},"core-metadata":true,"dist-info-metadata":{{"sha256":"{SHA}"}}}}]}}"#
        );
        let all = |url: &Url| Some(format!("/pypi/files/{}{}", url.host_str()?, url.path()));
        let out = rewrite_json(body.as_bytes(), &page(), &all).expect("json");
        let path = "/pypi/files/pypi.example/p/rel.tar.gz";
        assert_eq!(
            String::from_utf8_lossy(&out.body),
            body.replace("../../p/rel.tar.gz", path)
        );
        assert_eq!(
            out.hashes,
            vec![
                (path.to_owned(), SHA.to_owned()),
                (format!("{path}.metadata"), SHA.to_owned())
            ]
        );
    }

    #[test]
    fn supply_chain_fields_survive_and_provenance_goes_through_the_proxy() {
        let body = format!(
            r#"{{"meta":{{"api-version":"1.3"}},"files":[{{"filename":"x.whl","url":"https://files.example/p/x.whl","hashes":{{"sha256":"{SHA}"}},"upload-time":"2024-12-04T10:41:03.123456Z","size":11053,"provenance":"https://files.example/integrity/x/1.0/x.whl/provenance","core-metadata":{{"sha256":"{SHA}"}},"dist-info-metadata":{{"sha256":"{SHA}"}},"yanked":false}},{{"filename":"y.whl","url":"https://files.example/p/y.whl","hashes":{{}},"provenance":null}}]}}"#
        );
        let out = rewrite_json(body.as_bytes(), &page(), &map).expect("json");
        let expected = body
            .replace("https://files.example/p/", "/pypi/files/files.example/p/")
            .replace(
                "https://files.example/integrity/",
                "/pypi/files/files.example/integrity/",
            );
        assert_eq!(String::from_utf8_lossy(&out.body), expected);
    }

    #[test]
    fn project_list_unchanged() {
        let body = br#"{ "meta": {"api-version": "1.1"}, "projects": [{"name": "Six"}, {"name": "zope.interface"}] }"#;
        let out = rewrite_json(body, &page(), &map).expect("json");
        assert_eq!(out.body, &body[..]);
        assert!(out.hashes.is_empty());
    }

    #[test]
    fn odd_shapes_are_tolerated() {
        for body in [
            &b"[]"[..],
            b"42",
            br#"{"files":7}"#,
            br#"{"files":[1,{"url":5},{"url":"http://[::1"}]}"#,
        ] {
            let out = rewrite_json(body, &page(), &map).expect("json");
            assert_eq!(out.body, body);
        }
    }

    #[test]
    fn not_json_is_an_error() {
        let err = rewrite_json(b"<html></html>", &page(), &map).expect_err("not json");
        assert!(matches!(err, Error::Json(_)));
        assert!(rewrite_json(b"\xff", &page(), &map).is_err());
    }
}
