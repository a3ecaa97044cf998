//! Why a step could not handle a record. Every variant fails the SQS record: it is retried and,
//! after the queue's maxReceiveCount, kept in the step's dead-letter queue (with its alarm).
//! Shared by ingress (and the receiving point), deliver, receipts and timers; sign and scan have
//! their own (`sign::StepError`, `scan::StepError`).

use pec_core::build::BuildError;
use pec_core::events::EventError;
use pec_ports::{ObjectStore, SendError, StateError, StoreError};

/// A step failed on one record.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Send(#[from] SendError),
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    Event(#[from] EventError),
    #[error(transparent)]
    Trust(#[from] crate::TrustError),
    #[error(transparent)]
    Sms(#[from] pec_ports::sms::SmsError),
    /// Some recipients of a relayed object are to be tried again later (a 4xx, or their
    /// domain unreachable now); the others are done.
    #[error("relay deferred for {}: {}", .0.target, .0.message)]
    RelayDeferred(SendError),
    #[error("{0} kept changing under concurrent writers (retried later)")]
    Contended(String),
    #[error("s3://{bucket}/{key} was announced but does not exist")]
    Missing { bucket: String, key: String },
    #[error("s3://{bucket}/{key}: {reason}")]
    BadInput {
        bucket: String,
        key: String,
        reason: String,
    },
    #[error("SQS message {message_id} is not a receipt request: {reason}")]
    BadRequest { message_id: String, reason: String },
    #[error(transparent)]
    BadRelayRequest(#[from] crate::relay::BadRequest),
    #[error("no message record for {0} (a hand-off that arrived first is retried)")]
    NoRecord(String),
    #[error("webhook delivery {delivery}: attempt {attempt} is running elsewhere (retried later)")]
    AttemptRunning { delivery: String, attempt: u32 },
    #[error(
        "s3://{bucket}/{key} changed after the formal checks judged it (SHA-256 {found}, recorded {recorded}): nothing is built from it"
    )]
    Changed {
        bucket: String,
        key: String,
        recorded: String,
        found: String,
    },
}

/// An object a step was told about (or needs) must exist: its bytes, or [`StepError::Missing`].
pub(crate) async fn required<St: ObjectStore>(
    store: &St,
    bucket: &str,
    key: &str,
) -> Result<Vec<u8>, StepError> {
    store
        .get(bucket, key)
        .await?
        .ok_or_else(|| StepError::Missing {
            bucket: bucket.to_string(),
            key: key.to_string(),
        })
}
