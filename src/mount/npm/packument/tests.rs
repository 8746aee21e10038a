use super::*;
use base64::Engine;
use sha2::{Digest as _, Sha512};

const MOUNT_URL: &str = "http://cache.example:4000/npm";

fn page(path: &str) -> Url {
    Url::parse(&format!("http://registry.example{path}")).expect("valid url")
}

/// Tarballs on the registry map to their own path; on cdn.example to `/_files/…`.
fn map(url: &Url) -> Option<String> {
    match url.host_str()? {
        "registry.example" => Some(url.path().to_string()),
        "cdn.example" => Some(format!("/_files/cdn.example{}", url.path())),
        _ => None,
    }
}

fn sri(data: &[u8]) -> String {
    format!(
        "sha512-{}",
        base64::engine::general_purpose::STANDARD.encode(Sha512::digest(data))
    )
}

fn run(body: &str, page_path: &str) -> Rewritten {
    rewrite(
        Bytes::copy_from_slice(body.as_bytes()),
        &page(page_path),
        MOUNT_URL,
        &map,
    )
    .expect("rewrites")
}

#[test]
fn tarballs_are_rewritten_and_everything_else_is_kept_byte_for_byte() {
    let one = sri(b"one");
    let two = sri(b"two");
    let body = format!(
        r#"{{
  "_id": "@acme/left-pad2",
  "name": "@acme/left-pad2",
  "dist-tags": {{ "latest": "1.1.0", "next": "2.0.0-rc.1" }},
  "versions": {{
    "1.0.0": {{
      "name": "@acme/left-pad2", "version": "1.0.0",
      "deprecated": "use 1.1",
      "dist": {{
        "shasum": "0000000000000000000000000000000000000000",
        "integrity": "{one}",
        "tarball": "http://registry.example/@acme/left-pad2/-/left-pad2-1.0.0.tgz",
        "signatures": [{{ "keyid": "SHA256:k", "sig": "MEUCIQ" }}],
        "attestations": {{ "url": "http://registry.example/-/npm/v1/attestations/x", "provenance": {{ "predicateType": "https://slsa.dev/provenance/v1" }} }}
      }}
    }},
    "1.1.0": {{ "dist": {{ "tarball": "https://cdn.example/t/left-pad2-1.1.0.tgz", "integrity": "{two}" }},
                "tarball": "http://registry.example/not-in-dist" }},
    "2.0.0-rc.1": {{ "dist": {{ "tarball": "https://elsewhere.example/x.tgz", "integrity": "{two}" }} }}
  }},
  "time": {{ "created": "2026-01-01T00:00:00.000Z", "1.0.0": "2026-01-01T00:00:00.000Z" }},
  "tarball": "http://registry.example/top-level-but-not-in-dist"
}}"#
    );
    let out = run(&body, "/@acme%2fleft-pad2");
    let expected = body
        .replace(
            "\"http://registry.example/@acme/left-pad2/-/left-pad2-1.0.0.tgz\"",
            "\"http://cache.example:4000/npm/@acme/left-pad2/-/left-pad2-1.0.0.tgz\"",
        )
        .replace(
            "\"https://cdn.example/t/left-pad2-1.1.0.tgz\"",
            "\"http://cache.example:4000/npm/_files/cdn.example/t/left-pad2-1.1.0.tgz\"",
        );
    assert_eq!(String::from_utf8_lossy(&out.body), expected);
    assert_eq!(
        out.digests,
        vec![
            (
                "/@acme/left-pad2/-/left-pad2-1.0.0.tgz".to_string(),
                Digest::from_sri(&one).unwrap()
            ),
            (
                "/_files/cdn.example/t/left-pad2-1.1.0.tgz".to_string(),
                Digest::from_sri(&two).unwrap()
            ),
        ]
    );
    assert_eq!(out.unmapped, 1);
    // Still JSON, with every field a client checks.
    let v: serde_json::Value = serde_json::from_slice(&out.body).expect("json");
    assert_eq!(v["versions"]["1.0.0"]["deprecated"], "use 1.1");
    assert_eq!(
        v["versions"]["1.0.0"]["dist"]["signatures"][0]["sig"],
        "MEUCIQ"
    );
    assert!(v["versions"]["1.0.0"]["dist"]["attestations"]["provenance"].is_object());
    assert_eq!(v["time"]["1.0.0"], "2026-01-01T00:00:00.000Z");
    assert_eq!(v["dist-tags"]["next"], "2.0.0-rc.1");
}

