//! [`MailStore`] on DynamoDB (folders, UIDs, flags, quota) and S3 (the bytes): what the IMAP
//! and POP3 servers read, in the same state table and mailbox bucket the delivery step writes.
//!
//! Items (docs/data-model.md), all under the mailbox's partition `MBX#<address>`:
//!
//! * `FOLDER#<name>`: `uid_validity`, `uid_next`, `folder_name`, `special_use`. The default
//!   folders are made on first use (put-if-absent, so the first UIDVALIDITY stays).
//! * `UID#<name>#<uid, 10 digits>`: one message in a folder: `size`, `flags` (a string set,
//!   absent when empty), `internal_date`, `origin`, `object_key` and, for deliveries, `item_id`.
//! * `MBX`: the mailbox, whose `used_bytes` counts every folder entry and whose `changes` grows
//!   with every write (IDLE polls it).
//!
//! **UIDs.** Every write that adds messages to a folder is one transaction that moves the
//! folder's `uid_next` from the value it read (a condition), puts the entries and updates the
//! mailbox. Two writers racing for one folder cannot both commit: the loser re-reads and retries.
//! So a message with a lower UID is never committed after one with a higher UID, which is what a
//! client that remembered UIDNEXT relies on. In a folder name `%` and `#` are escaped, so one
//! folder's prefix is never another's.
//!
//! **Bytes.** Appended messages go to `mailbox/<address>/a-<sha256>.eml` (content-addressed, so a
//! retried APPEND rewrites nothing); copies share their source's object. Expunge removes the
//! entry, not the object, which may be shared with a copy or be a delivered message's only copy.

use std::collections::{BTreeSet, HashMap};

use aws_sdk_dynamodb::types::{
    AttributeValue, CancellationReason, Delete, Put, ReturnValue, TransactWriteItem, Update,
};
use chrono::{DateTime, Utc};
use pec_ports::keys;
use pec_ports::mailstore::{
    Appended, Copied, DEFAULT_FOLDERS, DELETED, FlagChange, Flags, FolderInfo, INBOX, MailStore,
    MailStoreError, MessageMeta, Origin, Quota, SEEN, SpecialUse, is_inbox, once_key_ok,
};
use pec_ports::store::ObjectStore;

use crate::state::{Item, mbx_pk, n, s};
use crate::store::aws_error_chain;

/// Attempts of a write that lost a race for a folder's `uid_next` or the mailbox's quota.
pub(crate) const ATTEMPTS: usize = 20;
/// Messages per transaction (DynamoDB allows 100 operations; the folder and the mailbox take
/// two, a move two per message).
const CHUNK: usize = 48;

/// [`MailStore`] over the state table and the mailbox bucket.
#[derive(Clone, Debug)]
pub struct DynamoMailStore<O> {
    client: aws_sdk_dynamodb::Client,
    table: String,
    objects: O,
    bucket: String,
}

/// `FOLDER#<escaped name>`.
pub(crate) fn folder_sk(folder: &str) -> String {
    format!("FOLDER#{}", escape(folder))
}

/// `UID#<escaped name>#`: the prefix of a folder's entries.
fn entry_prefix(folder: &str) -> String {
    format!("UID#{}#", escape(folder))
}

/// `UID#<escaped name>#<uid, 10 digits>`: sorted by UID.
pub(crate) fn entry_sk(folder: &str, uid: u32) -> String {
    format!("{}{uid:010}", entry_prefix(folder))
}

fn escape(folder: &str) -> String {
    folder.replace('%', "%25").replace('#', "%23")
}

/// The stored spelling of a folder name (`INBOX` is case-insensitive).
fn canonical(folder: &str) -> &str {
    if is_inbox(folder) { INBOX } else { folder }
}

/// `Some(special use)` for a default folder, `None` for any other name.
fn default_folder(folder: &str) -> Option<Option<SpecialUse>> {
    DEFAULT_FOLDERS
        .iter()
        .find(|(name, _)| *name == folder)
        .map(|(_, use_)| *use_)
}

fn special_use_name(u: SpecialUse) -> &'static str {
    match u {
        SpecialUse::Sent => "Sent",
        SpecialUse::Drafts => "Drafts",
        SpecialUse::Junk => "Junk",
        SpecialUse::Trash => "Trash",
    }
}

fn special_use_from(name: &str) -> Option<SpecialUse> {
    match name {
        "Sent" => Some(SpecialUse::Sent),
        "Drafts" => Some(SpecialUse::Drafts),
        "Junk" => Some(SpecialUse::Junk),
        "Trash" => Some(SpecialUse::Trash),
        _ => None,
    }
}

fn num(item: &Item, name: &str) -> u64 {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn text<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
}

