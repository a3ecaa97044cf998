//! The [`MailStore`] conformance suite: one set of named cases that every mailbox store must
//! pass (the memory fake in `pec-ports`' tests, the DynamoDB + S3 store in `pec-integration`).
//!
//! Plain async code over the [`MailStore`] trait and a small [`MailStoreHarness`] (make a
//! mailbox with a quota; deliver a message the way the provider does): no runtime, no AWS. A
//! backend's harness runs each [`Case`] (one trial per case, so every case is reported by name)
//! or all of them with [`run_all`]. Every case works on mailboxes of its own namespace derived
//! from the run's `ns` ([`Case::ns`]: `local@<ns>-<case>.example`), so a run on shared tables and
//! buckets collides neither with other data nor with itself (cases may run in parallel).
//!
//! What is covered, from the trait's documentation: the [`DEFAULT_FOLDERS`] in order with
//! their special use; an unknown address as a mailbox with no folders, every failure on it the
//! same [`MailStoreError::NoFolder`] as on a missing folder; `INBOX` in any case, other names
//! exact; addresses normalised, mailboxes apart; UIDVALIDITY non-zero and stable; UIDs
//! strictly increasing, UIDNEXT the next UID and never going back (expunges included); the
//! counters after appends and flag changes; exact bytes (a 1 MiB 8-bit message with CRLF);
//! `store_flags` Add / Remove / Replace (absent UIDs skipped, flags compared as stored);
//! `expunge` of `\Deleted` only (among `only`), freeing exactly their octets; copy (new UIDs,
//! same flags, date and origin, quota counted, all or nothing) and move (quota unchanged);
//! [`MailStoreError::OverQuota`] writing nothing, to the byte; the quota as the sum of sizes
//! after a mixed sequence; the change counter growing on every change and not on reads; and
//! appends racing into one folder ([`CONCURRENT_APPENDS`] at once, deliveries among them)
//! while a reader polls UIDNEXT and the listing.

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Instant;

use chrono::{DateTime, TimeZone, Utc};

use super::*;
use crate::state::conformance::join2;
pub use crate::state::conformance::{CaseFuture, CaseResult};

/// Appends the concurrency cases start at once into one folder.
pub const CONCURRENT_APPENDS: usize = 20;
/// The size of the large message the `read_exact_bytes` case writes and reads back.
pub const LARGE_MESSAGE: usize = 1024 * 1024;

/// What a backend gives the suite besides its [`MailStore`]: making a mailbox, and delivering.
///
/// Mailboxes are made by the provisioning and delivery paths, not through the port, so each
/// backend says how. The suite calls [`MailStoreHarness::mailbox`] once for each address a case
/// uses, before the case touches it; the address is new (its domain is the case's namespace).
pub trait MailStoreHarness: Send + Sync {
    /// The store under test.
    type Store: MailStore;

    /// The store under test (the same one on every call).
    fn store(&self) -> &Self::Store;

    /// Makes the mailbox `address` (lower case, as the suite spells it) with the
    /// [`DEFAULT_FOLDERS`], empty, and a quota of `quota_bytes` octets.
    fn mailbox(
        &self,
        address: &str,
        quota_bytes: u64,
    ) -> impl Future<Output = Result<(), String>> + Send;

    /// Delivers `bytes` into the INBOX of `address` the way the provider does (the memory
    /// store: [`MailStore::append`] to [`INBOX`] with no flags, now, [`Origin::Delivered`]).
    /// The message is then in INBOX with [`Origin::Delivered`], without `\Seen` or `\Deleted`,
    /// read back as `bytes` and counted in the quota; the result is where it went.
    fn deliver(
        &self,
        address: &str,
        bytes: Vec<u8>,
    ) -> impl Future<Output = Result<Appended, String>> + Send;
}

/// One named case of the suite.
pub struct Case<H> {
    /// The case's name (a trial name).
    pub name: &'static str,
    run: for<'a> fn(&'a H, &'a str) -> CaseFuture<'a>,
}

impl<H> Clone for Case<H> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<H> Copy for Case<H> {}

impl<H: MailStoreHarness> Case<H> {
    /// The namespace this case works under, within the run's `run_ns` (its mailboxes are
    /// `local@<namespace>.example`).
    pub fn ns(&self, run_ns: &str) -> String {
        let ns: String = run_ns
            .trim()
            .to_ascii_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        format!("{ns}-{}", self.name.replace('_', "-"))
    }

    /// Runs the case against `harness` under the run's namespace `run_ns`.
    pub fn run<'a>(&self, harness: &'a H, run_ns: &str) -> CaseFuture<'a> {
        let ns = self.ns(run_ns);
        let run = self.run;
        Box::pin(async move { run(harness, &ns).await })
    }
}

/// Every case, in a stable order.
pub fn cases<H: MailStoreHarness>() -> Vec<Case<H>> {
    macro_rules! cases {
        ($($case:ident),* $(,)?) => {
            vec![$(Case { name: stringify!($case), run: |h, ns| Box::pin($case(h, ns)) }),*]
        };
    }
    cases![
        default_folders,
        unknown_address_is_no_folder,
        inbox_any_case,
        address_normalised_mailboxes_apart,
        uid_validity_stable,
        uids_increase_uid_next_never_back,
        append_and_counters,
        delivered_into_inbox,
        read_exact_bytes,
        store_flags_changes,
        expunge_only_deleted,
        copy_semantics,
        copy_over_quota_all_or_nothing,
        move_semantics,
        over_quota_append_writes_nothing,
        quota_is_sum_of_sizes,
        change_counter_grows,
        append_once_exactly_once,
        concurrent_appends,
        concurrent_deliveries_and_appends,
    ]
}

/// Runs every case in turn (each under its own namespace within `ns`).
pub async fn run_all<H: MailStoreHarness>(harness: &H, ns: &str) -> Vec<CaseResult> {
    let mut results = Vec::new();
    for case in cases::<H>() {
        let start = Instant::now();
        let outcome = case.run(harness, ns).await;
        results.push(CaseResult {
            name: case.name,
            outcome,
            elapsed: start.elapsed(),
        });
    }
    results
}

// ------------------------------------------------------------------------------ helpers

type Outcome = Result<(), String>;

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

macro_rules! ensure_eq {
    ($got:expr, $want:expr, $($fmt:tt)+) => {{
        let (got, want) = (&$got, &$want);
        if got != want {
            return Err(format!(
                "{}:\n   got: {:?}\n  want: {:?}",
                format!($($fmt)+),
                got,
                want
            ));
        }
    }};
}

/// `?` with the operation's name on a store error.
trait Op<T> {
    fn op(self, what: &str) -> Result<T, String>;
}

impl<T> Op<T> for Result<T, MailStoreError> {
    fn op(self, what: &str) -> Result<T, String> {
        self.map_err(|e| format!("{what}: {e}"))
    }
}

/// Every future to completion, polled together (no runtime needed): their requests are in
/// flight at the same time.
async fn join_all<F: Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(v) => *output = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

/// Lets the other futures of a [`join_all`] / [`join2`] run (once), on any runtime.
async fn yield_now() {
    let mut yielded = false;
    poll_fn(|cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await;
}

fn addr(ns: &str, local: &str) -> String {
    format!("{local}@{ns}.example")
}

/// `address` as a caller might spell it (case, surrounding blanks).
fn shout(address: &str) -> String {
    format!("  {} ", address.to_ascii_uppercase())
}

/// An internal date at whole seconds (any store keeps those exactly).
fn at(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 5, 6, 7, 8, 9).unwrap() + chrono::Duration::seconds(secs)
}

fn flags(list: &[&str]) -> Flags {
    list.iter().map(|s| (*s).to_owned()).collect()
}

/// A message of exactly `size` octets (at least 40): headers naming `tag`, CRLF lines.
fn sized(tag: &str, size: usize) -> Vec<u8> {
    let mut v = format!("From: conformance@example.test\r\nSubject: {tag}\r\n\r\n").into_bytes();
    v.truncate(size.saturating_sub(2));
    v.resize(size.saturating_sub(2), b'x');
    v.extend_from_slice(&b"\r\n"[..size.min(2)]);
    v
}

/// [`LARGE_MESSAGE`] octets: headers, then CRLF lines of every byte value but NUL, CR and LF.
fn large_message() -> Vec<u8> {
    let mut v = b"From: conformance@example.test\r\nSubject: large\r\nMIME-Version: 1.0\r\n\
        Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        .to_vec();
    let alphabet: Vec<u8> = (1..=255u8)
        .filter(|b| !matches!(b, b'\r' | b'\n'))
        .collect();
    let mut next = alphabet.iter().copied().cycle();
    while v.len() < LARGE_MESSAGE {
        v.extend(next.by_ref().take(76));
        v.extend_from_slice(b"\r\n");
    }
    v.truncate(LARGE_MESSAGE - 2);
    if v.last() == Some(&b'\r') {
        v.pop();
        v.push(b'x');
    }
    v.extend_from_slice(b"\r\n");
    v
}

