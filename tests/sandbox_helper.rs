//! The privileged helper that runs steps for a server that dropped root:
//! through `Sandbox` (steps, timeout, cancel, take-back to the server's
//! uid), and spoken to directly as a compromised server could, with the
//! requests it must refuse. Needs root. Build uids 62106 and 62107.

mod sandbox_fixture;
mod support;

use package_cache::builds::privhelper::wire::{
    self, Channel, Op, Reply, Request, WireOs, WireStep,
};
use package_cache::builds::privhelper::{Init, ARG};
use package_cache::builds::sandbox::{Error, Limits, Sandbox, StartOptions, BUILD_DIR, TOOL_DIRS};
use sandbox_fixture::{limits, processes_of, run, sh, within, Layout, ESCAPEE};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const BIN: &str = env!("CARGO_BIN_EXE_package-cache");

#[tokio::test]
async fn through_the_privileged_helper() {
    if !support::needs_root("to start the helper as root") {
        return;
    }
    let l = Layout::under_tmp();
    let limits = Limits {
        wall: Duration::from_secs(2),
        ..limits()
    };
    let options = StartOptions {
        helper: Some(BIN.into()),
        ..StartOptions::default()
    };
    let config = l.config(62106, limits);
    l.job_owned_by(65534);
    let sandbox = within(
        60,
        Sandbox::start_with(config, Some((65534, 65534)), options),
    )
    .await
    .unwrap();
    assert!(!sandbox.is_insecure());
    let lease = sandbox.lease().await;
    let dirs = [l.install.clone()];
    within(30, sandbox.hand_over(&lease, &dirs)).await.unwrap();
    let step = sh("id -u > out.txt; echo done", &l.install);
    let outcome = run(&sandbox, &lease, &step, &l.log).await;
    assert!(outcome.success(), "{outcome}: {}", l.log_text());
    assert_eq!(
        std::fs::read_to_string(l.install.join("out.txt")).unwrap(),
        "62106\n"
    );
    assert_eq!(l.log_text(), "done\n");
    // The job network's listener comes over the channel; a network step
    // reaches it (and the job's tree is at the fixed build path).
    let listener = within(30, sandbox.open_network(&lease))
        .await
        .unwrap()
        .expect("a job network");
    let port = listener.local_addr().unwrap().port();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut stream, b"via helper\n")
            .await
            .unwrap();
    });
    let mut step = sh(
        &format!("exec 3<>/dev/tcp/127.0.0.1/{port}; read -r line <&3; echo \"$line at $(pwd)\""),
        &Path::new(BUILD_DIR).join("install"),
    );
    step.program = "/bin/bash".into();
    step.network = true;
    step.job = Some(l.job.clone());
    let outcome = run(&sandbox, &lease, &step, &l.log).await;
    assert!(outcome.success(), "{outcome}: {}", l.log_text());
    assert!(
        l.log_text().ends_with("via helper at /tmp/build/install\n"),
        "{}",
        l.log_text()
    );
    within(5, server).await.unwrap();
    within(30, sandbox.close_network(&lease)).await.unwrap();
    let started = Instant::now();
    let outcome = run(&sandbox, &lease, &sh(ESCAPEE, &l.job), &l.log).await;
    eprintln!(
        "helper: timed out and cleared after {:?}",
        started.elapsed()
    );
    assert!(outcome.timed_out, "{outcome:?}");
    let cancel = CancellationToken::new();
    cancel.cancel();
    let result = within(
        30,
        sandbox.run(&lease, &sh(ESCAPEE, &l.job), &l.log, &cancel),
    )
    .await;
    assert!(matches!(result, Err(Error::Cancelled)), "{result:?}");
    assert_eq!(processes_of(62106), Vec::<String>::new());
    within(30, sandbox.take_back(&lease, &dirs)).await.unwrap();
    for made in ["", "out.txt"] {
        let meta = std::fs::symlink_metadata(l.install.join(made)).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (65534, 65534), "{made}");
    }
}

/// The helper spoken to directly, as a compromised server could.
struct RawHelper {
    channel: Channel,
    child: tokio::process::Child,
    next: u64,
}

impl RawHelper {
    fn spawn(prefix: &[&str]) -> RawHelper {
        let (ours, theirs) = wire::pair().unwrap();
        let mut argv: Vec<&str> = prefix.to_vec();
        argv.extend([BIN, ARG]);
        let child = tokio::process::Command::new(argv[0])
            .args(&argv[1..])
            .stdin(std::process::Stdio::from(theirs))
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        RawHelper {
            channel: Channel::new(ours).unwrap(),
            child,
            next: 1,
        }
    }

    async fn call(&mut self, op: Op, fd: Option<&OwnedFd>) -> Reply {
        self.next += 1;
        let request = Request { id: self.next, op };
        within(30, self.channel.send(&request, fd.map(|fd| fd.as_fd())))
            .await
            .unwrap();
        let mut buf = Vec::new();
        let (len, _) = within(60, self.channel.recv(&mut buf))
            .await
            .unwrap()
            .expect("a reply");
        let reply: Reply = serde_json::from_slice(&buf[..len]).unwrap();
        assert_eq!(reply.id, self.next);
        reply
    }
}

