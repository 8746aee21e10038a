//! The composition root: opens the store, builds the upstream client, binds
//! the listeners and starts the proxy and admin servers; owns the metrics,
//! the cancellation tokens and the task tracker, and shuts everything down
//! with a deadline.
//!
//! `start` is the order of things (bind, drop root, open, serve); what it
//! calls lives beside it: `listen` binds sockets, `build_service` wires the
//! sandbox and build queue, `reload` swaps the TLS certificate on SIGHUP.

mod build_service;
mod listen;
mod reload;

pub use build_service::build_root;

use crate::admin::{Admin, CacheSize};
use crate::api::Api;
use crate::config::{Config, PublicUrl};
use crate::metrics::{Metrics, Scope};
use crate::proxy::target::HostRules;
use crate::proxy::Proxy;
use crate::server::{self, Limits, Serving};
use crate::store::shared::{SharedStore, SharedTier};
use crate::store::Store;
use crate::upstream::{self, Upstream};
use crate::{builds::Builds, evict, privileges, scrub, tls};
use anyhow::Context;
use build_service::{build_gateway, start_builds, start_sandbox};
use listen::bind;
use reload::reload_on_sighup;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
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
        reload_on_sighup(certificate, &tasks, stop.clone());
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
