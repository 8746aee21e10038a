//! The build sandbox with real processes, in this process (the server
//! stays root): ownership hand-over and take-back, writes outside the job
//! refused, no network but the job network's listener, the job's tree at the
//! fixed build path, the wall-clock limit and cancellation killing a
//! setsid + double-fork escapee, resource limits, the insecure fallback.
//! Needs root. Build uids 62100..62106 and 62109, one per test so that
//! parallel tests never clear each other's processes (tests/sandbox_helper.rs
//! has 62106..62108).

mod sandbox_fixture;
mod support;

use package_cache::builds::sandbox::{
    Error, Limits, Sandbox, SandboxConfig, StartOptions, BUILD_DIR, TOOL_DIRS,
};
use sandbox_fixture::{limits, processes_of, run, sh, within, Layout, ESCAPEE};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn a_step_writes_in_its_handed_over_dir_as_the_lease_uid_and_gives_it_back() {
    if !support::needs_root("to change owners and uids") {
        return;
    }
    // Under /tmp: the work root is bound back into the private /tmp.
    let l = Layout::under_tmp();
    let sandbox = within(30, Sandbox::start(l.config(62100, limits()), None))
        .await
        .unwrap();
    assert!(!sandbox.is_insecure());
    let lease = sandbox.lease().await;
    assert_eq!(lease.uid(), 62100);
    let dirs = [l.install.clone()];
    within(30, sandbox.hand_over(&lease, &dirs)).await.unwrap();
    let mut step = sh(
        "echo hello; mkdir sub && echo x > sub/f && echo y > out.txt; /usr/bin/env",
        &l.install,
    );
    step.env.push(("MARK".into(), "on".into()));
    let outcome = run(&sandbox, &lease, &step, &l.log).await;
    assert!(outcome.success(), "{outcome}: {}", l.log_text());
    for made in ["out.txt", "sub", "sub/f"] {
        let meta = std::fs::symlink_metadata(l.install.join(made)).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (62100, 62100), "{made}");
    }
    let log = l.log_text();
    assert!(log.starts_with("hello\n"), "{log}");
    let mut env: Vec<&str> = log.lines().skip(1).collect();
    env.sort_unstable();
    // The whole environment is the step's (the shell adds only PWD).
    assert_eq!(
        env,
        [
            format!("HOME={}", l.install.display()).as_str(),
            "MARK=on",
            "PATH=/usr/bin:/bin",
            format!("PWD={}", l.install.display()).as_str()
        ]
    );
    within(30, sandbox.take_back(&lease, &dirs)).await.unwrap();
    for made in ["", "out.txt", "sub", "sub/f"] {
        let meta = std::fs::symlink_metadata(l.install.join(made)).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (0, 0), "{made}");
    }
}

#[tokio::test]
async fn writes_outside_the_job_dir_fail_and_tmp_is_private() {
    if !support::needs_root("to run as a build uid") {
        return;
    }
    let l = Layout::new();
    // A work root the build uids cannot reach is refused at start, saying why.
    std::fs::set_permissions(&l.top, std::fs::Permissions::from_mode(0o700)).unwrap();
    match within(30, Sandbox::start(l.config(62101, limits()), None)).await {
        Err(Error::Unavailable(reason)) => assert!(reason.contains("cd into"), "{reason}"),
        other => panic!("{:?}", other.map(|_| ())),
    }
    std::fs::set_permissions(&l.top, std::fs::Permissions::from_mode(0o711)).unwrap();
    let sandbox = within(30, Sandbox::start(l.config(62101, limits()), None))
        .await
        .unwrap();
    let lease = sandbox.lease().await;
    within(
        30,
        sandbox.hand_over(&lease, std::slice::from_ref(&l.install)),
    )
    .await
    .unwrap();
    let targets = [
        l.job.join("escaped"),
        l.top.join("private/escaped"),
        l.work.join("escaped"),
        l.top.join("escaped"),
    ];
    for target in &targets {
        let step = sh(&format!("echo x > '{}'", target.display()), &l.install);
        let outcome = run(&sandbox, &lease, &step, &l.log).await;
        assert!(!outcome.success(), "{}: {outcome}", target.display());
        assert!(!target.exists(), "{}", target.display());
    }
    let log = l.log_text();
    assert_eq!(
        log.matches("Permission denied").count(),
        targets.len(),
        "{log}"
    );
    // The world-writable directories are fresh tmpfs: what the host has there
    // is not seen, and nothing written there shows outside.
    let name = format!("sandbox-test-{}", std::process::id());
    for dir in ["/tmp", "/var/tmp", "/dev/shm", "/run/lock"] {
        let dir = Path::new(dir);
        if !dir.is_dir() {
            continue;
        }
        let host = dir.join(format!("{name}-host"));
        std::fs::write(&host, "host").unwrap();
        let inside = dir.join(&name);
        let script = format!(
            "test ! -e {} && echo x > {}",
            host.display(),
            inside.display()
        );
        let outcome = run(&sandbox, &lease, &sh(&script, &l.install), &l.log).await;
        std::fs::remove_file(&host).unwrap();
        assert!(
            outcome.success(),
            "{}: {outcome}: {}",
            dir.display(),
            l.log_text()
        );
        assert!(!inside.exists(), "{}", inside.display());
    }
}