async fn setup<H: MailStoreHarness>(h: &H, address: &str, quota: u64) -> Outcome {
    h.mailbox(address, quota)
        .await
        .map_err(|e| format!("harness: mailbox {address}: {e}"))
}

async fn deliver<H: MailStoreHarness>(
    h: &H,
    address: &str,
    bytes: &[u8],
) -> Result<Appended, String> {
    h.deliver(address, bytes.to_vec())
        .await
        .map_err(|e| format!("harness: deliver to {address}: {e}"))
}

/// Appends `bytes` with `flags` at `at(secs)` as the owner would.
async fn put<S: MailStore>(
    s: &S,
    address: &str,
    folder: &str,
    bytes: &[u8],
    with: &[&str],
    secs: i64,
) -> Result<Appended, String> {
    s.append(
        address,
        folder,
        bytes.to_vec(),
        flags(with),
        at(secs),
        Origin::Appended,
    )
    .await
    .op(&format!("append to {folder}"))
}

async fn info<S: MailStore>(s: &S, address: &str, folder: &str) -> Result<FolderInfo, String> {
    s.folder(address, folder)
        .await
        .op(&format!("folder {folder}"))?
        .ok_or_else(|| format!("no folder {folder:?} in {address}"))
}

/// The folder's messages, checked to be by strictly increasing UID.
async fn listed<S: MailStore>(
    s: &S,
    address: &str,
    folder: &str,
) -> Result<Vec<MessageMeta>, String> {
    let list = s
        .messages(address, folder)
        .await
        .op(&format!("messages of {folder}"))?;
    for pair in list.windows(2) {
        ensure!(
            pair[0].uid < pair[1].uid,
            "messages of {folder} not by increasing UID: {} then {}",
            pair[0].uid,
            pair[1].uid
        );
    }
    Ok(list)
}

async fn uids<S: MailStore>(s: &S, address: &str, folder: &str) -> Result<Vec<u32>, String> {
    Ok(listed(s, address, folder)
        .await?
        .iter()
        .map(|m| m.uid)
        .collect())
}

async fn meta<S: MailStore>(
    s: &S,
    address: &str,
    folder: &str,
    uid: u32,
) -> Result<MessageMeta, String> {
    listed(s, address, folder)
        .await?
        .into_iter()
        .find(|m| m.uid == uid)
        .ok_or_else(|| format!("no UID {uid} in {folder}"))
}

async fn used<S: MailStore>(s: &S, address: &str) -> Result<u64, String> {
    Ok(s.quota(address).await.op("quota")?.used)
}

async fn counter<S: MailStore>(s: &S, address: &str) -> Result<u64, String> {
    s.change_counter(address).await.op("change_counter")
}

/// `(name, messages, unseen)` of every folder.
async fn counts<S: MailStore>(s: &S, address: &str) -> Result<Vec<(String, u32, u32)>, String> {
    Ok(s.folders(address)
        .await
        .op("folders")?
        .into_iter()
        .map(|f| (f.name, f.messages, f.unseen))
        .collect())
}

/// quota().used is the sum of the sizes of every message of every folder.
async fn quota_matches<S: MailStore>(s: &S, address: &str, when: &str) -> Outcome {
    let mut sum = 0;
    for f in s.folders(address).await.op("folders")? {
        sum += listed(s, address, &f.name)
            .await?
            .iter()
            .map(|m| m.size)
            .sum::<u64>();
    }
    ensure_eq!(
        used(s, address).await?,
        sum,
        "quota used vs the sizes of every folder's messages, {when}"
    );
    Ok(())
}

/// The change counter moved past `last` (which becomes the new reading).
async fn grew<S: MailStore>(s: &S, address: &str, last: &mut u64, what: &str) -> Outcome {
    let now = counter(s, address).await?;
    ensure!(
        now > *last,
        "change_counter after {what}: {now}, was {last}"
    );
    *last = now;
    Ok(())
}

/// The read returns exactly `want` (reported by length and first difference, not in full).
fn same_bytes(got: Option<Vec<u8>>, want: &[u8], what: &str) -> Outcome {
    let Some(got) = got else {
        return Err(format!("{what}: no message"));
    };
    if got != want {
        let at = got.iter().zip(want).position(|(a, b)| a != b);
        return Err(format!(
            "{what}: {} octets read, {} written, first difference at {at:?}",
            got.len(),
            want.len()
        ));
    }
    Ok(())
}

/// The call failed with [`MailStoreError::NoFolder`] naming `folder`.
fn no_folder<T: Debug>(r: Result<T, MailStoreError>, folder: &str, what: &str) -> Outcome {
    match r {
        Err(MailStoreError::NoFolder(f)) if f == folder => Ok(()),
        other => Err(format!("{what}: got {other:?}, want NoFolder({folder:?})")),
    }
}

/// The call failed with exactly this [`MailStoreError::OverQuota`].
fn over_quota<T: Debug>(
    r: Result<T, MailStoreError>,
    used: u64,
    adding: u64,
    limit: u64,
    what: &str,
) -> Outcome {
    let want = MailStoreError::OverQuota {
        used,
        adding,
        limit,
    };
    match r {
        Err(e) if e == want => Ok(()),
        other => Err(format!("{what}: got {other:?}, want Err({want:?})")),
    }
}

fn sorted(mut v: Vec<(u32, Flags)>) -> Vec<(u32, Flags)> {
    v.sort();
    v
}

/// `m` with another UID (a copy or a moved message: everything else the same).
fn renumbered(m: &MessageMeta, uid: u32) -> MessageMeta {
    MessageMeta { uid, ..m.clone() }
}

// ------------------------------------------------------------------------------ cases

/// folders() lists the DEFAULT_FOLDERS in order with their special use, empty, non-zero
/// UIDVALIDITY; folder() finds each by its exact name and nothing by another spelling.
async fn default_folders<H: MailStoreHarness>(h: &H, ns: &str) -> Outcome {
    let (s, a) = (h.store(), addr(ns, "box"));
    setup(h, &a, 1000).await?;
    let all = s.folders(&a).await.op("folders")?;
    let names: Vec<(&str, Option<SpecialUse>)> = all
        .iter()
        .map(|f| (f.name.as_str(), f.special_use))
        .collect();
    ensure_eq!(
        names,
        DEFAULT_FOLDERS.to_vec(),
        "folders and their special use"
    );
    for f in &all {
        ensure!(f.uid_validity != 0, "{}: UIDVALIDITY 0", f.name);
        ensure!(f.uid_next >= 1, "{}: UIDNEXT 0", f.name);
        ensure_eq!(
            (f.messages, f.unseen),
            (0, 0),
            "{}: a new folder's counters",
            f.name
        );
        ensure_eq!(
            s.folder(&a, &f.name).await.op("folder")?,
            Some(f.clone()),
            "folder({}) vs its folders() entry",
            f.name
        );
        ensure_eq!(
            uids(s, &a, &f.name).await?,
            Vec::<u32>::new(),
            "{} lists",
            f.name
        );
    }
    for wrong in ["sent", "SENT", "Drafts ", " Junk", "Trash/", "Nope", ""] {
        ensure_eq!(
            s.folder(&a, wrong).await.op("folder")?,
            None,
            "folder({wrong:?}): names other than INBOX are exact"
        );
    }
    ensure_eq!(
        s.quota(&a).await.op("quota")?,
        Quota {
            used: 0,
            limit: 1000
        },
        "a new mailbox's quota"
    );
    Ok(())
}

/// An unknown address has no folders, and every call on it fails exactly as on a folder the
/// mailbox lacks: NoFolder naming the folder asked for (clients cannot tell the two apart).
async fn unknown_address_is_no_folder<H: MailStoreHarness>(h: &H, ns: &str) -> Outcome {
    let (s, known, nobody) = (h.store(), addr(ns, "box"), addr(ns, "nobody"));
    setup(h, &known, 10_000).await?;
    let m = sized("kept", 100);
    let x = put(s, &known, INBOX, &m, &[], 0).await?;
    let before = counts(s, &known).await?;

    ensure_eq!(
        s.folders(&nobody).await.op("folders")?,
        vec![],
        "folders of an unknown address"
    );
    ensure_eq!(
        s.folder(&nobody, INBOX).await.op("folder")?,
        None,
        "folder INBOX of an unknown address"
    );
    let seen = flags(&[SEEN]);
    for (who, f) in [(&nobody, INBOX), (&known, "Nope")] {
        let on = format!("on {who} folder {f}");
        no_folder(s.messages(who, f).await, f, &format!("messages {on}"))?;
        no_folder(s.read(who, f, x.uid).await, f, &format!("read {on}"))?;
        let r = s
            .append(who, f, m.clone(), Flags::new(), at(1), Origin::Appended)
            .await;
        no_folder(r, f, &format!("append {on}"))?;
        let r = s
            .store_flags(who, f, &[x.uid], FlagChange::Add, &seen)
            .await;
        no_folder(r, f, &format!("store_flags {on}"))?;
        no_folder(s.expunge(who, f, None).await, f, &format!("expunge {on}"))?;
        let r = s.copy(who, f, &[x.uid], "Trash").await;
        no_folder(r, f, &format!("copy from {on}"))?;
        let r = s.move_messages(who, f, &[x.uid], "Trash").await;
        no_folder(r, f, &format!("move from {on}"))?;
    }
    let r = s.copy(&known, INBOX, &[x.uid], "Nope").await;
    no_folder(r, "Nope", "copy to a missing folder")?;
    let r = s.move_messages(&known, INBOX, &[x.uid], "Nope").await;
    no_folder(r, "Nope", "move to a missing folder")?;

    ensure_eq!(
        s.folders(&nobody).await.op("folders")?,
        vec![],
        "the failed calls made nothing"
    );
    ensure_eq!(
        counts(s, &known).await?,
        before,
        "the known mailbox after the failed calls"
    );
    ensure_eq!(
        uids(s, &known, INBOX).await?,
        vec![x.uid],
        "INBOX after the failed calls"
    );
    ensure_eq!(
        used(s, &known).await?,
        m.len() as u64,
        "quota after the failed calls"
    );
    Ok(())
}

