//! The delivery point (punto di consegna) for every signed provider message.
//!
//! For each `signed/...` object (announced by S3 on the deliver queue):
//! 1. it is classified and described as a [`PecEvent`], appended to the provider log
//!    (conditional on the event id) and published on the event bus (at least once: consumers
//!    deduplicate on `event_id`);
//! 2. a **transport envelope** is delivered to each SMTP recipient in our domains, one recorded
//!    outcome per recipient: stored in the mailbox if it exists, is not disabled and the
//!    envelope fits the quota, else not delivered (unknown user / disabled / full). The outcome
//!    is handed to `receipts` (receipts queue), which builds the delivery receipt or the
//!    non-delivery notice;
//! 3. any **other** provider message (receipts, notices) is stored in the mailboxes of its `To`
//!    addresses in our domains, quota counted but never enforced (see [`pec_core::plan`]).
//!
//! Recipients outside our domains get the message through the outbound relay
//! ([`crate::relay`]): sent here through the step's transport (SES), each answer settled per
//! recipient, a deferral putting the object back on this step's queue
//! ([`Deliver::relay_later`]); or, with `PEC_RELAY=smtp`, handed to the relay worker on the edge
//! service as a [`RelayRequest`] on the relay queue (once: [`HANDED_TO_RELAY`]).
//!
//! Idempotent: the outcome and the mailbox item are written in one conditional transaction, the
//! mailbox object with `If-None-Match`, and a duplicate re-applies the outcome in force (same
//! object, same receipts request; the receipt itself is written once). A relayed recipient is
//! marked sent only after its receipts request is queued, so a duplicate after that queues
//! nothing, and a crash before it queues the same request again (never a second send: the
//! recorded refusal is found first).

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use chrono::{DateTime, Utc};
use pec_core::classify::{self, Kind};
use pec_core::events::{EventType, PecEvent};
use pec_ports::mailstore::JUNK;
use pec_ports::sms::{SmsNotice, SmsRequest};
use pec_ports::{
    DeliveryStatus, EventPublisher, MailTransport, MailboxItem, MailboxWrite, NotDelivered,
    ObjectStore, QueueSender, RecipientOutcome, RelayEvent, RelayRecord, SendError, SpamFiling,
    StateStore,
};

use crate::relay::{Envelope, Outbound, listed};
use crate::{Settings, StepError, is_ours, keys};

pub use crate::relay::{
    DETAIL_MAX_CHARS, HANDED_TO_RELAY, RELAY_RETRY_HORIZON, non_delivery, relay_retry_delay,
};
pub use pec_ports::contract::{ReceiptRequest, RelayRequest};

/// What happened to one signed object (for logs and tests).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Delivered {
    pub event: Option<PecEvent>,
    /// Mailboxes that hold it now (stored now or before).
    pub stored_in: Vec<String>,
    /// Recipient outcomes in force (envelopes).
    pub outcomes: Vec<RecipientOutcome>,
    /// Addresses outside our domains it was relayed to (now or before).
    pub relayed: Vec<String>,
}

/// The deliver step.
pub struct Deliver<St, Db, Q, Ev, T> {
    pub settings: Settings,
    pub store: St,
    pub state: Db,
    pub queue: Q,
    pub events: Ev,
    /// The outbound relay when deliver sends itself (SES; any transport in tests). Unused
    /// with `PEC_RELAY=smtp`: the relay worker on the edge sends.
    pub transport: T,
}

