//! The receiving point (punto di ricezione): mail from other providers and the outside world.
//!
//! **Arrival** (`inbound/<id>.json`, written after `inbound/<id>.eml` by SES receiving or the
//! local mail exchange): the message is classified and, when it claims to be PEC, verified on
//! the bytes as received — signature, chain to the accredited roots at the arrival time,
//! signer listed in the provider index **and** the listed provider being the one that manages
//! the domain the object speaks for (the sender's for an envelope, the recipient's for a
//! receipt). The decision is recorded once (`IN#<id>`):
//! - a verified **transport envelope** → antivirus (receiving point; a virus yields the
//!   rilevazione virus to the sending provider and the mancata consegna per virus to the
//!   sender, from the scan step), then, clean, the **presa in carico** to the sending
//!   provider's `mailReceipt` and the envelope, as received, to `received/in/<id>/` for the
//!   delivery point;
//! - a verified **receipt or notice about one of our messages** (matched by the daticert
//!   identificativo, never by Message-ID, which SES rewrites) → `received/msg/<our id>/<id>.eml`
//!   for the delivery point (which logs it, updates the recipient's status and stores it in
//!   the sender's mailbox — a presa in carico is logged, not stored);
//! - **ordinary mail**, or a PEC object that fails verification → antivirus, then the
//!   **busta di anomalia** (`X-VerificaSicurezza: errore` for a security failure) to each
//!   recipient, or nothing for a mailbox that refuses ordinary mail (recorded as refused).

use aws_lambda_events::event::ses::SimpleEmailEvent;
use chrono::{DateTime, Utc};
use pec_core::build::{self, Ctx};
use pec_core::classify::{self, Kind};
use pec_core::ids::SeededIds;
use pec_core::original::Certified;
use pec_core::submission::{self, InboundEnvelope};
use pec_ports::{
    InboundDecision, InboundRecord, ObjectStore, PutOutcome, QueueSender, RetainedStore, StateStore,
};
use pec_smime::{ProviderIndex, Verdict, Verification, VerifyOptions, verify_message};

use pec_ports::contract::{CONTRACT_VERSION, Point, ScanRequest};

use crate::StepError;
use crate::ingress::{Ingress, IngressOutcome};
use crate::{is_ours, keys, load_trust};

use InboundDecision::{Anomaly as ANOMALY, Envelope as ENVELOPE, NotOurs as NOT_OURS};
use InboundDecision::{Receipt as RECEIPT, Refused as REFUSED};

/// How far a signature's `signingTime` may be **after** the arrival time (clock skew). Earlier
/// is fine — mail can be held up for hours (the 24 h rules exist for that), and certificate
/// validity is judged at the arrival time, not at the time the signer claims.
pub const MAX_SIGNING_SKEW_MINUTES: i64 = 30;

/// Whether `v` is a valid signature by the provider that manages `address`'s domain.
fn speaks_for(v: &Verification, index: &ProviderIndex, address: &str) -> Result<(), String> {
    if v.verdict != Verdict::Valid {
        return Err(format!(
            "{:?}: {}",
            v.verdict,
            v.reason.clone().unwrap_or_default()
        ));
    }
    let Some(signer) = &v.index.matched else {
        return Err("the signer is not matched in the provider index".into());
    };
    match index.provider_for_address(address) {
        Some(p) if p.dn == signer.dn => Ok(()),
        Some(p) => Err(format!(
            "signed by {} but {address} is managed by {}",
            signer.provider_name, p.provider_name
        )),
        None => Err(format!(
            "{address} is not in a domain of any listed provider"
        )),
    }
}

