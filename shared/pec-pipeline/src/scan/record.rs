//! What the scan step records about one message (`scan/verdict/<raw key>.json`; the same
//! document is the clean hand-off `scan/clean/<raw key>.json`, which the next step reads as
//! [`pec_ports::contract::ScanHandoff`]). Keys: [`pec_ports::keys`].

use chrono::{DateTime, Utc};
use pec_ports::contract::ScanRequest;
use pec_ports::spam::SpamCheck;
use pec_scan::{Decision, ScanReport};
use serde::{Deserialize, Serialize};

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
    /// The spam score of a message that passed (absent when no spam engine is configured, and
    /// in records written before antispam).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spam: Option<SpamCheck>,
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
