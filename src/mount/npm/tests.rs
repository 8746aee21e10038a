use super::*;

fn name(scope: Option<&str>, n: &str) -> PackageName {
    PackageName::try_new(scope, n).expect("valid name")
}

#[test]
fn negotiation_prefers_full_unless_abbreviated_is_asked_for() {
    let pnpm = "application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8, */*";
    assert_eq!(negotiate(Some(pnpm)), Repr::Abbreviated);
    assert_eq!(negotiate(Some(ABBREVIATED)), Repr::Abbreviated);
    assert_eq!(negotiate(Some("application/json")), Repr::Full);
    assert_eq!(negotiate(Some("*/*")), Repr::Full);
    assert_eq!(negotiate(None), Repr::Full);
    assert_eq!(negotiate(Some("")), Repr::Full);
    assert_eq!(
        negotiate(Some(&format!("{ABBREVIATED};q=0, application/json"))),
        Repr::Full
    );
    assert_eq!(
        negotiate(Some(&format!("application/json, {ABBREVIATED};q=0.5"))),
        Repr::Full
    );
    assert_eq!(
        negotiate(Some(
            " Application/VND.NPM.Install-v1+JSON ;q=0.9, application/json;q=0.9"
        )),
        Repr::Abbreviated
    );
    assert_eq!(negotiate(Some(",,;;=, /;q=,garbage;q=2")), Repr::Full);
    // The accept header sent upstream for a representation chooses it again.
    for repr in [Repr::Full, Repr::Abbreviated] {
        assert_eq!(negotiate(Some(repr.accept_header())), repr);
    }
    assert_eq!(
        (Repr::Full.as_str(), Repr::Abbreviated.media_type()),
        ("full", ABBREVIATED)
    );
}

#[test]
fn every_spelling_of_a_scoped_packument_is_one_document() {
    let scoped = name(Some("acme"), "left-pad2");
    for path in [
        "/@acme%2fleft-pad2",
        "/@acme%2Fleft-pad2",
        "/@acme/left-pad2",
        "/%40acme%2fleft-pad2",
    ] {
        assert_eq!(route(path), Route::Packument(scoped.clone()), "{path}");
    }
    assert_eq!(scoped.as_path(), "@acme/left-pad2");
    assert_eq!(scoped.upstream_segment(), "@acme%2fleft-pad2");
    assert_eq!(route("/acme-app"), Route::Packument(name(None, "acme-app")));
    assert_eq!(
        route("/JSONStream"),
        Route::Packument(name(None, "JSONStream"))
    );
}

#[test]
fn tarballs_versions_and_the_rest() {
    assert_eq!(
        route("/acme-multi/-/acme-multi-1.0.0.tgz"),
        Route::Tarball {
            name: name(None, "acme-multi"),
            upstream_path: "/acme-multi/-/acme-multi-1.0.0.tgz".into()
        }
    );
    for path in [
        "/@acme/left-pad2/-/left-pad2-1.0.0.tgz",
        "/@acme%2fleft-pad2/-/left-pad2-1.0.0.tgz",
    ] {
        assert_eq!(
            route(path),
            Route::Tarball {
                name: name(Some("acme"), "left-pad2"),
                upstream_path: "/@acme/left-pad2/-/left-pad2-1.0.0.tgz".into()
            },
            "{path}"
        );
    }
    assert_eq!(
        route("/acme-multi/1.1.0"),
        Route::Version(name(None, "acme-multi"), "1.1.0".into())
    );
    assert_eq!(
        route("/@acme%2fleft-pad2/latest"),
        Route::Version(name(Some("acme"), "left-pad2"), "latest".into())
    );
    assert_eq!(route("/-/npm/v1/keys"), Route::Keys);
    assert_eq!(
        route("/_files/cdn.example%3A8080/t/a-1.tgz"),
        Route::Files {
            authority: "cdn.example:8080".into(),
            path: "/t/a-1.tgz".into()
        }
    );
    for pass in [
        "/",
        "/-/ping",
        "/-/v1/search",
        "/-/user/org.couchdb.user:x",
        "/_private",
        "/.hidden",
        "/a%2fb",
        "/a b",
        "/@acme",
        "/@acme/",
        "/a/-/",
        "/a/-/x/y",
        "/a/b/c",
        "/a/-",
        "/_files/host-only",
        "no-slash",
    ] {
        assert_eq!(route(pass), Route::Pass, "{pass}");
    }
    let long = "a".repeat(215);
    assert_eq!(route(&format!("/{long}")), Route::Pass);
}

