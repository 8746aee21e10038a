//! The optional TLS listener's certificate: loaded from PEM files at start,
//! and again on SIGHUP (as nginx does), so a renewed certificate takes effect
//! without dropping connections. A reload that fails keeps the old one.

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// Why a certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or holds no usable PEM item.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// The key does not suit rustls (or the certificate).
    #[error("certificate and key: {0}")]
    Key(String),
}

/// The current certificate, swapped whole on reload.
#[derive(Debug)]
pub struct Reloadable {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl Reloadable {
    /// Loads `cert` (a PEM chain) and `key` (PEM, PKCS#8/PKCS#1/SEC1). Blocking.
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<Reloadable>, Error> {
        let current = certified(cert, key)?;
        Ok(Arc::new(Reloadable {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: RwLock::new(current),
        }))
    }

    /// Reads the files again; on success new handshakes use them. Blocking.
    pub fn reload(&self) -> Result<(), Error> {
        let fresh = certified(&self.cert, &self.key)?;
        *self
            .current
            .write()
            .expect("certificate lock is never poisoned") = fresh;
        Ok(())
    }

    /// A rustls server config that asks this resolver on every handshake.
    pub fn server_config(self: &Arc<Self>) -> Arc<rustls::ServerConfig> {
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_no_client_auth()
        .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

impl ResolvesServerCert for Reloadable {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .expect("certificate lock is never poisoned")
                .clone(),
        )
    }
}

fn certified(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, Error> {
    let bad = |path: &Path, reason: String| Error::File {
        path: path.to_path_buf(),
        reason,
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad(cert, e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(bad(cert, "no certificate in the file".into()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| bad(key, e.to_string()))?;
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| Error::Key(e.to_string()))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| Error::Key(e.to_string()))?;
    Ok(Arc::new(certified))
}