#[test]
fn abbreviated_documents_and_version_manifests() {
    let abbreviated = r#"{"name":"acme-multi","dist-tags":{"latest":"1.1.0"},"modified":"2026-01-01T00:00:00.000Z","versions":{"1.0.0":{"name":"acme-multi","version":"1.0.0","dist":{"tarball":"http://registry.example/acme-multi/-/acme-multi-1.0.0.tgz","shasum":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}}}}"#;
    let out = run(abbreviated, "/acme-multi");
    assert_eq!(
        String::from_utf8_lossy(&out.body),
        abbreviated.replace("http://registry.example/", "http://cache.example:4000/npm/")
    );
    // Only a sha1 listed: that is what is checked.
    assert_eq!(
        out.digests,
        vec![(
            "/acme-multi/-/acme-multi-1.0.0.tgz".to_string(),
            Digest::Sha1([0xaa; 20])
        )]
    );
    let manifest = r#"{"name":"acme-multi","version":"1.1.0","dist":{"tarball":"/acme-multi/-/acme-multi-1.1.0.tgz"}}"#;
    let out = run(manifest, "/acme-multi/1.1.0");
    assert_eq!(
        String::from_utf8_lossy(&out.body),
        manifest.replace(
            "\"/acme-multi",
            "\"http://cache.example:4000/npm/acme-multi"
        )
    );
    assert!(out.digests.is_empty(), "nothing listed, nothing to check");
}

#[test]
fn escaped_and_relative_tarball_urls_are_resolved() {
    let body = r#"{"versions":{"1.0.0":{"dist":{"tarball":"http:\/\/registry.example\/a\/-\/a-1.0.0.tgz"}},"2.0.0":{"dist":{"tarball":"a/-/a-2.0.0.tgz"}},"3.0.0":{"dist":{"tarball":"caf\u00e9"}}}}"#;
    let out = run(body, "/reg/a");
    let text = String::from_utf8_lossy(&out.body).into_owned();
    assert!(
        text.contains(r#""tarball":"http://cache.example:4000/npm/a/-/a-1.0.0.tgz""#),
        "{text}"
    );
    assert!(
        text.contains(r#""tarball":"http://cache.example:4000/npm/reg/a/-/a-2.0.0.tgz""#),
        "{text}"
    );
    assert!(text.contains("caf%C3%A9"), "{text}");
    serde_json::from_slice::<serde_json::Value>(&out.body).expect("still json");
}

#[test]
fn odd_shapes_pass_unchanged_and_uncopied() {
    for body in [
        "[]",
        "42",
        "\"x\"",
        "null",
        r#"{"versions":7}"#,
        r#"{"versions":[1,2]}"#,
        r#"{"versions":{"1.0.0":null,"2.0.0":{"dist":"x"},"3.0.0":{"dist":{"tarball":5,"integrity":{"a":1},"shasum":[]}}}}"#,
        r#"{"versions":{"1.0.0":{"dist":{"integrity":"sha512-AAAA"}}}}"#,
        r#"{"dist":{"tarball":"http://[::1"}}"#,
        r#"{"error":"Not found"}"#,
    ] {
        let input = Bytes::copy_from_slice(body.as_bytes());
        let out = rewrite(input.clone(), &page("/x"), MOUNT_URL, &map).expect(body);
        assert_eq!(out.body, input, "{body}");
        assert_eq!(out.body.as_ptr(), input.as_ptr(), "not copied: {body}");
        assert!(out.digests.is_empty());
    }
}

#[test]
fn not_json_is_an_error() {
    for body in [&b"<html></html>"[..], b"{\"versions\":", b"{} {}", b"\xff"] {
        let err = rewrite(Bytes::copy_from_slice(body), &page("/x"), MOUNT_URL, &map);
        assert!(matches!(err, Err(Error::Json(_))), "{body:?}");
    }
}
