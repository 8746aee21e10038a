//! The composition root: opens the store, builds the upstream client, binds
//! the listener and starts the server; owns the cancellation tokens and the
//! task tracker, and shuts everything down with a deadline.

use crate::config::Config;
use crate::proxy::target::HostRules;
use crate::proxy::Proxy;
use crate::server::{self, Limits};
use crate::store::Store;
use crate::upstream::Upstream;
use anyhow::Context;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A started app. Dropping it without `shutdown` leaves tasks to the runtime.
pub struct Running {
    /// Where the proxy listens.
    pub proxy_addr: SocketAddr,
    store: Store,
    stop: CancellationToken,
    hard_stop: CancellationToken,
    tasks: TaskTracker,
    grace: Duration,
}

/// Starts the app described by `config`.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let store = Store::open(&config.cache_dir)
        .await
        .with_context(|| format!("opening cache directory {}", config.cache_dir.display()))?;
    let upstream = Upstream::new(&config.upstream).context("setting up the upstream client")?;
    let host = config.server.host.as_str();
    let addr = tokio::net::lookup_host((host, config.server.port))
        .await
        .with_context(|| format!("resolving {host}"))?
        .next()
        .with_context(|| format!("{host} has no address"))?;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let proxy_addr = listener.local_addr().context("reading the bound address")?;
    let tasks = TaskTracker::new();
    let stop = CancellationToken::new();
    let hard_stop = CancellationToken::new();
    let rules = HostRules {
        sources: config.upstream.sources.clone(),
        transparent: config.upstream.transparent_hosts.clone(),
    };
    let proxy = Proxy::new(
        store.clone(),
        upstream,
        rules,
        tasks.clone(),
        hard_stop.clone(),
    );
    let limits = Limits {
        header_timeout: config.server.header_timeout,
        client_timeout: config.server.client_timeout,
        max_connections: config.server.max_connections,
    };
    tasks.spawn(server::serve(
        listener,
        proxy,
        limits,
        tasks.clone(),
        stop.clone(),
        hard_stop.clone(),
    ));
    tracing::info!(addr = %proxy_addr, cache = %config.cache_dir.display(),
        sources = config.upstream.sources.len(), "package-cache listening");
    Ok(Running {
        proxy_addr,
        store,
        stop,
        hard_stop,
        tasks,
        grace: config.server.shutdown_grace,
    })
}

impl Running {
    /// The open store (tests inspect it).
    pub fn store(&self) -> &Store {
        &self.store
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
