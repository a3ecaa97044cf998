//! The `sign` step: turns `unsigned/<name>` objects into signed `signed/<name>` objects.
//!
//! Steps that build a provider message (receipts, notices, envelopes) store its
//! [`UnsignedMessage::render`] form under `unsigned/` in the evidence bucket. S3 announces it on
//! the sign queue; this step signs it with the provider key and writes `signed/<same name>`,
//! which S3 announces on the deliver queue. This is the **only** code that calls `kms:Sign`.
//!
//! Idempotent: when `signed/<name>` already exists the step neither signs again nor writes; the
//! write itself is conditional, so two concurrent duplicates still leave exactly one object.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use chrono::{DateTime, Utc};
use pec_core::message::{RenderedError, UnsignedMessage};
use pec_ports::keys;
use pec_ports::{ConfigError, Env, ObjectStore, PutOutcome, StoreError};
use pec_smime::{DigestSigner, SignError, SigningIdentity, sign_message};

/// What happened to one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Signed now and written to `signed_key`.
    Signed { signed_key: String },
    /// `signed_key` already existed: nothing signed, nothing written.
    AlreadySigned { signed_key: String },
    /// Not under `unsigned/` of our bucket: not for this step (acknowledged, logged).
    NotForThisStep { bucket: String, key: String },
}

/// Why an object could not be signed. Every one of these leaves the SQS message to be retried
/// and, after the queue's maxReceiveCount, kept in the dead-letter queue.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("s3://{bucket}/{key} was announced but does not exist")]
    Missing { bucket: String, key: String },
    #[error("s3://{bucket}/{key} is not an unsigned provider message: {source}")]
    Malformed {
        bucket: String,
        key: String,
        source: RenderedError,
    },
    #[error("signing s3://{bucket}/{key} failed: {source}")]
    Sign {
        bucket: String,
        key: String,
        source: SignError,
    },
    #[error("SQS message {message_id} is not an S3 notification: {reason}")]
    NotAnS3Notification { message_id: String, reason: String },
}

/// The step, over any object store and signer (S3 + KMS in Lambda, memory + local key in tests).
pub struct SignStep<St, Si> {
    store: St,
    signer: Si,
    identity: SigningIdentity,
    bucket: String,
}

impl<St: ObjectStore, Si: DigestSigner> SignStep<St, Si> {
    /// `bucket` is the evidence bucket; `identity` the provider certificate and its chain.
    pub fn new(
        store: St,
        signer: Si,
        identity: SigningIdentity,
        bucket: impl Into<String>,
    ) -> Self {
        Self {
            store,
            signer,
            identity,
            bucket: bucket.into(),
        }
    }

    /// The store (tests read what the step wrote).
    pub fn store(&self) -> &St {
        &self.store
    }

    /// The signer (tests count its calls).
    pub fn signer(&self) -> &Si {
        &self.signer
    }

    /// Signs one object (the bucket and key of an S3 notification, key already URL-decoded).
    pub async fn sign_object(
        &self,
        bucket: &str,
        key: &str,
        now: DateTime<Utc>,
    ) -> Result<Outcome, StepError> {
        let signed_key = match keys::signed_of_unsigned(key) {
            Some(signed_key) if bucket == self.bucket => signed_key,
            _ => {
                return Ok(Outcome::NotForThisStep {
                    bucket: bucket.to_string(),
                    key: key.to_string(),
                });
            }
        };
        if self.store.exists(bucket, &signed_key).await? {
            return Ok(Outcome::AlreadySigned { signed_key });
        }
        let bytes = self
            .store
            .get(bucket, key)
            .await?
            .ok_or_else(|| StepError::Missing {
                bucket: bucket.to_string(),
                key: key.to_string(),
            })?;
        let unsigned =
            UnsignedMessage::from_rendered(&bytes).map_err(|source| StepError::Malformed {
                bucket: bucket.to_string(),
                key: key.to_string(),
                source,
            })?;
        let signed = sign_message(
            &self.signer,
            &self.identity,
            &unsigned.headers,
            &unsigned.entity,
            now,
        )
        .await
        .map_err(|source| StepError::Sign {
            bucket: bucket.to_string(),
            key: key.to_string(),
            source,
        })?;
        match self
            .store
            .put_if_absent(bucket, &signed_key, signed, "message/rfc822")
            .await?
        {
            PutOutcome::Created => Ok(Outcome::Signed { signed_key }),
            PutOutcome::AlreadyExists => Ok(Outcome::AlreadySigned { signed_key }),
        }
    }

