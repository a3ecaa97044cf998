//! The scan step's interface with the rest of the pipeline: what it reads (a [`ScanRequest`] on
//! the scan queue) and what it writes (the keys below). Documented in ARCHITECTURE.md
//! ("Antivirus: the scan step's contract").

use chrono::{DateTime, Utc};
use pec_scan::{Decision, ScanReport};
use serde::{Deserialize, Serialize};

/// Version of [`ScanRequest`] and [`ScanRecord`].
pub const CONTRACT_VERSION: u32 = 1;

/// Verdict records (every verdict), in the evidence bucket: `scan/verdict/<raw key>.json`.
pub const VERDICT_PREFIX: &str = "scan/verdict/";
/// Clean hand-off (the next step's trigger), in the evidence bucket: `scan/clean/<raw key>.json`.
pub const CLEAN_PREFIX: &str = "scan/clean/";
/// Virus notices for the sign step, in the evidence bucket: `unsigned/scan/<raw key>/<notice>.eml`.
pub const NOTICE_PREFIX: &str = "unsigned/scan/";
/// Quarantine copies, in the conservation bucket: `quarantine/<raw key>` (Object Lock,
/// COMPLIANCE, retained 30 months from the scan).
pub const QUARANTINE_PREFIX: &str = "quarantine/";
/// Months a quarantined message is retained (DPR 68/2005: 30 months).
pub const QUARANTINE_MONTHS: u32 = 30;

/// One message to scan: the body of a scan-queue message (JSON). Carries the S3 reference and
/// the ids and addresses the virus outcome needs, never the mail itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanRequest {
    /// Must be [`CONTRACT_VERSION`].
    pub version: u32,
    /// The raw-mail bucket (must be the step's `PEC_RAW_BUCKET`).
    pub bucket: String,
    /// The raw message's key (`submitted/...` or `inbound/...`), not URL-encoded.
    pub key: String,
    /// The tenant whose scan policy applies.
    pub tenant: String,
    /// Where the message is in the PEC flow, with what that point's outcome needs.
    #[serde(flatten)]
    pub point: Point,
}

/// The point of the PEC flow that asks for the scan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "point", rename_all = "kebab-case")]
pub enum Point {
    /// Punto di accesso: a submission from an authenticated user, before acceptance. A virus
    /// means an "avviso di non accettazione per virus" to the user; the message is not relayed.
    Access {
        /// The identificativo the access point assigned to the submission.
        identificativo: String,
        /// The authenticated user's mailbox: the notice goes there (never to a forged From).
        user: String,
        /// SMTP MAIL FROM.
        reverse_path: String,
        /// SMTP RCPT TO.
        recipients: Vec<String>,
        /// The recipients that are PEC mailboxes (`certificato` in daticert); the others are
        /// `esterno`.
        #[serde(default)]
        certified_recipients: Vec<String>,
    },
    /// Punto di ricezione: a transport envelope from another provider. A virus means an
    /// "avviso di rilevazione virus" to the sending provider and an "avviso di mancata consegna
    /// per virus" per affected recipient to the sender; the message is never delivered.
    Receiving {
        /// Our recipients of this envelope (the mailboxes it will not reach).
        recipients: Vec<String>,
        /// The sending provider's receipt address (IGPEC `mailReceipt`).
        sender_receipt_address: String,
    },
}

impl Point {
    /// `access` or `receiving`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Point::Access { .. } => "access",
            Point::Receiving { .. } => "receiving",
        }
    }
}

/// What the step recorded about one message (`scan/verdict/<raw key>.json`; the same document
/// is the clean hand-off `scan/clean/<raw key>.json`). The first record written wins: a retry or
/// a duplicate event re-applies the recorded decision instead of scanning again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanRecord {
    /// [`CONTRACT_VERSION`].
    pub version: u32,
    /// The request, as received.
    pub request: ScanRequest,
    /// When the verdict was reached (also the time reference of the virus notices).
    pub scanned_at: DateTime<Utc>,
    /// Verdict, engines, parts, bytes, time.
    pub report: ScanReport,
    /// What the verdict means under the tenant's policy.
    pub decision: Decision,
    /// The keys of the effects: notices and quarantine copy (empty for a pass).
    #[serde(default)]
    pub outputs: Outputs,
}

/// Where the effects of a decision go.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outputs {
    /// Evidence-bucket keys of the unsigned virus notices.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notices: Vec<String>,
    /// Conservation-bucket key of the quarantine copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantine: Option<String>,
    /// Evidence-bucket key of the clean hand-off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clean: Option<String>,
    /// Why no PEC notice could be made (e.g. mail at the receiving point that is not a PEC
    /// transport envelope: it is quarantined and not delivered, and there is nobody to notify).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// `scan/verdict/<raw key>.json`.
pub fn verdict_key(raw_key: &str) -> String {
    format!("{VERDICT_PREFIX}{raw_key}.json")
}

/// `scan/clean/<raw key>.json`.
pub fn clean_key(raw_key: &str) -> String {
    format!("{CLEAN_PREFIX}{raw_key}.json")
}

/// `unsigned/scan/<raw key>/<name>.eml`.
pub fn notice_key(raw_key: &str, name: &str) -> String {
    format!("{NOTICE_PREFIX}{raw_key}/{name}.eml")
}

/// `quarantine/<raw key>`.
pub fn quarantine_key(raw_key: &str) -> String {
    format!("{QUARANTINE_PREFIX}{raw_key}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_json_shape() {
        let json = serde_json::json!({
            "version": 1, "bucket": "raw", "key": "submitted/a.eml", "tenant": "acme",
            "point": "access", "identificativo": "x@pec.example.test", "user": "u@pec.acme.test",
            "reverse_path": "u@pec.acme.test", "recipients": ["d@pec.other.test"]
        });
        let r: ScanRequest = serde_json::from_value(json.clone()).unwrap();
        assert!(
            matches!(&r.point, Point::Access { certified_recipients, .. } if certified_recipients.is_empty())
        );
        let json = serde_json::json!({
            "version": 1, "bucket": "raw", "key": "inbound/b.eml", "tenant": "acme",
            "point": "receiving", "recipients": ["d@pec.acme.test"],
            "sender_receipt_address": "posta-certificata@pec.other.test"
        });
        let r: ScanRequest = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(serde_json::to_value(&r).unwrap(), json);
        assert!(
            serde_json::from_value::<ScanRequest>(serde_json::json!({
                "version": 1, "bucket": "raw", "key": "k", "tenant": "t", "point": "elsewhere"
            }))
            .is_err()
        );
    }
}
