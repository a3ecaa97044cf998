//! The state table (tenants, domains, mailboxes, messages, per-recipient outcomes) and the
//! provider log, behind [`StateStore`]: DynamoDB in AWS and on DynamoDB Local, memory in unit
//! tests. The item layout and access patterns are documented in ARCHITECTURE.md ("Data").
//!
//! Every write a step depends on for idempotency is conditional; the store reports what was
//! already there instead of failing, so a step that sees a duplicate re-applies the decision in
//! force and produces nothing new.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Mutex;

use aws_sdk_dynamodb::types::{AttributeValue, CancellationReason, Put, TransactWriteItem, Update};
use chrono::{DateTime, Months, Utc};
use pec_core::events::PecEvent;
use pec_core::plan::Plan;
use serde::{Deserialize, Serialize};

use crate::store::aws_error_chain;

/// A state operation failed (network, throttling, a corrupt item...).
#[derive(Debug, thiserror::Error)]
#[error("{operation} on {table}: {message}")]
pub struct StateError {
    pub operation: &'static str,
    pub table: String,
    pub message: String,
}

/// A tenant (a professional order, a firm) that brings its own domains.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    pub id: String,
    pub name: String,
}

/// A PEC mailbox of one of our domains.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mailbox {
    /// The address, lower-case.
    pub address: String,
    pub tenant: String,
    pub plan: Plan,
    /// Whole GiB bought on top of the plan.
    pub expansions_gb: u32,
    /// Plan inbox plus expansions.
    pub quota_bytes: u64,
    /// Sum of the sizes of the stored items (exact: kept in the same transaction as each
    /// store and delete).
    pub used_bytes: u64,
    /// Argon2id PHC string of the submission password.
    pub password_hash: String,
    /// Locked (e.g. by the spam lockout): cannot submit; delivery refuses envelopes.
    pub locked: bool,
    /// Refuses ordinary (non-PEC) mail instead of wrapping it in an anomaly envelope.
    pub refuse_ordinary: bool,
    pub created_at: DateTime<Utc>,
}

/// One message stored in a mailbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailboxItem {
    /// Unique within the mailbox; derived from what was delivered, so a duplicate finds it.
    pub id: String,
    /// Where the bytes are (mailbox bucket).
    pub object_key: String,
    /// Size in bytes (counts towards the quota).
    pub size: u64,
    /// What it is (`busta-trasporto`, `accettazione`, `avvenuta-consegna`, ...).
    pub kind: String,
    pub subject: String,
    pub from: String,
    /// The identificativo of the message it concerns, when known.
    pub identificativo: String,
    /// The evidence key of the signed object.
    pub evidence_key: String,
    pub stored_at: DateTime<Utc>,
}

/// A submitted message as the access point recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRecord {
    /// The submission id.
    pub id: String,
    pub identificativo: String,
    /// Message-ID given to a message submitted without one.
    pub fallback_msgid: String,
    pub tenant: String,
    /// Authenticated mailbox.
    pub user: String,
    /// Raw-bucket key of the submitted bytes.
    pub raw_key: String,
    pub received_at: DateTime<Utc>,
    /// `submitted`, `rejected`, `accepted`, `virus`.
    pub state: String,
    pub subject: String,
    pub sender: String,
    /// SMTP recipients.
    pub recipients: Vec<String>,
    /// Recipients that are PEC mailboxes (ours or listed in the provider index).
    pub certified: Vec<String>,
    /// When the state last changed.
    pub updated_at: DateTime<Utc>,
}

/// The delivery point's decision for one recipient of one message (recorded once).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipientOutcome {
    pub recipient: String,
    /// `delivered` or `not-delivered`.
    pub status: String,
    /// For `not-delivered`: `unknown-user`, `mailbox-full`, `mailbox-disabled`, ...
    pub reason: Option<String>,
    pub at: DateTime<Utc>,
    /// The mailbox item (for `delivered`).
    pub item_id: Option<String>,
}

/// Inbound mail as the receiving point recorded it (one per `inbound/<id>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboundRecord {
    /// The inbound id (`inbound/<id>.eml`).
    pub id: String,
    pub received_at: DateTime<Utc>,
    /// SMTP source (Return-Path).
    pub source: String,
    /// The recipients in our domains.
    pub recipients: Vec<String>,
    /// What the receiving point decided: `envelope` (a verified transport envelope),
    /// `receipt` (a verified receipt/notice about one of our messages), `anomaly` (ordinary
    /// mail or a PEC object that failed verification), `refused`.
    pub decision: String,
    /// The classifier's kind (`busta-trasporto`, `ordinaria`, ...).
    pub kind: String,
    /// Why, for anomalies and refusals (the verification verdict and reason).
    pub reason: Option<String>,
    /// A security failure (bad signature, signer not listed...): `X-VerificaSicurezza: errore`.
    pub security_error: bool,
    /// The PEC identificativo (daticert), when there is one.
    pub identificativo: Option<String>,
    /// The sending provider's `mailReceipt` (provider index), for envelopes.
    pub sender_receipt_address: Option<String>,
    /// The sending provider's name (provider index).
    pub sender_provider: Option<String>,
}

/// A recipient of one of our messages that lives at another provider (or is ordinary mail):
/// what came back, and the timers (12 h / 24 h) that apply to certified ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayRecord {
    /// Submission id.
    pub message: String,
    pub recipient: String,
    /// A PEC mailbox (certificato): the timers apply. Ordinary (esterno): none.
    pub certified: bool,
    pub relayed_at: DateTime<Utc>,
    pub taken_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub failed_at: Option<DateTime<Utc>>,
    pub notice12_at: Option<DateTime<Utc>>,
    pub notice24_at: Option<DateTime<Utc>>,
}

