//! PyPI simple pages without the files of refused releases. Each file is
//! judged on its own date (PEP 700 `upload-time`): a wheel added to an old
//! release is as new as its upload. JSON pages keep their key order and
//! every other field, and `versions` loses a version whose files are all
//! gone; HTML pages lose the `<a>` of each refused file (their dates come
//! from the JSON form of the same page, [`upload_times`]).

use super::{Error, Keep, Listed};
use crate::config::supply::parse_instant;
use crate::mount::pypi::normalize_name;
use bytes::Bytes;
use lol_html::{element, HtmlRewriter, Settings};
use percent_encoding::percent_decode_str;
use serde_json::Value;
use std::collections::{HashMap, HashSet};

/// The version a distribution file of `project` is for: wheels
/// (`name-VER-…whl`, PEP 427), sdists (`name-VER.tar.gz`, `.zip`, …) and eggs;
/// the name part matched to `project` under PEP 503 normalisation, so a
/// dash in a legacy sdist's name does not split it. `None` for anything else.
pub fn file_version(file: &str, project: &str) -> Option<String> {
    let project = normalize_name(project);
    let file = file.strip_suffix(".metadata").unwrap_or(file);
    if let Some(stem) = file
        .strip_suffix(".whl")
        .or_else(|| file.strip_suffix(".egg"))
    {
        let mut parts = stem.split('-');
        let (name, version) = (parts.next()?, parts.next()?);
        return (normalize_name(name) == project).then(|| version.to_string());
    }
    let stem = [".tar.gz", ".tar.bz2", ".tar.xz", ".tgz", ".zip", ".tar"]
        .iter()
        .find_map(|ext| file.strip_suffix(ext))?;
    // The name is the longest prefix before a '-' that normalises to the project.
    stem.match_indices('-').find_map(|(i, _)| {
        (normalize_name(&stem[..i]) == project && i + 1 < stem.len())
            .then(|| stem[i + 1..].to_string())
    })
}

/// The project and version of a distribution file, from its name alone
/// (direct downloads, which name no project): the first `-` splits a wheel
/// or egg, the last one an sdist.
pub fn split_file(file: &str) -> Option<(String, String)> {
    let file = file.strip_suffix(".metadata").unwrap_or(file);
    let (name, version) = if let Some(stem) = file
        .strip_suffix(".whl")
        .or_else(|| file.strip_suffix(".egg"))
    {
        let mut parts = stem.split('-');
        (parts.next()?, parts.next()?)
    } else {
        let stem = [".tar.gz", ".tar.bz2", ".tar.xz", ".tgz", ".zip", ".tar"]
            .iter()
            .find_map(|ext| file.strip_suffix(ext))?;
        stem.rsplit_once('-')?
    };
    (!name.is_empty() && !version.is_empty()).then(|| (normalize_name(name), version.to_string()))
}

/// The file name a link names: its path's last segment, decoded.
fn link_file(href: &str) -> String {
    let path = href.split(['#', '?']).next().unwrap_or("");
    let last = path.rsplit('/').next().unwrap_or("");
    percent_decode_str(last).decode_utf8_lossy().into_owned()
}

/// `upload-time` by file name, from a PEP 691 JSON page (files without one
/// are left out). `None` when `body` is not such a page.
pub fn upload_times(body: &[u8]) -> Option<HashMap<String, i64>> {
    let page: Value = serde_json::from_slice(body).ok()?;
    let files = page.get("files")?.as_array()?;
    Some(
        files
            .iter()
            .filter_map(|f| {
                let name = f.get("filename")?.as_str()?;
                let at = parse_instant(f.get("upload-time")?.as_str()?)?;
                Some((name.to_string(), at))
            })
            .collect(),
    )
}