#[test]
fn npm_packuments_are_documents_per_representation() {
    let m = crate::mount::tests::mount(crate::config::Profile::Npm);
    let pnpm = "application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8, */*";
    let keys: Vec<_> = [
        "/@acme%2fleft-pad2",
        "/@acme%2Fleft-pad2",
        "/@acme/left-pad2",
    ]
    .into_iter()
    .flat_map(|p| {
        [
            crate::mount::classify(&m, p, Some(pnpm)),
            crate::mount::classify(&m, p, None),
        ]
    })
    .map(|class| match class {
        Class::Document(spec) => {
            assert_eq!(spec.path, "/@acme%2fleft-pad2");
            (spec.key, spec.repr)
        }
        other => panic!("{other:?}"),
    })
    .collect();
    assert_eq!(
        keys[0],
        (
            "m\n/@acme/left-pad2\nabbreviated".to_string(),
            Some(crate::mount::Repr::Npm(Repr::Abbreviated))
        )
    );
    assert_eq!(keys[1].0, "m\n/@acme/left-pad2\nfull");
    assert!(keys.iter().step_by(2).all(|k| *k == keys[0]));
    assert!(keys.iter().skip(1).step_by(2).all(|k| *k == keys[1]));
    match crate::mount::classify(&m, "/acme-multi/1.1.0", Some(pnpm)) {
        Class::Document(spec) => assert_eq!(spec.path, "/acme-multi/1.1.0"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        crate::mount::classify(&m, "/@acme%2fleft-pad2/-/left-pad2-1.0.0.tgz", None),
        Class::Artifact {
            upstream: MountUpstream::Sources,
            path: "/@acme/left-pad2/-/left-pad2-1.0.0.tgz".into()
        }
    );
    assert_eq!(
        crate::mount::classify(&m, "/_files/files.example:8080/t/a-1.0.0.tgz", None),
        Class::Artifact {
            upstream: MountUpstream::Files(0),
            path: "/t/a-1.0.0.tgz".into()
        }
    );
    assert_eq!(
        crate::mount::classify(&m, "/_files/evil.example/t/a-1.0.0.tgz", None),
        Class::NotFound
    );
    assert_eq!(
        crate::mount::classify(&m, "/-/v1/search", None),
        Class::Pass
    );
    assert!(matches!(
        crate::mount::classify(&m, "/-/npm/v1/keys", None),
        Class::Document(crate::mount::DocSpec { repr: None, .. })
    ));
}

#[test]
fn a_mount_rewrites_links_to_its_sources_and_files_hosts() {
    let m = crate::mount::tests::mount(crate::config::Profile::Npm);
    let body = r#"{"versions":{"1.0.0":{"dist":{"tarball":"http://index.example/a/-/a-1.0.0.tgz","shasum":"0000000000000000000000000000000000000000"}},"2.0.0":{"dist":{"tarball":"http://files.example:8080/t/a-2.0.0.tgz"}},"3.0.0":{"dist":{"tarball":"http://other.example/a-3.0.0.tgz"}}}}"#;
    let page = url::Url::parse("http://index.example/a").expect("url");
    let out = rewrite_for(&m, "http://cache.example/m", &page, body.into()).expect("json");
    assert_eq!(
        String::from_utf8_lossy(&out.body),
        body.replace("http://index.example/", "http://cache.example/m/")
            .replace(
                "http://files.example:8080/",
                "http://cache.example/m/_files/files.example:8080/"
            )
    );
    assert_eq!(out.digests.len(), 1);
    assert_eq!(out.digests[0].0, "/a/-/a-1.0.0.tgz");
    assert_eq!(out.unmapped, 1);
    // The rewritten paths are what the mount classifies as those tarballs.
    assert!(matches!(
        crate::mount::classify(&m, "/_files/files.example:8080/t/a-2.0.0.tgz", None),
        Class::Artifact {
            upstream: MountUpstream::Files(0),
            ..
        }
    ));
}
