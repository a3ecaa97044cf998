//! Every step of the pipeline (ARCHITECTURE.md, "The flow"), written against `pec-ports` only:
//!
//! - [`ingress`] (access point): a submission's formal checks, identificativo and the
//!   non-acceptance notice or the scan request; after a clean scan, the acceptance receipt and
//!   the transport envelope. [`receiving`] (receiving point) is its other half: mail from other
//!   providers and the outside world.
//! - [`scan`]: two antivirus engines in series; a pass hands the message back to ingress, a
//!   virus produces the point's notices and a quarantine copy.
//! - [`sign`]: `unsigned/` -> `signed/`, the only step that uses the provider key.
//! - [`deliver`] (delivery point): every signed provider message is logged, published as an
//!   integration event and stored in the mailboxes it is for (quota enforced for envelopes);
//!   each recipient of an envelope gets one recorded outcome, handed to `receipts`.
//! - [`receipts`]: the delivery receipt (in the form the sender asked for) or the non-delivery
//!   notice for one recipient, handed to `sign`.
//! - [`relay`]: what goes to recipients outside our domains, byte for byte (SES from deliver,
//!   or SMTP from the relay worker on the edge service), and each recipient's answer.
//! - [`timers`]: the 12 h / 24 h notices for recipients at other providers.
//! - [`sms`]: SMS notification of new PEC, a burst as one digest.
//! - [`definitions`]: the scheduled ClamAV definition updater (freshclam into the evidence
//!   bucket, a marker the scan function reloads from, the definitions' age metric).
//!
//! Each step is generic over the `pec-ports` traits (S3, DynamoDB, SQS, EventBridge in Lambda
//! and on the emulators, wired by `pec-host`; memory in unit tests) and idempotent: decisions are
//! recorded with conditional writes and rebuilt byte for byte (times and ids come from the
//! records). Each implements [`Step`], the one shape every host (Lambda, the local runner)
//! invokes.

pub mod batch;
pub mod bulk;
pub mod definitions;
pub mod deliver;
mod error;
pub mod ingress;
pub mod lockout;
pub mod pwreport;
pub mod receipts;
pub mod receiving;
pub mod relay;
pub mod scan;
pub mod sign;
pub mod sms;
pub mod standing;
mod step;
pub mod tenants;
pub mod timers;
pub mod transfer;
pub mod webhooks;

pub use error::StepError;
pub use pec_ports::keys;
pub use step::{Step, StepFailure};

use pec_core::build::Provider;
use pec_ports::{ConfigError, Env, ObjectStore, StateError, StateStore, StoreError};

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
    /// The sms-notify function's queue: the delivery point puts a notice there for each new
    /// message of a mailbox that opted in (`None`: no SMS notifications).
    pub sms_queue_url: Option<String>,
    /// The deliver step's own queue: an object whose relay was deferred comes back on it later
    /// ([`deliver::relay_retry_delay`]; `None`: the failed event itself is retried by SQS).
    pub deliver_queue_url: Option<String>,
    /// With `PEC_RELAY=smtp`, `PEC_RELAY_QUEUE_URL`: deliver hands what goes outside our
    /// domains to the relay worker on the edge service ([`relay::Relay`]) instead of sending it
    /// itself (`None`, `PEC_RELAY=ses`: deliver sends through its own transport, SES).
    pub relay_queue_url: Option<String>,
}

pub use pec_ports::keys::{DEFAULT_PROVIDER_INDEX_KEY, DEFAULT_TRUST_ANCHORS_KEY};

/// A required environment variable is missing or invalid.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("invalid provider name or domain: {0}")]
    Provider(String),
}