/// A PEP 691 JSON page of `project` without the files `keep` refuses.
/// `Ok(None)`: nothing refused (serve the page as it is).
pub fn filter_json(
    body: &[u8],
    project: &str,
    keep: &mut Keep<'_>,
) -> Result<Option<Bytes>, Error> {
    let mut page: Value = serde_json::from_slice(body).map_err(Error::Json)?;
    let Some(files) = page.get_mut("files").and_then(Value::as_array_mut) else {
        return Ok(None);
    };
    let mut shown_versions = HashSet::new();
    let mut refused_versions = HashSet::new();
    let before = files.len();
    files.retain(|file| {
        let name = file
            .get("filename")
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| file.get("url").and_then(Value::as_str).map(link_file));
        let Some(version) = name.as_deref().and_then(|n| file_version(n, project)) else {
            return true; // not a distribution of this project: nothing to judge
        };
        let published = file
            .get("upload-time")
            .and_then(Value::as_str)
            .and_then(parse_instant);
        let shown = keep(&Listed {
            project,
            version: &version,
            published,
        });
        if shown {
            shown_versions.insert(version);
        } else {
            refused_versions.insert(version);
        }
        shown
    });
    if files.len() == before {
        return Ok(None);
    }
    // PEP 700: `versions` lists every version with files; drop the ones left without.
    if let Some(versions) = page.get_mut("versions").and_then(Value::as_array_mut) {
        versions.retain(|v| {
            v.as_str()
                .is_none_or(|v| !refused_versions.contains(v) || shown_versions.contains(v))
        });
    }
    Ok(Some(serde_json::to_vec(&page).map_err(Error::Json)?.into()))
}