/// A listener on the host's loopback that counts the connections it accepts.
async fn counting_listener() -> (
    u16,
    tokio::sync::mpsc::UnboundedReceiver<()>,
    tokio::task::JoinHandle<()>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, accepted) = tokio::sync::mpsc::unbounded_channel();
    let acceptor = tokio::spawn(async move {
        while let Ok((_stream, _)) = listener.accept().await {
            let _ = tx.send(());
        }
    });
    (port, accepted, acceptor)
}

#[tokio::test]
async fn a_step_reaches_nothing_but_its_job_networks_listener() {
    if !support::needs_root("for network namespaces") {
        return;
    }
    let l = Layout::new();
    let (port, mut accepted, acceptor) = counting_listener().await;
    let sandbox = within(30, Sandbox::start(l.config(62102, limits()), None))
        .await
        .unwrap();
    let lease = sandbox.lease().await;
    let bash = |script: String, network: bool| {
        let mut step = sh("", &l.job);
        step.program = "/bin/bash".into();
        step.args = vec!["-c".into(), script.into()];
        step.network = network;
        step
    };
    // Without the job's network: nothing answers, not even loopback.
    let connect = format!("exec 3<>/dev/tcp/127.0.0.1/{port}");
    let outcome = run(&sandbox, &lease, &bash(connect.clone(), false), &l.log).await;
    assert!(!outcome.success(), "{outcome}");
    // A network step needs the job's network to be open.
    let refused = within(
        30,
        sandbox.run(
            &lease,
            &bash(connect, true),
            &l.log,
            &CancellationToken::new(),
        ),
    )
    .await;
    assert!(matches!(refused, Err(Error::Invalid(_))), "{refused:?}");
    // In it, the job's listener answers, and nothing else: not the host's
    // loopback, not another address of any kind.
    let listener = within(30, sandbox.open_network(&lease))
        .await
        .unwrap()
        .expect("isolated: a job network");
    let job_port = listener.local_addr().unwrap().port();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    let (tx, mut served) = tokio::sync::mpsc::unbounded_channel();
    let server = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let _ = tx.send(());
            let _ = tokio::io::AsyncWriteExt::write_all(&mut stream, b"proxy\n").await;
        }
    });
    let script = format!(
        "exec 3<>/dev/tcp/127.0.0.1/{job_port} && read -r line <&3 && echo \"job listener: $line\"
for target in 127.0.0.1/{port} 127.0.0.2/{job_port} 192.0.2.1/80 10.0.0.1/80; do
  if (exec 4<>/dev/tcp/$target) 2>/dev/null; then echo \"reached $target\"; exit 1; fi
  echo \"refused $target\"
done"
    );
    let outcome = run(&sandbox, &lease, &bash(script, true), &l.log).await;
    let log = l.log_text();
    assert!(outcome.success(), "{outcome}: {log}");
    assert!(log.contains("job listener: proxy"), "{log}");
    assert_eq!(log.matches("refused ").count(), 4, "{log}");
    assert!(within(5, served.recv()).await.is_some());
    // Closed: network steps are refused again.
    within(30, sandbox.close_network(&lease)).await.unwrap();
    let refused = within(
        30,
        sandbox.run(
            &lease,
            &bash(format!("exec 3<>/dev/tcp/127.0.0.1/{job_port}"), true),
            &l.log,
            &CancellationToken::new(),
        ),
    )
    .await;
    assert!(matches!(refused, Err(Error::Invalid(_))), "{refused:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        accepted.try_recv().is_err(),
        "the host's listener saw a connection"
    );
    acceptor.abort();
    server.abort();
}

