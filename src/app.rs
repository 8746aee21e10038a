//! The composition root: opens the store, builds the upstream client, binds
//! the listeners and starts the proxy and admin servers; owns the metrics,
//! the cancellation tokens and the task tracker, and shuts everything down
//! with a deadline.

use crate::admin::{Admin, CacheSize};
use crate::api::Api;
use crate::builds::fetch::Fetcher;
use crate::builds::runtime::Runtime;
use crate::builds::sandbox::{self, Sandbox, SandboxConfig};
use crate::builds::{self, Builds};
use crate::config::{Config, Profile, PublicUrl};
use crate::metrics::{Metrics, Scope};
use crate::proxy::target::HostRules;
use crate::proxy::Proxy;
use crate::server::{self, Limits, Serving};
use crate::store::shared::{SharedStore, SharedTier};
use crate::store::Store;
use crate::upstream::{self, Upstream};
use crate::{evict, privileges, scrub, tls};
use anyhow::Context;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A started app. Dropping it without `shutdown` leaves tasks to the runtime.
pub struct Running {
    /// Where the proxy listens.
    pub proxy_addr: SocketAddr,
    /// Where the admin endpoints listen (the first address), unless `--admin off`.
    pub admin_addr: Option<SocketAddr>,
    /// Where the TLS listener is (the first address), with `--tls-port`.
    pub tls_addr: Option<SocketAddr>,
    /// Where the build API listens (the first address), unless `--api off`.
    pub api_addr: Option<SocketAddr>,
    /// The build queue.
    pub builds: Builds,
    store: Store,
    shared: Option<SharedTier>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
    hard_stop: CancellationToken,
    tasks: TaskTracker,
    grace: Duration,
}

