//! The inbox against hostile local clients. Client actions run as two
//! different non-root users (uids 62200 and 62201, via `setpriv`), since root
//! bypasses every permission; the test process itself plays the server.
//! Tests that switch users need root (CI runs as root).

mod support;
#[path = "inbox/world.rs"]
mod world;

use bytes::Bytes;
use futures_util::StreamExt;
use package_cache::builds::inbox::{self, Error, Inbox, InboxConfig};
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;
use std::time::{Duration, Instant};
use support::client::bytes_of;
use world::{assert_source, config, mode, names, script, sha1_hex, Background, World, A, B};

#[test]
fn open_creates_the_directories_with_their_modes_and_fixes_existing_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("inbox");
    let inbox = Inbox::open(&dir, config()).unwrap();
    assert_eq!(mode(&dir), 0o711);
    assert_eq!(mode(inbox.public_dir()), 0o1733);
    assert_eq!(mode(inbox.private_dir()), 0o700);
    assert_eq!(inbox.public_dir(), dir.join("public"));
    drop(inbox);

    for path in [&dir, &dir.join("public"), &dir.join("private")] {
        fs::set_permissions(path, fs::Permissions::from_mode(0o777)).unwrap();
    }
    let inbox = Inbox::open(&dir, config()).unwrap();
    assert_eq!(mode(&dir), 0o711);
    assert_eq!(mode(inbox.public_dir()), 0o1733);
    assert_eq!(mode(inbox.private_dir()), 0o700);

    // A symlink where a directory belongs is refused, not followed.
    let other = tmp.path().join("other");
    fs::create_dir(&other).unwrap();
    fs::set_permissions(&other, fs::Permissions::from_mode(0o755)).unwrap();
    let dir2 = tmp.path().join("inbox2");
    fs::create_dir(&dir2).unwrap();
    std::os::unix::fs::symlink(&other, dir2.join("public")).unwrap();
    let err = Inbox::open(&dir2, config()).unwrap_err();
    assert!(!err.is_client(), "{err}");
    assert_eq!(mode(&other), 0o755, "the symlink's target is untouched");
}