fn flags_of(item: &Item) -> Flags {
    item.get("flags")
        .and_then(|v| v.as_ss().ok())
        .map(|v| v.iter().cloned().collect())
        .unwrap_or_default()
}

fn set(flags: &Flags) -> AttributeValue {
    AttributeValue::Ss(flags.iter().cloned().collect())
}

fn minus(v: u64) -> AttributeValue {
    AttributeValue::N(format!("-{v}"))
}

fn cancelled(reasons: &[CancellationReason], index: usize) -> bool {
    reasons
        .get(index)
        .and_then(|r| r.code())
        .is_some_and(|c| c == "ConditionalCheckFailed")
}

/// A folder as read.
#[derive(Debug, Clone)]
pub(crate) struct FolderRow {
    name: String,
    special_use: Option<SpecialUse>,
    uid_validity: u32,
    uid_next: u32,
}

impl FolderRow {
    fn from_item(item: &Item) -> Option<Self> {
        Some(Self {
            name: text(item, "folder_name")?.to_owned(),
            special_use: text(item, "special_use").and_then(special_use_from),
            uid_validity: u32::try_from(num(item, "uid_validity")).ok()?,
            uid_next: u32::try_from(num(item, "uid_next")).ok()?,
        })
    }
}

/// A folder of `address` as read (consistently), `None` if not made yet.
pub(crate) async fn read_folder(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    address: &str,
    folder: &str,
) -> Result<Option<FolderRow>, String> {
    let out = client
        .get_item()
        .table_name(table)
        .key("pk", s(mbx_pk(address)))
        .key("sk", s(folder_sk(folder)))
        .consistent_read(true)
        .send()
        .await
        .map_err(|e| aws_error_chain(&e))?;
    match out.item {
        Some(item) => FolderRow::from_item(&item)
            .map(Some)
            .ok_or_else(|| format!("{table} holds a malformed folder {folder} of {address}")),
        None => Ok(None),
    }
}

/// A new UIDVALIDITY: the current second, which a re-made folder never repeats (RFC 9051 §2.3.1.1).
fn new_validity() -> u32 {
    u32::try_from(Utc::now().timestamp())
        .unwrap_or(u32::MAX)
        .max(1)
}

/// The operation that takes `count` UIDs from `folder` as it was read (`read`), or makes the
/// folder (a default folder read as absent) with them. A concurrent writer of the folder makes
/// it fail, so its transaction is retried. Returns the op, the first UID and the UIDVALIDITY.
pub(crate) fn take_uids(
    table: &str,
    address: &str,
    folder: &str,
    read: Option<&FolderRow>,
    count: u32,
) -> (TransactWriteItem, u32, u32) {
    let update = Update::builder()
        .table_name(table)
        .key("pk", s(mbx_pk(address)))
        .key("sk", s(folder_sk(folder)));
    let (update, first, validity) = match read {
        Some(row) => (
            update
                .update_expression("SET uid_next = :next")
                .condition_expression("uid_next = :cur")
                .expression_attribute_values(":cur", n(u64::from(row.uid_next)))
                .expression_attribute_values(
                    ":next",
                    n(u64::from(row.uid_next) + u64::from(count)),
                ),
            row.uid_next,
            row.uid_validity,
        ),
        None => {
            let validity = new_validity();
            let u = update
                .condition_expression("attribute_not_exists(pk)")
                .expression_attribute_values(":next", n(1 + u64::from(count)))
                .expression_attribute_values(":v", n(u64::from(validity)))
                .expression_attribute_values(":name", s(folder));
            let u = match default_folder(folder).flatten() {
                Some(use_) => u
                    .update_expression(
                        "SET uid_next = :next, uid_validity = :v, folder_name = :name, special_use = :su",
                    )
                    .expression_attribute_values(":su", s(special_use_name(use_))),
                None => u.update_expression(
                    "SET uid_next = :next, uid_validity = :v, folder_name = :name",
                ),
            };
            (u, 1, validity)
        }
    };
    let op = TransactWriteItem::builder()
        .update(update.build().expect("table, key and expression set"))
        .build();
    (op, first, validity)
}

/// The put of one folder entry.
pub(crate) struct Entry<'a> {
    pub folder: &'a str,
    pub uid: u32,
    pub size: u64,
    pub flags: &'a Flags,
    pub internal_date: DateTime<Utc>,
    pub origin: Origin,
    pub object_key: &'a str,
    pub item_id: Option<&'a str>,
}

