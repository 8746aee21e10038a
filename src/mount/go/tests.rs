use super::*;

fn version(module: &str, version: &str, file: VersionFile) -> Route {
    Route::Version {
        module: module.into(),
        version: version.into(),
        file,
    }
}

#[test]
fn escaping_round_trips_and_rejects_what_go_rejects() {
    assert_eq!(
        escape("example.test/Shout").as_deref(),
        Some("example.test/!shout")
    );
    assert_eq!(
        escape("github.com/BurntSushi/toml").as_deref(),
        Some("github.com/!burnt!sushi/toml")
    );
    assert_eq!(escape("v1.0.0-RC1").as_deref(), Some("v1.0.0-!r!c1"));
    assert_eq!(escape("a!b"), None);
    assert_eq!(escape("é"), None);
    assert_eq!(
        unescape("example.test/!shout").as_deref(),
        Some("example.test/Shout")
    );
    for bad in ["example.test/Shout", "a!", "a!B", "a!1", "é"] {
        assert_eq!(unescape(bad), None, "{bad}");
    }
    for s in ["github.com/BurntSushi/toml", "x.y/z", "v2.0.0+incompatible"] {
        assert_eq!(unescape(&escape(s).unwrap()).as_deref(), Some(s));
    }
}

#[test]
fn canonical_versions() {
    for good in [
        "v1.0.0",
        "v0.1.0",
        "v10.20.30",
        "v1.0.0-rc.1",
        "v1.0.0-RC1",
        "v0.0.0-20260101000000-abcdefabcdef",
        "v2.0.0+incompatible",
        "v1.2.3-pre+incompatible",
    ] {
        assert!(is_canonical(good), "{good}");
    }
    for bad in [
        "1.0.0",
        "v1",
        "v1.0",
        "v01.0.0",
        "v1.0.0-",
        "v1.0.0-01",
        "v1.0.0+build",
        "v1.0.0-a..b",
        "master",
        "",
        "v1.0.0.0",
    ] {
        assert!(!is_canonical(bad), "{bad}");
    }
}

#[test]
fn module_proxy_paths() {
    assert_eq!(
        route("/example.test/hello/@v/list"),
        Route::List("example.test/hello".into())
    );
    assert_eq!(
        route("/example.test/hello/@latest"),
        Route::Latest("example.test/hello".into())
    );
    for (path, file) in [
        ("/example.test/hello/@v/v1.0.0.info", VersionFile::Info),
        ("/example.test/hello/@v/v1.0.0.mod", VersionFile::Mod),
        ("/example.test/hello/@v/v1.0.0.zip", VersionFile::Zip),
    ] {
        assert_eq!(
            route(path),
            version("example.test/hello", "v1.0.0", file),
            "{path}"
        );
    }
    // `go` percent-encodes the `!` of an escaped capital: one module either way.
    for path in [
        "/example.test/%21shout/@v/v0.1.0.zip",
        "/example.test/!shout/@v/v0.1.0.zip",
    ] {
        assert_eq!(
            route(path),
            version("example.test/!shout", "v0.1.0", VersionFile::Zip)
        );
    }
    assert_eq!(
        route("/example.test/m/@v/v1.0.0-!r!c1.mod"),
        version("example.test/m", "v1.0.0-!r!c1", VersionFile::Mod)
    );
    assert_eq!(
        route("/example.test/m/@v/master.info"),
        Route::Query {
            module: "example.test/m".into(),
            query: "master".into()
        }
    );
    for pass in [
        "/",
        "/example.test/hello",
        "/example.test/hello/@v/",
        "/example.test/hello/@v/master.zip",
        "/example.test/hello/@v/v1.0.0.tar",
        "/example.test/hello/@v/v1.0.0",
        "/example.test/Hello/@v/list",
        "/example.test/hello!/@v/list",
        "/example.test/.hidden/@v/list",
        "/example.test//hello/@v/list",
        "/example.test/hello/@v/V1.0.0.zip",
        "/example.test/hello/@v/a/b.info",
        "/%ff/@v/list",
    ] {
        assert_eq!(route(pass), Route::Pass, "{pass}");
    }
}

