//! [`StateStore`] on DynamoDB: the state table and the provider-log table (item layout and
//! access patterns: docs/data-model.md). The port, the records and the memory fake are in
//! `pec_ports::state`; both stores pass the same conformance suite.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{
    AttributeValue, CancellationReason, Delete, Put, TransactWriteItem, Update,
};
use chrono::{DateTime, Months, Utc};
use pec_core::events::PecEvent;
use pec_ports::mailstore::{Flags, INBOX, Origin};
use pec_ports::state::{
    ActivationRecord, DomainRecord, DomainStatus, InboundRecord, LOG_RETENTION_MONTHS, Mailbox,
    MailboxItem, MailboxWrite, MemberRecord, MessageRecord, PasswordFinding, RecipientOutcome,
    RelayEvent, RelayRecord, SPAM_DETECTION_DAYS, SmsWindow, SpamDetection, StateError, StateStore,
    Tenant, log_sk, norm,
};
use serde::{Deserialize, Serialize};

use crate::store::aws_error_chain;

/// [`StateStore`] on DynamoDB: the state table and the provider-log table.
#[derive(Clone, Debug)]
pub struct DynamoState {
    pub(crate) client: aws_sdk_dynamodb::Client,
    pub(crate) table: String,
    log_table: String,
}

pub(crate) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub(crate) fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub(crate) fn mbx_pk(address: &str) -> String {
    format!("MBX#{}", norm(address))
}

fn msg_pk(message_id: &str) -> String {
    format!("MSG#{message_id}")
}

fn rcpt_sk(address: &str) -> String {
    format!("RCPT#{}", norm(address))
}

fn relay_sk(recipient: &str) -> String {
    format!("RELAY#{}", norm(recipient))
}

pub(crate) fn to_doc<T: Serialize>(v: &T) -> AttributeValue {
    s(serde_json::to_string(v).unwrap_or_default())
}

pub(crate) type Item = HashMap<String, AttributeValue>;

fn member_pk(tenant: &str, fiscal_code: &str) -> String {
    format!("MEMBER#{tenant}#{}", fiscal_code.to_ascii_uppercase())
}

fn member_item(member: &MemberRecord) -> Item {
    HashMap::from([
        (
            "pk".into(),
            s(member_pk(&member.tenant, &member.fiscal_code)),
        ),
        ("sk".into(), s("MEMBER")),
        ("gsi1pk".into(), s(format!("TENANT#{}", member.tenant))),
        (
            "gsi1sk".into(),
            s(format!(
                "MEMBER#{}",
                member.fiscal_code.to_ascii_uppercase()
            )),
        ),
        ("doc".into(), to_doc(member)),
    ])
}

/// The registry partition listing every domain (one item per domain, beside `DOMAIN#<domain>`).
const DOMAINS_PK: &str = "DOMAINS";

fn domain_pk(domain: &str) -> String {
    format!("DOMAIN#{}", norm(domain))
}

/// A mailbox's `doc`: the record without its usage (the `used_bytes` attribute holds that, moved
/// by every store and delete), so the document is stable and [`StateStore::replace_mailbox`]
/// can compare it whole.
fn mailbox_doc(mailbox: &Mailbox) -> AttributeValue {
    to_doc(&Mailbox {
        used_bytes: 0,
        ..mailbox.clone()
    })
}

impl DynamoState {
    /// Over `table` (state) and `log_table` (provider log).
    pub fn new(client: aws_sdk_dynamodb::Client, table: &str, log_table: &str) -> Self {
        Self {
            client,
            table: table.to_string(),
            log_table: log_table.to_string(),
        }
    }