/// What happened to a relayed recipient (each recorded once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayEvent {
    /// Presa in carico received.
    TakenInCharge,
    /// Avvenuta consegna received.
    Delivered,
    /// Mancata consegna received.
    Failed,
    /// Our 12 h notice emitted.
    Notice12,
    /// Our 24 h notice emitted.
    Notice24,
}

impl RelayEvent {
    fn attribute(self) -> &'static str {
        match self {
            RelayEvent::TakenInCharge => "taken_at",
            RelayEvent::Delivered => "delivered_at",
            RelayEvent::Failed => "failed_at",
            RelayEvent::Notice12 => "notice12_at",
            RelayEvent::Notice24 => "notice24_at",
        }
    }

    /// After this, no timer applies any more.
    fn is_final(self) -> bool {
        matches!(
            self,
            RelayEvent::Delivered | RelayEvent::Failed | RelayEvent::Notice24
        )
    }
}

/// What [`StateStore::store_in_mailbox`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailboxWrite {
    /// Stored now (and the recipient outcome, if given, recorded).
    Stored,
    /// The item was already there (a duplicate): nothing changed.
    Duplicate,
    /// The recipient outcome was already decided: nothing changed; this is the one in force.
    Decided(RecipientOutcome),
    /// No such mailbox.
    NoMailbox,
    /// The item does not fit (only when the quota is enforced).
    Full { used: u64, quota: u64 },
}

