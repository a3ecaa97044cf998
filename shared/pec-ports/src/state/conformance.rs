//! The [`StateStore`] conformance suite: one set of named cases that every store must pass
//! (the memory fake in `pec-ports`' tests, DynamoDB Local in `pec-integration`).
//!
//! Plain async code over `impl StateStore`: no runtime, no AWS. A backend's harness runs each
//! [`Case`] (one trial per case, so every case is reported by name) or all of them with
//! [`run_all`]. Every case writes under its own namespace derived from the run's `ns`
//! ([`Case::ns`]): addresses, domains, ids, identificativi and provider-log days, so a run on
//! a shared table collides neither with other data nor with itself (cases may run in
//! parallel). Reads of table-wide indexes (the timers, a provider-log day) keep only what the
//! case wrote.
//!
//! What is covered: every method; every conditional write's outcomes (created vs the record
//! in force, `Stored` / `Duplicate` / `Decided` / `NoMailbox` / `Full`, relay events recorded
//! once, sent marks, log appends once per event id); the quota rule
//! ([`pec_core::plan::envelope_fits`]) to the byte, after stores and deletes; atomicity of the
//! recipient outcome with the store; address and domain normalisation ([`norm`]); timers
//! (certified only, relayed at or before, final events remove); concurrent duplicates of the
//! put-if-absent writes; and paging: a provider-log day and a mailbox larger than one DynamoDB
//! query page (1 MB), written with padded records ([`PAGING_RECORDS`] × [`PAGING_PAD`]).

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::task::Poll;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use pec_core::events::{EVENT_VERSION, EventType, PecEvent, Recipient};
use pec_core::plan::Plan;

use super::*;

/// Records the paging cases write (each [`PAGING_PAD`] bytes larger than usual).
pub const PAGING_RECORDS: usize = 45;
/// The padding of each paging record: 45 × 48 KiB ≈ 2.1 MB, over two DynamoDB query pages.
pub const PAGING_PAD: usize = 48 * 1024;

/// The future of one case.
pub type CaseFuture<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// One named case of the suite.
pub struct Case<S> {
    /// The case's name (a trial name).
    pub name: &'static str,
    run: for<'a> fn(&'a S, &'a str) -> CaseFuture<'a>,
}

impl<S> Clone for Case<S> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<S> Copy for Case<S> {}

impl<S: StateStore> Case<S> {
    /// The namespace this case writes under, within the run's `run_ns`.
    pub fn ns(&self, run_ns: &str) -> String {
        let ns: String = run_ns
            .trim()
            .to_ascii_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        format!("{ns}-{}", self.name.replace('_', "-"))
    }

    /// Runs the case against `store` under the run's namespace `run_ns`.
    pub fn run<'a>(&self, store: &'a S, run_ns: &str) -> CaseFuture<'a> {
        let ns = self.ns(run_ns);
        let run = self.run;
        Box::pin(async move { run(store, &ns).await })
    }
}

/// The outcome of one case in [`run_all`].
#[derive(Debug, Clone)]
pub struct CaseResult {
    pub name: &'static str,
    pub outcome: Result<(), String>,
    pub elapsed: Duration,
}

/// Every case, in a stable order.
pub fn cases<S: StateStore>() -> Vec<Case<S>> {
    macro_rules! cases {
        ($($case:ident),* $(,)?) => {
            vec![$(Case { name: stringify!($case), run: |s, ns| Box::pin($case(s, ns)) }),*]
        };
    }
    cases![
        tenant_and_domain,
        create_mailbox_once,
        replace_mailbox_conditionally,
        members_and_activations,
        store_then_duplicate,
        store_records_decision_atomically,
        decided_wins_over_duplicate,
        store_without_mailbox,
        quota_is_exact,
        full_records_nothing,
        duplicate_of_full_or_oversized_item,
        delete_item_subtracts_exactly,
        mailbox_items_oldest_first,
        mailbox_items_pages,
        create_message_once,
        update_message_replaces,
        message_by_identificativo,
        record_recipient_once,
        create_inbound_once,
        create_relay_once,
        relay_mark_once,
        timers_due_certified_and_before,
        final_events_leave_timers,
        mark_sent_once,
        spam_detections_once_and_by_time,
        sms_window_replaced_only_as_read,
        password_findings_once_and_by_month,
        append_log_once,
        log_day_in_time_order,
        log_day_pages,
        concurrent_duplicates,
    ]
}

/// Runs every case in turn (each under its own namespace within `ns`).
pub async fn run_all<S: StateStore>(store: &S, ns: &str) -> Vec<CaseResult> {
    let mut results = Vec::new();
    for case in cases::<S>() {
        let start = Instant::now();
        let outcome = case.run(store, ns).await;
        results.push(CaseResult {
            name: case.name,
            outcome,
            elapsed: start.elapsed(),
        });
    }
    results
}

/// The provider-log day the `log_day_pages` case writes (run under `case_ns`, see
/// [`Case::ns`]), so a harness can confirm that day spans more than one query page.
pub fn paging_day(case_ns: &str) -> String {
    log_base(case_ns).format("%Y-%m-%d").to_string()
}

/// The mailbox the `mailbox_items_pages` case fills (run under `case_ns`).
pub fn paging_mailbox(case_ns: &str) -> String {
    addr(case_ns, "pages")
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

impl<T> Op<T> for Result<T, StateError> {
    fn op(self, what: &str) -> Result<T, String> {
        self.map_err(|e| format!("{what}: {e}"))
    }
}

/// Both futures to completion, polled together (no runtime needed).
pub(crate) async fn join2<A: Future, B: Future>(a: A, b: B) -> (A::Output, B::Output) {
    let (mut a, mut b) = (pin!(a), pin!(b));
    let (mut ra, mut rb) = (None, None);
    poll_fn(|cx| {
        if ra.is_none()
            && let Poll::Ready(v) = a.as_mut().poll(cx)
        {
            ra = Some(v);
        }
        if rb.is_none()
            && let Poll::Ready(v) = b.as_mut().poll(cx)
        {
            rb = Some(v);
        }
        match (ra.take(), rb.take()) {
            (Some(x), Some(y)) => Poll::Ready((x, y)),
            (x, y) => {
                (ra, rb) = (x, y);
                Poll::Pending
            }
        }
    })
    .await
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Noon of a day in 2100–2199 chosen by `ns`: provider-log days no other writer uses (and
/// never expired by a TTL).
fn log_base(ns: &str) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2100, 1, 1, 12, 0, 0).unwrap()
        + chrono::Duration::days((fnv(ns) % 36_500) as i64)
}

/// A time in 2000–2009 chosen by `ns`, at whole milliseconds: relay times before any real
/// relay's, so the timers of other writers never fall at or before it.
fn timer_base(ns: &str) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).unwrap()
        + chrono::Duration::seconds((fnv(ns) % (3_650 * 86_400)) as i64)
}

fn at(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 5, 6, 7, 8, 9).unwrap() + chrono::Duration::seconds(secs)
}

fn domain(ns: &str) -> String {
    format!("{ns}.example")
}

fn addr(ns: &str, local: &str) -> String {
    format!("{local}@{}", domain(ns))
}

/// `address` as a caller might spell it (case, surrounding blanks).
fn shout(address: &str) -> String {
    format!("  {} ", address.to_ascii_uppercase())
}