impl Settings {
    /// From the environment the template gives every function (`PEC_PROVIDER_NAME`,
    /// `PEC_PROVIDER_DOMAIN`, `PEC_RAW_BUCKET`, `PEC_EVIDENCE_BUCKET`, `PEC_MAILBOX_BUCKET`,
    /// `PEC_SCAN_QUEUE_URL`, `PEC_RECEIPTS_QUEUE_URL`; optional `PEC_SMS_QUEUE_URL`,
    /// `PEC_DELIVER_QUEUE_URL`).
    pub fn from_env(env: &Env<'_>) -> Result<Self, SettingsError> {
        let provider = Provider::new(
            &env.required("PEC_PROVIDER_NAME")?,
            &env.required("PEC_PROVIDER_DOMAIN")?,
        )
        .map_err(|e| SettingsError::Provider(e.to_string()))?;
        Ok(Settings {
            provider,
            raw_bucket: env.required("PEC_RAW_BUCKET")?,
            evidence_bucket: env.required("PEC_EVIDENCE_BUCKET")?,
            mailbox_bucket: env.required("PEC_MAILBOX_BUCKET")?,
            scan_queue_url: env.required("PEC_SCAN_QUEUE_URL")?,
            receipts_queue_url: env.required("PEC_RECEIPTS_QUEUE_URL")?,
            provider_index_key: env.or("PEC_PROVIDER_INDEX_KEY", DEFAULT_PROVIDER_INDEX_KEY),
            trust_anchors_key: env.or("PEC_TRUST_ANCHORS_KEY", DEFAULT_TRUST_ANCHORS_KEY),
            sms_queue_url: env.optional("PEC_SMS_QUEUE_URL"),
            deliver_queue_url: env.optional("PEC_DELIVER_QUEUE_URL"),
            relay_queue_url: relay_queue_url(env)?,
        })
    }
}

/// `PEC_RELAY` (`ses`, the default, or `smtp`): with `smtp`, the relay queue
/// (`PEC_RELAY_QUEUE_URL`, then required).
fn relay_queue_url(env: &Env<'_>) -> Result<Option<String>, ConfigError> {
    match env.or("PEC_RELAY", "ses").as_str() {
        "ses" => Ok(None),
        "smtp" => env.required("PEC_RELAY_QUEUE_URL").map(Some),
        other => Err(ConfigError::Malformed {
            name: "PEC_RELAY".into(),
            value: other.into(),
            reason: "expected ses (deliver sends through SES) or smtp (deliver hands to the relay worker on the edge service through PEC_RELAY_QUEUE_URL)".into(),
        }),
    }
}

/// The provider index (IGPEC LDIF) from the evidence bucket (read per use: it is small; a
/// missing or unreadable one is an error, so the message waits instead of being judged
/// without it).
pub async fn load_index<St: ObjectStore>(
    settings: &Settings,
    store: &St,
) -> Result<pec_smime::ProviderIndex, TrustError> {
    let (ldif, key) = trust_object(settings, store, &settings.provider_index_key).await?;
    pec_smime::ProviderIndex::from_ldif(&ldif).map_err(|e| TrustError::Invalid {
        key: key.clone(),
        reason: e.to_string(),
    })
}

/// A trust configuration object of the evidence bucket, and its key.
async fn trust_object<'k, St: ObjectStore>(
    settings: &Settings,
    store: &St,
    key: &'k String,
) -> Result<(Vec<u8>, &'k String), TrustError> {
    let bytes = store
        .get(&settings.evidence_bucket, key)
        .await?
        .ok_or_else(|| TrustError::Missing {
            bucket: settings.evidence_bucket.clone(),
            key: key.clone(),
        })?;
    Ok((bytes, key))
}

/// The provider index and the trust anchors from the evidence bucket (see [`load_index`]).
pub async fn load_trust<St: ObjectStore>(
    settings: &Settings,
    store: &St,
) -> Result<(pec_smime::ProviderIndex, pec_smime::TrustAnchors), TrustError> {
    let index = load_index(settings, store).await?;
    let (pem, key) = trust_object(settings, store, &settings.trust_anchors_key).await?;
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
    Store(#[from] StoreError),
}

/// Whether `address` is in a domain served here: the provider's own domain or a domain a
/// tenant brought (state table).
pub async fn is_ours<Db: StateStore>(
    settings: &Settings,
    state: &Db,
    address: &str,
) -> Result<bool, StateError> {
    let Some(domain) = pec_core::addr::domain_of(address) else {
        return Ok(false);
    };
    if domain.eq_ignore_ascii_case(&settings.provider.domain) {
        return Ok(true);
    }
    Ok(state.domain_tenant(domain).await?.is_some())
}
