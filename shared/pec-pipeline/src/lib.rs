//! The steps of the pipeline inside one provider (ARCHITECTURE.md, "The pipeline"):
//!
//! - [`ingress`] (access point): a submission's formal checks, identificativo and the
//!   non-acceptance notice or the scan request; after a clean scan, the acceptance receipt and
//!   the transport envelope.
//! - [`deliver`] (delivery point): every signed provider message is logged, published as an
//!   integration event and stored in the mailboxes it is for (quota enforced for envelopes);
//!   each recipient of an envelope gets one recorded outcome, handed to `receipts`.
//! - [`receipts`]: the delivery receipt (in the form the sender asked for) or the non-delivery
//!   notice for one recipient, handed to `sign`.
//!
//! Each step is generic over the `pec-aws` traits (S3, DynamoDB, SQS, EventBridge in Lambda and
//! on the emulators; memory in unit tests) and idempotent: decisions are recorded with
//! conditional writes and rebuilt byte for byte (times and ids come from the records).

pub mod deliver;
pub mod ingress;
pub mod keys;
pub mod receipts;
pub mod wiring;

use pec_core::build::Provider;

/// What every step needs to know about the deployment.
#[derive(Debug, Clone)]
pub struct Settings {
    pub provider: Provider,
    pub raw_bucket: String,
    pub evidence_bucket: String,
    pub mailbox_bucket: String,
    pub scan_queue_url: String,
    pub receipts_queue_url: String,
}

/// A required environment variable is missing or invalid.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("environment variable {0} is not set")]
    Missing(&'static str),
    #[error("invalid provider name or domain: {0}")]
    Provider(String),
}

impl Settings {
    /// From the environment the template gives every function (`PEC_PROVIDER_NAME`,
    /// `PEC_PROVIDER_DOMAIN`, `PEC_RAW_BUCKET`, `PEC_EVIDENCE_BUCKET`, `PEC_MAILBOX_BUCKET`,
    /// `PEC_SCAN_QUEUE_URL`, `PEC_RECEIPTS_QUEUE_URL`).
    pub fn from_env(var: &impl Fn(&'static str) -> Option<String>) -> Result<Self, SettingsError> {
        let get = |name: &'static str| {
            var(name)
                .filter(|v| !v.is_empty())
                .ok_or(SettingsError::Missing(name))
        };
        let provider = Provider::new(&get("PEC_PROVIDER_NAME")?, &get("PEC_PROVIDER_DOMAIN")?)
            .map_err(|e| SettingsError::Provider(e.to_string()))?;
        Ok(Settings {
            provider,
            raw_bucket: get("PEC_RAW_BUCKET")?,
            evidence_bucket: get("PEC_EVIDENCE_BUCKET")?,
            mailbox_bucket: get("PEC_MAILBOX_BUCKET")?,
            scan_queue_url: get("PEC_SCAN_QUEUE_URL")?,
            receipts_queue_url: get("PEC_RECEIPTS_QUEUE_URL")?,
        })
    }
}

/// Whether `address` is in a domain served here: the provider's own domain or a domain a
/// tenant brought (state table).
pub async fn is_ours<Db: pec_aws::StateStore>(
    settings: &Settings,
    state: &Db,
    address: &str,
) -> Result<bool, pec_aws::StateError> {
    let Some(domain) = pec_core::addr::domain_of(address) else {
        return Ok(false);
    };
    if domain.eq_ignore_ascii_case(&settings.provider.domain) {
        return Ok(true);
    }
    Ok(state.domain_tenant(domain).await?.is_some())
}
