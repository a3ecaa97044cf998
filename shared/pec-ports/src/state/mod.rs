//! The state table (tenants, domains, mailboxes, messages, per-recipient outcomes) and the
//! provider log, behind [`StateStore`]: DynamoDB in AWS and on DynamoDB Local
//! (`pec_aws::DynamoState`), memory in unit tests ([`MemoryState`]). Both pass the same
//! conformance suite. The item layout and access patterns are in docs/data-model.md.
//!
//! Every write a step depends on for idempotency is conditional; the store reports what was
//! already there instead of failing, so a step that sees a duplicate re-applies the decision in
//! force and produces nothing new.

#[cfg(feature = "conformance")]
pub mod conformance;
mod memory;
mod records;

use std::future::Future;

use chrono::{DateTime, Utc};
use pec_core::events::PecEvent;

pub use crate::breach::PasswordFinding;
pub use crate::sms::SmsWindow;
pub use crate::spam::SpamDetection;

pub use memory::MemoryState;
pub use records::*;

/// The state operations the steps, the gateway and the `pec` command need.
pub trait StateStore: Send + Sync {
    /// Creates or replaces a tenant.
    fn put_tenant(&self, tenant: &Tenant) -> impl Future<Output = Result<(), StateError>> + Send;
    /// A tenant's record.
    fn tenant(&self, id: &str) -> impl Future<Output = Result<Option<Tenant>, StateError>> + Send;
    /// Records a change to a claimed domain (its DNS records, a verification): written only
    /// while the domain is still recorded for `record.tenant`; `false`, changing nothing, when
    /// it was removed meanwhile or is another tenant's (a removal is never undone by a
    /// verification that read the record before it). [`StateStore::claim_domain`] adds one.
    fn update_domain(
        &self,
        record: &DomainRecord,
    ) -> impl Future<Output = Result<bool, StateError>> + Send;
    /// Records a domain unless it is recorded: `None` if recorded now, else the record in force
    /// (whichever tenant holds it; nothing changed).
    fn claim_domain(
        &self,
        record: &DomainRecord,
    ) -> impl Future<Output = Result<Option<DomainRecord>, StateError>> + Send;
    /// A domain's record.
    fn domain(
        &self,
        domain: &str,
    ) -> impl Future<Output = Result<Option<DomainRecord>, StateError>> + Send;
    /// Every domain recorded, by name.
    fn domains(&self) -> impl Future<Output = Result<Vec<DomainRecord>, StateError>> + Send;
    /// Deletes a domain's record if `tenant` holds it; `false` if not (nothing changed).
    fn remove_domain(
        &self,
        domain: &str,
        tenant: &str,
    ) -> impl Future<Output = Result<bool, StateError>> + Send;
    /// Records a member unless recorded (tenant + fiscal code): `None` if recorded now, else the
    /// record in force (nothing changed).
    fn claim_member(
        &self,
        member: &MemberRecord,
    ) -> impl Future<Output = Result<Option<MemberRecord>, StateError>> + Send;
    /// A member's record.
    fn member(
        &self,
        tenant: &str,
        fiscal_code: &str,
    ) -> impl Future<Output = Result<Option<MemberRecord>, StateError>> + Send;
    /// Replaces a member's record (its address or status moved on).
    fn put_member(
        &self,
        member: &MemberRecord,
    ) -> impl Future<Output = Result<(), StateError>> + Send;
    /// Stores an activation link's record (kept until it expires).
    fn put_activation(
        &self,
        record: &ActivationRecord,
    ) -> impl Future<Output = Result<(), StateError>> + Send;
    /// Takes (deletes and returns) an activation record, once: `None` if unknown, already
    /// used or expired at `now`.
    fn take_activation(
        &self,
        token_hash: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<ActivationRecord>, StateError>> + Send;
    /// Every mailbox of a tenant, by address.
    fn tenant_mailboxes(
        &self,
        tenant: &str,
    ) -> impl Future<Output = Result<Vec<Mailbox>, StateError>> + Send;
    /// The tenant of a domain we serve: one recorded and verified (a domain still pending is
    /// not ours yet: its MX may still point elsewhere).
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
    /// Replaces a mailbox's record (plan, quota, lifecycle) with `new` if it is still `expected`
    /// (compared without the usage, which deliveries move), and with `max_used` only while the
    /// usage is at most that many bytes. The usage itself is kept. `false` if a condition
    /// failed (nothing changed): the caller reads again and decides again.
    fn replace_mailbox(
        &self,
        expected: &Mailbox,
        new: &Mailbox,
        max_used: Option<u64>,
    ) -> impl Future<Output = Result<bool, StateError>> + Send;
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
    /// `destination` is compared without case. The deliver step marks each recipient address
    /// it is done with (taken, or refused for good); records written before that name a domain
    /// (`SENT#<key>` / `<domain>`), meaning every recipient of that domain.
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
    /// Records an outbound spam detection unless recorded (same mailbox, time and message);
    /// `true` if recorded now. Kept [`SPAM_DETECTION_DAYS`] (TTL).
    fn record_spam(
        &self,
        detection: &SpamDetection,
    ) -> impl Future<Output = Result<bool, StateError>> + Send;
    /// A mailbox's detections at or after `since`, oldest first.
    fn spam_detections(
        &self,
        mailbox: &str,
        since: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<SpamDetection>, StateError>> + Send;
    /// The mailboxes with a detection in `[since, until]` (each once, sorted): what the lockout
    /// sweep looks at.
    fn spam_senders(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<String>, StateError>> + Send;
    /// Records a refused breached password unless recorded (same mailbox, time and setting);
    /// `true` if recorded now. Kept [`crate::breach::FINDING_DAYS`] (TTL).
    fn record_password_finding(
        &self,
        finding: &PasswordFinding,
    ) -> impl Future<Output = Result<bool, StateError>> + Send;
    /// The findings in `(since, until]`, by mailbox then time: what the monthly report lists.
    fn password_findings(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<PasswordFinding>, StateError>> + Send;
    /// A mailbox's SMS rate window, if it has one.
    fn sms_window(
        &self,
        mailbox: &str,
    ) -> impl Future<Output = Result<Option<SmsWindow>, StateError>> + Send;
    /// Replaces a mailbox's SMS window with `new` if it is still `expected` (`None`: there is
    /// none yet); `false` if it changed (nothing written: read again and decide again).
    fn replace_sms_window(
        &self,
        mailbox: &str,
        expected: Option<&SmsWindow>,
        new: &SmsWindow,
    ) -> impl Future<Output = Result<bool, StateError>> + Send;
}

/// Days an outbound spam detection is kept (far beyond any lockout window).
pub const SPAM_DETECTION_DAYS: i64 = 2;

/// Months a provider-log record is kept.
pub const LOG_RETENTION_MONTHS: u32 = 30;

/// An address or domain as the store keys it (trimmed, lower-case).
pub fn norm(address: &str) -> String {
    address.trim().to_ascii_lowercase()
}

/// The provider-log sort key of an event: its time (UTC, ms) then its id.
pub fn log_sk(event: &PecEvent) -> String {
    format!(
        "{}#{}",
        event.at.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
        event.event_id
    )
}

// ------------------------------------------------------------------------------ memory
