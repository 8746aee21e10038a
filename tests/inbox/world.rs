//! The fixture of the inbox tests: a temporary inbox, two non-root clients
//! acting through `setpriv`, and helpers to check private copies.

use package_cache::builds::inbox::{Error, Inbox, InboxConfig, Source};
use sha1::{Digest, Sha1};
use sha2::Sha256;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Client "A" and client "B" (no passwd entries needed).
pub const A: u32 = 62200;
pub const B: u32 = 62201;

/// Limits roomy enough for every test that does not test them.
pub fn config() -> InboxConfig {
    InboxConfig {
        max_size: 1 << 20,
        per_user_bytes: 4 << 20,
        stale_after: Duration::from_secs(3600),
    }
}

/// SHA1 as requests name it.
pub fn sha1_hex(bytes: &[u8]) -> String {
    hex::encode(Sha1::digest(bytes))
}

/// SHA256 as [`Source`] records it.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Permission bits (with setuid, setgid, sticky) of `path` itself.
pub fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

/// Names in a directory the server may list.
pub fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A private copy checked from disk: its bytes have the SHA1 it claims, and
/// the ones the test expects.
pub fn assert_source(source: &Source, expected: &[u8]) {
    let on_disk = fs::read(&source.path).unwrap();
    assert_eq!(
        sha1_hex(&on_disk),
        source.sha1,
        "the copy's bytes have its sha1"
    );
    assert_eq!(on_disk, expected);
    assert_eq!(source.sha256, sha256_hex(expected));
    assert_eq!(source.size, expected.len() as u64);
    let md = fs::symlink_metadata(&source.path).unwrap();
    assert!(md.is_file());
    assert_eq!(md.mode() & 0o7777, 0o600);
    assert_eq!(md.uid(), rustix::process::geteuid().as_raw());
}

/// A temporary inbox, plus a home directory (0700) for each client when root.
pub struct World {
    pub tmp: tempfile::TempDir,
    pub inbox: Inbox,
}

impl World {
    pub fn new(config: InboxConfig) -> World {
        let tmp = tempfile::tempdir().unwrap();
        // The clients must reach the inbox through the temporary root.
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o711)).unwrap();
        let inbox = Inbox::open(&tmp.path().join("inbox"), config).unwrap();
        let world = World { tmp, inbox };
        if rustix::process::geteuid().is_root() {
            for uid in [A, B] {
                let home = world.home(uid);
                fs::create_dir(&home).unwrap();
                std::os::unix::fs::chown(&home, Some(uid), Some(uid)).unwrap();
                fs::set_permissions(&home, fs::Permissions::from_mode(0o700)).unwrap();
            }
        }
        world
    }

    pub fn public(&self) -> PathBuf {
        self.inbox.public_dir().to_path_buf()
    }

    pub fn private(&self) -> PathBuf {
        self.inbox.private_dir().to_path_buf()
    }

    pub fn home(&self, uid: u32) -> PathBuf {
        self.tmp.path().join(format!("home-{uid}"))
    }

    /// Writes `bytes` to `name` in `uid`'s home, owned by `uid`, mode 0600.
    pub fn give(&self, uid: u32, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.home(uid).join(name);
        fs::write(&path, bytes).unwrap();
        std::os::unix::fs::chown(&path, Some(uid), Some(uid)).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        path
    }

    /// `sh -c script` as `uid` (no supplementary groups), with `$P` (public),
    /// `$Q` (private), `$I` (the inbox), `$H` (the user's home) and `$HA`,
    /// `$HB` (both homes) set.
    pub fn command(&self, uid: u32, script: &str) -> Command {
        let mut cmd = Command::new("setpriv");
        cmd.arg(format!("--reuid={uid}"))
            .arg(format!("--regid={uid}"))
            .args(["--clear-groups", "sh", "-c", script])
            .env("P", self.public())
            .env("Q", self.private())
            .env("I", self.tmp.path().join("inbox"))
            .env("H", self.home(uid))
            .env("HA", self.home(A))
            .env("HB", self.home(B))
            .current_dir("/")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `script` as `uid` to its end (bounded by `timeout`).
    pub fn sh(&self, uid: u32, script: &str) -> Output {
        let mut cmd = Command::new("timeout");
        let inner = self.command(uid, script);
        cmd.arg("20")
            .arg(inner.get_program())
            .args(inner.get_args())
            .envs(inner.get_envs().filter_map(|(k, v)| Some((k, v?))))
            .current_dir("/")
            .stdin(Stdio::null());
        cmd.output().expect("setpriv runs")
    }

    /// Runs `script` as `uid`; it must succeed. Returns its trimmed stdout.
    pub fn ok(&self, uid: u32, script: &str) -> String {
        let out = self.sh(uid, script);
        assert!(out.status.success(), "as {uid}: {script}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Runs `script` as `uid`; it must fail (the permission claim holds).
    pub fn denied(&self, uid: u32, script: &str) {
        let out = self.sh(uid, script);
        assert!(
            !out.status.success(),
            "as {uid}, this should fail: {script}: {}",
            text(&out)
        );
    }

    /// Takes in a thread, so that a take that blocked (on a FIFO, say) fails
    /// the test instead of hanging it.
    pub fn take_bounded(&self, entry: &str, sha1: &str) -> Result<Source, Error> {
        let (tx, rx) = mpsc::channel();
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let _ = tx.send(self.inbox.take(entry, sha1));
            });
            match rx.recv_timeout(Duration::from_secs(10)) {
                Ok(result) => result,
                Err(_) => {
                    // Unblock a reader stuck on a FIFO, so the scope can end.
                    let _ = fs::OpenOptions::new()
                        .write(true)
                        .open(self.public().join(entry));
                    panic!("take of {entry:?} did not return within 10 s");
                }
            }
        })
    }
}

pub fn text(out: &Output) -> String {
    format!(
        "{}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A client's shell command that copies `$H/$1` into public under a fresh
/// random name, created exclusively (`set -C`), and prints the name.
pub const HAND_IN: &str = r#"hand_in() {
    n=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
    (set -C; cat "$H/$1" > "$P/$n") || return 1
    echo "$n"
}"#;

pub fn script(body: &str) -> String {
    format!("{HAND_IN}\n{body}")
}

/// A background process of client A, started by `sh -c script`; `script`
/// touches `$H/ready` once set up. Killed and reaped on drop.
pub struct Background(Child);

impl Background {
    pub fn start(world: &World, script: &str) -> Background {
        let ready = world.home(A).join("ready");
        let _ = fs::remove_file(&ready);
        let child = world
            .command(A, script)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let background = Background(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ready.exists() {
            assert!(
                Instant::now() < deadline,
                "the client process did not start"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        background
    }

    /// A writer that keeps `entry` open and rewrites it (alternating `$H/good`
    /// and `$H/evil` at offset 0) or grows it (appending `$H/evil`).
    pub fn writer(world: &World, entry: &str, grow: bool) -> Background {
        let body = if grow {
            r#"while :; do cat "$H/evil" >&3; done"#
        } else {
            r#"while :; do
                dd if="$H/evil" of=/dev/fd/3 conv=notrunc bs=64k status=none
                dd if="$H/good" of=/dev/fd/3 conv=notrunc bs=64k status=none
            done"#
        };
        Background::start(
            world,
            &format!(r#"exec 3<>"$P/{entry}"; touch "$H/ready"; {body}"#),
        )
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