    pub(crate) fn err(&self, operation: &'static str, e: impl std::error::Error) -> StateError {
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

    /// A domain item. One written before domains were verified (`pec tenant add --domain`,
    /// doc `{}`) reads as the verified domain of its `tenant` attribute: it stayed in force.
    fn domain_from(&self, item: &Item) -> Result<DomainRecord, StateError> {
        let legacy = item
            .get("doc")
            .and_then(|v| v.as_s().ok())
            .is_some_and(|d| d.trim() == "{}");
        if !legacy {
            return self.decode_doc(item);
        }
        let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
        let domain = text("pk")
            .and_then(|pk| pk.strip_prefix("DOMAIN#").map(str::to_string))
            .ok_or_else(|| self.corrupt("domain", "no DOMAIN# key"))?;
        let tenant = text("tenant").ok_or_else(|| self.corrupt("domain", "no tenant"))?;
        Ok(DomainRecord {
            domain,
            tenant,
            status: DomainStatus::Verified,
            dns: Vec::new(),
            dkim_status: String::new(),
            added_at: DateTime::<Utc>::UNIX_EPOCH,
            checked_at: None,
            verified_at: None,
        })
    }

    pub(crate) fn decode_doc<T: for<'de> Deserialize<'de>>(
        &self,
        item: &Item,
    ) -> Result<T, StateError> {
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

    pub(crate) async fn get(&self, pk: &str, sk: &str) -> Result<Option<Item>, StateError> {
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

    /// The item at (`pk`, `sk`), decoded by `decode`.
    async fn get_with<T>(
        &self,
        pk: &str,
        sk: &str,
        decode: fn(&Self, &Item) -> Result<T, StateError>,
    ) -> Result<Option<T>, StateError> {
        match self.get(pk, sk).await? {
            Some(item) => decode(self, &item).map(Some),
            None => Ok(None),
        }
    }

    /// Creates or replaces `item`.
    pub(crate) async fn put(&self, item: Item) -> Result<(), StateError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map(drop)
            .map_err(|e| self.err("PutItem", e))
    }

    /// Puts `item` unless an item with its key exists; `false` if one does (nothing changed).
    pub(crate) async fn put_new(&self, item: Item) -> Result<bool, StateError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
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
            Err(e) => Err(self.err("PutItem", e)),
        }
    }

    /// The put-if-absent idiom: puts `item` unless an item with its key exists. `None` if
    /// written now; else the item in force, read back (consistently) and decoded by `decode`.
    pub(crate) async fn put_new_or_existing<T>(
        &self,
        item: Item,
        decode: fn(&Self, &Item) -> Result<T, StateError>,
    ) -> Result<Option<T>, StateError> {
        let key = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
        let (Some(pk), Some(sk)) = (key("pk"), key("sk")) else {
            return Err(self.corrupt("item", "no pk or sk"));
        };
        if self.put_new(item).await? {
            return Ok(None);
        }
        self.existing(&pk, &sk, decode).await.map(Some)
    }

    /// The item whose conditional write just failed because it exists.
    async fn existing<T>(
        &self,
        pk: &str,
        sk: &str,
        decode: fn(&Self, &Item) -> Result<T, StateError>,
    ) -> Result<T, StateError> {
        self.get_with(pk, sk, decode)
            .await?
            .ok_or_else(|| self.corrupt(&format!("{pk} {sk}"), "condition failed but no item"))
    }