fn mailbox(address: &str, quota: u64) -> Mailbox {
    Mailbox {
        address: address.to_string(),
        tenant: "conformance".into(),
        plan: Plan::Base,
        expansions_gb: 0,
        quota_bytes: quota,
        used_bytes: 0,
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        locked: false,
        status: Default::default(),
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

fn item(id: &str, size: u64, stored_secs: i64) -> MailboxItem {
    MailboxItem {
        id: id.to_string(),
        object_key: format!("mailboxes/{id}.eml"),
        size,
        kind: "busta-trasporto".into(),
        subject: format!("POSTA CERTIFICATA: {id}"),
        from: "per conto di: mittente@example.org".into(),
        identificativo: format!("opec-{id}"),
        evidence_key: format!("evidence/{id}.eml"),
        stored_at: at(stored_secs),
        folder: None,
    }
}

fn outcome(recipient: &str, status: DeliveryStatus, item_id: Option<&str>) -> RecipientOutcome {
    RecipientOutcome {
        recipient: recipient.to_string(),
        status,
        reason: (status == DeliveryStatus::NotDelivered).then_some(NotDelivered::MailboxFull),
        at: at(5),
        item_id: item_id.map(str::to_string),
        detail: None,
    }
}

fn message(ns: &str, id: &str) -> MessageRecord {
    MessageRecord {
        receipts_folder: None,
        id: format!("{ns}-{id}"),
        identificativo: format!("opec-{ns}-{id}@pec.example"),
        fallback_msgid: format!("<{id}@{ns}>"),
        tenant: "conformance".into(),
        user: addr(ns, "sender"),
        raw_key: format!("raw/{ns}/{id}.eml"),
        received_at: at(0),
        state: MessageState::Scanning,
        subject: "conformance".into(),
        sender: addr(ns, "sender"),
        reverse_path: addr(ns, "sender"),
        recipients: vec![addr(ns, "a"), "b@other.example".into()],
        certified: vec![addr(ns, "a")],
        updated_at: at(0),
        raw_sha256: format!("{:064x}", id.len()),
    }
}

fn inbound(ns: &str, id: &str) -> InboundRecord {
    InboundRecord {
        id: format!("{ns}-{id}"),
        received_at: at(0),
        source: "posta-certificata@other.example".into(),
        recipients: vec![addr(ns, "a")],
        decision: InboundDecision::Envelope,
        kind: "busta-trasporto".into(),
        reason: None,
        security_error: false,
        identificativo: Some(format!("opec-{ns}-{id}@other.example")),
        sender_receipt_address: Some("ricevute@other.example".into()),
        sender_provider: Some("Other".into()),
        via: Default::default(),
    }
}

fn relay(
    message: &str,
    recipient: &str,
    certified: bool,
    relayed_at: DateTime<Utc>,
) -> RelayRecord {
    RelayRecord {
        message: message.to_string(),
        recipient: recipient.to_string(),
        certified,
        relayed_at,
        taken_at: None,
        delivered_at: None,
        failed_at: None,
        notice12_at: None,
        notice24_at: None,
    }
}

fn event(ns: &str, i: usize, at: DateTime<Utc>, pad: usize) -> PecEvent {
    PecEvent {
        version: EVENT_VERSION,
        event_id: format!("{ns}-ev{i:04}"),
        event_type: EventType::MessageDelivered,
        at,
        identificativo: format!("opec-{ns}-{i}@pec.example"),
        msgid: Some(format!("<{i}@{ns}>")),
        message_id: None,
        sender: addr(ns, "sender"),
        recipients: vec![Recipient {
            address: addr(ns, "a"),
            kind: "certificato".into(),
        }],
        recipient: Some(addr(ns, "a")),
        subject: Some(format!("event {i} {}", "x".repeat(pad))),
        receipt_type: "avvenuta-consegna".into(),
        receipt_form: Some("completa".into()),
        issuer: "Conformance".into(),
        error: None,
        error_detail: None,
        evidence_key: format!("evidence/{ns}/{i}.eml"),
        delivered_to: vec![addr(ns, "a")],
    }
}

/// The events of `day` this case wrote (their ids start with `ns`), in the store's order.
async fn own_log<S: StateStore>(s: &S, ns: &str, day: &str) -> Result<Vec<PecEvent>, String> {
    let prefix = format!("{ns}-ev");
    Ok(s.log_day(day)
        .await
        .op("log_day")?
        .into_iter()
        .filter(|e| e.event_id.starts_with(&prefix))
        .collect())
}

/// The due timers of this case's messages (ids start with `ns`), as (message, recipient).
async fn own_timers<S: StateStore>(
    s: &S,
    ns: &str,
    before: DateTime<Utc>,
) -> Result<Vec<(String, String)>, String> {
    let mut v: Vec<(String, String)> = s
        .timers_due(before)
        .await
        .op("timers_due")?
        .into_iter()
        .filter(|r| r.message.starts_with(ns))
        .map(|r| (r.message, norm(&r.recipient)))
        .collect();
    v.sort();
    Ok(v)
}

async fn used<S: StateStore>(s: &S, address: &str) -> Result<u64, String> {
    Ok(s.mailbox(address)
        .await
        .op("mailbox")?
        .ok_or_else(|| format!("mailbox {address} vanished"))?
        .used_bytes)
}

async fn item_ids<S: StateStore>(s: &S, address: &str) -> Result<Vec<String>, String> {
    Ok(s.mailbox_items(address)
        .await
        .op("mailbox_items")?
        .into_iter()
        .map(|i| i.id)
        .collect())
}

// ------------------------------------------------------------------------------ cases

/// put_tenant succeeds; claim_domain records once and reports the holder; a pending domain is
/// not served (domain_tenant) until update_domain records it verified; update_domain changes
/// only the claiming tenant's record and never brings a removed one back; domains lists it;
/// remove_domain only by its tenant; lookups normalise the domain; tenant_mailboxes lists one
/// tenant's mailboxes only.
async fn tenant_and_domain<S: StateStore>(s: &S, ns: &str) -> Outcome {
    let tenant = Tenant {
        id: format!("{ns}-t"),
        name: "Ordine degli Avvocati".into(),
        billing: Default::default(),
    };
    s.put_tenant(&tenant).await.op("put_tenant")?;
    s.put_tenant(&tenant).await.op("put_tenant again")?;
    ensure_eq!(
        s.tenant(&tenant.id).await.op("tenant")?,
        Some(tenant.clone()),
        "the tenant as put"
    );
    ensure_eq!(
        s.tenant(&format!("{ns}-none")).await.op("tenant")?,
        None,
        "no such tenant"
    );
    let d = domain(ns);
    ensure_eq!(
        s.domain(&d).await.op("domain")?,
        None,
        "domain before claim"
    );
    let pending = DomainRecord {
        domain: d.clone(),
        tenant: tenant.id.clone(),
        status: DomainStatus::Pending,
        dns: vec![DnsRecord {
            kind: "TXT".into(),
            name: format!("_amazonses.{d}"),
            value: "\"token\"".into(),
            purpose: "identity".into(),
        }],
        dkim_status: "Pending".into(),
        added_at: at(0),
        checked_at: None,
        verified_at: None,
    };
    ensure_eq!(
        s.claim_domain(&pending).await.op("claim_domain")?,
        None,
        "first claim"
    );
    let rival = DomainRecord {
        tenant: format!("{ns}-t2"),
        ..pending.clone()
    };
    ensure_eq!(
        s.claim_domain(&rival).await.op("claim_domain rival")?,
        Some(pending.clone()),
        "a second claim reports the holder and changes nothing"
    );
    ensure_eq!(
        s.domain_tenant(&d).await.op("domain_tenant")?,
        None,
        "a pending domain is not served yet"
    );
    let verified = DomainRecord {
        status: DomainStatus::Verified,
        checked_at: Some(at(60)),
        verified_at: Some(at(60)),
        ..pending.clone()
    };
    ensure_eq!(
        s.update_domain(&DomainRecord {
            tenant: format!("{ns}-t2"),
            ..verified.clone()
        })
        .await
        .op("update_domain rival")?,
        false,
        "another tenant's update of the domain"
    );
    ensure_eq!(
        s.domain(&d).await.op("domain")?,
        Some(pending.clone()),
        "the rival's update changed nothing"
    );
    ensure_eq!(
        s.update_domain(&verified).await.op("update_domain")?,
        true,
        "the holder's update"
    );
    ensure_eq!(
        s.domain_tenant(&shout(&d)).await.op("domain_tenant")?,
        Some(tenant.id.clone()),
        "verified domain read in capitals"
    );
    ensure_eq!(
        s.domain(&shout(&d)).await.op("domain")?,
        Some(verified.clone()),
        "the record as put"
    );
    let listed: Vec<DomainRecord> = s
        .domains()
        .await
        .op("domains")?
        .into_iter()
        .filter(|r| r.domain == d)
        .collect();
    ensure_eq!(listed, vec![verified.clone()], "domains lists it");
    ensure_eq!(
        s.domain_tenant(&format!("other.{d}"))
            .await
            .op("domain_tenant")?,
        None,
        "a sub-domain is another domain"
    );
    ensure!(
        !s.remove_domain(&d, &rival.tenant)
            .await
            .op("remove_domain by another tenant")?,
        "another tenant removed the domain"
    );
    ensure!(
        s.remove_domain(&d, &tenant.id).await.op("remove_domain")?,
        "its tenant could not remove the domain"
    );
    ensure_eq!(s.domain(&d).await.op("domain")?, None, "removed");
    ensure_eq!(
        s.domain_tenant(&d).await.op("domain_tenant")?,
        None,
        "removed: not served"
    );
    ensure!(
        !s.domains()
            .await
            .op("domains")?
            .iter()
            .any(|r| r.domain == d),
        "removed: not listed"
    );
    ensure_eq!(
        s.update_domain(&verified)
            .await
            .op("update_domain after removal")?,
        false,
        "an update after the removal"
    );
    ensure_eq!(
        s.domain(&d).await.op("domain")?,
        None,
        "a late update does not bring a removed domain back"
    );
    ensure!(
        !s.domains()
            .await
            .op("domains")?
            .iter()
            .any(|r| r.domain == d),
        "a late update does not list a removed domain again"
    );

    let mut mine = Vec::new();
    for local in ["zeta", "alfa"] {
        let mut m = mailbox(&addr(ns, local), 10);
        m.tenant = tenant.id.clone();
        s.create_mailbox(&m).await.op("create_mailbox")?;
        mine.push(m);
    }
    let mut theirs = mailbox(&addr(ns, "other"), 10);
    theirs.tenant = rival.tenant.clone();
    s.create_mailbox(&theirs).await.op("create_mailbox")?;
    mine.sort_by(|a, b| a.address.cmp(&b.address));
    ensure_eq!(
        s.tenant_mailboxes(&tenant.id)
            .await
            .op("tenant_mailboxes")?,
        mine,
        "one tenant's mailboxes, by address"
    );
    Ok(())
}

/// create_mailbox: true once, then false and nothing changed; lookups normalise the address.
async fn create_mailbox_once<S: StateStore>(s: &S, ns: &str) -> Outcome {
    let a = addr(ns, "box");
    ensure_eq!(
        s.mailbox(&a).await.op("mailbox")?,
        None,
        "mailbox before create"
    );
    let first = mailbox(&a, 1_000);
    ensure!(
        s.create_mailbox(&first).await.op("create_mailbox")?,
        "first create_mailbox returned false"
    );
    let mut second = mailbox(&shout(&a), 9_999);
    second.plan = Plan::Gold;
    second.locked = true;
    ensure!(
        !s.create_mailbox(&second).await.op("create_mailbox again")?,
        "create_mailbox of an existing address (other spelling) returned true"
    );
    ensure_eq!(
        s.mailbox(&a).await.op("mailbox")?,
        Some(first.clone()),
        "the first mailbox stays"
    );
    ensure_eq!(
        s.mailbox(&shout(&a)).await.op("mailbox")?,
        Some(first),
        "mailbox looked up in capitals"
    );
    ensure_eq!(
        s.mailbox_items(&a).await.op("mailbox_items")?,
        vec![],
        "a new mailbox is empty"
    );
    Ok(())
}

/// replace_mailbox: only over the record read (whatever the usage), only within `max_used`;
/// the usage is kept; a missing mailbox is not created.
async fn replace_mailbox_conditionally<S: StateStore>(s: &S, ns: &str) -> Outcome {
    let a = addr(ns, "box");
    let first = mailbox(&a, 1_000);
    s.create_mailbox(&first).await.op("create_mailbox")?;
    s.store_in_mailbox(&a, &item("i1", 600, 1), None, false)
        .await
        .op("store_in_mailbox")?;
    let read = s
        .mailbox(&a)
        .await
        .op("mailbox")?
        .ok_or("mailbox vanished")?;
    ensure_eq!(read.used_bytes, 600, "usage after one store");
    let mut gold = read.clone();
    gold.plan = Plan::Gold;
    gold.quota_bytes = 5_000;
    ensure!(
        !s.replace_mailbox(&read, &gold, Some(599))
            .await
            .op("replace_mailbox over max_used")?,
        "replaced although the usage (600) exceeds max_used (599)"
    );
    ensure!(
        s.replace_mailbox(&first, &gold, Some(600))
            .await
            .op("replace_mailbox")?,
        "the record read at creation (usage 0) is the record now: replacing must succeed"
    );
    let now = s
        .mailbox(&a)
        .await
        .op("mailbox")?
        .ok_or("mailbox vanished")?;
    ensure_eq!(
        (now.plan, now.quota_bytes, now.used_bytes),
        (Plan::Gold, 5_000, 600),
        "new plan and quota, usage kept"
    );
    ensure!(
        !s.replace_mailbox(&read, &first, None)
            .await
            .op("replace_mailbox stale")?,
        "replaced over a record that has changed since it was read"
    );
    let ghost = mailbox(&addr(ns, "ghost"), 1);
    ensure!(
        !s.replace_mailbox(&ghost, &ghost, None)
            .await
            .op("replace_mailbox missing")?,
        "replace_mailbox of a missing mailbox returned true"
    );
    ensure_eq!(
        s.mailbox(&ghost.address).await.op("mailbox")?,
        None,
        "replace_mailbox created a mailbox"
    );
    Ok(())
}

/// claim_member once per tenant and fiscal code (another tenant's member is another record);
/// put_member replaces; take_activation gives a record once, and never an expired one.
async fn members_and_activations<S: StateStore>(s: &S, ns: &str) -> Outcome {
    let tenant = format!("{ns}-t");
    let first = MemberRecord {
        tenant: tenant.clone(),
        fiscal_code: "RSSMRA85T10A562S".into(),
        nome: "Mario".into(),
        cognome: "Rossi".into(),
        email: "mario@example.com".into(),
        mobile: Some("+393331234567".into()),
        plan: Plan::Pro,
        address: addr(ns, "mario.rossi"),
        status: MemberStatus::Reserved,
        imported_at: at(0),
        link: None,
    };
    ensure_eq!(
        s.claim_member(&first).await.op("claim_member")?,
        None,
        "first claim"
    );
    let again = MemberRecord {
        address: addr(ns, "mario.rossi2"),
        ..first.clone()
    };
    ensure_eq!(
        s.claim_member(&again).await.op("claim_member again")?,
        Some(first.clone()),
        "a second claim reports the first and changes nothing"
    );
    let elsewhere = MemberRecord {
        tenant: format!("{ns}-other"),
        ..again.clone()
    };
    ensure_eq!(
        s.claim_member(&elsewhere)
            .await
            .op("claim_member other tenant")?,
        None,
        "the same person in another tenant is another member"
    );
    let created = MemberRecord {
        status: MemberStatus::Created,
        ..first.clone()
    };
    s.put_member(&created).await.op("put_member")?;
    ensure_eq!(
        s.member(&tenant, "RSSMRA85T10A562S").await.op("member")?,
        Some(created),
        "put_member replaces"
    );
    ensure_eq!(
        s.member(&tenant, "BNCNNA80A41H501R").await.op("member")?,
        None,
        "no such member"
    );
    let link = ActivationRecord {
        token_hash: format!("{ns}-hash"),
        address: first.address.clone(),
        tenant: tenant.clone(),
        agreement: true,
        reset_for: None,
        expires_at: at(3600),
    };
    s.put_activation(&link).await.op("put_activation")?;
    ensure_eq!(
        s.take_activation(&link.token_hash, at(10))
            .await
            .op("take_activation")?,
        Some(link.clone()),
        "taken once"
    );
    ensure_eq!(
        s.take_activation(&link.token_hash, at(20))
            .await
            .op("take_activation again")?,
        None,
        "single use"
    );
    let stale = ActivationRecord {
        token_hash: format!("{ns}-stale"),
        ..link
    };
    s.put_activation(&stale).await.op("put_activation")?;
    ensure_eq!(
        s.take_activation(&stale.token_hash, at(3600))
            .await
            .op("take_activation expired")?,
        None,
        "expired at its expiry time"
    );
    Ok(())
}

/// store_in_mailbox: Stored, then Duplicate for the same item id (whatever its content), with
/// the usage counted once.
async fn store_then_duplicate<S: StateStore>(s: &S, ns: &str) -> Outcome {
    let a = addr(ns, "box");
    s.create_mailbox(&mailbox(&a, 10_000))
        .await
        .op("create_mailbox")?;
    let it = item("m1", 300, 1);
    ensure_eq!(
        s.store_in_mailbox(&a, &it, None, true).await.op("store")?,
        MailboxWrite::Stored,
        "first store"
    );
    ensure_eq!(used(s, &a).await?, 300, "usage after the store");
    for (enforce, size) in [(true, 300), (false, 300), (true, 999)] {
        let dup = MailboxItem { size, ..it.clone() };
        ensure_eq!(
            s.store_in_mailbox(&shout(&a), &dup, None, enforce)
                .await
                .op("store again")?,
            MailboxWrite::Duplicate,
            "same item again (size {size}, quota enforced {enforce})"
        );
    }
    ensure_eq!(used(s, &a).await?, 300, "usage after the duplicates");
    ensure_eq!(
        s.mailbox_items(&a).await.op("mailbox_items")?,
        vec![it],
        "the item, once, as first stored"
    );
    Ok(())
}

/// store_in_mailbox with a decision records the recipient outcome with the item; a second
/// store with the same decision (even of another item) is Decided, with the one in force, and
/// changes nothing.
async fn store_records_decision_atomically<S: StateStore>(s: &S, ns: &str) -> Outcome {
    let a = addr(ns, "box");
    let msg = format!("{ns}-msg");
    s.create_mailbox(&mailbox(&a, 10_000))
        .await
        .op("create_mailbox")?;
    let first = outcome(&shout(&a), DeliveryStatus::Delivered, Some("i1"));
    ensure_eq!(
        s.store_in_mailbox(&a, &item("i1", 100, 1), Some((&msg, &first)), true)
            .await
            .op("store")?,
        MailboxWrite::Stored,
        "store with a decision"
    );
    ensure_eq!(
        s.recipient(&msg, &a).await.op("recipient")?,
        Some(first.clone()),
        "the decision recorded with the item"
    );
    let other = outcome(&a, DeliveryStatus::Delivered, Some("i2"));
    ensure_eq!(
        s.store_in_mailbox(&a, &item("i2", 100, 2), Some((&msg, &other)), true)
            .await
            .op("store again")?,
        MailboxWrite::Decided(first.clone()),
        "another item for a decided recipient"
    );
    ensure_eq!(
        item_ids(s, &a).await?,
        vec!["i1".to_string()],
        "no second item"
    );
    ensure_eq!(
        used(s, &a).await?,
        100,
        "usage unchanged by the decided store"
    );
    ensure_eq!(
        s.record_recipient(&msg, &other)
            .await
            .op("record_recipient")?,
        first,
        "record_recipient returns the decision in force"
    );
    // The same recipient of another message is another decision.
    let msg2 = format!("{ns}-msg2");
    ensure_eq!(
        s.store_in_mailbox(&a, &item("i3", 50, 3), Some((&msg2, &other)), true)
            .await
            .op("store for another message")?,
        MailboxWrite::Stored,
        "the same recipient of another message"
    );
    ensure_eq!(used(s, &a).await?, 150, "usage after the second message");
    Ok(())
}

/// A decided recipient is reported as Decided even when the item is a duplicate too.
async fn decided_wins_over_duplicate<S: StateStore>(s: &S, ns: &str) -> Outcome {
    let a = addr(ns, "box");
    let msg = format!("{ns}-msg");
    s.create_mailbox(&mailbox(&a, 10_000))
        .await
        .op("create_mailbox")?;
    let decision = outcome(&a, DeliveryStatus::Delivered, Some("i1"));
    let it = item("i1", 100, 1);
    ensure_eq!(
        s.store_in_mailbox(&a, &it, Some((&msg, &decision)), true)
            .await
            .op("store")?,
        MailboxWrite::Stored,
        "first store"
    );
    ensure_eq!(
        s.store_in_mailbox(&a, &it, Some((&msg, &decision)), true)
            .await
            .op("store again")?,
        MailboxWrite::Decided(decision.clone()),
        "the same delivery again"
    );
    ensure_eq!(
        s.store_in_mailbox(&a, &it, None, true)
            .await
            .op("store without decision")?,
        MailboxWrite::Duplicate,
        "the same item without a decision"
    );
    // A duplicate item with a new decision records nothing.
    let msg2 = format!("{ns}-msg2");
    ensure_eq!(
        s.store_in_mailbox(&a, &it, Some((&msg2, &decision)), true)
            .await
            .op("store dup")?,
        MailboxWrite::Duplicate,
        "a stored item under an undecided recipient"
    );
    ensure_eq!(
        s.recipient(&msg2, &a).await.op("recipient")?,
        None,
        "a duplicate records no decision"
    );
    ensure_eq!(used(s, &a).await?, 100, "usage counted once");
    Ok(())
}

/// No mailbox: NoMailbox and nothing recorded; Decided when the recipient was decided.
async fn store_without_mailbox<S: StateStore>(s: &S, ns: &str) -> Outcome {
    let a = addr(ns, "nobody");
    let msg = format!("{ns}-msg");
    let decision = outcome(&a, DeliveryStatus::Delivered, Some("i1"));
    for enforce in [true, false] {
        ensure_eq!(
            s.store_in_mailbox(&a, &item("i1", 10, 1), Some((&msg, &decision)), enforce)
                .await
                .op("store")?,
            MailboxWrite::NoMailbox,
            "store into a missing mailbox (quota enforced {enforce})"
        );
        ensure_eq!(
            s.store_in_mailbox(&a, &item("i1", 10, 1), None, enforce)
                .await
                .op("store")?,
            MailboxWrite::NoMailbox,
            "store without decision into a missing mailbox"
        );
    }
    ensure_eq!(
        s.recipient(&msg, &a).await.op("recipient")?,
        None,
        "no decision recorded"
    );
    ensure_eq!(
        s.mailbox_items(&a).await.op("mailbox_items")?,
        vec![],
        "no item recorded"
    );
    let refused = RecipientOutcome {
        reason: Some(NotDelivered::UnknownUser),
        ..outcome(&a, DeliveryStatus::NotDelivered, None)
    };
    ensure_eq!(
        s.record_recipient(&msg, &refused)
            .await
            .op("record_recipient")?,
        refused.clone(),
        "record the refusal"
    );
    ensure_eq!(
        s.store_in_mailbox(&a, &item("i1", 10, 1), Some((&msg, &decision)), true)
            .await
            .op("store")?,
        MailboxWrite::Decided(refused),
        "a decided recipient without a mailbox"
    );
    ensure_eq!(
        s.delete_item(&a, "i1").await.op("delete_item")?,
        None,
        "delete from a missing mailbox"
    );
    Ok(())
}

/// The quota rule to the byte: `used + size <= quota`; stores without the quota go over;
/// deletes subtract exactly.
async fn quota_is_exact<S: StateStore>(s: &S, ns: &str) -> Outcome {
    let a = addr(ns, "box");
    s.create_mailbox(&mailbox(&a, 1_000))
        .await
        .op("create_mailbox")?;
    let steps: [(&str, u64, bool, MailboxWrite, u64); 9] = [
        ("a", 600, true, MailboxWrite::Stored, 600),
        (
            "b",
            401,
            true,
            MailboxWrite::Full {
                used: 600,
                quota: 1_000,
            },
            600,
        ),
        (
            "c",
            1_001,
            true,
            MailboxWrite::Full {
                used: 600,
                quota: 1_000,
            },
            600,
        ),
        ("d", 400, true, MailboxWrite::Stored, 1_000),
        (
            "e",
            1,
            true,
            MailboxWrite::Full {
                used: 1_000,
                quota: 1_000,
            },
            1_000,
        ),
        ("f", 0, true, MailboxWrite::Stored, 1_000),
        ("g", 500, false, MailboxWrite::Stored, 1_500),
        (
            "h",
            1,
            true,
            MailboxWrite::Full {
                used: 1_500,
                quota: 1_000,
            },
            1_500,
        ),
        (
            "i",
            0,
            true,
            MailboxWrite::Full {
                used: 1_500,
                quota: 1_000,
            },
            1_500,
        ),
    ];
    for (i, (id, size, enforce, want, want_used)) in steps.into_iter().enumerate() {
        let got = s
            .store_in_mailbox(&a, &item(id, size, i as i64), None, enforce)
            .await
            .op("store")?;
        ensure_eq!(
            got,
            want,
            "item {id} of {size} bytes (quota enforced {enforce})"
        );
        ensure_eq!(used(s, &a).await?, want_used, "usage after item {id}");
    }
    ensure_eq!(
        item_ids(s, &a).await?,
        vec!["a", "d", "f", "g"],
        "the stored items"
    );
    let deleted = s.delete_item(&a, "a").await.op("delete_item")?;
    ensure_eq!(deleted.map(|i| i.size), Some(600), "the deleted item");
    ensure_eq!(used(s, &a).await?, 900, "usage after deleting 600 bytes");
    ensure_eq!(
        s.store_in_mailbox(&a, &item("j", 101, 20), None, true)
            .await
            .op("store")?,
        MailboxWrite::Full {
            used: 900,
            quota: 1_000
        },
        "101 bytes into 100 free"
    );
    ensure_eq!(
        s.store_in_mailbox(&a, &item("k", 100, 21), None, true)
            .await
            .op("store")?,
        MailboxWrite::Stored,
        "100 bytes into 100 free"
    );
    ensure_eq!(used(s, &a).await?, 1_000, "full to the byte");
    let mbx = s
        .mailbox(&a)
        .await
        .op("mailbox")?
        .ok_or("mailbox vanished")?;
    ensure_eq!(mbx.quota_bytes, 1_000, "quota unchanged");
    Ok(())
}

/// Full: neither the item nor the decision is recorded.
async fn full_records_nothing<S: StateStore>(s: &S, ns: &str) -> Outcome {
    let a = addr(ns, "box");
    let msg = format!("{ns}-msg");
    s.create_mailbox(&mailbox(&a, 100))
        .await
        .op("create_mailbox")?;
    let decision = outcome(&a, DeliveryStatus::Delivered, Some("big"));
    ensure_eq!(
        s.store_in_mailbox(&a, &item("big", 101, 1), Some((&msg, &decision)), true)
            .await
            .op("store")?,
        MailboxWrite::Full {
            used: 0,
            quota: 100
        },
        "an item one byte over the quota"
    );
    ensure_eq!(
        s.recipient(&msg, &a).await.op("recipient")?,
        None,
        "no decision recorded"
    );
    ensure_eq!(
        s.mailbox_items(&a).await.op("mailbox_items")?,
        vec![],
        "no item recorded"
    );
    ensure_eq!(used(s, &a).await?, 0, "usage unchanged");
    // The caller then records the refusal; a retry of the delivery sees it.
    let refused = outcome(&a, DeliveryStatus::NotDelivered, None);
    s.record_recipient(&msg, &refused)
        .await
        .op("record_recipient")?;
    ensure_eq!(
        s.store_in_mailbox(&a, &item("big", 101, 1), Some((&msg, &decision)), true)
            .await
            .op("store again")?,
        MailboxWrite::Decided(refused),
        "a retry after the refusal was recorded"
    );
    Ok(())
}

/// A duplicate is a duplicate (and a decided recipient decided) even when the mailbox is now
/// full or the item is larger than the whole quota: a redelivery must not turn into a refusal.
async fn duplicate_of_full_or_oversized_item<S: StateStore>(s: &S, ns: &str) -> Outcome {
    let a = addr(ns, "box");
    let msg = format!("{ns}-msg");
    s.create_mailbox(&mailbox(&a, 1_000))
        .await
        .op("create_mailbox")?;
    let filling = item("fill", 1_000, 1);
    let decision = outcome(&a, DeliveryStatus::Delivered, Some("fill"));
    ensure_eq!(
        s.store_in_mailbox(&a, &filling, Some((&msg, &decision)), true)
            .await
            .op("store")?,
        MailboxWrite::Stored,
        "an item filling the mailbox"
    );
    ensure_eq!(
        s.store_in_mailbox(&a, &filling, None, true)
            .await
            .op("store again")?,
        MailboxWrite::Duplicate,
        "the filling item again, mailbox full"
    );
    ensure_eq!(
        s.store_in_mailbox(&a, &filling, Some((&msg, &decision)), true)
            .await
            .op("store again")?,
        MailboxWrite::Decided(decision.clone()),
        "the filling delivery again, mailbox full"
    );
    // Larger than the whole quota: stored without the quota (a receipt), then redelivered.
    let huge = item("huge", 5_000, 2);
    ensure_eq!(
        s.store_in_mailbox(&a, &huge, None, false)
            .await
            .op("store")?,
        MailboxWrite::Stored,
        "an item over the quota, quota not enforced"
    );
    ensure_eq!(
        s.store_in_mailbox(&a, &huge, None, true)
            .await
            .op("store again")?,
        MailboxWrite::Duplicate,
        "the oversized item again, quota enforced"
    );
    let msg2 = format!("{ns}-msg2");
    let huge_decision = outcome(&a, DeliveryStatus::Delivered, Some("huge2"));
    s.record_recipient(&msg2, &huge_decision)
        .await
        .op("record_recipient")?;
    ensure_eq!(
        s.store_in_mailbox(
            &a,
            &item("huge2", 5_000, 3),
            Some((&msg2, &huge_decision)),
            true
        )
        .await
        .op("store decided")?,
        MailboxWrite::Decided(huge_decision),
        "an oversized item for a decided recipient"
    );
    ensure_eq!(used(s, &a).await?, 6_000, "usage");
    ensure_eq!(item_ids(s, &a).await?, vec!["fill", "huge"], "items");
    Ok(())
}

/// delete_item returns the item and subtracts exactly its size, once.
async fn delete_item_subtracts_exactly<S: StateStore>(s: &S, ns: &str) -> Outcome {
    let a = addr(ns, "box");
    s.create_mailbox(&mailbox(&a, 1_000_000))
        .await
        .op("create_mailbox")?;
    let items = [item("x", 12_345, 1), item("y", 1, 2), item("z", 777, 3)];
    for it in &items {
        s.store_in_mailbox(&a, it, None, true).await.op("store")?;
    }
    ensure_eq!(used(s, &a).await?, 13_123, "usage after three stores");
    ensure_eq!(
        s.delete_item(&shout(&a), "x").await.op("delete_item")?,
        Some(items[0].clone()),
        "deleting x (address in capitals)"
    );
    ensure_eq!(used(s, &a).await?, 778, "usage after deleting x");
    ensure_eq!(
        s.delete_item(&a, "x").await.op("delete_item again")?,
        None,
        "x again"
    );
    ensure_eq!(used(s, &a).await?, 778, "a second delete subtracts nothing");
    ensure_eq!(
        s.delete_item(&a, "nope").await.op("delete_item")?,
        None,
        "an unknown item"
    );
    ensure_eq!(
        item_ids(s, &a).await?,
        vec!["y", "z"],
        "items after the delete"
    );
    ensure_eq!(
        s.delete_item(&a, "z").await.op("delete_item")?,
        Some(items[2].clone()),
        "deleting z"
    );
    ensure_eq!(
        s.delete_item(&a, "y").await.op("delete_item")?,
        Some(items[1].clone()),
        "deleting y"
    );
    ensure_eq!(used(s, &a).await?, 0, "usage back to zero");
    // A deleted id can be stored again.
    ensure_eq!(
        s.store_in_mailbox(&a, &items[0], None, true)
            .await
            .op("store")?,
        MailboxWrite::Stored,
        "x stored again after its delete"
    );
    ensure_eq!(used(s, &a).await?, 12_345, "usage after storing x again");
    Ok(())
}

/// mailbox_items: oldest first, ties by id, whatever the write order; per mailbox.
async fn mailbox_items_oldest_first<S: StateStore>(s: &S, ns: &str) -> Outcome {
    let a = addr(ns, "box");
    let b = addr(ns, "other");
    s.create_mailbox(&mailbox(&a, 1_000_000))
        .await
        .op("create_mailbox")?;
    s.create_mailbox(&mailbox(&b, 1_000_000))
        .await
        .op("create_mailbox")?;
    for (id, secs) in [
        ("k", 30),
        ("a", 50),
        ("t2", 10),
        ("t1", 10),
        ("z", 0),
        ("m", 40),
    ] {
        s.store_in_mailbox(&a, &item(id, 10, secs), None, true)
            .await
            .op("store")?;
    }
    s.store_in_mailbox(&b, &item("other", 10, 20), None, true)
        .await
        .op("store")?;
    ensure_eq!(
        item_ids(s, &shout(&a)).await?,
        vec!["z", "t1", "t2", "k", "m", "a"],
        "oldest first, ties by id"
    );
    ensure_eq!(
        item_ids(s, &b).await?,
        vec!["other"],
        "another mailbox's items"
    );
    ensure_eq!(
        item_ids(s, &addr(ns, "nobody")).await?,
        Vec::<String>::new(),
        "a missing mailbox has no items"
    );
    Ok(())
}

/// mailbox_items over more than one query page: every item, oldest first.
async fn mailbox_items_pages<S: StateStore>(s: &S, ns: &str) -> Outcome {
    let a = paging_mailbox(ns);
    s.create_mailbox(&mailbox(&a, u64::MAX / 2))
        .await
        .op("create_mailbox")?;
    let mut want = Vec::new();
    let mut total = 0;
    // Written newest first, so the store's order is not the write order.
    for i in (0..PAGING_RECORDS).rev() {
        let mut it = item(&format!("p{i:03}"), 1_000 + i as u64, i as i64);
        it.subject = format!("{} {}", it.subject, "x".repeat(PAGING_PAD));
        total += it.size;
        ensure_eq!(
            s.store_in_mailbox(&a, &it, None, true).await.op("store")?,
            MailboxWrite::Stored,
            "store item {i}"
        );
        want.push(it);
    }
    want.reverse();
    let got = s.mailbox_items(&a).await.op("mailbox_items")?;
    ensure_eq!(got.len(), want.len(), "number of items");
    ensure!(
        got == want,
        "items differ from what was stored (order or content)"
    );
    ensure_eq!(used(s, &a).await?, total, "usage");
    Ok(())
}

/// create_message: None (created), then the existing record; message reads it back.
async fn create_message_once<S: StateStore>(s: &S, ns: &str) -> Outcome {
    let first = message(ns, "m");
    ensure_eq!(
        s.message(&first.id).await.op("message")?,
        None,
        "message before create"
    );
    ensure_eq!(
        s.create_message(&first).await.op("create_message")?,
        None,
        "first create"
    );
    let mut second = first.clone();
    second.subject = "another".into();
    second.state = MessageState::Rejected;
    ensure_eq!(
        s.create_message(&second).await.op("create_message again")?,
        Some(first.clone()),
        "second create returns the existing record"
    );
    ensure_eq!(
        s.message(&first.id).await.op("message")?,
        Some(first),
        "the first record stays"
    );
    ensure_eq!(
        s.message(&format!("{ns}-other")).await.op("message")?,
        None,
        "an unknown message"
    );
    Ok(())
}

/// update_message replaces (last writer wins); create_message then returns the update.
async fn update_message_replaces<S: StateStore>(s: &S, ns: &str) -> Outcome {
    let first = message(ns, "m");
    s.create_message(&first).await.op("create_message")?;
    let mut accepted = first.clone();
    accepted.state = MessageState::Accepted;
    accepted.updated_at = at(60);
    s.update_message(&accepted).await.op("update_message")?;
    ensure_eq!(
        s.message(&first.id).await.op("message")?,
        Some(accepted.clone()),
        "updated"
    );
    ensure_eq!(
        s.create_message(&first).await.op("create_message")?,
        Some(accepted.clone()),
        "create after update returns the record in force"
    );
    // update_message of an unknown id writes it.
    let fresh = message(ns, "fresh");
    s.update_message(&fresh).await.op("update_message")?;
    ensure_eq!(
        s.message(&fresh.id).await.op("message")?,
        Some(fresh.clone()),
        "upserted"
    );
    ensure_eq!(
        s.create_message(&fresh).await.op("create_message")?,
        Some(fresh),
        "create after an upsert"
    );
    Ok(())
}

/// message_by_identificativo finds the record in force.
async fn message_by_identificativo<S: StateStore>(s: &S, ns: &str) -> Outcome {
    let m = message(ns, "m");
    let other = message(ns, "o");
    ensure_eq!(
        s.message_by_identificativo(&m.identificativo)
            .await
            .op("message_by_identificativo")?,
        None,
        "before create"
    );
    s.create_message(&m).await.op("create_message")?;
    s.create_message(&other).await.op("create_message")?;
    ensure_eq!(
        s.message_by_identificativo(&m.identificativo)
            .await
            .op("message_by_identificativo")?,
        Some(m.clone()),
        "by identificativo"
    );
    let mut accepted = m.clone();
    accepted.state = MessageState::Accepted;
    s.update_message(&accepted).await.op("update_message")?;
    ensure_eq!(
        s.message_by_identificativo(&m.identificativo)
            .await
            .op("message_by_identificativo")?,
        Some(accepted),
        "by identificativo after an update"
    );
    ensure_eq!(
        s.message_by_identificativo(&format!("opec-{ns}-none@pec.example"))
            .await
            .op("message_by_identificativo")?,
        None,
        "an unknown identificativo"
    );
    Ok(())
}

/// record_recipient: the first outcome is the one in force; lookups normalise the address.
async fn record_recipient_once<S: StateStore>(s: &S, ns: &str) -> Outcome {
    let msg = format!("{ns}-msg");
    let a = addr(ns, "rcpt");
    ensure_eq!(s.recipient(&msg, &a).await.op("recipient")?, None, "before");
    let first = outcome(&shout(&a), DeliveryStatus::Delivered, Some("i1"));
    ensure_eq!(
        s.record_recipient(&msg, &first).await.op("record")?,
        first.clone(),
        "first"
    );
    // A refusal by another provider's MX, with its reply (the detail round-trips).
    let second = RecipientOutcome {
        reason: Some(NotDelivered::Refused),
        detail: Some("5.7.1 rifiutato: politica del dominio".into()),
        ..outcome(&a, DeliveryStatus::NotDelivered, None)
    };
    ensure_eq!(
        s.record_recipient(&msg, &second).await.op("record again")?,
        first.clone(),
        "second record returns the first"
    );
    ensure_eq!(
        s.recipient(&msg, &a).await.op("recipient")?,
        Some(first.clone()),
        "lower"
    );
    ensure_eq!(
        s.recipient(&msg, &shout(&a)).await.op("recipient")?,
        Some(first),
        "capitals"
    );
    ensure_eq!(
        s.recipient(&format!("{ns}-msg2"), &a)
            .await
            .op("recipient")?,
        None,
        "another message"
    );
    ensure_eq!(
        s.record_recipient(&format!("{ns}-msg2"), &second)
            .await
            .op("record")?,
        second.clone(),
        "the same address for another message"
    );
    ensure_eq!(
        s.recipient(&format!("{ns}-msg2"), &a)
            .await
            .op("recipient")?,
        Some(second),
        "the refusal and its detail read back"
    );
    Ok(())
}

/// create_inbound: None (created), then the existing record.
async fn create_inbound_once<S: StateStore>(s: &S, ns: &str) -> Outcome {
    let first = inbound(ns, "in");
    ensure_eq!(s.inbound(&first.id).await.op("inbound")?, None, "before");
    ensure_eq!(
        s.create_inbound(&first).await.op("create_inbound")?,
        None,
        "first create"
    );
    let mut second = first.clone();
    second.decision = InboundDecision::Anomaly;
    second.reason = Some("firma non valida".into());
    second.security_error = true;
    ensure_eq!(
        s.create_inbound(&second).await.op("create_inbound again")?,
        Some(first.clone()),
        "second create returns the existing record"
    );
    ensure_eq!(
        s.inbound(&first.id).await.op("inbound")?,
        Some(first),
        "the first stays"
    );
    Ok(())
}

/// create_relay: the first record is the one in force; lookups normalise the recipient.
async fn create_relay_once<S: StateStore>(s: &S, ns: &str) -> Outcome {
    let msg = format!("{ns}-msg");
    let r = "Rcpt@Other.Example";
    let t = timer_base(ns);
    ensure_eq!(s.relay(&msg, r).await.op("relay")?, None, "before");
    let first = relay(&msg, r, true, t);
    ensure_eq!(
        s.create_relay(&first).await.op("create_relay")?,
        first.clone(),
        "first"
    );
    let second = relay(&msg, &norm(r), false, t + chrono::Duration::hours(1));
    ensure_eq!(
        s.create_relay(&second).await.op("create_relay again")?,
        first.clone(),
        "second create returns the first"
    );
    ensure_eq!(
        s.relay(&msg, &norm(r)).await.op("relay")?,
        Some(first.clone()),
        "lower"
    );
    ensure_eq!(
        s.relay(&msg, &shout(r)).await.op("relay")?,
        Some(first),
        "capitals"
    );
    ensure_eq!(
        s.relay(&format!("{ns}-x"), r).await.op("relay")?,
        None,
        "another message"
    );
    // Leave no timer behind on a shared table.
    s.relay_mark(&msg, r, RelayEvent::Delivered, t)
        .await
        .op("relay_mark")?;
    Ok(())
}

/// relay_mark records each event once (the first time stays); unknown relays are not marked.
async fn relay_mark_once<S: StateStore>(s: &S, ns: &str) -> Outcome {
    let msg = format!("{ns}-msg");
    let r = "rcpt@other.example";
    let t = timer_base(ns);
    ensure!(
        !s.relay_mark(&msg, r, RelayEvent::TakenInCharge, t)
            .await
            .op("relay_mark")?,
        "marking an unknown relay returned true"
    );
    ensure_eq!(
        s.relay(&msg, r).await.op("relay")?,
        None,
        "a mark creates no relay"
    );
    s.create_relay(&relay(&msg, r, true, t))
        .await
        .op("create_relay")?;
    let events = [
        RelayEvent::TakenInCharge,
        RelayEvent::Notice12,
        RelayEvent::Delivered,
        RelayEvent::Failed,
        RelayEvent::Notice24,
    ];
    let mut want = relay(&msg, r, true, t);
    for (i, event) in events.into_iter().enumerate() {
        let when = t + chrono::Duration::milliseconds(1_000 * (i as i64 + 1) + 123);
        ensure!(
            s.relay_mark(&msg, &shout(r), event, when)
                .await
                .op("relay_mark")?,
            "first {event:?} returned false"
        );
        ensure!(
            !s.relay_mark(&msg, r, event, when + chrono::Duration::hours(1))
                .await
                .op("relay_mark again")?,
            "second {event:?} returned true"
        );
        *match event {
            RelayEvent::TakenInCharge => &mut want.taken_at,
            RelayEvent::Delivered => &mut want.delivered_at,
            RelayEvent::Failed => &mut want.failed_at,
            RelayEvent::Notice12 => &mut want.notice12_at,
            RelayEvent::Notice24 => &mut want.notice24_at,
        } = Some(when);
        ensure_eq!(
            s.relay(&msg, r).await.op("relay")?,
            Some(want.clone()),
            "after {event:?}"
        );
    }
    ensure_eq!(
        s.create_relay(&relay(&msg, r, true, t))
            .await
            .op("create_relay")?,
        want,
        "create_relay returns the marked record in force"
    );
    Ok(())
}

/// timers_due: certified relays only, relayed at or before `before` (inclusive, to the
/// instant), with their marks.
async fn timers_due_certified_and_before<S: StateStore>(s: &S, ns: &str) -> Outcome {
    let t = timer_base(ns);
    let ms = chrono::Duration::milliseconds;
    let (m1, m2, m3) = (format!("{ns}-m1"), format!("{ns}-m2"), format!("{ns}-m3"));
    let early = relay(&m1, "early@other.example", true, t);
    let ordinary = relay(&m1, "ordinary@other.example", false, t);
    let late = relay(
        &m2,
        "late@other.example",
        true,
        t + chrono::Duration::hours(1),
    );
    // Half a millisecond after `t`: due at `t + 1 ms`, not at `t`.
    let fraction = relay(
        &m3,
        "fraction@other.example",
        true,
        t + chrono::Duration::microseconds(500),
    );
    for r in [&early, &ordinary, &late, &fraction] {
        s.create_relay(r).await.op("create_relay")?;
    }
    let pair = |r: &RelayRecord| (r.message.clone(), norm(&r.recipient));
    ensure_eq!(
        own_timers(s, ns, t - ms(1)).await?,
        vec![],
        "before any relay"
    );
    ensure_eq!(
        own_timers(s, ns, t).await?,
        vec![pair(&early)],
        "at the first relay's instant"
    );
    ensure_eq!(
        own_timers(s, ns, t + ms(1)).await?,
        vec![pair(&early), pair(&fraction)],
        "a millisecond later"
    );
    ensure_eq!(
        own_timers(s, ns, t + chrono::Duration::hours(2)).await?,
        vec![pair(&early), pair(&late), pair(&fraction)],
        "all certified relays, never the ordinary one"
    );
    // Non-final marks keep the timer, and the record comes with them.
    let taken = t + ms(2_000);
    s.relay_mark(&m1, &early.recipient, RelayEvent::TakenInCharge, taken)
        .await
        .op("mark")?;
    s.relay_mark(&m1, &early.recipient, RelayEvent::Notice12, taken)
        .await
        .op("mark")?;
    let due = s.timers_due(t).await.op("timers_due")?;
    let got: Vec<_> = due
        .into_iter()
        .filter(|r| r.message.starts_with(ns))
        .collect();
    let want = RelayRecord {
        taken_at: Some(taken),
        notice12_at: Some(taken),
        ..early.clone()
    };
    ensure_eq!(got, vec![want], "the due record with its marks");
    for r in [&early, &late, &fraction] {
        s.relay_mark(&r.message, &r.recipient, RelayEvent::Delivered, taken)
            .await
            .op("mark")?;
    }
    ensure_eq!(
        own_timers(s, ns, t + chrono::Duration::hours(2)).await?,
        vec![],
        "cleaned up"
    );
    Ok(())
}

/// Delivered, failed and the 24 h notice take a relay off the timers; presa in carico and the
/// 12 h notice do not.
async fn final_events_leave_timers<S: StateStore>(s: &S, ns: &str) -> Outcome {
    let t = timer_base(ns);
    let later = t + chrono::Duration::hours(25);
    let msg = format!("{ns}-msg");
    let cases = [
        ("delivered", RelayEvent::Delivered),
        ("failed", RelayEvent::Failed),
        ("notice24", RelayEvent::Notice24),
        ("taken", RelayEvent::TakenInCharge),
        ("notice12", RelayEvent::Notice12),
    ];
    for (local, _) in cases {
        s.create_relay(&relay(&msg, &format!("{local}@other.example"), true, t))
            .await
            .op("create_relay")?;
    }
    let all: Vec<_> = cases
        .iter()
        .map(|(local, _)| (msg.clone(), format!("{local}@other.example")))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    ensure_eq!(
        own_timers(s, ns, later).await?,
        all,
        "all due before any event"
    );
    for (local, event) in cases {
        ensure!(
            s.relay_mark(&msg, &format!("{local}@other.example"), event, later)
                .await
                .op("relay_mark")?,
            "{event:?} not recorded"
        );
    }
    ensure_eq!(
        own_timers(s, ns, later).await?,
        vec![
            (msg.clone(), "notice12@other.example".to_string()),
            (msg.clone(), "taken@other.example".to_string())
        ],
        "only the relays without a final event stay"
    );
    for local in ["taken", "notice12"] {
        s.relay_mark(
            &msg,
            &format!("{local}@other.example"),
            RelayEvent::Notice24,
            later,
        )
        .await
        .op("relay_mark")?;
    }
    ensure_eq!(own_timers(s, ns, later).await?, vec![], "all final");
    Ok(())
}

/// mark_sent: true once per (key, destination); was_sent normalises the destination.
async fn mark_sent_once<S: StateStore>(s: &S, ns: &str) -> Outcome {
    let key = format!("outbound/{ns}/m1.eml");
    let d = "MX@Other.Example";
    ensure!(
        !s.was_sent(&key, d).await.op("was_sent")?,
        "sent before the mark"
    );
    ensure!(
        s.mark_sent(&key, d).await.op("mark_sent")?,
        "first mark_sent returned false"
    );
    ensure!(
        !s.mark_sent(&key, &norm(d)).await.op("mark_sent")?,
        "second mark_sent returned true"
    );
    ensure!(
        s.was_sent(&key, &norm(d)).await.op("was_sent")?,
        "not sent after the mark (lower)"
    );
    ensure!(
        s.was_sent(&key, &shout(d)).await.op("was_sent")?,
        "not sent after the mark (caps)"
    );
    ensure!(
        !s.was_sent(&key, "mx@third.example").await.op("was_sent")?,
        "another destination"
    );
    ensure!(
        !s.was_sent(&format!("outbound/{ns}/m2.eml"), d)
            .await
            .op("was_sent")?,
        "another key"
    );
    ensure!(
        s.mark_sent(&key, "mx@third.example")
            .await
            .op("mark_sent")?,
        "the same key to another destination"
    );
    Ok(())
}

/// record_spam: once per (mailbox, time, message), the mailbox normalised; spam_detections by
/// mailbox from a time on, oldest first; spam_senders: each mailbox once, within the range
/// (across UTC hours).
async fn spam_detections_once_and_by_time<S: StateStore>(s: &S, ns: &str) -> Outcome {
    // A base time of this namespace's own, just before a UTC hour turns.
    let base = log_base(ns) + chrono::Duration::minutes(50);
    let (a, b) = (addr(ns, "spammer"), addr(ns, "other"));
    let detection = |mailbox: &str, minutes: i64, message: &str| SpamDetection {
        mailbox: mailbox.to_string(),
        at: base + chrono::Duration::minutes(minutes),
        message: format!("{ns}-{message}"),
        identificativo: format!("{message}@{ns}"),
        score: crate::spam::Points::new(15.0).expect("finite"),
    };
    let first = detection(&shout(&a), 0, "m1");
    ensure!(
        s.record_spam(&first).await.op("record_spam")?,
        "first record_spam returned false"
    );
    ensure!(
        !s.record_spam(&detection(&a, 0, "m1"))
            .await
            .op("record_spam")?,
        "the same detection again (address in lower case) recorded twice"
    );
    for (mailbox, minutes, message) in [(&a, 5, "m2"), (&a, 20, "m3"), (&b, 15, "m4")] {
        ensure!(
            s.record_spam(&detection(mailbox, minutes, message))
                .await
                .op("record_spam")?,
            "record_spam {message} returned false"
        );
    }
    let all = s
        .spam_detections(&shout(&a), base)
        .await
        .op("spam_detections")?;
    ensure_eq!(
        all.iter().map(|d| d.message.clone()).collect::<Vec<_>>(),
        vec![format!("{ns}-m1"), format!("{ns}-m2"), format!("{ns}-m3")],
        "a's detections, oldest first"
    );
    ensure_eq!(all[0].mailbox, norm(&a), "the mailbox as the store keys it");
    ensure_eq!(all[0].score.get(), 15.0, "the score");
    let later = s
        .spam_detections(&a, base + chrono::Duration::minutes(5))
        .await
        .op("spam_detections")?;
    ensure_eq!(later.len(), 2, "from minute 5 on (inclusive)");
    let own = |v: Vec<String>| -> Vec<String> {
        v.into_iter().filter(|m| m.ends_with(&domain(ns))).collect()
    };
    let senders = s
        .spam_senders(base, base + chrono::Duration::minutes(30))
        .await
        .op("spam_senders")?;
    ensure_eq!(
        own(senders),
        vec![norm(&b), norm(&a)],
        "both senders, once each, sorted"
    );
    let senders = s
        .spam_senders(
            base + chrono::Duration::minutes(16),
            base + chrono::Duration::minutes(30),
        )
        .await
        .op("spam_senders")?;
    ensure_eq!(
        own(senders),
        vec![norm(&a)],
        "only a after minute 16 (next hour)"
    );
    let senders = s
        .spam_senders(
            base + chrono::Duration::minutes(1),
            base + chrono::Duration::minutes(4),
        )
        .await
        .op("spam_senders")?;
    ensure_eq!(
        own(senders),
        Vec::<String>::new(),
        "nobody between minutes 1 and 4"
    );
    Ok(())
}

/// append_log: once per event id, even at another time; log_day has it once.
async fn append_log_once<S: StateStore>(s: &S, ns: &str) -> Outcome {
    let t = log_base(ns);
    let day = t.format("%Y-%m-%d").to_string();
    let e = event(ns, 1, t, 0);
    ensure!(
        s.append_log(&e).await.op("append_log")?,
        "first append returned false"
    );
    ensure!(
        !s.append_log(&e).await.op("append_log again")?,
        "second append returned true"
    );
    let mut moved = e.clone();
    moved.at = t + chrono::Duration::minutes(5);
    moved.subject = Some("another observation".into());
    ensure!(
        !s.append_log(&moved)
            .await
            .op("append_log at another time")?,
        "the same event id at another time was appended"
    );
    let mut next_day = e.clone();
    next_day.at = t + chrono::Duration::days(1);
    ensure!(
        !s.append_log(&next_day)
            .await
            .op("append_log on another day")?,
        "the same event id on another day was appended"
    );
    ensure_eq!(
        own_log(s, ns, &day).await?,
        vec![e],
        "the day holds the first append only"
    );
    let next = (t + chrono::Duration::days(1))
        .format("%Y-%m-%d")
        .to_string();
    ensure_eq!(
        own_log(s, ns, &next).await?,
        vec![],
        "nothing on the next day"
    );
    Ok(())
}

/// log_day: one UTC day, in time order (milliseconds, then event id), whatever the write
/// order; the day's edges included, the neighbours' excluded.
async fn log_day_in_time_order<S: StateStore>(s: &S, ns: &str) -> Outcome {
    let noon = log_base(ns);
    let midnight = noon - chrono::Duration::hours(12);
    let ms = chrono::Duration::milliseconds;
    let day = midnight.format("%Y-%m-%d").to_string();
    // (event index, time) in the order they are written.
    let written = [
        (1, midnight + ms(5_000)),
        (2, midnight + chrono::Duration::hours(24) - ms(1)), // 23:59:59.999
        (3, midnight),                                       // 00:00:00.000
        (4, midnight - ms(1)),                               // the day before
        (5, midnight + chrono::Duration::hours(24)),         // the day after
        (7, midnight + ms(5_000)),                           // same millisecond as 1: by id
        (
            6,
            midnight + ms(5_000) + chrono::Duration::microseconds(300),
        ), // same ms: by id
        (8, noon),
    ];
    let mut events = std::collections::HashMap::new();
    for (i, when) in written {
        let e = event(ns, i, when, 0);
        ensure!(
            s.append_log(&e).await.op("append_log")?,
            "event {i} not appended"
        );
        events.insert(i, e);
    }
    let want: Vec<PecEvent> = [3, 1, 6, 7, 8, 2]
        .iter()
        .map(|i| events[i].clone())
        .collect();
    let got = own_log(s, ns, &day).await?;
    let ids = |v: &[PecEvent]| v.iter().map(|e| e.event_id.clone()).collect::<Vec<_>>();
    ensure_eq!(ids(&got), ids(&want), "the day's events in time order");
    ensure!(
        got == want,
        "the day's events differ from what was appended"
    );
    let before = (midnight - ms(1)).format("%Y-%m-%d").to_string();
    ensure_eq!(
        own_log(s, ns, &before).await?,
        vec![events[&4].clone()],
        "the day before"
    );
    Ok(())
}

/// log_day over more than one query page: every event, in time order.
async fn log_day_pages<S: StateStore>(s: &S, ns: &str) -> Outcome {
    let noon = log_base(ns);
    let mut want = Vec::new();
    // Written newest first.
    for i in (0..PAGING_RECORDS).rev() {
        let e = event(
            ns,
            i,
            noon + chrono::Duration::seconds(i as i64),
            PAGING_PAD,
        );
        ensure!(
            s.append_log(&e).await.op("append_log")?,
            "event {i} not appended"
        );
        want.push(e);
    }
    want.reverse();
    let got = own_log(s, ns, &paging_day(ns)).await?;
    ensure_eq!(got.len(), want.len(), "number of events");
    ensure!(
        got == want,
        "events differ from what was appended (order or content)"
    );
    Ok(())
}

/// Two identical put-if-absent writes at once: exactly one creates, both see the same record.
async fn concurrent_duplicates<S: StateStore>(s: &S, ns: &str) -> Outcome {
    let a = addr(ns, "box");
    let (x, y) = join2(
        s.create_mailbox(&mailbox(&a, 100)),
        s.create_mailbox(&mailbox(&a, 200)),
    )
    .await;
    let (x, y) = (x.op("create_mailbox")?, y.op("create_mailbox")?);
    ensure!(x ^ y, "create_mailbox twice at once: {x} and {y}");

    let (m1, m2) = (
        message(ns, "m"),
        MessageRecord {
            subject: "other".into(),
            ..message(ns, "m")
        },
    );
    let (x, y) = join2(s.create_message(&m1), s.create_message(&m2)).await;
    let (x, y) = (x.op("create_message")?, y.op("create_message")?);
    let stored = s
        .message(&m1.id)
        .await
        .op("message")?
        .ok_or("no message stored")?;
    match (&x, &y) {
        (None, Some(e)) | (Some(e), None) => ensure_eq!(*e, stored, "the record in force"),
        _ => return Err(format!("create_message twice at once: {x:?} and {y:?}")),
    }

    let msg = format!("{ns}-msg");
    let (o1, o2) = (
        outcome(&a, DeliveryStatus::Delivered, Some("i")),
        outcome(&a, DeliveryStatus::NotDelivered, None),
    );
    let (x, y) = join2(s.record_recipient(&msg, &o1), s.record_recipient(&msg, &o2)).await;
    let (x, y) = (x.op("record_recipient")?, y.op("record_recipient")?);
    ensure_eq!(x, y, "record_recipient twice at once returns one outcome");
    ensure_eq!(
        s.recipient(&msg, &a).await.op("recipient")?,
        Some(x),
        "the outcome in force"
    );

    let t = timer_base(ns);
    let (r1, r2) = (
        relay(&msg, "r@other.example", false, t),
        relay(
            &msg,
            "R@other.example",
            false,
            t + chrono::Duration::hours(1),
        ),
    );
    let (x, y) = join2(s.create_relay(&r1), s.create_relay(&r2)).await;
    let (x, y) = (x.op("create_relay")?, y.op("create_relay")?);
    ensure_eq!(x, y, "create_relay twice at once returns one record");

    let (i1, i2) = (
        inbound(ns, "in"),
        InboundRecord {
            kind: "other".into(),
            ..inbound(ns, "in")
        },
    );
    let (x, y) = join2(s.create_inbound(&i1), s.create_inbound(&i2)).await;
    let (x, y) = (x.op("create_inbound")?, y.op("create_inbound")?);
    ensure!(
        x.is_none() ^ y.is_none(),
        "create_inbound twice at once: {x:?} and {y:?}"
    );

    let key = format!("outbound/{ns}.eml");
    let (x, y) = join2(
        s.mark_sent(&key, "mx@other.example"),
        s.mark_sent(&key, "MX@other.example"),
    )
    .await;
    let (x, y) = (x.op("mark_sent")?, y.op("mark_sent")?);
    ensure!(x ^ y, "mark_sent twice at once: {x} and {y}");

    let e = event(ns, 1, log_base(ns), 0);
    let (x, y) = join2(s.append_log(&e), s.append_log(&e)).await;
    let (x, y) = (x.op("append_log")?, y.op("append_log")?);
    ensure!(x ^ y, "append_log twice at once: {x} and {y}");
    ensure_eq!(
        own_log(s, ns, &paging_day(ns)).await?,
        vec![e],
        "the event logged once"
    );
    Ok(())
}

/// sms_window: none at first; replace_sms_window writes only over the window read (or over
/// none), by mailbox (case-insensitive), and reads back whole.
async fn sms_window_replaced_only_as_read<S: StateStore>(s: &S, ns: &str) -> Outcome {
    let (a, b) = (addr(ns, "sms"), addr(ns, "sms-other"));
    ensure!(
        s.sms_window(&a).await.op("sms_window")?.is_none(),
        "a new mailbox has an SMS window"
    );
    let at = log_base(ns);
    let first = crate::sms::SmsWindow {
        last_sent_at: Some(at),
        notified: [(format!("{ns}-item1"), at)].into(),
        ..Default::default()
    };
    ensure!(
        s.replace_sms_window(&shout(&a), None, &first)
            .await
            .op("replace_sms_window")?,
        "the first window was not written"
    );
    ensure!(
        !s.replace_sms_window(&a, None, &first)
            .await
            .op("replace_sms_window")?,
        "a window was written over an existing one as if there were none"
    );
    let second = crate::sms::SmsWindow {
        pending: [format!("{ns}-item2"), format!("{ns}-item3")].into(),
        overflow: 2,
        pending_since: Some(at + chrono::Duration::seconds(30)),
        latest: Some(crate::sms::SmsNotice {
            version: 1,
            mailbox: a.clone(),
            item: format!("{ns}-item3"),
            sender: "mittente@pec.example.test".into(),
            subject: "Oggetto àè".into(),
            ordinary: false,
            at: at + chrono::Duration::seconds(40),
        }),
        ..first.clone()
    };
    ensure!(
        !s.replace_sms_window(&a, Some(&second), &first)
            .await
            .op("replace_sms_window")?,
        "a window was replaced although it was not the one expected"
    );
    ensure!(
        s.replace_sms_window(&a, Some(&first), &second)
            .await
            .op("replace_sms_window")?,
        "the window read was not replaced"
    );
    ensure_eq!(
        s.sms_window(&shout(&a)).await.op("sms_window")?,
        Some(second.clone()),
        "the window read back"
    );
    ensure!(
        s.sms_window(&b).await.op("sms_window")?.is_none(),
        "another mailbox sees the window"
    );
    Ok(())
}

/// record_password_finding: once per (mailbox, time, setting), the mailbox normalised;
/// password_findings: those in (since, until], across month boundaries, by mailbox then time.
async fn password_findings_once_and_by_month<S: StateStore>(s: &S, ns: &str) -> Outcome {
    use pec_core::breach::{Band, Setting};
    // Just before a UTC month turns, so the range spans two months.
    let base: DateTime<Utc> = "2031-03-31T23:00:00Z".parse().expect("a time");
    let base = base + chrono::Duration::seconds((log_base(ns).timestamp() % 3000).abs());
    let (a, b) = (addr(ns, "member"), addr(ns, "other"));
    let finding = |mailbox: &str, minutes: i64, setting| PasswordFinding {
        mailbox: mailbox.to_string(),
        tenant: format!("t-{ns}"),
        at: base + chrono::Duration::minutes(minutes),
        setting,
        band: Band::Many,
    };
    ensure!(
        s.record_password_finding(&finding(&shout(&a), 0, Setting::Activation))
            .await
            .op("record_password_finding")?,
        "first record_password_finding returned false"
    );
    ensure!(
        !s.record_password_finding(&finding(&a, 0, Setting::Activation))
            .await
            .op("record_password_finding")?,
        "the same finding again (address in lower case) recorded twice"
    );
    for (mailbox, minutes, setting) in [
        (&a, 0, Setting::AdminCreate),
        (&a, 90, Setting::Reset),
        (&b, 30, Setting::Activation),
    ] {
        ensure!(
            s.record_password_finding(&finding(mailbox, minutes, setting))
                .await
                .op("record_password_finding")?,
            "record_password_finding at minute {minutes} returned false"
        );
    }
    let own = |v: Vec<PasswordFinding>| -> Vec<(String, i64)> {
        v.into_iter()
            .filter(|f| f.mailbox.ends_with(&domain(ns)))
            .map(|f| (f.mailbox, (f.at - base).num_minutes()))
            .collect()
    };
    let all = s
        .password_findings(
            base - chrono::Duration::seconds(1),
            base + chrono::Duration::hours(2),
        )
        .await
        .op("password_findings")?;
    ensure_eq!(
        own(all.clone()),
        vec![(norm(&a), 0), (norm(&a), 0), (norm(&a), 90), (norm(&b), 30),],
        "every finding across the month's end, by mailbox then time"
    );
    let first = all
        .iter()
        .find(|f| f.mailbox == norm(&a))
        .expect("a's finding");
    ensure_eq!(first.tenant, format!("t-{ns}"), "the tenant");
    ensure_eq!(first.band, Band::Many, "the band");
    let later = s
        .password_findings(base, base + chrono::Duration::minutes(90))
        .await
        .op("password_findings")?;
    ensure_eq!(
        own(later),
        vec![(norm(&a), 90), (norm(&b), 30)],
        "(since, until]: the start excluded, the end included"
    );
    Ok(())
}