impl<St: ObjectStore + RetainedStore, Db: StateStore, Q: QueueSender> Ingress<St, Db, Q> {
    /// Arrival of `inbound/<id>.json`.
    pub(crate) async fn inbound(&self, key: &str) -> Result<IngressOutcome, StepError> {
        let s = &self.settings;
        let bad = |reason: String| StepError::BadInput {
            bucket: s.raw_bucket.clone(),
            key: key.to_string(),
            reason,
        };
        let id = submission::inbound_id_of_key(key)
            .ok_or_else(|| bad("not inbound/<id>.json".into()))?
            .to_string();
        let env = InboundEnvelope::from_json(&self.get(&s.raw_bucket, key).await?)
            .map_err(|e| bad(e.to_string()))?;
        let raw_key = self.inbound_raw_key(&id).await?;
        if let Some(existing) = self.state.inbound(&id).await? {
            // A duplicate: re-apply the recorded decision.
            return self.apply_inbound(&existing, &raw_key).await;
        }
        let raw = self.get(&s.raw_bucket, &raw_key).await?;
        let mut recipients = Vec::new();
        for r in &env.recipients {
            if is_ours(s, &self.state, r).await? {
                recipients.push(r.to_ascii_lowercase());
            }
        }
        let c = classify::classify(&raw);
        let mut record = InboundRecord {
            id: id.clone(),
            received_at: env.received_at,
            source: env.source.clone(),
            recipients,
            decision: ANOMALY,
            kind: c.kind.as_str().to_string(),
            reason: None,
            security_error: false,
            identificativo: c.daticert.as_ref().map(|d| d.dati.identificativo.clone()),
            sender_receipt_address: None,
            sender_provider: None,
            via: env.via,
        };
        if record.recipients.is_empty() {
            record.decision = NOT_OURS;
            record.reason = Some("no recipient in our domains".into());
        } else if c.kind.is_pec() {
            let (index, anchors) = load_trust(s, &self.store).await?;
            let options = VerifyOptions {
                evaluation_time: Some(env.received_at),
            };
            let v = verify_message(&raw, &anchors, Some(&index), &options);
            let skew = v.signing_time.map(|t| (t - env.received_at).num_minutes());
            let d = c.daticert.as_ref();
            // Whose word the object is: the sender's provider for an envelope, the
            // recipient's for a receipt about one of our messages.
            let speaker = match c.kind {
                Kind::BustaTrasporto => d.map(|d| d.intestazione.mittente.clone()),
                _ => d.and_then(|d| {
                    d.dati
                        .consegna
                        .clone()
                        .or_else(|| d.dati.ricezione.first().cloned())
                }),
            };
            let checked = match (&speaker, skew) {
                (None, _) => Err("no daticert to take the facts from".to_string()),
                (_, Some(m)) if m > MAX_SIGNING_SKEW_MINUTES => {
                    Err(format!("signingTime is {m} minutes from the arrival time"))
                }
                (Some(addr), _) => speaks_for(&v, &index, addr),
            };
            match checked {
                Err(reason) => {
                    record.reason = Some(reason);
                    record.security_error = true;
                }
                Ok(()) if c.kind == Kind::BustaTrasporto => {
                    record.decision = ENVELOPE;
                    let provider = speaker
                        .as_deref()
                        .and_then(|a| index.provider_for_address(a));
                    record.sender_provider = provider.map(|p| p.provider_name.clone());
                    record.sender_receipt_address = provider.and_then(|p| p.mail_receipt.clone());
                    if record.sender_receipt_address.is_none() {
                        record.decision = ANOMALY;
                        record.security_error = true;
                        record.reason =
                            Some("the sending provider has no mailReceipt in the index".into());
                    }
                }
                Ok(()) => {
                    record.decision = RECEIPT;
                }
            }
        } else {
            // Ordinary mail: a mailbox may refuse it instead of receiving an anomaly envelope.
            let mut all_refuse = true;
            for r in &record.recipients {
                let refuses = self
                    .state
                    .mailbox(r)
                    .await?
                    .is_some_and(|m| m.refuse_ordinary);
                all_refuse &= refuses;
            }
            if all_refuse {
                record.decision = REFUSED;
                record.reason = Some("the mailbox does not accept ordinary mail".into());
            }
        }
        let record = self.state.create_inbound(&record).await?.unwrap_or(record);
        self.apply_inbound(&record, &raw_key).await
    }