    pub(crate) async fn query_prefix(
        &self,
        pk: &str,
        sk_prefix: &str,
    ) -> Result<Vec<Item>, StateError> {
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let mut query = self
                .client
                .query()
                .table_name(&self.table)
                .expression_attribute_values(":pk", s(pk));
            // An empty string is not a valid key value: the whole partition then.
            query = if sk_prefix.is_empty() {
                query.key_condition_expression("pk = :pk")
            } else {
                query
                    .key_condition_expression("pk = :pk AND begins_with(sk, :p)")
                    .expression_attribute_values(":p", s(sk_prefix))
            };
            let out = query
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

    /// Every item of one gsi1 partition (the index is eventually consistent: what a caller
    /// needs exactly, it reads back from the table or decides by the document's own fields).
    async fn gsi1_partition(&self, pk: &str) -> Result<Vec<Item>, StateError> {
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .index_name("gsi1")
                .key_condition_expression("gsi1pk = :pk")
                .expression_attribute_values(":pk", s(pk))
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

    /// Writes a domain's two items (its own and the registry's) in one transaction; with
    /// `only_new`, only if neither exists (`false` if the domain is recorded: nothing changed);
    /// otherwise only if both exist for the record's tenant (`false`: removed, or another's).
    async fn write_domain(
        &self,
        record: &DomainRecord,
        only_new: bool,
    ) -> Result<bool, StateError> {
        let d = norm(&record.domain);
        let common = [
            ("tenant", s(&record.tenant)),
            ("status", s(record.status.as_str())),
            ("doc", to_doc(record)),
        ];
        let items = [
            HashMap::from([
                ("pk".to_string(), s(domain_pk(&d))),
                ("sk".to_string(), s("DOMAIN")),
                ("gsi1pk".to_string(), s(format!("TENANT#{}", record.tenant))),
                ("gsi1sk".to_string(), s(domain_pk(&d))),
            ]),
            HashMap::from([("pk".to_string(), s(DOMAINS_PK)), ("sk".to_string(), s(&d))]),
        ];
        let mut ops = Vec::new();
        for mut item in items {
            for (k, v) in &common {
                item.insert(k.to_string(), v.clone());
            }
            let put = Put::builder().table_name(&self.table).set_item(Some(item));
            let put = if only_new {
                put.condition_expression("attribute_not_exists(pk)")
            } else {
                // A change: only to the record still there for the same tenant.
                put.condition_expression("attribute_exists(pk) AND tenant = :t")
                    .expression_attribute_values(":t", s(&record.tenant))
            };
            ops.push(
                TransactWriteItem::builder()
                    .put(put.build().map_err(|e| self.err("TransactWriteItems", e))?)
                    .build(),
            );
        }
        self.transact_unless_cancelled(ops).await
    }

    /// Runs a transaction; `false` if DynamoDB cancelled it (a condition failed).
    async fn transact_unless_cancelled(
        &self,
        ops: Vec<TransactWriteItem>,
    ) -> Result<bool, StateError> {
        match self
            .client
            .transact_write_items()
            .set_transact_items(Some(ops))
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
            Err(e) => Err(self.err("TransactWriteItems", e)),
        }
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
            ("pk".into(), s(msg_pk(message_id))),
            ("sk".into(), s(rcpt_sk(&outcome.recipient))),
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
        self.put(item).await
    }

    async fn tenant(&self, id: &str) -> Result<Option<Tenant>, StateError> {
        self.get_with(&format!("TENANT#{id}"), "TENANT", Self::decode_doc)
            .await
    }

    async fn update_domain(&self, record: &DomainRecord) -> Result<bool, StateError> {
        self.write_domain(record, false).await
    }

    async fn claim_domain(
        &self,
        record: &DomainRecord,
    ) -> Result<Option<DomainRecord>, StateError> {
        if self.write_domain(record, true).await? {
            return Ok(None);
        }
        self.existing(&domain_pk(&record.domain), "DOMAIN", Self::decode_doc)
            .await
            .map(Some)
    }

    async fn domain(&self, domain: &str) -> Result<Option<DomainRecord>, StateError> {
        self.get_with(&domain_pk(domain), "DOMAIN", Self::domain_from)
            .await
    }

    async fn domains(&self) -> Result<Vec<DomainRecord>, StateError> {
        self.query_prefix(DOMAINS_PK, "")
            .await?
            .iter()
            .map(|i| self.decode_doc(i))
            .collect()
    }

    async fn remove_domain(&self, domain: &str, tenant: &str) -> Result<bool, StateError> {
        let owned = |pk: String, sk: String| -> Result<TransactWriteItem, StateError> {
            Ok(TransactWriteItem::builder()
                .delete(
                    Delete::builder()
                        .table_name(&self.table)
                        .key("pk", s(pk))
                        .key("sk", s(sk))
                        .condition_expression("tenant = :t")
                        .expression_attribute_values(":t", s(tenant))
                        .build()
                        .map_err(|e| self.err("TransactWriteItems", e))?,
                )
                .build())
        };
        let ops = vec![
            owned(domain_pk(domain), "DOMAIN".into())?,
            owned(DOMAINS_PK.into(), norm(domain))?,
        ];
        self.transact_unless_cancelled(ops).await
    }

    async fn claim_member(
        &self,
        member: &MemberRecord,
    ) -> Result<Option<MemberRecord>, StateError> {
        self.put_new_or_existing(member_item(member), Self::decode_doc)
            .await
    }

    async fn member(
        &self,
        tenant: &str,
        fiscal_code: &str,
    ) -> Result<Option<MemberRecord>, StateError> {
        self.get_with(&member_pk(tenant, fiscal_code), "MEMBER", Self::decode_doc)
            .await
    }

    async fn put_member(&self, member: &MemberRecord) -> Result<(), StateError> {
        self.put(member_item(member)).await
    }

    async fn put_activation(&self, record: &ActivationRecord) -> Result<(), StateError> {
        self.put(HashMap::from([
            ("pk".into(), s(format!("ACTIVATE#{}", record.token_hash))),
            ("sk".into(), s("ACTIVATE")),
            (
                "expires_at".into(),
                n(record.expires_at.timestamp().max(0) as u64),
            ),
            ("doc".into(), to_doc(record)),
        ]))
        .await
    }

    async fn take_activation(
        &self,
        token_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<ActivationRecord>, StateError> {
        // Deleted with the old item returned: two uses of one link cannot both get it.
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(format!("ACTIVATE#{token_hash}")))
            .key("sk", s("ACTIVATE"))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| self.err("DeleteItem", e))?;
        let Some(item) = out.attributes else {
            return Ok(None);
        };
        let record: ActivationRecord = self.decode_doc(&item)?;
        // TTL deletion is lazy (up to days): the expiry is checked here.
        Ok((record.expires_at > now).then_some(record))
    }