    /// One SQS batch: every record that fails is reported for retry (partial batch response);
    /// the others are acknowledged.
    pub async fn handle(&self, event: SqsEvent, now: DateTime<Utc>) -> SqsBatchResponse {
        crate::batch::each_object("sign", &event, |bucket, key| async move {
            match self.sign_object(&bucket, &key, now).await? {
                Outcome::Signed { signed_key } => {
                    tracing::info!(bucket = %bucket, key = %key, signed_key = %signed_key, "signed")
                }
                Outcome::AlreadySigned { signed_key } => {
                    tracing::info!(bucket = %bucket, key = %key, signed_key = %signed_key, "already signed: duplicate event ignored")
                }
                Outcome::NotForThisStep { bucket, key } => {
                    tracing::warn!(bucket = %bucket, key = %key, "not an unsigned/ object of the evidence bucket: ignored")
                }
            }
            Ok::<(), StepError>(())
        })
        .await
    }
}

/// The (bucket, key) pairs an SQS record announces (see [`crate::batch::s3_objects`]).
pub fn s3_objects(record: &SqsMessage) -> Result<Vec<(String, String)>, StepError> {
    crate::batch::s3_objects(record).map_err(|e| StepError::NotAnS3Notification {
        message_id: e.message_id,
        reason: e.reason,
    })
}

/// Why the step cannot start.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("the signing certificate chain s3://{bucket}/{key} is missing")]
    MissingChain { bucket: String, key: String },
    #[error("the signing certificate chain s3://{bucket}/{key} is unusable: {source}")]
    BadChain {
        bucket: String,
        key: String,
        source: SignError,
    },
    #[error("the certificate in s3://{bucket}/{key} is not for the signing key {key_id}")]
    CertificateNotForKey {
        bucket: String,
        key: String,
        key_id: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The step over `store` and `signer` (S3 and KMS in Lambda) from its environment:
/// `PEC_EVIDENCE_BUCKET`, `PEC_SIGNING_CHAIN_KEY` (PEM chain, provider certificate first, in the
/// evidence bucket). `signer_public_key` is the signer's SubjectPublicKeyInfo (DER) and
/// `key_id` names it in errors.
///
/// Refuses to start with a certificate that is not for the key: every signature would fail.
pub async fn configured<St: ObjectStore, Si: DigestSigner>(
    store: St,
    signer: Si,
    signer_public_key: &[u8],
    key_id: &str,
    env: &Env<'_>,
) -> Result<SignStep<St, Si>, SetupError> {
    let bucket = env.required("PEC_EVIDENCE_BUCKET")?;
    let chain_key = env.required("PEC_SIGNING_CHAIN_KEY")?;
    let chain = store
        .get(&bucket, &chain_key)
        .await?
        .ok_or_else(|| SetupError::MissingChain {
            bucket: bucket.clone(),
            key: chain_key.clone(),
        })?;
    let identity =
        SigningIdentity::from_pem_chain(&chain).map_err(|source| SetupError::BadChain {
            bucket: bucket.clone(),
            key: chain_key.clone(),
            source,
        })?;
    if signer_public_key != identity.public_key_spki_der() {
        return Err(SetupError::CertificateNotForKey {
            bucket,
            key: chain_key,
            key_id: key_id.to_string(),
        });
    }
    Ok(SignStep::new(store, signer, identity, bucket))
}

/// Inputs shared by this crate's tests and the integration tests (feature `testing`).
#[cfg(any(test, feature = "testing"))]
pub mod testing {
    use pec_core::message::UnsignedMessage;

    /// A small provider message in the shape the builders produce: top-level headers, then a
    /// `multipart/mixed` entity with a text part and a daticert-like XML part.
    pub fn sample_message(tag: &str) -> UnsignedMessage {
        let entity = format!(
            "Content-Type: multipart/mixed; boundary=\"b-{tag}\"\r\n\r\n\
             --b-{tag}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
             Ricevuta di accettazione {tag}\r\n\
             --b-{tag}\r\nContent-Type: application/xml; name=\"daticert.xml\"\r\n\r\n\
             <postacert tipo=\"accettazione\" errore=\"nessuno\"/>\r\n\
             --b-{tag}--\r\n"
        );
        UnsignedMessage {
            headers: vec![
                ("Date".into(), "Mon, 23 Nov 2026 10:00:00 +0100".into()),
                ("From".into(), "posta-certificata@pec.example.test".into()),
                ("To".into(), "mittente@pec.example.test".into()),
                ("Subject".into(), format!("ACCETTAZIONE: prova {tag}")),
                ("Message-ID".into(), format!("<{tag}@pec.example.test>")),
                ("X-Ricevuta".into(), "accettazione".into()),
            ],
            entity: entity.into_bytes(),
        }
    }
}