impl Entry<'_> {
    pub(crate) fn put(&self, table: &str, address: &str) -> TransactWriteItem {
        let mut item: Item = HashMap::from([
            ("pk".into(), s(mbx_pk(address))),
            ("sk".into(), s(entry_sk(self.folder, self.uid))),
            ("size".into(), n(self.size)),
            (
                "internal_date".into(),
                s(self
                    .internal_date
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            ),
            (
                "origin".into(),
                s(match self.origin {
                    Origin::Delivered => "delivered",
                    Origin::Appended => "appended",
                }),
            ),
            ("object_key".into(), s(self.object_key)),
        ]);
        if !self.flags.is_empty() {
            item.insert("flags".into(), set(self.flags));
        }
        if let Some(id) = self.item_id {
            item.insert("item_id".into(), s(id));
        }
        TransactWriteItem::builder()
            .put(
                Put::builder()
                    .table_name(table)
                    .set_item(Some(item))
                    .condition_expression("attribute_not_exists(pk)")
                    .build()
                    .expect("table and item set"),
            )
            .build()
    }
}

/// One entry as stored.
#[derive(Debug, Clone)]
struct Stored {
    meta: MessageMeta,
    object_key: String,
    item_id: Option<String>,
}

fn stored_from(item: &Item) -> Option<Stored> {
    let sk = text(item, "sk")?;
    let uid = sk.rsplit('#').next()?.parse().ok()?;
    let internal_date = DateTime::parse_from_rfc3339(text(item, "internal_date")?)
        .ok()?
        .with_timezone(&Utc);
    Some(Stored {
        meta: MessageMeta {
            uid,
            flags: flags_of(item),
            size: num(item, "size"),
            internal_date,
            origin: match text(item, "origin")? {
                "delivered" => Origin::Delivered,
                _ => Origin::Appended,
            },
        },
        object_key: text(item, "object_key")?.to_owned(),
        item_id: text(item, "item_id").map(str::to_owned),
    })
}

impl<O: ObjectStore> DynamoMailStore<O> {
    /// Over `table` (the state table) and `bucket` (the mailbox bucket).
    pub fn new(client: aws_sdk_dynamodb::Client, table: &str, objects: O, bucket: &str) -> Self {
        Self {
            client,
            table: table.to_owned(),
            objects,
            bucket: bucket.to_owned(),
        }
    }

    fn unavailable(&self, operation: &str, e: impl std::error::Error) -> MailStoreError {
        MailStoreError::Unavailable(format!(
            "{operation} on {}: {}",
            self.table,
            aws_error_chain(&e)
        ))
    }

    fn corrupt(&self, what: &str) -> MailStoreError {
        MailStoreError::Unavailable(format!("{} holds a malformed {what}", self.table))
    }

    async fn get(&self, pk: &str, sk: &str) -> Result<Option<Item>, MailStoreError> {
        self.client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .key("sk", s(sk))
            .consistent_read(true)
            .send()
            .await
            .map(|o| o.item)
            .map_err(|e| self.unavailable("GetItem", e))
    }

    async fn query(
        &self,
        pk: &str,
        prefix: &str,
        projection: Option<&str>,
    ) -> Result<Vec<Item>, MailStoreError> {
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let mut q = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND begins_with(sk, :p)")
                .expression_attribute_values(":pk", s(pk))
                .expression_attribute_values(":p", s(prefix))
                .consistent_read(true)
                .set_exclusive_start_key(start.take());
            if let Some(p) = projection {
                // The one projected attribute, by placeholder (never a reserved word clash).
                q = q
                    .projection_expression("#p")
                    .expression_attribute_names("#p", p);
            }
            let out = q.send().await.map_err(|e| self.unavailable("Query", e))?;
            items.extend(out.items.unwrap_or_default());
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        Ok(items)
    }

    /// The mailbox's `(used_bytes, quota_bytes, changes)`, `None` if there is no mailbox.
    async fn mailbox(&self, address: &str) -> Result<Option<(u64, u64, u64)>, MailStoreError> {
        Ok(self.get(&mbx_pk(address), "MBX").await?.map(|i| {
            (
                num(&i, "used_bytes"),
                num(&i, "quota_bytes"),
                num(&i, "changes"),
            )
        }))
    }

    async fn folder_row(
        &self,
        address: &str,
        folder: &str,
    ) -> Result<Option<FolderRow>, MailStoreError> {
        match self.get(&mbx_pk(address), &folder_sk(folder)).await? {
            Some(item) => FolderRow::from_item(&item)
                .map(Some)
                .ok_or_else(|| self.corrupt("folder")),
            None => Ok(None),
        }
    }

    /// The folder to write into: as read, or `None` for a default folder not made yet (the
    /// write makes it). Errors for a missing mailbox or folder.
    async fn target(
        &self,
        address: &str,
        folder: &str,
    ) -> Result<Option<FolderRow>, MailStoreError> {
        if let Some(row) = self.folder_row(address, folder).await? {
            return Ok(Some(row));
        }
        if default_folder(folder).is_some() && self.mailbox(address).await?.is_some() {
            return Ok(None);
        }
        Err(MailStoreError::NoFolder(folder.to_owned()))
    }

