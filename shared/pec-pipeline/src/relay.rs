//! The outbound relay: objects of the evidence bucket sent byte for byte to recipients outside
//! our domains, and each recipient's answer settled.
//!
//! Two hosts run it:
//! - the deliver step itself ([`crate::deliver`]) with `PEC_RELAY=ses` (SES `SendRawEmail`,
//!   which rewrites `Message-ID` and `Date`), or in tests with any [`MailTransport`];
//! - with `PEC_RELAY=smtp`, the **relay worker on the edge service** ([`Relay`]): deliver hands
//!   it a [`RelayRequest`] (a reference: bucket, key, recipients) on the relay queue, and the
//!   worker sends over SMTP to each recipient's MX (`pec-relay`, wired by `pec-edge`). Lambda blocks outbound port 25, and a long-lived process keeps connections to
//!   busy MXs open between messages.
//!
//! Per recipient, whoever hosts it (`Outbound::send`):
//! - taken: marked sent (`SENT#<key>` / `<recipient>`), never sent again;
//! - deferred (4xx, or the domain unreachable now): tried again after [`relay_retry_delay`]
//!   (1 to 15 minutes), until [`RELAY_RETRY_HORIZON`] (24 h) after the first attempt;
//! - refused for good (5xx, no such domain, null MX): for a certified recipient of our
//!   envelope, the outcome `not-delivered` (reason and the MX's reply) is recorded, its relay
//!   record marked failed (no 12 h / 24 h notice) and a receipts request queued: the avviso di
//!   mancata consegna goes to the sender at once. Anything else refused (an ordinary recipient,
//!   a receipt or notice we relay) is logged. Either way it is marked sent.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use chrono::{DateTime, Utc};
use pec_core::build::Provider;
use pec_ports::contract::{ReceiptRequest, RelayRequest};
use pec_ports::{
    DeliveryStatus, Env, MailTransport, NotDelivered, ObjectStore, Peer, QueueSender,
    RecipientOutcome, RecipientReply, Refusal, RelayEvent, SendError, StateStore,
};

use crate::{SettingsError, StepError, keys};

/// Our certified envelope being relayed: whose recipients refused for good get the avviso di
/// mancata consegna at once.
#[derive(Clone, Copy)]
pub(crate) struct Envelope<'a> {
    /// The submission id.
    pub(crate) id: &'a str,
    /// Its certified (PEC) recipients.
    pub(crate) certified: &'a [String],
    /// Recipients whose relay record is already settled (delivered, failed, 24 h notice sent),
    /// lower-cased: never sent again.
    pub(crate) settled: &'a [String],
}

impl Envelope<'_> {
    fn is_certified(&self, rcpt: &str) -> bool {
        listed(self.certified, rcpt)
    }
}

/// Whether `rcpt` is in `list` (addresses compared without case).
pub(crate) fn listed(list: &[String], rcpt: &str) -> bool {
    list.iter().any(|c| c.eq_ignore_ascii_case(rcpt))
}

/// How long after the first attempt a deferred relay is tried again: the PEC timers' last
/// notice comes at 24 h, after which a delivery would contradict it.
pub const RELAY_RETRY_HORIZON: chrono::TimeDelta = chrono::TimeDelta::hours(24);

/// Seconds until the next attempt of a relay deferred `elapsed` after its first attempt: half
/// the time waited so far, at least a minute and at most 15 minutes (SQS's longest delay;
/// RFC 5321 §4.5.4.1 asks for at least 30 minutes between retries of ordinary mail, PEC has
/// a day in all). So 1, 1, 2, 4, 8 minutes, then every 15 minutes: about a hundred attempts
/// in 24 h.
pub fn relay_retry_delay(elapsed: chrono::TimeDelta) -> u32 {
    (elapsed.num_seconds() / 2).clamp(60, 900) as u32
}

/// Longest [`RecipientOutcome::detail`] kept (chars).
pub const DETAIL_MAX_CHARS: usize = 200;

