//! PEP 503 HTML pages: `<a href>` file links (and PEP 740 `data-provenance` links) are
//! re-pointed at the proxy with `lol_html`, which re-serialises only the tags it changes, so
//! text, other tags and other `data-*` values (PEP 658/714 `data-core-metadata`,
//! `data-dist-info-metadata`, `data-yanked`, `data-requires-python`) survive byte for byte
//! (attributes of a changed `<a>` keep their raw bytes; only the gaps become one space).

use lol_html::{element, HtmlRewriter, Settings};
use url::Url;

use super::{hash_value_sha256, map_link, Error, Link, Rewritten};

/// Rewrites a PEP 503 HTML page fetched from `page_url` (the final URL after redirects).
///
/// Each `<a href>` is entity-decoded, resolved against the document base URL (the first
/// `<base href>`, resolved against `page_url`, wherever it appears, as in HTML and pip) and,
/// without its fragment, given to `map`. `Some(path)` makes the href `path` plus the original
/// `#fragment`; `None` leaves the href as it was, except that a relative href is made absolute
/// when a `<base>` changed its meaning. Every `<base href>` element is removed, because it would
/// re-point the root-relative proxy paths. Malformed markup is passed through; never panics.
/// Fails only when `body` is not UTF-8 ([`Error::NotUtf8`]).
pub fn rewrite_html(
    body: &[u8],
    page_url: &Url,
    map: &dyn Fn(&Url) -> Option<String>,
) -> Result<Rewritten, Error> {
    std::str::from_utf8(body).map_err(Error::NotUtf8)?;
    let base = document_base(body, page_url)?;
    let base_changes_links = base != *page_url;

    let mut hashes = Vec::new();
    let mut unmapped = 0;
    let mut out = Vec::with_capacity(body.len() + body.len() / 8);
    let settings = settings()
        .append_element_content_handler(element!("base[href]", |el| {
            el.remove();
            Ok(())
        }))
        .append_element_content_handler(element!("a[href]", |el| {
            let Some(raw) = el.get_attribute("href") else {
                return Ok(());
            };
            let href = decode_entities(&raw);
            match map_link(&href, &base, map) {
                Link::Mapped { path, fragment } => {
                    let mut value = path.clone();
                    if let Some(fragment) = fragment {
                        value.push('#');
                        value.push_str(fragment);
                    }
                    el.set_attribute("href", &escape_attribute(&value))?;
                    if let Some(hash) = fragment.and_then(hash_value_sha256) {
                        hashes.push((path.clone(), hash));
                    }
                    // PEP 714 renamed data-dist-info-metadata; the new name wins when both exist.
                    let metadata = ["data-core-metadata", "data-dist-info-metadata"]
                        .iter()
                        .find_map(|name| {
                            hash_value_sha256(&decode_entities(&el.get_attribute(name)?))
                        });
                    if let Some(hash) = metadata {
                        hashes.push((format!("{path}.metadata"), hash));
                    }
                }
                Link::Unmapped(resolved) => {
                    unmapped += 1;
                    // With <base> gone, a relative href would resolve against the proxy's URL.
                    if base_changes_links && page_url.join(&href).ok().as_ref() != Some(&resolved) {
                        el.set_attribute("href", &escape_attribute(resolved.as_str()))?;
                    }
                }
                Link::Invalid => {}
            }
            // PEP 740: the provenance of the file leads through the cache too.
            if let Some(raw) = el.get_attribute("data-provenance") {
                let value = decode_entities(&raw);
                match map_link(&value, &base, map) {
                    Link::Mapped { path, fragment } => {
                        let mut rewritten = path;
                        if let Some(fragment) = fragment {
                            rewritten.push('#');
                            rewritten.push_str(fragment);
                        }
                        el.set_attribute("data-provenance", &escape_attribute(&rewritten))?;
                    }
                    Link::Unmapped(resolved)
                        if base_changes_links
                            && page_url.join(&value).ok().as_ref() != Some(&resolved) =>
                    {
                        el.set_attribute("data-provenance", &escape_attribute(resolved.as_str()))?;
                    }
                    Link::Unmapped(_) | Link::Invalid => {}
                }
            }
            Ok(())
        }));
    let mut rewriter = HtmlRewriter::new(settings, |chunk: &[u8]| out.extend_from_slice(chunk));
    rewriter.write(body).map_err(Error::Html)?;
    rewriter.end().map_err(Error::Html)?;

    Ok(Rewritten {
        body: out.into(),
        hashes,
        unmapped,
    })
}