/// INBOX in any case names the inbox (reads, writes, copy and move ends) and is listed as
/// "INBOX"; other folder names are matched exactly.
async fn inbox_any_case<H: MailStoreHarness>(h: &H, ns: &str) -> Outcome {
    let (s, a) = (h.store(), addr(ns, "box"));
    setup(h, &a, 10_000).await?;
    let (m1, m2, m3) = (sized("one", 100), sized("two", 110), sized("three", 120));
    let x = put(s, &a, "inbox", &m1, &[], 1).await?;
    let y = put(s, &a, "InBoX", &m2, &[], 2).await?;
    let inbox = info(s, &a, "iNbOx").await?;
    ensure_eq!(inbox.name, INBOX, "folder(\"iNbOx\") is stored as");
    ensure_eq!(info(s, &a, INBOX).await?, inbox, "folder INBOX vs iNbOx");
    ensure_eq!(
        x.uid_validity,
        inbox.uid_validity,
        "append to \"inbox\" reports INBOX's"
    );
    ensure_eq!(inbox.messages, 2, "INBOX messages");
    ensure_eq!(
        uids(s, &a, "Inbox").await?,
        vec![x.uid, y.uid],
        "messages of \"Inbox\""
    );
    same_bytes(
        s.read(&a, "inbox", x.uid).await.op("read")?,
        &m1,
        "read from \"inbox\"",
    )?;

    let d = put(s, &a, "Drafts", &m3, &[], 3).await?;
    let copied = s
        .copy(&a, "Drafts", &[d.uid], "inbox")
        .await
        .op("copy to \"inbox\"")?;
    ensure_eq!(
        copied.uid_validity,
        inbox.uid_validity,
        "copy to \"inbox\" reports INBOX's"
    );
    ensure_eq!(copied.pairs.len(), 1, "copy to \"inbox\"");
    let moved = s
        .move_messages(&a, "inBOX", &[x.uid], "Trash")
        .await
        .op("move from \"inBOX\"")?;
    ensure_eq!(moved.pairs.len(), 1, "move from \"inBOX\"");
    ensure_eq!(
        uids(s, &a, INBOX).await?,
        vec![y.uid, copied.pairs[0].1],
        "INBOX after the copy in and the move out"
    );
    let set = s
        .store_flags(&a, "INBOX", &[y.uid], FlagChange::Add, &flags(&[DELETED]))
        .await
        .op("store_flags")?;
    ensure_eq!(set.len(), 1, "store_flags on \"INBOX\"");
    ensure_eq!(
        s.expunge(&a, "inbox", None).await.op("expunge")?,
        vec![y.uid],
        "expunge \"inbox\""
    );

    let r = s
        .append(
            &a,
            "drafts",
            m1.clone(),
            Flags::new(),
            at(4),
            Origin::Appended,
        )
        .await;
    no_folder(r, "drafts", "append to \"drafts\"")?;
    ensure_eq!(
        s.folder(&a, "trash").await.op("folder")?,
        None,
        "folder(\"trash\")"
    );
    let names: Vec<String> = s
        .folders(&a)
        .await
        .op("folders")?
        .into_iter()
        .map(|f| f.name)
        .collect();
    ensure_eq!(
        names.len(),
        DEFAULT_FOLDERS.len(),
        "no folder made by another spelling"
    );
    quota_matches(s, &a, "after the INBOX spellings").await
}

/// The address is normalised (case, blanks): every call reaches the same mailbox; two
/// mailboxes never see each other's messages or quota.
async fn address_normalised_mailboxes_apart<H: MailStoreHarness>(h: &H, ns: &str) -> Outcome {
    let (s, a, b) = (h.store(), addr(ns, "anna"), addr(ns, "bruno"));
    setup(h, &a, 10_000).await?;
    setup(h, &b, 20_000).await?;
    let (m1, m2) = (sized("to anna", 150), sized("to bruno", 170));
    let loud = shout(&a);
    let x = put(s, &loud, INBOX, &m1, &[], 1).await?;
    ensure_eq!(
        uids(s, &a, INBOX).await?,
        vec![x.uid],
        "INBOX of {a} after an append to {loud:?}"
    );
    same_bytes(
        s.read(&loud, INBOX, x.uid).await.op("read")?,
        &m1,
        "read via the loud address",
    )?;
    ensure_eq!(
        s.folders(&loud).await.op("folders")?,
        s.folders(&a).await.op("folders")?,
        "folders"
    );
    ensure_eq!(
        s.quota(&loud).await.op("quota")?,
        s.quota(&a).await.op("quota")?,
        "quota"
    );
    ensure_eq!(
        counter(s, &loud).await?,
        counter(s, &a).await?,
        "change_counter"
    );
    let set = s
        .store_flags(&loud, INBOX, &[x.uid], FlagChange::Add, &flags(&[SEEN]))
        .await
        .op("store_flags")?;
    ensure_eq!(
        set,
        vec![(x.uid, flags(&[SEEN]))],
        "store_flags via the loud address"
    );

    ensure_eq!(uids(s, &b, INBOX).await?, Vec::<u32>::new(), "{b}'s INBOX");
    ensure_eq!(
        s.quota(&b).await.op("quota")?,
        Quota {
            used: 0,
            limit: 20_000
        },
        "{b}'s quota"
    );
    let y = deliver(h, &b, &m2).await?;
    ensure_eq!(
        uids(s, &a, INBOX).await?,
        vec![x.uid],
        "{a}'s INBOX after a delivery to {b}"
    );
    ensure_eq!(uids(s, &b, INBOX).await?, vec![y.uid], "{b}'s INBOX");
    ensure_eq!(used(s, &a).await?, m1.len() as u64, "{a}'s quota");
    ensure_eq!(used(s, &b).await?, m2.len() as u64, "{b}'s quota");
    if x.uid == y.uid {
        same_bytes(
            s.read(&a, INBOX, x.uid).await.op("read")?,
            &m1,
            "{a}'s message",
        )?;
        same_bytes(
            s.read(&b, INBOX, y.uid).await.op("read")?,
            &m2,
            "{b}'s message",
        )?;
    }
    Ok(())
}

/// UIDVALIDITY is non-zero and the same on every read, through appends, flag changes,
/// expunges, copies and moves; append and copy/move report the folder's.
async fn uid_validity_stable<H: MailStoreHarness>(h: &H, ns: &str) -> Outcome {
    let (s, a) = (h.store(), addr(ns, "box"));
    setup(h, &a, 10_000).await?;
    let validities = |all: Vec<FolderInfo>| -> Vec<(String, u32)> {
        all.into_iter().map(|f| (f.name, f.uid_validity)).collect()
    };
    let before = validities(s.folders(&a).await.op("folders")?);
    ensure!(
        before.iter().all(|(_, v)| *v != 0),
        "a UIDVALIDITY is 0: {before:?}"
    );
    ensure_eq!(
        validities(s.folders(&a).await.op("folders")?),
        before,
        "UIDVALIDITY on a second read"
    );
    let of = |name: &str| {
        before
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
            .unwrap_or_default()
    };

    let x = put(s, &a, INBOX, &sized("x", 100), &[], 1).await?;
    ensure_eq!(
        x.uid_validity,
        of(INBOX),
        "append reports INBOX's UIDVALIDITY"
    );
    let d = deliver(h, &a, &sized("delivered", 120)).await?;
    ensure_eq!(
        d.uid_validity,
        of(INBOX),
        "a delivery reports INBOX's UIDVALIDITY"
    );
    let j = put(s, &a, "Junk", &sized("junk", 90), &[], 2).await?;
    ensure_eq!(
        j.uid_validity,
        of("Junk"),
        "append reports Junk's UIDVALIDITY"
    );
    s.store_flags(&a, INBOX, &[x.uid], FlagChange::Add, &flags(&[DELETED]))
        .await
        .op("store_flags")?;
    s.expunge(&a, INBOX, None).await.op("expunge")?;
    let c = s.copy(&a, INBOX, &[d.uid], "Sent").await.op("copy")?;
    ensure_eq!(
        c.uid_validity,
        of("Sent"),
        "copy reports Sent's UIDVALIDITY"
    );
    let m = s
        .move_messages(&a, INBOX, &[d.uid], "Trash")
        .await
        .op("move")?;
    ensure_eq!(
        m.uid_validity,
        of("Trash"),
        "move reports Trash's UIDVALIDITY"
    );

    ensure_eq!(
        validities(s.folders(&a).await.op("folders")?),
        before,
        "UIDVALIDITY after appends, flags, expunge, copy and move"
    );
    for (name, v) in &before {
        ensure_eq!(
            info(s, &a, name).await?.uid_validity,
            *v,
            "folder({name}) UIDVALIDITY"
        );
    }
    Ok(())
}