/// The non-delivery reason and the detail (`<x.y.z> <text>`, cleaned, at most
/// [`DETAIL_MAX_CHARS`]) for a recipient refused for good by the receiving side
/// (docs/design/smtp-relay-and-mx.md §6): the enhanced code decides, then the basic one.
pub fn non_delivery(refusal: &Refusal) -> (NotDelivered, String) {
    let reason = match refusal.enhanced.as_deref() {
        Some("5.1.1") => NotDelivered::UnknownUser,
        Some("5.1.2" | "5.1.10") => NotDelivered::UnknownDomain,
        Some("5.2.2") => NotDelivered::MailboxFull,
        Some("5.2.1") => NotDelivered::MailboxDisabled,
        Some(_) => NotDelivered::Refused,
        None if refusal.code == 550 && refusal.at_rcpt => NotDelivered::UnknownUser,
        None => NotDelivered::Refused,
    };
    let code = refusal
        .enhanced
        .clone()
        .unwrap_or_else(|| refusal.code.to_string());
    let text = pec_core::policy::clean_remote_text(&refusal.text);
    let detail = if text.starts_with(&code) {
        text
    } else {
        format!("{code} {text}")
    };
    let detail: String = detail.trim().chars().take(DETAIL_MAX_CHARS).collect();
    (reason, detail.trim_end().to_string())
}

/// Sends objects to recipients outside our domains through `transport` and settles each
/// recipient's answer in `state` (and, for a refused certified recipient, on the receipts
/// queue).
pub(crate) struct Outbound<'a, Db, Q, T> {
    /// `MAIL FROM`: the provider's own address.
    pub(crate) source: String,
    pub(crate) receipts_queue_url: &'a str,
    pub(crate) state: &'a Db,
    pub(crate) queue: &'a Q,
    pub(crate) transport: &'a T,
}

