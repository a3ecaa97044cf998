//! Tenant and mailbox administration over the ports (issue #13): what `pec tenant`, `pec
//! mailbox` and the API's admin routes call. The rules are `pec-core`'s ([`pec_core::plan`]);
//! this module reads, decides and writes with conditions, so two operators (or an operator and a
//! delivery) never leave a mailbox over its new limits.

use chrono::{DateTime, Utc};
use pec_core::domain::DomainError;
use pec_core::plan::{self, Plan, PlanChange, PlanError, Usage};
use pec_ports::{
    DnsRecord, DomainIdentities, DomainRecord, DomainStatus, IdentityError, IdentitySetup,
    StateError, StateStore,
};
use pec_smime::ProviderIndex;

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
        "{domain} still has {count} mailbox(es) (e.g. {example}): move or revoke them before \
         removing the domain"
    )]
    DomainInUse {
        domain: String,
        count: usize,
        example: String,
    },
    #[error("the mail service: {0}")]
    Identity(#[from] IdentityError),
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
    address: &str,
    to: Plan,
    expansion_gb: u32,
) -> Result<PlanChange, AdminError> {
    for _ in 0..RETRIES {
        let current = state
            .mailbox(address)
            .await?
            .ok_or_else(|| AdminError::NoMailbox(address.to_string()))?;
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
        let new = pec_ports::Mailbox {
            plan: decided.plan,
            expansions_gb: decided.expansion_gb,
            quota_bytes: decided.quota_bytes,
            ..current.clone()
        };
        let max_used = (decided.kind == plan::ChangeKind::Downgrade).then_some(decided.quota_bytes);
        if state.replace_mailbox(&current, &new, max_used).await? {
            return Ok(decided);
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
    state.put_domain(&record).await?;
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
    state.put_domain(&record).await?;
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
    identities.delete(&record.domain).await?;
    if !state.remove_domain(&record.domain, tenant).await? {
        return Err(AdminError::NoDomain {
            tenant: tenant.to_string(),
            domain: record.domain,
        });
    }
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
            refuse_ordinary: false,
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

        let e = change_plan(&state, a, Plan::Base, 0).await.unwrap_err();
        assert!(
            e.to_string()
                .contains("the inbox holds 1610612736 bytes (1.50 GB) and the new limit is 1073741824"),
            "{e}"
        );
        assert_eq!(state.mailbox(a).await.unwrap().unwrap().plan, Plan::Gold);

        let down = change_plan(&state, a, Plan::Base, 1).await.unwrap();
        assert_eq!((down.kind, down.quota_bytes), (ChangeKind::Downgrade, 2 * GIB));
        let m = state.mailbox(a).await.unwrap().unwrap();
        assert_eq!((m.plan, m.expansions_gb, m.quota_bytes), (Plan::Base, 1, 2 * GIB));
        assert_eq!(m.used_bytes, GIB + GIB / 2, "usage kept");

        let up = change_plan(&state, a, Plan::GoldPlus, 5).await.unwrap();
        assert_eq!((up.kind, up.quota_bytes), (ChangeKind::Upgrade, 10 * GIB));
        assert_eq!(
            change_plan(&state, a, Plan::GoldPlus, 5).await.unwrap().kind,
            ChangeKind::Unchanged
        );
        assert!(matches!(
            change_plan(&state, a, Plan::Gold, 2).await,
            Err(AdminError::Plan(PlanError::Expansion(2)))
        ));
        assert!(matches!(
            change_plan(&state, "nobody@ordine.example.test", Plan::Gold, 0).await,
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
                ("CNAME", "1ordine-example-test._domainkey.ordine.example.test"),
                ("CNAME", "2ordine-example-test._domainkey.ordine.example.test"),
                ("CNAME", "3ordine-example-test._domainkey.ordine.example.test"),
                ("TXT", d),
                ("TXT", "_dmarc.ordine.example.test"),
            ]
        );
        assert_eq!(added.dns[0].value, "10 inbound-smtp.eu-west-1.amazonaws.com");
        assert_eq!(
            added.dns[6].value,
            "\"v=DMARC1; p=reject; rua=mailto:dmarc@pec.example.test\""
        );
        assert_eq!(state.domain_tenant(d).await.unwrap(), None, "pending: not ours yet");

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
        let v = verify_domain(&state, &ids, "ordine", d, at(40)).await.unwrap();
        assert_eq!((v.status, v.checked_at), (DomainStatus::Pending, Some(at(40))));
        assert_eq!(
            managed_domains(&state, "pec.example.test").await.unwrap(),
            ["pec.example.test"]
        );
        ids.publish(d);
        let v = verify_domain(&state, &ids, "ordine", d, at(50)).await.unwrap();
        assert_eq!((v.status, v.verified_at), (DomainStatus::Verified, Some(at(50))));
        assert_eq!(v.dkim_status, "Success");
        assert_eq!(state.domain_tenant(d).await.unwrap().as_deref(), Some("ordine"));
        assert_eq!(
            managed_domains(&state, "pec.example.test").await.unwrap(),
            ["pec.example.test", d]
        );

        // Another tenant cannot see, verify or remove it.
        assert!(list_domains(&state, "studio").await.unwrap().is_empty());
        assert_eq!(list_domains(&state, "ordine").await.unwrap(), vec![v.clone()]);
        for e in [
            verify_domain(&state, &ids, "studio", d, at(60)).await.unwrap_err(),
            remove_domain(&state, &ids, "studio", d).await.unwrap_err(),
        ] {
            assert_eq!(e.to_string(), "tenant studio has no domain ordine.example.test");
        }

        // A mailbox in it blocks removal; without mailboxes it goes, identity and all.
        let mut m = mailbox("mario.rossi@ordine.example.test", Plan::Base);
        m.tenant = "ordine".into();
        state.create_mailbox(&m).await.unwrap();
        let busy = remove_domain(&state, &ids, "ordine", d).await.unwrap_err();
        assert_eq!(
            busy.to_string(),
            "ordine.example.test still has 1 mailbox(es) (e.g. mario.rossi@ordine.example.test): \
             move or revoke them before removing the domain"
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
        let idx = index_with("Altro Gestore S.p.A.", &["pec.altro.test", "ordine.altro.test"]);
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
        assert!(add("ordine.example.test.", "ordine").await.contains("ends with a dot"));
        assert!(add("ordine-città.it", "ordine").await.contains("internationalised (IDN)"));
        assert_eq!(
            add("pec.example.test", "ordine").await,
            "pec.example.test is the provider's own domain: every tenant may have mailboxes in it"
        );
        assert_eq!(add("ordine.example.test", "nessuno").await, "no tenant nessuno");
        assert_eq!(
            add("ordine.altro.test", "ordine").await,
            "ordine.altro.test is listed in the provider index under Altro Gestore S.p.A.: a \
             domain is managed by one provider; it must leave that provider's entry first"
        );
        assert!(state.domains().await.unwrap().is_empty(), "nothing recorded");
        assert!(ids.domains().is_empty(), "nothing registered");
    }
}