/// Starts the app described by `config`.
pub async fn start(mut config: Config) -> anyhow::Result<Running> {
    // Bind first (port 80 needs root), then drop root, then touch the cache,
    // so that nothing in it belongs to root.
    let listeners = bind(&config.server.host, config.server.port).await?;
    let admin_listeners = match &config.server.admin {
        Some(admin) => bind(&admin.host, admin.port)
            .await
            .context("binding the admin listener")?,
        None => Vec::new(),
    };
    let tls_listeners = match &config.server.tls {
        Some(tls) => bind(&config.server.host, tls.port)
            .await
            .context("binding the TLS listener")?,
        None => Vec::new(),
    };
    let api_listeners = match &config.build.api {
        Some(api) => bind(&api.host, api.port)
            .await
            .context("binding the build API listener")?,
        None => Vec::new(),
    };
    // Set up while still root: the sandbox's helper must stay root.
    let sandbox = start_sandbox(&config).await;
    // Read while still root: the key is often readable by root only.
    let certificate = match &config.server.tls {
        Some(tls) => {
            let (cert, key) = (tls.cert.clone(), tls.key.clone());
            Some(
                tokio::task::spawn_blocking(move || tls::Reloadable::load(&cert, &key))
                    .await
                    .context("loading the TLS certificate")?
                    .context("loading the TLS certificate")?,
            )
        }
        None => None,
    };
    if let Some((user, group)) = config.server.run_as.clone() {
        let cache_dir = config.cache_dir.clone();
        tokio::task::spawn_blocking(move || {
            privileges::drop_to(&user, group.as_deref(), &cache_dir)
        })
        .await
        .context("dropping root")?
        .context("dropping root")?;
    }
    let store = Store::open(&config.cache_dir)
        .await
        .with_context(|| format!("opening cache directory {}", config.cache_dir.display()))?;
    // Reads the system trust store and the CA file: blocking work.
    // The breakdown by mount has a row per mount and allowed host, and no other.
    let scopes: Vec<Scope<'_>> = (config.mounts.iter().map(|m| Scope::Mount(&m.name)))
        .chain(
            config
                .upstream
                .transparent_hosts
                .iter()
                .map(|a| Scope::Host(a.as_str())),
        )
        .chain(
            config
                .upstream
                .sources
                .iter()
                .map(|s| Scope::Host(s.authority.as_str())),
        )
        .collect();
    let metrics = Arc::new(Metrics::new(&scopes));
    let upstream_config = config.upstream.clone();
    let observer: Arc<dyn upstream::Observer> = metrics.clone();
    let upstream = tokio::task::spawn_blocking(move || Upstream::new(&upstream_config, observer))
        .await
        .context("setting up the upstream client")?
        .context("setting up the upstream client")?;
    let proxy_addr = listeners[0]
        .local_addr()
        .context("reading the bound address")?;
    if config.server.public_url.is_none() {
        if proxy_addr.ip().is_unspecified() {
            tracing::warn!(addr = %proxy_addr, "listening on every address: npm and Cargo index \
                documents will name this address, which clients cannot reach; set --public-url");
        }
        config.server.public_url = Some(PublicUrl::of_listener(proxy_addr));
    }
    let tasks = TaskTracker::new();
    let stop = CancellationToken::new();
    if let Some(reloader) = upstream::auth::Reloader::install(config.credentials())
        .context("installing the SIGHUP handler")?
    {
        tasks.spawn(reloader.run(stop.clone()));
    }
    for file in config.go_sum_files() {
        crate::proxy::policy::log_go_sum(&file, file.loaded(), "go.sum read");
    }
    if let Some(reloader) = crate::proxy::policy::GoSumReloader::install(config.go_sum_files())
        .context("installing the SIGHUP handler")?
    {
        tasks.spawn(reloader.run(stop.clone()));
    }
    let hard_stop = CancellationToken::new();
    let shared = start_shared(&config, &store, &tasks, &stop, &hard_stop).await?;
    let rules = HostRules {
        sources: config.upstream.sources.clone(),
        transparent: config.upstream.transparent_hosts.clone(),
        mounts: config.mounts.iter().cloned().map(Arc::new).collect(),
    };
    let supply = open_supply(&config, shared.as_ref(), &tasks, &stop).await?;
    let proxy = Proxy::new(
        store.clone(),
        upstream,
        metrics.clone(),
        rules,
        tasks.clone(),
        hard_stop.clone(),
        &config,
    )
    .with_supply(supply.clone());
    proxy.recall_sumdbs().await;
    if let Some(max_size) = config.policy.max_size {
        let limits = evict::Limits::new(max_size, &config.policy.pinned);
        store.track_recency(true);
        let counted = metrics.clone();
        tasks.spawn(evict::run(
            store.clone(),
            limits,
            stop.clone(),
            move |bytes| counted.evicted(bytes),
        ));
    }
    store.observe_damage(metrics.clone());
    tasks.spawn(scrub::run(
        store.clone(),
        config.policy.scrub_rate,
        stop.clone(),
        ScrubReport(metrics.clone()),
    ));
    let gateway = build_gateway(&config, &proxy, &tasks, &hard_stop);
    let builds = start_builds(
        &config,
        sandbox,
        proxy_addr,
        gateway,
        shared.as_ref(),
        &tasks,
        stop.clone(),
    )
    .await?;
    let mut api_addr = None;
    for listener in api_listeners {
        let addr = listener.local_addr().context("reading the bound address")?;
        api_addr.get_or_insert(addr);
        let api = Api::new(builds.clone(), config.build.api_token.clone());
        tasks.spawn(api.serve(listener, tasks.clone(), stop.clone(), hard_stop.clone()));
        tracing::info!(addr = %addr, "build API listening");
    }
    let cache_size: CacheSize = {
        let store = store.clone();
        Arc::new(move || store.usage())
    };
    let admin = Admin::new(
        metrics.clone(),
        store.clone(),
        cache_size,
        builds.clone(),
        stop.clone(),
    )
    .with_supply(supply)
    .with_shared(shared.clone());
    let mut admin_addr = None;
    // Logged before the proxy's line: a supervisor (or a test) that waits for
    // "package-cache listening" then knows both ports.
    for listener in admin_listeners {
        let addr = listener.local_addr().context("reading the bound address")?;
        admin_addr.get_or_insert(addr);
        tasks.spawn(
            admin
                .clone()
                .serve(listener, tasks.clone(), stop.clone(), hard_stop.clone()),
        );
        tracing::info!(addr = %addr, "admin listening");
    }
    let limits = Limits {
        header_timeout: config.server.header_timeout,
        client_timeout: config.server.client_timeout,
        max_connections: config.server.max_connections,
    };
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let serving = Serving {
        proxy: proxy.clone(),
        limits,
        slots,
        tasks: tasks.clone(),
        stop: stop.clone(),
        hard_stop: hard_stop.clone(),
    };
    let mut tls_addr = None;
    if let Some(certificate) = certificate {
        let acceptor = TlsAcceptor::from(certificate.server_config());
        for listener in tls_listeners {
            let addr = listener.local_addr().context("reading the bound address")?;
            tls_addr.get_or_insert(addr);
            tasks.spawn(server::serve(
                listener,
                serving.clone(),
                Some(acceptor.clone()),
            ));
            tracing::info!(addr = %addr, "tls listening");
        }
        tasks.spawn(reload_on_sighup(certificate, stop.clone()));
    }
    for listener in listeners {
        let addr = listener.local_addr().context("reading the bound address")?;
        tasks.spawn(server::serve(listener, serving.clone(), None));
        tracing::info!(addr = %addr, cache = %config.cache_dir.display(),
            sources = config.upstream.sources.len(), mounts = config.mounts.len(), "package-cache listening");
    }
    Ok(Running {
        proxy_addr,
        admin_addr,
        tls_addr,
        api_addr,
        builds,
        store,
        shared: shared.clone(),
        metrics,
        stop,
        hard_stop,
        tasks,
        grace: config.server.shutdown_grace,
    })
}