#[test]
fn only_404_and_410_are_not_found() {
    assert!(is_not_found(404) && is_not_found(410));
    for other in [200, 403, 500, 502, 504] {
        assert!(!is_not_found(other), "{other}");
    }
}

#[test]
fn sumdb_paths() {
    let sumdb = |path: SumdbPath| Route::Sumdb {
        db: "sum.example.test".into(),
        path,
    };
    assert_eq!(
        route("/sumdb/sum.example.test/supported"),
        sumdb(SumdbPath::Supported)
    );
    assert_eq!(
        route("/sumdb/sum.example.test/latest"),
        sumdb(SumdbPath::Latest)
    );
    assert_eq!(
        route("/sumdb/sum.example.test/lookup/example.test/%21shout@v0.1.0"),
        sumdb(SumdbPath::Lookup {
            module: "example.test/!shout".into(),
            version: "v0.1.0".into()
        })
    );
    for tile in [
        "8/0/000",
        "8/0/000.p/5",
        "8/1/x001/234",
        "8/0/x123/x456/789.p/255",
        "8/data/000.p/1",
    ] {
        assert_eq!(
            route(&format!("/sumdb/sum.example.test/tile/{tile}")),
            sumdb(SumdbPath::Tile(tile.into())),
            "{tile}"
        );
    }
    for pass in [
        "/sumdb/sum.example.test",
        "/sumdb/sum.example.test/",
        "/sumdb/Sum.example/latest",
        "/sumdb/sum.example.test/lookup/example.test/m",
        "/sumdb/sum.example.test/lookup/example.test/m@master",
        "/sumdb/sum.example.test/tile/8/0/00",
        "/sumdb/sum.example.test/tile/8/0/001/234",
        "/sumdb/sum.example.test/tile/8/0/000.p/0",
        "/sumdb/sum.example.test/tile/8/0/000.p",
        "/sumdb/sum.example.test/tile/8/x/000",
        "/sumdb/sum.example.test/tile/8/0",
        "/sumdb/sum.example.test/other",
    ] {
        assert_eq!(route(pass), Route::Pass, "{pass}");
    }
    assert_eq!(
        version_path("example.test/Shout", "v0.1.0", VersionFile::Zip).as_deref(),
        Some("/example.test/!shout/@v/v0.1.0.zip")
    );
}

#[test]
fn go_lists_are_documents_and_versions_artifacts() {
    let m = crate::mount::tests::mount(crate::config::Profile::Go);
    for (p, fetched) in [
        ("/example.test/hello/@v/list", "/example.test/hello/@v/list"),
        (
            "/example.test/%21shout/@latest",
            "/example.test/!shout/@latest",
        ),
        (
            "/example.test/hello/@v/master.info",
            "/example.test/hello/@v/master.info",
        ),
        (
            "/sumdb/sum.example.test/supported",
            "/sumdb/sum.example.test/supported",
        ),
        (
            "/sumdb/sum.example.test/latest",
            "/sumdb/sum.example.test/latest",
        ),
    ] {
        match crate::mount::classify(&m, p, None) {
            Class::Document(spec) => {
                assert_eq!(spec.path, fetched);
                assert_eq!(spec.key, format!("m\n{fetched}\n-"));
            }
            other => panic!("{p}: {other:?}"),
        }
    }
    for (p, fetched) in [
        (
            "/example.test/%21shout/@v/v0.1.0.zip",
            "/example.test/!shout/@v/v0.1.0.zip",
        ),
        (
            "/example.test/hello/@v/v1.0.0.info",
            "/example.test/hello/@v/v1.0.0.info",
        ),
        (
            "/sumdb/sum.example.test/lookup/example.test/hello@v1.0.0",
            "/sumdb/sum.example.test/lookup/example.test/hello@v1.0.0",
        ),
        (
            "/sumdb/sum.example.test/tile/8/0/000.p/3",
            "/sumdb/sum.example.test/tile/8/0/000.p/3",
        ),
    ] {
        assert_eq!(
            crate::mount::classify(&m, p, None),
            Class::Artifact {
                upstream: MountUpstream::Sources,
                path: fetched.into()
            },
            "{p}"
        );
    }
    assert_eq!(
        crate::mount::classify(&m, "/example.test/Hello/@v/list", None),
        Class::Pass
    );
}
