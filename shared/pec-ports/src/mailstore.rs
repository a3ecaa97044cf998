//! The mailbox store as people see it over IMAP and POP3: per mailbox address, folders with a
//! stable UIDVALIDITY and strictly increasing UIDs, messages with flags, size, internal date and
//! bytes, and a quota counted over every folder.
//!
//! The server-level rules (no APPEND into INBOX, no COPY/MOVE of an appended message into INBOX)
//! are the callers'; the store only keeps each message's [`Origin`] so that they can be decided.
//! [`MemoryMailStore`] is the fake for tests and local runs; it tells a [`MailboxListener`]
//! after every change (the IMAP server's IDLE notifier). Stores shared between processes
//! (DynamoDB) expose [`MailStore::change_counter`] for polling instead.

#[cfg(feature = "conformance")]
pub mod conformance;
mod memory;

use std::collections::BTreeSet;
use std::future::Future;

use chrono::{DateTime, Utc};

pub use memory::{MailboxListener, MemoryMailStore};

/// The folders every mailbox has, in the order they are listed.
pub const DEFAULT_FOLDERS: [(&str, Option<SpecialUse>); 5] = [
    (INBOX, None),
    ("Sent", Some(SpecialUse::Sent)),
    ("Drafts", Some(SpecialUse::Drafts)),
    (JUNK, Some(SpecialUse::Junk)),
    ("Trash", Some(SpecialUse::Trash)),
];

/// The folder deliveries go to (its name is case-insensitive in IMAP; stored spelled this way).
pub const INBOX: &str = "INBOX";
/// "Posta indesiderata": where ordinary mail scored as spam is delivered.
pub const JUNK: &str = "Junk";

/// A folder's special use (RFC 6154), announced as a LIST attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpecialUse {
    Sent,
    Drafts,
    Junk,
    Trash,
}

impl SpecialUse {
    /// The RFC 6154 attribute, e.g. `\Sent`.
    pub fn attribute(self) -> &'static str {
        match self {
            SpecialUse::Sent => "\\Sent",
            SpecialUse::Drafts => "\\Drafts",
            SpecialUse::Junk => "\\Junk",
            SpecialUse::Trash => "\\Trash",
        }
    }
}

/// A folder's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderInfo {
    /// The folder name as stored (`INBOX`, `Sent`...).
    pub name: String,
    pub special_use: Option<SpecialUse>,
    /// Fixed when the folder is made; never changes while it exists (UIDs stay valid).
    pub uid_validity: u32,
    /// The UID the next message will get; it never goes back, expunges included.
    pub uid_next: u32,
    /// Messages in the folder.
    pub messages: u32,
    /// Messages without `\Seen`.
    pub unseen: u32,
}

/// Where a message came from: the provider's delivery, or the mailbox owner (APPEND).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Delivered by the provider (a received PEC message or receipt).
    Delivered,
    /// Written by the owner (a draft, a copy of a sent message).
    Appended,
}

/// The flags of a message: system flags spelled as in IMAP (`\Seen`, `\Answered`, `\Flagged`,
/// `\Deleted`, `\Draft`) and keywords. Compared as stored: callers normalise spelling.
pub type Flags = BTreeSet<String>;

/// The seen flag.
pub const SEEN: &str = "\\Seen";
/// The deleted flag: EXPUNGE removes the messages that carry it.
pub const DELETED: &str = "\\Deleted";

/// One message in a folder, without its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageMeta {
    pub uid: u32,
    pub flags: Flags,
    /// Size of the bytes, in octets (counted against the quota).
    pub size: u64,
    /// When the message entered the mailbox (IMAP INTERNALDATE).
    pub internal_date: DateTime<Utc>,
    pub origin: Origin,
}

/// What [`MailStore::append`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub uid_validity: u32,
    pub uid: u32,
}

/// How [`MailStore::store_flags`] changes flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagChange {
    Add,
    Remove,
    Replace,
}

/// What [`MailStore::copy`] and [`MailStore::move_messages`] did: source and new UIDs, in
/// the order of the source UIDs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    /// The destination's UIDVALIDITY.
    pub uid_validity: u32,
    pub pairs: Vec<(u32, u32)>,
}

/// A mailbox's storage quota (every folder counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Octets in use.
    pub used: u64,
    /// Octets allowed.
    pub limit: u64,
}

/// The longest key [`MailStore::append_once`] takes, in octets.
pub const ONCE_KEY_MAX: usize = 200;

/// Whether `key` can be given to [`MailStore::append_once`]: 1 to [`ONCE_KEY_MAX`] octets of
/// printable ASCII without spaces.
pub fn once_key_ok(key: &str) -> bool {
    !key.is_empty() && key.len() <= ONCE_KEY_MAX && key.bytes().all(|b| b.is_ascii_graphic())
}

