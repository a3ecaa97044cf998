//! What the gateway hands on: one accepted message with its envelope.

use chrono::{DateTime, Utc};

use crate::BoxFuture;

/// One message accepted at the end of `DATA`.
#[derive(Clone, PartialEq, Eq)]
pub struct Submission {
    /// Unique and sortable by time: `YYYYMMDDTHHMMSSmmmZ-<16 hex>` (UTC, milliseconds, 64
    /// random bits), 36 characters of `[A-Za-z0-9-]`. Quoted in the `250` reply.
    pub id: String,
    /// When the end of `DATA` was received.
    pub received_at: DateTime<Utc>,
    /// `MAIL FROM` exactly as given, without the angle brackets (never empty: `<>` is refused).
    pub reverse_path: String,
    /// Each `RCPT TO` exactly as given, without the angle brackets, in order.
    pub recipients: Vec<String>,
    /// The authenticated mailbox ([`crate::Account::address`]). Not compared with
    /// `reverse_path` here: the access point's formal checks answer a mismatch with a PEC
    /// non-acceptance notice.
    pub user: String,
    /// The authenticated mailbox's tenant.
    pub tenant: String,
    /// The client's IP address.
    pub client_ip: String,
    /// The `EHLO`/`HELO` argument.
    pub helo: String,
    /// Whether the message came over TLS (always true today: `AUTH` requires `STARTTLS`).
    pub tls: bool,
    /// The message exactly as received after dot-unstuffing: CRLF line ends, nothing prepended,
    /// ending with the CRLF that precedes the final `.` (SMTP cannot carry a message without a
    /// final line end: a client adds it).
    pub raw: Vec<u8>,
    /// The gateway's own `Received:` field (CRLF-terminated, [`crate::trace::received_field`]):
    /// what is stored is `trace` followed by `raw` ([`Submission::stored`]).
    pub trace: String,
}

impl Submission {
    /// The bytes kept for the access point: our trace field, then the message as received.
    pub fn stored(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.trace.len() + self.raw.len());
        bytes.extend_from_slice(self.trace.as_bytes());
        bytes.extend_from_slice(&self.raw);
        bytes
    }
}

impl std::fmt::Debug for Submission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Submission")
            .field("id", &self.id)
            .field("received_at", &self.received_at)
            .field("reverse_path", &self.reverse_path)
            .field("recipients", &self.recipients)
            .field("user", &self.user)
            .field("tenant", &self.tenant)
            .field("client_ip", &self.client_ip)
            .field("helo", &self.helo)
            .field("tls", &self.tls)
            .field("raw_len", &self.raw.len())
            .finish()
    }
}

/// The sink could not keep the message (the client gets `451 4.3.0` and retries later).
#[derive(Debug, thiserror::Error)]
#[error("storing the submission failed: {0}")]
pub struct SinkError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

impl SinkError {
    /// Wraps any error or message.
    pub fn new(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self(e.into())
    }
}

/// Where accepted messages go (the raw-mail bucket in production, memory in tests). `Ok` must
/// mean the message is durably kept: the client is then told `250` and will not send it again.
pub trait Sink: Send + Sync {
    /// Keeps one submission.
    fn store<'a>(&'a self, submission: &'a Submission) -> BoxFuture<'a, Result<(), SinkError>>;
}

/// A new submission id (see [`Submission::id`]); the HTTP API's submissions use it too.
pub fn new_id(now: DateTime<Utc>) -> String {
    let mut rnd = [0u8; 8];
    if getrandom::fill(&mut rnd).is_err() {
        // No OS randomness: fall back to the clock's nanoseconds and a process counter, still
        // unique within this process.
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = u64::from(now.timestamp_subsec_nanos())
            ^ COUNTER.fetch_add(1, Ordering::Relaxed).rotate_left(32)
            ^ u64::from(std::process::id());
        rnd = n.to_be_bytes();
    }
    let hex: String = rnd.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{hex}", now.format("%Y%m%dT%H%M%S%3fZ"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn ids() {
        let t = Utc.with_ymd_and_hms(2026, 5, 12, 10, 11, 12).unwrap()
            + chrono::Duration::milliseconds(345);
        let a = new_id(t);
        let b = new_id(t);
        assert_eq!(a.len(), 36);
        assert!(a.starts_with("20260512T101112345Z-"), "{a}");
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-'));
        assert_ne!(a, b);
        let later = new_id(t + chrono::Duration::milliseconds(1));
        assert!(later > a && later > b);
    }
}