impl<Db, Q, T> Outbound<'_, Db, Q, T>
where
    Db: StateStore,
    Q: QueueSender,
    T: MailTransport,
{
    /// Sends `bytes` to `addresses` (outside our domains) through the outbound relay: one send
    /// per domain with the recipients not yet marked sent, each marked once it is done (taken,
    /// or refused for good: [`Self::refused`]), so a duplicate event sends nothing again (a
    /// crash between the send and the mark can repeat one send: the receiving provider's
    /// idempotency absorbs it). A marker naming a domain (written before markers were per
    /// recipient) covers every recipient of that domain.
    ///
    /// Deferred recipients and domains that could not be tried fail the step once every domain
    /// was tried: the event comes back and sends only what is left.
    pub(crate) async fn send(
        &self,
        key: &str,
        bytes: &[u8],
        addresses: &[String],
        envelope: Option<Envelope<'_>>,
        now: DateTime<Utc>,
    ) -> Result<(), StepError> {
        let mut by_domain: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for a in addresses {
            let domain = pec_core::addr::domain_of(a)
                .unwrap_or_default()
                .to_ascii_lowercase();
            by_domain.entry(domain).or_default().push(a.clone());
        }
        let source = self.source.as_str();
        let mut broken = Vec::new();
        let mut pending = Vec::new();
        for (domain, rcpts) in by_domain {
            if self.state.was_sent(key, &domain).await? {
                continue;
            }
            let mut todo = Vec::new();
            for rcpt in rcpts {
                if self.state.was_sent(key, &rcpt).await? {
                    continue;
                }
                // Refused before, then interrupted before its mark: finish that, send nothing.
                if let Some(env) = envelope.filter(|e| e.is_certified(&rcpt))
                    && let Some(o) = self.state.recipient(env.id, &rcpt).await?
                    && o.status == DeliveryStatus::NotDelivered
                {
                    self.not_delivered(key, env, &rcpt, o, now).await?;
                    continue;
                }
                // Settled meanwhile (delivered, or the final 24 h notice already sent: an event
                // redriven from its DLQ late): sending now would contradict what the sender got.
                if envelope.is_some_and(|e| e.settled.contains(&rcpt.to_ascii_lowercase())) {
                    tracing::warn!(key, recipient = %rcpt, "relay record already settled: not sent");
                    self.state.mark_sent(key, &rcpt).await?;
                    continue;
                }
                todo.push(rcpt);
            }
            if todo.is_empty() {
                continue;
            }
            // Our envelope to an ordinary (non-PEC) domain may follow the transport's policy
            // for those; everything else (envelopes to providers, receipts to other providers'
            // senders) travels only over verified TLS.
            let peer = match envelope {
                Some(env) if !todo.iter().any(|r| env.is_certified(r)) => Peer::Ordinary,
                _ => Peer::Provider,
            };
            let report = match self.transport.send_each(source, &todo, bytes, peer).await {
                Ok(r) => r,
                Err(e) if e.permanent => {
                    // A local problem (bytes that cannot travel unchanged, a bad sender, the
                    // service refused the message itself): waiting cannot help; the event fails
                    // towards its DLQ and alarm.
                    tracing::error!(key, domain, recipients = ?todo, error = %e, "relay impossible for the domain (a local problem)");
                    broken.push(e.to_string());
                    continue;
                }
                Err(e) => {
                    tracing::warn!(key, domain, recipients = ?todo, error = %e, "relay failed for the domain: tried again later");
                    pending.push(e.to_string());
                    continue;
                }
            };
            let mut answered = Vec::new();
            for (rcpt, reply) in &report.recipients {
                answered.push(rcpt.to_ascii_lowercase());
                match reply {
                    RecipientReply::Accepted => {
                        self.state.mark_sent(key, rcpt).await?;
                    }
                    RecipientReply::Deferred { text } => {
                        tracing::warn!(key, recipient = %rcpt, reply = %text, "recipient deferred by the receiving side: tried again later");
                        pending.push(format!("{rcpt} deferred: {text}"));
                    }
                    RecipientReply::Refused(refusal) => {
                        self.refused(key, envelope, rcpt, refusal, now).await?;
                    }
                }
            }
            for rcpt in todo
                .iter()
                .filter(|r| !answered.contains(&r.to_ascii_lowercase()))
            {
                pending.push(format!("{rcpt}: no answer from the transport"));
            }
            tracing::info!(key, domain, transport_id = %report.id, recipients = ?todo, "relayed");
        }
        if !broken.is_empty() {
            broken.extend(pending);
            Err(StepError::Send(SendError {
                operation: "relay",
                target: key.to_string(),
                message: broken.join("; "),
                permanent: true,
            }))
        } else if pending.is_empty() {
            Ok(())
        } else {
            Err(StepError::RelayDeferred(SendError {
                operation: "relay",
                target: key.to_string(),
                message: pending.join("; "),
                permanent: false,
            }))
        }
    }

    /// A recipient refused for good by the receiving side. A certified recipient of our
    /// envelope: the outcome `not-delivered` is recorded and handed to receipts (the avviso di
    /// mancata consegna, at once). Anything else: logged, nothing PEC. Marked sent either way.
    pub(crate) async fn refused(
        &self,
        key: &str,
        envelope: Option<Envelope<'_>>,
        rcpt: &str,
        refusal: &Refusal,
        now: DateTime<Utc>,
    ) -> Result<(), StepError> {
        let Some(env) = envelope.filter(|e| e.is_certified(rcpt)) else {
            tracing::warn!(key, recipient = %rcpt, code = refusal.code, enhanced = ?refusal.enhanced, reply = %refusal.text, "refused for good by the receiving side (not a certified recipient of our envelope): nothing to notify");
            self.state.mark_sent(key, rcpt).await?;
            return Ok(());
        };
        let (reason, detail) = non_delivery(refusal);
        tracing::warn!(key, message = env.id, recipient = %rcpt, code = refusal.code, %reason, %detail, "certified recipient refused for good by the receiving side: avviso di mancata consegna");
        let outcome = self
            .state
            .record_recipient(
                env.id,
                &RecipientOutcome {
                    recipient: rcpt.to_ascii_lowercase(),
                    status: DeliveryStatus::NotDelivered,
                    reason: Some(reason),
                    at: now,
                    item_id: None,
                    detail: Some(detail),
                },
            )
            .await?;
        self.not_delivered(key, env, rcpt, outcome, now).await
    }

    /// The recorded non-delivery of a relayed certified recipient: its relay record failed (off
    /// the timers), the receipts request queued, then the recipient marked sent.
    async fn not_delivered(
        &self,
        key: &str,
        env: Envelope<'_>,
        rcpt: &str,
        outcome: RecipientOutcome,
        now: DateTime<Utc>,
    ) -> Result<(), StepError> {
        if outcome.status == DeliveryStatus::NotDelivered {
            self.state
                .relay_mark(env.id, rcpt, RelayEvent::Failed, now)
                .await?;
            let request = ReceiptRequest {
                version: 1,
                message: env.id.to_string(),
                outcome,
                envelope: None,
            };
            self.queue
                .send(
                    self.receipts_queue_url,
                    serde_json::to_string(&request).unwrap_or_default(),
                )
                .await?;
        } else {
            tracing::error!(key, message = env.id, recipient = %rcpt, status = %outcome.status, "refused by the receiving side, but another outcome is in force: kept");
        }
        self.state.mark_sent(key, rcpt).await?;
        Ok(())
    }
}