/// The state operations the steps, the gateway and the `pec` command need.
pub trait StateStore: Send + Sync {
    /// Creates or replaces a tenant.
    fn put_tenant(&self, tenant: &Tenant) -> impl Future<Output = Result<(), StateError>> + Send;
    /// Assigns `domain` to `tenant` (creates or replaces).
    fn put_domain(
        &self,
        domain: &str,
        tenant: &str,
    ) -> impl Future<Output = Result<(), StateError>> + Send;
    /// The tenant of a domain we serve.
    fn domain_tenant(
        &self,
        domain: &str,
    ) -> impl Future<Output = Result<Option<String>, StateError>> + Send;
    /// Creates a mailbox; `false` if the address exists (nothing changed).
    fn create_mailbox(
        &self,
        mailbox: &Mailbox,
    ) -> impl Future<Output = Result<bool, StateError>> + Send;
    fn mailbox(
        &self,
        address: &str,
    ) -> impl Future<Output = Result<Option<Mailbox>, StateError>> + Send;
    /// The items of a mailbox, oldest first.
    fn mailbox_items(
        &self,
        address: &str,
    ) -> impl Future<Output = Result<Vec<MailboxItem>, StateError>> + Send;
    /// Stores `item` in the mailbox, adding its size to the usage, atomically with the
    /// recipient outcome `decision` (message id, outcome) when given. With `enforce_quota` the
    /// item is refused when it does not fit.
    fn store_in_mailbox(
        &self,
        address: &str,
        item: &MailboxItem,
        decision: Option<(&str, &RecipientOutcome)>,
        enforce_quota: bool,
    ) -> impl Future<Output = Result<MailboxWrite, StateError>> + Send;
    /// Deletes an item and subtracts its size (atomically); the item deleted, if it existed.
    fn delete_item(
        &self,
        address: &str,
        item_id: &str,
    ) -> impl Future<Output = Result<Option<MailboxItem>, StateError>> + Send;
    /// Records a message; the existing record if there already is one (nothing changed).
    fn create_message(
        &self,
        record: &MessageRecord,
    ) -> impl Future<Output = Result<Option<MessageRecord>, StateError>> + Send;
    fn message(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Option<MessageRecord>, StateError>> + Send;
    /// Replaces the record (state changes; last writer wins, which is fine: states only move
    /// forward and are rebuilt from the evidence).
    fn update_message(
        &self,
        record: &MessageRecord,
    ) -> impl Future<Output = Result<(), StateError>> + Send;
    /// Records a recipient outcome unless one exists; returns the one in force.
    fn record_recipient(
        &self,
        message_id: &str,
        outcome: &RecipientOutcome,
    ) -> impl Future<Output = Result<RecipientOutcome, StateError>> + Send;
    fn recipient(
        &self,
        message_id: &str,
        address: &str,
    ) -> impl Future<Output = Result<Option<RecipientOutcome>, StateError>> + Send;
    /// The message whose identificativo this is (correlation of what other providers send).
    fn message_by_identificativo(
        &self,
        identificativo: &str,
    ) -> impl Future<Output = Result<Option<MessageRecord>, StateError>> + Send;
    /// Records inbound mail; the existing record if there is one (nothing changed).
    fn create_inbound(
        &self,
        record: &InboundRecord,
    ) -> impl Future<Output = Result<Option<InboundRecord>, StateError>> + Send;
    fn inbound(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Option<InboundRecord>, StateError>> + Send;
    /// Records a relayed recipient unless recorded; returns the record in force. Certified
    /// recipients enter the timer index.
    fn create_relay(
        &self,
        record: &RelayRecord,
    ) -> impl Future<Output = Result<RelayRecord, StateError>> + Send;
    fn relay(
        &self,
        message_id: &str,
        recipient: &str,
    ) -> impl Future<Output = Result<Option<RelayRecord>, StateError>> + Send;
    /// Records `event` at `at` for a relayed recipient unless already recorded; `true` if
    /// recorded now. A final event (delivered, failed, 24 h notice) takes it off the timers.
    fn relay_mark(
        &self,
        message_id: &str,
        recipient: &str,
        event: RelayEvent,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StateError>> + Send;
    /// Certified relayed recipients still on the timers, relayed at or before `before`.
    fn timers_due(
        &self,
        before: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<RelayRecord>, StateError>> + Send;
    /// Records that `key` was sent to `destination` (outbound relay); `false` if it was.
    fn mark_sent(
        &self,
        key: &str,
        destination: &str,
    ) -> impl Future<Output = Result<bool, StateError>> + Send;
    /// Whether [`StateStore::mark_sent`] recorded it.
    fn was_sent(
        &self,
        key: &str,
        destination: &str,
    ) -> impl Future<Output = Result<bool, StateError>> + Send;
    /// Appends an event to the provider log; `false` if that event id was already logged.
    fn append_log(&self, event: &PecEvent)
    -> impl Future<Output = Result<bool, StateError>> + Send;
    /// The provider log of one UTC day (`YYYY-MM-DD`), in time order.
    fn log_day(&self, day: &str) -> impl Future<Output = Result<Vec<PecEvent>, StateError>> + Send;
}

/// Months a provider-log record is kept.
pub const LOG_RETENTION_MONTHS: u32 = 30;

fn norm(address: &str) -> String {
    address.trim().to_ascii_lowercase()
}

fn log_sk(event: &PecEvent) -> String {
    format!(
        "{}#{}",
        event.at.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
        event.event_id
    )
}

// ------------------------------------------------------------------------------ memory

#[derive(Default)]
struct Mem {
    tenants: HashMap<String, Tenant>,
    domains: HashMap<String, String>,
    mailboxes: HashMap<String, Mailbox>,
    items: HashMap<String, BTreeMap<String, MailboxItem>>,
    messages: HashMap<String, MessageRecord>,
    recipients: HashMap<(String, String), RecipientOutcome>,
    log: BTreeMap<(String, String), PecEvent>,
    inbound: HashMap<String, InboundRecord>,
    relays: BTreeMap<(String, String), RelayRecord>,
    sent: std::collections::HashSet<(String, String)>,
}

/// [`StateStore`] in memory, with the same conditional semantics (unit tests). Clones share
/// the same state.
#[derive(Default, Clone)]
pub struct MemoryState {
    inner: std::sync::Arc<Mutex<Mem>>,
}

impl MemoryState {
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut Mem) -> T) -> T {
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    /// Every logged event (tests).
    pub fn all_log(&self) -> Vec<PecEvent> {
        self.with(|m| m.log.values().cloned().collect())
    }
}

impl StateStore for MemoryState {
    async fn put_tenant(&self, tenant: &Tenant) -> Result<(), StateError> {
        self.with(|m| m.tenants.insert(tenant.id.clone(), tenant.clone()));
        Ok(())
    }

    async fn put_domain(&self, domain: &str, tenant: &str) -> Result<(), StateError> {
        self.with(|m| m.domains.insert(norm(domain), tenant.to_string()));
        Ok(())
    }

    async fn domain_tenant(&self, domain: &str) -> Result<Option<String>, StateError> {
        Ok(self.with(|m| m.domains.get(&norm(domain)).cloned()))
    }

    async fn create_mailbox(&self, mailbox: &Mailbox) -> Result<bool, StateError> {
        Ok(self.with(|m| {
            let key = norm(&mailbox.address);
            if m.mailboxes.contains_key(&key) {
                return false;
            }
            m.mailboxes.insert(key, mailbox.clone());
            true
        }))
    }

    async fn mailbox(&self, address: &str) -> Result<Option<Mailbox>, StateError> {
        Ok(self.with(|m| m.mailboxes.get(&norm(address)).cloned()))
    }

    async fn mailbox_items(&self, address: &str) -> Result<Vec<MailboxItem>, StateError> {
        Ok(self.with(|m| {
            let mut v: Vec<MailboxItem> = m
                .items
                .get(&norm(address))
                .map(|i| i.values().cloned().collect())
                .unwrap_or_default();
            v.sort_by(|a, b| (a.stored_at, &a.id).cmp(&(b.stored_at, &b.id)));
            v
        }))
    }

    async fn store_in_mailbox(
        &self,
        address: &str,
        item: &MailboxItem,
        decision: Option<(&str, &RecipientOutcome)>,
        enforce_quota: bool,
    ) -> Result<MailboxWrite, StateError> {
        Ok(self.with(|m| {
            let key = norm(address);
            if let Some((id, outcome)) = decision
                && let Some(existing) = m
                    .recipients
                    .get(&(id.to_string(), norm(&outcome.recipient)))
            {
                return MailboxWrite::Decided(existing.clone());
            }
            if m.items.get(&key).is_some_and(|i| i.contains_key(&item.id)) {
                return MailboxWrite::Duplicate;
            }
            let Some(mbx) = m.mailboxes.get_mut(&key) else {
                return MailboxWrite::NoMailbox;
            };
            if enforce_quota
                && !pec_core::plan::envelope_fits(mbx.used_bytes, item.size, mbx.quota_bytes)
            {
                return MailboxWrite::Full {
                    used: mbx.used_bytes,
                    quota: mbx.quota_bytes,
                };
            }
            mbx.used_bytes += item.size;
            m.items
                .entry(key)
                .or_default()
                .insert(item.id.clone(), item.clone());
            if let Some((id, outcome)) = decision {
                m.recipients
                    .insert((id.to_string(), norm(&outcome.recipient)), outcome.clone());
            }
            MailboxWrite::Stored
        }))
    }

    async fn delete_item(
        &self,
        address: &str,
        item_id: &str,
    ) -> Result<Option<MailboxItem>, StateError> {
        Ok(self.with(|m| {
            let key = norm(address);
            let removed = m.items.get_mut(&key)?.remove(item_id)?;
            if let Some(mbx) = m.mailboxes.get_mut(&key) {
                mbx.used_bytes = mbx.used_bytes.saturating_sub(removed.size);
            }
            Some(removed)
        }))
    }

    async fn create_message(
        &self,
        record: &MessageRecord,
    ) -> Result<Option<MessageRecord>, StateError> {
        Ok(self.with(|m| {
            if let Some(existing) = m.messages.get(&record.id) {
                return Some(existing.clone());
            }
            m.messages.insert(record.id.clone(), record.clone());
            None
        }))
    }

    async fn message(&self, id: &str) -> Result<Option<MessageRecord>, StateError> {
        Ok(self.with(|m| m.messages.get(id).cloned()))
    }

    async fn update_message(&self, record: &MessageRecord) -> Result<(), StateError> {
        self.with(|m| m.messages.insert(record.id.clone(), record.clone()));
        Ok(())
    }

    async fn record_recipient(
        &self,
        message_id: &str,
        outcome: &RecipientOutcome,
    ) -> Result<RecipientOutcome, StateError> {
        Ok(self.with(|m| {
            m.recipients
                .entry((message_id.to_string(), norm(&outcome.recipient)))
                .or_insert_with(|| outcome.clone())
                .clone()
        }))
    }

    async fn recipient(
        &self,
        message_id: &str,
        address: &str,
    ) -> Result<Option<RecipientOutcome>, StateError> {
        Ok(self.with(|m| {
            m.recipients
                .get(&(message_id.to_string(), norm(address)))
                .cloned()
        }))
    }

    async fn message_by_identificativo(
        &self,
        identificativo: &str,
    ) -> Result<Option<MessageRecord>, StateError> {
        Ok(self.with(|m| {
            m.messages
                .values()
                .find(|r| r.identificativo == identificativo)
                .cloned()
        }))
    }

    async fn create_inbound(
        &self,
        record: &InboundRecord,
    ) -> Result<Option<InboundRecord>, StateError> {
        Ok(self.with(|m| {
            if let Some(existing) = m.inbound.get(&record.id) {
                return Some(existing.clone());
            }
            m.inbound.insert(record.id.clone(), record.clone());
            None
        }))
    }

    async fn inbound(&self, id: &str) -> Result<Option<InboundRecord>, StateError> {
        Ok(self.with(|m| m.inbound.get(id).cloned()))
    }

    async fn create_relay(&self, record: &RelayRecord) -> Result<RelayRecord, StateError> {
        Ok(self.with(|m| {
            m.relays
                .entry((record.message.clone(), norm(&record.recipient)))
                .or_insert_with(|| record.clone())
                .clone()
        }))
    }

    async fn relay(
        &self,
        message_id: &str,
        recipient: &str,
    ) -> Result<Option<RelayRecord>, StateError> {
        Ok(self.with(|m| {
            m.relays
                .get(&(message_id.to_string(), norm(recipient)))
                .cloned()
        }))
    }

    async fn relay_mark(
        &self,
        message_id: &str,
        recipient: &str,
        event: RelayEvent,
        at: DateTime<Utc>,
    ) -> Result<bool, StateError> {
        Ok(self.with(|m| {
            let Some(r) = m.relays.get_mut(&(message_id.to_string(), norm(recipient))) else {
                return false;
            };
            let slot = match event {
                RelayEvent::TakenInCharge => &mut r.taken_at,
                RelayEvent::Delivered => &mut r.delivered_at,
                RelayEvent::Failed => &mut r.failed_at,
                RelayEvent::Notice12 => &mut r.notice12_at,
                RelayEvent::Notice24 => &mut r.notice24_at,
            };
            if slot.is_some() {
                return false;
            }
            *slot = Some(at);
            true
        }))
    }

    async fn timers_due(&self, before: DateTime<Utc>) -> Result<Vec<RelayRecord>, StateError> {
        Ok(self.with(|m| {
            m.relays
                .values()
                .filter(|r| {
                    r.certified
                        && r.relayed_at <= before
                        && r.delivered_at.is_none()
                        && r.failed_at.is_none()
                        && r.notice24_at.is_none()
                })
                .cloned()
                .collect()
        }))
    }

    async fn mark_sent(&self, key: &str, destination: &str) -> Result<bool, StateError> {
        Ok(self.with(|m| m.sent.insert((key.to_string(), norm(destination)))))
    }

    async fn was_sent(&self, key: &str, destination: &str) -> Result<bool, StateError> {
        Ok(self.with(|m| m.sent.contains(&(key.to_string(), norm(destination)))))
    }

    async fn append_log(&self, event: &PecEvent) -> Result<bool, StateError> {
        Ok(self.with(|m| {
            let key = (event.at.format("%Y-%m-%d").to_string(), log_sk(event));
            if m.log.values().any(|e| e.event_id == event.event_id) {
                return false;
            }
            m.log.insert(key, event.clone());
            true
        }))
    }

    async fn log_day(&self, day: &str) -> Result<Vec<PecEvent>, StateError> {
        Ok(self.with(|m| {
            m.log
                .iter()
                .filter(|((d, _), _)| d == day)
                .map(|(_, e)| e.clone())
                .collect()
        }))
    }
}

// ------------------------------------------------------------------------------ DynamoDB

/// [`StateStore`] on DynamoDB: the state table and the provider-log table.
#[derive(Clone, Debug)]
pub struct DynamoState {
    client: aws_sdk_dynamodb::Client,
    table: String,
    log_table: String,
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn mbx_pk(address: &str) -> String {
    format!("MBX#{}", norm(address))
}

fn to_doc<T: Serialize>(v: &T) -> AttributeValue {
    s(serde_json::to_string(v).unwrap_or_default())
}

type Item = HashMap<String, AttributeValue>;

impl DynamoState {
    /// Over `table` (state) and `log_table` (provider log).
    pub fn new(client: aws_sdk_dynamodb::Client, table: &str, log_table: &str) -> Self {
        Self {
            client,
            table: table.to_string(),
            log_table: log_table.to_string(),
        }
    }

    fn err(&self, operation: &'static str, e: impl std::error::Error) -> StateError {
        StateError {
            operation,
            table: self.table.clone(),
            message: aws_error_chain(&e),
        }
    }

    fn corrupt(&self, what: &str, e: impl std::fmt::Display) -> StateError {
        StateError {
            operation: "decode",
            table: self.table.clone(),
            message: format!("{what}: {e}"),
        }
    }

    fn decode_doc<T: for<'de> Deserialize<'de>>(&self, item: &Item) -> Result<T, StateError> {
        let doc = item
            .get("doc")
            .and_then(|v| v.as_s().ok())
            .ok_or_else(|| self.corrupt("item", "no doc attribute"))?;
        serde_json::from_str(doc).map_err(|e| self.corrupt("doc", e))
    }

    fn num(item: &Item, name: &str) -> u64 {
        item.get(name)
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    async fn get(&self, pk: &str, sk: &str) -> Result<Option<Item>, StateError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .key("sk", s(sk))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.err("GetItem", e))?;
        Ok(out.item)
    }

    async fn put(&self, item: Item, only_if_new: bool) -> Result<bool, StateError> {
        let mut req = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item));
        if only_if_new {
            req = req.condition_expression("attribute_not_exists(pk)");
        }
        match req.send().await {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(self.err("PutItem", e)),
        }
    }

    async fn query_prefix(&self, pk: &str, sk_prefix: &str) -> Result<Vec<Item>, StateError> {
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND begins_with(sk, :p)")
                .expression_attribute_values(":pk", s(pk))
                .expression_attribute_values(":p", s(sk_prefix))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| self.err("Query", e))?;
            items.extend(out.items.unwrap_or_default());
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        Ok(items)
    }