/// The supply-chain policy: its lists, clock and first-seen record read
/// (off the runtime), its reloader and writer started; first-seen times
/// shared through the shared store when there is one.
async fn open_supply(
    config: &Config,
    shared: Option<&SharedTier>,
    tasks: &TaskTracker,
    stop: &CancellationToken,
) -> anyhow::Result<Arc<crate::supply::Supply>> {
    if config.supply.is_off() {
        return Ok(Arc::new(crate::supply::Supply::off()));
    }
    let (supply_config, state) = (
        config.supply.clone(),
        crate::store::Layout::new(&config.cache_dir).first_seen_file(),
    );
    let fleet = shared.map(|tier| crate::supply::Fleet::new(tier.store().clone()));
    let supply = tokio::task::spawn_blocking(move || {
        crate::supply::Supply::open(&supply_config, &state, fleet)
    })
    .await
    .context("reading the supply-chain policy")?
    .map_err(anyhow::Error::msg)
    .context("reading the supply-chain policy")?;
    let supply = Arc::new(supply);
    supply.spawn(tasks, stop.clone());
    Ok(supply)
}

/// Opens the shared object-store tier (`--shared-store`) and adds it below the
/// local disk. Its uploads end with `hard_stop`, so fills that finish within
/// the grace period still publish; its upkeep ends with `stop`.
async fn start_shared(
    config: &Config,
    store: &Store,
    tasks: &TaskTracker,
    stop: &CancellationToken,
    hard_stop: &CancellationToken,
) -> anyhow::Result<Option<SharedTier>> {
    let Some(shared_config) = &config.shared_store else {
        return Ok(None);
    };
    let shared = SharedStore::open(shared_config, tasks.clone(), hard_stop.clone())
        .await
        .with_context(|| format!("opening the shared store {}", shared_config.url()))?;
    let tier = SharedTier::new(shared, store);
    store.add_tier(Arc::new(tier.clone()));
    tier.spawn_upkeep(tasks, stop.clone());
    tracing::info!(url = %shared_config.url(), "shared store below the local disk");
    Ok(Some(tier))
}

