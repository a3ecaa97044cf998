//! [`MemoryMailStore`]: the [`MailStore`] fake.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};

use super::{
    Appended, Copied, DEFAULT_FOLDERS, DELETED, FlagChange, Flags, FolderInfo, INBOX, MailStore,
    MailStoreError, MessageMeta, Origin, Quota, SEEN, SpecialUse, is_inbox, once_key_ok,
};
use crate::state::norm;

/// Told after every change to a mailbox (delivery, flags, expunge, copy, move), with the
/// mailbox address; the IMAP server wakes its IDLE sessions with it. Called with no lock held.
pub trait MailboxListener: Send + Sync {
    fn changed(&self, address: &str);
}

struct Message {
    meta: MessageMeta,
    bytes: Arc<Vec<u8>>,
}

struct Folder {
    name: String,
    special_use: Option<SpecialUse>,
    uid_validity: u32,
    uid_next: u32,
    messages: BTreeMap<u32, Message>,
}

impl Folder {
    fn info(&self) -> FolderInfo {
        FolderInfo {
            name: self.name.clone(),
            special_use: self.special_use,
            uid_validity: self.uid_validity,
            uid_next: self.uid_next,
            messages: self.messages.len() as u32,
            unseen: self
                .messages
                .values()
                .filter(|m| !m.meta.flags.contains(SEEN))
                .count() as u32,
        }
    }

    fn take_uid(&mut self) -> u32 {
        let uid = self.uid_next;
        self.uid_next += 1;
        uid
    }
}

struct Mailbox {
    folders: Vec<Folder>,
    limit: u64,
    used: u64,
    changes: u64,
    /// The keys of [`MailStore::append_once`] and where each message went.
    once: BTreeMap<String, Appended>,
}

impl Mailbox {
    fn index(&self, folder: &str) -> Option<usize> {
        self.folders.iter().position(|f| {
            if is_inbox(folder) {
                f.name == INBOX
            } else {
                f.name == folder
            }
        })
    }

    fn folder(&self, folder: &str) -> Result<&Folder, MailStoreError> {
        self.index(folder)
            .map(|i| &self.folders[i])
            .ok_or_else(|| MailStoreError::NoFolder(folder.to_owned()))
    }

    fn folder_mut(&mut self, folder: &str) -> Result<&mut Folder, MailStoreError> {
        let i = self
            .index(folder)
            .ok_or_else(|| MailStoreError::NoFolder(folder.to_owned()))?;
        Ok(&mut self.folders[i])
    }

    /// Adds a message with the folder's next UID, if the quota allows.
    fn add(
        &mut self,
        folder: &str,
        bytes: Vec<u8>,
        flags: Flags,
        internal_date: DateTime<Utc>,
        origin: Origin,
    ) -> Result<Appended, MailStoreError> {
        let size = bytes.len() as u64;
        let i = self
            .index(folder)
            .ok_or_else(|| MailStoreError::NoFolder(folder.to_owned()))?;
        self.check_quota(size)?;
        self.used += size;
        let f = &mut self.folders[i];
        let uid = f.take_uid();
        f.messages.insert(
            uid,
            Message {
                meta: MessageMeta {
                    uid,
                    flags,
                    size,
                    internal_date,
                    origin,
                },
                bytes: Arc::new(bytes),
            },
        );
        Ok(Appended {
            uid_validity: f.uid_validity,
            uid,
        })
    }

    fn check_quota(&self, adding: u64) -> Result<(), MailStoreError> {
        if self.used.saturating_add(adding) > self.limit {
            return Err(MailStoreError::OverQuota {
                used: self.used,
                adding,
                limit: self.limit,
            });
        }
        Ok(())
    }
}

#[derive(Default)]
struct Inner {
    mailboxes: HashMap<String, Mailbox>,
    next_validity: u32,
}