    async fn tenant_mailboxes(&self, tenant: &str) -> Result<Vec<Mailbox>, StateError> {
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .index_name("gsi1")
                .key_condition_expression("gsi1pk = :pk AND begins_with(gsi1sk, :p)")
                .expression_attribute_values(":pk", s(format!("TENANT#{tenant}")))
                .expression_attribute_values(":p", s("MBX#"))
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
        // The index is eventually consistent: each mailbox is read back from the table.
        let mut boxes = Vec::new();
        for item in &items {
            if let Some(address) = item
                .get("pk")
                .and_then(|v| v.as_s().ok())
                .and_then(|pk| pk.strip_prefix("MBX#"))
                && let Some(m) = self.mailbox(address).await?
                && m.tenant == tenant
            {
                boxes.push(m);
            }
        }
        boxes.sort_by(|a, b| a.address.cmp(&b.address));
        Ok(boxes)
    }

    async fn domain_tenant(&self, domain: &str) -> Result<Option<String>, StateError> {
        let item = self
            .get(&format!("DOMAIN#{}", norm(domain)), "DOMAIN")
            .await?;
        // Items without a status predate verification (operator assignments): in force.
        Ok(item
            .filter(|i| {
                i.get("status")
                    .and_then(|v| v.as_s().ok())
                    .is_none_or(|st| st == DomainStatus::Verified.as_str())
            })
            .and_then(|i| i.get("tenant").and_then(|v| v.as_s().ok()).cloned()))
    }

    async fn create_mailbox(&self, mailbox: &Mailbox) -> Result<bool, StateError> {
        let item = HashMap::from([
            ("pk".into(), s(mbx_pk(&mailbox.address))),
            ("sk".into(), s("MBX")),
            ("gsi1pk".into(), s(format!("TENANT#{}", mailbox.tenant))),
            ("gsi1sk".into(), s(mbx_pk(&mailbox.address))),
            ("used_bytes".into(), n(mailbox.used_bytes)),
            ("quota_bytes".into(), n(mailbox.quota_bytes)),
            ("doc".into(), mailbox_doc(mailbox)),
        ]);
        self.put_new(item).await
    }

