//! The `sign` step: turns `unsigned/<name>` objects into signed `signed/<name>` objects.
//!
//! Steps that build a provider message (receipts, notices, envelopes) store its
//! [`UnsignedMessage::render`] form under `unsigned/` in the evidence bucket. S3 announces it on
//! the sign queue; this step signs it with the provider key and writes `signed/<same name>`,
//! which S3 announces on the deliver queue. This is the **only** code that calls `kms:Sign`.
//!
//! Idempotent: when `signed/<name>` already exists the step neither signs again nor writes; the
//! write itself is conditional, so two concurrent duplicates still leave exactly one object.
//!
//! **The signer trusts no writer.** Five steps write under `unsigned/` (ingress, receiving,
//! receipts, timers, scan), one of which handles hostile attachments. Before signing, the step
//! checks that
//! 1. the key is one a step writes ([`keys::parse_unsigned`]) and the message declares exactly
//!    the kind that key admits (`X-Ricevuta` / `X-Trasporto`): the scan step's prefix cannot
//!    yield an acceptance, the timers' cannot yield a delivery receipt;
//! 2. the recorded state says so: an acceptance or envelope only for a message recorded as
//!    accepted, a non-acceptance only for a refused one, each addressed to the recorded sender;
//!    a delivery receipt or non-delivery notice only for the outcome recorded for that recipient;
//!    a timeout notice only for a relayed recipient; a presa in carico or anomaly envelope only
//!    for the receiving point's recorded decision; a virus notice only for a recorded virus
//!    verdict that lists it.
//!
//! Anything else is refused ([`StepError::Refused`]): retried, then kept in the dead-letter
//! queue with its alarm, never signed.
//!
//! **What is signed cannot be destroyed.** The signed object is written under S3 Object Lock in
//! COMPLIANCE mode until the signing time plus [`SIGNED_RETENTION_MONTHS`] (the 30 months the
//! rules set for the provider's evidence): nobody, root included, can delete or overwrite that
//! version before then.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use chrono::{DateTime, Utc};
use pec_core::classify::Kind;
use pec_core::message::{RenderedError, UnsignedMessage};
use pec_ports::keys::{self, UnsignedKey};
use pec_ports::{
    ConfigError, DeliveryStatus, Env, InboundDecision, MessageState, ObjectStore, PutOutcome,
    RetainedStore, StateError, StateStore, StoreError,
};
use pec_smime::{DigestSigner, SignError, SigningIdentity, sign_message};

/// How far before the signing the message's own `Date` may be and still be the signature's
/// signingTime ([`signing_time`]).
pub const SIGNING_TIME_WINDOW: chrono::Duration = chrono::Duration::hours(1);

/// The signingTime of `unsigned`: the `Date` its step gave it (the moment the receipt or envelope
/// attests) when that is at most [`SIGNING_TIME_WINDOW`] before `now` and not after it, else
/// `now`. So a duplicate delivery of the same object, signed again a second later, yields the
/// same bytes (S3 keeps the first write anyway; an emulator that lets both through stores the
/// same message twice), and the signature's time agrees with the message's.
pub fn signing_time(unsigned: &UnsignedMessage, now: DateTime<Utc>) -> DateTime<Utc> {
    unsigned
        .headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("Date"))
        .and_then(|(_, value)| DateTime::parse_from_rfc2822(value.trim()).ok())
        .map(|d| d.with_timezone(&Utc))
        .filter(|d| *d <= now && now - *d <= SIGNING_TIME_WINDOW)
        .unwrap_or(now)
}

