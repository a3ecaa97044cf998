//! The access point (punto di accesso).
//!
//! **Submission** (`submitted/<id>.json` on the raw bucket, written by the gateway after the
//! message `submitted/<id>.eml`):
//! 1. the identificativo and the fallback Message-ID are derived from the submission id and
//!    time (so a retry derives the same ones);
//! 2. the formal checks run ([`pec_core::checks`]); the authenticated user owns exactly their
//!    mailbox address;
//! 3. the message record is created (conditional: a duplicate finds it and re-applies it);
//! 4. refused → the avviso di non accettazione (every failed check, in Italian) to the user,
//!    under `unsigned/msg/<id>/non-accettazione.eml`; passed → a scan request (access point)
//!    on the scan queue.
//!
//! **Clean scan** (`scan/clean/submitted/<id>.eml.json` on the evidence bucket): the ricevuta
//! di accettazione and the busta di trasporto, dated when the scan finished, under
//! `unsigned/msg/<id>/`. A virus is handled by the scan step (non accettazione per virus).
//! A message the scan scored as spam is accepted all the same, and its detection is logged
//! for the spam lockout ([`crate::lockout`]).
//!
//! Inbound mail (`inbound/...`, the receiving point) is not handled yet: such records fail with
//! a specific error and end in the ingress DLQ, never silently dropped.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use pec_core::build::{self, Ctx, NonAcceptance};
use pec_core::checks::{self, Limits, Submission};
use pec_core::daticert::TipoDestinatario;
use pec_core::ids::{self, SeededIds};
use pec_core::submission::{self, SubmissionEnvelope};
use pec_ports::{MessageRecord, MessageState};
use pec_ports::{ObjectStore, QueueSender, RetainedStore, StateStore};

use pec_ports::contract::{CONTRACT_VERSION, Point, ScanHandoff, ScanRequest};

use crate::{Settings, StepError, is_ours, keys};

/// What a record led to (for logs and tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngressOutcome {
    /// Formal checks failed: the non-acceptance notice was written (or already existed).
    Rejected { id: String, reasons: String },
    /// Checks passed: scan requested.
    ScanRequested { id: String },
    /// Clean: acceptance receipt and transport envelope written (or already there).
    Accepted { id: String },
    /// A receipt from another provider about one of our messages, handed to the delivery
    /// point at `key`.
    Received { id: String, key: String },
    /// Not ours to handle (another prefix, or inbound mail not delivered): acknowledged.
    Ignored { key: String },
}

/// The ingress step.
pub struct Ingress<St, Db, Q> {
    pub settings: Settings,
    pub store: St,
    pub state: Db,
    pub queue: Q,
    pub limits: Limits,
}

impl<St: ObjectStore + RetainedStore, Db: StateStore, Q: QueueSender> Ingress<St, Db, Q> {
    pub fn new(settings: Settings, store: St, state: Db, queue: Q) -> Self {
        Self {
            settings,
            store,
            state,
            queue,
            limits: Limits::default(),
        }
    }

    /// One SQS batch (partial batch failures).
    pub async fn handle(&self, event: SqsEvent) -> SqsBatchResponse {
        crate::batch::each_object("ingress", &event, |bucket, key| async move {
            let outcome = self.handle_object(&bucket, &key).await?;
            tracing::info!(bucket = %bucket, key = %key, outcome = ?outcome, "ingress");
            Ok::<(), StepError>(())
        })
        .await
    }