/// Each append takes the folder's UIDNEXT, and UIDNEXT moves past it; UIDNEXT never goes
/// back, even when the highest messages or all of them are expunged; UIDs are never reused.
async fn uids_increase_uid_next_never_back<H: MailStoreHarness>(h: &H, ns: &str) -> Outcome {
    let (s, a) = (h.store(), addr(ns, "box"));
    setup(h, &a, 10_000).await?;
    let mut taken: Vec<u32> = Vec::new();
    for i in 0..4 {
        let next = info(s, &a, "Drafts").await?.uid_next;
        let ap = put(s, &a, "Drafts", &sized(&format!("m{i}"), 100), &[], i).await?;
        ensure_eq!(ap.uid, next, "append {i} takes UIDNEXT");
        ensure!(
            taken.last().is_none_or(|last| *last < ap.uid),
            "UID {} after {taken:?}",
            ap.uid
        );
        ensure_eq!(
            info(s, &a, "Drafts").await?.uid_next,
            ap.uid + 1,
            "UIDNEXT after append {i}"
        );
        taken.push(ap.uid);
    }
    let last = taken[3];
    let deleted = flags(&[DELETED]);
    s.store_flags(&a, "Drafts", &[last], FlagChange::Add, &deleted)
        .await
        .op("store_flags")?;
    ensure_eq!(
        s.expunge(&a, "Drafts", None).await.op("expunge")?,
        vec![last],
        "expunge the highest"
    );
    ensure_eq!(
        info(s, &a, "Drafts").await?.uid_next,
        last + 1,
        "UIDNEXT after expunging the highest message"
    );
    s.store_flags(&a, "Drafts", &taken[..3], FlagChange::Add, &deleted)
        .await
        .op("store_flags")?;
    ensure_eq!(
        s.expunge(&a, "Drafts", None).await.op("expunge")?,
        taken[..3].to_vec(),
        "expunge all"
    );
    let empty = info(s, &a, "Drafts").await?;
    ensure_eq!(
        (empty.messages, empty.uid_next),
        (0, last + 1),
        "Drafts emptied: messages, UIDNEXT"
    );
    let again = put(s, &a, "Drafts", &sized("again", 100), &[], 9).await?;
    ensure_eq!(
        again.uid,
        last + 1,
        "the UID after an expunge of everything (never reused)"
    );
    ensure_eq!(uids(s, &a, "Drafts").await?, vec![again.uid], "Drafts");
    Ok(())
}

/// append returns the UID; the folder's listing (flags, size, date and origin as given) and its
/// messages / unseen counters follow; other folders are untouched.
async fn append_and_counters<H: MailStoreHarness>(h: &H, ns: &str) -> Outcome {
    let (s, a) = (h.store(), addr(ns, "box"));
    setup(h, &a, 10_000).await?;
    let (m1, m2, m3, m4) = (
        sized("1", 101),
        sized("2", 202),
        sized("3", 303),
        sized("4", 404),
    );
    let one = put(s, &a, "Drafts", &m1, &[], 10).await?;
    let d = info(s, &a, "Drafts").await?;
    ensure_eq!(
        (d.messages, d.unseen),
        (1, 1),
        "Drafts messages, unseen after an unseen append"
    );
    let two_flags = [SEEN, "\\Draft", "$Custom"];
    let two = put(s, &a, "Drafts", &m2, &two_flags, 20).await?;
    let d = info(s, &a, "Drafts").await?;
    ensure_eq!(
        (d.messages, d.unseen),
        (2, 1),
        "Drafts messages, unseen after a seen append"
    );
    let three = put(s, &a, "Sent", &m3, &[SEEN], 30).await?;
    let four = s
        .append(
            &a,
            "Junk",
            m4.clone(),
            Flags::new(),
            at(40),
            Origin::Delivered,
        )
        .await
        .op("append to Junk")?;
    ensure_eq!(
        listed(s, &a, "Drafts").await?,
        vec![
            MessageMeta {
                uid: one.uid,
                flags: Flags::new(),
                size: m1.len() as u64,
                internal_date: at(10),
                origin: Origin::Appended,
            },
            MessageMeta {
                uid: two.uid,
                flags: flags(&two_flags),
                size: m2.len() as u64,
                internal_date: at(20),
                origin: Origin::Appended,
            },
        ],
        "messages of Drafts"
    );
    let sent = meta(s, &a, "Sent", three.uid).await?;
    ensure_eq!(
        (sent.flags, sent.size, sent.internal_date),
        (flags(&[SEEN]), 303, at(30)),
        "Sent"
    );
    ensure_eq!(
        meta(s, &a, "Junk", four.uid).await?.origin,
        Origin::Delivered,
        "origin as given"
    );
    ensure_eq!(
        counts(s, &a).await?,
        vec![
            (INBOX.to_string(), 0, 0),
            ("Sent".to_string(), 1, 0),
            ("Drafts".to_string(), 2, 1),
            ("Junk".to_string(), 1, 1),
            ("Trash".to_string(), 0, 0),
        ],
        "folder counters"
    );
    s.store_flags(&a, "Drafts", &[one.uid], FlagChange::Add, &flags(&[SEEN]))
        .await
        .op("store_flags")?;
    s.store_flags(
        &a,
        "Sent",
        &[three.uid],
        FlagChange::Remove,
        &flags(&[SEEN]),
    )
    .await
    .op("store_flags")?;
    let d = info(s, &a, "Drafts").await?;
    ensure_eq!((d.messages, d.unseen), (2, 0), "Drafts after \\Seen added");
    let sent = info(s, &a, "Sent").await?;
    ensure_eq!(
        (sent.messages, sent.unseen),
        (1, 1),
        "Sent after \\Seen removed"
    );
    for f in s.folders(&a).await.op("folders")? {
        ensure_eq!(
            info(s, &a, &f.name).await?,
            f,
            "folder({}) vs folders()",
            f.name
        );
    }
    ensure_eq!(used(s, &a).await?, 101 + 202 + 303 + 404, "quota used");
    Ok(())
}

/// A delivery lands in INBOX at its UIDNEXT with origin Delivered, without \Seen or \Deleted,
/// with its exact bytes, counted in messages, unseen and the quota.
async fn delivered_into_inbox<H: MailStoreHarness>(h: &H, ns: &str) -> Outcome {
    let (s, a) = (h.store(), addr(ns, "box"));
    setup(h, &a, 10_000).await?;
    let bytes = b"Return-Path: <posta-certificata@pec.example>\r\nSubject: POSTA CERTIFICATA: \
        perch\xc3\xa9\r\nContent-Type: text/plain; charset=iso-8859-1\r\n\r\nCos\xec \xe8.\r\n\r\n"
        .to_vec();
    for round in 0..2u32 {
        let before = info(s, &a, INBOX).await?;
        let d = deliver(h, &a, &bytes).await?;
        ensure_eq!(
            d.uid,
            before.uid_next,
            "delivery {round} takes INBOX's UIDNEXT"
        );
        ensure_eq!(
            d.uid_validity,
            before.uid_validity,
            "delivery {round}: UIDVALIDITY"
        );
        let m = meta(s, &a, INBOX, d.uid).await?;
        ensure_eq!(m.origin, Origin::Delivered, "a delivery's origin");
        ensure!(
            !m.flags.contains(SEEN) && !m.flags.contains(DELETED),
            "a delivery's flags: {:?}",
            m.flags
        );
        ensure_eq!(m.size, bytes.len() as u64, "a delivery's size");
        same_bytes(
            s.read(&a, INBOX, d.uid).await.op("read")?,
            &bytes,
            "a delivery's bytes",
        )?;
        let after = info(s, &a, INBOX).await?;
        ensure_eq!(
            (after.messages, after.unseen, after.uid_next),
            (before.messages + 1, before.unseen + 1, d.uid + 1),
            "INBOX messages, unseen, UIDNEXT after delivery {round}"
        );
    }
    ensure_eq!(
        used(s, &a).await?,
        2 * bytes.len() as u64,
        "quota used by two deliveries"
    );
    Ok(())
}

