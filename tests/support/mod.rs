#![allow(dead_code)]

pub mod api;
pub mod app;
pub mod build_world;
pub mod cargo_registry;
pub mod client;
pub mod cmd;
pub mod daemon;
pub mod fixtures;
pub mod goproxy;
pub mod haproxy;
pub mod npm;
pub mod origin;
pub mod pypi_world;
pub mod raw;
pub mod rgw;
pub mod site;
pub mod tls;

/// Whether the test runs as root; without root it is skipped (with `why`
/// printed), except under `CI`, which runs as root: there it fails.
pub fn needs_root(why: &str) -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI runs as root: this test must run there"
    );
    eprintln!("skipped: needs root {why}");
    false
}