    /// Handles one announced object.
    pub async fn handle_object(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<IngressOutcome, StepError> {
        let s = &self.settings;
        if bucket == s.raw_bucket && key.starts_with(submission::SUBMITTED_PREFIX) {
            if key.ends_with(".json") {
                return self.submission(key).await;
            }
            // The message object itself: its envelope (written after it) triggers the work.
            return Ok(IngressOutcome::Ignored {
                key: key.to_string(),
            });
        }
        if bucket == s.raw_bucket && key.starts_with(submission::INBOUND_PREFIX) {
            if key.ends_with(".json") {
                return self.inbound(key).await;
            }
            return Ok(IngressOutcome::Ignored {
                key: key.to_string(),
            });
        }
        if bucket == s.evidence_bucket && key.starts_with(keys::SCAN_CLEAN_PREFIX) {
            return self.clean(key).await;
        }
        tracing::warn!(
            bucket,
            key,
            "not an object the ingress step handles: ignored"
        );
        Ok(IngressOutcome::Ignored {
            key: key.to_string(),
        })
    }

    pub(crate) async fn get(&self, bucket: &str, key: &str) -> Result<Vec<u8>, StepError> {
        crate::error::required(&self.store, bucket, key).await
    }

    async fn submission(&self, key: &str) -> Result<IngressOutcome, StepError> {
        let s = &self.settings;
        let bad = |reason: String| StepError::BadInput {
            bucket: s.raw_bucket.clone(),
            key: key.to_string(),
            reason,
        };
        let envelope = SubmissionEnvelope::from_json(&self.get(&s.raw_bucket, key).await?)
            .map_err(|e| bad(e.to_string()))?;
        if submission::id_of_key(key) != Some(envelope.id.as_str()) {
            return Err(bad(format!(
                "the envelope's id {} does not match its key",
                envelope.id
            )));
        }
        let raw_key = envelope.message_key();
        let raw = self.get(&s.raw_bucket, &raw_key).await?;
        let domain = &s.provider.domain;
        let identificativo = ids::identificativo(envelope.received_at, &envelope.id, domain)
            .map_err(|e| bad(e.to_string()))?;
        let fallback_msgid =
            ids::message_id(envelope.received_at, &format!("m-{}", envelope.id), domain)
                .map_err(|e| bad(e.to_string()))?;

        // certificato: a mailbox of ours, or of a domain in the provider index. The index is
        // read only for recipients that are not ours; if it is missing or does not parse, the
        // submission waits (retried, then the DLQ and its alarm) instead of calling a PEC
        // address at another provider "esterno".
        let mut index = None;
        let mut certified = Vec::new();
        for r in &envelope.recipients {
            if is_ours(s, &self.state, r).await? {
                certified.push(r.to_ascii_lowercase());
                continue;
            }
            if index.is_none() {
                index = Some(crate::load_index(s, &self.store).await?);
            }
            let pec_elsewhere = pec_core::addr::domain_of(r)
                .is_some_and(|d| index.as_ref().is_some_and(|i| i.is_pec_domain(d)));
            if pec_elsewhere {
                certified.push(r.to_ascii_lowercase());
            }
        }
        let owned = vec![envelope.user.clone()];
        let sub = Submission {
            raw: &raw,
            reverse_path: &envelope.reverse_path,
            recipients: &envelope.recipients,
            owned_addresses: &owned,
        };
        let verdict = checks::check_submission(&sub, &self.limits);
        let tipo_of = tipo_of(&certified);
        let c = checks::certified_for_refusal(&sub, &identificativo, &tipo_of);
        let record = MessageRecord {
            id: envelope.id.clone(),
            identificativo: identificativo.clone(),
            fallback_msgid,
            tenant: envelope.tenant.clone(),
            user: envelope.user.clone(),
            raw_key,
            received_at: envelope.received_at,
            state: if verdict.is_ok() {
                MessageState::Scanning
            } else {
                MessageState::Rejected
            },
            subject: c.oggetto.clone().unwrap_or_default(),
            sender: c.mittente.clone(),
            reverse_path: envelope.reverse_path.clone(),
            raw_sha256: sha256_hex(&raw),
            recipients: envelope.recipients.clone(),
            certified: certified.clone(),
            updated_at: envelope.received_at,
            // Only a mass-sending job's folder: nothing else may redirect receipts.
            receipts_folder: envelope
                .receipts_folder
                .clone()
                .filter(|f| f.starts_with(&format!("{}/", pec_bulk::job::JOBS_FOLDER))),
        };
        // A duplicate re-applies the decision in force: the recorded one. The inputs (which can
        // have been rewritten since) only rebuild its effects and never change it.
        let (record, verdict) = match self.state.create_message(&record).await? {
            None => (record, verdict),
            Some(mut recorded) => {
                // Records written before the reverse path was kept carry none.
                if recorded.reverse_path.is_empty() {
                    recorded.reverse_path = envelope.reverse_path.clone();
                }
                let refused = recorded.state == MessageState::Rejected;
                if refused != verdict.is_err() {
                    return self.decision_in_force(recorded).await;
                }
                (recorded, verdict)
            }
        };

        if let Err(errors) = verdict {
            let reasons = checks::refusal_reason(&errors);
            let notice = {
                let mut ids = SeededIds::new("na", &record.id);
                let mut ctx = Ctx {
                    provider: &s.provider,
                    now: record.received_at,
                    ids: &mut ids,
                };
                build::non_accettazione(
                    &mut ctx,
                    &c,
                    &NonAcceptance::Formal(reasons.clone()),
                    &record.user,
                )?
            };
            self.put_evidence(
                &keys::unsigned(&record.id, keys::NON_ACCEPTANCE),
                notice.render(),
            )
            .await?;
            return Ok(IngressOutcome::Rejected {
                id: record.id,
                reasons,
            });
        }

        self.request_scan(record).await
    }

    /// The scan request of a recorded submission, built from the record alone.
    async fn request_scan(&self, record: MessageRecord) -> Result<IngressOutcome, StepError> {
        let s = &self.settings;
        let request = ScanRequest {
            version: CONTRACT_VERSION,
            bucket: s.raw_bucket.clone(),
            key: record.raw_key.clone(),
            tenant: record.tenant.clone(),
            point: Point::Access {
                identificativo: record.identificativo.clone(),
                user: record.user.clone(),
                reverse_path: record.reverse_path.clone(),
                recipients: record.recipients.clone(),
                certified_recipients: record.certified.clone(),
            },
        };
        self.queue
            .send(&s.scan_queue_url, request.to_json())
            .await?;
        Ok(IngressOutcome::ScanRequested { id: record.id })
    }

    /// A duplicate whose inputs now lead to the other decision (the submission's envelope or
    /// message was rewritten after the fact): the recorded decision stands. A passed message is
    /// asked to be scanned again from its record (the scan step re-applies its first verdict); a
    /// refused one is acknowledged once its notice exists, and otherwise waits in the DLQ (its
    /// notice cannot be rebuilt from inputs that no longer refuse it).
    async fn decision_in_force(
        &self,
        recorded: MessageRecord,
    ) -> Result<IngressOutcome, StepError> {
        let s = &self.settings;
        tracing::warn!(id = %recorded.id, state = %recorded.state,
            "the submission's inputs changed after the decision: the recorded decision stands");
        if recorded.state != MessageState::Rejected {
            return self.request_scan(recorded).await;
        }
        let notice = keys::unsigned(&recorded.id, keys::NON_ACCEPTANCE);
        if self.store.exists(&s.evidence_bucket, &notice).await? {
            return Ok(IngressOutcome::Rejected {
                id: recorded.id,
                reasons: "as recorded (the submission changed after it was refused)".into(),
            });
        }
        Err(StepError::BadInput {
            bucket: s.raw_bucket.clone(),
            key: recorded.raw_key,
            reason: "refused as recorded, but the submission changed since and its non-acceptance \
                     notice cannot be rebuilt from it"
                .into(),
        })
    }

    async fn clean(&self, key: &str) -> Result<IngressOutcome, StepError> {
        let s = &self.settings;
        let bad = |reason: String| StepError::BadInput {
            bucket: s.evidence_bucket.clone(),
            key: key.to_string(),
            reason,
        };
        let hand_off: ScanHandoff =
            serde_json::from_slice(&self.get(&s.evidence_bucket, key).await?)
                .map_err(|e| bad(format!("not a scan hand-off: {e}")))?;
        let scanned_at = hand_off.scanned_at;
        let Some(id) = keys::message_of_clean(key) else {
            return match keys::inbound_of_clean(key) {
                Some(id) => {
                    self.inbound_clean(key, id, scanned_at, hand_off.spam.as_ref())
                        .await
                }
                None => Err(bad(
                    "not a scan hand-off of submitted/ or inbound/ mail".into()
                )),
            };
        };
        let mut record = self
            .state
            .message(id)
            .await?
            .ok_or_else(|| StepError::NoRecord(id.to_string()))?;
        // Outbound spam still goes through the PEC engine (the rules require it); the
        // detection is logged for the spam lockout (pec_pipeline::lockout).
        if let Some(pec_ports::spam::SpamCheck::Scored(score)) = &hand_off.spam
            && score.spam
        {
            let detection = pec_ports::spam::SpamDetection {
                mailbox: record.user.clone(),
                // When it was submitted, not scanned: a backlog scanned at once after an engine
                // outage is not a burst.
                at: record.received_at,
                message: record.id.clone(),
                identificativo: record.identificativo.clone(),
                score: score.score,
            };
            if self.state.record_spam(&detection).await? {
                tracing::warn!(mailbox = %record.user, id = %record.id, score = score.score.get(), "outbound spam detected");
            }
        }
        let raw = self.get(&s.raw_bucket, &record.raw_key).await?;
        let accepted = accepted(&s.raw_bucket, &raw, &record)?;

        let receipt = {
            let mut ids = SeededIds::new("acc", &record.id);
            let mut ctx = Ctx {
                provider: &s.provider,
                now: scanned_at,
                ids: &mut ids,
            };
            build::accettazione(&mut ctx, &accepted.certified)?
        };
        let envelope = {
            let mut ids = SeededIds::new("bt", &record.id);
            let mut ctx = Ctx {
                provider: &s.provider,
                now: scanned_at,
                ids: &mut ids,
            };
            build::busta_trasporto(&mut ctx, &accepted)?
        };
        // The envelope first: the acceptance receipt is the user's proof that it exists.
        self.put_evidence(
            &keys::unsigned(&record.id, keys::ENVELOPE),
            envelope.render(),
        )
        .await?;
        self.put_evidence(
            &keys::unsigned(&record.id, keys::ACCEPTANCE),
            receipt.render(),
        )
        .await?;
        if record.state != MessageState::Accepted {
            record.state = MessageState::Accepted;
            record.updated_at = scanned_at;
            self.state.update_message(&record).await?;
        }
        Ok(IngressOutcome::Accepted { id: record.id })
    }
}

/// certificato for the addresses in `certified`, esterno otherwise.
pub fn tipo_of(certified: &[String]) -> impl Fn(&str) -> TipoDestinatario + '_ {
    move |a: &str| {
        if certified.iter().any(|c| c.eq_ignore_ascii_case(a)) {
            TipoDestinatario::Certificato
        } else {
            TipoDestinatario::Esterno
        }
    }
}

/// The accepted original of a recorded submission (the certified data every receipt about it
/// repeats), rebuilt from the submitted bytes.
///
/// The bytes must be the ones the formal checks judged ([`MessageRecord::raw_sha256`]): the raw
/// bucket is read by key, and a rewritten object is refused ([`StepError::Changed`]), never
/// enveloped or quoted in a receipt.
pub(crate) fn accepted(
    raw_bucket: &str,
    raw: &[u8],
    record: &MessageRecord,
) -> Result<pec_core::original::Accepted, StepError> {
    let found = sha256_hex(raw);
    if !record.raw_sha256.is_empty() && found != record.raw_sha256 {
        return Err(StepError::Changed {
            bucket: raw_bucket.to_string(),
            key: record.raw_key.clone(),
            recorded: record.raw_sha256.clone(),
            found,
        });
    }
    Ok(pec_core::original::accept(
        raw,
        &record.identificativo,
        &record.fallback_msgid,
        &tipo_of(&record.certified),
    )
    .map_err(pec_core::build::BuildError::from)?)
}

/// Lower-case hex SHA-256 of `bytes` (also the scan function's check of ClamAV definitions).
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