#[tokio::test]
async fn a_job_tree_is_seen_at_the_fixed_build_path() {
    if !support::needs_root("to run as a build uid") {
        return;
    }
    let l = Layout::new();
    let sandbox = within(30, Sandbox::start(l.config(62109, limits()), None))
        .await
        .unwrap();
    let lease = sandbox.lease().await;
    within(
        30,
        sandbox.hand_over(&lease, std::slice::from_ref(&l.install)),
    )
    .await
    .unwrap();
    assert_eq!(sandbox.step_root(&l.job), Path::new(BUILD_DIR));
    let inside = Path::new(BUILD_DIR).join("install");
    let mut step = sh(
        "pwd; echo \"$HOME\"; echo made > made.txt; test -d /tmp/build/home && echo has-home",
        &inside,
    );
    step.job = Some(l.job.clone());
    let outcome = run(&sandbox, &lease, &step, &l.log).await;
    let log = l.log_text();
    assert!(outcome.success(), "{outcome}: {log}");
    assert_eq!(
        log.lines().collect::<Vec<_>>(),
        ["/tmp/build/install", "/tmp/build/install", "has-home"]
    );
    assert_eq!(
        std::fs::read_to_string(l.install.join("made.txt")).unwrap(),
        "made\n"
    );
    // The working directory must be inside the build path, the tree below
    // the work root, and no symlink on the way is followed.
    std::os::unix::fs::symlink("/etc", l.install.join("etc")).unwrap();
    let mut bad = Vec::new();
    for (cwd, job) in [
        (Path::new("/etc").to_path_buf(), l.job.clone()),
        (inside.clone(), l.top.join("private")),
        (inside.clone(), l.work.clone()),
        (inside.join("etc"), l.job.clone()),
    ] {
        let mut step = sh("pwd", &cwd);
        step.job = Some(job);
        bad.push(
            within(
                30,
                sandbox.run(&lease, &step, &l.log, &CancellationToken::new()),
            )
            .await,
        );
    }
    for result in &bad {
        assert!(result.is_err(), "{bad:?}");
    }
}

#[tokio::test]
async fn the_wall_clock_limit_kills_a_setsid_double_fork_escapee() {
    if !support::needs_root("to run as a build uid") {
        return;
    }
    let l = Layout::new();
    let limits = Limits {
        wall: Duration::from_secs(2),
        ..limits()
    };
    let sandbox = within(30, Sandbox::start(l.config(62103, limits), None))
        .await
        .unwrap();
    let lease = sandbox.lease().await;
    let step = sh(ESCAPEE, &l.job);
    let started = Instant::now();
    let watcher = tokio::spawn(async {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        processes_of(62103)
    });
    let outcome = run(&sandbox, &lease, &step, &l.log).await;
    let took = started.elapsed();
    eprintln!("timed out and cleared after {took:?}");
    let during = watcher.await.unwrap();
    assert!(
        during.iter().filter(|p| p.starts_with("sleep 300")).count() >= 2,
        "{during:?}"
    );
    assert!(outcome.timed_out && !outcome.success(), "{outcome:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(processes_of(62103), Vec::<String>::new());
}

#[tokio::test]
async fn cancelling_kills_every_process_of_the_step() {
    if !support::needs_root("to run as a build uid") {
        return;
    }
    let l = Layout::new();
    let sandbox = within(30, Sandbox::start(l.config(62104, limits()), None))
        .await
        .unwrap();
    let lease = sandbox.lease().await;
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        trigger.cancel();
    });
    let started = Instant::now();
    let result = within(
        30,
        sandbox.run(&lease, &sh(ESCAPEE, &l.job), &l.log, &cancel),
    )
    .await;
    eprintln!("cancelled and cleared after {:?}", started.elapsed());
    assert!(matches!(result, Err(Error::Cancelled)), "{result:?}");
    assert!(started.elapsed() < Duration::from_secs(4));
    assert_eq!(processes_of(62104), Vec::<String>::new());
    canceller.await.unwrap();
}

