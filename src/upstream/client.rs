//! The HTTP(S) clients used for every upstream request: hyper-util's pooled
//! client over a rustls connector (system trust store plus `--ca-file`), over
//! `connect::Connector` (`--resolve` rules by host and port), with a connect
//! timeout and an idle-pool timer. Two clients, two pools: one for the
//! sources' own origins, one for redirects to other origins, whose every
//! connection passed the special-address guard.

use super::connect::{Connector, Guard, Overrides, Resolver};
use crate::config::UpstreamConfig;
use bytes::Bytes;
use http_body_util::Empty;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The pooled upstream client type.
pub type HttpClient = Client<HttpsConnector<Connector>, Empty<Bytes>>;

/// The two clients: they share the TLS configuration, never a connection.
#[derive(Clone)]
pub struct Clients {
    /// For a source's own origin (and a named host): the operator chose it.
    pub sources: HttpClient,
    /// For a redirect to another origin: special addresses are refused
    /// unless `--allow-redirect-host` allows the host.
    pub redirects: HttpClient,
}

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

/// Builds the clients for `config`. Reads certificate files, so call it at start-up.
pub fn build(config: &UpstreamConfig) -> Result<Clients, Error> {
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
    let overrides: Arc<Overrides> = Arc::new(
        config
            .resolve
            .iter()
            .map(|((host, port), addr)| ((host.clone(), *port), addr.ip()))
            .collect(),
    );
    let guard = Arc::new(Guard::new(config.allow_redirect_hosts.clone()));
    let client = |guard: Option<Arc<Guard>>| {
        let mut http = HttpConnector::new_with_resolver(Resolver::new(guard.clone()));
        http.enforce_http(false);
        http.set_connect_timeout(Some(config.connect_timeout));
        http.set_nodelay(true);
        http.set_keepalive(Some(Duration::from_secs(60)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls.clone())
            .https_or_http()
            .enable_http1()
            .wrap_connector(Connector::new(http, overrides.clone(), guard));
        Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .timer(TokioTimer::new())
            .build(https)
    };
    Ok(Clients {
        sources: client(None),
        redirects: client(Some(guard)),
    })
}
