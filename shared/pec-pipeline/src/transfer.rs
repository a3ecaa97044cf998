//! Transfer in (issue #13): a member brings an existing PEC mailbox from another provider. The
//! messages and receipts of every folder are copied from a [`TransferSource`] (IMAP, read-only)
//! into the member's mailbox here with their bytes, internal dates and flags unchanged, counted
//! against the quota.
//!
//! **Exactly once, resumable.** Each source message is appended with
//! [`MailStore::append_once`] under a key made of the source account, the folder, its
//! UIDVALIDITY and the UID: a run that stops anywhere (connection lost, mailbox full, `--limit`,
//! a crash between two writes) is resumed by running it again, and nothing is copied twice. A
//! message the member expunged after the transfer is not brought back by a re-run. A source
//! folder whose UIDVALIDITY changed is a different folder to the transfer (its messages are
//! copied again): IMAP gives no other way to know them.
//!
//! **Folders.** Ours are fixed (INBOX, Sent, Drafts, Junk, Trash). A source folder goes to
//! INBOX if it is the INBOX, to the folder of its special use (`\Sent`...) if it announces one,
//! to the folder its name says in English or Italian ("Posta inviata", "Bozze", "Cestino"...),
//! or where the caller maps it. A folder with messages that none of these place stops the
//! transfer before anything is copied, with the list: nothing is left behind without saying so.
//!
//! **Quota.** What is still to copy must fit the mailbox before the first message is copied
//! (refused with the numbers: change the plan or add an expansion, then run it again); each
//! append checks the quota again, as deliveries may land meanwhile.

use std::collections::{BTreeMap, BTreeSet};

use pec_ports::mailstore::{self, DEFAULT_FOLDERS, INBOX, MailStoreError, Origin, SpecialUse};
use pec_ports::transfer::{SourceError, SourceFolder, TransferSource};
use pec_ports::{MailStore, MailboxStatus, StateError, StateStore};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::tenants::Admin;

/// Messages fetched from the source at once, at most.
pub const BATCH_MESSAGES: usize = 50;
/// Octets fetched from the source at once, at most (a larger message comes alone).
pub const BATCH_BYTES: u64 = 16 * 1024 * 1024;

/// How to run a transfer.
#[derive(Debug, Clone, Default)]
pub struct TransferOptions {
    /// Source folder (as the source spells it) → one of our folders, overriding the rules.
    pub folders: BTreeMap<String, String>,
    /// Source folders not to copy.
    pub skip: BTreeSet<String>,
    /// Copy at most this many messages in this run (the rest on the next run).
    pub limit: Option<usize>,
}

/// What the transfer tells its caller as it goes (a progress bar).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress<'a> {
    /// What this run will copy.
    Planned { messages: u64, bytes: u64 },
    /// One more message copied into `folder` (ours).
    Copied { folder: &'a str, bytes: u64 },
}

