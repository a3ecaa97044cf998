//! What the submission gateway records beside each submitted message, and the keys it uses.
//!
//! The gateway writes the message bytes exactly as received to `submitted/<id>.eml`, then this
//! envelope as JSON to `submitted/<id>.json`. Only the `.json` object triggers the ingress step,
//! so ingress always finds the message in place (it was written first).

use serde::{Deserialize, Serialize};

/// Current envelope format version.
pub const ENVELOPE_VERSION: u32 = 1;

/// Raw-bucket prefix of submitted messages.
pub const SUBMITTED_PREFIX: &str = "submitted/";

/// The SMTP facts of one submission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmissionEnvelope {
    /// Format version ([`ENVELOPE_VERSION`]).
    pub version: u32,
    /// The submission id chosen by the gateway (`[A-Za-z0-9-]`, 1..=64 characters): it names
    /// the objects and seeds every identifier the access point derives.
    pub id: String,
    /// When the gateway received the end of DATA (RFC 3339, UTC).
    pub received_at: chrono::DateTime<chrono::Utc>,
    /// The authenticated mailbox.
    pub user: String,
    /// The tenant that owns the mailbox.
    pub tenant: String,
    /// SMTP `MAIL FROM`, without angle brackets.
    pub reverse_path: String,
    /// SMTP `RCPT TO`, without angle brackets, in order.
    pub recipients: Vec<String>,
    /// The client's IP address.
    #[serde(default)]
    pub client_ip: String,
    /// Whether the session was under TLS.
    #[serde(default)]
    pub tls: bool,
    /// The sender's folder for the receipts and notices about this submission (a mass-sending
    /// job's folder); `None`: INBOX. Written only by our own submitters, never from a client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipts_folder: Option<String>,
}

/// Why an envelope or a key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("the submission envelope is not valid JSON: {0}")]
    Json(String),
    #[error("unsupported submission envelope version {0}")]
    Version(u32),
    #[error("invalid submission id {0:?} (1 to 64 characters of [A-Za-z0-9-])")]
    BadId(String),
}

impl SubmissionEnvelope {
    /// Parses and validates an envelope.
    pub fn from_json(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        let e: SubmissionEnvelope =
            serde_json::from_slice(bytes).map_err(|e| EnvelopeError::Json(e.to_string()))?;
        if e.version != ENVELOPE_VERSION {
            return Err(EnvelopeError::Version(e.version));
        }
        if !valid_id(&e.id) {
            return Err(EnvelopeError::BadId(e.id));
        }
        Ok(e)
    }

    /// The JSON form.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// `submitted/<id>.eml`.
    pub fn message_key(&self) -> String {
        message_key(&self.id)
    }

    /// `submitted/<id>.json`.
    pub fn envelope_key(&self) -> String {
        envelope_key(&self.id)
    }
}

/// Whether `id` is a valid submission id.
pub fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// `submitted/<id>.eml`.
pub fn message_key(id: &str) -> String {
    format!("{SUBMITTED_PREFIX}{id}.eml")
}

/// `submitted/<id>.json`.
pub fn envelope_key(id: &str) -> String {
    format!("{SUBMITTED_PREFIX}{id}.json")
}