#[tokio::test]
async fn file_size_memory_cpu_and_process_limits_hold() {
    if !support::needs_root("to run as a build uid") {
        return;
    }
    let l = Layout::new();
    let limits = Limits {
        cpu: Duration::from_secs(1),
        memory: 256 << 20,
        file_size: 1 << 20,
        processes: 6,
        wall: Duration::from_secs(20),
    };
    let sandbox = within(30, Sandbox::start(l.config(62105, limits), None))
        .await
        .unwrap();
    let lease = sandbox.lease().await;
    within(
        30,
        sandbox.hand_over(&lease, std::slice::from_ref(&l.install)),
    )
    .await
    .unwrap();
    let cases = [
        ("head -c 2000000 /dev/zero > big", false),
        ("head -c 500000 /dev/zero > small", true),
        ("dd if=/dev/zero of=/dev/null bs=512M count=1", false),
        ("dd if=/dev/zero of=/dev/null bs=1M count=1", true),
        (
            "for i in 1 2 3 4 5 6 7 8 9 10; do sleep 2 & done; wait",
            false,
        ),
    ];
    for (script, ok) in cases {
        let outcome = run(&sandbox, &lease, &sh(script, &l.install), &l.log).await;
        assert_eq!(
            outcome.success(),
            ok,
            "{script}: {outcome}: {}",
            l.log_text()
        );
    }
    assert!(std::fs::metadata(l.install.join("big")).unwrap().len() <= 1 << 20);
    let started = Instant::now();
    let outcome = run(
        &sandbox,
        &lease,
        &sh("while :; do :; done", &l.install),
        &l.log,
    )
    .await;
    // SIGKILL at the CPU limit, reported by the namespace's init as 128+9.
    assert_eq!(
        (outcome.code, outcome.timed_out),
        (Some(137), false),
        "{outcome:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn insecure_mode_runs_as_the_server_with_limits_only_when_allowed() {
    if !support::needs_root("so that only missing tools stop isolation") {
        return;
    }
    let l = Layout::new();
    // Tools without unshare: isolation is impossible.
    let tools = l.top.join("tools");
    std::fs::create_dir(&tools).unwrap();
    for (name, dirs) in [
        ("prlimit", TOOL_DIRS),
        ("env", TOOL_DIRS),
        ("sh", TOOL_DIRS),
    ] {
        let found = dirs
            .iter()
            .map(|d| Path::new(d).join(name))
            .find(|p| p.exists())
            .unwrap();
        std::os::unix::fs::symlink(found, tools.join(name)).unwrap();
    }
    let options = StartOptions {
        helper: None,
        tool_dirs: vec![tools],
    };
    let limits = Limits {
        wall: Duration::from_secs(1),
        ..limits()
    };
    let refused = Sandbox::start_with(l.config(62105, limits.clone()), None, options.clone()).await;
    match refused {
        Err(Error::Unavailable(reason)) => assert!(reason.contains("missing unshare"), "{reason}"),
        other => panic!("{:?}", other.map(|_| ())),
    }
    let config = SandboxConfig {
        insecure: true,
        ..l.config(62105, limits)
    };
    let sandbox = within(30, Sandbox::start_with(config, None, options))
        .await
        .unwrap();
    assert!(sandbox.is_insecure());
    let lease = sandbox.lease().await;
    assert_eq!(lease.uid(), 0);
    let outcome = run(&sandbox, &lease, &sh("/usr/bin/id -u", &l.job), &l.log).await;
    assert!(
        outcome.success() && l.log_text() == "0\n",
        "{outcome}: {}",
        l.log_text()
    );
    let started = Instant::now();
    let outcome = run(
        &sandbox,
        &lease,
        &sh("sleep 300 & sleep 300", &l.job),
        &l.log,
    )
    .await;
    assert!(
        outcome.timed_out && started.elapsed() < Duration::from_secs(4),
        "{outcome:?}"
    );
}
