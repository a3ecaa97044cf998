//! The typed contracts between steps: what one step hands the next through a queue or an
//! object. Every one carries references (keys, ids, addresses), never the mail itself.
//!
//! - ingress / receiving point -> scan: [`ScanRequest`] (scan queue);
//! - scan -> ingress: [`ScanHandoff`] (`scan/clean/<raw key>.json`, the scan step's record);
//! - deliver -> receipts: [`ReceiptRequest`] (receipts queue);
//! - deliver -> the relay worker on the edge service: [`RelayRequest`] (relay queue, with
//!   `PEC_RELAY=smtp`: Lambda cannot open port 25);
//! - deliver -> integrators: [`IntegrationEvent`] (EventBridge; the same record is the
//!   provider-log entry).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::state::RecipientOutcome;

/// An integration event (EventBridge detail) and provider-log record.
pub use pec_core::events::PecEvent as IntegrationEvent;

/// Version of [`ScanRequest`], [`ScanHandoff`] and the scan step's record.
pub const CONTRACT_VERSION: u32 = 1;
/// Version of [`ReceiptRequest`].
pub const RECEIPT_REQUEST_VERSION: u32 = 1;
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

impl ScanRequest {
    /// The queue message body.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
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

/// The part of the scan step's record the next step reads (`scan/clean/<raw key>.json`): when
/// the verdict was reached (the time reference of the acceptance receipt). The key names the
/// message; the other fields (version, request, report, decision, outputs) are the scan step's
/// own and read tolerantly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanHandoff {
    pub scanned_at: DateTime<Utc>,
    /// The spam score (absent when no spam engine is configured): ingress logs an outbound
    /// detection for the spam lockout.
    #[serde(default)]
    pub spam: Option<crate::spam::SpamCheck>,
}

/// A recipient outcome handed to the receipts step (one SQS message).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptRequest {
    pub version: u32,
    /// Submission id (ours), or `in-<inbound id>` for an envelope another provider sent.
    pub message: String,
    pub outcome: RecipientOutcome,
    /// For an envelope another provider sent: its evidence key (`received/in/<id>/...`), the
    /// source of the certified data; `None` for our own messages (the message record).
    #[serde(default)]
    pub envelope: Option<String>,
}

/// An object of the evidence bucket to send to recipients outside our domains over SMTP, handed
/// by the deliver step to the relay worker on the edge service (one SQS message per object; the
/// worker sends it byte for byte to each recipient's MX). The worker puts it back on its own
/// queue, delayed, while recipients are deferred, until 24 h after `first_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayRequest {
    pub version: u32,
    /// The evidence bucket.
    pub bucket: String,
    /// `signed/...`: what to send, exactly as signed.
    pub key: String,
    /// The recipients outside our domains (SMTP envelope), as deliver found them.
    pub recipients: Vec<String>,
    /// Our submission id when the object is its transport envelope: the message record says
    /// which recipients are certified (verified TLS, and a refusal becomes an avviso di mancata
    /// consegna at once); `None` for receipts and notices we relay.
    #[serde(default)]
    pub message: Option<String>,
    /// When deliver first handed the object over: the retries stop 24 h after it.
    pub first_at: DateTime<Utc>,
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
