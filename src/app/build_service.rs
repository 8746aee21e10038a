//! The build service's wiring: the sandbox (set up while still root), the
//! gateway that serves the proxy inside job networks, and the build queue
//! with its runtimes and fetcher. Apart from `start` because none of it is
//! on the proxy's path, and the build queue must never import the proxy:
//! the gateway made here is how it reaches it.

use crate::builds::fetch::Fetcher;
use crate::builds::runtime::Runtime;
use crate::builds::sandbox::{self, Sandbox, SandboxConfig};
use crate::builds::{self, Builds};
use crate::config::{Config, Profile};
use crate::privileges;
use crate::proxy::Proxy;
use crate::server::{self, Limits, Serving};
use crate::store::shared::SharedTier;
use anyhow::Context;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The build sandbox, or why builds cannot run.
pub(super) async fn start_sandbox(config: &Config) -> Result<Sandbox, String> {
    let build = &config.build;
    if build.runtimes.is_empty() {
        return Err("no runtime is configured (--runtime NAME=INTERPRETER)".into());
    }
    let drop_to = match &config.server.run_as {
        Some((user, group)) => {
            let (user, group) = (user.clone(), group.clone());
            match tokio::task::spawn_blocking(move || privileges::resolve(&user, group.as_deref()))
                .await
            {
                Ok(Ok(ids)) => Some(ids),
                Ok(Err(err)) => return Err(err.to_string()),
                Err(err) => return Err(err.to_string()),
            }
        }
        None => None,
    };
    let (cache_dir, root) = (config.cache_dir.clone(), build_root(&config.cache_dir));
    match tokio::task::spawn_blocking(move || builds::prepare_work_root(&cache_dir, &root, drop_to))
        .await
    {
        Ok(Ok(())) => {}
        Ok(Err(err)) => return Err(format!("preparing the build directory: {err}")),
        Err(err) => return Err(err.to_string()),
    }
    let sandbox_config = SandboxConfig {
        uids: build.uids.clone(),
        limits: sandbox::Limits {
            cpu: build.cpu,
            memory: build.memory,
            file_size: build.file_size,
            processes: build.processes,
            wall: build.timeout,
        },
        insecure: build.insecure,
        work_root: build_root(&config.cache_dir).join("work"),
    };
    match Sandbox::start(sandbox_config, drop_to).await {
        Ok(sandbox) => Ok(sandbox),
        Err(err) => {
            tracing::error!(error = %err, "builds are refused: the sandbox cannot be set up (--insecure-builds runs them unisolated)");
            Err(err.to_string())
        }
    }
}

/// `<cache>/.package-cache/build`.
pub fn build_root(cache_dir: &std::path::Path) -> std::path::PathBuf {
    crate::store::Layout::new(cache_dir).build_root()
}

/// Connections at once on the listeners of build jobs' networks.
const BUILD_CONNECTIONS: usize = 64;

/// Serves the proxy on the listeners the build queue makes inside job
/// networks (whose steps reach nothing else), with slots of their own.
pub(super) fn build_gateway(
    config: &Config,
    proxy: &Proxy,
    tasks: &TaskTracker,
    hard_stop: &CancellationToken,
) -> builds::Gateway {
    let serving = Serving {
        proxy: proxy.clone(),
        limits: Limits {
            header_timeout: config.server.header_timeout,
            client_timeout: config.server.client_timeout,
            max_connections: BUILD_CONNECTIONS,
        },
        slots: Arc::new(Semaphore::new(BUILD_CONNECTIONS)),
        tasks: tasks.clone(),
        stop: CancellationToken::new(),
        hard_stop: hard_stop.clone(),
    };
    Arc::new(move |listener, stop| {
        let serving = Serving {
            stop,
            ..serving.clone()
        };
        serving
            .tasks
            .clone()
            .spawn(server::serve(listener, serving, None));
    })
}

/// Probes the runtimes and starts the build queue.
pub(super) async fn start_builds(
    config: &Config,
    sandbox: Result<Sandbox, String>,
    proxy_addr: SocketAddr,
    gateway: builds::Gateway,
    shared: Option<&SharedTier>,
    tasks: &TaskTracker,
    stop: CancellationToken,
) -> anyhow::Result<Builds> {
    let build = &config.build;
    let mut runtimes = Vec::new();
    for (name, path) in &build.runtimes {
        let runtime = Runtime::probe(name, path)
            .await
            .with_context(|| format!("runtime {name} ({})", path.display()))?;
        tracing::info!(runtime = %name, interpreter = %path.display(), family = runtime.family.as_str(), "runtime ready");
        runtimes.push(runtime);
    }
    // Sources are fetched through this very proxy, over loopback when it
    // listens on every address.
    let fetch_addr = if proxy_addr.ip().is_unspecified() {
        let loopback: std::net::IpAddr = if proxy_addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        };
        SocketAddr::new(loopback, proxy_addr.port())
    } else {
        proxy_addr
    };
    let mount_of = |profile: Profile| {
        config
            .mounts
            .iter()
            .find(|m| m.profile == profile)
            .map(|m| m.name.clone())
    };
    let fetcher = Fetcher::new(
        fetch_addr,
        mount_of(Profile::Pypi),
        mount_of(Profile::Rubygems),
    )
    .with_max_source(build.max_source)
    .with_tmp_dir(crate::store::Layout::new(&config.cache_dir).tmp_dir());
    let settings = builds::Settings {
        root: build_root(&config.cache_dir),
        tmp: crate::store::Layout::new(&config.cache_dir).tmp_dir(),
        concurrency: build.concurrency,
        queue_size: build.queue_size,
        keep_finished: 10_000,
        max_source: build.max_source,
        inbox_per_user: build.inbox_quota,
        inbox_stale: build.inbox_stale,
        shared: shared.map(|tier| tier.store().clone()),
    };
    Builds::start(settings, runtimes, sandbox, fetcher, gateway, tasks, stop)
        .await
        .context("starting the build queue")
}