    async fn apply_inbound(
        &self,
        record: &InboundRecord,
        raw_key: &str,
    ) -> Result<IngressOutcome, StepError> {
        let s = &self.settings;
        match record.decision {
            ENVELOPE | ANOMALY => {
                // The antivirus policy is per tenant: the first recipient's mailbox's tenant,
                // else its domain's, else the provider's default policy ("default").
                let mut tenant = String::new();
                if let Some(r) = record.recipients.first() {
                    if let Some(m) = self.state.mailbox(r).await? {
                        tenant = m.tenant;
                    } else if let Some(d) = pec_core::addr::domain_of(r) {
                        tenant = self.state.domain_tenant(d).await?.unwrap_or_default();
                    }
                }
                if tenant.is_empty() {
                    tenant = "default".into();
                }
                let request = ScanRequest {
                    version: CONTRACT_VERSION,
                    bucket: s.raw_bucket.clone(),
                    key: raw_key.to_string(),
                    tenant,
                    point: Point::Receiving {
                        recipients: record.recipients.clone(),
                        sender_receipt_address: record
                            .sender_receipt_address
                            .clone()
                            .unwrap_or_default(),
                    },
                };
                self.queue
                    .send(&s.scan_queue_url, request.to_json())
                    .await?;
                Ok(IngressOutcome::ScanRequested {
                    id: record.id.clone(),
                })
            }
            RECEIPT => {
                let ident = record.identificativo.clone().unwrap_or_default();
                let Some(ours) = self.state.message_by_identificativo(&ident).await? else {
                    tracing::warn!(inbound = %record.id, identificativo = %ident, "a receipt about a message we do not know: kept in the raw bucket, not delivered");
                    return Ok(IngressOutcome::Ignored {
                        key: raw_key.to_string(),
                    });
                };
                let raw = self.get(&s.raw_bucket, raw_key).await?;
                let key = keys::received_receipt(&ours.id, &record.id);
                self.put_received(&key, raw, record.received_at).await?;
                Ok(IngressOutcome::Received {
                    id: record.id.clone(),
                    key,
                })
            }
            _ => {
                tracing::info!(inbound = %record.id, decision = %record.decision, reason = ?record.reason, "inbound mail not delivered");
                Ok(IngressOutcome::Ignored {
                    key: raw_key.to_string(),
                })
            }
        }
    }

    /// The scan step's clean hand-off of inbound mail (`scan/clean/inbound/<id>.eml.json`).
    pub(crate) async fn inbound_clean(
        &self,
        key: &str,
        id: &str,
        scanned_at: DateTime<Utc>,
        spam: Option<&pec_ports::spam::SpamCheck>,
    ) -> Result<IngressOutcome, StepError> {
        let s = &self.settings;
        let record = self
            .state
            .inbound(id)
            .await?
            .ok_or_else(|| StepError::NoRecord(id.to_string()))?;
        let raw_key = self.inbound_raw_key(id).await?;
        let raw = self.get(&s.raw_bucket, &raw_key).await?;
        match record.decision {
            ENVELOPE => {
                let c = classify::classify(&raw);
                let d = c.daticert.as_ref().ok_or_else(|| StepError::BadInput {
                    bucket: s.evidence_bucket.clone(),
                    key: key.to_string(),
                    reason: "the verified envelope lost its daticert".into(),
                })?;
                let certified = Certified::from_daticert(d);
                let to = record.sender_receipt_address.clone().unwrap_or_default();
                let receipt = {
                    let mut ids = SeededIds::new("pic", id);
                    let mut ctx = Ctx {
                        provider: &s.provider,
                        now: scanned_at,
                        ids: &mut ids,
                    };
                    build::presa_in_carico(&mut ctx, &certified, &record.recipients, &to)?
                };
                self.put_evidence(
                    &keys::unsigned_inbound(id, keys::TAKEN_IN_CHARGE),
                    receipt.render(),
                )
                .await?;
                self.put_received(&keys::received_envelope(id), raw, record.received_at)
                    .await?;
            }
            ANOMALY => {
                let anomaly = {
                    let mut ids = SeededIds::new("an", id);
                    let mut ctx = Ctx {
                        provider: &s.provider,
                        now: scanned_at,
                        ids: &mut ids,
                    };
                    build::busta_anomalia(&mut ctx, &raw, record.security_error)?
                };
                // Ordinary mail scored as spam (by our engine, or by SES receiving) is named so
                // that the delivery point files it in Junk or drops it, by the mailbox's
                // setting. PEC messages (the envelope branch) are never filtered. SES's verdict
                // field is believed only when SES wrote the object: through our MX the same
                // field was written by the sender.
                let ses_says_spam = record.via == submission::InboundVia::Ses
                    && classify::ses_spam_verdict_failed(&raw);
                let is_spam = spam.is_some_and(|c| c.is_spam()) || ses_says_spam;
                let name = if is_spam {
                    keys::ANOMALY_SPAM
                } else {
                    keys::ANOMALY
                };
                self.put_evidence(&keys::unsigned_inbound(id, name), anomaly.render())
                    .await?;
            }
            other => {
                tracing::warn!(inbound = %id, decision = %other, "clean hand-off for inbound mail that is not delivered: ignored");
            }
        }
        Ok(IngressOutcome::Accepted { id: id.to_string() })
    }