/// [`MailStore`] in memory: mailboxes made with [`MemoryMailStore::create_mailbox`] have the
/// [`DEFAULT_FOLDERS`]; UIDVALIDITY values come from one counter, so a re-made folder never
/// reuses one.
#[derive(Default)]
pub struct MemoryMailStore {
    inner: Mutex<Inner>,
    listener: Mutex<Option<Arc<dyn MailboxListener>>>,
}

impl std::fmt::Debug for MemoryMailStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryMailStore").finish_non_exhaustive()
    }
}

impl MemoryMailStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the listener told about every change (replacing any earlier one).
    pub fn set_listener(&self, listener: Arc<dyn MailboxListener>) {
        *self.listener.lock().unwrap_or_else(|p| p.into_inner()) = Some(listener);
    }

    /// Makes a mailbox with the default folders and a quota of `limit` octets (no-op if it
    /// exists, except that the limit is updated).
    pub fn create_mailbox(&self, address: &str, limit: u64) {
        let mut inner = self.lock();
        let address = norm(address);
        if let Some(mailbox) = inner.mailboxes.get_mut(&address) {
            mailbox.limit = limit;
            return;
        }
        let mut folders = Vec::new();
        for (name, special_use) in DEFAULT_FOLDERS {
            inner.next_validity += 1;
            folders.push(Folder {
                name: name.to_owned(),
                special_use,
                uid_validity: inner.next_validity,
                uid_next: 1,
                messages: BTreeMap::new(),
            });
        }
        inner.mailboxes.insert(
            address,
            Mailbox {
                folders,
                limit,
                used: 0,
                changes: 0,
                once: BTreeMap::new(),
            },
        );
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the mailbox; a change (`Ok((_, true))`) bumps its counter and tells the
    /// listener once the lock is released.
    fn with_mailbox<T>(
        &self,
        address: &str,
        folder_hint: &str,
        f: impl FnOnce(&mut Mailbox) -> Result<(T, bool), MailStoreError>,
    ) -> Result<T, MailStoreError> {
        let address = norm(address);
        let (value, changed) = {
            let mut inner = self.lock();
            let mailbox = inner
                .mailboxes
                .get_mut(&address)
                .ok_or_else(|| MailStoreError::NoFolder(folder_hint.to_owned()))?;
            let (value, changed) = f(mailbox)?;
            if changed {
                mailbox.changes += 1;
            }
            (value, changed)
        };
        if changed {
            let listener = self
                .listener
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            if let Some(listener) = listener {
                listener.changed(&address);
            }
        }
        Ok(value)
    }

    fn copy_or_move(
        &self,
        address: &str,
        from: &str,
        uids: &[u32],
        to: &str,
        remove: bool,
    ) -> Result<Copied, MailStoreError> {
        self.with_mailbox(address, from, |mb| {
            let src = mb
                .index(from)
                .ok_or_else(|| MailStoreError::NoFolder(from.into()))?;
            let dst = mb
                .index(to)
                .ok_or_else(|| MailStoreError::NoFolder(to.into()))?;
            let mut picked: Vec<u32> = uids
                .iter()
                .copied()
                .filter(|u| mb.folders[src].messages.contains_key(u))
                .collect();
            picked.sort_unstable();
            picked.dedup();
            if !remove {
                let adding: u64 = picked
                    .iter()
                    .filter_map(|u| mb.folders[src].messages.get(u))
                    .map(|m| m.meta.size)
                    .sum();
                mb.check_quota(adding)?;
                mb.used += adding;
            }
            let uid_validity = mb.folders[dst].uid_validity;
            let mut pairs = Vec::with_capacity(picked.len());
            for uid in picked {
                let message = if remove {
                    mb.folders[src].messages.remove(&uid)
                } else {
                    mb.folders[src].messages.get(&uid).map(|m| Message {
                        meta: m.meta.clone(),
                        bytes: Arc::clone(&m.bytes),
                    })
                };
                let Some(mut message) = message else { continue };
                let new_uid = mb.folders[dst].take_uid();
                message.meta.uid = new_uid;
                mb.folders[dst].messages.insert(new_uid, message);
                pairs.push((uid, new_uid));
            }
            let changed = !pairs.is_empty();
            Ok((
                Copied {
                    uid_validity,
                    pairs,
                },
                changed,
            ))
        })
    }
}

