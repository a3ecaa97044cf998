//! The receipts step: one delivery receipt or non-delivery notice per recipient outcome.
//!
//! Input: a [`ReceiptRequest`] (receipts queue) from the delivery point. The certified data is
//! rebuilt from the submitted bytes and the message record exactly as the access point built
//! it; the receipt is dated with the outcome's time and its ids are seeded by (message,
//! recipient), so a duplicate request rebuilds the same bytes, and the conditional write keeps
//! the first: one receipt per recipient, ever.
//!
//! - delivered → ricevuta di avvenuta consegna in the form the sender asked for
//!   (`X-TipoRicevuta`: completa with the original, breve with hashes of the attachments,
//!   sintetica; `Cc` recipients get sintetica);
//! - not delivered → avviso di mancata consegna with the NOTA 12 code ([`failure_of`]: 5.1.1
//!   unknown user, 5.2.1 disabled, 5.2.2 full; for a recipient at another provider refused over
//!   SMTP also 5.1.2 unknown domain, and the MX's own code with its reply).

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use pec_core::build::{self, Ctx};
use pec_core::classify;
use pec_core::ids::SeededIds;
use pec_core::original::{self, Certified};
use pec_core::policy::{self, DeliveryFailure};
use pec_ports::{
    DeliveryStatus, NotDelivered, ObjectStore, PutOutcome, RecipientOutcome, StateStore,
};

use crate::{Settings, StepError, keys};
pub use pec_ports::contract::ReceiptRequest;

/// The receipts step.
pub struct Receipts<St, Db> {
    pub settings: Settings,
    pub store: St,
    pub state: Db,
}

impl<St: ObjectStore, Db: StateStore> Receipts<St, Db> {
    pub fn new(settings: Settings, store: St, state: Db) -> Self {
        Self {
            settings,
            store,
            state,
        }
    }

    /// One SQS batch (partial batch failures).
    pub async fn handle(&self, event: SqsEvent) -> SqsBatchResponse {
        crate::batch::partial_batch("receipts", &event, |record| async move {
            self.handle_record(&record).await.map(drop)
        })
        .await
    }

    async fn handle_record(&self, record: &SqsMessage) -> Result<String, StepError> {
        let bad = |reason: String| StepError::BadRequest {
            message_id: record.message_id.clone().unwrap_or_default(),
            reason,
        };
        let body = record
            .body
            .as_deref()
            .ok_or_else(|| bad("empty body".into()))?;
        let request: ReceiptRequest = serde_json::from_str(body).map_err(|e| bad(e.to_string()))?;
        if request.version != 1 {
            return Err(bad(format!("unsupported version {}", request.version)));
        }
        let key = self.build(&request).await?;
        tracing::info!(key, recipient = %request.outcome.recipient, status = %request.outcome.status, "receipt written for the signer");
        Ok(key)
    }

    /// The certified data and the original (`postacert.eml`) the receipt is about: from our
    /// message record and the submitted bytes, or from the envelope another provider sent.
    async fn certified(&self, request: &ReceiptRequest) -> Result<(Certified, Vec<u8>), StepError> {
        let s = &self.settings;
        if let Some(key) = &request.envelope {
            let bytes = crate::error::required(&self.store, &s.evidence_bucket, key).await?;
            let c = classify::classify(&bytes);
            let (Some(d), Some(postacert)) = (&c.daticert, &c.postacert) else {
                return Err(StepError::BadRequest {
                    message_id: request.message.clone(),
                    reason: format!("{key} has no daticert or no postacert.eml"),
                });
            };
            return Ok((Certified::from_daticert(d), postacert.to_vec()));
        }
        certified_of_message(s, &self.store, &self.state, &request.message).await
    }

    /// Builds and writes the receipt for `request`; returns its `unsigned/` key.
    pub async fn build(&self, request: &ReceiptRequest) -> Result<String, StepError> {
        let s = &self.settings;
        let (certified, postacert) = self.certified(request).await?;
        let o = &request.outcome;
        let delivered = o.status == DeliveryStatus::Delivered;
        let message = {
            let mut ids = SeededIds::new("rc", &format!("{}/{}", request.message, o.recipient));
            let mut ctx = Ctx {
                provider: &s.provider,
                now: o.at,
                ids: &mut ids,
            };
            if delivered {
                build::avvenuta_consegna(
                    &mut ctx,
                    &certified,
                    &o.recipient,
                    original::role_of(&postacert, &o.recipient),
                    &postacert,
                )?
            } else {
                let failure = failure_of(o);
                build::mancata_consegna(&mut ctx, &certified, &o.recipient, &failure)?
            }
        };
        let key = keys::unsigned_receipt(&request.message, delivered, &o.recipient);
        match self
            .store
            .put_if_absent(&s.evidence_bucket, &key, message.render(), "message/rfc822")
            .await?
        {
            PutOutcome::Created => {}
            PutOutcome::AlreadyExists => tracing::info!(key, "receipt already written: duplicate"),
        }
        Ok(key)
    }
}

/// The NOTA 12 failure of a `not-delivered` outcome (docs/design/smtp-relay-and-mx.md §6): a
/// refusal by another provider's MX keeps the MX's enhanced code (`5.0.0` without one) and its
/// reply in the text.
pub fn failure_of(o: &RecipientOutcome) -> DeliveryFailure {
    match o.reason {
        Some(NotDelivered::UnknownUser) => DeliveryFailure::UnknownUser,
        Some(NotDelivered::MailboxFull) => DeliveryFailure::MailboxFull,
        Some(NotDelivered::MailboxDisabled) => DeliveryFailure::MailboxDisabled,
        Some(NotDelivered::UnknownDomain) => DeliveryFailure::UnknownDomain,
        Some(NotDelivered::Refused) => {
            let detail = o.detail.as_deref().map(str::trim).unwrap_or_default();
            let code = pec_ports::publish::enhanced_status(detail)
                .filter(|c| c.starts_with("5."))
                .unwrap_or("5.0.0");
            DeliveryFailure::Other {
                code: code.into(),
                text: if detail.is_empty() {
                    policy::REFUSED_BY_DESTINATION.into()
                } else {
                    format!("{}: {detail}", policy::REFUSED_BY_DESTINATION)
                },
            }
        }
        None => DeliveryFailure::Other {
            code: "5.3.0".into(),
            text: "errore di sistema (sconosciuto)".into(),
        },
    }
}

/// The certified data and `postacert.eml` of our message `id`, rebuilt from its record and the
/// submitted bytes exactly as the access point built them.
pub async fn certified_of_message<St: ObjectStore, Db: StateStore>(
    s: &Settings,
    store: &St,
    state: &Db,
    id: &str,
) -> Result<(Certified, Vec<u8>), StepError> {
    let record = state
        .message(id)
        .await?
        .ok_or_else(|| StepError::NoRecord(id.to_string()))?;
    let raw = crate::error::required(store, &s.raw_bucket, &record.raw_key).await?;
    let accepted = crate::ingress::accepted(&s.raw_bucket, &raw, &record)?;
    Ok((accepted.certified, accepted.postacert))
}