/// The submission id of `submitted/<id>.json` or `submitted/<id>.eml`.
pub fn id_of_key(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(SUBMITTED_PREFIX)?;
    let id = rest
        .strip_suffix(".json")
        .or_else(|| rest.strip_suffix(".eml"))?;
    valid_id(id).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SubmissionEnvelope {
        SubmissionEnvelope {
            receipts_folder: None,
            version: ENVELOPE_VERSION,
            id: "20261123T120000000Z-abc123".into(),
            received_at: "2026-11-23T12:00:00Z".parse().unwrap(),
            user: "mario@pec.example.it".into(),
            tenant: "studio".into(),
            reverse_path: "mario@pec.example.it".into(),
            recipients: vec!["anna@pec.example.it".into()],
            client_ip: "127.0.0.1".into(),
            tls: true,
        }
    }

    #[test]
    fn round_trip_and_keys() {
        let e = sample();
        assert_eq!(SubmissionEnvelope::from_json(&e.to_json()), Ok(e.clone()));
        assert_eq!(e.message_key(), "submitted/20261123T120000000Z-abc123.eml");
        assert_eq!(id_of_key(&e.envelope_key()), Some(e.id.as_str()));
        assert_eq!(id_of_key(&e.message_key()), Some(e.id.as_str()));
        assert_eq!(id_of_key("submitted/../x.json"), None);
        assert_eq!(id_of_key("inbound/x.json"), None);
    }

    #[test]
    fn refusals_are_specific() {
        let mut e = sample();
        e.version = 2;
        assert_eq!(
            SubmissionEnvelope::from_json(&e.to_json()),
            Err(EnvelopeError::Version(2))
        );
        let mut e = sample();
        e.id = "a/b".into();
        assert_eq!(
            SubmissionEnvelope::from_json(&e.to_json()),
            Err(EnvelopeError::BadId("a/b".into()))
        );
        assert!(matches!(
            SubmissionEnvelope::from_json(b"{"),
            Err(EnvelopeError::Json(_))
        ));
    }
}

/// Raw-bucket prefix of mail received from other providers and the outside world.
pub const INBOUND_PREFIX: &str = "inbound/";

/// What SES receiving (locally: the mail exchange) records beside each inbound message: it
/// writes `inbound/<id>.eml` (the bytes as received, SES's own headers on top), then this as
/// `inbound/<id>.json`, which alone triggers the receiving point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboundEnvelope {
    pub version: u32,
    /// SMTP recipients (of the domains this provider receives for).
    pub recipients: Vec<String>,
    /// SMTP `MAIL FROM`.
    #[serde(default)]
    pub source: String,
    pub received_at: chrono::DateTime<chrono::Utc>,
    /// The door it came in by (absent in envelopes written before the MX existed: SES).
    #[serde(default)]
    pub via: InboundVia,
}

/// How an inbound message reached the raw bucket. It decides which unsigned header fields the
/// receiving point may believe: a field SES receiving adds (`X-SES-Spam-Verdict`) is ours only
/// when SES wrote the object; over our own MX the same field came from the sender.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InboundVia {
    /// SES receiving (locally: the mail exchange, which writes what SES writes).
    #[default]
    Ses,
    /// The edge service's MX (`pec_submit`'s MX role).
    Mx,
}

impl InboundEnvelope {
    /// The JSON form.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// Parses and validates an inbound envelope.
    pub fn from_json(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        let e: InboundEnvelope =
            serde_json::from_slice(bytes).map_err(|e| EnvelopeError::Json(e.to_string()))?;
        if e.version != ENVELOPE_VERSION {
            return Err(EnvelopeError::Version(e.version));
        }
        Ok(e)
    }
}

/// The inbound id of `inbound/<id>.json` or `inbound/<id>.eml`.
pub fn inbound_id_of_key(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(INBOUND_PREFIX)?;
    let id = rest
        .strip_suffix(".json")
        .or_else(|| rest.strip_suffix(".eml"))?;
    valid_id(id).then_some(id)
}

#[cfg(test)]
mod inbound_tests {
    use super::*;

    #[test]
    fn envelopes_written_before_the_mx_read_as_ses() {
        let old = br#"{"version":1,"recipients":["a@pec.example.test"],"source":"b@x.test","received_at":"2026-12-07T10:00:00Z"}"#;
        let e = InboundEnvelope::from_json(old).unwrap();
        assert_eq!(e.via, InboundVia::Ses);
        let mx = InboundEnvelope {
            via: InboundVia::Mx,
            ..e
        };
        let json = mx.to_json();
        assert!(String::from_utf8_lossy(&json).contains(r#""via": "mx""#));
        assert_eq!(InboundEnvelope::from_json(&json).unwrap(), mx);
    }
}