impl MailStore for MemoryMailStore {
    async fn folders(&self, address: &str) -> Result<Vec<FolderInfo>, MailStoreError> {
        let inner = self.lock();
        Ok(inner
            .mailboxes
            .get(&norm(address))
            .map(|mb| mb.folders.iter().map(Folder::info).collect())
            .unwrap_or_default())
    }

    async fn folder(
        &self,
        address: &str,
        folder: &str,
    ) -> Result<Option<FolderInfo>, MailStoreError> {
        let inner = self.lock();
        Ok(inner
            .mailboxes
            .get(&norm(address))
            .and_then(|mb| mb.folder(folder).ok().map(Folder::info)))
    }

    async fn messages(
        &self,
        address: &str,
        folder: &str,
    ) -> Result<Vec<MessageMeta>, MailStoreError> {
        let inner = self.lock();
        let mb = inner
            .mailboxes
            .get(&norm(address))
            .ok_or_else(|| MailStoreError::NoFolder(folder.to_owned()))?;
        Ok(mb
            .folder(folder)?
            .messages
            .values()
            .map(|m| m.meta.clone())
            .collect())
    }

    async fn read(
        &self,
        address: &str,
        folder: &str,
        uid: u32,
    ) -> Result<Option<Vec<u8>>, MailStoreError> {
        let inner = self.lock();
        let mb = inner
            .mailboxes
            .get(&norm(address))
            .ok_or_else(|| MailStoreError::NoFolder(folder.to_owned()))?;
        Ok(mb
            .folder(folder)?
            .messages
            .get(&uid)
            .map(|m| m.bytes.as_ref().clone()))
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
        self.with_mailbox(address, folder, |mb| {
            Ok((mb.add(folder, bytes, flags, internal_date, origin)?, true))
        })
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
        self.with_mailbox(address, folder, |mb| {
            if let Some(done) = mb.once.get(key) {
                return Ok(((*done, false), false));
            }
            let done = mb.add(folder, bytes, flags, internal_date, origin)?;
            mb.once.insert(key.to_owned(), done);
            Ok(((done, true), true))
        })
    }

