//! Tenant and mailbox administration over the ports (issue #13): what `pec tenant`, `pec
//! mailbox` and the API's admin routes call. The rules are `pec-core`'s ([`pec_core::plan`]);
//! this module reads, decides and writes with conditions, so two operators (or an operator and a
//! delivery) never leave a mailbox over its new limits.

use chrono::{DateTime, Utc};
use pec_core::domain::DomainError;
use pec_core::plan::{self, Plan, PlanChange, PlanError, Usage};
use pec_members::{AddressPattern, Member, RowError};
use pec_ports::{
    ActivationRecord, Billing, DnsRecord, DomainIdentities, DomainRecord, DomainStatus,
    IdentityError, IdentitySetup, MailTransport, Mailbox, MailboxStatus, MemberRecord,
    MemberStatus, StateError, StateStore,
};
use pec_smime::ProviderIndex;
use serde::Serialize;

/// How many times a conditional write is retried over fresh reads before giving up.
const RETRIES: usize = 5;

/// Why an administrative operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("no mailbox {0}")]
    NoMailbox(String),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("mailbox {0} kept changing while the plan was changed; nothing was changed, try again")]
    Contended(String),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("no tenant {0}")]
    NoTenant(String),
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error("{0} is the provider's own domain: every tenant may have mailboxes in it")]
    ProviderDomain(String),
    #[error("{0} is already managed here by another tenant")]
    DomainTaken(String),
    #[error(
        "{domain} is listed in the provider index under {provider}: a domain is managed by one \
         provider; it must leave that provider's entry first"
    )]
    DomainListedElsewhere { domain: String, provider: String },
    #[error("tenant {tenant} has no domain {domain}")]
    NoDomain { tenant: String, domain: String },
    #[error(
        "{domain} still has {count} mailbox(es), revoked ones included (e.g. {example}): a \
         domain is removed only when no mailbox is left in it"
    )]
    DomainInUse {
        domain: String,
        count: usize,
        example: String,
    },
    #[error("the mail service: {0}")]
    Identity(#[from] IdentityError),
    #[error(
        "{domain} is not a verified domain of tenant {tenant} (pec tenant domain list {tenant})"
    )]
    DomainNotReady { tenant: String, domain: String },
    #[error("no address left for this name: {0} would be too long")]
    AddressSpace(String),
    #[error("mailbox {0} is revoked: a revocation is final")]
    Revoked(String),
    #[error("mailbox {address} is {status}, not suspended: nothing to resume")]
    NotSuspended {
        address: String,
        status: &'static str,
    },
    #[error("unknown suspension reason {0:?}: spam, non-payment, request or other")]
    Reason(String),
    #[error("mailbox {0} is activated already: its member logs in with the password chosen")]
    AlreadyActivated(String),
    #[error("{0} is not a mailbox address")]
    BadAddress(String),
    #[error("mailbox {0} exists already")]
    MailboxTaken(String),
    #[error("mailbox {0} was suspended by the provider: only the provider resumes it")]
    ProviderSuspension(String),
    #[error("{0} is reserved for the provider")]
    Reserved(String),
    #[error("mailbox {0} was not made by a member import: it has no activation link")]
    NotImported(String),
    #[error("the activation link could not be sent to {email}: {reason}")]
    MailFailed { email: String, reason: String },
}

/// Who asks for an administrative operation: the provider's operator (every tenant), or one
/// tenant (an order's administrator, the API's tenant admin routes), who sees and changes its
/// own domains and mailboxes only. Another tenant's mailbox is "no mailbox" to it, and another
/// tenant's domain "no domain": it cannot even learn that they exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admin {
    Operator,
    Tenant(String),
}

impl Admin {
    /// Whether this admin may see and change the records of `tenant`.
    pub fn sees(&self, tenant: &str) -> bool {
        match self {
            Admin::Operator => true,
            Admin::Tenant(t) => t == tenant,
        }
    }
}

/// The mailbox `address` as `admin` may see it (another tenant's is [`AdminError::NoMailbox`]).
pub async fn mailbox_for<Db: StateStore>(
    state: &Db,
    admin: &Admin,
    address: &str,
) -> Result<Mailbox, AdminError> {
    match state.mailbox(address).await? {
        Some(m) if admin.sees(&m.tenant) => Ok(m),
        _ => Err(AdminError::NoMailbox(address.to_string())),
    }
}

/// Moves a mailbox to `to` with an expansion of `expansion_gb` (0, 1, 3 or 5 GB): an upgrade at
/// once; a downgrade at once if what the mailbox holds fits the new limits, refused with the
/// numbers otherwise ([`plan::change`]). Conditional on the record read and, for a downgrade, on
/// the usage still fitting when written (a delivery may land in between).
///
/// Only the inbox usage is measured today; the security archive and conservation are counted as
/// empty until their stores report usage.
pub async fn change_plan<Db: StateStore>(
    state: &Db,
    admin: &Admin,
    address: &str,
    to: Plan,
    expansion_gb: u32,
) -> Result<PlanChange, AdminError> {
    for _ in 0..RETRIES {
        let current = mailbox_for(state, admin, address).await?;
        let decided = plan::change(
            current.plan,
            current.expansions_gb,
            to,
            expansion_gb,
            Usage {
                inbox_bytes: current.used_bytes,
                ..Usage::default()
            },
        )?;
        if decided.kind == plan::ChangeKind::Unchanged {
            return Ok(decided);
        }
        // A special contract's quota (`pec mailbox create --quota-bytes`) may exceed the plan's:
        // whatever the plans say, a quota never goes below what the mailbox holds.
        if decided.quota_bytes < current.used_bytes {
            return Err(AdminError::Plan(PlanError::Exceeds {
                from: current.plan,
                to,
                excess: vec![plan::Excess {
                    what: "inbox",
                    used_bytes: current.used_bytes,
                    limit_bytes: decided.quota_bytes,
                }],
            }));
        }
        let new = pec_ports::Mailbox {
            plan: decided.plan,
            expansions_gb: decided.expansion_gb,
            quota_bytes: decided.quota_bytes,
            ..current.clone()
        };
        let max_used = (decided.kind == plan::ChangeKind::Downgrade
            || decided.quota_bytes < current.quota_bytes)
            .then_some(decided.quota_bytes);
        if state.replace_mailbox(&current, &new, max_used).await? {
            return Ok(decided);
        }
    }
    Err(AdminError::Contended(address.to_string()))
}

// ------------------------------------------------------------------------------ mailboxes

/// Local parts of the provider's domain no tenant may take: the provider's own senders and the
/// addresses mail standards give a meaning (RFC 2142), and where tenants' DMARC reports go.
pub const RESERVED_LOCAL_PARTS: [&str; 12] = [
    "posta-certificata",
    "postmaster",
    "abuse",
    "dmarc",
    "noreply",
    "no-reply",
    "hostmaster",
    "webmaster",
    "mailer-daemon",
    "security",
    "root",
    "admin",
];

/// A mailbox a tenant asks for.
#[derive(Debug, Clone)]
pub struct NewMailbox {
    pub address: String,
    pub plan: Plan,
    /// 0, 1, 3 or 5 GB on top of the plan.
    pub expansion_gb: u32,
    /// Argon2id PHC string of its password (the caller hashes it).
    pub password_hash: String,
}

/// Whether `tenant` may have the mailbox `address` (lower case): in the provider's domain
/// unless its local part is reserved, or in one of the tenant's verified domains.
pub async fn may_hold<Db: StateStore>(
    state: &Db,
    tenant: &str,
    provider_domain: &str,
    address: &str,
) -> Result<(), AdminError> {
    let (local, domain) = address.rsplit_once('@').unwrap_or_default();
    if domain == provider_domain.to_ascii_lowercase() {
        if RESERVED_LOCAL_PARTS.contains(&local) {
            return Err(AdminError::Reserved(address.to_string()));
        }
        return Ok(());
    }
    match state.domain(domain).await? {
        Some(d) if d.tenant == tenant && d.status == DomainStatus::Verified => Ok(()),
        _ => Err(AdminError::DomainNotReady {
            tenant: tenant.to_string(),
            domain: domain.to_string(),
        }),
    }
}

/// Creates a mailbox of `tenant` (active, with the plan's quota), in the provider's domain or
/// in one of the tenant's **verified** domains: another tenant's domain is refused as "not a
/// verified domain of" this tenant, exactly as one nobody has. An address that exists is
/// refused (nothing is overwritten).
pub async fn create_mailbox<Db: StateStore>(
    state: &Db,
    admin: &Admin,
    tenant: &str,
    provider_domain: &str,
    new: &NewMailbox,
    now: DateTime<Utc>,
) -> Result<Mailbox, AdminError> {
    let address = new.address.trim().to_ascii_lowercase();
    if !pec_core::addr::is_addr_spec(&address) || address.len() > 254 {
        return Err(AdminError::BadAddress(new.address.clone()));
    }
    if !admin.sees(tenant) || state.tenant(tenant).await?.is_none() {
        return Err(AdminError::NoTenant(tenant.to_string()));
    }
    may_hold(state, tenant, provider_domain, &address).await?;
    let mailbox = Mailbox {
        address: address.clone(),
        tenant: tenant.to_string(),
        plan: new.plan,
        expansions_gb: plan::check_expansion(new.expansion_gb)?,
        quota_bytes: plan::quota_bytes(new.plan, new.expansion_gb)?,
        used_bytes: 0,
        password_hash: new.password_hash.clone(),
        locked: false,
        status: MailboxStatus::Active,
        member: None,
        status_note: None,
        agreement_accepted_at: None,
        refuse_ordinary: false,
        lock: None,
        ordinary_spam: Default::default(),
        sms: None,
        created_at: now,
    };
    if !state.create_mailbox(&mailbox).await? {
        return Err(AdminError::MailboxTaken(address));
    }
    Ok(mailbox)
}

