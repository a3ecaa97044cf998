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
pub mod receiving;
pub mod timers;
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
    /// The provider index (IGPEC LDIF) in the evidence bucket.
    pub provider_index_key: String,
    /// The accredited roots (PEM) signatures of other providers must chain to, in the
    /// evidence bucket.
    pub trust_anchors_key: String,
}

/// Where the provider index is by default.
pub const DEFAULT_PROVIDER_INDEX_KEY: &str = "config/provider-index.ldif";
/// Where the trust anchors are by default.
pub const DEFAULT_TRUST_ANCHORS_KEY: &str = "config/trust-anchors.pem";

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
            provider_index_key: var("PEC_PROVIDER_INDEX_KEY")
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| DEFAULT_PROVIDER_INDEX_KEY.to_string()),
            trust_anchors_key: var("PEC_TRUST_ANCHORS_KEY")
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| DEFAULT_TRUST_ANCHORS_KEY.to_string()),
        })
    }
}

/// The provider index (IGPEC LDIF) from the evidence bucket (read per use: it is small; a
/// missing or unreadable one is an error, so the message waits instead of being judged
/// without it).
pub async fn load_index<St: pec_aws::ObjectStore>(
    settings: &Settings,
    store: &St,
) -> Result<pec_smime::ProviderIndex, TrustError> {
    let (b, key) = (&settings.evidence_bucket, &settings.provider_index_key);
    let ldif = store
        .get(b, key)
        .await?
        .ok_or_else(|| TrustError::Missing {
            bucket: b.clone(),
            key: key.clone(),
        })?;
    pec_smime::ProviderIndex::from_ldif(&ldif).map_err(|e| TrustError::Invalid {
        key: key.clone(),
        reason: e.to_string(),
    })
}

/// The provider index and the trust anchors from the evidence bucket (see [`load_index`]).
pub async fn load_trust<St: pec_aws::ObjectStore>(
    settings: &Settings,
    store: &St,
) -> Result<(pec_smime::ProviderIndex, pec_smime::TrustAnchors), TrustError> {
    let index = load_index(settings, store).await?;
    let (b, key) = (&settings.evidence_bucket, &settings.trust_anchors_key);
    let pem = store
        .get(b, key)
        .await?
        .ok_or_else(|| TrustError::Missing {
            bucket: b.clone(),
            key: key.clone(),
        })?;
    let mut anchors = pec_smime::TrustAnchors::new();
    anchors
        .add_pem_bundle(&pem)
        .map_err(|e| TrustError::Invalid {
            key: key.clone(),
            reason: e.to_string(),
        })?;
    Ok((index, anchors))
}

/// The provider index or the trust anchors cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("s3://{bucket}/{key} is missing: other providers' mail cannot be verified")]
    Missing { bucket: String, key: String },
    #[error("{key} is unusable: {reason}")]
    Invalid { key: String, reason: String },
    #[error(transparent)]
    Store(#[from] pec_aws::StoreError),
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