    async fn replace_mailbox(
        &self,
        expected: &Mailbox,
        new: &Mailbox,
        max_used: Option<u64>,
    ) -> Result<bool, StateError> {
        let mut condition = "doc = :old".to_string();
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(mbx_pk(&expected.address)))
            .key("sk", s("MBX"))
            .update_expression("SET doc = :new, quota_bytes = :quota")
            .expression_attribute_values(":old", mailbox_doc(expected))
            .expression_attribute_values(":new", mailbox_doc(new))
            .expression_attribute_values(":quota", n(new.quota_bytes));
        if let Some(max) = max_used {
            condition.push_str(" AND used_bytes <= :max");
            request = request.expression_attribute_values(":max", n(max));
        }
        match request.condition_expression(condition).send().await {
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

    async fn mailbox(&self, address: &str) -> Result<Option<Mailbox>, StateError> {
        self.get_with(&mbx_pk(address), "MBX", Self::mailbox_from)
            .await
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
        // INBOX, or the item's folder (Junk for ordinary mail scored as spam).
        let folder = item.folder.as_deref().unwrap_or(INBOX);
        // Retried: a concurrent plan change between the read and the write is re-read, and so
        // is a concurrent write to the folder (its next UID).
        for _ in 0..crate::mailstore::ATTEMPTS {
            let inbox = crate::mailstore::read_folder(&self.client, &self.table, address, folder)
                .await
                .map_err(|message| StateError {
                    operation: "GetItem",
                    table: self.table.clone(),
                    message,
                })?;
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
                .update_expression("ADD used_bytes :size, #c :one")
                .expression_attribute_names("#c", "changes")
                .expression_attribute_values(":one", n(1))
                .expression_attribute_values(":size", n(item.size))
                .expression_attribute_values(":quota", n(mbx.quota_bytes));
            if enforce_quota {
                update = match mbx.quota_bytes.checked_sub(item.size) {
                    Some(limit) => update
                        .condition_expression("quota_bytes = :quota AND used_bytes <= :limit")
                        .expression_attribute_values(":limit", n(limit)),
                    // Larger than the whole quota: a condition that fails, so the transaction
                    // still reports a decided recipient or a duplicate item before the refusal.
                    None => update
                        .condition_expression("quota_bytes = :quota AND attribute_not_exists(pk)"),
                };
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
            // The message in its folder, with the folder's next UID (IMAP and POP3 read it there).
            let (folder_op, uid, _) =
                crate::mailstore::take_uids(&self.table, address, folder, inbox.as_ref(), 1);
            ops.push(folder_op);
            let folder_index = ops.len() - 1;
            ops.push(
                crate::mailstore::Entry {
                    folder,
                    uid,
                    size: item.size,
                    flags: &Flags::new(),
                    internal_date: item.stored_at,
                    origin: Origin::Delivered,
                    object_key: &item.object_key,
                    item_id: Some(&item.id),
                }
                .put(&self.table, address),
            );
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
                let existing = self
                    .existing(&msg_pk(id), &rcpt_sk(&outcome.recipient), Self::decode_doc)
                    .await?;
                return Ok(MailboxWrite::Decided(existing));
            }
            if Self::cancellation(&reasons, item_index) {
                return Ok(MailboxWrite::Duplicate);
            }
            if Self::cancellation(&reasons, folder_index) {
                continue;
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
        let Some(item) = self
            .get_with::<MailboxItem>(&pk, &format!("ITEM#{item_id}"), Self::decode_doc)
            .await?
        else {
            return Ok(None);
        };
        // The item's folder entries (INBOX, or wherever IMAP moved or copied it) go with it,
        // and they are what the quota counts: an item already expunged frees nothing twice.
        let entries: Vec<Item> = self
            .query_prefix(&pk, "UID#")
            .await?
            .into_iter()
            .filter(|e| e.get("item_id").and_then(|v| v.as_s().ok()) == Some(&item.id))
            .take(90)
            .collect();
        let freeing: u64 = entries.iter().map(|e| Self::num(e, "size")).sum();
        let delete = |sk: AttributeValue| {
            TransactWriteItem::builder()
                .delete(
                    aws_sdk_dynamodb::types::Delete::builder()
                        .table_name(&self.table)
                        .key("pk", s(&pk))
                        .key("sk", sk)
                        .condition_expression("attribute_exists(pk)")
                        .build()
                        .expect("table, key set"),
                )
                .build()
        };
        let mut ops = vec![
            delete(s(format!("ITEM#{item_id}"))),
            TransactWriteItem::builder()
                .update(
                    Update::builder()
                        .table_name(&self.table)
                        .key("pk", s(&pk))
                        .key("sk", s("MBX"))
                        .update_expression("ADD used_bytes :minus, #c :one")
                        .expression_attribute_names("#c", "changes")
                        .expression_attribute_values(
                            ":minus",
                            AttributeValue::N(format!("-{freeing}")),
                        )
                        .expression_attribute_values(":one", n(1))
                        .condition_expression("attribute_exists(pk)")
                        .build()
                        .expect("table, key, expression set"),
                )
                .build(),
        ];
        for e in &entries {
            if let Some(sk) = e.get("sk") {
                ops.push(delete(sk.clone()));
            }
        }
        Ok(self.transact_unless_cancelled(ops).await?.then_some(item))
    }

    async fn create_message(
        &self,
        record: &MessageRecord,
    ) -> Result<Option<MessageRecord>, StateError> {
        self.put_new_or_existing(message_item(record), Self::decode_doc)
            .await
    }

    async fn message(&self, id: &str) -> Result<Option<MessageRecord>, StateError> {
        self.get_with(&msg_pk(id), "MSG", Self::decode_doc).await
    }

    async fn update_message(&self, record: &MessageRecord) -> Result<(), StateError> {
        self.put(message_item(record)).await
    }

    async fn record_recipient(
        &self,
        message_id: &str,
        outcome: &RecipientOutcome,
    ) -> Result<RecipientOutcome, StateError> {
        let item = Self::recipient_item(message_id, outcome);
        Ok(self
            .put_new_or_existing(item, Self::decode_doc)
            .await?
            .unwrap_or_else(|| outcome.clone()))
    }

    async fn recipient(
        &self,
        message_id: &str,
        address: &str,
    ) -> Result<Option<RecipientOutcome>, StateError> {
        self.get_with(&msg_pk(message_id), &rcpt_sk(address), Self::decode_doc)
            .await
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
        self.put_new_or_existing(item, Self::decode_doc).await
    }

    async fn inbound(&self, id: &str) -> Result<Option<InboundRecord>, StateError> {
        self.get_with(&format!("IN#{id}"), "IN", Self::decode_doc)
            .await
    }

    async fn create_relay(&self, record: &RelayRecord) -> Result<RelayRecord, StateError> {
        let mut item = HashMap::from([
            ("pk".into(), s(msg_pk(&record.message))),
            ("sk".into(), s(relay_sk(&record.recipient))),
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
        Ok(self
            .put_new_or_existing(item, Self::relay_from)
            .await?
            .unwrap_or_else(|| record.clone()))
    }

    async fn relay(
        &self,
        message_id: &str,
        recipient: &str,
    ) -> Result<Option<RelayRecord>, StateError> {
        self.get_with(&msg_pk(message_id), &relay_sk(recipient), Self::relay_from)
            .await
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
            .key("pk", s(msg_pk(message_id)))
            .key("sk", s(relay_sk(recipient)))
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
                // The index key has whole milliseconds: the record's own time decides.
                if let Some(r) = self.get_with(pk, sk, Self::relay_from).await?
                    && r.relayed_at <= before
                    && r.delivered_at.is_none()
                    && r.failed_at.is_none()
                    && r.notice24_at.is_none()
                {
                    records.push(r);
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
        self.put_new(item).await
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

    async fn record_spam(&self, d: &SpamDetection) -> Result<bool, StateError> {
        let mailbox = norm(&d.mailbox);
        let sk = spam_sk(d.at, &d.message);
        let expires = (d.at + chrono::Duration::days(SPAM_DETECTION_DAYS))
            .timestamp()
            .max(0) as u64;
        let item = HashMap::from([
            ("pk".into(), s(format!("SPAM#{mailbox}"))),
            ("gsi1pk".into(), s(spam_hour(d.at))),
            ("gsi1sk".into(), s(format!("{mailbox}#{sk}"))),
            ("sk".into(), s(sk)),
            ("expires_at".into(), n(expires)),
            (
                "doc".into(),
                to_doc(&SpamDetection {
                    mailbox,
                    ..d.clone()
                }),
            ),
        ]);
        self.put_new(item).await
    }

    async fn spam_detections(
        &self,
        mailbox: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<SpamDetection>, StateError> {
        let mut found = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND sk >= :since")
                .expression_attribute_values(":pk", s(format!("SPAM#{}", norm(mailbox))))
                .expression_attribute_values(":since", s(spam_sk(since, "")))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| self.err("Query", e))?;
            for item in out.items() {
                let d: SpamDetection = self.decode_doc(item)?;
                // The key has whole milliseconds: the record's own time decides.
                if d.at >= since {
                    found.push(d);
                }
            }
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        Ok(found)
    }

    async fn spam_senders(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<String>, StateError> {
        let mut senders = std::collections::BTreeSet::new();
        let mut hour = since;
        // One index partition per UTC hour the range touches.
        while spam_hour(hour) <= spam_hour(until) {
            for item in self.gsi1_partition(&spam_hour(hour)).await? {
                let d: SpamDetection = self.decode_doc(&item)?;
                if d.at >= since && d.at <= until {
                    senders.insert(d.mailbox);
                }
            }
            hour += chrono::Duration::hours(1);
        }
        Ok(senders.into_iter().collect())
    }

    async fn record_password_finding(&self, f: &PasswordFinding) -> Result<bool, StateError> {
        let mailbox = norm(&f.mailbox);
        let sk = format!(
            "{}#{}",
            f.at.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
            f.setting.as_str()
        );
        let expires = (f.at + chrono::Duration::days(pec_ports::breach::FINDING_DAYS))
            .timestamp()
            .max(0) as u64;
        let item = HashMap::from([
            ("pk".into(), s(format!("PWFIND#{mailbox}"))),
            ("gsi1pk".into(), s(finding_month(f.at))),
            ("gsi1sk".into(), s(format!("{mailbox}#{sk}"))),
            ("sk".into(), s(sk)),
            ("expires_at".into(), n(expires)),
            (
                "doc".into(),
                to_doc(&PasswordFinding {
                    mailbox,
                    ..f.clone()
                }),
            ),
        ]);
        self.put_new(item).await
    }

    async fn password_findings(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<PasswordFinding>, StateError> {
        let mut found = Vec::new();
        let mut month = since;
        // One index partition per UTC month the range touches (the report reads two).
        while finding_month(month) <= finding_month(until) {
            for item in self.gsi1_partition(&finding_month(month)).await? {
                let f: PasswordFinding = self.decode_doc(&item)?;
                if f.at > since && f.at <= until {
                    found.push(f);
                }
            }
            month = month
                .checked_add_months(Months::new(1))
                .ok_or_else(|| StateError {
                    operation: "Query",
                    table: self.table.clone(),
                    message: "password findings: a time out of range".into(),
                })?;
        }
        found.sort_by(|a, b| {
            (&a.mailbox, a.at, a.setting.as_str()).cmp(&(&b.mailbox, b.at, b.setting.as_str()))
        });
        Ok(found)
    }

    async fn sms_window(&self, mailbox: &str) -> Result<Option<SmsWindow>, StateError> {
        self.get_with(&sms_pk(mailbox), "SMSWIN", Self::decode_doc)
            .await
    }

    async fn replace_sms_window(
        &self,
        mailbox: &str,
        expected: Option<&SmsWindow>,
        new: &SmsWindow,
    ) -> Result<bool, StateError> {
        // Kept a month after its last change (TTL): an older window is as good as none.
        let expires = (Utc::now() + chrono::Duration::days(30)).timestamp().max(0) as u64;
        let item = HashMap::from([
            ("pk".into(), s(sms_pk(mailbox))),
            ("sk".into(), s("SMSWIN")),
            ("expires_at".into(), n(expires)),
            ("doc".into(), to_doc(new)),
        ]);
        let mut request = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item));
        request = match expected {
            None => request.condition_expression("attribute_not_exists(pk)"),
            Some(old) => request
                .condition_expression("doc = :old")
                .expression_attribute_values(":old", to_doc(old)),
        };
        match request.send().await {
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
}

/// The index partition of the password findings of one UTC month (the report's query).
fn finding_month(at: DateTime<Utc>) -> String {
    format!("PWMONTH#{}", at.format("%Y-%m"))
}

/// A mailbox's SMS rate window.
fn sms_pk(mailbox: &str) -> String {
    format!("SMSWIN#{}", norm(mailbox))
}

/// A spam detection's sort key: its time (UTC, ms) then the submission id.
fn spam_sk(at: DateTime<Utc>, message: &str) -> String {
    format!("{}#{message}", at.format("%Y-%m-%dT%H:%M:%S%.3fZ"))
}

/// The index partition of the detections of one UTC hour (the lockout sweep's scan).
fn spam_hour(at: DateTime<Utc>) -> String {
    format!("SPAMHOUR#{}", at.format("%Y-%m-%dT%H"))
}

fn message_item(record: &MessageRecord) -> Item {
    HashMap::from([
        ("pk".into(), s(msg_pk(&record.id))),
        ("sk".into(), s("MSG")),
        ("gsi1pk".into(), s(format!("ID#{}", record.identificativo))),
        ("gsi1sk".into(), s("MSG")),
        ("state".into(), s(record.state.as_str())),
        ("doc".into(), to_doc(record)),
    ])
}
