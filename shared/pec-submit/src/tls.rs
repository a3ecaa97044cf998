//! rustls configuration with the *ring* provider (the workspace never links aws-lc-rs).

use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The ring crypto provider, as an `Arc` for rustls' builders.
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A `STARTTLS` server configuration from a certificate chain (leaf first) and its key, with
/// the ring provider and rustls' safe default protocol versions (TLS 1.2 and 1.3). No client
/// certificates are asked for.
pub fn tls_server_config(
    cert_chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(cert_chain, key)?;
    Ok(Arc::new(config))
}