/// read returns the bytes exactly as written — CRLF, 8-bit, 1 MiB — and None for a UID the
/// folder does not have (in another folder, expunged, never given).
async fn read_exact_bytes<H: MailStoreHarness>(h: &H, ns: &str) -> Outcome {
    let (s, a) = (h.store(), addr(ns, "box"));
    setup(h, &a, 4 * LARGE_MESSAGE as u64).await?;
    let small =
        b"Subject: =?utf-8?q?perch=C3=A9?=\r\n\r\n\xe8 \xff\xfe\x80\r\n.\r\n..\r\nFrom x\r\n \r\n"
            .to_vec();
    let big = large_message();
    ensure_eq!(big.len(), LARGE_MESSAGE, "the large message's size");
    let x = put(s, &a, "Drafts", &small, &[], 1).await?;
    let y = put(s, &a, "Drafts", &big, &[], 2).await?;
    same_bytes(
        s.read(&a, "Drafts", x.uid).await.op("read")?,
        &small,
        "the small message",
    )?;
    same_bytes(
        s.read(&a, "Drafts", y.uid).await.op("read")?,
        &big,
        "the 1 MiB message",
    )?;
    let sizes: Vec<u64> = listed(s, &a, "Drafts")
        .await?
        .iter()
        .map(|m| m.size)
        .collect();
    ensure_eq!(
        sizes,
        vec![small.len() as u64, LARGE_MESSAGE as u64],
        "sizes listed"
    );
    let d = deliver(h, &a, &big).await?;
    same_bytes(
        s.read(&a, INBOX, d.uid).await.op("read")?,
        &big,
        "the 1 MiB message delivered",
    )?;
    ensure_eq!(
        used(s, &a).await?,
        (small.len() + 2 * LARGE_MESSAGE) as u64,
        "quota used"
    );

    for (folder, uid) in [
        ("Drafts", y.uid + 1),
        ("Drafts", 0),
        ("Drafts", u32::MAX),
        ("Sent", x.uid),
        ("Trash", y.uid),
    ] {
        ensure_eq!(
            s.read(&a, folder, uid).await.op("read")?,
            None,
            "read UID {uid} of {folder}"
        );
    }
    s.store_flags(&a, "Drafts", &[x.uid], FlagChange::Add, &flags(&[DELETED]))
        .await
        .op("store_flags")?;
    s.expunge(&a, "Drafts", None).await.op("expunge")?;
    ensure_eq!(
        s.read(&a, "Drafts", x.uid).await.op("read")?,
        None,
        "read of an expunged UID"
    );
    same_bytes(
        s.read(&a, "Drafts", y.uid).await.op("read")?,
        &big,
        "the 1 MiB message after",
    )?;
    Ok(())
}

/// store_flags Add / Remove / Replace returns the new flags of each named message that exists
/// (absent UIDs skipped), changes nothing else, compares flags as stored; messages() agrees.
async fn store_flags_changes<H: MailStoreHarness>(h: &H, ns: &str) -> Outcome {
    let (s, a) = (h.store(), addr(ns, "box"));
    setup(h, &a, 10_000).await?;
    let x = put(s, &a, "Drafts", &sized("x", 100), &[], 1).await?.uid;
    let y = put(s, &a, "Drafts", &sized("y", 110), &["\\Draft"], 2)
        .await?
        .uid;
    let z = put(s, &a, "Drafts", &sized("z", 120), &[SEEN], 3)
        .await?
        .uid;
    let absent = z + 10;
    let before = listed(s, &a, "Drafts").await?;

    let got = s
        .store_flags(
            &a,
            "Drafts",
            &[x, y, absent],
            FlagChange::Add,
            &flags(&[SEEN, "$Work"]),
        )
        .await
        .op("store_flags Add")?;
    ensure_eq!(
        sorted(got),
        vec![
            (x, flags(&[SEEN, "$Work"])),
            (y, flags(&["\\Draft", SEEN, "$Work"]))
        ],
        "Add \\Seen $Work to x, y and an absent UID"
    );
    let got = s
        .store_flags(
            &a,
            "Drafts",
            &[y],
            FlagChange::Remove,
            &flags(&["\\Draft", "\\Flagged"]),
        )
        .await
        .op("store_flags Remove")?;
    ensure_eq!(
        got,
        vec![(y, flags(&[SEEN, "$Work"]))],
        "Remove \\Draft \\Flagged from y"
    );
    let got = s
        .store_flags(
            &a,
            "Drafts",
            &[x],
            FlagChange::Remove,
            &flags(&["\\seen", "$work"]),
        )
        .await
        .op("store_flags Remove")?;
    ensure_eq!(
        got,
        vec![(x, flags(&[SEEN, "$Work"]))],
        "Remove of other spellings (flags are compared as stored)"
    );
    let got = s
        .store_flags(
            &a,
            "Drafts",
            &[z, x],
            FlagChange::Replace,
            &flags(&["\\Answered"]),
        )
        .await
        .op("store_flags Replace")?;
    ensure_eq!(
        sorted(got),
        vec![(x, flags(&["\\Answered"])), (z, flags(&["\\Answered"]))],
        "Replace x and z with \\Answered"
    );
    let got = s
        .store_flags(&a, "Drafts", &[z], FlagChange::Replace, &Flags::new())
        .await
        .op("store_flags Replace")?;
    ensure_eq!(got, vec![(z, Flags::new())], "Replace z with no flags");
    let got = s
        .store_flags(&a, "Drafts", &[absent, 0], FlagChange::Add, &flags(&[SEEN]))
        .await
        .op("store_flags on absent UIDs")?;
    ensure_eq!(got, vec![], "store_flags on absent UIDs only");
    let got = s
        .store_flags(&a, "Sent", &[x, y, z], FlagChange::Add, &flags(&[DELETED]))
        .await
        .op("store_flags on Sent")?;
    ensure_eq!(got, vec![], "store_flags on Sent with Drafts' UIDs");

    let want: Vec<MessageMeta> = before
        .iter()
        .map(|m| MessageMeta {
            flags: match m.uid {
                u if u == x => flags(&["\\Answered"]),
                u if u == y => flags(&[SEEN, "$Work"]),
                _ => Flags::new(),
            },
            ..m.clone()
        })
        .collect();
    ensure_eq!(
        listed(s, &a, "Drafts").await?,
        want,
        "messages of Drafts after the changes"
    );
    let d = info(s, &a, "Drafts").await?;
    ensure_eq!((d.messages, d.unseen), (3, 2), "Drafts messages, unseen");
    Ok(())
}

/// expunge removes only the \Deleted messages (only those among `only` when given), returns
/// their UIDs increasing, frees exactly their octets and leaves other folders alone.
async fn expunge_only_deleted<H: MailStoreHarness>(h: &H, ns: &str) -> Outcome {
    let (s, a) = (h.store(), addr(ns, "box"));
    setup(h, &a, 100_000).await?;
    let mut m = Vec::new();
    let mut size = Vec::new();
    for i in 0..5 {
        let bytes = sized(&format!("m{i}"), 100 + 37 * i);
        m.push(put(s, &a, INBOX, &bytes, &[], i as i64).await?.uid);
        size.push(bytes.len() as u64);
    }
    let t = put(s, &a, "Trash", &sized("t", 500), &[DELETED], 9)
        .await?
        .uid;
    let absent = m[4] + 100;
    s.store_flags(
        &a,
        INBOX,
        &[m[3], m[0], m[2]],
        FlagChange::Add,
        &flags(&[DELETED]),
    )
    .await
    .op("store_flags")?;
    s.store_flags(&a, INBOX, &[m[1]], FlagChange::Add, &flags(&[SEEN]))
        .await
        .op("store_flags")?;
    let u0 = used(s, &a).await?;

    let only = [m[4], m[3], m[1], absent];
    ensure_eq!(
        s.expunge(&a, INBOX, Some(&only)).await.op("expunge only")?,
        vec![m[3]],
        "expunge among {only:?}"
    );
    ensure_eq!(used(s, &a).await?, u0 - size[3], "quota after expunging m3");
    ensure_eq!(
        s.expunge(&a, INBOX, Some(&[]))
            .await
            .op("expunge only none")?,
        Vec::<u32>::new(),
        "expunge among no UIDs"
    );
    ensure_eq!(
        s.expunge(&a, INBOX, None).await.op("expunge")?,
        vec![m[0], m[2]],
        "expunge every \\Deleted"
    );
    ensure_eq!(
        used(s, &a).await?,
        u0 - size[3] - size[0] - size[2],
        "quota after expunging m0, m2"
    );
    ensure_eq!(
        uids(s, &a, INBOX).await?,
        vec![m[1], m[4]],
        "INBOX after the expunges"
    );
    ensure_eq!(
        s.expunge(&a, INBOX, None).await.op("expunge")?,
        Vec::<u32>::new(),
        "expunge with none \\Deleted"
    );
    ensure_eq!(
        s.read(&a, INBOX, m[0]).await.op("read")?,
        None,
        "read of an expunged message"
    );
    let inbox = info(s, &a, INBOX).await?;
    ensure_eq!(
        (inbox.messages, inbox.unseen),
        (2, 1),
        "INBOX messages, unseen"
    );
    ensure_eq!(
        uids(s, &a, "Trash").await?,
        vec![t],
        "Trash after INBOX's expunges"
    );
    ensure_eq!(
        s.expunge(&a, "Trash", None).await.op("expunge")?,
        vec![t],
        "expunge Trash"
    );
    ensure_eq!(
        used(s, &a).await?,
        size[1] + size[4],
        "quota after expunging Trash"
    );
    quota_matches(s, &a, "after the expunges").await
}