/// How long a signed provider message stays locked: 30 months (the rules' retention of the
/// provider log and its evidence, pec-rules.md).
pub const SIGNED_RETENTION_MONTHS: u32 = 30;

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
    #[error(transparent)]
    State(#[from] StateError),
    #[error("s3://{bucket}/{key} was refused, not signed: {reason}")]
    Refused {
        bucket: String,
        key: String,
        reason: String,
    },
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

/// The step, over any object store, state store and signer (S3 + DynamoDB + KMS in Lambda,
/// memory fakes + local key in tests).
pub struct SignStep<St, Si, Db> {
    store: St,
    state: Db,
    signer: Si,
    identity: SigningIdentity,
    bucket: String,
}

impl<St: ObjectStore + RetainedStore, Si: DigestSigner, Db: StateStore> SignStep<St, Si, Db> {
    /// `bucket` is the evidence bucket; `identity` the provider certificate and its chain;
    /// `state` the state table the facts are checked against (read only).
    pub fn new(
        store: St,
        state: Db,
        signer: Si,
        identity: SigningIdentity,
        bucket: impl Into<String>,
    ) -> Self {
        Self {
            store,
            state,
            signer,
            identity,
            bucket: bucket.into(),
        }
    }

    /// The state store (tests seed the facts).
    pub fn state(&self) -> &Db {
        &self.state
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
        if let Err(reason) = self.admissible(key, &unsigned).await? {
            return Err(StepError::Refused {
                bucket: bucket.to_string(),
                key: key.to_string(),
                reason,
            });
        }
        let signed = sign_message(
            &self.signer,
            &self.identity,
            &unsigned.headers,
            &unsigned.entity,
            signing_time(&unsigned, now),
        )
        .await
        .map_err(|source| StepError::Sign {
            bucket: bucket.to_string(),
            key: key.to_string(),
            source,
        })?;
        let retain_until = now
            .checked_add_months(chrono::Months::new(SIGNED_RETENTION_MONTHS))
            .unwrap_or(now);
        match self
            .store
            .put_retained(bucket, &signed_key, signed, retain_until)
            .await?
        {
            PutOutcome::Created => Ok(Outcome::Signed { signed_key }),
            PutOutcome::AlreadyExists => Ok(Outcome::AlreadySigned { signed_key }),
        }
    }

    /// `Ok(Err(reason))` when `unsigned` must not be signed under `key` (module docs).
    async fn admissible(
        &self,
        key: &str,
        unsigned: &UnsignedMessage,
    ) -> Result<Result<(), String>, StepError> {
        let Some(parsed) = keys::parse_unsigned(key) else {
            return Ok(Err("no step writes this key".into()));
        };
        let header = |name: &str| -> Result<Option<&str>, String> {
            let mut values = unsigned
                .headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str());
            let first = values.next();
            match values.next() {
                Some(_) => Err(format!("{name} appears more than once")),
                None => Ok(first),
            }
        };
        let declared = match (header("X-Ricevuta"), header("X-Trasporto")) {
            (Ok(r), Ok(t)) => Kind::declared(r, t),
            (Err(e), _) | (_, Err(e)) => return Ok(Err(e)),
        };
        if declared != Some(parsed.kind()) {
            return Ok(Err(format!(
                "the key admits a {} but the message declares {}",
                parsed.kind().as_str(),
                declared.map_or("no known kind", |k| k.as_str())
            )));
        }
        let to = header("To").ok().flatten().unwrap_or_default();
        let addressed_to = |address: &str| {
            to.to_ascii_lowercase()
                .contains(&address.to_ascii_lowercase())
        };
        Ok(match parsed {
            UnsignedKey::Submission { id, kind } => match self.state.message(id).await? {
                None => Err(format!("no message {id} is recorded")),
                Some(record) => {
                    let wanted = match kind {
                        Kind::NonAccettazione => MessageState::Rejected,
                        _ => MessageState::Accepted,
                    };
                    if record.state != wanted {
                        Err(format!(
                            "message {id} is recorded as {}, not {}",
                            record.state, wanted
                        ))
                    } else if kind != Kind::BustaTrasporto && !addressed_to(&record.user) {
                        Err(format!(
                            "the {} is not addressed to the recorded sender",
                            kind.as_str()
                        ))
                    } else {
                        Ok(())
                    }
                }
            },
            UnsignedKey::Recipient {
                id,
                recipient,
                kind: Kind::PreavvisoErroreConsegna,
                ..
            } => match self.state.relay(id, recipient).await? {
                Some(relay) if relay.certified => Ok(()),
                Some(_) => Err(format!(
                    "{recipient} of {id} is not a PEC mailbox: no timeout notice applies"
                )),
                None => Err(format!("{recipient} of {id} was never relayed")),
            },
            UnsignedKey::Recipient {
                id,
                recipient,
                kind,
                ..
            } => {
                let wanted = if kind == Kind::AvvenutaConsegna {
                    DeliveryStatus::Delivered
                } else {
                    DeliveryStatus::NotDelivered
                };
                match self.state.recipient(id, recipient).await? {
                    Some(o) if o.status == wanted => Ok(()),
                    Some(o) => Err(format!(
                        "{recipient} of {id} is recorded as {}, not {wanted}",
                        o.status
                    )),
                    None => Err(format!("no outcome is recorded for {recipient} of {id}")),
                }
            }
            UnsignedKey::Inbound { id, kind } => {
                let wanted = if kind == Kind::PresaInCarico {
                    InboundDecision::Envelope
                } else {
                    InboundDecision::Anomaly
                };
                match self.state.inbound(id).await? {
                    Some(r) if r.decision == wanted => Ok(()),
                    Some(r) => Err(format!(
                        "inbound {id} was decided as {}, not {wanted}",
                        r.decision
                    )),
                    None => Err(format!("no inbound message {id} is recorded")),
                }
            }
            UnsignedKey::ScanNotice { raw_key, .. } => {
                let verdict = keys::verdict_key(raw_key);
                match self.store.get(&self.bucket, &verdict).await? {
                    None => Err(format!("no scan verdict {verdict} is recorded")),
                    Some(bytes) => {
                        match serde_json::from_slice::<crate::scan::ScanRecord>(&bytes) {
                            Err(e) => Err(format!("the scan verdict {verdict} is unreadable: {e}")),
                            Ok(record) if !record.outputs.notices.iter().any(|n| n == key) => Err(
                                format!("the scan verdict {verdict} does not list this notice"),
                            ),
                            Ok(record)
                                if !matches!(record.decision, pec_scan::Decision::Virus { .. }) =>
                            {
                                Err(format!("the scan verdict {verdict} is not a virus"))
                            }
                            Ok(_) => Ok(()),
                        }
                    }
                }
            }
        })
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
pub async fn configured<St: ObjectStore + RetainedStore, Si: DigestSigner, Db: StateStore>(
    store: St,
    state: Db,
    signer: Si,
    signer_public_key: &[u8],
    key_id: &str,
    env: &Env<'_>,
) -> Result<SignStep<St, Si, Db>, SetupError> {
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
    Ok(SignStep::new(store, state, signer, identity, bucket))
}

/// Inputs shared by this crate's tests and the integration tests (feature `testing`).
#[cfg(any(test, feature = "testing"))]
pub mod testing {
    use chrono::{TimeZone, Utc};
    use pec_core::message::UnsignedMessage;
    use pec_ports::{MessageRecord, MessageState, StateError, StateStore, keys};

    /// The sender every sample message is addressed to (its `To`).
    pub const SENDER: &str = "mittente@pec.example.test";

    /// The `unsigned/` key of the acceptance of message `id`: where [`sample_message`] may be
    /// signed once [`seed_accepted`] recorded the message.
    pub fn acceptance_key(id: &str) -> String {
        keys::unsigned(id, keys::ACCEPTANCE)
    }

    /// Records message `id` as accepted, sent by [`SENDER`] to one recipient: the facts the
    /// sign step checks before signing an acceptance (or envelope) of it.
    pub async fn seed_accepted<Db: StateStore>(state: &Db, id: &str) -> Result<(), StateError> {
        let at = Utc.with_ymd_and_hms(2026, 11, 23, 9, 0, 0).unwrap();
        let record = MessageRecord {
            receipts_folder: None,
            id: id.to_string(),
            identificativo: format!("opec-{id}@pec.example.test"),
            fallback_msgid: format!("<{id}@pec.example.test>"),
            tenant: "studio".into(),
            user: SENDER.into(),
            raw_key: format!("submitted/{id}.eml"),
            received_at: at,
            state: MessageState::Accepted,
            subject: "prova".into(),
            sender: SENDER.into(),
            reverse_path: SENDER.into(),
            recipients: vec!["destinatario@pec.example.test".into()],
            certified: vec!["destinatario@pec.example.test".into()],
            updated_at: at,
            raw_sha256: String::new(),
        };
        state.create_message(&record).await.map(|_| ())
    }

    /// [`sample_message`] declaring `x_ricevuta` instead of an acceptance.
    pub fn sample_receipt(tag: &str, x_ricevuta: &str) -> UnsignedMessage {
        let mut m = sample_message(tag);
        for (name, value) in &mut m.headers {
            if name == "X-Ricevuta" {
                *value = x_ricevuta.to_string();
            }
        }
        m
    }

    /// A small provider message in the shape the builders produce: top-level headers, then a
    /// `multipart/mixed` entity with a text part and a daticert-like XML part. It is an
    /// acceptance addressed to [`SENDER`].
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

#[cfg(test)]
mod signing_time_tests {
    use super::*;
    use chrono::TimeZone;

    fn with_date(date: Option<&str>) -> UnsignedMessage {
        let mut raw = String::new();
        if let Some(d) = date {
            raw.push_str(&format!("Date: {d}\r\n"));
        }
        raw.push_str("X-Ricevuta: accettazione\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nx\r\n");
        UnsignedMessage::from_rendered(raw.as_bytes()).unwrap()
    }

    /// The message's own Date when it is recent (duplicates sign the same bytes), else now.
    #[test]
    fn the_messages_date_when_recent_else_now() {
        let now = Utc.with_ymd_and_hms(2026, 12, 6, 10, 0, 30).unwrap();
        let date = Utc.with_ymd_and_hms(2026, 12, 6, 10, 0, 0).unwrap();
        let recent = with_date(Some("Sun, 06 Dec 2026 11:00:00 +0100"));
        assert_eq!(signing_time(&recent, now), date);
        assert_eq!(
            signing_time(&recent, now + chrono::Duration::seconds(5)),
            date
        );
        assert_eq!(
            signing_time(&recent, now + chrono::Duration::hours(2)),
            now + chrono::Duration::hours(2),
            "too old: signed now"
        );
        assert_eq!(
            signing_time(&recent, date - chrono::Duration::seconds(1)),
            date - chrono::Duration::seconds(1),
            "from the future: now"
        );
        assert_eq!(signing_time(&with_date(None), now), now);
        assert_eq!(signing_time(&with_date(Some("ieri")), now), now);
    }
}
