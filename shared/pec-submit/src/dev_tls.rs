//! Self-signed certificates for tests and local runs (feature `dev-tls`, on by default for now).
//!
//! Never use these in production: the key is made in process and the certificate is trusted
//! by nothing but the client that is handed [`DevTls::cert_der`].

use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A self-signed certificate, its key and a server configuration using them.
#[derive(Debug, Clone)]
pub struct DevTls {
    /// The certificate (DER): the trust root a client needs, e.g. for [`crate::client`].
    pub cert_der: CertificateDer<'static>,
    /// The same certificate in PEM.
    pub cert_pem: String,
    /// The private key, PKCS#8 PEM (for tools that want files).
    pub key_pem: String,
    /// `STARTTLS` configuration serving this certificate (ring provider).
    pub server_config: Arc<ServerConfig>,
}

/// Why a development certificate could not be made.
#[derive(Debug, thiserror::Error)]
pub enum DevTlsError {
    /// rcgen failed (key generation or certificate encoding).
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the certificate or key.
    #[error("TLS configuration failed: {0}")]
    Tls(#[from] rustls::Error),
}

/// A new self-signed certificate (ECDSA P-256, ring backend) valid for `names` (DNS names or
/// IP addresses, e.g. `["localhost", "127.0.0.1"]`), and a server configuration for it.
pub fn self_signed(names: &[&str]) -> Result<DevTls, DevTlsError> {
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let rcgen::CertifiedKey { cert, signing_key } = rcgen::generate_simple_self_signed(names)?;
    let cert_der = cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(signing_key.serialize_der()));
    let server_config = crate::tls_server_config(vec![cert_der.clone()], key)?;
    Ok(DevTls {
        cert_der,
        cert_pem: cert.pem(),
        key_pem: signing_key.serialize_pem(),
        server_config,
    })
}

/// [`self_signed`] for `localhost` and `127.0.0.1`.
pub fn localhost() -> Result<DevTls, DevTlsError> {
    self_signed(&["localhost", "127.0.0.1"])
}