// ----------------------------------------------------------------------------- lifecycle

/// A status change an administrator asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusChange {
    /// Out of service for a while: no login, no submission, envelopes refused ("casella
    /// disabilitata" to the sender). From active or pending.
    Suspend(SuspendReason),
    /// Back to the status it had when suspended (active, or pending if its member had not
    /// activated it yet).
    Resume,
    /// Closed for good: as suspended, and never resumed. Its messages, provider-log records
    /// (30 months) and conservation copies are kept.
    Revoke,
}

/// Why a mailbox is suspended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SuspendReason {
    /// It sent spam (the spam lockout, or an operator's decision).
    Spam,
    /// Its plan is not paid.
    NonPayment,
    /// Its holder asked.
    Request,
    Other,
}

impl SuspendReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SuspendReason::Spam => "spam",
            SuspendReason::NonPayment => "non-payment",
            SuspendReason::Request => "request",
            SuspendReason::Other => "other",
        }
    }

    pub fn parse(s: &str) -> Result<Self, AdminError> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "spam" => SuspendReason::Spam,
            "non-payment" | "nonpayment" | "mancato-pagamento" => SuspendReason::NonPayment,
            "request" | "richiesta" => SuspendReason::Request,
            "other" | "altro" => SuspendReason::Other,
            _ => return Err(AdminError::Reason(s.to_string())),
        })
    }
}

/// Applies `change` to the mailbox (conditional on the record read, retried over fresh reads):
/// the mailbox as it now is. Suspending a suspended mailbox, or revoking a revoked one, changes
/// nothing and is not an error (an operator's retry); anything asked of a revoked mailbox
/// otherwise is refused, as is resuming a mailbox that is not suspended.
pub async fn change_status<Db: StateStore>(
    state: &Db,
    admin: &Admin,
    address: &str,
    change: StatusChange,
    now: DateTime<Utc>,
) -> Result<Mailbox, AdminError> {
    for _ in 0..RETRIES {
        let current = mailbox_for(state, admin, address).await?;
        let by_provider = *admin == Admin::Operator;
        if !by_provider
            && current.status == MailboxStatus::Suspended
            && current.status_note.as_ref().is_some_and(|n| n.by_provider)
            && change == StatusChange::Resume
        {
            return Err(AdminError::ProviderSuspension(current.address.clone()));
        }
        let (status, note) = match (change, current.status) {
            (StatusChange::Revoke, MailboxStatus::Revoked)
            | (StatusChange::Suspend(_), MailboxStatus::Suspended) => return Ok(current),
            (_, MailboxStatus::Revoked) => {
                return Err(AdminError::Revoked(current.address.clone()));
            }
            (StatusChange::Suspend(reason), from) => (
                MailboxStatus::Suspended,
                Some(pec_ports::StatusNote {
                    reason: reason.as_str().to_string(),
                    since: now,
                    previous: from,
                    by_provider,
                }),
            ),
            (StatusChange::Revoke, from) => (
                MailboxStatus::Revoked,
                Some(pec_ports::StatusNote {
                    reason: "revoked".to_string(),
                    since: now,
                    previous: from,
                    by_provider,
                }),
            ),
            (StatusChange::Resume, MailboxStatus::Suspended) => {
                // Back to what it was, except that a member who activated the mailbox while it
                // was suspended (password chosen, agreement accepted) finds it active: pending
                // means "waiting for the member", nothing else.
                let activated = current.password_hash != NOT_ACTIVATED;
                let back = match current.status_note.as_ref().map(|n| n.previous) {
                    Some(MailboxStatus::Pending) if activated => MailboxStatus::Active,
                    Some(p @ (MailboxStatus::Active | MailboxStatus::Pending)) => p,
                    _ if activated => MailboxStatus::Active,
                    _ => MailboxStatus::Pending,
                };
                (back, None)
            }
            (StatusChange::Resume, other) => {
                return Err(AdminError::NotSuspended {
                    address: current.address.clone(),
                    status: other.as_str(),
                });
            }
        };
        let new = Mailbox {
            status,
            status_note: note,
            ..current.clone()
        };
        if state.replace_mailbox(&current, &new, None).await? {
            return Ok(new);
        }
    }
    Err(AdminError::Contended(address.to_string()))
}

// ------------------------------------------------------------------------------- domains

/// What domain administration needs to know about this provider.
#[derive(Debug, Clone)]
pub struct DomainPolicy {
    /// The provider's own PEC domain (never a tenant's).
    pub provider_domain: String,
    /// Where DMARC aggregate reports for tenants' domains go (`mailto:` target), if anywhere.
    pub dmarc_reports: Option<String>,
}

/// Adds `domain` to `tenant`: checked ([`pec_core::domain::check`]), refused if it is the
/// provider's, another tenant's or listed under another provider in `index`; then claimed
/// (pending), registered with the mail service (identity with DKIM) and recorded with the DNS
/// records the tenant must publish. Idempotent: adding it again for the same tenant completes an
/// interrupted add and returns the record in force.
pub async fn add_domain<Db: StateStore, Id: DomainIdentities>(
    state: &Db,
    identities: &Id,
    index: Option<&ProviderIndex>,
    policy: &DomainPolicy,
    tenant: &str,
    domain: &str,
    now: DateTime<Utc>,
) -> Result<DomainRecord, AdminError> {
    let domain = pec_core::domain::check(domain)?;
    if domain == policy.provider_domain.to_ascii_lowercase() {
        return Err(AdminError::ProviderDomain(domain.to_string()));
    }
    if state.tenant(tenant).await?.is_none() {
        return Err(AdminError::NoTenant(tenant.to_string()));
    }
    if let Some(entry) = index.and_then(|i| i.provider_for_domain(domain))
        && !entry
            .managed_domains
            .iter()
            .any(|d| d.eq_ignore_ascii_case(&policy.provider_domain))
    {
        return Err(AdminError::DomainListedElsewhere {
            domain: domain.to_string(),
            provider: entry.provider_name.clone(),
        });
    }
    let pending = DomainRecord {
        domain: domain.to_string(),
        tenant: tenant.to_string(),
        status: DomainStatus::Pending,
        dns: Vec::new(),
        dkim_status: String::new(),
        added_at: now,
        checked_at: None,
        verified_at: None,
    };
    let record = match state.claim_domain(&pending).await? {
        None => pending,
        Some(existing) if existing.tenant == tenant => existing,
        Some(_) => return Err(AdminError::DomainTaken(domain.to_string())),
    };
    let setup = identities.create(domain).await?;
    let record = DomainRecord {
        dns: dns_records(domain, &setup, &identities.receiving_host(), policy),
        ..record
    };
    if !state.update_domain(&record).await? {
        // Removed (by its tenant or the operator) while it was being added.
        return Err(AdminError::NoDomain {
            tenant: tenant.to_string(),
            domain: domain.to_string(),
        });
    }
    Ok(record)
}

/// The records a tenant publishes for `domain`: MX to the mail service's receiving, the
/// identity's TXT, three DKIM CNAMEs, SPF and DMARC (`p=reject`: PEC leaves only through the
/// provider, and the provider's messages carry the provider's own domain in `From`).
pub fn dns_records(
    domain: &str,
    setup: &IdentitySetup,
    receiving_host: &str,
    policy: &DomainPolicy,
) -> Vec<DnsRecord> {
    let rec = |kind: &str, name: String, value: String, purpose: &str| DnsRecord {
        kind: kind.into(),
        name,
        value,
        purpose: purpose.into(),
    };
    let mut out = vec![
        rec(
            "MX",
            domain.to_string(),
            format!("10 {receiving_host}"),
            "receiving: PEC from other providers reaches the provider",
        ),
        rec(
            "TXT",
            format!("_amazonses.{domain}"),
            format!("\"{}\"", setup.verification_token),
            "domain verification",
        ),
    ];
    for t in &setup.dkim_tokens {
        out.push(rec(
            "CNAME",
            format!("{t}._domainkey.{domain}"),
            format!("{t}.dkim.amazonses.com"),
            "DKIM signing key",
        ));
    }
    out.push(rec(
        "TXT",
        domain.to_string(),
        "\"v=spf1 include:amazonses.com -all\"".into(),
        "SPF",
    ));
    let rua = policy
        .dmarc_reports
        .as_deref()
        .map(|r| format!("; rua=mailto:{r}"))
        .unwrap_or_default();
    out.push(rec(
        "TXT",
        format!("_dmarc.{domain}"),
        format!("\"v=DMARC1; p=reject{rua}\""),
        "DMARC",
    ));
    out
}