fn settings<'h, 's>() -> Settings<'h, 's> {
    // Non-strict: an index page with odd nesting must still be served rather than rejected.
    Settings::new().with_strict(false)
}

/// The document base URL: the first `<base href>` that resolves, else the page URL (HTML
/// "document base URL"). A separate pass, because a `<base>` applies to links before it too.
fn document_base(body: &[u8], page_url: &Url) -> Result<Url, Error> {
    let mut base: Option<Url> = None;
    let settings = settings().append_element_content_handler(element!("base[href]", |el| {
        if base.is_none() {
            base = el
                .get_attribute("href")
                .and_then(|href| page_url.join(&decode_entities(&href)).ok());
        }
        Ok(())
    }));
    let mut scanner = HtmlRewriter::new(settings, |_: &[u8]| {});
    scanner.write(body).map_err(Error::Html)?;
    scanner.end().map_err(Error::Html)?;
    Ok(base.unwrap_or_else(|| page_url.clone()))
}

/// Decodes the character references an href realistically contains; unknown or malformed
/// references are kept literally, as HTML does for an `&` that starts nothing it knows.
fn decode_entities(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        // `&` is ASCII, so byte 1 onwards is a char boundary.
        let decoded = rest[1..].split_once(';').and_then(|(name, _)| {
            let c = match name {
                "amp" => '&',
                "lt" => '<',
                "gt" => '>',
                "quot" => '"',
                "apos" => '\'',
                _ => {
                    let number = name.strip_prefix('#')?;
                    let (digits, radix) = match number.strip_prefix(['x', 'X']) {
                        Some(hex) => (hex, 16),
                        None => (number, 10),
                    };
                    // from_str_radix alone would also take a sign.
                    if !digits.chars().all(|c| c.is_digit(radix)) {
                        return None;
                    }
                    char::from_u32(u32::from_str_radix(digits, radix).ok()?)
                        .filter(|&c| c != '\0')?
                }
            };
            Some((c, name.len() + 2))
        });
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = &rest[len..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Escapes a value for a double-quoted attribute; lol_html escapes `"` but not `&`.
fn escape_attribute(value: &str) -> String {
    value.replace('&', "&amp;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "8abb2f1d86890a2dfb989f9a77cfcfd3e47c2a354b01111771326f8aa26e0254";

    /// Serves every host but `other.example` under /pypi/files/<authority>/<path>[?query].
    fn map(url: &Url) -> Option<String> {
        let host = url.host_str()?;
        if host == "other.example" {
            return None;
        }
        let authority = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        let query = url.query().map(|q| format!("?{q}")).unwrap_or_default();
        Some(format!("/pypi/files/{authority}{}{query}", url.path()))
    }

    fn page() -> Url {
        Url::parse("https://pypi.example/simple/six/").expect("valid url")
    }

    fn rewrite(html: &str) -> (String, Rewritten) {
        let out = rewrite_html(html.as_bytes(), &page(), &map).expect("utf-8 page");
        (
            String::from_utf8(out.body.to_vec()).expect("utf-8 output"),
            out,
        )
    }

    #[test]
    fn absolute_link_rewritten_with_fragment_and_hash() {
        let (body, out) = rewrite(&format!(
            "<a href=\"https://files.example/packages/six.whl#sha256={SHA}\">six.whl</a>"
        ));
        assert_eq!(
            body,
            format!(
                "<a href=\"/pypi/files/files.example/packages/six.whl#sha256={SHA}\">six.whl</a>"
            )
        );
        let path = "/pypi/files/files.example/packages/six.whl";
        assert_eq!(out.hashes, vec![(path.to_owned(), SHA.to_owned())]);
        assert_eq!(out.unmapped, 0);

        // Tag and attribute names are case-insensitive in HTML.
        let (body, _) = rewrite("<A HREF=\"https://files.example/u.whl\" Data-Yanked>u</A>");
        assert_eq!(
            body,
            "<A HREF=\"/pypi/files/files.example/u.whl\" Data-Yanked>u</A>"
        );
    }

    #[test]
    fn relative_link_resolved_against_page() {
        let (body, out) = rewrite(&format!(
            "<a href='../../packages/x.whl#sha256={SHA}'>x</a>"
        ));
        let path = "/pypi/files/pypi.example/packages/x.whl";
        assert_eq!(body, format!("<a href=\"{path}#sha256={SHA}\">x</a>"));
        assert_eq!(out.hashes, vec![(path.to_owned(), SHA.to_owned())]);
    }

    #[test]
    fn base_href_honoured_and_removed() {
        let html = "<html><head><base href=\"https://files.example/root/\"></head>\
                    <body><a href=\"a.whl\">a</a></body></html>";
        let (body, _) = rewrite(html);
        assert_eq!(
            body,
            "<html><head></head><body><a href=\"/pypi/files/files.example/root/a.whl\">a</a></body></html>"
        );

        // Like pip and browsers, the first <base> applies to links before it too; a relative
        // link that map declines keeps pointing where <base> sent it.
        let html = "<a href=\"b.whl\">b</a><base href=\"//other.example/x/\">\
                    <base href=\"https://files.example/\"><a href=\"c.whl#frag\">c</a>";
        let (body, out) = rewrite(html);
        assert_eq!(
            body,
            "<a href=\"https://other.example/x/b.whl\">b</a><a href=\"https://other.example/x/c.whl#frag\">c</a>"
        );
        assert_eq!(out.unmapped, 2);

        // A declined absolute link stays as written even with a <base>.
        let html = "<base href=\"/elsewhere/\"><a  href=\"https://other.example/z\">z</a>";
        let (body, _) = rewrite(html);
        assert_eq!(body, "<a  href=\"https://other.example/z\">z</a>");
    }

    #[test]
    fn rejected_links_left_byte_identical() {
        let html = "<a  HREF='https://other.example/p/x.whl#sha256=AB&amp;x'\n data-yanked>x</a>\
                    <a href=../rel.whl?a=1&amp;b=2 class=x>rel</a>";
        let reject_all = |_: &Url| None;
        let out = rewrite_html(html.as_bytes(), &page(), &reject_all).expect("utf-8");
        assert_eq!(out.body, html.as_bytes());
        assert_eq!(out.unmapped, 2);
        assert!(out.hashes.is_empty());
    }

    #[test]
    fn data_attributes_preserved() {
        let html = format!(
            "<a href=\"https://files.example/x.whl#sha256={SHA}\" data-requires-python=\"&gt;=3.99\" \
             data-yanked=\"bad &amp; broken\" data-gpg-sig='true'>x</a>"
        );
        let (body, _) = rewrite(&html);
        assert_eq!(
            body,
            format!(
                "<a href=\"/pypi/files/files.example/x.whl#sha256={SHA}\" data-requires-python=\"&gt;=3.99\" \
                 data-yanked=\"bad &amp; broken\" data-gpg-sig='true'>x</a>"
            )
        );
    }

    #[test]
    fn supply_chain_attributes_survive_and_provenance_goes_through_the_proxy() {
        let meta = "c".repeat(64);
        let html = format!(
            "<a href=\"https://files.example/x.whl#sha256={SHA}\" \
             data-provenance=\"https://files.example/integrity/x/1.0/x.whl/provenance\" \
             data-core-metadata=\"sha256={meta}\" data-dist-info-metadata=\"sha256={meta}\" \
             data-requires-python=\"&gt;=3.8\">x</a>\
             <a href=\"https://files.example/y.whl\" data-provenance=\"../../integrity/y/provenance\">y</a>\
             <a href=\"https://files.example/z.whl\" data-provenance=\"https://other.example/p\">z</a>"
        );
        let (body, out) = rewrite(&html);
        assert!(
            body.contains(
                "data-provenance=\"/pypi/files/files.example/integrity/x/1.0/x.whl/provenance\""
            ),
            "{body}"
        );
        assert!(
            body.contains(&format!(
                "data-core-metadata=\"sha256={meta}\" data-dist-info-metadata=\"sha256={meta}\" \
             data-requires-python=\"&gt;=3.8\""
            )),
            "{body}"
        );
        // Relative to the page (on the index host), as PEP 740 allows.
        assert!(
            body.contains("data-provenance=\"/pypi/files/pypi.example/integrity/y/provenance\""),
            "{body}"
        );
        assert!(
            body.contains("data-provenance=\"https://other.example/p\""),
            "{body}"
        );
        assert_eq!(out.unmapped, 0, "a provenance link is not a file link");
    }

    #[test]
    fn metadata_hashes() {
        let meta = "C".repeat(64);
        let html = format!(
            "<a href=\"https://files.example/x.whl\" data-core-metadata=\"sha256={meta}\">x</a>\
             <a href=\"https://files.example/y.whl\" data-core-metadata=\"true\">y</a>\
             <a href=\"https://files.example/z.whl\" data-dist-info-metadata=\"sha256={meta}\">z</a>\
             <a href=\"https://files.example/w.whl#sha256=nothex\" data-core-metadata=\"sha256=abc\">w</a>"
        );
        let (_, out) = rewrite(&html);
        let lower = "c".repeat(64);
        assert_eq!(
            out.hashes,
            vec![
                (
                    "/pypi/files/files.example/x.whl.metadata".to_owned(),
                    lower.clone()
                ),
                ("/pypi/files/files.example/z.whl.metadata".to_owned(), lower),
            ]
        );
    }

    #[test]
    fn entities_in_href() {
        let seen = std::cell::RefCell::new(Vec::new());
        let recording = |url: &Url| {
            seen.borrow_mut().push(url.to_string());
            map(url)
        };
        let html =
            "<a href=\"https://files.example/dl?a=1&amp;b=&#34;2&#x22;#sha256=x&amp;y\">x</a>";
        let out = rewrite_html(html.as_bytes(), &page(), &recording).expect("utf-8");
        assert_eq!(*seen.borrow(), ["https://files.example/dl?a=1&b=%222%22"]);
        assert_eq!(
            out.body,
            "<a href=\"/pypi/files/files.example/dl?a=1&amp;b=%222%22#sha256=x&amp;y\">x</a>"
                .as_bytes()
        );
        assert_eq!(
            decode_entities("&#0;&bogus;&#x;&#+5;&amp"),
            "&#0;&bogus;&#x;&#+5;&amp"
        );
        assert_eq!(decode_entities("&lt;&gt;&apos;&#39;&#X41;é"), "<>''Aé");
    }

    #[test]
    fn uppercase_hex_normalised_in_hashes_only() {
        let upper = SHA.to_ascii_uppercase();
        let (body, out) = rewrite(&format!(
            "<a href=\"https://files.example/x.whl#SHA256={upper}\">x</a>"
        ));
        assert!(body.contains(&format!("#SHA256={upper}\"")));
        assert_eq!(out.hashes[0].1, SHA);
    }

    #[test]
    fn garbage_does_not_panic() {
        let inputs = [
            "",
            "<",
            "<a",
            "<a href",
            "<a href=\"",
            "<a href=\"https://files.example/x.whl",
            "<a href=#>",
            "<a href=\"&#xFFFFFFFFFF;&#xD800;&#99999999999;\">",
            "<base href=\"http://[::1\"><a href=x>",
            "<base href><a href=\"\">",
            "</a></a><a href=\"::::\"><<<>>>",
            "<!-- <a href=\"https://files.example/x\"> --><script><a href=\"https://files.example/y\"></script>",
            "<select><xmp><a href=\"https://files.example/z\"></select>",
            "<table><a href=\"https://files.example/t\"><tr>",
            "<svg><a href=\"https://files.example/s\"/></svg>\u{0}\u{FFFF}",
        ];
        for html in inputs {
            let _ = rewrite(html);
        }
        // Comments and script text are not links.
        let (body, _) = rewrite(inputs[11]);
        assert_eq!(body, inputs[11]);
        assert!(matches!(
            rewrite_html(b"<a href=\"\xff\">", &page(), &map),
            Err(Error::NotUtf8(_))
        ));
    }

    #[test]
    fn generated_test_index_page() {
        let dist = "aa".repeat(32);
        let core = "bb".repeat(32);
        let html = format!(
            "<!DOCTYPE html>\n<html><head><meta name=\"pypi:repository-version\" content=\"1.1\"><title>Links for six</title></head><body>\n\
             <h1>Links for six</h1>\n    \
             <a href=\"http://127.0.0.2:18083/packages/six-1.16.0-py2.py3-none-any.whl#sha256={SHA}\" \
             data-dist-info-metadata=\"sha256={dist}\" data-core-metadata=\"sha256={core}\">six-1.16.0-py2.py3-none-any.whl</a><br/>\n\
             </body></html>\n"
        );
        let index_map = |url: &Url| {
            let rest = url.as_str().strip_prefix("http://127.0.0.2:18083/")?;
            Some(format!("/pypi/files/127.0.0.2:18083/{rest}"))
        };
        let page = Url::parse("http://127.0.0.1:18082/simple/six/").expect("valid url");
        let out = rewrite_html(html.as_bytes(), &page, &index_map).expect("utf-8");
        let path = "/pypi/files/127.0.0.2:18083/packages/six-1.16.0-py2.py3-none-any.whl";
        let expected = html.replace(
            "http://127.0.0.2:18083/packages/",
            "/pypi/files/127.0.0.2:18083/packages/",
        );
        assert_eq!(String::from_utf8_lossy(&out.body), expected);
        assert_eq!(
            out.hashes,
            vec![
                (path.to_owned(), SHA.to_owned()),
                (format!("{path}.metadata"), core)
            ]
        );
        assert_eq!(out.unmapped, 0);
    }
}