/// The marker (`SENT#<key>` / this) deliver writes once it handed an object to the relay queue:
/// a duplicate deliver event hands nothing again. Not an address, so it never shadows a
/// recipient's own marker.
pub const HANDED_TO_RELAY: &str = "relay-queue";

/// What the relay worker reads from its environment.
#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// `PEC_PROVIDER_NAME`, `PEC_PROVIDER_DOMAIN`: `MAIL FROM` is its address.
    pub provider: Provider,
    /// `PEC_EVIDENCE_BUCKET`: the only bucket objects are sent from.
    pub evidence_bucket: String,
    /// `PEC_RECEIPTS_QUEUE_URL`: a certified recipient refused for good gets its avviso di
    /// mancata consegna through the receipts step.
    pub receipts_queue_url: String,
    /// `PEC_RELAY_QUEUE_URL`: the worker's own queue (deferred objects come back on it).
    pub relay_queue_url: String,
}

impl RelaySettings {
    /// From `env`; errors name the missing variable.
    pub fn from_env(env: &Env<'_>) -> Result<Self, SettingsError> {
        Ok(RelaySettings {
            provider: Provider::new(
                &env.required("PEC_PROVIDER_NAME")?,
                &env.required("PEC_PROVIDER_DOMAIN")?,
            )
            .map_err(|e| SettingsError::Provider(e.to_string()))?,
            evidence_bucket: env.required("PEC_EVIDENCE_BUCKET")?,
            receipts_queue_url: env.required("PEC_RECEIPTS_QUEUE_URL")?,
            relay_queue_url: env.required("PEC_RELAY_QUEUE_URL")?,
        })
    }
}

/// A relay queue message the worker cannot act on: it fails, and after the queue's
/// `maxReceiveCount` waits in the relay DLQ under its alarm.
#[derive(Debug, thiserror::Error)]
pub enum BadRequest {
    #[error("not a relay request: {0}")]
    Malformed(String),
    #[error("relay request version {0}: this worker reads version 1")]
    Version(u32),
    #[error(
        "relay request for {bucket}/{key}: only signed/ objects of the evidence bucket are sent"
    )]
    NotOurs { bucket: String, key: String },
}

/// The relay worker (the edge service hosts it; `pec-runner` locally): each [`RelayRequest`] of
/// the relay queue is sent to its recipients through `transport` (SMTP to their MX) and each
/// answer settled as deliver does (`Outbound::send`). Deferred recipients: the request goes back on the
/// relay queue after [`relay_retry_delay`], until [`RELAY_RETRY_HORIZON`] after
/// [`RelayRequest::first_at`]; then the message fails towards the relay DLQ and its alarm (a
/// certified recipient of ours has had the timers' 24 h notice by then). Idempotent as deliver
/// is: per-recipient `SENT#` markers, the recorded refusal found before any send.
pub struct Relay<St, Db, Q, T> {
    pub settings: RelaySettings,
    pub store: St,
    pub state: Db,
    pub queue: Q,
    pub transport: T,
}

