//! `--user`/`--group`: the real binary started as root binds, then runs as
//! the named user and group (every thread), creates a missing cache directory
//! for them, and what it stores belongs to them. Needs root.

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;
use support::app::{committed, Binary};
use support::client::{bytes_of, get};
use support::origin::Origin;

fn id(args: &[&str]) -> u32 {
    let out = Command::new("id").args(args).output().expect("id runs");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a numeric id")
}

/// Every thread's real, effective, saved and filesystem ids, from /proc.
fn thread_ids(pid: u32) -> Vec<(String, String)> {
    let mut ids = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("task list") {
        let status = std::fs::read_to_string(task.unwrap().path().join("status")).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .unwrap_or_default()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        };
        ids.push((field("Uid:"), field("Gid:")));
    }
    ids
}

#[tokio::test]
async fn runs_as_the_named_user_and_group_once_listening() {
    if !support::needs_root("to change user") {
        return;
    }
    let uid = id(&["-u", "nobody"]);
    let gid = id(&["-g", "nobody"]);
    let body = bytes_of(50_000, 9);
    let origin = Origin::builder().file("/f.tgz", body.clone()).start().await;
    let dir = tempfile::tempdir().unwrap();
    // nobody must be able to reach the cache through its parent.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let cache = dir.path().join("cache");
    let group = String::from_utf8(
        Command::new("id")
            .args(["-gn", "nobody"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let app = Binary::start(&[
        "--source",
        &origin.url(),
        "--cache",
        cache.to_str().unwrap(),
        "--user",
        "nobody",
        "--group",
        group.trim(),
    ])
    .await;
    let pid = app.child.id().unwrap();
    let want = (
        format!("{uid} {uid} {uid} {uid}"),
        format!("{gid} {gid} {gid} {gid}"),
    );
    let threads = thread_ids(pid);
    assert!(threads.len() > 1, "a multi-threaded server: {threads:?}");
    assert!(threads.iter().all(|t| *t == want), "{threads:?}");
    let groups = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let groups = groups.lines().find(|l| l.starts_with("Groups:")).unwrap();
    assert_eq!(
        groups.split_whitespace().skip(1).collect::<Vec<_>>(),
        [gid.to_string()]
    );

    let got = get(&app.url("/f.tgz")).await;
    assert_eq!((got.status.as_u16(), got.body.len()), (200, body.len()));
    committed(&cache.join("f.tgz")).await;
    for path in [
        cache.clone(),
        cache.join("f.tgz"),
        cache.join(".package-cache/lock"),
    ] {
        let md = std::fs::metadata(&path).unwrap();
        assert_eq!((md.uid(), md.gid()), (uid, gid), "{}", path.display());
    }
    assert_eq!(std::fs::metadata(&cache).unwrap().mode() & 0o777, 0o711);
    app.kill9().await;
}

#[tokio::test]
async fn an_unknown_user_stops_the_start_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let stderr = support::app::refused_start(&[
        "--source",
        "http://127.0.0.1:9/",
        "--cache",
        dir.path().to_str().unwrap(),
        "--user",
        "no-such-user-pc",
    ])
    .await;
    assert!(
        stderr.contains("no user named \"no-such-user-pc\""),
        "{stderr}"
    );
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "nothing created in the cache"
    );
}