    async fn appended_keys(
        &self,
        address: &str,
        prefix: &str,
    ) -> Result<BTreeSet<String>, MailStoreError> {
        let inner = self.lock();
        Ok(inner
            .mailboxes
            .get(&norm(address))
            .map(|mb| {
                mb.once
                    .range(prefix.to_owned()..)
                    .take_while(|(k, _)| k.starts_with(prefix))
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn store_flags(
        &self,
        address: &str,
        folder: &str,
        uids: &[u32],
        change: FlagChange,
        flags: &Flags,
    ) -> Result<Vec<(u32, Flags)>, MailStoreError> {
        self.with_mailbox(address, folder, |mb| {
            let f = mb.folder_mut(folder)?;
            let mut out = Vec::new();
            let mut changed = false;
            for uid in uids {
                let Some(m) = f.messages.get_mut(uid) else {
                    continue;
                };
                let before = m.meta.flags.clone();
                match change {
                    FlagChange::Add => m.meta.flags.extend(flags.iter().cloned()),
                    FlagChange::Remove => m.meta.flags.retain(|x| !flags.contains(x)),
                    FlagChange::Replace => m.meta.flags = flags.clone(),
                }
                changed |= before != m.meta.flags;
                out.push((*uid, m.meta.flags.clone()));
            }
            Ok((out, changed))
        })
    }

    async fn expunge(
        &self,
        address: &str,
        folder: &str,
        only: Option<&[u32]>,
    ) -> Result<Vec<u32>, MailStoreError> {
        self.with_mailbox(address, folder, |mb| {
            let f = mb.folder_mut(folder)?;
            let gone: Vec<u32> = f
                .messages
                .values()
                .filter(|m| m.meta.flags.contains(DELETED))
                .filter(|m| only.is_none_or(|o| o.contains(&m.meta.uid)))
                .map(|m| m.meta.uid)
                .collect();
            let mut freed = 0;
            for uid in &gone {
                if let Some(m) = f.messages.remove(uid) {
                    freed += m.meta.size;
                }
            }
            mb.used = mb.used.saturating_sub(freed);
            let changed = !gone.is_empty();
            Ok((gone, changed))
        })
    }

    async fn copy(
        &self,
        address: &str,
        from: &str,
        uids: &[u32],
        to: &str,
    ) -> Result<Copied, MailStoreError> {
        self.copy_or_move(address, from, uids, to, false)
    }

    async fn move_messages(
        &self,
        address: &str,
        from: &str,
        uids: &[u32],
        to: &str,
    ) -> Result<Copied, MailStoreError> {
        self.copy_or_move(address, from, uids, to, true)
    }

    async fn quota(&self, address: &str) -> Result<Quota, MailStoreError> {
        let inner = self.lock();
        Ok(inner
            .mailboxes
            .get(&norm(address))
            .map(|mb| Quota {
                used: mb.used,
                limit: mb.limit,
            })
            .unwrap_or(Quota { used: 0, limit: 0 }))
    }

    async fn change_counter(&self, address: &str) -> Result<u64, MailStoreError> {
        let inner = self.lock();
        Ok(inner
            .mailboxes
            .get(&norm(address))
            .map_or(0, |mb| mb.changes))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    const A: &str = "mario@pec.example.test";
    const B: &str = "anna@pec.example.test";

    fn flags(list: &[&str]) -> Flags {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default()
    }

    async fn put(s: &MemoryMailStore, who: &str, folder: &str, body: &str) -> Appended {
        s.append(
            who,
            folder,
            body.as_bytes().to_vec(),
            Flags::new(),
            now(),
            Origin::Delivered,
        )
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn folders_uids_and_bytes() {
        let s = MemoryMailStore::new();
        s.create_mailbox(A, 1000);
        s.create_mailbox(B, 1000);
        let names: Vec<String> = s
            .folders(A)
            .await
            .unwrap()
            .into_iter()
            .map(|f| f.name)
            .collect();
        assert_eq!(names, ["INBOX", "Sent", "Drafts", "Junk", "Trash"]);
        let validities: std::collections::BTreeSet<u32> = s
            .folders(A)
            .await
            .unwrap()
            .iter()
            .chain(s.folders(B).await.unwrap().iter())
            .map(|f| f.uid_validity)
            .collect();
        assert_eq!(validities.len(), 10, "every folder has its own UIDVALIDITY");
        assert_eq!(put(&s, A, "inbox", "one").await.uid, 1);
        assert_eq!(
            put(&s, "MARIO@pec.example.test", "INBOX", "two").await.uid,
            2
        );
        assert_eq!(s.read(A, "INBOX", 2).await.unwrap().unwrap(), b"two");
        assert_eq!(s.read(A, "INBOX", 3).await.unwrap(), None);
        assert_eq!(
            s.messages(B, "INBOX").await.unwrap(),
            vec![],
            "mailboxes are apart"
        );
        let inbox = s.folder(A, "INBOX").await.unwrap().unwrap();
        assert_eq!((inbox.messages, inbox.unseen, inbox.uid_next), (2, 2, 3));
        assert_eq!(s.folder(A, "Nope").await.unwrap(), None);
        assert_eq!(s.folders("nobody@x.test").await.unwrap(), vec![]);
        assert!(matches!(
            s.read("nobody@x.test", "INBOX", 1).await,
            Err(MailStoreError::NoFolder(_))
        ));
    }

    #[tokio::test]
    async fn expunge_keeps_uids_and_frees_quota() {
        let s = MemoryMailStore::new();
        s.create_mailbox(A, 10);
        put(&s, A, "INBOX", "aaaa").await;
        put(&s, A, "INBOX", "bbbb").await;
        assert!(matches!(
            s.append(
                A,
                "Drafts",
                b"ccc".to_vec(),
                Flags::new(),
                now(),
                Origin::Appended
            )
            .await,
            Err(MailStoreError::OverQuota {
                used: 8,
                adding: 3,
                limit: 10
            })
        ));
        let set = s
            .store_flags(
                A,
                "INBOX",
                &[1, 7],
                FlagChange::Add,
                &flags(&[DELETED, SEEN]),
            )
            .await
            .unwrap();
        assert_eq!(set, vec![(1, flags(&[DELETED, SEEN]))]);
        assert_eq!(
            s.expunge(A, "INBOX", Some(&[2])).await.unwrap(),
            Vec::<u32>::new()
        );
        assert_eq!(s.expunge(A, "INBOX", None).await.unwrap(), vec![1]);
        assert_eq!(s.quota(A).await.unwrap(), Quota { used: 4, limit: 10 });
        assert_eq!(
            put(&s, A, "INBOX", "cc").await.uid,
            3,
            "UIDNEXT never goes back"
        );
        let uids: Vec<u32> = s
            .messages(A, "INBOX")
            .await
            .unwrap()
            .iter()
            .map(|m| m.uid)
            .collect();
        assert_eq!(uids, [2, 3]);
        let replaced = s
            .store_flags(A, "INBOX", &[2], FlagChange::Replace, &flags(&["$Label"]))
            .await
            .unwrap();
        assert_eq!(replaced, vec![(2, flags(&["$Label"]))]);
        let removed = s
            .store_flags(A, "INBOX", &[2], FlagChange::Remove, &flags(&["$Label"]))
            .await
            .unwrap();
        assert_eq!(removed, vec![(2, Flags::new())]);
    }

    #[tokio::test]
    async fn copy_counts_quota_move_does_not() {
        struct Count(AtomicUsize);
        impl MailboxListener for Count {
            fn changed(&self, address: &str) {
                assert_eq!(address, A);
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let s = MemoryMailStore::new();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        s.set_listener(count.clone());
        s.create_mailbox(A, 10);
        put(&s, A, "INBOX", "aaaa").await;
        let c0 = s.change_counter(A).await.unwrap();
        let copied = s.copy(A, "INBOX", &[1, 1, 9], "Trash").await.unwrap();
        let trash = s.folder(A, "Trash").await.unwrap().unwrap();
        assert_eq!(
            copied,
            Copied {
                uid_validity: trash.uid_validity,
                pairs: vec![(1, 1)]
            }
        );
        assert_eq!(s.quota(A).await.unwrap().used, 8);
        assert!(matches!(
            s.copy(A, "INBOX", &[1], "Trash").await,
            Err(MailStoreError::OverQuota { .. })
        ));
        let moved = s.move_messages(A, "INBOX", &[1], "Drafts").await.unwrap();
        assert_eq!(moved.pairs, vec![(1, 1)]);
        assert_eq!(s.quota(A).await.unwrap().used, 8);
        assert_eq!(s.messages(A, "INBOX").await.unwrap(), vec![]);
        let drafts = s.messages(A, "Drafts").await.unwrap();
        assert_eq!(drafts[0].origin, Origin::Delivered, "the origin travels");
        assert!(s.change_counter(A).await.unwrap() > c0);
        assert_eq!(count.0.load(Ordering::SeqCst), 3, "append, copy, move");
        assert!(matches!(
            s.move_messages(A, "INBOX", &[1], "Nope").await,
            Err(MailStoreError::NoFolder(f)) if f == "Nope"
        ));
    }
}
