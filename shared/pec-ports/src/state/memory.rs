//! [`StateStore`] in memory, with the same conditional semantics as DynamoDB.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use pec_core::events::PecEvent;

use super::*;

#[derive(Default)]
struct Mem {
    tenants: HashMap<String, Tenant>,
    domains: BTreeMap<String, DomainRecord>,
    members: BTreeMap<(String, String), MemberRecord>,
    activations: HashMap<String, ActivationRecord>,
    mailboxes: HashMap<String, Mailbox>,
    items: HashMap<String, BTreeMap<String, MailboxItem>>,
    messages: HashMap<String, MessageRecord>,
    recipients: HashMap<(String, String), RecipientOutcome>,
    log: BTreeMap<(String, String), PecEvent>,
    inbound: HashMap<String, InboundRecord>,
    relays: BTreeMap<(String, String), RelayRecord>,
    sent: std::collections::HashSet<(String, String)>,
    spam: BTreeMap<(String, DateTime<Utc>, String), SpamDetection>,
    sms: HashMap<String, SmsWindow>,
    findings: BTreeMap<(String, DateTime<Utc>, &'static str), PasswordFinding>,
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

    async fn tenant(&self, id: &str) -> Result<Option<Tenant>, StateError> {
        Ok(self.with(|m| m.tenants.get(id).cloned()))
    }

    async fn update_domain(&self, record: &DomainRecord) -> Result<bool, StateError> {
        Ok(
            self.with(|m| match m.domains.get_mut(&norm(&record.domain)) {
                Some(existing) if existing.tenant == record.tenant => {
                    *existing = record.clone();
                    true
                }
                _ => false,
            }),
        )
    }

    async fn claim_domain(
        &self,
        record: &DomainRecord,
    ) -> Result<Option<DomainRecord>, StateError> {
        Ok(self.with(|m| match m.domains.get(&norm(&record.domain)) {
            Some(existing) => Some(existing.clone()),
            None => {
                m.domains.insert(norm(&record.domain), record.clone());
                None
            }
        }))
    }

    async fn domain(&self, domain: &str) -> Result<Option<DomainRecord>, StateError> {
        Ok(self.with(|m| m.domains.get(&norm(domain)).cloned()))
    }

    async fn domains(&self) -> Result<Vec<DomainRecord>, StateError> {
        Ok(self.with(|m| m.domains.values().cloned().collect()))
    }

    async fn remove_domain(&self, domain: &str, tenant: &str) -> Result<bool, StateError> {
        Ok(self.with(|m| {
            let key = norm(domain);
            if m.domains.get(&key).is_some_and(|d| d.tenant == tenant) {
                m.domains.remove(&key);
                true
            } else {
                false
            }
        }))
    }

    async fn claim_member(
        &self,
        member: &MemberRecord,
    ) -> Result<Option<MemberRecord>, StateError> {
        Ok(self.with(|m| {
            let key = (member.tenant.clone(), member.fiscal_code.clone());
            match m.members.get(&key) {
                Some(existing) => Some(existing.clone()),
                None => {
                    m.members.insert(key, member.clone());
                    None
                }
            }
        }))
    }

    async fn member(
        &self,
        tenant: &str,
        fiscal_code: &str,
    ) -> Result<Option<MemberRecord>, StateError> {
        Ok(self.with(|m| {
            m.members
                .get(&(tenant.to_string(), fiscal_code.to_string()))
                .cloned()
        }))
    }

    async fn put_member(&self, member: &MemberRecord) -> Result<(), StateError> {
        self.with(|m| {
            m.members.insert(
                (member.tenant.clone(), member.fiscal_code.clone()),
                member.clone(),
            )
        });
        Ok(())
    }

    async fn put_activation(&self, record: &ActivationRecord) -> Result<(), StateError> {
        self.with(|m| {
            m.activations
                .insert(record.token_hash.clone(), record.clone())
        });
        Ok(())
    }

    async fn take_activation(
        &self,
        token_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<ActivationRecord>, StateError> {
        Ok(self.with(|m| {
            m.activations
                .remove(token_hash)
                .filter(|r| r.expires_at > now)
        }))
    }

    async fn tenant_mailboxes(&self, tenant: &str) -> Result<Vec<Mailbox>, StateError> {
        Ok(self.with(|m| {
            let mut v: Vec<Mailbox> = m
                .mailboxes
                .values()
                .filter(|b| b.tenant == tenant)
                .cloned()
                .collect();
            v.sort_by(|a, b| a.address.cmp(&b.address));
            v
        }))
    }

    async fn domain_tenant(&self, domain: &str) -> Result<Option<String>, StateError> {
        Ok(self.with(|m| {
            m.domains
                .get(&norm(domain))
                .filter(|d| d.is_verified())
                .map(|d| d.tenant.clone())
        }))
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

    async fn replace_mailbox(
        &self,
        expected: &Mailbox,
        new: &Mailbox,
        max_used: Option<u64>,
    ) -> Result<bool, StateError> {
        Ok(self.with(|m| {
            let Some(stored) = m.mailboxes.get_mut(&norm(&expected.address)) else {
                return false;
            };
            let same = Mailbox {
                used_bytes: stored.used_bytes,
                ..expected.clone()
            } == *stored;
            if !same || max_used.is_some_and(|max| stored.used_bytes > max) {
                return false;
            }
            *stored = Mailbox {
                used_bytes: stored.used_bytes,
                ..new.clone()
            };
            true
        }))
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

    async fn record_spam(&self, d: &SpamDetection) -> Result<bool, StateError> {
        let key = (norm(&d.mailbox), d.at, d.message.clone());
        Ok(self.with(|m| {
            if m.spam.contains_key(&key) {
                return false;
            }
            let mut d = d.clone();
            d.mailbox = key.0.clone();
            m.spam.insert(key, d);
            true
        }))
    }

    async fn spam_detections(
        &self,
        mailbox: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<SpamDetection>, StateError> {
        let mailbox = norm(mailbox);
        Ok(self.with(|m| {
            m.spam
                .iter()
                .filter(|((mb, at, _), _)| *mb == mailbox && *at >= since)
                .map(|(_, d)| d.clone())
                .collect()
        }))
    }

    async fn spam_senders(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<String>, StateError> {
        Ok(self.with(|m| {
            let senders: std::collections::BTreeSet<String> = m
                .spam
                .keys()
                .filter(|(_, at, _)| *at >= since && *at <= until)
                .map(|(mb, _, _)| mb.clone())
                .collect();
            senders.into_iter().collect()
        }))
    }

    async fn record_password_finding(&self, f: &PasswordFinding) -> Result<bool, StateError> {
        let key = (norm(&f.mailbox), f.at, f.setting.as_str());
        Ok(self.with(|m| {
            if m.findings.contains_key(&key) {
                return false;
            }
            let mut f = f.clone();
            f.mailbox = key.0.clone();
            m.findings.insert(key, f);
            true
        }))
    }

    async fn password_findings(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<PasswordFinding>, StateError> {
        Ok(self.with(|m| {
            m.findings
                .values()
                .filter(|f| f.at > since && f.at <= until)
                .cloned()
                .collect()
        }))
    }

    async fn sms_window(&self, mailbox: &str) -> Result<Option<SmsWindow>, StateError> {
        Ok(self.with(|m| m.sms.get(&norm(mailbox)).cloned()))
    }

    async fn replace_sms_window(
        &self,
        mailbox: &str,
        expected: Option<&SmsWindow>,
        new: &SmsWindow,
    ) -> Result<bool, StateError> {
        Ok(self.with(|m| {
            let key = norm(mailbox);
            if m.sms.get(&key) != expected {
                return false;
            }
            m.sms.insert(key, new.clone());
            true
        }))
    }
}

// ------------------------------------------------------------------------------ DynamoDB