    /// Makes the default folders a mailbox lacks (put-if-absent: a concurrent maker wins).
    async fn ensure_defaults(
        &self,
        address: &str,
        have: &[FolderRow],
    ) -> Result<bool, MailStoreError> {
        let mut made = false;
        for (name, use_) in DEFAULT_FOLDERS {
            if have.iter().any(|f| f.name == name) {
                continue;
            }
            let mut item: Item = HashMap::from([
                ("pk".into(), s(mbx_pk(address))),
                ("sk".into(), s(folder_sk(name))),
                ("folder_name".into(), s(name)),
                ("uid_validity".into(), n(u64::from(new_validity()))),
                ("uid_next".into(), n(1)),
            ]);
            if let Some(u) = use_ {
                item.insert("special_use".into(), s(special_use_name(u)));
            }
            let result = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(pk)")
                .send()
                .await;
            match result {
                Ok(_) => made = true,
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_conditional_check_failed_exception()) => {}
                Err(e) => return Err(self.unavailable("PutItem", e)),
            }
        }
        Ok(made)
    }

    async fn rows(&self, address: &str) -> Result<Vec<FolderRow>, MailStoreError> {
        self.query(&mbx_pk(address), "FOLDER#", None)
            .await?
            .iter()
            .map(|i| FolderRow::from_item(i).ok_or_else(|| self.corrupt("folder")))
            .collect()
    }

    async fn entries(&self, address: &str, folder: &str) -> Result<Vec<Stored>, MailStoreError> {
        let mut v = self
            .query(&mbx_pk(address), &entry_prefix(folder), None)
            .await?
            .iter()
            .map(|i| stored_from(i).ok_or_else(|| self.corrupt("message entry")))
            .collect::<Result<Vec<_>, _>>()?;
        v.sort_by_key(|e| e.meta.uid);
        Ok(v)
    }

    async fn info(&self, address: &str, row: FolderRow) -> Result<FolderInfo, MailStoreError> {
        let flags = self
            .query(&mbx_pk(address), &entry_prefix(&row.name), Some("flags"))
            .await?;
        let unseen = flags.iter().filter(|i| !flags_of(i).contains(SEEN)).count();
        Ok(FolderInfo {
            name: row.name,
            special_use: row.special_use,
            uid_validity: row.uid_validity,
            uid_next: row.uid_next,
            messages: u32::try_from(flags.len()).unwrap_or(u32::MAX),
            unseen: u32::try_from(unseen).unwrap_or(u32::MAX),
        })
    }

    /// Where an earlier [`MailStore::append_once`] with `key` put its message.
    async fn once_done(
        &self,
        address: &str,
        key: &str,
    ) -> Result<Option<Appended>, MailStoreError> {
        let Some(item) = self.get(&mbx_pk(address), &format!("ONCE#{key}")).await? else {
            return Ok(None);
        };
        let uid = u32::try_from(num(&item, "uid")).map_err(|_| self.corrupt("append key"))?;
        let uid_validity =
            u32::try_from(num(&item, "uid_validity")).map_err(|_| self.corrupt("append key"))?;
        Ok(Some(Appended { uid_validity, uid }))
    }

    /// An append, recorded under `once` when given (see [`MailStore::append_once`]): the
    /// `ONCE#<key>` item is put in the same transaction as the entry, on condition that it is
    /// new, so two racing calls with one key cannot both append.
    #[allow(clippy::too_many_arguments)]
    async fn append_keyed(
        &self,
        address: &str,
        folder: &str,
        once: Option<&str>,
        bytes: Vec<u8>,
        flags: Flags,
        internal_date: DateTime<Utc>,
        origin: Origin,
    ) -> Result<(Appended, bool), MailStoreError> {
        let folder = canonical(folder);
        if let Some(key) = once
            && let Some(done) = self.once_done(address, key).await?
        {
            return Ok((done, false));
        }
        let size = bytes.len() as u64;
        let (used, quota, _) = self
            .mailbox(address)
            .await?
            .ok_or_else(|| MailStoreError::NoFolder(folder.to_owned()))?;
        if let Some(e) = Self::over_quota(used, quota, size) {
            return Err(e);
        }
        let mut row = self.target(address, folder).await?;
        let object_key = keys::mailbox_object(address, &keys::appended_item_id(&bytes));
        self.objects
            .put_if_absent(&self.bucket, &object_key, bytes, "message/rfc822")
            .await
            .map_err(|e| MailStoreError::Unavailable(e.to_string()))?;
        for _ in 0..ATTEMPTS {
            let (used, quota, _) = self
                .mailbox(address)
                .await?
                .ok_or_else(|| MailStoreError::NoFolder(folder.to_owned()))?;
            if let Some(e) = Self::over_quota(used, quota, size) {
                return Err(e);
            }
            let (folder_op, uid, uid_validity) =
                take_uids(&self.table, address, folder, row.as_ref(), 1);
            let entry = Entry {
                folder,
                uid,
                size,
                flags: &flags,
                internal_date,
                origin,
                object_key: &object_key,
                item_id: None,
            };
            let mut ops = vec![
                folder_op,
                self.mailbox_op(address, size, 0, quota),
                entry.put(&self.table, address),
            ];
            if let Some(key) = once {
                ops.push(
                    TransactWriteItem::builder()
                        .put(
                            Put::builder()
                                .table_name(&self.table)
                                .item("pk", s(mbx_pk(address)))
                                .item("sk", s(format!("ONCE#{key}")))
                                .item("folder_name", s(folder))
                                .item("uid", n(u64::from(uid)))
                                .item("uid_validity", n(u64::from(uid_validity)))
                                .condition_expression("attribute_not_exists(pk)")
                                .build()
                                .expect("table and item set"),
                        )
                        .build(),
                );
            }
            match self.transact(ops).await? {
                None => return Ok((Appended { uid_validity, uid }, true)),
                Some(reasons) if once.is_some() && cancelled(&reasons, 3) => {
                    let key = once.unwrap_or_default();
                    return match self.once_done(address, key).await? {
                        Some(done) => Ok((done, false)),
                        None => Err(MailStoreError::Unavailable(format!(
                            "the append key {key} was refused but cannot be read"
                        ))),
                    };
                }
                // A lost race for the folder or the quota, or a concurrent transaction on the
                // same items (a delivery landing now): read again and retry.
                Some(reasons)
                    if cancelled(&reasons, 0)
                        || cancelled(&reasons, 1)
                        || reasons
                            .iter()
                            .any(|r| r.code() == Some("TransactionConflict")) =>
                {
                    row = self.target(address, folder).await?;
                }
                Some(_) => {
                    return Err(MailStoreError::Unavailable(format!(
                        "the append to {folder} was refused by {}",
                        self.table
                    )));
                }
            }
        }
        Err(MailStoreError::Unavailable(format!(
            "{folder} kept changing; retry"
        )))
    }

    async fn transact(
        &self,
        ops: Vec<TransactWriteItem>,
    ) -> Result<Option<Vec<CancellationReason>>, MailStoreError> {
        match self
            .client
            .transact_write_items()
            .set_transact_items(Some(ops))
            .send()
            .await
        {
            Ok(_) => Ok(None),
            Err(e) => {
                use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
                match e.as_service_error() {
                    Some(TransactWriteItemsError::TransactionCanceledException(t)) => {
                        Ok(Some(t.cancellation_reasons().to_vec()))
                    }
                    _ => Err(self.unavailable("TransactWriteItems", e)),
                }
            }
        }
    }

    /// The mailbox update of a write: `changes` + 1 and `used_bytes` + `adding` (within the
    /// quota read as `quota`) or − `freeing`.
    fn mailbox_op(
        &self,
        address: &str,
        adding: u64,
        freeing: u64,
        quota: u64,
    ) -> TransactWriteItem {
        let u = Update::builder()
            .table_name(&self.table)
            .key("pk", s(mbx_pk(address)))
            .key("sk", s("MBX"))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_names("#c", "changes");
        let u = if adding > 0 {
            u.update_expression("ADD used_bytes :size, #c :one")
                .expression_attribute_values(":size", n(adding))
                .expression_attribute_values(":quota", n(quota))
                .condition_expression("quota_bytes = :quota AND used_bytes <= :limit")
                .expression_attribute_values(":limit", n(quota.saturating_sub(adding)))
        } else if freeing > 0 {
            u.update_expression("ADD used_bytes :minus, #c :one")
                .expression_attribute_values(":minus", minus(freeing))
                .condition_expression("attribute_exists(pk)")
        } else {
            u.update_expression("ADD #c :one")
                .condition_expression("attribute_exists(pk)")
        };
        TransactWriteItem::builder()
            .update(u.build().expect("table, key and expression set"))
            .build()
    }

    fn over_quota(used: u64, quota: u64, adding: u64) -> Option<MailStoreError> {
        (used.saturating_add(adding) > quota).then_some(MailStoreError::OverQuota {
            used,
            adding,
            limit: quota,
        })
    }

    async fn bump(&self, address: &str) -> Result<(), MailStoreError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(mbx_pk(address)))
            .key("sk", s("MBX"))
            .update_expression("ADD #c :one")
            .expression_attribute_names("#c", "changes")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":one", n(1))
            .send()
            .await
            .map(drop)
            .map_err(|e| self.unavailable("UpdateItem", e))
    }

    /// Adds `sources` (each with its object and item id) to `to` with new UIDs, in chunks;
    /// removes them from `from` too when moving. Quota is checked for the whole copy first.
    async fn copy_or_move(
        &self,
        address: &str,
        from: &str,
        uids: &[u32],
        to: &str,
        moving: bool,
    ) -> Result<Copied, MailStoreError> {
        let (from, to) = (canonical(from), canonical(to));
        if self.folder_row(address, from).await?.is_none() {
            // A default folder not made yet is empty; anything else does not exist.
            if default_folder(from).is_none() || self.mailbox(address).await?.is_none() {
                return Err(MailStoreError::NoFolder(from.to_owned()));
            }
        }
        let mut dest = self.target(address, to).await?;
        let wanted: BTreeSet<u32> = uids.iter().copied().collect();
        let sources: Vec<Stored> = self
            .entries(address, from)
            .await?
            .into_iter()
            .filter(|e| wanted.contains(&e.meta.uid))
            .collect();
        let total: u64 = sources.iter().map(|e| e.meta.size).sum();
        if !moving {
            let (used, quota, _) = self
                .mailbox(address)
                .await?
                .ok_or_else(|| MailStoreError::NoFolder(to.to_owned()))?;
            if let Some(e) = Self::over_quota(used, quota, total) {
                return Err(e);
            }
        }
        let mut pairs = Vec::with_capacity(sources.len());
        let mut validity = dest.as_ref().map(|d| d.uid_validity);
        for chunk in sources.chunks(CHUNK) {
            let adding: u64 = if moving {
                0
            } else {
                chunk.iter().map(|e| e.meta.size).sum()
            };
            let mut done = false;
            for _ in 0..ATTEMPTS {
                let (used, quota, _) = self
                    .mailbox(address)
                    .await?
                    .ok_or_else(|| MailStoreError::NoFolder(to.to_owned()))?;
                if let Some(e) = Self::over_quota(used, quota, adding) {
                    return Err(e);
                }
                let count = u32::try_from(chunk.len()).unwrap_or(u32::MAX);
                let (folder_op, first, v) =
                    take_uids(&self.table, address, to, dest.as_ref(), count);
                let mut ops = vec![folder_op, self.mailbox_op(address, adding, 0, quota)];
                for (i, e) in chunk.iter().enumerate() {
                    ops.push(
                        Entry {
                            folder: to,
                            uid: first + i as u32,
                            size: e.meta.size,
                            flags: &e.meta.flags,
                            internal_date: e.meta.internal_date,
                            origin: e.meta.origin,
                            object_key: &e.object_key,
                            item_id: e.item_id.as_deref(),
                        }
                        .put(&self.table, address),
                    );
                    if moving {
                        ops.push(
                            TransactWriteItem::builder()
                                .delete(
                                    Delete::builder()
                                        .table_name(&self.table)
                                        .key("pk", s(mbx_pk(address)))
                                        .key("sk", s(entry_sk(from, e.meta.uid)))
                                        .condition_expression("attribute_exists(pk)")
                                        .build()
                                        .expect("table and key set"),
                                )
                                .build(),
                        );
                    }
                }
                match self.transact(ops).await? {
                    None => {
                        validity = Some(v);
                        pairs.extend(
                            chunk
                                .iter()
                                .enumerate()
                                .map(|(i, e)| (e.meta.uid, first + i as u32)),
                        );
                        done = true;
                        break;
                    }
                    Some(reasons) => {
                        if moving
                            && reasons
                                .iter()
                                .skip(2)
                                .any(|r| r.code() == Some("ConditionalCheckFailed"))
                        {
                            // A source went (a concurrent expunge or move): the client re-syncs.
                            return Err(MailStoreError::Unavailable(format!(
                                "a message of {from} changed during the move; retry"
                            )));
                        }
                        dest = self.target(address, to).await?;
                    }
                }
            }
            if !done {
                return Err(MailStoreError::Unavailable(format!(
                    "{to} kept changing; retry"
                )));
            }
            if dest.is_none() {
                dest = self.target(address, to).await?;
            } else {
                dest = self.folder_row(address, to).await?;
            }
        }
        let uid_validity = match validity {
            Some(v) => v,
            None => match self.target(address, to).await? {
                Some(row) => row.uid_validity,
                None => {
                    // An empty copy into a default folder not made yet: make it to answer.
                    self.ensure_defaults(address, &self.rows(address).await?)
                        .await?;
                    self.folder_row(address, to)
                        .await?
                        .ok_or_else(|| MailStoreError::NoFolder(to.to_owned()))?
                        .uid_validity
                }
            },
        };
        Ok(Copied {
            uid_validity,
            pairs,
        })
    }
}