/// copy: new increasing UIDs in the destination from its UIDNEXT, pairs by increasing source
/// UID (duplicates and absent UIDs skipped), same bytes, flags, size, date and origin; the
/// source is untouched; the quota counts the copies.
async fn copy_semantics<H: MailStoreHarness>(h: &H, ns: &str) -> Outcome {
    let (s, a) = (h.store(), addr(ns, "box"));
    setup(h, &a, 100_000).await?;
    let (md, mx, my) = (sized("delivered", 300), sized("x", 200), sized("y", 250));
    let d = deliver(h, &a, &md).await?.uid;
    let x = put(s, &a, INBOX, &mx, &[SEEN, "$K"], 5).await?.uid;
    let y = put(s, &a, INBOX, &my, &["\\Flagged"], 6).await?.uid;
    let absent = y + 50;
    let source = listed(s, &a, INBOX).await?;
    let trash = info(s, &a, "Trash").await?;
    let used0 = used(s, &a).await?;

    let c = s
        .copy(&a, INBOX, &[y, absent, d, y, x], "Trash")
        .await
        .op("copy")?;
    ensure_eq!(
        c.uid_validity,
        trash.uid_validity,
        "copy reports Trash's UIDVALIDITY"
    );
    let from: Vec<u32> = c.pairs.iter().map(|p| p.0).collect();
    ensure_eq!(
        from,
        vec![d, x, y],
        "copied source UIDs, increasing, once each"
    );
    let to: Vec<u32> = c.pairs.iter().map(|p| p.1).collect();
    ensure_eq!(
        to.first().copied(),
        Some(trash.uid_next),
        "the first copy takes Trash's UIDNEXT"
    );
    ensure!(
        to.windows(2).all(|w| w[0] < w[1]),
        "new UIDs not increasing: {to:?}"
    );
    ensure_eq!(
        info(s, &a, "Trash").await?.uid_next,
        to[2] + 1,
        "Trash's UIDNEXT"
    );
    let want: Vec<MessageMeta> = source
        .iter()
        .zip(&to)
        .map(|(m, uid)| renumbered(m, *uid))
        .collect();
    ensure_eq!(
        listed(s, &a, "Trash").await?,
        want,
        "the copies (flags, size, date, origin)"
    );
    for ((_, new), bytes) in c.pairs.iter().zip([&md, &mx, &my]) {
        same_bytes(
            s.read(&a, "Trash", *new).await.op("read")?,
            bytes,
            "a copy's bytes",
        )?;
    }
    ensure_eq!(listed(s, &a, INBOX).await?, source, "INBOX after the copy");
    let sum = (md.len() + mx.len() + my.len()) as u64;
    ensure_eq!(used(s, &a).await?, used0 + sum, "quota after the copy");
    let t = info(s, &a, "Trash").await?;
    ensure_eq!((t.messages, t.unseen), (3, 2), "Trash messages, unseen");

    let sent = info(s, &a, "Sent").await?;
    let none = s
        .copy(&a, INBOX, &[absent], "Sent")
        .await
        .op("copy of absent UIDs")?;
    ensure_eq!(
        none,
        Copied {
            uid_validity: sent.uid_validity,
            pairs: vec![]
        },
        "copy of absent UIDs"
    );
    ensure_eq!(
        info(s, &a, "Sent").await?.messages,
        0,
        "Sent after copying nothing"
    );
    quota_matches(s, &a, "after the copies").await
}

/// A copy that does not fit copies nothing (all or nothing) and says by how much.
async fn copy_over_quota_all_or_nothing<H: MailStoreHarness>(h: &H, ns: &str) -> Outcome {
    let (s, a) = (h.store(), addr(ns, "box"));
    let (mx, my) = (sized("x", 300), sized("y", 200));
    let (sx, sy) = (mx.len() as u64, my.len() as u64);
    let limit = 2 * (sx + sy) - 1;
    setup(h, &a, limit).await?;
    let x = put(s, &a, INBOX, &mx, &[], 1).await?.uid;
    let y = put(s, &a, INBOX, &my, &[], 2).await?.uid;
    let before = counts(s, &a).await?;

    let r = s.copy(&a, INBOX, &[x, y], "Trash").await;
    over_quota(r, sx + sy, sx + sy, limit, "copy of both")?;
    ensure_eq!(
        uids(s, &a, "Trash").await?,
        Vec::<u32>::new(),
        "Trash after the refused copy"
    );
    ensure_eq!(
        counts(s, &a).await?,
        before,
        "folder counters after the refused copy"
    );
    ensure_eq!(used(s, &a).await?, sx + sy, "quota after the refused copy");

    let c = s.copy(&a, INBOX, &[x], "Trash").await.op("copy of x")?;
    ensure_eq!(c.pairs.len(), 1, "copy of x alone");
    let r = s.copy(&a, INBOX, &[y], "Junk").await;
    over_quota(r, 2 * sx + sy, sy, limit, "copy of y (one octet short)")?;
    ensure_eq!(
        uids(s, &a, "Junk").await?,
        Vec::<u32>::new(),
        "Junk after the refused copy"
    );
    quota_matches(s, &a, "after the refused copies").await
}

/// move: the messages leave the source and arrive with new increasing UIDs (same bytes, flags,
/// size, date, origin); the quota does not change, so a full mailbox can still move.
async fn move_semantics<H: MailStoreHarness>(h: &H, ns: &str) -> Outcome {
    let (s, a) = (h.store(), addr(ns, "box"));
    let (md, mx, my) = (sized("delivered", 310), sized("x", 220), sized("y", 130));
    let full = (md.len() + mx.len() + my.len()) as u64;
    setup(h, &a, full).await?;
    let d = deliver(h, &a, &md).await?.uid;
    let x = put(s, &a, INBOX, &mx, &[SEEN], 1).await?.uid;
    let y = put(s, &a, INBOX, &my, &["$Label"], 2).await?.uid;
    ensure_eq!(used(s, &a).await?, full, "the mailbox is full");
    let source = listed(s, &a, INBOX).await?;
    let inbox = info(s, &a, INBOX).await?;
    let junk = info(s, &a, "Junk").await?;

    let m = s
        .move_messages(&a, INBOX, &[y, y + 40, x], "Junk")
        .await
        .op("move to Junk")?;
    ensure_eq!(
        m.uid_validity,
        junk.uid_validity,
        "move reports Junk's UIDVALIDITY"
    );
    let from: Vec<u32> = m.pairs.iter().map(|p| p.0).collect();
    ensure_eq!(from, vec![x, y], "moved source UIDs, increasing");
    let to: Vec<u32> = m.pairs.iter().map(|p| p.1).collect();
    ensure_eq!(
        to.first().copied(),
        Some(junk.uid_next),
        "the first takes Junk's UIDNEXT"
    );
    ensure!(
        to.windows(2).all(|w| w[0] < w[1]),
        "new UIDs not increasing: {to:?}"
    );
    ensure_eq!(uids(s, &a, INBOX).await?, vec![d], "INBOX after the move");
    ensure_eq!(
        s.read(&a, INBOX, x).await.op("read")?,
        None,
        "read of a moved-out UID"
    );
    let want: Vec<MessageMeta> = source[1..]
        .iter()
        .zip(&to)
        .map(|(m, uid)| renumbered(m, *uid))
        .collect();
    ensure_eq!(listed(s, &a, "Junk").await?, want, "the moved messages");
    same_bytes(s.read(&a, "Junk", to[0]).await.op("read")?, &mx, "x moved")?;
    same_bytes(s.read(&a, "Junk", to[1]).await.op("read")?, &my, "y moved")?;
    ensure_eq!(used(s, &a).await?, full, "quota after the move");
    let after = info(s, &a, INBOX).await?;
    ensure_eq!(
        (after.messages, after.unseen, after.uid_next),
        (1, 1, inbox.uid_next),
        "INBOX messages, unseen, UIDNEXT after the move"
    );
    let j = info(s, &a, "Junk").await?;
    ensure_eq!((j.messages, j.unseen), (2, 1), "Junk messages, unseen");

    let back = s
        .move_messages(&a, "Junk", &[to[0]], "inbox")
        .await
        .op("move back to INBOX")?;
    ensure_eq!(
        back.pairs,
        vec![(to[0], inbox.uid_next)],
        "moved back with a new UID"
    );
    ensure_eq!(
        uids(s, &a, INBOX).await?,
        vec![d, inbox.uid_next],
        "INBOX after the move back"
    );
    let moved = meta(s, &a, INBOX, inbox.uid_next).await?;
    ensure_eq!(
        moved,
        renumbered(&source[1], inbox.uid_next),
        "x back in INBOX"
    );
    ensure_eq!(used(s, &a).await?, full, "quota after the move back");
    quota_matches(s, &a, "after the moves").await
}

