//! The HTTP(S) client used for every upstream request: hyper-util's pooled
//! client over a rustls connector (system trust store plus `--ca-file`), with
//! a resolver that honours `--resolve` overrides, a connect timeout and an
//! idle-pool timer.

use crate::config::UpstreamConfig;
use bytes::Bytes;
use http_body_util::Empty;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

/// The pooled upstream client type.
pub type HttpClient = Client<HttpsConnector<HttpConnector<Resolver>>, Empty<Bytes>>;

/// Errors building the client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The CA file could not be read or holds no certificate.
    #[error("reading CA file {path}: {reason}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// DNS resolution with `--resolve` overrides consulted first.
#[derive(Clone, Debug, Default)]
pub struct Resolver {
    overrides: Arc<HashMap<String, IpAddr>>,
}

impl Resolver {
    /// A resolver with `overrides` (host → address; the port comes from the URL).
    pub fn new(overrides: impl IntoIterator<Item = (String, IpAddr)>) -> Resolver {
        Resolver {
            overrides: Arc::new(overrides.into_iter().collect()),
        }
    }
}

impl tower_service::Service<Name> for Resolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let host = name.as_str().to_ascii_lowercase();
        if let Some(ip) = self.overrides.get(&host) {
            let addrs = vec![SocketAddr::new(*ip, 0)];
            return Box::pin(async move { Ok(addrs.into_iter()) });
        }
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            Ok(addrs.into_iter())
        })
    }
}

/// Builds the client for `config`. Reads certificate files, so call it at start-up.
pub fn build(config: &UpstreamConfig) -> Result<HttpClient, Error> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for err in &native.errors {
        tracing::debug!(error = %err, "skipping a system certificate");
    }
    roots.add_parsable_certificates(native.certs);
    if let Some(path) = &config.ca_file {
        let err = |reason: String| Error::CaFile {
            path: path.clone(),
            reason,
        };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| err(e.to_string()))?
            .collect::<Result<_, _>>()
            .map_err(|e| err(e.to_string()))?;
        if certs.is_empty() {
            return Err(err("no certificate in file".into()));
        }
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(err("no usable certificate in file".into()));
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let resolver = Resolver::new(
        config
            .resolve
            .iter()
            .map(|((host, _port), addr)| (host.clone(), addr.ip())),
    );
    let mut http = HttpConnector::new_with_resolver(resolver);
    http.enforce_http(false);
    http.set_connect_timeout(Some(config.connect_timeout));
    http.set_nodelay(true);
    http.set_keepalive(Some(Duration::from_secs(60)));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .timer(TokioTimer::new())
        .build(https))
}