impl<O: ObjectStore> MailStore for DynamoMailStore<O> {
    async fn folders(&self, address: &str) -> Result<Vec<FolderInfo>, MailStoreError> {
        let mut rows = self.rows(address).await?;
        if rows.len() < DEFAULT_FOLDERS.len() {
            if self.mailbox(address).await?.is_none() {
                return Ok(Vec::new());
            }
            if self.ensure_defaults(address, &rows).await? {
                rows = self.rows(address).await?;
            }
        }
        // Default folders first, in their order; then the others by name.
        rows.sort_by_key(|r| {
            (
                DEFAULT_FOLDERS
                    .iter()
                    .position(|(name, _)| *name == r.name)
                    .unwrap_or(DEFAULT_FOLDERS.len()),
                r.name.clone(),
            )
        });
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            out.push(self.info(address, row).await?);
        }
        Ok(out)
    }

    async fn folder(
        &self,
        address: &str,
        folder: &str,
    ) -> Result<Option<FolderInfo>, MailStoreError> {
        let folder = canonical(folder);
        let row = match self.folder_row(address, folder).await? {
            Some(row) => row,
            None => {
                if default_folder(folder).is_none() || self.mailbox(address).await?.is_none() {
                    return Ok(None);
                }
                self.ensure_defaults(address, &self.rows(address).await?)
                    .await?;
                match self.folder_row(address, folder).await? {
                    Some(row) => row,
                    None => return Ok(None),
                }
            }
        };
        self.info(address, row).await.map(Some)
    }

    async fn messages(
        &self,
        address: &str,
        folder: &str,
    ) -> Result<Vec<MessageMeta>, MailStoreError> {
        let folder = canonical(folder);
        if self.folder_row(address, folder).await?.is_none()
            && self.folder(address, folder).await?.is_none()
        {
            return Err(MailStoreError::NoFolder(folder.to_owned()));
        }
        Ok(self
            .entries(address, folder)
            .await?
            .into_iter()
            .map(|e| e.meta)
            .collect())
    }

    async fn read(
        &self,
        address: &str,
        folder: &str,
        uid: u32,
    ) -> Result<Option<Vec<u8>>, MailStoreError> {
        let folder = canonical(folder);
        let Some(item) = self.get(&mbx_pk(address), &entry_sk(folder, uid)).await? else {
            // No such UID in a folder that exists; no such folder (or mailbox) is an error.
            return match self.folder(address, folder).await? {
                Some(_) => Ok(None),
                None => Err(MailStoreError::NoFolder(folder.to_owned())),
            };
        };
        let entry = stored_from(&item).ok_or_else(|| self.corrupt("message entry"))?;
        self.objects
            .get(&self.bucket, &entry.object_key)
            .await
            .map_err(|e| MailStoreError::Unavailable(e.to_string()))
    }

    async fn append(
        &self,
        address: &str,
        folder: &str,
        bytes: Vec<u8>,
        flags: Flags,
        internal_date: DateTime<Utc>,
        origin: Origin,
    ) -> Result<Appended, MailStoreError> {
        self.append_keyed(address, folder, None, bytes, flags, internal_date, origin)
            .await
            .map(|(a, _)| a)
    }

    async fn append_once(
        &self,
        address: &str,
        folder: &str,
        key: &str,
        bytes: Vec<u8>,
        flags: Flags,
        internal_date: DateTime<Utc>,
        origin: Origin,
    ) -> Result<(Appended, bool), MailStoreError> {
        if !once_key_ok(key) {
            return Err(MailStoreError::BadKey(key.to_owned()));
        }
        self.append_keyed(
            address,
            folder,
            Some(key),
            bytes,
            flags,
            internal_date,
            origin,
        )
        .await
    }

    async fn appended_keys(
        &self,
        address: &str,
        prefix: &str,
    ) -> Result<BTreeSet<String>, MailStoreError> {
        Ok(self
            .query(&mbx_pk(address), &format!("ONCE#{prefix}"), Some("sk"))
            .await?
            .iter()
            .filter_map(|i| text(i, "sk")?.strip_prefix("ONCE#").map(str::to_owned))
            .collect())
    }

    async fn store_flags(
        &self,
        address: &str,
        folder: &str,
        uids: &[u32],
        change: FlagChange,
        flags: &Flags,
    ) -> Result<Vec<(u32, Flags)>, MailStoreError> {
        let folder = canonical(folder);
        if self.folder_row(address, folder).await?.is_none()
            && self.folder(address, folder).await?.is_none()
        {
            return Err(MailStoreError::NoFolder(folder.to_owned()));
        }
        let mut out = Vec::new();
        let mut changed = false;
        let mut uids = uids.to_vec();
        uids.sort_unstable();
        uids.dedup();
        for uid in uids {
            let u = self
                .client
                .update_item()
                .table_name(&self.table)
                .key("pk", s(mbx_pk(address)))
                .key("sk", s(entry_sk(folder, uid)))
                .condition_expression("attribute_exists(pk)")
                .expression_attribute_names("#f", "flags")
                .return_values(ReturnValue::AllNew);
            let u = match (change, flags.is_empty()) {
                (FlagChange::Add | FlagChange::Remove, true) => {
                    if let Some(item) = self.get(&mbx_pk(address), &entry_sk(folder, uid)).await? {
                        out.push((uid, flags_of(&item)));
                    }
                    continue;
                }
                (FlagChange::Add, false) => u
                    .update_expression("ADD #f :f")
                    .expression_attribute_values(":f", set(flags)),
                (FlagChange::Remove, false) => u
                    .update_expression("DELETE #f :f")
                    .expression_attribute_values(":f", set(flags)),
                (FlagChange::Replace, true) => u.update_expression("REMOVE #f"),
                (FlagChange::Replace, false) => u
                    .update_expression("SET #f = :f")
                    .expression_attribute_values(":f", set(flags)),
            };
            match u.send().await {
                Ok(o) => {
                    changed = true;
                    out.push((uid, o.attributes.as_ref().map(flags_of).unwrap_or_default()));
                }
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_conditional_check_failed_exception()) => {}
                Err(e) => return Err(self.unavailable("UpdateItem", e)),
            }
        }
        if changed {
            self.bump(address).await?;
        }
        Ok(out)
    }

    async fn expunge(
        &self,
        address: &str,
        folder: &str,
        only: Option<&[u32]>,
    ) -> Result<Vec<u32>, MailStoreError> {
        let folder = canonical(folder);
        let mut gone = Vec::new();
        for _ in 0..ATTEMPTS {
            let doomed: Vec<MessageMeta> = self
                .messages(address, folder)
                .await?
                .into_iter()
                .filter(|m| m.flags.contains(DELETED))
                .filter(|m| only.is_none_or(|o| o.contains(&m.uid)))
                .collect();
            if doomed.is_empty() {
                gone.sort_unstable();
                return Ok(gone);
            }
            let mut raced = false;
            for chunk in doomed.chunks(CHUNK) {
                let freeing: u64 = chunk.iter().map(|m| m.size).sum();
                let mut ops = vec![self.mailbox_op(address, 0, freeing, 0)];
                for m in chunk {
                    ops.push(
                        TransactWriteItem::builder()
                            .delete(
                                Delete::builder()
                                    .table_name(&self.table)
                                    .key("pk", s(mbx_pk(address)))
                                    .key("sk", s(entry_sk(folder, m.uid)))
                                    .condition_expression("contains(#f, :d)")
                                    .expression_attribute_names("#f", "flags")
                                    .expression_attribute_values(":d", s(DELETED))
                                    .build()
                                    .expect("table and key set"),
                            )
                            .build(),
                    );
                }
                match self.transact(ops).await? {
                    None => gone.extend(chunk.iter().map(|m| m.uid)),
                    // A concurrent expunge or flag change: read again.
                    Some(_) => {
                        raced = true;
                        break;
                    }
                }
            }
            if !raced {
                gone.sort_unstable();
                return Ok(gone);
            }
        }
        Err(MailStoreError::Unavailable(format!(
            "{folder} kept changing; retry"
        )))
    }

    async fn copy(
        &self,
        address: &str,
        from: &str,
        uids: &[u32],
        to: &str,
    ) -> Result<Copied, MailStoreError> {
        self.copy_or_move(address, from, uids, to, false).await
    }

    async fn move_messages(
        &self,
        address: &str,
        from: &str,
        uids: &[u32],
        to: &str,
    ) -> Result<Copied, MailStoreError> {
        self.copy_or_move(address, from, uids, to, true).await
    }

    async fn quota(&self, address: &str) -> Result<Quota, MailStoreError> {
        Ok(match self.mailbox(address).await? {
            Some((used, limit, _)) => Quota { used, limit },
            None => Quota { used: 0, limit: 0 },
        })
    }

    async fn change_counter(&self, address: &str) -> Result<u64, MailStoreError> {
        Ok(self.mailbox(address).await?.map_or(0, |(_, _, c)| c))
    }
}