/// An append that does not fit writes nothing and says by how much; one that fills the quota
/// to the octet succeeds; space freed by an expunge can be used again.
async fn over_quota_append_writes_nothing<H: MailStoreHarness>(h: &H, ns: &str) -> Outcome {
    let (s, a) = (h.store(), addr(ns, "box"));
    setup(h, &a, 1000).await?;
    let first = put(s, &a, INBOX, &sized("first", 600), &[], 1).await?.uid;
    let before = counts(s, &a).await?;

    let r = s
        .append(
            &a,
            "Drafts",
            sized("big", 401),
            Flags::new(),
            at(2),
            Origin::Appended,
        )
        .await;
    over_quota(r, 600, 401, 1000, "append of 401 octets to 600 of 1000")?;
    ensure_eq!(
        listed(s, &a, "Drafts").await?,
        vec![],
        "Drafts after the refused append"
    );
    ensure_eq!(
        counts(s, &a).await?,
        before,
        "folder counters after the refused append"
    );
    ensure_eq!(used(s, &a).await?, 600, "quota after the refused append");

    put(s, &a, "Drafts", &sized("exact", 400), &[], 3).await?;
    ensure_eq!(
        s.quota(&a).await.op("quota")?,
        Quota {
            used: 1000,
            limit: 1000
        },
        "quota filled to the octet"
    );
    let r = s
        .append(
            &a,
            "Sent",
            b"x".to_vec(),
            Flags::new(),
            at(4),
            Origin::Appended,
        )
        .await;
    over_quota(r, 1000, 1, 1000, "append of one octet to a full mailbox")?;
    ensure_eq!(
        info(s, &a, "Sent").await?.messages,
        0,
        "Sent after the refused append"
    );

    s.store_flags(&a, INBOX, &[first], FlagChange::Add, &flags(&[DELETED]))
        .await
        .op("store_flags")?;
    s.expunge(&a, INBOX, None).await.op("expunge")?;
    put(s, &a, "Sent", &sized("again", 401), &[], 5).await?;
    ensure_eq!(
        used(s, &a).await?,
        801,
        "quota after an expunge and a new append"
    );
    quota_matches(s, &a, "after the refused appends").await
}

/// append_once appends once per key: a repeat (other bytes, even in a full mailbox, even after
/// the message was expunged) writes nothing and answers the first UID; racing calls with one
/// key append one message; keys are listed by prefix; a refused append records no key.
async fn append_once_exactly_once<H: MailStoreHarness>(h: &H, ns: &str) -> Outcome {
    let (s, a) = (h.store(), addr(ns, "box"));
    setup(h, &a, 1000).await?;
    let key = "src1/Sent/7/42";
    let (first, fresh) = s
        .append_once(
            &a,
            "Sent",
            key,
            sized("once", 100),
            flags(&[SEEN]),
            at(1),
            Origin::Appended,
        )
        .await
        .op("append_once")?;
    ensure!(
        fresh,
        "the first append_once with {key} reported an earlier one"
    );
    let (again, fresh) = s
        .append_once(
            &a,
            "Sent",
            key,
            sized("other bytes", 120),
            Flags::new(),
            at(2),
            Origin::Appended,
        )
        .await
        .op("append_once again")?;
    ensure!(!fresh, "the repeated append_once with {key} appended");
    ensure_eq!(again, first, "the repeat's answer vs the first append");
    ensure_eq!(
        uids(s, &a, "Sent").await?,
        vec![first.uid],
        "Sent after the repeat"
    );
    ensure_eq!(
        s.read(&a, "Sent", first.uid).await.op("read")?,
        Some(sized("once", 100)),
        "the bytes kept are the first call's"
    );
    ensure_eq!(used(s, &a).await?, 100, "quota after the repeat");

    let racing = (0..8).map(|i| {
        let a = &a;
        async move {
            for _ in 0..i % 3 {
                yield_now().await;
            }
            s.append_once(
                a,
                INBOX,
                "src1/INBOX/7/1",
                sized(&format!("race {i}"), 50),
                Flags::new(),
                at(3),
                Origin::Delivered,
            )
            .await
        }
    });
    let results = join_all(racing).await;
    let mut winners = 0;
    let mut answers = Vec::new();
    for (i, r) in results.into_iter().enumerate() {
        let (ap, fresh) = r.map_err(|e| format!("racing append_once {i}: {e}"))?;
        winners += usize::from(fresh);
        answers.push((ap.uid_validity, ap.uid));
    }
    answers.dedup();
    ensure_eq!(
        winners,
        1,
        "racing append_once calls with one key that appended"
    );
    ensure_eq!(answers.len(), 1, "distinct answers to the racing calls");
    ensure_eq!(
        info(s, &a, INBOX).await?.messages,
        1,
        "INBOX after the race"
    );
    ensure_eq!(used(s, &a).await?, 150, "quota after the race");

    let r = s
        .append_once(
            &a,
            "Drafts",
            "src1/Drafts/7/1",
            sized("big", 900),
            Flags::new(),
            at(4),
            Origin::Appended,
        )
        .await;
    over_quota(
        r,
        150,
        900,
        1000,
        "append_once of 900 octets to 150 of 1000",
    )?;
    let fill = 1000 - 150;
    s.append_once(
        &a,
        "Drafts",
        "src1/Drafts/7/2",
        sized("fill", fill),
        Flags::new(),
        at(5),
        Origin::Appended,
    )
    .await
    .op("append_once to the octet")?;
    let (full, fresh) = s
        .append_once(
            &a,
            "Sent",
            key,
            sized("once", 100),
            Flags::new(),
            at(1),
            Origin::Appended,
        )
        .await
        .op("append_once of a done key in a full mailbox")?;
    ensure!(
        !fresh && full == first,
        "a done key in a full mailbox: {full:?}, {fresh}"
    );

    s.store_flags(
        &a,
        "Sent",
        &[first.uid],
        FlagChange::Add,
        &flags(&[DELETED]),
    )
    .await
    .op("store_flags")?;
    s.expunge(&a, "Sent", None).await.op("expunge")?;
    let (gone, fresh) = s
        .append_once(
            &a,
            "Sent",
            key,
            sized("once", 100),
            Flags::new(),
            at(1),
            Origin::Appended,
        )
        .await
        .op("append_once after the expunge")?;
    ensure!(
        !fresh && gone == first,
        "an expunged message came back: {gone:?}, {fresh}"
    );
    ensure_eq!(
        uids(s, &a, "Sent").await?,
        Vec::<u32>::new(),
        "Sent after the expunge"
    );

    let keys = |v: &[&str]| {
        v.iter()
            .map(|k| (*k).to_owned())
            .collect::<BTreeSet<String>>()
    };
    ensure_eq!(
        s.appended_keys(&a, "src1/").await.op("appended_keys")?,
        keys(&["src1/Drafts/7/2", "src1/INBOX/7/1", key]),
        "every recorded key (the refused one not among them)"
    );
    ensure_eq!(
        s.appended_keys(&a, "src1/Sent/")
            .await
            .op("appended_keys")?,
        keys(&[key]),
        "keys by a longer prefix"
    );
    ensure_eq!(
        s.appended_keys(&a, "src2/").await.op("appended_keys")?,
        keys(&[]),
        "keys of another prefix"
    );
    ensure_eq!(
        s.appended_keys(&addr(ns, "other"), "")
            .await
            .op("appended_keys")?,
        keys(&[]),
        "keys of another mailbox"
    );
    match s
        .append_once(
            &a,
            "Sent",
            "has space",
            sized("x", 50),
            Flags::new(),
            at(6),
            Origin::Appended,
        )
        .await
    {
        Err(MailStoreError::BadKey(k)) if k == "has space" => {}
        other => return Err(format!("a key with a space: got {other:?}, want BadKey")),
    }
    quota_matches(s, &a, "after the keyed appends").await
}