    fn mailbox_from(&self, item: &Item) -> Result<Mailbox, StateError> {
        let mut m: Mailbox = self.decode_doc(item)?;
        m.used_bytes = Self::num(item, "used_bytes");
        m.quota_bytes = Self::num(item, "quota_bytes");
        Ok(m)
    }

    fn relay_from(&self, item: &Item) -> Result<RelayRecord, StateError> {
        let mut r: RelayRecord = self.decode_doc(item)?;
        let at = |name: &str| {
            item.get(name)
                .and_then(|v| v.as_s().ok())
                .and_then(|v| DateTime::parse_from_rfc3339(v).ok())
                .map(|t| t.with_timezone(&Utc))
        };
        r.taken_at = at("taken_at");
        r.delivered_at = at("delivered_at");
        r.failed_at = at("failed_at");
        r.notice12_at = at("notice12_at");
        r.notice24_at = at("notice24_at");
        Ok(r)
    }

    fn recipient_item(message_id: &str, outcome: &RecipientOutcome) -> Item {
        HashMap::from([
            ("pk".into(), s(format!("MSG#{message_id}"))),
            ("sk".into(), s(format!("RCPT#{}", norm(&outcome.recipient)))),
            ("doc".into(), to_doc(outcome)),
        ])
    }

    fn cancellation(reasons: &[CancellationReason], index: usize) -> bool {
        reasons
            .get(index)
            .and_then(|r| r.code())
            .is_some_and(|c| c == "ConditionalCheckFailed")
    }
}

