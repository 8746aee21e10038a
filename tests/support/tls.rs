//! `TlsIdentity`: a throwaway CA plus a leaf certificate for `localhost` and `127.0.0.1`, made
//! fresh with rcgen for each test (no statics), for HTTPS test origins.
//! Both the server and the client configs pin rustls' `ring` provider, so nothing depends on a
//! process-wide default provider. It owns no sockets; `origin.rs` does the serving.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A self-signed test CA and a leaf certificate it signed for `localhost` and `127.0.0.1`.
/// Cloning is cheap enough for tests; every `generate` makes new keys, so two identities
/// never trust each other.
#[derive(Clone, Debug)]
pub struct TlsIdentity {
    ca_pem: String,
    ca_der: CertificateDer<'static>,
    leaf_der: CertificateDer<'static>,
    leaf_key_pkcs8: Vec<u8>,
    leaf_pem: String,
    leaf_key_pem: String,
}

impl TlsIdentity {
    /// Generates the CA and the leaf. Panics only if rcgen cannot sign, which is a bug.
    pub fn generate() -> Self {
        let ca_key = KeyPair::generate().expect("rcgen generates a CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new())
            .expect("no subject alt names cannot be invalid");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "package-cache test CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = ca_params
            .self_signed(&ca_key)
            .expect("rcgen self-signs the CA");

        let leaf_key = KeyPair::generate().expect("rcgen generates a leaf key");
        // rcgen turns a SAN that parses as an IP address into an iPAddress entry.
        let mut leaf_params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .expect("localhost and 127.0.0.1 are valid subject alt names");
        leaf_params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        leaf_params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let leaf = leaf_params
            .signed_by(&leaf_key, &ca, &ca_key)
            .expect("rcgen signs the leaf with the CA");

        Self {
            ca_pem: ca.pem(),
            ca_der: ca.der().clone(),
            leaf_der: leaf.der().clone(),
            leaf_key_pkcs8: leaf_key.serialize_der(),
            leaf_pem: leaf.pem(),
            leaf_key_pem: leaf_key.serialize_pem(),
        }
    }

    /// The CA certificate in PEM, e.g. to write to a file for a client's `--ca-file`.
    pub fn ca_pem(&self) -> String {
        self.ca_pem.clone()
    }

    /// Writes the leaf certificate and its key as PEM files (a server's
    /// `--tls-cert` and `--tls-key`).
    pub fn write_server_pem(&self, cert: &std::path::Path, key: &std::path::Path) {
        std::fs::write(cert, &self.leaf_pem).expect("write the certificate");
        std::fs::write(key, &self.leaf_key_pem).expect("write the key");
    }

    /// Writes `cert.pem`, `key.pem` and `ca-NAME.pem` (the CA, for clients)
    /// into `dir`; returns the server's `--tls-*` arguments (port 0) and the
    /// CA file.
    pub fn write_listener_files(
        &self,
        dir: &std::path::Path,
        name: &str,
    ) -> (Vec<String>, std::path::PathBuf) {
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        self.write_server_pem(&cert, &key);
        let ca = dir.join(format!("ca-{name}.pem"));
        std::fs::write(&ca, &self.ca_pem).expect("write the CA");
        let args = [
            "--tls-port",
            "0",
            "--tls-cert",
            cert.to_str().expect("utf-8"),
            "--tls-key",
            key.to_str().expect("utf-8"),
        ];
        (args.map(str::to_string).to_vec(), ca)
    }

    /// The CA certificate in DER, for a `RootCertStore`.
    pub fn ca_der(&self) -> CertificateDer<'static> {
        self.ca_der.clone()
    }

    /// Server config presenting the leaf, with ALPN `http/1.1` and the ring provider.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.leaf_key_pkcs8.clone()));
        let mut config =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("the ring provider supports the default protocol versions")
                .with_no_client_auth()
                .with_single_cert(vec![self.leaf_der.clone()], key)
                .expect("the leaf certificate matches its key");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }

    /// Client config that trusts only this CA (ring provider, ALPN `http/1.1`), for tests that
    /// talk to an HTTPS origin directly.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots
            .add(self.ca_der.clone())
            .expect("the generated CA is a valid trust anchor");
        let mut config =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("the ring provider supports the default protocol versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }
}
