//! The source of a mailbox transfer: a member bringing an existing PEC mailbox from another
//! provider. [`TransferSource`] is what the transfer (`pec_pipeline::transfer`) reads: the
//! source's folders, each folder's UIDs and sizes, and messages by UID with their bytes, flags
//! and internal date, never changing anything at the source. `pec-transfer` implements it over
//! IMAP; [`MemorySource`] is the fake.

use std::collections::BTreeMap;
use std::future::Future;

use chrono::{DateTime, Utc};

use crate::mailstore::{Flags, SpecialUse};

/// A folder as the source lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFolder {
    /// The name exactly as the source spells it (for IMAP, the modified UTF-7 form on the wire).
    pub name: String,
    /// The RFC 6154 special use the source announces (`\Sent`...), if any.
    pub special_use: Option<SpecialUse>,
    /// The hierarchy delimiter, if the source has one (`/`, `.`).
    pub delimiter: Option<char>,
    /// False for a name that only holds other folders (`\Noselect`): it has no messages.
    pub selectable: bool,
}

/// One message in a source folder's listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceEntry {
    pub uid: u32,
    /// Its size as the source reports it (IMAP RFC822.SIZE), in octets.
    pub size: u64,
}

/// A source folder's messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceListing {
    /// The folder's UIDVALIDITY: UIDs name the same messages only while it stays.
    pub uid_validity: u32,
    /// By increasing UID.
    pub entries: Vec<SourceEntry>,
}

/// A message read from the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceMessage {
    pub uid: u32,
    /// The message exactly as the source stores it.
    pub bytes: Vec<u8>,
    /// System flags spelled as in IMAP (`\Seen`...) and keywords; never `\Recent`.
    pub flags: Flags,
    /// When the message entered the source mailbox (IMAP INTERNALDATE).
    pub internal_date: DateTime<Utc>,
}

/// Why the source could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// The source refused us: wrong credentials, no such folder, a command it rejects. Running
    /// again as is will not help.
    #[error("the source refused: {0}")]
    Refused(String),
    /// The connection failed or broke: the transfer can be run again and resumes.
    #[error("the source is unavailable: {0}")]
    Unavailable(String),
}

/// A mailbox at another provider, read-only.
pub trait TransferSource: Send {
    /// A stable name of the source account (server and user, no secret): the transfer keys
    /// what it has copied by it, so a second source never looks done because of the first.
    fn id(&self) -> String;

    /// Every folder of the mailbox.
    fn folders(&mut self) -> impl Future<Output = Result<Vec<SourceFolder>, SourceError>> + Send;

    /// The folder's UIDVALIDITY and messages, without changing anything (no `\Seen` set).
    fn list(
        &mut self,
        folder: &str,
    ) -> impl Future<Output = Result<SourceListing, SourceError>> + Send;

    /// The messages of `folder` with these UIDs, by increasing UID, without setting `\Seen`;
    /// a UID the folder no longer has is left out. `uid_validity` is the listing's: if the
    /// folder's is another now, its UIDs name other messages and the fetch fails
    /// ([`SourceError::Unavailable`]: the next run lists it again).
    fn fetch(
        &mut self,
        folder: &str,
        uid_validity: u32,
        uids: &[u32],
    ) -> impl Future<Output = Result<Vec<SourceMessage>, SourceError>> + Send;
}

/// [`TransferSource`] in memory: folders with messages, and an optional break after a number
/// of fetched messages (a connection lost halfway) to test resuming.
#[derive(Debug, Clone, Default)]
pub struct MemorySource {
    pub name: String,
    pub folders: Vec<(SourceFolder, u32, BTreeMap<u32, SourceMessage>)>,
    /// Fail every fetch once this many messages have been handed out.
    pub break_after: Option<usize>,
    handed_out: usize,
}

impl MemorySource {
    /// A source called `name` with no folders.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            ..Self::default()
        }
    }

    /// Adds a selectable folder with these messages (UIDs 1, 2, ... in order).
    pub fn folder(
        mut self,
        name: &str,
        special_use: Option<SpecialUse>,
        uid_validity: u32,
        messages: Vec<(Vec<u8>, Flags, DateTime<Utc>)>,
    ) -> Self {
        let messages = messages
            .into_iter()
            .enumerate()
            .map(|(i, (bytes, flags, internal_date))| {
                let uid = i as u32 + 1;
                (
                    uid,
                    SourceMessage {
                        uid,
                        bytes,
                        flags,
                        internal_date,
                    },
                )
            })
            .collect();
        self.folders.push((
            SourceFolder {
                name: name.to_owned(),
                special_use,
                delimiter: Some('/'),
                selectable: true,
            },
            uid_validity,
            messages,
        ));
        self
    }

    fn find(
        &self,
        folder: &str,
    ) -> Result<&(SourceFolder, u32, BTreeMap<u32, SourceMessage>), SourceError> {
        self.folders
            .iter()
            .find(|(f, _, _)| f.name == folder && f.selectable)
            .ok_or_else(|| SourceError::Refused(format!("no folder {folder:?}")))
    }
}

impl TransferSource for MemorySource {
    fn id(&self) -> String {
        self.name.clone()
    }

    async fn folders(&mut self) -> Result<Vec<SourceFolder>, SourceError> {
        Ok(self.folders.iter().map(|(f, _, _)| f.clone()).collect())
    }

    async fn list(&mut self, folder: &str) -> Result<SourceListing, SourceError> {
        let (_, uid_validity, messages) = self.find(folder)?;
        Ok(SourceListing {
            uid_validity: *uid_validity,
            entries: messages
                .values()
                .map(|m| SourceEntry {
                    uid: m.uid,
                    size: m.bytes.len() as u64,
                })
                .collect(),
        })
    }

    async fn fetch(
        &mut self,
        folder: &str,
        uid_validity: u32,
        uids: &[u32],
    ) -> Result<Vec<SourceMessage>, SourceError> {
        let (_, validity, messages) = self.find(folder)?;
        if *validity != uid_validity {
            return Err(SourceError::Unavailable(format!(
                "{folder}: UIDVALIDITY is {validity} now, not {uid_validity}"
            )));
        }
        let mut out: Vec<SourceMessage> = uids
            .iter()
            .filter_map(|u| messages.get(u).cloned())
            .collect();
        out.sort_by_key(|m| m.uid);
        if let Some(limit) = self.break_after {
            if self.handed_out >= limit {
                return Err(SourceError::Unavailable("connection reset (test)".into()));
            }
            out.truncate(limit - self.handed_out);
        }
        self.handed_out += out.len();
        Ok(out)
    }
}