/// Asks the mail service where `domain` stands and records it: verified (mail is received and
/// routed for it from now on), failed, or still pending.
pub async fn verify_domain<Db: StateStore, Id: DomainIdentities>(
    state: &Db,
    identities: &Id,
    tenant: &str,
    domain: &str,
    now: DateTime<Utc>,
) -> Result<DomainRecord, AdminError> {
    let record = owned_domain(state, tenant, domain).await?;
    let status = identities.status(&record.domain).await?;
    let (new_status, dkim) = match &status {
        Some(s) if s.is_verified() => (DomainStatus::Verified, s.dkim.clone()),
        Some(s) if s.has_failed() => (DomainStatus::Failed, s.dkim.clone()),
        // A transient answer (TemporaryFailure, Pending while SES re-checks) does not take a
        // verified domain out of service: only a failure or a forgotten identity does.
        Some(s) if record.is_verified() => (DomainStatus::Verified, s.dkim.clone()),
        Some(s) => (DomainStatus::Pending, s.dkim.clone()),
        // The service forgot it (deleted out of band): pending until added again.
        None => (DomainStatus::Pending, "NotStarted".into()),
    };
    let record = DomainRecord {
        status: new_status,
        dkim_status: dkim,
        checked_at: Some(now),
        verified_at: match new_status {
            DomainStatus::Verified => record.verified_at.or(Some(now)),
            _ => record.verified_at,
        },
        ..record
    };
    // Conditional: a removal that came after the read above is not undone.
    if !state.update_domain(&record).await? {
        return Err(AdminError::NoDomain {
            tenant: tenant.to_string(),
            domain: record.domain,
        });
    }
    Ok(record)
}

/// The domains of a tenant, by name.
pub async fn list_domains<Db: StateStore>(
    state: &Db,
    tenant: &str,
) -> Result<Vec<DomainRecord>, AdminError> {
    Ok(state
        .domains()
        .await?
        .into_iter()
        .filter(|d| d.tenant == tenant)
        .collect())
}

/// Removes a tenant's domain: refused while any mailbox of the tenant is in it; otherwise the
/// mail service forgets it (no more receiving) and its record goes.
pub async fn remove_domain<Db: StateStore, Id: DomainIdentities>(
    state: &Db,
    identities: &Id,
    tenant: &str,
    domain: &str,
) -> Result<(), AdminError> {
    let record = owned_domain(state, tenant, domain).await?;
    let suffix = format!("@{}", record.domain);
    let live: Vec<String> = state
        .tenant_mailboxes(tenant)
        .await?
        .into_iter()
        .map(|m| m.address)
        .filter(|a| a.to_ascii_lowercase().ends_with(&suffix))
        .collect();
    if let Some(example) = live.first() {
        return Err(AdminError::DomainInUse {
            domain: record.domain.clone(),
            count: live.len(),
            example: example.clone(),
        });
    }
    // The record first: from then on nothing routes the domain as ours; then the identity. If
    // deleting the identity fails the error says so, and the operator deletes it in SES (the
    // receiving point refuses mail for a domain that is not ours).
    if !state.remove_domain(&record.domain, tenant).await? {
        return Err(AdminError::NoDomain {
            tenant: tenant.to_string(),
            domain: record.domain,
        });
    }
    identities.delete(&record.domain).await?;
    Ok(())
}

/// Every domain this provider manages for the provider index: its own first, then every
/// verified tenant domain, by name.
pub async fn managed_domains<Db: StateStore>(
    state: &Db,
    provider_domain: &str,
) -> Result<Vec<String>, AdminError> {
    let own = provider_domain.to_ascii_lowercase();
    let mut out = vec![own.clone()];
    out.extend(
        state
            .domains()
            .await?
            .into_iter()
            .filter(|d| d.is_verified() && d.domain != own)
            .map(|d| d.domain),
    );
    Ok(out)
}

/// The tenant's record of `domain` (another tenant's domain is "no domain": nothing leaks).
async fn owned_domain<Db: StateStore>(
    state: &Db,
    tenant: &str,
    domain: &str,
) -> Result<DomainRecord, AdminError> {
    let none = || AdminError::NoDomain {
        tenant: tenant.to_string(),
        domain: domain.to_string(),
    };
    match state.domain(domain).await? {
        Some(r) if r.tenant == tenant => Ok(r),
        _ => Err(none()),
    }
}

// ------------------------------------------------------------------------------ members

/// What a bulk import needs besides the members.
#[derive(Debug, Clone)]
pub struct ImportSettings {
    /// The domain of the new addresses: a verified domain of the tenant, or the provider's.
    pub domain: String,
    pub pattern: AddressPattern,
    /// The provider's own domain (always allowed; the activation mail's sender domain).
    pub provider_domain: String,
    /// The page where members activate their mailbox; the token follows after `#` (a fragment
    /// never reaches a server's logs).
    pub activation_url: String,
    /// How long an activation link works.
    pub activation_valid: chrono::Duration,
}

/// One line of the import report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImportRow {
    pub row: usize,
    pub fiscal_code: String,
    pub address: String,
    /// `created`, `completed` (an interrupted import finished now), `existing` or `refused`.
    pub outcome: &'static str,
    pub reason: String,
}

impl ImportRow {
    /// The report line of a row validation refused.
    pub fn refused(r: &RowError) -> Self {
        ImportRow {
            row: r.row,
            fiscal_code: String::new(),
            address: String::new(),
            outcome: "refused",
            reason: r.reasons.join("; "),
        }
    }
}

pub use pec_ports::activation::{NOT_ACTIVATED, token_hash};

/// Imports members into `tenant`: each gets an address from the pattern (the next free number
/// on collision), a mailbox on its plan (active, or pending for member-paid tenants), and a
/// one-time activation link sent to its contact address; no password is made or sent.
/// Idempotent and resumable: a member (tenant + fiscal code) already imported is reported
/// `existing`; one an interrupted run left half done is finished (`completed`). Rows refused by
/// validation are reported with their reasons. `new_token` gives each link's secret;
/// `progress` hears every report line as it is decided.
#[allow(clippy::too_many_arguments)]
pub async fn import_members<Db: StateStore, Mt: MailTransport>(
    state: &Db,
    mail: &Mt,
    tenant: &str,
    settings: &ImportSettings,
    members: &[Member],
    refused: &[RowError],
    now: DateTime<Utc>,
    new_token: &mut (dyn FnMut() -> String + Send),
    progress: &mut (dyn FnMut(&ImportRow) + Send),
) -> Result<Vec<ImportRow>, AdminError> {
    let t = state
        .tenant(tenant)
        .await?
        .ok_or_else(|| AdminError::NoTenant(tenant.to_string()))?;
    let domain = settings.domain.to_ascii_lowercase();
    if domain != settings.provider_domain.to_ascii_lowercase() {
        match state.domain(&domain).await? {
            Some(d) if d.tenant == tenant && d.is_verified() => {}
            _ => {
                return Err(AdminError::DomainNotReady {
                    tenant: tenant.to_string(),
                    domain,
                });
            }
        }
    }
    let mut report: Vec<ImportRow> = refused.iter().map(ImportRow::refused).collect();
    for r in &report {
        progress(r);
    }
    // Addresses chosen in this run (two members with one name in the same table).
    let mut taken = std::collections::HashSet::new();
    for m in members {
        let line = import_one(
            state, mail, &t, settings, &domain, m, now, new_token, &mut taken,
        )
        .await?;
        progress(&line);
        report.push(line);
    }
    report.sort_by_key(|r| r.row);
    Ok(report)
}

#[allow(clippy::too_many_arguments)]
async fn import_one<Db: StateStore, Mt: MailTransport>(
    state: &Db,
    mail: &Mt,
    tenant: &pec_ports::Tenant,
    settings: &ImportSettings,
    domain: &str,
    m: &Member,
    now: DateTime<Utc>,
    new_token: &mut (dyn FnMut() -> String + Send),
    taken: &mut std::collections::HashSet<String>,
) -> Result<ImportRow, AdminError> {
    let line = |address: &str, outcome, reason: String| ImportRow {
        row: m.row,
        fiscal_code: m.fiscal_code.clone(),
        address: address.to_string(),
        outcome,
        reason,
    };
    let existing = state.member(&tenant.id, &m.fiscal_code).await?;
    if let Some(r) = &existing
        && r.status == MemberStatus::Created
    {
        taken.insert(r.address.clone());
        return Ok(line(&r.address, "existing", String::new()));
    }
    let local = match settings.pattern.local_part(&m.nome, &m.cognome) {
        Ok(l) => l,
        Err(e) => return Ok(line("", "refused", e.to_string())),
    };
    let (record, fresh) = match existing {
        Some(r) => (r, false),
        None => {
            let address = match free_address(state, &local, domain, taken, 0).await {
                Ok(a) => a,
                Err(e @ AdminError::AddressSpace(_)) => {
                    return Ok(line("", "refused", e.to_string()));
                }
                Err(e) => return Err(e),
            };
            let record = MemberRecord {
                tenant: tenant.id.clone(),
                fiscal_code: m.fiscal_code.clone(),
                nome: m.nome.clone(),
                cognome: m.cognome.clone(),
                email: m.email.clone(),
                mobile: m.mobile.clone(),
                plan: m.plan,
                address,
                status: MemberStatus::Reserved,
                imported_at: now,
                link: None,
            };
            match state.claim_member(&record).await? {
                None => (record, true),
                Some(r) if r.status == MemberStatus::Created => {
                    return Ok(line(&r.address, "existing", String::new()));
                }
                Some(r) => (r, false),
            }
        }
    };
    taken.insert(record.address.clone());
    let record = ensure_mailbox(state, tenant, &local, domain, record, now, taken).await?;
    // The link: its secret only in the mail, its hash in the state.
    let token = new_token();
    let link = ActivationRecord {
        token_hash: token_hash(&token),
        address: record.address.clone(),
        tenant: tenant.id.clone(),
        agreement: tenant.billing == Billing::Member,
        reset_for: None,
        expires_at: now + settings.activation_valid,
    };
    state.put_activation(&link).await?;
    // A link an interrupted run sent (the member stayed reserved) is retired: one link works.
    if let Some(old) = &record.link
        && *old != link.token_hash
    {
        state.take_activation(old, now).await?;
    }
    let message = activation_message(tenant, settings, &record, &link, &token, now);
    let sender = format!("noreply@{}", settings.provider_domain);
    if let Err(e) = mail
        .send_raw(&sender, std::slice::from_ref(&record.email), &message)
        .await
    {
        // The member stays reserved: the next run sends a new link. The rows after go on.
        return Ok(line(
            &record.address,
            "mail-failed",
            format!(
                "the activation link could not be sent to {}: {e}",
                record.email
            ),
        ));
    }
    let done = MemberRecord {
        status: MemberStatus::Created,
        link: Some(link.token_hash.clone()),
        ..record
    };
    state.put_member(&done).await?;
    Ok(line(
        &done.address,
        if fresh { "created" } else { "completed" },
        String::new(),
    ))
}