impl<St, Db, Q, T> Relay<St, Db, Q, T>
where
    St: ObjectStore,
    Db: StateStore,
    Q: QueueSender,
    T: MailTransport,
{
    pub fn new(settings: RelaySettings, store: St, state: Db, queue: Q, transport: T) -> Self {
        Relay {
            settings,
            store,
            state,
            queue,
            transport,
        }
    }

    /// One batch of the relay queue, its records side by side (each waits on remote MXs).
    pub async fn handle(&self, event: SqsEvent, now: DateTime<Utc>) -> SqsBatchResponse {
        crate::batch::partial_batch_concurrent("relay", &event, |record| async move {
            self.handle_record(&record, now).await
        })
        .await
    }

    async fn handle_record(
        &self,
        record: &SqsMessage,
        now: DateTime<Utc>,
    ) -> Result<(), StepError> {
        let request = self.request(record)?;
        match self.relay(&request, now).await {
            Err(StepError::RelayDeferred(why)) => self.later(&request, &why, now).await,
            other => other,
        }
    }

    /// The request a queue message carries, checked.
    pub fn request(&self, record: &SqsMessage) -> Result<RelayRequest, StepError> {
        let body = record.body.as_deref().unwrap_or_default();
        let request: RelayRequest = serde_json::from_str(body)
            .map_err(|e| StepError::BadRelayRequest(BadRequest::Malformed(e.to_string())))?;
        if request.version != 1 {
            return Err(StepError::BadRelayRequest(BadRequest::Version(
                request.version,
            )));
        }
        if request.bucket != self.settings.evidence_bucket
            || !request.key.starts_with(keys::SIGNED_PREFIX)
        {
            return Err(StepError::BadRelayRequest(BadRequest::NotOurs {
                bucket: request.bucket,
                key: request.key,
            }));
        }
        Ok(request)
    }

    /// Sends `request`'s object to its recipients not yet settled.
    pub async fn relay(&self, request: &RelayRequest, now: DateTime<Utc>) -> Result<(), StepError> {
        let key = &request.key;
        let bytes = crate::error::required(&self.store, &request.bucket, key).await?;
        let outbound = Outbound {
            source: self.settings.provider.address(),
            receipts_queue_url: &self.settings.receipts_queue_url,
            state: &self.state,
            queue: &self.queue,
            transport: &self.transport,
        };
        let Some(id) = request.message.as_deref() else {
            return outbound
                .send(key, &bytes, &request.recipients, None, now)
                .await;
        };
        // Our envelope: which recipients are certified, and which are settled already (a
        // receipt came, a refusal was recorded, the 24 h notice went).
        let record = self
            .state
            .message(id)
            .await?
            .ok_or_else(|| StepError::NoRecord(id.to_string()))?;
        let mut settled = Vec::new();
        for rcpt in &request.recipients {
            if let Some(r) = self.state.relay(id, rcpt).await?
                && (r.delivered_at.is_some() || r.notice24_at.is_some() || r.failed_at.is_some())
            {
                settled.push(r.recipient);
            }
        }
        let envelope = Envelope {
            id,
            certified: &record.certified,
            settled: &settled,
        };
        outbound
            .send(key, &bytes, &request.recipients, Some(envelope), now)
            .await
    }

    /// Deferred: the request back on the relay queue after [`relay_retry_delay`], or, 24 h
    /// after the first attempt, the message fails towards the DLQ.
    async fn later(
        &self,
        request: &RelayRequest,
        why: &SendError,
        now: DateTime<Utc>,
    ) -> Result<(), StepError> {
        let first = request.first_at.min(now);
        let elapsed = now - first;
        let key = &request.key;
        if elapsed >= RELAY_RETRY_HORIZON {
            tracing::error!(key, first_attempt = %first, reason = %why.message, "relay still deferred 24 h after the first attempt: the message fails towards the relay DLQ");
            return Err(StepError::RelayDeferred(why.clone()));
        }
        let delay = relay_retry_delay(elapsed);
        let body = serde_json::to_string(request).unwrap_or_default();
        self.queue
            .send_delayed(&self.settings.relay_queue_url, body, delay)
            .await?;
        tracing::warn!(key, retry_in_seconds = delay, first_attempt = %first, reason = %why.message, "relay deferred: the request comes back later");
        Ok(())
    }
}