    /// The raw object of inbound mail `id`: `inbound/<id>.eml` (the local exchange) or
    /// `inbound/<id>` (SES receiving's S3 action names it by message id).
    async fn inbound_raw_key(&self, id: &str) -> Result<String, StepError> {
        let s = &self.settings;
        let eml = format!("{}{id}.eml", submission::INBOUND_PREFIX);
        if self.store.exists(&s.raw_bucket, &eml).await? {
            return Ok(eml);
        }
        let bare = format!("{}{id}", submission::INBOUND_PREFIX);
        if self.store.exists(&s.raw_bucket, &bare).await? {
            return Ok(bare);
        }
        Err(StepError::Missing {
            bucket: s.raw_bucket.clone(),
            key: eml,
        })
    }

    /// SES receiving's Lambda action (after its S3 action stored the message as
    /// `inbound/<message id>`): records each message's SMTP envelope as `inbound/<id>.json`,
    /// which triggers the receiving point. Returns how many were recorded.
    pub async fn handle_ses(&self, event: &SimpleEmailEvent) -> Result<usize, StepError> {
        let mut n = 0;
        for (id, envelope) in ses_envelopes(event) {
            let key = format!("{}{id}.json", submission::INBOUND_PREFIX);
            let body = serde_json::to_vec(&envelope).unwrap_or_default();
            self.store
                .put_if_absent(&self.settings.raw_bucket, &key, body, "application/json")
                .await?;
            n += 1;
        }
        Ok(n)
    }

    /// What another provider sent us, kept as received: evidence, locked like what we sign
    /// (COMPLIANCE, `received_at` + [`crate::sign::SIGNED_RETENTION_MONTHS`]).
    async fn put_received(
        &self,
        key: &str,
        body: Vec<u8>,
        received_at: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), StepError> {
        let until = received_at
            .checked_add_months(chrono::Months::new(crate::sign::SIGNED_RETENTION_MONTHS))
            .unwrap_or(received_at);
        match self
            .store
            .put_retained(&self.settings.evidence_bucket, key, body, until)
            .await?
        {
            PutOutcome::Created => tracing::info!(key, "written, locked"),
            PutOutcome::AlreadyExists => tracing::info!(key, "already written: duplicate"),
        }
        Ok(())
    }

    pub(crate) async fn put_evidence(&self, key: &str, body: Vec<u8>) -> Result<(), StepError> {
        match self
            .store
            .put_if_absent(&self.settings.evidence_bucket, key, body, "message/rfc822")
            .await?
        {
            PutOutcome::Created => tracing::info!(key, "written"),
            PutOutcome::AlreadyExists => tracing::info!(key, "already written: duplicate"),
        }
        Ok(())
    }
}

pub use pec_ports::keys::inbound_of_clean;

/// The SMTP envelope of each message of an SES receiving event (recipients = the receipt's,
/// i.e. those this rule accepted; source = the SMTP MAIL FROM).
pub fn ses_envelopes(event: &SimpleEmailEvent) -> Vec<(String, InboundEnvelope)> {
    event
        .records
        .iter()
        .filter_map(|r| {
            let id = r.ses.mail.message_id.clone()?;
            if !submission::valid_id(&id) {
                tracing::error!(id, "SES message id is not a valid object name: skipped");
                return None;
            }
            Some((
                id,
                InboundEnvelope {
                    version: 1,
                    recipients: r.ses.receipt.recipients.clone(),
                    source: r.ses.mail.source.clone().unwrap_or_default(),
                    received_at: r.ses.receipt.timestamp,
                    via: submission::InboundVia::Ses,
                },
            ))
        })
        .collect()
}