/// Where a new activation link went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reissued {
    pub address: String,
    /// The member's contact address.
    pub email: String,
    pub expires_at: DateTime<Utc>,
}

/// Sends a new activation link for an imported mailbox its member has not activated yet (the
/// first expired, or the mail was lost): the same mail as the import's, to the member's contact
/// address; the link in force before stops working. `settings.domain` and `pattern` are not
/// used.
pub async fn reissue_activation<Db: StateStore, Mt: MailTransport>(
    state: &Db,
    mail: &Mt,
    admin: &Admin,
    address: &str,
    settings: &ImportSettings,
    now: DateTime<Utc>,
    new_token: &mut (dyn FnMut() -> String + Send),
) -> Result<Reissued, AdminError> {
    let mailbox = mailbox_for(state, admin, address).await?;
    if mailbox.password_hash != NOT_ACTIVATED {
        return Err(AdminError::AlreadyActivated(mailbox.address));
    }
    if mailbox.status == MailboxStatus::Revoked {
        return Err(AdminError::Revoked(mailbox.address));
    }
    let record = match &mailbox.member {
        Some(cf) => state.member(&mailbox.tenant, cf).await?,
        None => None,
    }
    .ok_or_else(|| AdminError::NotImported(mailbox.address.clone()))?;
    let tenant = state
        .tenant(&mailbox.tenant)
        .await?
        .ok_or_else(|| AdminError::NoTenant(mailbox.tenant.clone()))?;
    let token = new_token();
    // A mailbox the spam lockout locked gets a reset link: it also lifts the lock.
    let reset_for = mailbox.spam_lock().map(|note| note.since);
    let link = ActivationRecord {
        token_hash: token_hash(&token),
        address: mailbox.address.clone(),
        tenant: tenant.id.clone(),
        agreement: tenant.billing == Billing::Member && reset_for.is_none(),
        reset_for,
        expires_at: now + settings.activation_valid,
    };
    state.put_activation(&link).await?;
    let message = if reset_for.is_some() {
        crate::lockout::reset_message(
            &settings.provider_domain,
            &settings.activation_url,
            &record,
            &link,
            &token,
            now,
        )
    } else {
        activation_message(&tenant, settings, &record, &link, &token, now)
    };
    let sender = format!("noreply@{}", settings.provider_domain);
    if let Err(e) = mail
        .send_raw(&sender, std::slice::from_ref(&record.email), &message)
        .await
    {
        state.take_activation(&link.token_hash, now).await?;
        return Err(AdminError::MailFailed {
            email: record.email.clone(),
            reason: e.to_string(),
        });
    }
    if let Some(old) = &record.link
        && *old != link.token_hash
    {
        state.take_activation(old, now).await?;
    }
    let email = record.email.clone();
    state
        .put_member(&MemberRecord {
            link: Some(link.token_hash.clone()),
            ..record
        })
        .await?;
    Ok(Reissued {
        address: mailbox.address,
        email,
        expires_at: link.expires_at,
    })
}

/// The first candidate from `attempt` on that no mailbox has and this run has not chosen.
async fn free_address<Db: StateStore>(
    state: &Db,
    local: &str,
    domain: &str,
    taken: &std::collections::HashSet<String>,
    from: usize,
) -> Result<String, AdminError> {
    let mut attempt = from;
    loop {
        let address = AddressPattern::candidate(local, attempt, domain);
        // A local part over 64 octets (after many collisions) is no address at all.
        if !pec_core::addr::is_addr_spec(&address)
            || address.split('@').next().is_some_and(|l| l.len() > 64)
            || address.len() > 254
        {
            return Err(AdminError::AddressSpace(address));
        }
        if !taken.contains(&address) && state.mailbox(&address).await?.is_none() {
            return Ok(address);
        }
        attempt += 1;
    }
}

/// Creates the member's mailbox; if its address went to someone else meanwhile, the next free
/// one is recorded and used. Only a mailbox made for this very member (same tenant, same
/// fiscal code) is adopted as the one an interrupted run created.
async fn ensure_mailbox<Db: StateStore>(
    state: &Db,
    tenant: &pec_ports::Tenant,
    local: &str,
    domain: &str,
    mut record: MemberRecord,
    now: DateTime<Utc>,
    taken: &mut std::collections::HashSet<String>,
) -> Result<MemberRecord, AdminError> {
    loop {
        let mailbox = Mailbox {
            address: record.address.clone(),
            tenant: tenant.id.clone(),
            plan: record.plan,
            expansions_gb: 0,
            quota_bytes: plan::quota_bytes(record.plan, 0)?,
            used_bytes: 0,
            password_hash: NOT_ACTIVATED.to_string(),
            locked: false,
            status: match tenant.billing {
                Billing::Tenant => MailboxStatus::Active,
                Billing::Member => MailboxStatus::Pending,
            },
            member: Some(record.fiscal_code.clone()),
            status_note: None,
            agreement_accepted_at: None,
            refuse_ordinary: false,
            lock: None,
            ordinary_spam: Default::default(),
            sms: None,
            created_at: now,
        };
        if state.create_mailbox(&mailbox).await? {
            return Ok(record);
        }
        match state.mailbox(&record.address).await? {
            Some(existing)
                if existing.tenant == tenant.id
                    && existing.member.as_deref() == Some(record.fiscal_code.as_str()) =>
            {
                return Ok(record);
            }
            _ => {
                taken.insert(record.address.clone());
                record.address = free_address(state, local, domain, taken, 1).await?;
                taken.insert(record.address.clone());
                state.put_member(&record).await?;
            }
        }
    }
}