/// A PEP 503 HTML page of `project` without the links to files `keep`
/// refuses; `dates` are the files' upload times (from the JSON page).
/// `Ok(None)`: nothing refused.
pub fn filter_html(
    body: &[u8],
    project: &str,
    dates: &HashMap<String, i64>,
    keep: &mut Keep<'_>,
) -> Result<Option<Bytes>, Error> {
    std::str::from_utf8(body).map_err(|_| Error::NotUtf8)?;
    let mut removed = 0;
    let mut out = Vec::with_capacity(body.len());
    {
        let settings = Settings::new()
            .with_strict(false)
            .append_element_content_handler(element!("a[href]", |el| {
                let Some(href) = el.get_attribute("href") else {
                    return Ok(());
                };
                let file = link_file(&href.replace("&amp;", "&"));
                let Some(version) = file_version(&file, project) else {
                    return Ok(());
                };
                let shown = keep(&Listed {
                    project,
                    version: &version,
                    published: dates.get(&file).copied(),
                });
                if !shown {
                    el.remove();
                    removed += 1;
                }
                Ok(())
            }));
        let mut rewriter = HtmlRewriter::new(settings, |chunk: &[u8]| out.extend_from_slice(chunk));
        rewriter.write(body).map_err(Error::Html)?;
        rewriter.end().map_err(Error::Html)?;
    }
    Ok((removed > 0).then(|| out.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_come_from_file_names() {
        let v = |f: &str, p: &str| file_version(f, p);
        assert_eq!(
            v("six-1.17.0-py2.py3-none-any.whl", "six").as_deref(),
            Some("1.17.0")
        );
        assert_eq!(
            v("six-1.17.0-py2.py3-none-any.whl.metadata", "six").as_deref(),
            Some("1.17.0")
        );
        assert_eq!(
            v("zope.interface-6.0.tar.gz", "zope-interface").as_deref(),
            Some("6.0")
        );
        assert_eq!(
            v("python-dateutil-2.9.0.tar.gz", "python-dateutil").as_deref(),
            Some("2.9.0")
        );
        assert_eq!(
            v("Foo_Bar-1.0-py3-none-any.whl", "foo-bar").as_deref(),
            Some("1.0")
        );
        assert_eq!(v("other-1.0.tar.gz", "six"), None);
        assert_eq!(v("six-1.0.exe", "six"), None);
        assert_eq!(
            split_file("python-dateutil-2.9.0.tar.gz"),
            Some(("python-dateutil".into(), "2.9.0".into()))
        );
        assert_eq!(
            split_file("Six-1.17.0-py2.py3-none-any.whl"),
            Some(("six".into(), "1.17.0".into()))
        );
        assert_eq!(split_file("README"), None);
    }

    const PAGE: &str = r#"{"meta":{"api-version":"1.1"},"name":"six","versions":["1.16.0","1.17.0"],"files":[{"filename":"six-1.16.0-py2.py3-none-any.whl","url":"/pypi/files/h/six-1.16.0-py2.py3-none-any.whl","hashes":{"sha256":"aa"},"upload-time":"2021-05-05T14:18:17.000000Z"},{"filename":"six-1.16.0.tar.gz","url":"/pypi/files/h/six-1.16.0.tar.gz","hashes":{},"upload-time":"2021-05-05T14:18:18Z"},{"filename":"six-1.17.0-py2.py3-none-any.whl","url":"/pypi/files/h/six-1.17.0-py2.py3-none-any.whl","hashes":{},"upload-time":"2026-01-01T00:00:00Z","yanked":false}]}"#;

    #[test]
    fn json_pages_lose_refused_files_and_empty_versions() {
        let mut asked = Vec::new();
        let mut keep = |r: &Listed<'_>| {
            asked.push((r.version.to_string(), r.published));
            r.published.is_some_and(|p| p < 1_700_000_000)
        };
        let out = filter_json(PAGE.as_bytes(), "six", &mut keep)
            .unwrap()
            .unwrap();
        let expected = PAGE
            .replace(r#","1.17.0"]"#, "]")
            .replace(
                r#",{"filename":"six-1.17.0-py2.py3-none-any.whl","url":"/pypi/files/h/six-1.17.0-py2.py3-none-any.whl","hashes":{},"upload-time":"2026-01-01T00:00:00Z","yanked":false}"#,
                "",
            );
        assert_eq!(String::from_utf8_lossy(&out), expected);
        assert_eq!(asked.len(), 3);
        assert_eq!(asked[2], ("1.17.0".to_string(), Some(1_767_225_600)));
        // Nothing refused: the page stays as stored.
        assert!(filter_json(PAGE.as_bytes(), "six", &mut |_| true)
            .unwrap()
            .is_none());
        assert!(filter_json(b"{nope", "six", &mut |_| true).is_err());
        // A version keeps its place while one of its files is shown.
        let mut sdist_only = |r: &Listed<'_>| r.version != "1.17.0";
        let out = filter_json(PAGE.as_bytes(), "six", &mut sdist_only)
            .unwrap()
            .unwrap();
        let page: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(page["versions"], serde_json::json!(["1.16.0"]));
        assert_eq!(page["files"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn html_pages_lose_refused_links_with_dates_from_json() {
        let html = "<!DOCTYPE html>\n<html><body>\n\
            <a href=\"/pypi/files/h/six-1.16.0-py2.py3-none-any.whl#sha256=aa\" data-core-metadata=\"sha256=bb\">six-1.16.0-py2.py3-none-any.whl</a><br/>\n\
            <a href=\"/pypi/files/h/six-1.17.0-py2.py3-none-any.whl#sha256=cc\">six-1.17.0-py2.py3-none-any.whl</a><br/>\n\
            </body></html>\n";
        let dates = upload_times(PAGE.as_bytes()).unwrap();
        assert_eq!(dates.len(), 3);
        let mut keep = |r: &Listed<'_>| r.published.is_some_and(|p| p < 1_700_000_000);
        let out = filter_html(html.as_bytes(), "six", &dates, &mut keep)
            .unwrap()
            .unwrap();
        let out = String::from_utf8(out.to_vec()).unwrap();
        assert!(out.contains("six-1.16.0-py2.py3-none-any.whl#sha256=aa\" data-core-metadata"));
        assert!(!out.contains("1.17.0"), "{out}");
        assert!(out.ends_with("</body></html>\n"));
        // Without dates every file is asked about with none.
        let mut undated = |r: &Listed<'_>| r.published.is_none() && r.version == "1.16.0";
        let out = filter_html(html.as_bytes(), "six", &HashMap::new(), &mut undated).unwrap();
        assert!(out.is_some());
        assert!(filter_html(html.as_bytes(), "six", &dates, &mut |_| true)
            .unwrap()
            .is_none());
    }
}
