//! The deployment files in contrib/ drive the real binary: the OpenRC script's
//! arguments (built from 0.2's conf.d variables) start a working cache, and
//! every variable the systemd unit sets is one the binary reads.

mod support;

use std::time::Duration;
use support::client::get;
use support::origin::Origin;

const INIT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/contrib/openrc/init.d/package-cache"
);
const CONFD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/contrib/openrc/conf.d/package-cache"
);
const UNIT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/contrib/systemd/package-cache.service"
);

#[tokio::test]
async fn the_openrc_script_starts_a_working_cache_from_0_2_variables() {
    let a = Origin::builder().start().await;
    let b = Origin::builder()
        .file("/distfiles/x.tar.gz", "from b")
        .start()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    // As root (CI) the server drops to nobody, who must reach the cache;
    // otherwise it "drops" to the user it already is.
    let root = rustix::process::geteuid().is_root();
    let id = |flag: &str| {
        let mut cmd = std::process::Command::new("id");
        cmd.arg(flag);
        if root {
            cmd.arg("nobody");
        }
        String::from_utf8(cmd.output().unwrap().stdout)
            .unwrap()
            .trim()
            .to_string()
    };
    let (user, group) = (id("-un"), id("-gn"));
    if root {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    // What openrc-run would do: source conf.d, then the script, and use $command_args.
    let out = std::process::Command::new("sh")
        .args([
            "-c",
            &format!(". {CONFD}; . {INIT}; printf '%s' \"$command_args\""),
        ])
        .env("RC_SVCNAME", "package-cache")
        .env("SOURCES", format!("{} {}", a.url(), b.url()))
        .env("HOST", "127.0.0.1")
        .env("PORT", "0")
        .env("CACHE_DIR", &cache)
        .env("PC_OPTS", "-v --max-fills 8")
        .env("PC_USER", &user)
        .env("PC_GROUP", &group)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let args = String::from_utf8(out.stdout).unwrap();
    assert!(
        args.contains(&format!("--source {} --source {}", a.url(), b.url())),
        "{args}"
    );
    assert!(args.contains("--syslog"), "{args}");
    assert!(
        args.contains(&format!("--user {user} --group {group}")),
        "{args}"
    );

    let sock = dir.path().join("log.sock");
    let syslog = std::os::unix::net::UnixDatagram::bind(&sock).unwrap();
    syslog
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_package-cache"))
        .args(args.split_whitespace())
        .args(["--syslog-socket", sock.to_str().unwrap()])
        // Not the default admin port: tests run in parallel.
        .args(["--admin", "off", "--api", "off"])
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; 4096];
        loop {
            let n = syslog.recv(&mut buf).expect("a syslog line");
            let line = String::from_utf8_lossy(&buf[..n]).into_owned();
            if line.contains("package-cache listening") {
                return line;
            }
        }
    })
    .await
    .unwrap();
    let addr = line
        .split("addr=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .expect("addr in the log line");
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id().unwrap())).unwrap();
    let uid = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap()
        .to_string();
    let want = String::from_utf8(
        std::process::Command::new("id")
            .args(["-u", &user])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(
        uid.split_whitespace().nth(2),
        Some(want.trim()),
        "runs as PC_USER: {uid}"
    );
    let got = get(&format!("http://{addr}/distfiles/x.tar.gz")).await;
    assert_eq!(
        (got.status.as_u16(), got.body.as_slice()),
        (200, &b"from b"[..]),
        "SOURCES failed over in order"
    );
    child.kill().await.unwrap();
}

#[test]
fn every_variable_the_systemd_unit_sets_is_read_by_the_binary() {
    let unit = std::fs::read_to_string(UNIT).unwrap();
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_package-cache"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    let mut seen = 0;
    for word in unit.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if word.starts_with("PC_") && word != "PC_OPTS" {
            assert!(
                help.contains(&format!("[env: {word}")),
                "the binary reads {word}"
            );
            seen += 1;
        }
    }
    assert!(
        seen >= 4,
        "the unit passes its settings through PC_* variables"
    );
    for key in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "CacheDirectory=package-cache",
        "ExecStart=/usr/bin/package-cache",
    ] {
        assert!(unit.contains(key), "{key}");
    }
}