/// quota().used is the sum of the sizes of every folder's messages after each step of a mixed
/// sequence, and its limit the mailbox's.
async fn quota_is_sum_of_sizes<H: MailStoreHarness>(h: &H, ns: &str) -> Outcome {
    let (s, a) = (h.store(), addr(ns, "box"));
    setup(h, &a, 50_000).await?;
    quota_matches(s, &a, "when new").await?;
    let d1 = deliver(h, &a, &sized("d1", 1_111)).await?.uid;
    let d2 = deliver(h, &a, &sized("d2", 2_222)).await?.uid;
    quota_matches(s, &a, "after two deliveries").await?;
    let sent = put(s, &a, "Sent", &sized("sent", 3_333), &[SEEN], 1)
        .await?
        .uid;
    put(s, &a, "Drafts", &sized("draft", 444), &["\\Draft"], 2).await?;
    quota_matches(s, &a, "after two appends").await?;
    s.copy(&a, INBOX, &[d1, d2], "Trash").await.op("copy")?;
    quota_matches(s, &a, "after a copy").await?;
    s.move_messages(&a, "Sent", &[sent], "Junk")
        .await
        .op("move")?;
    quota_matches(s, &a, "after a move").await?;
    s.store_flags(&a, INBOX, &[d1], FlagChange::Add, &flags(&[DELETED]))
        .await
        .op("store_flags")?;
    quota_matches(s, &a, "after a flag change").await?;
    s.expunge(&a, INBOX, None).await.op("expunge")?;
    quota_matches(s, &a, "after an expunge").await?;
    let trash = uids(s, &a, "Trash").await?;
    s.store_flags(&a, "Trash", &trash, FlagChange::Replace, &flags(&[DELETED]))
        .await
        .op("store_flags")?;
    s.expunge(&a, "Trash", Some(&trash[..1]))
        .await
        .op("expunge")?;
    quota_matches(s, &a, "after an expunge of one").await?;
    let r = s
        .append(
            &a,
            "Drafts",
            sized("huge", 50_000),
            Flags::new(),
            at(3),
            Origin::Appended,
        )
        .await;
    ensure!(
        matches!(r, Err(MailStoreError::OverQuota { .. })),
        "append over quota: {r:?}"
    );
    quota_matches(s, &a, "after a refused append").await?;
    let q = s.quota(&a).await.op("quota")?;
    ensure_eq!(q.limit, 50_000, "quota limit");
    ensure_eq!(
        q.used,
        (2_222 + 3_333 + 444 + 2_222) as u64,
        "quota used at the end"
    );
    Ok(())
}

/// change_counter strictly grows on each change (delivery, append, store_flags, expunge,
/// copy, move, in any folder) and stays put across reads.
async fn change_counter_grows<H: MailStoreHarness>(h: &H, ns: &str) -> Outcome {
    let (s, a) = (h.store(), addr(ns, "box"));
    setup(h, &a, 100_000).await?;
    let mut last = counter(s, &a).await?;
    let d = deliver(h, &a, &sized("d", 200)).await?.uid;
    grew(s, &a, &mut last, "a delivery").await?;
    let x = put(s, &a, "Drafts", &sized("x", 200), &[], 1).await?.uid;
    grew(s, &a, &mut last, "an append to Drafts").await?;
    s.store_flags(&a, "Drafts", &[x], FlagChange::Add, &flags(&[SEEN]))
        .await
        .op("store_flags Add")?;
    grew(s, &a, &mut last, "store_flags Add").await?;
    s.store_flags(&a, "Drafts", &[x], FlagChange::Remove, &flags(&[SEEN]))
        .await
        .op("store_flags Remove")?;
    grew(s, &a, &mut last, "store_flags Remove").await?;
    s.store_flags(&a, INBOX, &[d], FlagChange::Replace, &flags(&[DELETED]))
        .await
        .op("store_flags Replace")?;
    grew(s, &a, &mut last, "store_flags Replace").await?;
    let c = s.copy(&a, INBOX, &[d], "Trash").await.op("copy")?;
    grew(s, &a, &mut last, "a copy").await?;
    s.expunge(&a, INBOX, None).await.op("expunge")?;
    grew(s, &a, &mut last, "an expunge").await?;
    s.move_messages(&a, "Drafts", &[x], "Sent")
        .await
        .op("move")?;
    grew(s, &a, &mut last, "a move").await?;
    s.expunge(&a, "Trash", Some(&[c.pairs[0].1]))
        .await
        .op("expunge only")?;
    grew(s, &a, &mut last, "an expunge among UIDs").await?;

    s.folders(&a).await.op("folders")?;
    s.folder(&a, "Sent").await.op("folder")?;
    let sent = listed(s, &a, "Sent").await?;
    for m in &sent {
        s.read(&a, "Sent", m.uid).await.op("read")?;
    }
    s.read(&a, "Sent", 9_999).await.op("read")?;
    s.quota(&a).await.op("quota")?;
    counter(s, &a).await?;
    ensure_eq!(
        counter(s, &a).await?,
        last,
        "change_counter after reads only"
    );
    Ok(())
}

/// What a reader polling the folder saw: UIDNEXT, then the listing read after it.
type Observation = (u32, Vec<u32>);

/// Reads UIDNEXT then the listing, over and over, until `done` reaches `total` (one last
/// read after that), letting the writers run between reads.
async fn observe<S: MailStore>(
    s: &S,
    address: &str,
    folder: &str,
    done: &AtomicUsize,
    total: usize,
) -> Result<Vec<Observation>, String> {
    let mut seen = Vec::new();
    for _ in 0..500 {
        let finished = done.load(Ordering::SeqCst) >= total;
        let next = info(s, address, folder).await?.uid_next;
        seen.push((next, uids(s, address, folder).await?));
        if finished {
            break;
        }
        yield_now().await;
    }
    Ok(seen)
}

/// [`CONCURRENT_APPENDS`] writes at once into `folder` (through `h.deliver` when `delivered(i)`,
/// else `append`) while a reader polls: distinct UIDs, exactly the set the writes returned,
/// listed by increasing UID, UIDNEXT = max + 1, each UID holding its own write's bytes; and no
/// reader that saw UIDNEXT = N ever later sees a new message with a UID below N.
async fn race<H: MailStoreHarness>(
    h: &H,
    a: &str,
    folder: &str,
    delivered: fn(usize) -> bool,
) -> Outcome {
    let s = h.store();
    let start = info(s, a, folder).await?;
    let done = AtomicUsize::new(0);
    let writes = (0..CONCURRENT_APPENDS).map(|i| {
        let done = &done;
        async move {
            for _ in 0..i % 3 {
                yield_now().await;
            }
            let bytes = sized(&format!("concurrent {i}"), 100 + i);
            let r = if delivered(i) {
                h.deliver(a, bytes.clone()).await
            } else {
                s.append(
                    a,
                    folder,
                    bytes.clone(),
                    Flags::new(),
                    at(i as i64),
                    Origin::Appended,
                )
                .await
                .map_err(|e| e.to_string())
            };
            done.fetch_add(1, Ordering::SeqCst);
            (i, bytes, r)
        }
    });
    let (observed, results) = join2(
        observe(s, a, folder, &done, CONCURRENT_APPENDS),
        join_all(writes),
    )
    .await;
    let observed = observed?;

    let mut written = BTreeSet::new();
    let mut sum = 0;
    for (i, bytes, r) in &results {
        let ap = r.as_ref().map_err(|e| format!("write {i}: {e}"))?;
        ensure_eq!(
            ap.uid_validity,
            start.uid_validity,
            "write {i}: UIDVALIDITY"
        );
        ensure!(
            ap.uid >= start.uid_next,
            "write {i}: UID {} below the start's UIDNEXT {}",
            ap.uid,
            start.uid_next
        );
        ensure!(written.insert(ap.uid), "UID {} given to two writes", ap.uid);
        sum += bytes.len() as u64;
    }
    let listed: Vec<u32> = uids(s, a, folder).await?;
    ensure_eq!(
        listed,
        written.iter().copied().collect::<Vec<u32>>(),
        "the listing vs the UIDs the writes returned"
    );
    let end = info(s, a, folder).await?;
    let max = written.last().copied().unwrap_or_default();
    ensure_eq!(
        (end.messages as usize, end.uid_next),
        (CONCURRENT_APPENDS, max + 1),
        "messages and UIDNEXT after the writes"
    );
    for (i, bytes, r) in &results {
        if let Ok(ap) = r {
            let got = s.read(a, folder, ap.uid).await.op("read")?;
            same_bytes(got, bytes, &format!("UID {} (write {i})", ap.uid))?;
        }
    }
    ensure_eq!(used(s, a).await?, sum, "quota used by the writes");

    let mut previous = 0;
    for (n, (next, seen)) in observed.iter().enumerate() {
        ensure!(
            *next >= previous,
            "read {n}: UIDNEXT {next} after {previous}"
        );
        previous = *next;
        let missing: Vec<u32> = written
            .range(..*next)
            .copied()
            .filter(|u| !seen.contains(u))
            .collect();
        ensure!(
            missing.is_empty(),
            "read {n}: UIDNEXT was {next}, then the listing lacked {missing:?} \
             (a client would never see them)"
        );
        ensure!(
            seen.iter().all(|u| written.contains(u)),
            "read {n}: listed {seen:?}, not all written"
        );
    }
    Ok(())
}

/// [`CONCURRENT_APPENDS`] appends at once into Sent (see `race`).
async fn concurrent_appends<H: MailStoreHarness>(h: &H, ns: &str) -> Outcome {
    let a = addr(ns, "box");
    setup(h, &a, 1_000_000).await?;
    race(h, &a, "Sent", |_| false).await
}

/// Deliveries and appends at once into INBOX, alternating (see `race`).
async fn concurrent_deliveries_and_appends<H: MailStoreHarness>(h: &H, ns: &str) -> Outcome {
    let a = addr(ns, "box");
    setup(h, &a, 1_000_000).await?;
    race(h, &a, INBOX, |i| i % 2 == 0).await
}