impl StateStore for DynamoState {
    async fn put_tenant(&self, tenant: &Tenant) -> Result<(), StateError> {
        let item = HashMap::from([
            ("pk".into(), s(format!("TENANT#{}", tenant.id))),
            ("sk".into(), s("TENANT")),
            ("doc".into(), to_doc(tenant)),
        ]);
        self.put(item, false).await.map(drop)
    }

    async fn put_domain(&self, domain: &str, tenant: &str) -> Result<(), StateError> {
        let item = HashMap::from([
            ("pk".into(), s(format!("DOMAIN#{}", norm(domain)))),
            ("sk".into(), s("DOMAIN")),
            ("gsi1pk".into(), s(format!("TENANT#{tenant}"))),
            ("gsi1sk".into(), s(format!("DOMAIN#{}", norm(domain)))),
            ("tenant".into(), s(tenant)),
            ("doc".into(), s("{}")),
        ]);
        self.put(item, false).await.map(drop)
    }

    async fn domain_tenant(&self, domain: &str) -> Result<Option<String>, StateError> {
        let item = self
            .get(&format!("DOMAIN#{}", norm(domain)), "DOMAIN")
            .await?;
        Ok(item.and_then(|i| i.get("tenant").and_then(|v| v.as_s().ok()).cloned()))
    }