/// The build sandbox, or why builds cannot run.
async fn start_sandbox(config: &Config) -> Result<Sandbox, String> {
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
fn build_gateway(
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
async fn start_builds(
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

/// Reloads the TLS certificate on each SIGHUP until `stop` fires; a reload
/// that fails keeps the certificate in use.
async fn reload_on_sighup(certificate: Arc<tls::Reloadable>, stop: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(hup) => hup,
        Err(err) => {
            tracing::warn!(error = %err, "no SIGHUP handler; the TLS certificate is never reloaded");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            got = hup.recv() => if got.is_none() { return },
        }
        let certificate = certificate.clone();
        match tokio::task::spawn_blocking(move || certificate.reload()).await {
            Ok(Ok(())) => tracing::info!("TLS certificate reloaded"),
            Ok(Err(err)) => {
                tracing::error!(error = %err, "TLS certificate not reloaded; keeping the one in use")
            }
            Err(err) => tracing::error!(error = %err, "TLS certificate reload failed"),
        }
    }
}

/// Binds every address `host` resolves to (`localhost` is often both
/// 127.0.0.1 and ::1); with port 0 only the first, as each would get its own
/// port. An address this machine does not have is skipped; any other failure
/// (the port taken) stops the start, so clients never reach someone else.
async fn bind(host: &str, port: u16) -> anyhow::Result<Vec<TcpListener>> {
    let mut addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .with_context(|| format!("resolving {host}"))?
        .collect();
    addrs.dedup();
    if port == 0 {
        addrs.truncate(1);
    }
    let mut listeners = Vec::new();
    for addr in &addrs {
        match listen(*addr) {
            Ok(listener) => listeners.push(listener),
            Err(err) if matches!(err.raw_os_error(), Some(code) if code == rustix::io::Errno::ADDRNOTAVAIL.raw_os_error() || code == rustix::io::Errno::AFNOSUPPORT.raw_os_error()) =>
            {
                tracing::warn!(addr = %addr, error = %err, "skipping an address this machine does not have");
            }
            Err(err) => return Err(anyhow::Error::new(err).context(format!("binding {addr}"))),
        }
    }
    if listeners.is_empty() {
        anyhow::bail!("{host} resolves to no address this machine can listen on");
    }
    Ok(listeners)
}

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    if addr.is_ipv6() {
        // `::` must not also claim IPv4, which may be bound separately.
        socket2::SockRef::from(&socket).set_only_v6(true)?;
    }
    socket.bind(addr)?;
    socket.listen(1024)
}

impl Running {
    /// The open store (tests inspect it).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The shared store tier, with `--shared-store` (tests read its status).
    pub fn shared(&self) -> Option<&SharedTier> {
        self.shared.as_ref()
    }

    /// The app's metrics (the eviction index records evictions here).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Stops accepting, lets transfers and fills finish for the grace period,
    /// then closes what is left (unfinished fills are not committed).
    pub async fn shutdown(self) {
        self.stop.cancel();
        self.tasks.close();
        if tokio::time::timeout(self.grace, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                grace_s = self.grace.as_secs(),
                "grace period over; closing remaining transfers"
            );
            self.hard_stop.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(2), self.tasks.wait()).await;
        }
        // The workers are gone: their last state changes go to disk before exit.
        let _ = tokio::time::timeout(Duration::from_secs(5), self.builds.flush()).await;
    }
}

/// Runs until `signal` completes, then shuts down gracefully.
pub async fn run(config: Config, signal: impl Future<Output = ()>) -> anyhow::Result<()> {
    let running = start(config).await?;
    signal.await;
    tracing::info!("shutting down");
    running.shutdown().await;
    Ok(())
}

/// The scrub's reports, counted in the app's metrics.
struct ScrubReport(Arc<Metrics>);

impl scrub::Report for ScrubReport {
    fn scrubbed(&self, bytes: u64) {
        self.0.scrubbed(bytes);
    }

    fn damage_found(&self) {
        self.0.scrub_found_damage();
    }
}