fn init(l: &Layout, uid: u32) -> Op {
    Op::Init(Init {
        uids: uid..uid + 1,
        work_root: l.work.clone(),
        owner: (65534, 65534),
        tool_dirs: TOOL_DIRS.iter().map(PathBuf::from).collect(),
    })
}

fn refused(reply: &Reply) -> String {
    match &reply.result {
        Err(failure) => failure.message.clone(),
        Ok(done) => panic!("accepted: {done:?}"),
    }
}

#[tokio::test]
async fn the_helper_refuses_uids_paths_and_requests_outside_its_remit() {
    if !support::needs_root("to start the helper as root") {
        return;
    }
    let l = Layout::new();
    let outside = l.top.join("private/secret");
    std::fs::write(&outside, "the server's").unwrap();
    std::fs::hard_link(&outside, l.install.join("hardlink")).unwrap();
    std::os::unix::fs::symlink(&outside, l.install.join("symlink")).unwrap();
    std::os::unix::fs::symlink(l.top.join("private"), l.job.join("linkdir")).unwrap();
    l.job_owned_by(65534);
    std::os::unix::fs::chown(&outside, Some(65534), Some(65534)).unwrap();
    let mut helper = RawHelper::spawn(&[]);
    let reply = helper.call(init(&l, 62107), None).await;
    assert!(reply.result.is_ok(), "{reply:?}");
    assert!(refused(&helper.call(init(&l, 62107), None).await).contains("already"));

    let log: OwnedFd = std::fs::File::create(&l.log).unwrap().into();
    let run = |uid: u32, cwd: &Path| Op::Run {
        uid,
        step: WireStep::from(&sh("echo ran", cwd)),
        limits: limits(),
    };
    assert!(refused(&helper.call(run(0, &l.job), Some(&log)).await).contains("pool"));
    assert!(refused(&helper.call(run(62100, &l.job), Some(&log)).await).contains("pool"));
    assert!(
        refused(&helper.call(run(62107, Path::new("/etc")), Some(&log)).await)
            .contains("work root")
    );
    assert!(refused(&helper.call(run(62107, &l.job), None).await).contains("log"));
    // A network step needs the uid's job network; a job tree must lie below
    // the work root; job networks are for the pool's uids only.
    let mut networked = WireStep::from(&sh("echo ran", &l.job));
    networked.network = true;
    let op = Op::Run {
        uid: 62107,
        step: networked,
        limits: limits(),
    };
    assert!(refused(&helper.call(op, Some(&log)).await).contains("network"));
    let mut elsewhere = sh("echo ran", Path::new(BUILD_DIR));
    elsewhere.job = Some(l.top.join("private"));
    let op = Op::Run {
        uid: 62107,
        step: WireStep::from(&elsewhere),
        limits: limits(),
    };
    assert!(refused(&helper.call(op, Some(&log)).await).contains("work root"));
    assert!(refused(&helper.call(Op::OpenNetwork { uid: 62100 }, None).await).contains("pool"));
    assert!(helper
        .call(run(62107, &l.job.join("linkdir")), Some(&log))
        .await
        .result
        .is_err());
    let reply = helper.call(run(62107, &l.job), Some(&log)).await;
    assert!(
        matches!(reply.result, Ok(Some(outcome)) if outcome.success()),
        "{reply:?}"
    );
    assert_eq!(l.log_text(), "ran\n");

    let hand = |uid: u32, dir: PathBuf| Op::HandOver {
        uid,
        dirs: vec![WireOs::from(dir.as_path())],
    };
    for bad in [
        l.work.clone(),
        l.install.join("../../../private"),
        l.top.join("private"),
        l.job.join("linkdir"),
        PathBuf::from("/etc"),
    ] {
        let reply = helper.call(hand(62107, bad.clone()), None).await;
        assert!(reply.result.is_err(), "{}: {reply:?}", bad.display());
    }
    assert!(refused(&helper.call(hand(1, l.install.clone()), None).await).contains("pool"));
    // A take-back gives trees to the server (65534 here): first hand them over.
    let reply = helper.call(hand(62107, l.install.clone()), None).await;
    assert!(reply.result.is_ok(), "{reply:?}");
    assert_eq!(std::fs::metadata(&l.install).unwrap().uid(), 62107);
    // Neither the hard link's other name nor the symlink's target changed hands.
    assert_eq!(std::fs::metadata(&outside).unwrap().uid(), 65534);
    assert_eq!(std::fs::metadata(l.top.join("private")).unwrap().uid(), 0);
    assert_eq!(
        std::fs::symlink_metadata(l.install.join("symlink"))
            .unwrap()
            .uid(),
        62107
    );

    drop(helper.channel);
    let status = within(30, helper.child.wait()).await.unwrap();
    assert!(
        status.success(),
        "the helper ends with its channel: {status}"
    );
}

#[tokio::test]
async fn a_helper_that_is_not_root_says_isolation_is_unavailable() {
    if !support::needs_root("to start the helper as another user") {
        return;
    }
    let l = Layout::new();
    let setpriv = [
        "/usr/bin/setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--",
    ];
    let mut helper = RawHelper::spawn(&setpriv);
    let reply = helper.call(init(&l, 62107), None).await;
    match reply.result {
        Err(failure) => assert!(failure.message.contains("not root"), "{}", failure.message),
        Ok(done) => panic!("accepted: {done:?}"),
    }
    let status = within(30, helper.child.wait()).await.unwrap();
    assert!(!status.success());
}