    async fn create_mailbox(&self, mailbox: &Mailbox) -> Result<bool, StateError> {
        let item = HashMap::from([
            ("pk".into(), s(mbx_pk(&mailbox.address))),
            ("sk".into(), s("MBX")),
            ("gsi1pk".into(), s(format!("TENANT#{}", mailbox.tenant))),
            ("gsi1sk".into(), s(mbx_pk(&mailbox.address))),
            ("used_bytes".into(), n(mailbox.used_bytes)),
            ("quota_bytes".into(), n(mailbox.quota_bytes)),
            ("doc".into(), to_doc(mailbox)),
        ]);
        self.put(item, true).await
    }

    async fn mailbox(&self, address: &str) -> Result<Option<Mailbox>, StateError> {
        match self.get(&mbx_pk(address), "MBX").await? {
            Some(item) => self.mailbox_from(&item).map(Some),
            None => Ok(None),
        }
    }

    async fn mailbox_items(&self, address: &str) -> Result<Vec<MailboxItem>, StateError> {
        let mut v = Vec::new();
        for item in self.query_prefix(&mbx_pk(address), "ITEM#").await? {
            v.push(self.decode_doc::<MailboxItem>(&item)?);
        }
        v.sort_by(|a, b| (a.stored_at, &a.id).cmp(&(b.stored_at, &b.id)));
        Ok(v)
    }

    async fn store_in_mailbox(
        &self,
        address: &str,
        item: &MailboxItem,
        decision: Option<(&str, &RecipientOutcome)>,
        enforce_quota: bool,
    ) -> Result<MailboxWrite, StateError> {
        let pk = mbx_pk(address);
        // Two attempts: a concurrent plan change between the read and the write is re-read.
        for _ in 0..2 {
            let Some(mbx) = self.mailbox(address).await? else {
                if let Some((id, outcome)) = decision
                    && let Some(existing) = self.recipient(id, &outcome.recipient).await?
                {
                    return Ok(MailboxWrite::Decided(existing));
                }
                return Ok(MailboxWrite::NoMailbox);
            };
            let mut ops = Vec::new();
            let decision_index = decision.map(|(id, outcome)| {
                ops.push(
                    TransactWriteItem::builder()
                        .put(
                            Put::builder()
                                .table_name(&self.table)
                                .set_item(Some(Self::recipient_item(id, outcome)))
                                .condition_expression("attribute_not_exists(pk)")
                                .build()
                                .expect("table, item set"),
                        )
                        .build(),
                );
                ops.len() - 1
            });
            let item_doc = HashMap::from([
                ("pk".into(), s(&pk)),
                ("sk".into(), s(format!("ITEM#{}", item.id))),
                ("size".into(), n(item.size)),
                ("doc".into(), to_doc(item)),
            ]);
            ops.push(
                TransactWriteItem::builder()
                    .put(
                        Put::builder()
                            .table_name(&self.table)
                            .set_item(Some(item_doc))
                            .condition_expression("attribute_not_exists(pk)")
                            .build()
                            .expect("table, item set"),
                    )
                    .build(),
            );
            let item_index = ops.len() - 1;
            let mut update = Update::builder()
                .table_name(&self.table)
                .key("pk", s(&pk))
                .key("sk", s("MBX"))
                .update_expression("ADD used_bytes :size")
                .expression_attribute_values(":size", n(item.size))
                .expression_attribute_values(":quota", n(mbx.quota_bytes));
            if enforce_quota {
                if item.size > mbx.quota_bytes {
                    return Ok(MailboxWrite::Full {
                        used: mbx.used_bytes,
                        quota: mbx.quota_bytes,
                    });
                }
                update = update
                    .condition_expression("quota_bytes = :quota AND used_bytes <= :limit")
                    .expression_attribute_values(":limit", n(mbx.quota_bytes - item.size));
            } else {
                update =
                    update.condition_expression("attribute_exists(pk) AND quota_bytes = :quota");
            }
            ops.push(
                TransactWriteItem::builder()
                    .update(update.build().expect("table, key, expression set"))
                    .build(),
            );
            let mbx_index = ops.len() - 1;
            let result = self
                .client
                .transact_write_items()
                .set_transact_items(Some(ops))
                .send()
                .await;
            let err = match result {
                Ok(_) => return Ok(MailboxWrite::Stored),
                Err(e) => e,
            };
            let Some(reasons) = err
                .as_service_error()
                .and_then(|s| match s {
                    aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(t) => {
                        Some(t.cancellation_reasons().to_vec())
                    }
                    _ => None,
                })
            else {
                return Err(self.err("TransactWriteItems", err));
            };
            if let (Some(i), Some((id, outcome))) = (decision_index, decision)
                && Self::cancellation(&reasons, i)
            {
                let existing = self.recipient(id, &outcome.recipient).await?;
                return existing.map(MailboxWrite::Decided).ok_or_else(|| {
                    self.corrupt("recipient outcome", "condition failed but no item")
                });
            }
            if Self::cancellation(&reasons, item_index) {
                return Ok(MailboxWrite::Duplicate);
            }
            if Self::cancellation(&reasons, mbx_index) {
                let now = self.mailbox(address).await?;
                match now {
                    None => return Ok(MailboxWrite::NoMailbox),
                    Some(m) if m.quota_bytes != mbx.quota_bytes => continue,
                    Some(m) => {
                        if enforce_quota
                            && !pec_core::plan::envelope_fits(
                                m.used_bytes,
                                item.size,
                                m.quota_bytes,
                            )
                        {
                            return Ok(MailboxWrite::Full {
                                used: m.used_bytes,
                                quota: m.quota_bytes,
                            });
                        }
                        continue;
                    }
                }
            }
            return Err(self.err("TransactWriteItems", err));
        }
        Err(StateError {
            operation: "TransactWriteItems",
            table: self.table.clone(),
            message: format!("the mailbox {address} kept changing during the delivery; retry"),
        })
    }

