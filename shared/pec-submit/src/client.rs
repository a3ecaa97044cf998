//! A submission client (feature `client`, on by default): `STARTTLS` + `AUTH PLAIN`, then raw
//! messages with an explicit envelope. For the local demo and the tests.
//!
//! Built on lettre's `AsyncSmtpConnection` (features `smtp-transport`, `tokio1`,
//! `tokio1-rustls`, `ring`; no builder, no native-tls, no pool). The trust root is the
//! caller's certificate only: lettre's `CertificateStore::None` plus
//! `add_root_certificate`, so no system or webpki roots are loaded. lettre refuses to compile
//! rustls without naming a root source feature, so `rustls-native-certs` is enabled; with
//! `CertificateStore::None` it is never used. lettre picks rustls' process-default crypto
//! provider if one is installed, ring otherwise (aws-lc-rs is not compiled in).
//!
//! The message bytes are sent as given: lettre dot-stuffs them, and the server stores exactly
//! `raw` when it ends with CRLF (`raw` + CRLF when it does not: SMTP cannot carry a message
//! without a final line end). Nothing is added or re-encoded.

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use lettre::Address;
use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{
    AsyncSmtpConnection, Certificate, CertificateStore, TlsParameters,
};
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::response::Response;
use rustls::pki_types::CertificateDer;

/// Network timeout of each client step.
const TIMEOUT: Duration = Duration::from_secs(60);

/// Why a submission failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error reply (`4xx`: transient, retry later; `5xx`: permanent).
    #[error("the server replied {code}: {message}")]
    Rejected {
        /// The reply code (e.g. 451, 535, 552).
        code: u16,
        /// lettre's rendering of the reply, with its text.
        message: String,
    },
    /// An address of the envelope could not be used.
    #[error("invalid address {0:?}")]
    Address(String),
    /// Connection, TLS or protocol failure (no reply code).
    #[error("submission failed: {0}")]
    Connection(String),
}

impl ClientError {
    /// True for a `4xx` reply: the message was not accepted and should be sent again later.
    pub fn is_transient(&self) -> bool {
        matches!(self, ClientError::Rejected { code, .. } if (400..500).contains(code))
    }

    /// The reply code, if the server answered.
    pub fn code(&self) -> Option<u16> {
        match self {
            ClientError::Rejected { code, .. } => Some(*code),
            _ => None,
        }
    }
}

impl From<lettre::transport::smtp::Error> for ClientError {
    fn from(e: lettre::transport::smtp::Error) -> Self {
        match e.status() {
            Some(code) => ClientError::Rejected {
                code: code.into(),
                message: e.to_string(),
            },
            None => ClientError::Connection(e.to_string()),
        }
    }
}

/// An authenticated session over TLS; any error closes it.
pub struct Connection {
    inner: AsyncSmtpConnection,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("encrypted", &self.inner.is_encrypted())
            .finish()
    }
}

/// Connects to `server`, says `EHLO`, upgrades with `STARTTLS` (the server certificate must
/// chain to `tls_root` and be valid for `server_name`) and logs in with `AUTH PLAIN`.
pub async fn connect(
    server: SocketAddr,
    tls_root: &CertificateDer<'_>,
    server_name: &str,
    username: &str,
    password: &str,
) -> Result<Connection, ClientError> {
    let root = Certificate::from_der(tls_root.as_ref().to_vec())?;
    let tls = TlsParameters::builder(server_name.to_owned())
        .certificate_store(CertificateStore::None)
        .add_root_certificate(root)
        .build_rustls()?;
    let hello = ClientId::default();
    let mut inner =
        AsyncSmtpConnection::connect_tokio1(server, Some(TIMEOUT), &hello, None, None).await?;
    inner.starttls(tls, &hello).await?;
    let credentials = Credentials::new(username.to_owned(), password.to_owned());
    inner.auth(&[Mechanism::Plain], &credentials).await?;
    Ok(Connection { inner })
}

impl Connection {
    /// Sends one message with the envelope `reverse_path` → `recipients` (addresses without
    /// angle brackets). Returns the queue id from the `250` reply (`Ok: queued as <id>`), or an
    /// empty string if the reply has none.
    pub async fn send(
        &mut self,
        reverse_path: &str,
        recipients: &[String],
        raw: &[u8],
    ) -> Result<String, ClientError> {
        let from = parse_address(reverse_path)?;
        let to = recipients
            .iter()
            .map(|r| parse_address(r))
            .collect::<Result<Vec<_>, _>>()?;
        let envelope =
            Envelope::new(Some(from), to).map_err(|e| ClientError::Address(e.to_string()))?;
        // lettre always ends DATA with CRLF "." CRLF: the final CRLF of the message is that
        // first CRLF, so it is not sent twice.
        let body = raw.strip_suffix(b"\r\n").unwrap_or(raw);
        let response = self.inner.send(&envelope, body).await?;
        Ok(queue_id(&response))
    }

    /// Says `QUIT` and closes.
    pub async fn quit(mut self) -> Result<(), ClientError> {
        self.inner.quit().await?;
        Ok(())
    }
}

/// One message in one session: [`connect`], [`Connection::send`], [`Connection::quit`].
/// Returns the queue id (see [`Connection::send`]).
#[allow(clippy::too_many_arguments)]
pub async fn submit(
    server: SocketAddr,
    tls_root: &CertificateDer<'_>,
    server_name: &str,
    username: &str,
    password: &str,
    reverse_path: &str,
    recipients: &[String],
    raw: &[u8],
) -> Result<String, ClientError> {
    let mut connection = connect(server, tls_root, server_name, username, password).await?;
    let id = connection.send(reverse_path, recipients, raw).await?;
    // The message is accepted: a failing QUIT changes nothing.
    let _ = connection.quit().await;
    Ok(id)
}

fn parse_address(s: &str) -> Result<Address, ClientError> {
    Address::from_str(s).map_err(|_| ClientError::Address(s.to_owned()))
}

fn queue_id(response: &Response) -> String {
    response
        .message()
        .find_map(|line| line.split_once("queued as ").map(|(_, id)| id.trim()))
        .unwrap_or_default()
        .to_owned()
}