/// Why a mail-store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MailStoreError {
    /// The mailbox has no folder of that name (or the mailbox does not exist: callers must not
    /// tell the two apart to clients).
    #[error("no folder {0:?}")]
    NoFolder(String),
    /// The write would take the mailbox over its quota; nothing was written.
    #[error("over quota: {used} + {adding} octets > {limit}")]
    OverQuota { used: u64, adding: u64, limit: u64 },
    /// A key given to [`MailStore::append_once`] that [`once_key_ok`] refuses.
    #[error("bad append key {0:?}: 1 to 200 octets of printable ASCII without spaces")]
    BadKey(String),
    /// The store could not answer (network, throttling...): the client may retry.
    #[error("mail store unavailable: {0}")]
    Unavailable(String),
}

/// The mailbox store port.
///
/// `address` is always the authenticated mailbox (normalised by the store like
/// [`crate::state::norm`]); `folder` names are matched exactly except `INBOX`, which is
/// case-insensitive. An address the store does not know behaves as a mailbox with no folders.
pub trait MailStore: Send + Sync {
    /// The mailbox's folders, [`DEFAULT_FOLDERS`] order first.
    fn folders(
        &self,
        address: &str,
    ) -> impl Future<Output = Result<Vec<FolderInfo>, MailStoreError>> + Send;

    /// One folder's counters, `None` if there is no such folder.
    fn folder(
        &self,
        address: &str,
        folder: &str,
    ) -> impl Future<Output = Result<Option<FolderInfo>, MailStoreError>> + Send;

    /// Every message of the folder, by increasing UID.
    fn messages(
        &self,
        address: &str,
        folder: &str,
    ) -> impl Future<Output = Result<Vec<MessageMeta>, MailStoreError>> + Send;

    /// A message's bytes exactly as stored, `None` if there is no such UID.
    fn read(
        &self,
        address: &str,
        folder: &str,
        uid: u32,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, MailStoreError>> + Send;

    /// Adds a message with the next UID of the folder, atomically, if the quota allows.
    fn append(
        &self,
        address: &str,
        folder: &str,
        bytes: Vec<u8>,
        flags: Flags,
        internal_date: DateTime<Utc>,
        origin: Origin,
    ) -> impl Future<Output = Result<Appended, MailStoreError>> + Send;

    /// [`MailStore::append`] at most once per `key`: the first call with a key appends and
    /// records the key with where the message went (atomically with the append); a later call
    /// with the same key writes nothing and answers where the first one put it, with `false`.
    /// A retried or resumed import (a mailbox transfer) uses it so that no message is added
    /// twice. Keys are the caller's (at most [`ONCE_KEY_MAX`] octets, printable ASCII) and stay
    /// after the message is expunged: an expunged message is not brought back by a re-run.
    #[allow(clippy::too_many_arguments)]
    fn append_once(
        &self,
        address: &str,
        folder: &str,
        key: &str,
        bytes: Vec<u8>,
        flags: Flags,
        internal_date: DateTime<Utc>,
        origin: Origin,
    ) -> impl Future<Output = Result<(Appended, bool), MailStoreError>> + Send;

    /// The keys [`MailStore::append_once`] recorded for the mailbox that start with `prefix`.
    fn appended_keys(
        &self,
        address: &str,
        prefix: &str,
    ) -> impl Future<Output = Result<BTreeSet<String>, MailStoreError>> + Send;

    /// Changes the flags of the messages with these UIDs (absent UIDs are skipped) and returns
    /// the new flags of each message that exists.
    fn store_flags(
        &self,
        address: &str,
        folder: &str,
        uids: &[u32],
        change: FlagChange,
        flags: &Flags,
    ) -> impl Future<Output = Result<Vec<(u32, Flags)>, MailStoreError>> + Send;

    /// Removes the messages flagged [`DELETED`] (only those among `only` when given), frees
    /// their octets from the quota and returns their UIDs, increasing.
    fn expunge(
        &self,
        address: &str,
        folder: &str,
        only: Option<&[u32]>,
    ) -> impl Future<Output = Result<Vec<u32>, MailStoreError>> + Send;

    /// Copies messages to another folder of the same mailbox (new UIDs, same flags, date and
    /// origin), if the quota allows them all; otherwise nothing is copied.
    fn copy(
        &self,
        address: &str,
        from: &str,
        uids: &[u32],
        to: &str,
    ) -> impl Future<Output = Result<Copied, MailStoreError>> + Send;

    /// Moves messages to another folder of the same mailbox (the quota does not change).
    fn move_messages(
        &self,
        address: &str,
        from: &str,
        uids: &[u32],
        to: &str,
    ) -> impl Future<Output = Result<Copied, MailStoreError>> + Send;

    /// The mailbox's quota.
    fn quota(&self, address: &str) -> impl Future<Output = Result<Quota, MailStoreError>> + Send;

    /// A counter that grows with every change to the mailbox (any folder): compare two reads to
    /// know whether anything happened (IDLE polling across processes).
    fn change_counter(
        &self,
        address: &str,
    ) -> impl Future<Output = Result<u64, MailStoreError>> + Send;
}

/// Whether `folder` names the inbox (`INBOX` in any case, RFC 9051 §5.1).
pub fn is_inbox(folder: &str) -> bool {
    folder.eq_ignore_ascii_case(INBOX)
}