    async fn delete_item(
        &self,
        address: &str,
        item_id: &str,
    ) -> Result<Option<MailboxItem>, StateError> {
        let pk = mbx_pk(address);
        let Some(raw) = self.get(&pk, &format!("ITEM#{item_id}")).await? else {
            return Ok(None);
        };
        let item: MailboxItem = self.decode_doc(&raw)?;
        let ops = vec![
            TransactWriteItem::builder()
                .delete(
                    aws_sdk_dynamodb::types::Delete::builder()
                        .table_name(&self.table)
                        .key("pk", s(&pk))
                        .key("sk", s(format!("ITEM#{item_id}")))
                        .condition_expression("attribute_exists(pk)")
                        .build()
                        .expect("table, key set"),
                )
                .build(),
            TransactWriteItem::builder()
                .update(
                    Update::builder()
                        .table_name(&self.table)
                        .key("pk", s(&pk))
                        .key("sk", s("MBX"))
                        .update_expression("ADD used_bytes :minus")
                        .expression_attribute_values(
                            ":minus",
                            AttributeValue::N(format!("-{}", item.size)),
                        )
                        .condition_expression("attribute_exists(pk)")
                        .build()
                        .expect("table, key, expression set"),
                )
                .build(),
        ];
        match self
            .client
            .transact_write_items()
            .set_transact_items(Some(ops))
            .send()
            .await
        {
            Ok(_) => Ok(Some(item)),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_transaction_canceled_exception()) =>
            {
                Ok(None)
            }
            Err(e) => Err(self.err("TransactWriteItems", e)),
        }
    }

    async fn create_message(
        &self,
        record: &MessageRecord,
    ) -> Result<Option<MessageRecord>, StateError> {
        if self.put(message_item(record), true).await? {
            return Ok(None);
        }
        self.message(&record.id).await
    }

    async fn message(&self, id: &str) -> Result<Option<MessageRecord>, StateError> {
        match self.get(&format!("MSG#{id}"), "MSG").await? {
            Some(item) => self.decode_doc(&item).map(Some),
            None => Ok(None),
        }
    }

    async fn update_message(&self, record: &MessageRecord) -> Result<(), StateError> {
        self.put(message_item(record), false).await.map(drop)
    }

    async fn record_recipient(
        &self,
        message_id: &str,
        outcome: &RecipientOutcome,
    ) -> Result<RecipientOutcome, StateError> {
        if self
            .put(Self::recipient_item(message_id, outcome), true)
            .await?
        {
            return Ok(outcome.clone());
        }
        self.recipient(message_id, &outcome.recipient)
            .await?
            .ok_or_else(|| self.corrupt("recipient outcome", "condition failed but no item"))
    }

    async fn recipient(
        &self,
        message_id: &str,
        address: &str,
    ) -> Result<Option<RecipientOutcome>, StateError> {
        match self
            .get(
                &format!("MSG#{message_id}"),
                &format!("RCPT#{}", norm(address)),
            )
            .await?
        {
            Some(item) => self.decode_doc(&item).map(Some),
            None => Ok(None),
        }
    }

    async fn message_by_identificativo(
        &self,
        identificativo: &str,
    ) -> Result<Option<MessageRecord>, StateError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .index_name("gsi1")
            .key_condition_expression("gsi1pk = :pk")
            .expression_attribute_values(":pk", s(format!("ID#{identificativo}")))
            .send()
            .await
            .map_err(|e| self.err("Query", e))?;
        match out.items().first() {
            Some(item) => self.decode_doc(item).map(Some),
            None => Ok(None),
        }
    }

    async fn create_inbound(
        &self,
        record: &InboundRecord,
    ) -> Result<Option<InboundRecord>, StateError> {
        let item = HashMap::from([
            ("pk".into(), s(format!("IN#{}", record.id))),
            ("sk".into(), s("IN")),
            ("doc".into(), to_doc(record)),
        ]);
        if self.put(item, true).await? {
            return Ok(None);
        }
        self.inbound(&record.id).await
    }

    async fn inbound(&self, id: &str) -> Result<Option<InboundRecord>, StateError> {
        match self.get(&format!("IN#{id}"), "IN").await? {
            Some(item) => self.decode_doc(&item).map(Some),
            None => Ok(None),
        }
    }

    async fn create_relay(&self, record: &RelayRecord) -> Result<RelayRecord, StateError> {
        let mut item = HashMap::from([
            ("pk".into(), s(format!("MSG#{}", record.message))),
            ("sk".into(), s(format!("RELAY#{}", norm(&record.recipient)))),
            ("doc".into(), to_doc(record)),
        ]);
        if record.certified {
            item.insert("gsi1pk".into(), s("TIMER"));
            item.insert(
                "gsi1sk".into(),
                s(format!(
                    "{}#{}#{}",
                    record.relayed_at.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
                    record.message,
                    norm(&record.recipient)
                )),
            );
        }
        if self.put(item, true).await? {
            return Ok(record.clone());
        }
        self.relay(&record.message, &record.recipient)
            .await?
            .ok_or_else(|| self.corrupt("relay record", "condition failed but no item"))
    }

    async fn relay(
        &self,
        message_id: &str,
        recipient: &str,
    ) -> Result<Option<RelayRecord>, StateError> {
        match self
            .get(
                &format!("MSG#{message_id}"),
                &format!("RELAY#{}", norm(recipient)),
            )
            .await?
        {
            Some(item) => self.relay_from(&item).map(Some),
            None => Ok(None),
        }
    }

    async fn relay_mark(
        &self,
        message_id: &str,
        recipient: &str,
        event: RelayEvent,
        at: DateTime<Utc>,
    ) -> Result<bool, StateError> {
        let attr = event.attribute();
        let mut expression = format!("SET {attr} = :at");
        if event.is_final() {
            expression.push_str(" REMOVE gsi1pk, gsi1sk");
        }
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(format!("MSG#{message_id}")))
            .key("sk", s(format!("RELAY#{}", norm(recipient))))
            .update_expression(expression)
            .condition_expression(format!(
                "attribute_exists(pk) AND attribute_not_exists({attr})"
            ))
            .expression_attribute_values(":at", s(at.to_rfc3339()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(self.err("UpdateItem", e)),
        }
    }

    async fn timers_due(&self, before: DateTime<Utc>) -> Result<Vec<RelayRecord>, StateError> {
        let mut records = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .index_name("gsi1")
                .key_condition_expression("gsi1pk = :pk AND gsi1sk <= :before")
                .expression_attribute_values(":pk", s("TIMER"))
                .expression_attribute_values(
                    ":before",
                    s(format!("{}#~", before.format("%Y-%m-%dT%H:%M:%S%.3fZ"))),
                )
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| self.err("Query", e))?;
            for item in out.items() {
                // The index is eventually consistent: read the item itself.
                let (Some(pk), Some(sk)) = (
                    item.get("pk").and_then(|v| v.as_s().ok()),
                    item.get("sk").and_then(|v| v.as_s().ok()),
                ) else {
                    continue;
                };
                if let Some(fresh) = self.get(pk, sk).await? {
                    let r = self.relay_from(&fresh)?;
                    if r.delivered_at.is_none() && r.failed_at.is_none() && r.notice24_at.is_none()
                    {
                        records.push(r);
                    }
                }
            }
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        Ok(records)
    }

    async fn mark_sent(&self, key: &str, destination: &str) -> Result<bool, StateError> {
        let item = HashMap::from([
            ("pk".into(), s(format!("SENT#{key}"))),
            ("sk".into(), s(norm(destination))),
            ("doc".into(), s("{}")),
        ]);
        self.put(item, true).await
    }

    async fn was_sent(&self, key: &str, destination: &str) -> Result<bool, StateError> {
        Ok(self
            .get(&format!("SENT#{key}"), &norm(destination))
            .await?
            .is_some())
    }

    async fn append_log(&self, event: &PecEvent) -> Result<bool, StateError> {
        let expires = event
            .at
            .checked_add_months(Months::new(LOG_RETENTION_MONTHS))
            .unwrap_or(event.at)
            .timestamp()
            .max(0) as u64;
        // The event id is the idempotency key: a guard item makes a second append (even at a
        // different observed time) a no-op, atomically with the record.
        let guard = HashMap::from([
            ("pk".into(), s(format!("EVENT#{}", event.event_id))),
            ("sk".into(), s("EVENT")),
            ("expires_at".into(), n(expires)),
        ]);
        let record = HashMap::from([
            (
                "pk".into(),
                s(format!("DAY#{}", event.at.format("%Y-%m-%d"))),
            ),
            ("sk".into(), s(log_sk(event))),
            ("type".into(), s(event.event_type.detail_type())),
            ("identificativo".into(), s(&event.identificativo)),
            ("expires_at".into(), n(expires)),
            ("doc".into(), to_doc(event)),
        ]);
        let put = |item: Item| {
            TransactWriteItem::builder()
                .put(
                    Put::builder()
                        .table_name(&self.log_table)
                        .set_item(Some(item))
                        .condition_expression("attribute_not_exists(pk)")
                        .build()
                        .expect("table, item set"),
                )
                .build()
        };
        match self
            .client
            .transact_write_items()
            .transact_items(put(guard))
            .transact_items(put(record))
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_transaction_canceled_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(StateError {
                operation: "TransactWriteItems",
                table: self.log_table.clone(),
                message: aws_error_chain(&e),
            }),
        }
    }

    async fn log_day(&self, day: &str) -> Result<Vec<PecEvent>, StateError> {
        let mut events = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.log_table)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", s(format!("DAY#{day}")))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| StateError {
                    operation: "Query",
                    table: self.log_table.clone(),
                    message: aws_error_chain(&e),
                })?;
            for item in out.items() {
                events.push(self.decode_doc(item)?);
            }
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        Ok(events)
    }
}

fn message_item(record: &MessageRecord) -> Item {
    HashMap::from([
        ("pk".into(), s(format!("MSG#{}", record.id))),
        ("sk".into(), s("MSG")),
        ("gsi1pk".into(), s(format!("ID#{}", record.identificativo))),
        ("gsi1sk".into(), s("MSG")),
        ("state".into(), s(&record.state)),
        ("doc".into(), to_doc(record)),
    ])
}