impl<St, Db, Q, Ev, T> Deliver<St, Db, Q, Ev, T>
where
    St: ObjectStore,
    Db: StateStore,
    Q: QueueSender,
    Ev: EventPublisher,
    T: MailTransport,
{
    pub fn new(
        settings: Settings,
        store: St,
        state: Db,
        queue: Q,
        events: Ev,
        transport: T,
    ) -> Self {
        Self {
            settings,
            store,
            state,
            queue,
            events,
            transport,
        }
    }

    /// One SQS batch (partial batch failures); `now` dates decisions.
    pub async fn handle(&self, event: SqsEvent, now: DateTime<Utc>) -> SqsBatchResponse {
        crate::batch::each_announced("deliver", &event, |object| async move {
            let (bucket, key) = (&object.bucket, &object.key);
            if *bucket != self.settings.evidence_bucket || !keys::is_deliverable(key) {
                tracing::warn!(
                    bucket,
                    key,
                    "not a signed/ or received/ object of the evidence bucket: ignored"
                );
                return Ok(());
            }
            match self.deliver_object(key, now).await {
                Ok(d) => {
                    tracing::info!(key, stored_in = ?d.stored_in, relayed = ?d.relayed,
                        event = ?d.event.as_ref().map(|e| e.event_type), "delivered");
                    Ok(())
                }
                Err(StepError::RelayDeferred(why)) => self.relay_later(&object, &why, now).await,
                Err(e) => Err(e),
            }
        })
        .await
    }

    /// A relay deferred for some recipients: the object comes back on this step's own queue
    /// after [`relay_retry_delay`] (an S3 notification dated as the first one: the 24 h count
    /// from when S3 announced the object, which is the first attempt), and this event is done.
    /// 24 h after that, the event fails instead: SQS tries it `QueueMaxReceiveCount` more times,
    /// then it waits in the DLQ under its alarm (a receipt for another provider's sender has no
    /// other way to be noticed; a certified recipient of ours has had the timers' 24 h notice,
    /// and is not sent again). Without a queue configured, the event fails at once as well.
    async fn relay_later(
        &self,
        object: &crate::batch::Announced,
        why: &SendError,
        now: DateTime<Utc>,
    ) -> Result<(), StepError> {
        let Some(queue) = &self.settings.deliver_queue_url else {
            return Err(StepError::RelayDeferred(why.clone()));
        };
        let first = object.at.filter(|t| *t <= now).unwrap_or(now);
        let elapsed = now - first;
        let key = &object.key;
        if elapsed >= RELAY_RETRY_HORIZON {
            tracing::error!(key, first_attempt = %first, reason = %why.message, "relay still deferred 24 h after the first attempt: the event fails towards its DLQ");
            return Err(StepError::RelayDeferred(why.clone()));
        }
        let delay = relay_retry_delay(elapsed);
        let body = crate::batch::s3_notification(&object.bucket, key, first);
        self.queue.send_delayed(queue, body, delay).await?;
        tracing::warn!(key, retry_in_seconds = delay, first_attempt = %first, reason = %why.message, "relay deferred: the object comes back later");
        Ok(())
    }

    /// Delivers one signed object of the evidence bucket.
    pub async fn deliver_object(
        &self,
        key: &str,
        now: DateTime<Utc>,
    ) -> Result<Delivered, StepError> {
        let s = &self.settings;
        let bytes = crate::error::required(&self.store, &s.evidence_bucket, key).await?;
        let c = classify::classify(&bytes);
        let mut event = PecEvent::from_emitted(&c, key, now)?;
        let subject = c.headers.subject.clone().unwrap_or_default();
        let mut out = Delivered::default();
        let inbound = keys::inbound_of(key);
        // What the outbound relay answered, returned once the log and the event are written.
        let mut relayed: Result<(), StepError> = Ok(());

        if c.kind == Kind::BustaTrasporto
            && key.starts_with(keys::SIGNED_PREFIX)
            && let Some(id) = keys::message_of(key)
        {
            // Our envelope: each SMTP recipient of ours gets one outcome; the others are relayed.
            let record = self
                .state
                .message(id)
                .await?
                .ok_or_else(|| StepError::NoRecord(id.to_string()))?;
            let mut elsewhere = Vec::new();
            for rcpt in &record.recipients {
                if !is_ours(s, &self.state, rcpt).await? {
                    elsewhere.push(rcpt.clone());
                    continue;
                }
                let outcome = self
                    .deliver_envelope(
                        id,
                        rcpt,
                        self.item(key, &bytes, &event, &subject, now, rcpt),
                        &bytes,
                        None,
                        now,
                    )
                    .await?;
                if outcome.status == DeliveryStatus::Delivered {
                    out.stored_in.push(rcpt.to_ascii_lowercase());
                    self.notify_sms(rcpt, &outcome, &event, false).await?;
                }
                out.outcomes.push(outcome);
            }
            // The relay records first (kept from the first attempt: the timers count from
            // there), so a refusal can be marked on them; the record in force tells whether a
            // recipient is settled already (an event redriven late).
            let mut settled = Vec::new();
            for rcpt in &elsewhere {
                let r = self
                    .state
                    .create_relay(&RelayRecord {
                        message: id.to_string(),
                        recipient: rcpt.to_ascii_lowercase(),
                        certified: listed(&record.certified, rcpt),
                        relayed_at: now,
                        taken_at: None,
                        delivered_at: None,
                        failed_at: None,
                        notice12_at: None,
                        notice24_at: None,
                    })
                    .await?;
                if r.delivered_at.is_some() || r.notice24_at.is_some() || r.failed_at.is_some() {
                    settled.push(r.recipient);
                }
            }
            let envelope = Envelope {
                id,
                certified: &record.certified,
                settled: &settled,
            };
            relayed = match &s.relay_queue_url {
                Some(queue) => self.hand_off(queue, key, &elsewhere, Some(id), now).await,
                None => {
                    self.outbound()
                        .send(key, &bytes, &elsewhere, Some(envelope), now)
                        .await
                }
            };
            out.relayed = elsewhere;
        } else if let Some(inbound_id) = inbound {
            // What the receiving point accepted (another provider's envelope) or built (the
            // anomaly envelope): for the recipients of ours it was addressed to.
            let record = self
                .state
                .inbound(inbound_id)
                .await?
                .ok_or_else(|| StepError::NoRecord(format!("inbound {inbound_id}")))?;
            if c.kind == Kind::BustaTrasporto {
                event.event_type = EventType::EnvelopeReceived;
                let id = keys::inbound_message(inbound_id);
                for rcpt in &record.recipients {
                    let outcome = self
                        .deliver_envelope(
                            &id,
                            rcpt,
                            self.item(key, &bytes, &event, &subject, now, rcpt),
                            &bytes,
                            Some(key),
                            now,
                        )
                        .await?;
                    if outcome.status == DeliveryStatus::Delivered {
                        out.stored_in.push(rcpt.to_ascii_lowercase());
                        self.notify_sms(rcpt, &outcome, &event, false).await?;
                    }
                    out.outcomes.push(outcome);
                }
            } else {
                // The anomaly envelope: INBOX, or for ordinary mail scored as spam the Junk
                // folder, or nothing, by each mailbox's setting.
                let spam = keys::is_spam_anomaly(key);
                for rcpt in &record.recipients {
                    let folder = if spam {
                        match self.state.mailbox(rcpt).await? {
                            Some(m) if m.ordinary_spam == SpamFiling::Delete => {
                                tracing::info!(addressee = %rcpt, key, "ordinary mail scored as spam: not stored (the mailbox's setting)");
                                continue;
                            }
                            _ => Some(JUNK),
                        }
                    } else {
                        None
                    };
                    if self
                        .store_in(key, &bytes, &event, &subject, now, rcpt, folder)
                        .await?
                    {
                        out.stored_in.push(rcpt.to_ascii_lowercase());
                        if folder.is_none() {
                            // Ordinary mail in INBOX: notified only where the mailbox asked.
                            let delivered = RecipientOutcome {
                                recipient: rcpt.to_ascii_lowercase(),
                                status: DeliveryStatus::Delivered,
                                reason: None,
                                at: record.received_at,
                                item_id: Some(keys::item_id(key)),
                                detail: None,
                            };
                            self.notify_sms(rcpt, &delivered, &event, true).await?;
                        }
                    }
                }
            }
        } else {
            // A receipt from another provider about one of our messages updates that
            // recipient's status (and stops its timers); a presa in carico is logged only.
            let received =
                key.starts_with(keys::RECEIVED_PREFIX) && keys::message_of(key).is_some();
            if received && let (Some(id), Some(d)) = (keys::message_of(key), c.daticert.as_ref()) {
                let about: Vec<String> = match c.kind {
                    Kind::PresaInCarico => d.dati.ricezione.clone(),
                    _ => d.dati.consegna.clone().into_iter().collect(),
                };
                let mark = match c.kind {
                    Kind::PresaInCarico => Some(RelayEvent::TakenInCharge),
                    Kind::AvvenutaConsegna => Some(RelayEvent::Delivered),
                    Kind::ErroreConsegna => Some(RelayEvent::Failed),
                    _ => None,
                };
                if let Some(mark) = mark {
                    for r in &about {
                        self.state.relay_mark(id, r, mark, now).await?;
                    }
                }
            }
            if !(received && c.kind == Kind::PresaInCarico) {
                let mut elsewhere = Vec::new();
                // Receipts and notices about a message of a mass-sending job are filed in the
                // job's folder of the sender's mailbox.
                let job_folder =
                    match keys::message_of(key).or_else(|| keys::message_of_scan_notice(key)) {
                        Some(id) => self
                            .state
                            .message(id)
                            .await?
                            .and_then(|r| r.receipts_folder.map(|f| (r.user, f))),
                        None => None,
                    };
                for to in &c.headers.to {
                    if !is_ours(s, &self.state, to).await? {
                        elsewhere.push(to.clone());
                        continue;
                    }
                    let folder = job_folder
                        .as_ref()
                        .filter(|(user, _)| user.eq_ignore_ascii_case(to))
                        .map(|(_, f)| f.as_str());
                    if self
                        .store_in(key, &bytes, &event, &subject, now, to, folder)
                        .await?
                    {
                        out.stored_in.push(to.to_ascii_lowercase());
                    }
                }
                relayed = match &s.relay_queue_url {
                    Some(queue) => self.hand_off(queue, key, &elsewhere, None, now).await,
                    None => {
                        self.outbound()
                            .send(key, &bytes, &elsewhere, None, now)
                            .await
                    }
                };
                out.relayed = elsewhere;
            }
        }

        // The provider log and the integration event are written whatever the relay answered
        // (both idempotent): a deferred recipient at another provider makes the object come
        // back later (`relay_later`), but never costs the message its log record.
        self.state.append_log(&event).await?;
        self.events.publish(&event).await?;
        relayed?;
        out.event = Some(event);
        Ok(out)
    }

    /// Stores a message in `mailbox`'s `folder` (`None`: INBOX) without quota enforcement
    /// (receipts, notices, anomaly envelopes); `false` if there is no such mailbox (logged: the
    /// object stays in the evidence bucket).
    #[allow(clippy::too_many_arguments)]
    async fn store_in(
        &self,
        key: &str,
        bytes: &[u8],
        event: &PecEvent,
        subject: &str,
        now: DateTime<Utc>,
        mailbox: &str,
        folder: Option<&str>,
    ) -> Result<bool, StepError> {
        let mut item = self.item(key, bytes, event, subject, now, mailbox);
        item.folder = folder.map(str::to_string);
        // The bytes first: a message listed in a folder (IMAP, POP3) always has them.
        if self.state.mailbox(mailbox).await?.is_some() {
            self.put_object(&item, bytes).await?;
        }
        match self
            .state
            .store_in_mailbox(mailbox, &item, None, false)
            .await?
        {
            MailboxWrite::NoMailbox => {
                tracing::error!(addressee = %mailbox, key, "the addressee's mailbox does not exist: the object stays in the evidence bucket");
                Ok(false)
            }
            MailboxWrite::Full { .. } => {
                tracing::error!(addressee = %mailbox, key, "quota refused a message although it is not enforced");
                Ok(false)
            }
            MailboxWrite::Stored | MailboxWrite::Duplicate | MailboxWrite::Decided(_) => {
                // Written above, unless the mailbox appeared since (then now: idempotent).
                self.put_object(&item, bytes).await?;
                Ok(true)
            }
        }
    }

    /// The outbound relay through this step's own transport.
    fn outbound(&self) -> Outbound<'_, Db, Q, T> {
        Outbound {
            source: self.settings.provider.address(),
            receipts_queue_url: &self.settings.receipts_queue_url,
            state: &self.state,
            queue: &self.queue,
            transport: &self.transport,
        }
    }

    /// Hands `key` to the relay worker on the edge service (one [`RelayRequest`] on the relay
    /// queue for all of `recipients`), once: a duplicate event finds [`HANDED_TO_RELAY`]
    /// marked and hands nothing (a crash between the two hands it twice; the worker's
    /// per-recipient markers then send nothing twice, outside the window between a send and
    /// its marker).
    async fn hand_off(
        &self,
        queue: &str,
        key: &str,
        recipients: &[String],
        message: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), StepError> {
        if recipients.is_empty() || self.state.was_sent(key, HANDED_TO_RELAY).await? {
            return Ok(());
        }
        let request = RelayRequest {
            version: 1,
            bucket: self.settings.evidence_bucket.clone(),
            key: key.to_string(),
            recipients: recipients.to_vec(),
            message: message.map(str::to_string),
            first_at: now,
        };
        self.queue
            .send(queue, serde_json::to_string(&request).unwrap_or_default())
            .await?;
        self.state.mark_sent(key, HANDED_TO_RELAY).await?;
        tracing::info!(key, recipients = ?recipients, "handed to the relay worker");
        Ok(())
    }

    /// Puts an SMS notice on the SMS queue for a message delivered into `mailbox`'s INBOX, if
    /// the mailbox wants one (`sms::notice_for`). At least once: a duplicate delivery sends it
    /// again, and the sms-notify function recognises it. Best effort: a notice that cannot be
    /// queued is logged, and the delivery (its log record, its receipts) goes on.
    async fn notify_sms(
        &self,
        mailbox: &str,
        delivered: &RecipientOutcome,
        event: &PecEvent,
        ordinary: bool,
    ) -> Result<(), StepError> {
        if let Err(e) = self
            .try_notify_sms(mailbox, delivered, event, ordinary)
            .await
        {
            tracing::error!(mailbox, error = %e, "the SMS notice could not be queued: no SMS for this message");
        }
        Ok(())
    }

    async fn try_notify_sms(
        &self,
        mailbox: &str,
        delivered: &RecipientOutcome,
        event: &PecEvent,
        ordinary: bool,
    ) -> Result<(), StepError> {
        let (Some(url), Some(item)) = (&self.settings.sms_queue_url, &delivered.item_id) else {
            return Ok(());
        };
        let Some(m) = self.state.mailbox(mailbox).await? else {
            return Ok(());
        };
        let notice = SmsNotice {
            version: 1,
            mailbox: m.address.clone(),
            item: item.clone(),
            // Bounded: an SMS shows far less, and the queue message stays small.
            sender: event.sender.chars().take(200).collect(),
            subject: event
                .subject
                .as_deref()
                .unwrap_or_default()
                .chars()
                .take(200)
                .collect(),
            ordinary,
            at: delivered.at,
        };
        if let Some(notice) = crate::sms::notice_for(&m, notice) {
            let body = serde_json::to_string(&SmsRequest::Notice(notice)).unwrap_or_default();
            self.queue.send(url, body).await?;
        }
        Ok(())
    }

    fn item(
        &self,
        key: &str,
        bytes: &[u8],
        event: &PecEvent,
        subject: &str,
        now: DateTime<Utc>,
        mailbox: &str,
    ) -> MailboxItem {
        let id = keys::item_id(key);
        MailboxItem {
            object_key: keys::mailbox_object(mailbox, &id),
            id,
            size: bytes.len() as u64,
            kind: event.receipt_type.clone(),
            subject: subject.to_string(),
            from: self.settings.provider.address(),
            identificativo: event.identificativo.clone(),
            evidence_key: key.to_string(),
            stored_at: now,
            folder: None,
        }
    }

    async fn put_object(&self, item: &MailboxItem, bytes: &[u8]) -> Result<(), StepError> {
        self.store
            .put_if_absent(
                &self.settings.mailbox_bucket,
                &item.object_key,
                bytes.to_vec(),
                "message/rfc822",
            )
            .await?;
        Ok(())
    }

    async fn deliver_envelope(
        &self,
        id: &str,
        rcpt: &str,
        item: MailboxItem,
        bytes: &[u8],
        envelope: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<RecipientOutcome, StepError> {
        let not_delivered = |reason: NotDelivered| RecipientOutcome {
            recipient: rcpt.to_ascii_lowercase(),
            status: DeliveryStatus::NotDelivered,
            reason: Some(reason),
            at: now,
            item_id: None,
            detail: None,
        };
        let mut written = false;
        let outcome = match self.state.recipient(id, rcpt).await? {
            Some(existing) => existing,
            None => match self.state.mailbox(rcpt).await? {
                None => {
                    self.state
                        .record_recipient(id, &not_delivered(NotDelivered::UnknownUser))
                        .await?
                }
                // Locked, suspended, pending or revoked: "casella disabilitata".
                Some(m) if !m.in_service() => {
                    self.state
                        .record_recipient(id, &not_delivered(NotDelivered::MailboxDisabled))
                        .await?
                }
                Some(m) => {
                    // The bytes first, when the envelope fits: a message listed in a folder
                    // (IMAP, POP3) always has them. One that does not fit writes nothing.
                    if pec_core::plan::envelope_fits(m.used_bytes, item.size, m.quota_bytes) {
                        self.put_object(&item, bytes).await?;
                        written = true;
                    }
                    let delivered = RecipientOutcome {
                        recipient: rcpt.to_ascii_lowercase(),
                        status: DeliveryStatus::Delivered,
                        reason: None,
                        at: now,
                        item_id: Some(item.id.clone()),
                        detail: None,
                    };
                    match self
                        .state
                        .store_in_mailbox(rcpt, &item, Some((id, &delivered)), true)
                        .await?
                    {
                        MailboxWrite::Stored | MailboxWrite::Duplicate => delivered,
                        MailboxWrite::Decided(existing) => existing,
                        MailboxWrite::NoMailbox => {
                            self.state
                                .record_recipient(id, &not_delivered(NotDelivered::UnknownUser))
                                .await?
                        }
                        MailboxWrite::Full { used, quota } => {
                            tracing::warn!(recipient = %rcpt, used, quota, size = item.size, "mailbox full: not delivered");
                            self.state
                                .record_recipient(id, &not_delivered(NotDelivered::MailboxFull))
                                .await?
                        }
                    }
                }
            },
        };
        if outcome.status == DeliveryStatus::Delivered
            && let Some(item_id) = &outcome.item_id
            && !(written && *item_id == item.id)
        {
            let stored = MailboxItem {
                object_key: keys::mailbox_object(rcpt, item_id),
                ..item
            };
            self.put_object(&stored, bytes).await?;
        }
        let request = ReceiptRequest {
            version: 1,
            message: id.to_string(),
            outcome: outcome.clone(),
            envelope: envelope.map(str::to_string),
        };
        self.queue
            .send(
                &self.settings.receipts_queue_url,
                serde_json::to_string(&request).unwrap_or_default(),
            )
            .await?;
        Ok(outcome)
    }
}