/// Why a transfer was refused or stopped.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("no mailbox {0}")]
    NoMailbox(String),
    #[error("mailbox {address} is {status}: nothing can be transferred into it")]
    NotInService {
        address: String,
        status: &'static str,
    },
    #[error(
        "--folder {source_folder}={target}: {target} is not one of our folders (INBOX, Sent, \
         Drafts, Junk, Trash)"
    )]
    UnknownTarget {
        source_folder: String,
        target: String,
    },
    #[error("the source has no folder {0:?} (named in --folder or --skip)")]
    UnknownSourceFolder(String),
    #[error(
        "these source folders hold messages and have no folder here: {}; map each with \
         --folder 'NAME=INBOX|Sent|Drafts|Junk|Trash' or leave it with --skip-folder NAME \
         (nothing was copied)",
        list_unmapped(.0)
    )]
    Unmapped(Vec<(String, usize)>),
    #[error(
        "{address} cannot hold what is left to copy: {needed} octets, and {used} of its \
         {limit} are in use; choose a larger plan or an expansion (pec mailbox plan) and run \
         the transfer again (nothing was copied)"
    )]
    DoesNotFit {
        address: String,
        needed: u64,
        used: u64,
        limit: u64,
    },
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(
        "{cause}; {copied} message(s) were copied before it: run the same transfer again to resume"
    )]
    Interrupted { copied: usize, cause: String },
    #[error(transparent)]
    Store(#[from] MailStoreError),
    #[error(transparent)]
    State(#[from] StateError),
}

fn list_unmapped(v: &[(String, usize)]) -> String {
    v.iter()
        .map(|(name, n)| format!("{name:?} ({n} messages)"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One source folder in the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FolderReport {
    /// The folder as the source names it.
    pub source: String,
    /// Our folder it went to; `None` when it was skipped.
    pub target: Option<String>,
    /// Why it went there (or was skipped): `inbox`, `special-use`, `name`, `mapped`,
    /// `skipped`, `not-selectable`, `empty`.
    pub rule: &'static str,
    /// Messages the source folder holds.
    pub messages: usize,
    /// Copied by this run.
    pub copied: usize,
    /// Copied by an earlier run.
    pub already: usize,
    /// Listed by the source but gone when fetched (expunged there meanwhile).
    pub vanished: usize,
    /// Octets copied by this run.
    pub bytes: u64,
}

/// What a transfer did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TransferReport {
    pub address: String,
    pub source: String,
    pub folders: Vec<FolderReport>,
    /// False when `limit` stopped the run with messages left to copy.
    pub complete: bool,
}

impl TransferReport {
    pub fn copied(&self) -> usize {
        self.folders.iter().map(|f| f.copied).sum()
    }

    pub fn already(&self) -> usize {
        self.folders.iter().map(|f| f.already).sum()
    }
}

/// The `append_once` key prefix of everything copied from the source `source_id`.
pub fn source_prefix(source_id: &str) -> String {
    format!("xfer/{}/", short_hash(source_id))
}

fn short_hash(s: &str) -> String {
    let d = Sha256::digest(s.as_bytes());
    d[..8].iter().map(|b| format!("{b:02x}")).collect()
}

fn message_key(prefix: &str, folder: &str, uid_validity: u32, uid: u32) -> String {
    format!("{prefix}{}/{uid_validity}/{uid}", short_hash(folder))
}

/// Where a source folder goes by the rules (no caller mapping): our folder and the rule.
pub fn place(folder: &SourceFolder) -> Option<(&'static str, &'static str)> {
    if mailstore::is_inbox(&folder.name) {
        return Some((INBOX, "inbox"));
    }
    if let Some(use_) = folder.special_use {
        return Some((ours(use_), "special-use"));
    }
    let leaf = match folder.delimiter {
        Some(d) => folder.name.rsplit(d).next().unwrap_or(&folder.name),
        None => &folder.name,
    };
    let leaf = leaf.trim().to_lowercase();
    let by_name = match leaf.as_str() {
        "sent" | "sent items" | "sent messages" | "sent mail" | "posta inviata" | "inviata"
        | "inviati" | "elementi inviati" | "messaggi inviati" => SpecialUse::Sent,
        "drafts" | "draft" | "bozze" | "bozza" => SpecialUse::Drafts,
        "junk" | "spam" | "junk e-mail" | "junk email" | "posta indesiderata" => SpecialUse::Junk,
        "trash" | "deleted items" | "deleted messages" | "cestino" | "posta eliminata"
        | "elementi eliminati" => SpecialUse::Trash,
        _ => return None,
    };
    Some((ours(by_name), "name"))
}

fn ours(use_: SpecialUse) -> &'static str {
    DEFAULT_FOLDERS
        .iter()
        .find(|(_, u)| *u == Some(use_))
        .map(|(name, _)| *name)
        .unwrap_or(INBOX)
}

fn our_folder(name: &str) -> Option<&'static str> {
    DEFAULT_FOLDERS
        .iter()
        .map(|(n, _)| *n)
        .find(|n| n.eq_ignore_ascii_case(name))
}

struct Planned {
    report: FolderReport,
    uid_validity: u32,
    /// UIDs still to copy, with their listed sizes.
    todo: Vec<(u32, u64)>,
}

/// Copies the source mailbox into `address` (see the module documentation).
pub async fn transfer<Db, Ms, Src>(
    state: &Db,
    store: &Ms,
    source: &mut Src,
    admin: &Admin,
    address: &str,
    options: &TransferOptions,
    progress: &mut (dyn FnMut(Progress<'_>) + Send),
) -> Result<TransferReport, TransferError>
where
    Db: StateStore,
    Ms: MailStore,
    Src: TransferSource,
{
    let mailbox = match state.mailbox(address).await? {
        Some(m) if admin.sees(&m.tenant) => m,
        _ => return Err(TransferError::NoMailbox(address.to_owned())),
    };
    if mailbox.status == MailboxStatus::Revoked {
        return Err(TransferError::NotInService {
            address: mailbox.address.clone(),
            status: mailbox.status.as_str(),
        });
    }
    let address = mailbox.address.as_str();
    for (from, to) in &options.folders {
        if our_folder(to).is_none() {
            return Err(TransferError::UnknownTarget {
                source_folder: from.clone(),
                target: to.clone(),
            });
        }
    }

    let folders = source.folders().await?;
    for named in options.folders.keys().chain(options.skip.iter()) {
        if !folders.iter().any(|f| &f.name == named) {
            return Err(TransferError::UnknownSourceFolder(named.clone()));
        }
    }
    let prefix = source_prefix(&source.id());
    let done = store.appended_keys(address, &prefix).await?;

    // Plan: every folder placed and listed before anything is copied.
    let mut plan = Vec::new();
    let mut unmapped = Vec::new();
    for folder in &folders {
        let mut report = FolderReport {
            source: folder.name.clone(),
            target: None,
            rule: "skipped",
            messages: 0,
            copied: 0,
            already: 0,
            vanished: 0,
            bytes: 0,
        };
        if !folder.selectable {
            report.rule = "not-selectable";
            plan.push(Planned {
                report,
                uid_validity: 0,
                todo: Vec::new(),
            });
            continue;
        }
        if options.skip.contains(&folder.name) {
            plan.push(Planned {
                report,
                uid_validity: 0,
                todo: Vec::new(),
            });
            continue;
        }
        let listing = source.list(&folder.name).await?;
        report.messages = listing.entries.len();
        let placed = match options.folders.get(&folder.name) {
            Some(to) => our_folder(to).map(|t| (t, "mapped")),
            None => place(folder),
        };
        let Some((target, rule)) = placed else {
            if listing.entries.is_empty() {
                report.rule = "empty";
                plan.push(Planned {
                    report,
                    uid_validity: listing.uid_validity,
                    todo: Vec::new(),
                });
            } else {
                unmapped.push((folder.name.clone(), listing.entries.len()));
            }
            continue;
        };
        report.target = Some(target.to_owned());
        report.rule = rule;
        let mut todo = Vec::new();
        for e in &listing.entries {
            if done.contains(&message_key(
                &prefix,
                &folder.name,
                listing.uid_validity,
                e.uid,
            )) {
                report.already += 1;
            } else {
                todo.push((e.uid, e.size));
            }
        }
        plan.push(Planned {
            report,
            uid_validity: listing.uid_validity,
            todo,
        });
    }
    if !unmapped.is_empty() {
        return Err(TransferError::Unmapped(unmapped));
    }

    // What is left must fit, all of it (a --limit run must not half fill a mailbox that
    // cannot take the rest); then this run's share.
    let needed: u64 = plan
        .iter()
        .flat_map(|p| p.todo.iter().map(|(_, size)| *size))
        .sum();
    let mut budget = options.limit.unwrap_or(usize::MAX);
    let mut complete = true;
    for p in &mut plan {
        if p.todo.len() > budget {
            p.todo.truncate(budget);
            complete = false;
        }
        budget -= p.todo.len();
    }
    let messages: usize = plan.iter().map(|p| p.todo.len()).sum();
    let this_run: u64 = plan
        .iter()
        .flat_map(|p| p.todo.iter().map(|(_, size)| *size))
        .sum();
    let quota = store.quota(address).await?;
    if quota.used.saturating_add(needed) > quota.limit {
        return Err(TransferError::DoesNotFit {
            address: address.to_owned(),
            needed,
            used: quota.used,
            limit: quota.limit,
        });
    }
    progress(Progress::Planned {
        messages: messages as u64,
        bytes: this_run,
    });

    // Copy, folder by folder, in batches, by increasing UID.
    let mut copied = 0;
    for p in &mut plan {
        let Some(target) = p.report.target.clone() else {
            continue;
        };
        let origin = if mailstore::is_inbox(&target) {
            Origin::Delivered
        } else {
            Origin::Appended
        };
        let mut rest = p.todo.as_slice();
        while !rest.is_empty() {
            let mut n = 0;
            let mut bytes = 0;
            while n < rest.len()
                && n < BATCH_MESSAGES
                && (n == 0 || bytes + rest[n].1 <= BATCH_BYTES)
            {
                bytes += rest[n].1;
                n += 1;
            }
            let (batch, later) = rest.split_at(n);
            rest = later;
            let uids: Vec<u32> = batch.iter().map(|(uid, _)| *uid).collect();
            let fetched = source
                .fetch(&p.report.source, p.uid_validity, &uids)
                .await
                .map_err(|e| interrupted(copied, e))?;
            let got: BTreeSet<u32> = fetched.iter().map(|m| m.uid).collect();
            p.report.vanished += uids.iter().filter(|u| !got.contains(u)).count();
            for m in fetched {
                if !uids.contains(&m.uid) {
                    continue;
                }
                let key = message_key(&prefix, &p.report.source, p.uid_validity, m.uid);
                let size = m.bytes.len() as u64;
                let mut flags = m.flags;
                flags.remove("\\Recent");
                let (_, fresh) = store
                    .append_once(
                        address,
                        &target,
                        &key,
                        m.bytes,
                        flags,
                        m.internal_date,
                        origin,
                    )
                    .await
                    .map_err(|e| interrupted(copied, e))?;
                if fresh {
                    p.report.copied += 1;
                    p.report.bytes += size;
                    copied += 1;
                } else {
                    p.report.already += 1;
                }
                progress(Progress::Copied {
                    folder: &target,
                    bytes: size,
                });
            }
        }
    }
    Ok(TransferReport {
        address: address.to_owned(),
        source: source.id(),
        folders: plan.into_iter().map(|p| p.report).collect(),
        complete,
    })
}

fn interrupted(copied: usize, e: impl std::fmt::Display) -> TransferError {
    TransferError::Interrupted {
        copied,
        cause: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use pec_ports::mailstore::{Flags, MemoryMailStore};
    use pec_ports::transfer::MemorySource;
    use pec_ports::{Mailbox, MemoryState};

    const ADDR: &str = "mario.rossi@ordine.example.test";

    fn at(s: i64) -> chrono::DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 3, 4, 5, 6, 7).unwrap() + chrono::Duration::seconds(s)
    }

    fn msg(
        tag: &str,
        size: usize,
        flags: &[&str],
        s: i64,
    ) -> (Vec<u8>, Flags, chrono::DateTime<Utc>) {
        let mut b = format!("Subject: {tag}\r\n\r\n").into_bytes();
        b.resize(size.max(b.len()), b'x');
        (b, flags.iter().map(|f| (*f).to_owned()).collect(), at(s))
    }

    fn mailbox(status: MailboxStatus) -> Mailbox {
        Mailbox {
            address: ADDR.into(),
            tenant: "t1".into(),
            plan: pec_core::plan::Plan::Gold,
            expansions_gb: 0,
            quota_bytes: 0,
            used_bytes: 0,
            password_hash: "x".into(),
            locked: false,
            status,
            member: None,
            status_note: None,
            agreement_accepted_at: None,
            refuse_ordinary: false,
            lock: None,
            ordinary_spam: Default::default(),
            sms: None,
            created_at: at(0),
        }
    }

    async fn setup(quota: u64) -> (MemoryState, MemoryMailStore) {
        let state = MemoryState::default();
        state
            .create_mailbox(&mailbox(MailboxStatus::Pending))
            .await
            .unwrap();
        let store = MemoryMailStore::default();
        store.create_mailbox(ADDR, quota);
        (state, store)
    }

    fn source() -> MemorySource {
        MemorySource::new("imaps://mario@imaps.other.example:993")
            .folder(
                "INBOX",
                None,
                7,
                (0..5)
                    .map(|i| {
                        msg(
                            &format!("in {i}"),
                            100,
                            if i % 2 == 0 { &["\\Seen"] } else { &[] },
                            i,
                        )
                    })
                    .collect(),
            )
            .folder(
                "INBOX/Posta inviata",
                None,
                8,
                vec![msg("sent", 120, &["\\Seen", "$Forwarded"], 10)],
            )
            .folder(
                "Archivio",
                Some(SpecialUse::Trash),
                9,
                vec![msg("old", 50, &["\\Deleted", "\\Seen"], 20)],
            )
            .folder("Vuota", None, 10, vec![])
    }

    async fn run(
        state: &MemoryState,
        store: &MemoryMailStore,
        src: &mut MemorySource,
        options: &TransferOptions,
    ) -> Result<TransferReport, TransferError> {
        transfer(
            state,
            store,
            src,
            &Admin::Operator,
            ADDR,
            options,
            &mut |_| {},
        )
        .await
    }

    #[tokio::test]
    async fn copies_bytes_dates_flags_into_the_right_folders_once() {
        let (state, store) = setup(10_000).await;
        let mut src = source();
        let report = run(&state, &store, &mut src, &TransferOptions::default())
            .await
            .unwrap();
        assert_eq!(
            (report.copied(), report.already(), report.complete),
            (7, 0, true)
        );
        let inbox = store.messages(ADDR, INBOX).await.unwrap();
        assert_eq!(inbox.len(), 5);
        for (m, (bytes, flags, date)) in inbox.iter().zip((0..5).map(|i| {
            msg(
                &format!("in {i}"),
                100,
                if i % 2 == 0 { &["\\Seen"] } else { &[] },
                i,
            )
        })) {
            assert_eq!(
                store.read(ADDR, INBOX, m.uid).await.unwrap().unwrap(),
                bytes
            );
            assert_eq!(
                (&m.flags, m.internal_date, m.origin),
                (&flags, date, Origin::Delivered)
            );
        }
        let sent = store.messages(ADDR, "Sent").await.unwrap();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].origin, Origin::Appended);
        assert!(sent[0].flags.contains("$Forwarded"));
        let trash = store.messages(ADDR, "Trash").await.unwrap();
        assert!(
            trash[0].flags.contains("\\Deleted"),
            "flags kept as they were"
        );
        assert_eq!(store.quota(ADDR).await.unwrap().used, 5 * 100 + 120 + 50);
        let rules: Vec<_> = report
            .folders
            .iter()
            .map(|f| (f.source.as_str(), f.rule))
            .collect();
        assert_eq!(
            rules,
            [
                ("INBOX", "inbox"),
                ("INBOX/Posta inviata", "name"),
                ("Archivio", "special-use"),
                ("Vuota", "empty")
            ]
        );

        let again = run(&state, &store, &mut src, &TransferOptions::default())
            .await
            .unwrap();
        assert_eq!((again.copied(), again.already()), (0, 7));
        assert_eq!(store.quota(ADDR).await.unwrap().used, 670, "nothing twice");
    }

    #[tokio::test]
    async fn resumes_after_a_break_and_a_limit() {
        let (state, store) = setup(10_000).await;
        let mut src = source();
        src.break_after = Some(3);
        let e = run(&state, &store, &mut src, &TransferOptions::default())
            .await
            .unwrap_err();
        assert!(
            matches!(e, TransferError::Interrupted { copied: 3, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("run the same transfer again"), "{e}");
        let mut src = source();
        let limited = TransferOptions {
            limit: Some(2),
            ..TransferOptions::default()
        };
        let r = run(&state, &store, &mut src, &limited).await.unwrap();
        assert_eq!((r.copied(), r.already(), r.complete), (2, 3, false));
        let r = run(&state, &store, &mut src, &TransferOptions::default())
            .await
            .unwrap();
        assert_eq!((r.copied(), r.already(), r.complete), (2, 5, true));
        assert_eq!(store.messages(ADDR, INBOX).await.unwrap().len(), 5);
        assert_eq!(store.quota(ADDR).await.unwrap().used, 670);
    }

    #[tokio::test]
    async fn refuses_what_does_not_fit_and_unmapped_folders_before_copying() {
        let (state, store) = setup(600).await;
        let mut src = source();
        let e = run(&state, &store, &mut src, &TransferOptions::default())
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                TransferError::DoesNotFit {
                    needed: 670,
                    used: 0,
                    limit: 600,
                    ..
                }
            ),
            "{e}"
        );
        assert_eq!(store.quota(ADDR).await.unwrap().used, 0);
        let limited = TransferOptions {
            limit: Some(2),
            ..TransferOptions::default()
        };
        let e = run(&state, &store, &mut src, &limited).await.unwrap_err();
        assert!(
            matches!(e, TransferError::DoesNotFit { needed: 670, .. }),
            "a --limit run is refused when the rest cannot follow: {e}"
        );
        assert_eq!(store.quota(ADDR).await.unwrap().used, 0);

        let (state, store) = setup(10_000).await;
        let mut src = source().folder("Clienti", None, 11, vec![msg("c", 40, &[], 30)]);
        let e = run(&state, &store, &mut src, &TransferOptions::default())
            .await
            .unwrap_err();
        assert!(e.to_string().contains("\"Clienti\" (1 messages)"), "{e}");
        assert_eq!(store.quota(ADDR).await.unwrap().used, 0, "nothing copied");
        let mapped = TransferOptions {
            folders: [("Clienti".to_owned(), "inbox".to_owned())].into(),
            ..TransferOptions::default()
        };
        let r = run(&state, &store, &mut src, &mapped).await.unwrap();
        assert_eq!(r.copied(), 8);
        let bad = TransferOptions {
            folders: [("Clienti".to_owned(), "Archive".to_owned())].into(),
            ..TransferOptions::default()
        };
        assert!(matches!(
            run(&state, &store, &mut src, &bad).await.unwrap_err(),
            TransferError::UnknownTarget { .. }
        ));
        let ghost = TransferOptions {
            skip: ["Nessuna".to_owned()].into(),
            ..TransferOptions::default()
        };
        assert!(matches!(
            run(&state, &store, &mut src, &ghost).await.unwrap_err(),
            TransferError::UnknownSourceFolder(_)
        ));
    }

    #[tokio::test]
    async fn a_revoked_or_unknown_mailbox_gets_nothing() {
        let state = MemoryState::default();
        state
            .create_mailbox(&mailbox(MailboxStatus::Revoked))
            .await
            .unwrap();
        let store = MemoryMailStore::default();
        store.create_mailbox(ADDR, 10_000);
        let mut src = source();
        assert!(matches!(
            run(&state, &store, &mut src, &TransferOptions::default())
                .await
                .unwrap_err(),
            TransferError::NotInService { .. }
        ));
        let e = transfer(
            &state,
            &store,
            &mut src,
            &Admin::Operator,
            "nobody@x.test",
            &TransferOptions::default(),
            &mut |_| {},
        )
        .await
        .unwrap_err();
        assert!(matches!(e, TransferError::NoMailbox(_)));
    }
}