/// The activation mail (plain text, Italian): who, which address, the link and its expiry.
fn activation_message(
    tenant: &pec_ports::Tenant,
    settings: &ImportSettings,
    record: &MemberRecord,
    link: &ActivationRecord,
    token: &str,
    now: DateTime<Utc>,
) -> Vec<u8> {
    let expiry = link
        .expires_at
        .with_timezone(&chrono_tz::Europe::Rome)
        .format("%d/%m/%Y alle %H:%M");
    let agreement = if link.agreement {
        " e accettare le condizioni del servizio"
    } else {
        ""
    };
    let body = format!(
        "Gentile {nome} {cognome},\r\n\r\n{org} ha attivato per lei la casella PEC\r\n\r\n    \
         {address}\r\n\r\nPer sceglierne la password{agreement} apra entro il {expiry} questo \
         collegamento:\r\n\r\n    {url}#{token}\r\n\r\nIl collegamento vale una sola volta. \
         Nessuna password le viene inviata per posta elettronica; se non aspettava questo \
         messaggio, lo ignori.\r\n",
        nome = record.nome,
        cognome = record.cognome,
        org = tenant.name,
        address = record.address,
        url = settings.activation_url,
    );
    let id = &link.token_hash[..24];
    mail_builder::MessageBuilder::new()
        .from((
            "Posta Elettronica Certificata".to_string(),
            format!("noreply@{}", settings.provider_domain),
        ))
        .to(record.email.as_str())
        .subject(format!("Attivazione della casella PEC {}", record.address))
        .message_id(format!("activation.{id}@{}", settings.provider_domain))
        .date(now.timestamp())
        .text_body(body)
        .write_to_vec()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use pec_core::plan::{ChangeKind, GIB};
    use pec_ports::{Mailbox, MailboxItem, MemoryState};

    fn mailbox(address: &str, plan: Plan) -> Mailbox {
        Mailbox {
            address: address.into(),
            tenant: "t".into(),
            plan,
            expansions_gb: 0,
            quota_bytes: plan.inbox_bytes(),
            used_bytes: 0,
            password_hash: "x".into(),
            locked: false,
            status: Default::default(),
            member: None,
            status_note: None,
            agreement_accepted_at: None,
            refuse_ordinary: false,
            lock: None,
            ordinary_spam: Default::default(),
            sms: None,
            created_at: Utc.timestamp_opt(0, 0).unwrap(),
        }
    }

    async fn fill(state: &MemoryState, address: &str, bytes: u64) {
        let item = MailboxItem {
            id: "big".into(),
            object_key: "k".into(),
            size: bytes,
            kind: "busta-trasporto".into(),
            subject: String::new(),
            from: String::new(),
            identificativo: String::new(),
            evidence_key: String::new(),
            stored_at: Utc.timestamp_opt(1, 0).unwrap(),
            folder: None,
        };
        state
            .store_in_mailbox(address, &item, None, false)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn upgrades_apply_downgrades_must_fit() {
        let state = MemoryState::new();
        let a = "mario.rossi@ordine.example.test";
        state.create_mailbox(&mailbox(a, Plan::Gold)).await.unwrap();
        fill(&state, a, GIB + GIB / 2).await;

        let e = change_plan(&state, &Admin::Operator, a, Plan::Base, 0)
            .await
            .unwrap_err();
        assert!(
            e.to_string().contains(
                "the inbox holds 1610612736 bytes (1.50 GB) and the new limit is 1073741824"
            ),
            "{e}"
        );
        assert_eq!(state.mailbox(a).await.unwrap().unwrap().plan, Plan::Gold);

        let down = change_plan(&state, &Admin::Operator, a, Plan::Base, 1)
            .await
            .unwrap();
        assert_eq!(
            (down.kind, down.quota_bytes),
            (ChangeKind::Downgrade, 2 * GIB)
        );
        let m = state.mailbox(a).await.unwrap().unwrap();
        assert_eq!(
            (m.plan, m.expansions_gb, m.quota_bytes),
            (Plan::Base, 1, 2 * GIB)
        );
        assert_eq!(m.used_bytes, GIB + GIB / 2, "usage kept");

        let up = change_plan(&state, &Admin::Operator, a, Plan::GoldPlus, 5)
            .await
            .unwrap();
        assert_eq!((up.kind, up.quota_bytes), (ChangeKind::Upgrade, 10 * GIB));
        assert_eq!(
            change_plan(&state, &Admin::Operator, a, Plan::GoldPlus, 5)
                .await
                .unwrap()
                .kind,
            ChangeKind::Unchanged
        );
        assert!(matches!(
            change_plan(&state, &Admin::Operator, a, Plan::Gold, 2).await,
            Err(AdminError::Plan(PlanError::Expansion(2)))
        ));
        assert!(matches!(
            change_plan(
                &state,
                &Admin::Operator,
                "nobody@ordine.example.test",
                Plan::Gold,
                0
            )
            .await,
            Err(AdminError::NoMailbox(_))
        ));
    }

    fn policy() -> DomainPolicy {
        DomainPolicy {
            provider_domain: "pec.example.test".into(),
            dmarc_reports: Some("dmarc@pec.example.test".into()),
        }
    }

    fn index_with(provider: &str, domains: &[&str]) -> ProviderIndex {
        let entry = |name: &str, d: &[&str]| {
            pec_smime::index::ProviderEntry::for_certificate(
                name,
                "o=postacert",
                d.iter().map(|x| x.to_string()).collect(),
                None,
                b"cert",
            )
        };
        ProviderIndex::from_entries(vec![
            entry("Noi", &["pec.example.test"]),
            entry(provider, domains),
        ])
    }

    async fn tenants(state: &MemoryState) {
        for id in ["ordine", "studio"] {
            state
                .put_tenant(&pec_ports::Tenant {
                    id: id.into(),
                    name: id.into(),
                    billing: Default::default(),
                })
                .await
                .unwrap();
        }
    }

    #[tokio::test]
    async fn a_domain_is_added_verified_listed_and_removed() {
        let state = MemoryState::new();
        let ids = pec_ports::MemoryIdentities::new();
        tenants(&state).await;
        let at = |s| Utc.timestamp_opt(s, 0).unwrap();
        let d = "ordine.example.test";
        let idx = index_with("Altro", &["pec.altro.test"]);
        let added = add_domain(&state, &ids, Some(&idx), &policy(), "ordine", d, at(10))
            .await
            .unwrap();
        assert_eq!(added.status, DomainStatus::Pending);
        let kinds: Vec<(&str, &str)> = added
            .dns
            .iter()
            .map(|r| (r.kind.as_str(), r.name.as_str()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("MX", d),
                ("TXT", "_amazonses.ordine.example.test"),
                (
                    "CNAME",
                    "1ordine-example-test._domainkey.ordine.example.test"
                ),
                (
                    "CNAME",
                    "2ordine-example-test._domainkey.ordine.example.test"
                ),
                (
                    "CNAME",
                    "3ordine-example-test._domainkey.ordine.example.test"
                ),
                ("TXT", d),
                ("TXT", "_dmarc.ordine.example.test"),
            ]
        );
        assert_eq!(
            added.dns[0].value,
            "10 inbound-smtp.eu-west-1.amazonaws.com"
        );
        assert_eq!(
            added.dns[6].value,
            "\"v=DMARC1; p=reject; rua=mailto:dmarc@pec.example.test\""
        );
        assert_eq!(
            state.domain_tenant(d).await.unwrap(),
            None,
            "pending: not ours yet"
        );

        // Again for the same tenant: the same record; for another: refused, nothing changed.
        let again = add_domain(&state, &ids, Some(&idx), &policy(), "ordine", d, at(20))
            .await
            .unwrap();
        assert_eq!(again, added);
        let taken = add_domain(&state, &ids, Some(&idx), &policy(), "studio", d, at(30))
            .await
            .unwrap_err();
        assert_eq!(
            taken.to_string(),
            "ordine.example.test is already managed here by another tenant"
        );

        // Not published yet: still pending; published: verified, ours, in the index export.
        let v = verify_domain(&state, &ids, "ordine", d, at(40))
            .await
            .unwrap();
        assert_eq!(
            (v.status, v.checked_at),
            (DomainStatus::Pending, Some(at(40)))
        );
        assert_eq!(
            managed_domains(&state, "pec.example.test").await.unwrap(),
            ["pec.example.test"]
        );
        ids.publish(d);
        let v = verify_domain(&state, &ids, "ordine", d, at(50))
            .await
            .unwrap();
        assert_eq!(
            (v.status, v.verified_at),
            (DomainStatus::Verified, Some(at(50)))
        );
        assert_eq!(v.dkim_status, "Success");
        assert_eq!(
            state.domain_tenant(d).await.unwrap().as_deref(),
            Some("ordine")
        );
        assert_eq!(
            managed_domains(&state, "pec.example.test").await.unwrap(),
            ["pec.example.test", d]
        );

        // Another tenant cannot see, verify or remove it.
        assert!(list_domains(&state, "studio").await.unwrap().is_empty());
        assert_eq!(
            list_domains(&state, "ordine").await.unwrap(),
            vec![v.clone()]
        );
        for e in [
            verify_domain(&state, &ids, "studio", d, at(60))
                .await
                .unwrap_err(),
            remove_domain(&state, &ids, "studio", d).await.unwrap_err(),
        ] {
            assert_eq!(
                e.to_string(),
                "tenant studio has no domain ordine.example.test"
            );
        }

        // A mailbox in it blocks removal; without mailboxes it goes, identity and all.
        let mut m = mailbox("mario.rossi@ordine.example.test", Plan::Base);
        m.tenant = "ordine".into();
        state.create_mailbox(&m).await.unwrap();
        let busy = remove_domain(&state, &ids, "ordine", d).await.unwrap_err();
        assert_eq!(
            busy.to_string(),
            "ordine.example.test still has 1 mailbox(es), revoked ones included (e.g. \
             mario.rossi@ordine.example.test): a domain is removed only when no mailbox is left in it"
        );
        assert_eq!(ids.domains(), [d]);
        let other = "collegio.example.test";
        add_domain(&state, &ids, None, &policy(), "ordine", other, at(70))
            .await
            .unwrap();
        remove_domain(&state, &ids, "ordine", other).await.unwrap();
        assert_eq!(state.domain(other).await.unwrap(), None);
        assert_eq!(ids.domains(), [d]);
    }

    #[tokio::test]
    async fn bad_and_foreign_domains_are_refused_with_their_reason() {
        let state = MemoryState::new();
        let ids = pec_ports::MemoryIdentities::new();
        tenants(&state).await;
        let now = Utc.timestamp_opt(0, 0).unwrap();
        let idx = index_with(
            "Altro Gestore S.p.A.",
            &["pec.altro.test", "ordine.altro.test"],
        );
        let add = |d: &'static str, t: &'static str| {
            let (state, ids, idx) = (&state, &ids, &idx);
            async move {
                add_domain(state, ids, Some(idx), &policy(), t, d, now)
                    .await
                    .unwrap_err()
                    .to_string()
            }
        };
        assert_eq!(
            add("Ordine.Example.test", "ordine").await,
            "\"Ordine.Example.test\" has capital letters: domains are registered in lower case \
             (ordine.example.test)"
        );
        assert!(
            add("ordine.example.test.", "ordine")
                .await
                .contains("ends with a dot")
        );
        assert!(
            add("ordine-città.it", "ordine")
                .await
                .contains("internationalised (IDN)")
        );
        assert_eq!(
            add("pec.example.test", "ordine").await,
            "pec.example.test is the provider's own domain: every tenant may have mailboxes in it"
        );
        assert_eq!(
            add("ordine.example.test", "nessuno").await,
            "no tenant nessuno"
        );
        assert_eq!(
            add("ordine.altro.test", "ordine").await,
            "ordine.altro.test is listed in the provider index under Altro Gestore S.p.A.: a \
             domain is managed by one provider; it must leave that provider's entry first"
        );
        assert!(
            state.domains().await.unwrap().is_empty(),
            "nothing recorded"
        );
        assert!(ids.domains().is_empty(), "nothing registered");
    }

    fn member(row: usize, nome: &str, cognome: &str, cf: &str) -> Member {
        Member {
            row,
            nome: nome.into(),
            cognome: cognome.into(),
            fiscal_code: cf.into(),
            email: format!("{}@example.com", cf.to_lowercase()),
            mobile: None,
            plan: Plan::Pro,
        }
    }

    async fn order_with_domain(state: &MemoryState, billing: Billing) -> ImportSettings {
        state
            .put_tenant(&pec_ports::Tenant {
                id: "ordine".into(),
                name: "Ordine degli Avvocati".into(),
                billing,
            })
            .await
            .unwrap();
        let ids = pec_ports::MemoryIdentities::new();
        let d = "ordine.example.test";
        let now = Utc.timestamp_opt(0, 0).unwrap();
        add_domain(state, &ids, None, &policy(), "ordine", d, now)
            .await
            .unwrap();
        ImportSettings {
            domain: d.into(),
            pattern: AddressPattern::default(),
            provider_domain: "pec.example.test".into(),
            activation_url: "https://webmail.pec.example.test/activate".into(),
            activation_valid: chrono::Duration::days(7),
        }
    }

    async fn run(
        state: &MemoryState,
        outbox: &pec_ports::MemoryOutbox,
        settings: &ImportSettings,
        members: &[Member],
        refused: &[RowError],
        counter: &mut u32,
    ) -> Result<Vec<ImportRow>, AdminError> {
        let mut tokens = || {
            *counter += 1;
            format!("token-{counter}")
        };
        let mut heard = Vec::new();
        let report = import_members(
            state,
            outbox,
            "ordine",
            settings,
            members,
            refused,
            Utc.timestamp_opt(100, 0).unwrap(),
            &mut tokens,
            &mut |r: &ImportRow| heard.push(r.row),
        )
        .await?;
        assert_eq!(heard.len(), report.len(), "progress hears every line");
        Ok(report)
    }

    #[tokio::test]
    async fn members_are_imported_once_with_links_and_no_passwords() {
        let state = MemoryState::new();
        let outbox = pec_ports::MemoryOutbox::new();
        let mut settings = order_with_domain(&state, Billing::Tenant).await;
        let mut n = 0;
        // The domain must be verified first.
        let e = run(&state, &outbox, &settings, &[], &[], &mut n)
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "ordine.example.test is not a verified domain of tenant ordine (pec tenant domain list ordine)"
        );
        let mut verified = state.domain("ordine.example.test").await.unwrap().unwrap();
        verified.status = DomainStatus::Verified;
        assert!(state.update_domain(&verified).await.unwrap());

        // anna.bianchi is another tenant's already.
        let mut other = mailbox("anna.bianchi@ordine.example.test", Plan::Base);
        other.tenant = "altro".into();
        state.create_mailbox(&other).await.unwrap();
        let members = [
            member(2, "Mario", "Rossi", "RSSMRA85T10A562S"),
            member(3, "Mario", "Rossi", "RSSMRA85T10A56NH"),
            member(4, "Anna", "Bianchi", "BNCNNA80A41H501R"),
            member(6, "Nicolò", "D'Angelo", "VRDGPP90E15F205V"),
        ];
        let refused = [RowError {
            row: 5,
            reasons: vec!["the name is empty".into()],
        }];
        let report = run(&state, &outbox, &settings, &members, &refused, &mut n)
            .await
            .unwrap();
        let got: Vec<(usize, &str, &str)> = report
            .iter()
            .map(|r| (r.row, r.address.as_str(), r.outcome))
            .collect();
        assert_eq!(
            got,
            [
                (2, "mario.rossi@ordine.example.test", "created"),
                (3, "mario.rossi2@ordine.example.test", "created"),
                (4, "anna.bianchi2@ordine.example.test", "created"),
                (5, "", "refused"),
                (6, "nicolo.dangelo@ordine.example.test", "created"),
            ]
        );
        let m = state
            .mailbox("mario.rossi@ordine.example.test")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (m.tenant.as_str(), m.plan, m.status),
            ("ordine", Plan::Pro, MailboxStatus::Active)
        );
        assert_eq!(m.password_hash, NOT_ACTIVATED);
        assert!(
            m.in_service(),
            "tenant-paid: active at once (login waits for the password)"
        );
        let mail = outbox.take_mail();
        assert_eq!(mail.len(), 4, "one activation link per new mailbox");
        let first = String::from_utf8(mail[0].raw.clone()).unwrap();
        assert_eq!(mail[0].source, "noreply@pec.example.test");
        assert_eq!(mail[0].destinations, ["rssmra85t10a562s@example.com"]);
        assert!(
            first.contains("https://webmail.pec.example.test/activate#token-1"),
            "{first}"
        );
        assert!(first.contains("mario.rossi@ordine.example.test"));
        assert!(
            !first.to_lowercase().contains("password:"),
            "no password travels"
        );

        // Again: nothing new. Then an interrupted member (reserved, no mailbox) is completed.
        let again = run(&state, &outbox, &settings, &members, &refused, &mut n)
            .await
            .unwrap();
        assert!(
            again
                .iter()
                .filter(|r| r.row != 5)
                .all(|r| r.outcome == "existing")
        );
        assert!(outbox.take_mail().is_empty(), "no second link");
        let half = MemberRecord {
            tenant: "ordine".into(),
            fiscal_code: "FRRLGU70A01F205X".into(),
            nome: "Luigi".into(),
            cognome: "Ferri".into(),
            email: "luigi@example.com".into(),
            mobile: None,
            plan: Plan::Base,
            address: "luigi.ferri@ordine.example.test".into(),
            status: MemberStatus::Reserved,
            imported_at: Utc.timestamp_opt(50, 0).unwrap(),
            link: None,
        };
        state.put_member(&half).await.unwrap();
        let luigi = member(7, "Luigi", "Ferri", "FRRLGU70A01F205X");
        let done = run(&state, &outbox, &settings, &[luigi], &[], &mut n)
            .await
            .unwrap();
        assert_eq!(done[0].outcome, "completed");
        assert_eq!(done[0].address, "luigi.ferri@ordine.example.test");
        assert_eq!(outbox.take_mail().len(), 1);

        // A pattern that cannot make an address from a name refuses that row only.
        settings.pattern = "n.cognome".parse().unwrap();
        let bad = run(
            &state,
            &outbox,
            &settings,
            &[member(8, "Ugo", "'", "BNCNNA80A41H501R")],
            &[],
            &mut n,
        )
        .await
        .unwrap();
        assert_eq!(
            bad[0].outcome, "existing",
            "known by fiscal code before any address is made"
        );
        let bad = run(
            &state,
            &outbox,
            &settings,
            &[member(9, "Ugo", "'", "RSSMRA85T10A562X")],
            &[],
            &mut n,
        )
        .await
        .unwrap();
        assert_eq!(bad[0].outcome, "refused");
        assert!(bad[0].reason.contains("surname"), "{}", bad[0].reason);
    }

    #[tokio::test]
    async fn member_paid_mailboxes_wait_for_the_agreement() {
        let state = MemoryState::new();
        let outbox = pec_ports::MemoryOutbox::new();
        let settings = order_with_domain(&state, Billing::Member).await;
        let mut verified = state.domain("ordine.example.test").await.unwrap().unwrap();
        verified.status = DomainStatus::Verified;
        assert!(state.update_domain(&verified).await.unwrap());
        let mut n = 0;
        run(
            &state,
            &outbox,
            &settings,
            &[member(2, "Mario", "Rossi", "RSSMRA85T10A562S")],
            &[],
            &mut n,
        )
        .await
        .unwrap();
        let a = "mario.rossi@ordine.example.test";
        let m = state.mailbox(a).await.unwrap().unwrap();
        assert_eq!(m.status, MailboxStatus::Pending);
        assert!(!m.in_service());
        let body = String::from_utf8(outbox.take_mail()[0].raw.clone()).unwrap();
        assert!(body.contains("accettare le condizioni del servizio"));
        let at = |s| Utc.timestamp_opt(s, 0).unwrap();

        assert!(matches!(
            pec_ports::activation::activate(&state, "token-1", "$argon2id$x", false, at(200)).await,
            Err(pec_ports::activation::ActivationError::AgreementRequired(_))
        ));
        assert!(matches!(
            pec_ports::activation::activate(&state, "token-2", "$argon2id$x", true, at(200)).await,
            Err(pec_ports::activation::ActivationError::Invalid)
        ));
        assert_eq!(
            pec_ports::activation::activate(&state, "token-1", "$argon2id$x", true, at(300))
                .await
                .unwrap(),
            a
        );
        let m = state.mailbox(a).await.unwrap().unwrap();
        assert_eq!(
            (m.status, m.password_hash.as_str()),
            (MailboxStatus::Active, "$argon2id$x")
        );
        assert!(
            matches!(
                pec_ports::activation::activate(&state, "token-1", "$argon2id$y", true, at(400))
                    .await,
                Err(pec_ports::activation::ActivationError::Invalid)
            ),
            "single use"
        );

        // A link used after it expired does nothing.
        run(
            &state,
            &outbox,
            &settings,
            &[member(3, "Anna", "Bianchi", "BNCNNA80A41H501R")],
            &[],
            &mut n,
        )
        .await
        .unwrap();
        let late = at(100) + chrono::Duration::days(7);
        assert!(matches!(
            pec_ports::activation::activate(&state, "token-2", "$argon2id$x", true, late).await,
            Err(pec_ports::activation::ActivationError::Invalid)
        ));
        assert_eq!(
            state
                .mailbox("anna.bianchi@ordine.example.test")
                .await
                .unwrap()
                .unwrap()
                .status,
            MailboxStatus::Pending
        );
    }

    #[tokio::test]
    async fn an_interrupted_member_never_adopts_another_members_mailbox() {
        let state = MemoryState::new();
        let outbox = pec_ports::MemoryOutbox::new();
        let settings = order_with_domain(&state, Billing::Tenant).await;
        let mut verified = state.domain("ordine.example.test").await.unwrap().unwrap();
        verified.status = DomainStatus::Verified;
        assert!(state.update_domain(&verified).await.unwrap());
        // An earlier run reserved mario.rossi for A and stopped before the mailbox.
        let a = member(3, "Mario", "Rossi", "RSSMRA85T10A562S");
        state
            .put_member(&MemberRecord {
                tenant: "ordine".into(),
                fiscal_code: a.fiscal_code.clone(),
                nome: a.nome.clone(),
                cognome: a.cognome.clone(),
                email: a.email.clone(),
                mobile: None,
                plan: a.plan,
                address: "mario.rossi@ordine.example.test".into(),
                status: MemberStatus::Reserved,
                imported_at: Utc.timestamp_opt(1, 0).unwrap(),
                link: None,
            })
            .await
            .unwrap();
        // Now B, another Mario Rossi, comes first and takes the free address.
        let b = member(2, "Mario", "Rossi", "RSSMRA85T10A56NH");
        let mut n = 0;
        let report = run(&state, &outbox, &settings, &[b, a], &[], &mut n)
            .await
            .unwrap();
        let got: Vec<(&str, &str)> = report
            .iter()
            .map(|r| (r.address.as_str(), r.outcome))
            .collect();
        assert_eq!(
            got,
            [
                ("mario.rossi@ordine.example.test", "created"),
                ("mario.rossi2@ordine.example.test", "completed"),
            ]
        );
        let mails = outbox.take_mail();
        assert_eq!(mails.len(), 2);
        assert_eq!(mails[1].destinations, ["rssmra85t10a562s@example.com"]);
        assert!(
            String::from_utf8_lossy(&mails[1].raw).contains("mario.rossi2@ordine.example.test")
        );
        // B activates; a stale or second link for the same mailbox cannot reset that password.
        let at = |s| Utc.timestamp_opt(s, 0).unwrap();
        pec_ports::activation::activate(&state, "token-1", "$argon2id$b", false, at(200))
            .await
            .unwrap();
        state
            .put_activation(&pec_ports::ActivationRecord {
                token_hash: token_hash("another"),
                address: "mario.rossi@ordine.example.test".into(),
                tenant: "ordine".into(),
                agreement: false,
                reset_for: None,
                expires_at: at(10_000),
            })
            .await
            .unwrap();
        assert!(matches!(
            pec_ports::activation::activate(&state, "another", "$argon2id$x", false, at(300)).await,
            Err(pec_ports::activation::ActivationError::Invalid)
        ));
        let m = state
            .mailbox("mario.rossi@ordine.example.test")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(m.password_hash, "$argon2id$b");
        assert_eq!(m.member.as_deref(), Some("RSSMRA85T10A56NH"));
    }

    #[tokio::test]
    async fn a_special_quota_never_drops_below_the_usage() {
        let state = MemoryState::new();
        let a = "studio@ordine.example.test";
        let mut m = mailbox(a, Plan::Base);
        m.quota_bytes = 20 * GIB;
        state.create_mailbox(&m).await.unwrap();
        fill(&state, a, 10 * GIB).await;
        let e = change_plan(&state, &Admin::Operator, a, Plan::Gold, 0)
            .await
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("holds 10737418240 bytes (10.00 GB) and the new limit is 5368709120"),
            "{e}"
        );
        assert_eq!(
            state.mailbox(a).await.unwrap().unwrap().quota_bytes,
            20 * GIB
        );
    }

    #[tokio::test]
    async fn suspend_resume_revoke() {
        let state = MemoryState::new();
        let at = |s| Utc.timestamp_opt(s, 0).unwrap();
        let a = "mario.rossi@ordine.example.test";
        state.create_mailbox(&mailbox(a, Plan::Pro)).await.unwrap();
        let op = Admin::Operator;

        let s = change_status(
            &state,
            &op,
            a,
            StatusChange::Suspend(SuspendReason::NonPayment),
            at(1),
        )
        .await
        .unwrap();
        assert_eq!(s.status, MailboxStatus::Suspended);
        assert!(!s.in_service());
        let note = s.status_note.clone().unwrap();
        assert_eq!(
            (note.reason.as_str(), note.since, note.previous),
            ("non-payment", at(1), MailboxStatus::Active)
        );
        // A retry changes nothing (the first reason and time stay).
        let again = change_status(
            &state,
            &op,
            a,
            StatusChange::Suspend(SuspendReason::Spam),
            at(2),
        )
        .await
        .unwrap();
        assert_eq!(again, s);
        let r = change_status(&state, &op, a, StatusChange::Resume, at(3))
            .await
            .unwrap();
        assert_eq!(
            (r.status, r.status_note.clone()),
            (MailboxStatus::Active, None)
        );
        assert!(r.in_service());
        assert_eq!(
            change_status(&state, &op, a, StatusChange::Resume, at(4))
                .await
                .unwrap_err()
                .to_string(),
            "mailbox mario.rossi@ordine.example.test is active, not suspended: nothing to resume"
        );

        // A pending mailbox goes back to pending; activated while suspended, to active.
        let p = "anna.bianchi@ordine.example.test";
        let mut pending = mailbox(p, Plan::Pro);
        pending.status = MailboxStatus::Pending;
        pending.password_hash = NOT_ACTIVATED.into();
        state.create_mailbox(&pending).await.unwrap();
        change_status(
            &state,
            &op,
            p,
            StatusChange::Suspend(SuspendReason::Request),
            at(5),
        )
        .await
        .unwrap();
        let back = change_status(&state, &op, p, StatusChange::Resume, at(6))
            .await
            .unwrap();
        assert_eq!(back.status, MailboxStatus::Pending);
        let s = change_status(
            &state,
            &op,
            p,
            StatusChange::Suspend(SuspendReason::Request),
            at(7),
        )
        .await
        .unwrap();
        let activated = Mailbox {
            password_hash: "$argon2id$chosen".into(),
            ..s.clone()
        };
        assert!(state.replace_mailbox(&s, &activated, None).await.unwrap());
        let back = change_status(&state, &op, p, StatusChange::Resume, at(8))
            .await
            .unwrap();
        assert_eq!(
            back.status,
            MailboxStatus::Active,
            "activated while suspended"
        );

        // Revocation is final; its retry is not an error.
        let v = change_status(&state, &op, a, StatusChange::Revoke, at(7))
            .await
            .unwrap();
        assert_eq!(v.status, MailboxStatus::Revoked);
        assert_eq!(
            v.status_note.as_ref().map(|n| n.previous),
            Some(MailboxStatus::Active)
        );
        assert_eq!(
            change_status(&state, &op, a, StatusChange::Revoke, at(8))
                .await
                .unwrap(),
            v
        );
        for change in [
            StatusChange::Resume,
            StatusChange::Suspend(SuspendReason::Other),
        ] {
            assert_eq!(
                change_status(&state, &op, a, change, at(9))
                    .await
                    .unwrap_err()
                    .to_string(),
                "mailbox mario.rossi@ordine.example.test is revoked: a revocation is final"
            );
        }
        // What the provider suspends, the tenant cannot resume; its own suspension it can.
        let t = "luca.verdi@ordine.example.test";
        state.create_mailbox(&mailbox(t, Plan::Pro)).await.unwrap();
        let tenant = Admin::Tenant("t".into());
        let s = change_status(
            &state,
            &op,
            t,
            StatusChange::Suspend(SuspendReason::Spam),
            at(10),
        )
        .await
        .unwrap();
        assert!(s.status_note.unwrap().by_provider);
        assert_eq!(
            change_status(&state, &tenant, t, StatusChange::Resume, at(11))
                .await
                .unwrap_err()
                .to_string(),
            "mailbox luca.verdi@ordine.example.test was suspended by the provider: only the provider resumes it"
        );
        change_status(&state, &op, t, StatusChange::Resume, at(12))
            .await
            .unwrap();
        change_status(
            &state,
            &tenant,
            t,
            StatusChange::Suspend(SuspendReason::Request),
            at(13),
        )
        .await
        .unwrap();
        let back = change_status(&state, &tenant, t, StatusChange::Resume, at(14))
            .await
            .unwrap();
        assert_eq!(back.status, MailboxStatus::Active);
        assert!(matches!(
            SuspendReason::parse("boh"),
            Err(AdminError::Reason(_))
        ));
        assert_eq!(
            SuspendReason::parse(" Non-Payment").unwrap(),
            SuspendReason::NonPayment
        );
    }

    /// Tenant isolation on every operation: tenant `studio` tries each one on `ordine`'s
    /// domain and mailbox and gets "no such" (never a hint that they exist), and nothing of
    /// `ordine` changes.
    #[tokio::test]
    async fn a_tenant_never_reaches_another_tenants_records() {
        use pec_ports::MailStore;
        let state = MemoryState::new();
        let ids = pec_ports::MemoryIdentities::new();
        let outbox = pec_ports::MemoryOutbox::new();
        let store = pec_ports::MemoryMailStore::default();
        tenants(&state).await;
        let at = |s| Utc.timestamp_opt(s, 0).unwrap();
        let d = "ordine.example.test";
        add_domain(&state, &ids, None, &policy(), "ordine", d, at(1))
            .await
            .unwrap();
        ids.publish(d);
        verify_domain(&state, &ids, "ordine", d, at(2))
            .await
            .unwrap();
        let victim = "mario.rossi@ordine.example.test";
        let mut m = mailbox(victim, Plan::Pro);
        m.tenant = "ordine".into();
        state.create_mailbox(&m).await.unwrap();
        store.create_mailbox(victim, m.quota_bytes);
        let before = (
            state.mailbox(victim).await.unwrap(),
            state.domain(d).await.unwrap(),
            store.quota(victim).await.unwrap(),
        );
        let studio = Admin::Tenant("studio".into());
        let ordine = Admin::Tenant("ordine".into());
        let no_mailbox = "no mailbox mario.rossi@ordine.example.test";

        assert_eq!(
            change_plan(&state, &studio, victim, Plan::Base, 0)
                .await
                .unwrap_err()
                .to_string(),
            no_mailbox
        );
        for change in [
            StatusChange::Suspend(SuspendReason::Spam),
            StatusChange::Resume,
            StatusChange::Revoke,
        ] {
            assert_eq!(
                change_status(&state, &studio, victim, change, at(3))
                    .await
                    .unwrap_err()
                    .to_string(),
                no_mailbox
            );
        }
        assert_eq!(
            mailbox_for(&state, &studio, victim)
                .await
                .unwrap_err()
                .to_string(),
            no_mailbox
        );
        let mut src = pec_ports::transfer::MemorySource::new("imap:x@other").folder(
            "INBOX",
            None,
            1,
            vec![(b"Subject: x\r\n\r\nx".to_vec(), Default::default(), at(0))],
        );
        let e = crate::transfer::transfer(
            &state,
            &store,
            &mut src,
            &studio,
            victim,
            &Default::default(),
            &mut |_| {},
        )
        .await
        .unwrap_err();
        assert_eq!(e.to_string(), no_mailbox);

        // Domains: not listed, not verified, not removed, not taken, not imported into.
        assert!(list_domains(&state, "studio").await.unwrap().is_empty());
        for e in [
            verify_domain(&state, &ids, "studio", d, at(4))
                .await
                .unwrap_err(),
            remove_domain(&state, &ids, "studio", d).await.unwrap_err(),
        ] {
            assert_eq!(
                e.to_string(),
                "tenant studio has no domain ordine.example.test"
            );
        }
        assert_eq!(
            add_domain(&state, &ids, None, &policy(), "studio", d, at(5))
                .await
                .unwrap_err()
                .to_string(),
            "ordine.example.test is already managed here by another tenant"
        );
        let settings = ImportSettings {
            domain: d.into(),
            pattern: AddressPattern::default(),
            provider_domain: "pec.example.test".into(),
            activation_url: "https://webmail.pec.example.test/activate".into(),
            activation_valid: chrono::Duration::days(7),
        };
        let e = import_members(
            &state,
            &outbox,
            "studio",
            &settings,
            &[member(2, "Mario", "Rossi", "RSSMRA85T10A562S")],
            &[],
            at(6),
            &mut || "t".to_string(),
            &mut |_| {},
        )
        .await
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "ordine.example.test is not a verified domain of tenant studio (pec tenant domain list studio)"
        );
        assert!(state.tenant_mailboxes("studio").await.unwrap().is_empty());
        assert!(outbox.take_mail().is_empty(), "no activation mail went out");

        // Nothing of ordine changed, and ordine itself still reaches all of it.
        let after = (
            state.mailbox(victim).await.unwrap(),
            state.domain(d).await.unwrap(),
            store.quota(victim).await.unwrap(),
        );
        assert_eq!(before, after);
        assert_eq!(
            mailbox_for(&state, &ordine, victim).await.unwrap().address,
            victim
        );
        change_plan(&state, &ordine, victim, Plan::Plus, 0)
            .await
            .unwrap();
    }

    /// A new link for a member who lost the first: sent to the contact address, the first stops
    /// working, the agreement's acceptance is recorded with the activation; not for an
    /// activated mailbox, one not imported, or another tenant's.
    #[tokio::test]
    async fn a_new_activation_link_retires_the_first() {
        let state = MemoryState::new();
        let outbox = pec_ports::MemoryOutbox::new();
        let settings = order_with_domain(&state, Billing::Member).await;
        let mut verified = state.domain("ordine.example.test").await.unwrap().unwrap();
        verified.status = DomainStatus::Verified;
        assert!(state.update_domain(&verified).await.unwrap());
        let mut n = 0;
        let cf = "RSSMRA85T10A562S";
        run(
            &state,
            &outbox,
            &settings,
            &[member(2, "Mario", "Rossi", cf)],
            &[],
            &mut n,
        )
        .await
        .unwrap();
        outbox.take_mail();
        let a = "mario.rossi@ordine.example.test";
        let at = |s| Utc.timestamp_opt(s, 0).unwrap();
        let op = Admin::Operator;
        let mut token = || "second-link".to_string();

        let e = reissue_activation(
            &state,
            &outbox,
            &Admin::Tenant("studio".into()),
            a,
            &settings,
            at(150),
            &mut token,
        )
        .await
        .unwrap_err();
        assert_eq!(e.to_string(), format!("no mailbox {a}"));
        let r = reissue_activation(&state, &outbox, &op, a, &settings, at(150), &mut token)
            .await
            .unwrap();
        assert_eq!(r.email, format!("{}@example.com", cf.to_lowercase()));
        assert_eq!(r.expires_at, at(150) + chrono::Duration::days(7));
        let mail = outbox.take_mail();
        assert_eq!(mail.len(), 1);
        assert_eq!(mail[0].destinations, vec![r.email.clone()]);
        let body = String::from_utf8(mail[0].raw.clone()).unwrap();
        assert!(body.contains("#second-link"), "{body}");
        assert!(matches!(
            pec_ports::activation::activate(&state, "token-1", "$argon2id$x", true, at(200)).await,
            Err(pec_ports::activation::ActivationError::Invalid)
        ));
        pec_ports::activation::activate(&state, "second-link", "$argon2id$x", true, at(210))
            .await
            .unwrap();
        let m = state.mailbox(a).await.unwrap().unwrap();
        assert_eq!(
            (m.agreement_accepted_at, m.status),
            (Some(at(210)), MailboxStatus::Active)
        );
        assert_eq!(
            reissue_activation(&state, &outbox, &op, a, &settings, at(220), &mut token)
                .await
                .unwrap_err()
                .to_string(),
            format!(
                "mailbox {a} is activated already: its member logs in with the password chosen"
            )
        );
        let mut plain = mailbox("luca.verdi@ordine.example.test", Plan::Base);
        plain.password_hash = NOT_ACTIVATED.into();
        state.create_mailbox(&plain).await.unwrap();
        assert!(matches!(
            reissue_activation(
                &state,
                &outbox,
                &op,
                &plain.address,
                &settings,
                at(230),
                &mut token
            )
            .await,
            Err(AdminError::NotImported(_))
        ));
        assert!(outbox.take_mail().is_empty());
    }

    /// A tenant creates mailboxes in the provider's domain and its own verified domains only.
    #[tokio::test]
    async fn a_tenant_creates_mailboxes_in_its_domains_only() {
        let state = MemoryState::new();
        let ids = pec_ports::MemoryIdentities::new();
        tenants(&state).await;
        let at = |s| Utc.timestamp_opt(s, 0).unwrap();
        let d = "ordine.example.test";
        add_domain(&state, &ids, None, &policy(), "ordine", d, at(1))
            .await
            .unwrap();
        let ordine = Admin::Tenant("ordine".into());
        let new = |address: &str| NewMailbox {
            address: address.into(),
            plan: Plan::Pro,
            expansion_gb: 1,
            password_hash: "$argon2id$x".into(),
        };
        let create = |admin: Admin, tenant: &'static str, address: &'static str| {
            let state = &state;
            let n = new(address);
            async move {
                create_mailbox(state, &admin, tenant, "pec.example.test", &n, at(2))
                    .await
                    .map_err(|e| e.to_string())
            }
        };
        assert_eq!(
            create(ordine.clone(), "ordine", "a@ordine.example.test")
                .await
                .unwrap_err(),
            "ordine.example.test is not a verified domain of tenant ordine (pec tenant domain list ordine)",
            "not verified yet"
        );
        ids.publish(d);
        verify_domain(&state, &ids, "ordine", d, at(3))
            .await
            .unwrap();
        let m = create(ordine.clone(), "ordine", " A@Ordine.Example.test")
            .await
            .unwrap();
        assert_eq!(
            (m.address.as_str(), m.quota_bytes),
            (
                "a@ordine.example.test",
                plan::quota_bytes(Plan::Pro, 1).unwrap()
            )
        );
        assert!(m.in_service());
        create(ordine.clone(), "ordine", "b@pec.example.test")
            .await
            .unwrap();
        assert_eq!(
            create(ordine.clone(), "ordine", "a@ordine.example.test")
                .await
                .unwrap_err(),
            "mailbox a@ordine.example.test exists already"
        );
        let studio = Admin::Tenant("studio".into());
        assert_eq!(
            create(studio.clone(), "studio", "c@ordine.example.test")
                .await
                .unwrap_err(),
            "ordine.example.test is not a verified domain of tenant studio (pec tenant domain list studio)"
        );
        assert_eq!(
            create(studio, "ordine", "c@pec.example.test")
                .await
                .unwrap_err(),
            "no tenant ordine",
            "a tenant admin acts for its own tenant only"
        );
        assert!(
            create(ordine.clone(), "ordine", "not an address")
                .await
                .is_err()
        );
        assert_eq!(
            create(ordine.clone(), "ordine", "Postmaster@pec.example.test")
                .await
                .unwrap_err(),
            "postmaster@pec.example.test is reserved for the provider"
        );
        create(ordine, "ordine", "postmaster@ordine.example.test")
            .await
            .unwrap();
    }
}