#[test]
fn a_clients_entry_is_hidden_from_and_protected_against_other_users() {
    if !support::needs_root("to act as two different users") {
        return;
    }
    let world = World::new(config());
    let body = bytes_of(50_000, 1);
    world.give(A, "src", &body);
    let entry = world.ok(
        A,
        &script(r#"n=$(hand_in src) && chmod 600 "$P/$n" && echo "$n""#),
    );
    let path = world.public().join(&entry);

    // Nobody lists public/, private/ or the inbox, not even the entry's owner.
    for uid in [A, B] {
        world.denied(uid, r#"ls "$P""#);
        world.denied(uid, r#"ls "$Q""#);
        world.denied(uid, r#"ls "$I""#);
    }
    // A knows its own name; B cannot read, delete, rename, replace or
    // truncate A's entry.
    let by_b = format!("E={entry}; ");
    for attack in [
        r#"cat "$P/$E""#,
        r#"rm -f "$P/$E""#,
        r#"mv "$P/$E" "$P/stolen""#,
        r#"ln -sf /etc/passwd "$P/$E""#,
        r#": > "$P/$E""#,
        r#"chmod 666 "$P/$E""#,
    ] {
        world.denied(B, &format!("{by_b}{attack}"));
    }
    world.ok(A, &format!(r#"test -r "$P/{entry}""#));
    assert_eq!(fs::read(&path).unwrap(), body);
    assert_eq!(fs::symlink_metadata(&path).unwrap().uid(), A);

    let source = world.inbox.take(&entry, &sha1_hex(&body)).unwrap();
    assert_source(&source, &body);
    assert_eq!(source.owner, Some(A));
    assert!(!path.exists(), "the public entry is gone");
    assert!(source.path.starts_with(world.private()));
    // The copy is out of every client's reach, its former owner's included.
    for uid in [A, B] {
        world.denied(uid, &format!("cat {:?}", source.path));
        world.denied(uid, &format!("rm -f {:?}", source.path));
    }
    // Gone from public/: a second take of the same name finds nothing.
    let err = world.inbox.take(&entry, &sha1_hex(&body)).unwrap_err();
    assert!(
        matches!(err, Error::Missing { .. }) && err.is_client(),
        "{err}"
    );
}

#[test]
fn links_and_special_files_are_refused_and_their_targets_untouched() {
    if !support::needs_root("to act as two different users") {
        return;
    }
    let world = World::new(config());
    let body = bytes_of(10_000, 2);
    world.give(A, "src", &body);
    let secret = bytes_of(3_000, 3);
    let b_file = world.give(B, "secret", &secret);
    let passwd = fs::read("/etc/passwd").unwrap();
    let sum = sha1_hex(&body);

    world.ok(
        A,
        &script(
            r#"ln -s /etc/passwd "$P/s-passwd"
            ln -s "$HB/secret" "$P/s-b"
            ln -s /dev/null "$P/s-null"
            ln -s "$P/missing" "$P/s-dangling"
            n=$(hand_in src) && ln "$P/$n" "$P/h-twin" && echo "$n" > "$H/twin"
            ln "$H/src" "$P/h-home"
            mkfifo "$P/fifo"
            mkdir "$P/dir""#,
        ),
    );
    let twin = fs::read_to_string(world.home(A).join("twin")).unwrap();
    // Only root can make a device node; a client could hard-link one it found.
    let made = Command::new("mknod")
        .arg(world.public().join("dev"))
        .args(["c", "1", "3"])
        .status()
        .unwrap();
    assert!(made.success());

    let refused = |entry: &str| {
        let err = world.take_bounded(entry, &sum).unwrap_err();
        assert!(err.is_client(), "{entry}: {err}");
        err
    };
    for entry in ["s-passwd", "s-b", "s-null", "s-dangling"] {
        assert!(matches!(refused(entry), Error::Symlink { .. }), "{entry}");
    }
    for entry in ["h-twin", twin.trim(), "h-home"] {
        assert!(
            matches!(refused(entry), Error::HardLink { links: 2, .. }),
            "{entry}"
        );
    }
    for (entry, want) in [
        ("fifo", "fifo"),
        ("dir", "directory"),
        ("dev", "character device"),
    ] {
        match refused(entry) {
            Error::NotRegular { kind, .. } => assert_eq!(kind, want),
            other => panic!("{entry}: {other}"),
        }
    }

    // Targets untouched, refused entries left for their owner (or a sweep).
    assert_eq!(fs::read("/etc/passwd").unwrap(), passwd);
    assert_eq!(fs::read(&b_file).unwrap(), secret);
    assert_eq!(fs::symlink_metadata(&b_file).unwrap().uid(), B);
    assert_eq!(fs::read(world.home(A).join("src")).unwrap(), body);
    assert!(fs::symlink_metadata(world.public().join("s-passwd")).is_ok());
    assert!(
        names(&world.private()).is_empty(),
        "{:?}",
        names(&world.private())
    );
}

#[test]
fn wrong_sha1_too_big_and_over_quota_are_refused() {
    if !support::needs_root("to act as two different users") {
        return;
    }
    let world = World::new(InboxConfig {
        max_size: 10_000,
        per_user_bytes: 20_000,
        stale_after: Duration::from_secs(3600),
    });

    // A wrong SHA1: the entry is consumed, nothing is kept.
    let body = bytes_of(9_000, 4);
    world.give(A, "src", &body);
    let entry = world.ok(A, &script("hand_in src"));
    let err = world
        .inbox
        .take(&entry, &sha1_hex(b"something else"))
        .unwrap_err();
    match &err {
        Error::Mismatch { expected, actual } => {
            assert_eq!(expected, &sha1_hex(b"something else"));
            assert_eq!(actual, &sha1_hex(&body));
        }
        other => panic!("{other}"),
    }
    assert!(err.is_client());
    assert!(!world.public().join(&entry).exists());
    assert!(names(&world.private()).is_empty());

    // One byte over max_size.
    let big = bytes_of(10_001, 5);
    world.give(A, "big", &big);
    let entry = world.ok(A, &script("hand_in big"));
    let err = world.inbox.take(&entry, &sha1_hex(&big)).unwrap_err();
    assert!(
        matches!(err, Error::TooBig { limit: 10_000 }) && err.is_client(),
        "{err}"
    );
    assert!(names(&world.private()).is_empty());
    world.ok(A, &format!(r#"rm "$P/{entry}""#));

    // A holds 3 × 8,000 bytes > 20,000: every take of A's is refused. B's
    // 9,000 bytes are its own, and fine.
    let chunk = bytes_of(8_000, 6);
    world.give(A, "chunk", &chunk);
    world.give(B, "chunk", &chunk);
    let a_entries: Vec<String> = (0..3)
        .map(|_| world.ok(A, &script("hand_in chunk")))
        .collect();
    let b_entry = world.ok(B, &script("hand_in chunk"));
    let err = world
        .inbox
        .take(&a_entries[0], &sha1_hex(&chunk))
        .unwrap_err();
    match &err {
        Error::OverQuota { uid, used, limit } => {
            assert_eq!((*uid, *used, *limit), (A, 24_000, 20_000));
        }
        other => panic!("{other}"),
    }
    assert!(err.is_client());
    assert!(
        world.public().join(&a_entries[0]).exists(),
        "refused entries stay"
    );
    assert_source(
        &world.inbox.take(&b_entry, &sha1_hex(&chunk)).unwrap(),
        &chunk,
    );

    // Once A removes one, it is within its quota again.
    world.ok(A, &format!(r#"rm "$P/{}""#, a_entries[2]));
    let source = world.inbox.take(&a_entries[0], &sha1_hex(&chunk)).unwrap();
    assert_source(&source, &chunk);
    assert_eq!(source.owner, Some(A));
}

#[test]
fn bad_names_and_sha1s_are_refused_before_anything_is_opened() {
    let world = World::new(config());
    let body = b"outside public";
    // Files a bad name could reach if it were used as a path.
    fs::write(world.tmp.path().join("inbox/x"), body).unwrap();
    fs::write(world.public().join(".hidden"), body).unwrap();
    let sum = sha1_hex(body);
    let long = "a".repeat(300);
    for bad in [
        "../x",
        ".hidden",
        "a/b",
        "",
        long.as_str(),
        ".",
        "..",
        "x y",
        "x\0",
    ] {
        let err = world.inbox.take(bad, &sum).unwrap_err();
        assert!(
            matches!(err, Error::BadName { .. }) && err.is_client(),
            "{bad:?}: {err}"
        );
    }
    assert!(world.tmp.path().join("inbox/x").exists());
    assert!(world.public().join(".hidden").exists());

    fs::write(world.public().join("ok"), body).unwrap();
    for bad in ["", "abc", &sum.to_uppercase(), &format!("{sum}0")] {
        let err = world.inbox.take("ok", bad).unwrap_err();
        assert!(
            matches!(err, Error::BadSha1 { .. }) && err.is_client(),
            "{bad:?}: {err}"
        );
    }
    assert!(world.public().join("ok").exists());
    let err = world.inbox.take("nothing-here", &sum).unwrap_err();
    assert!(
        matches!(err, Error::Missing { .. }) && err.is_client(),
        "{err}"
    );
}

#[test]
fn a_client_holding_its_file_open_cannot_change_what_was_hashed() {
    if !support::needs_root("to act as a non-root client") {
        return;
    }
    let size = 256 * 1024;
    let world = World::new(InboxConfig {
        max_size: size as u64 + 100_000,
        per_user_bytes: 64 << 20,
        stale_after: Duration::from_secs(3600),
    });
    let mut outcomes = (0, 0, 0); // taken, mismatch, too big
    for round in 0..12u64 {
        let good = bytes_of(size, 100 + round);
        let evil = bytes_of(size, 200 + round);
        world.give(A, "good", &good);
        world.give(A, "evil", &evil);
        let entry = world.ok(A, &script("hand_in good"));
        let grow = round % 3 == 2;
        let writer = Background::writer(&world, &entry, grow);
        let result = world.take_bounded(&entry, &sha1_hex(&good));
        // The writer goes on; the private copy must not follow.
        std::thread::sleep(Duration::from_millis(30));
        match result {
            Ok(source) => {
                outcomes.0 += 1;
                assert_source(&source, &good);
                fs::remove_file(&source.path).unwrap();
            }
            Err(Error::Mismatch { .. }) => outcomes.1 += 1,
            Err(Error::TooBig { .. }) => outcomes.2 += 1,
            Err(other) => panic!("round {round}: {other}"),
        }
        drop(writer);
        assert!(names(&world.private()).is_empty(), "round {round}");
        let _ = fs::remove_file(world.public().join(&entry));
    }
    eprintln!(
        "taken {}, mismatch {}, too big {}",
        outcomes.0, outcomes.1, outcomes.2
    );
}

#[test]
fn names_squatted_after_the_sha1_cannot_block_a_client() {
    if !support::needs_root("to act as two different users") {
        return;
    }
    let world = World::new(config());
    let body = bytes_of(20_000, 7);
    let sum = sha1_hex(&body);
    world.give(A, "src", &body);
    // B squats every name VCAP's client would have used for A's file.
    world.ok(
        B,
        &format!(
            r#"for n in {sum} {sum}.gem {sum}.tar.gz; do echo squat > "$P/$n"; chmod 666 "$P/$n"; done"#
        ),
    );
    // A's random name is unaffected, and A's exclusive create refuses to write
    // into a name someone else holds, so A would just draw another.
    let entry = world.ok(A, &script("hand_in src"));
    world.denied(A, &format!(r#"set -C; cat "$H/src" > "$P/{sum}.gem""#));
    let source = world.inbox.take(&entry, &sum).unwrap();
    assert_source(&source, &body);
    assert_eq!(source.owner, Some(A));
    // The squatter's file under the SHA1's name does not pass for A's bytes.
    let err = world.inbox.take(&sum, &sum).unwrap_err();
    assert!(matches!(err, Error::Mismatch { .. }), "{err}");
}

#[test]
fn hand_in_copies_under_a_fresh_readable_name() {
    let world = World::new(config());
    let body = bytes_of(70_000, 8);
    let file = world.tmp.path().join("src.gem");
    fs::write(&file, &body).unwrap();
    let handed = inbox::hand_in(&world.public(), &file).unwrap();
    assert_eq!(handed.sha1, sha1_hex(&body));
    assert_eq!(handed.size, body.len() as u64);
    assert_eq!(mode(&world.public().join(&handed.entry)), 0o644);
    let again = inbox::hand_in(&world.public(), &file).unwrap();
    assert_ne!(again.entry, handed.entry);
    let source = world.inbox.take(&handed.entry, &handed.sha1).unwrap();
    assert_source(&source, &body);
}

#[test]
fn sweep_removes_stale_entries_by_ctime_and_keeps_fresh_and_kept_ones() {
    if !support::needs_root("to act as a non-root client") {
        return;
    }
    let world = World::new(InboxConfig {
        stale_after: Duration::from_secs(2),
        ..config()
    });
    let outside = world.give(B, "outside", b"not yours");
    fs::set_permissions(world.home(B), fs::Permissions::from_mode(0o755)).unwrap();
    // Stale: a file whose mtime A pushed into the future, and a tree with a
    // symlink out of it.
    world.ok(
        A,
        r#"echo old > "$P/old" && touch -d '2100-01-01' "$P/old"
        mkdir -p "$P/tree/sub" && echo x > "$P/tree/a" && echo y > "$P/tree/sub/b"
        ln -s "$HB/outside" "$P/tree/sub/link" && ln -s "$HB" "$P/tree/dirlink"
        chmod 700 "$P/tree""#,
    );
    let private = world.private();
    fs::write(private.join("take-leftover"), b"left").unwrap();
    fs::write(private.join("take-kept"), b"kept").unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    // Fresh, although A set its mtime into the past.
    world.ok(
        A,
        r#"echo new > "$P/new" && touch -d '2000-01-01' "$P/new""#,
    );
    fs::write(private.join("take-fresh"), b"fresh").unwrap();

    let removed = world.inbox.sweep(&[private.join("take-kept")]).unwrap();
    assert_eq!(removed, 3);
    assert_eq!(names(&world.public()), ["new"]);
    assert_eq!(names(&private), ["take-fresh", "take-kept"]);
    assert_eq!(fs::read(&outside).unwrap(), b"not yours");
    assert!(world.home(B).is_dir());

    assert_eq!(
        world.inbox.sweep(&[private.join("take-kept")]).unwrap(),
        0,
        "the rest is fresh or kept"
    );
    // Kept only while listed.
    assert_eq!(world.inbox.sweep(&[]).unwrap(), 1);
    assert_eq!(names(&private), ["take-fresh"]);
}

fn stream_of(
    chunks: Vec<io::Result<Bytes>>,
) -> impl futures_util::Stream<Item = io::Result<Bytes>> + Unpin {
    futures_util::stream::iter(chunks)
}

#[tokio::test]
async fn uploads_are_size_limited_hashed_and_verified() {
    let world = World::new(InboxConfig {
        max_size: 100_000,
        ..config()
    });
    let body = bytes_of(100_000, 9);
    let chunks = |b: &Bytes| {
        b.chunks(7_777)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect::<Vec<_>>()
    };

    let source = world
        .inbox
        .upload(&sha1_hex(&body), stream_of(chunks(&body)))
        .await
        .unwrap();
    assert_source(&source, &body);
    assert_eq!(source.owner, None);
    fs::remove_file(&source.path).unwrap();

    let err = world
        .inbox
        .upload(&sha1_hex(b"other"), stream_of(chunks(&body)))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Mismatch { .. }) && err.is_client(),
        "{err}"
    );
    assert!(names(&world.private()).is_empty());

    let big = bytes_of(100_001, 10);
    let err = world
        .inbox
        .upload(&sha1_hex(&big), stream_of(chunks(&big)))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::TooBig { limit: 100_000 }) && err.is_client(),
        "{err}"
    );
    assert!(names(&world.private()).is_empty());

    let broken = vec![
        Ok(body.slice(..1000)),
        Err(io::Error::other("connection reset")),
    ];
    let err = world
        .inbox
        .upload(&sha1_hex(&body), stream_of(broken))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Body(_)) && err.is_client(), "{err}");
    assert!(names(&world.private()).is_empty());

    let err = world
        .inbox
        .upload("not-a-sha1", stream_of(chunks(&body)))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::BadSha1 { .. }), "{err}");
    assert!(names(&world.private()).is_empty());
}

#[tokio::test]
async fn a_cancelled_upload_leaves_nothing() {
    let world = World::new(config());
    let body = bytes_of(5_000, 11);
    // One chunk, then a client that never sends the rest.
    let stalled =
        futures_util::stream::iter(vec![Ok(body.clone())]).chain(futures_util::stream::pending());
    let sum = sha1_hex(&body);
    let mut upload = Box::pin(world.inbox.upload(&sum, Box::pin(stalled)));
    // Cancelled (dropped) once its private file exists.
    let deadline = Instant::now() + Duration::from_secs(10);
    while names(&world.private()).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the upload never created its file"
        );
        tokio::select! {
            result = &mut upload => panic!("the upload ended without its body: {result:?}"),
            () = tokio::time::sleep(Duration::from_millis(10)) => {}
        }
    }
    drop(upload);
    while !names(&world.private()).is_empty() {
        assert!(Instant::now() < deadline, "{:?}", names(&world.private()));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[test]
fn a_leased_entry_is_refused_at_once_instead_of_stalling_the_take() {
    if !support::needs_root("to act as a non-root client") {
        return;
    }
    let world = World::new(config());
    let body = bytes_of(4_000, 12);
    world.give(A, "src", &body);
    let entry = world.ok(A, &script("hand_in src"));
    // A write lease makes other opens wait for the lease-break time (45 s by
    // default) unless they are non-blocking.
    let holder = Background::start(
        &world,
        &format!(
            r#"exec /usr/bin/python3 -c '
import fcntl, os, signal, time
signal.signal(signal.SIGIO, signal.SIG_IGN)
fd = os.open(os.environ["P"] + "/{entry}", os.O_RDONLY)
fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_WRLCK)
open(os.environ["H"] + "/ready", "w").close()
time.sleep(60)
'"#
        ),
    );
    let started = Instant::now();
    let err = world.take_bounded(&entry, &sha1_hex(&body)).unwrap_err();
    assert!(
        matches!(err, Error::Busy { .. }) && err.is_client(),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    drop(holder);
    let source = world.take_bounded(&entry, &sha1_hex(&body)).unwrap();
    assert_source(&source, &body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_leaves_an_upload_in_progress_alone_however_long_it_stalls() {
    let world = World::new(InboxConfig {
        stale_after: Duration::from_millis(500),
        ..config()
    });
    let body = bytes_of(30_000, 13);
    let sum = sha1_hex(&body);
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(1);
    let chunks = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    let mut upload = Box::pin(world.inbox.upload(&sum, Box::pin(chunks)));
    tx.send(Ok(body.slice(..10_000))).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while names(&world.private()).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the upload never created its file"
        );
        tokio::select! {
            result = &mut upload => panic!("the upload ended early: {result:?}"),
            () = tokio::time::sleep(Duration::from_millis(10)) => {}
        }
    }
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let inbox = &world.inbox;
    assert_eq!(tokio::task::block_in_place(|| inbox.sweep(&[])).unwrap(), 0);
    tx.send(Ok(body.slice(10_000..))).await.unwrap();
    drop(tx);
    let source = tokio::time::timeout(Duration::from_secs(10), upload)
        .await
        .expect("the upload ends with its body")
        .unwrap();
    assert_source(&source, &body);
    // Done and not kept: now it is a leftover like any other, once stale.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(tokio::task::block_in_place(|| inbox.sweep(&[])).unwrap(), 1);
    assert!(!source.path.exists());
}
