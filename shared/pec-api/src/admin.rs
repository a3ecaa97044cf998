//! Tenant administration (issue #14 over issue #13's library, `pec_pipeline::tenants`): the
//! tenant's mailboxes (list, plan, suspend/resume/revoke) and its own domains (add with the DNS
//! records to publish, verify, list, remove), and the service sheet. Tenant API keys with the
//! `admin` scope only (a mailbox session answers `403`); every operation runs as
//! `Admin::Tenant(<the key's tenant>)`, so another tenant's mailbox or domain answers `404`,
//! exactly as one that does not exist.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Utc};
use pec_core::plan::{self, Plan, PlanError};
use pec_pipeline::tenants::{self, Admin, AdminError, DomainPolicy, StatusChange, SuspendReason};
use pec_ports::access::Scope;
use pec_ports::{DomainRecord, Mailbox, ObjectStore, StateStore};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::{Principal, principal};
use crate::problem::FieldError;
use crate::{App, Backend, Problem};

/// A domain named in a path as the records name it: trimmed, lower case, no trailing dot.
pub(crate) fn path_domain(d: &str) -> String {
    d.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// The tenant of an API key with the `admin` scope.
pub(crate) async fn tenant_of<B: Backend>(
    app: &App<B>,
    headers: &HeaderMap,
) -> Result<String, Problem> {
    let who = principal(app, headers).await?;
    who.require(Scope::Admin)?;
    match who {
        Principal::Key { tenant, .. } => Ok(tenant),
        Principal::Mailbox { .. } => Err(Problem::forbidden(
            "missing-scope",
            "tenants are administered with a tenant API key",
        )),
    }
}

pub(crate) fn problem(e: AdminError) -> Problem {
    use AdminError as E;
    match e {
        E::NoMailbox(a) => Problem::not_found(format!("no mailbox {a:?}")),
        E::NoTenant(t) => Problem::not_found(format!("no tenant {t:?}")),
        E::NoDomain { domain, .. } => Problem::not_found(format!("no domain {domain:?}")),
        E::Plan(e @ PlanError::Exceeds { .. }) => Problem::conflict("plan-exceeded", e.to_string()),
        E::Plan(e @ PlanError::UnknownPlan(_)) => {
            Problem::invalid(vec![FieldError::new("/plan", e.to_string())])
        }
        E::Plan(e) => Problem::invalid(vec![FieldError::new("/expansion_gb", e.to_string())]),
        E::Domain(e) => Problem::invalid(vec![FieldError::new("/domain", e.to_string())]),
        E::Reason(r) => Problem::invalid(vec![FieldError::new(
            "/reason",
            format!("unknown reason {r:?}: spam, non-payment, request or other"),
        )]),
        e @ (E::ProviderDomain(_)
        | E::DomainTaken(_)
        | E::DomainListedElsewhere { .. }
        | E::DomainInUse { .. }) => Problem::conflict("domain-conflict", e.to_string()),
        e @ (E::Revoked(_) | E::NotSuspended { .. } | E::ProviderSuspension(_)) => {
            Problem::conflict("mailbox-status", e.to_string())
        }
        e @ E::Reserved(_) => Problem::invalid(vec![FieldError::new("/address", e.to_string())]),
        e @ (E::Contended(_) | E::Identity(_) | E::State(_) | E::MailFailed { .. }) => {
            Problem::unavailable(e)
        }
        e @ E::BadAddress(_) => Problem::invalid(vec![FieldError::new("/address", e.to_string())]),
        e @ E::MailboxTaken(_) => Problem::conflict("mailbox-exists", e.to_string()),
        e @ E::DomainNotReady { .. } => {
            Problem::invalid(vec![FieldError::new("/address", e.to_string())])
        }
        e @ (E::AddressSpace(_) | E::AlreadyActivated(_) | E::NotImported(_)) => {
            Problem::conflict("not-possible", e.to_string())
        }
    }
}

// ------------------------------------------------------------------------------ plans

/// One plan of the service sheet.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlanView {
    #[schema(example = "gold-plus")]
    pub name: String,
    #[schema(example = "Gold Plus")]
    pub label: String,
    pub inbox_bytes: u64,
    /// 0: none.
    pub security_archive_bytes: u64,
    /// 0: none.
    pub conservation_bytes: u64,
    /// What it includes besides storage (`sms-notification`, `antispam`, `webmail`,
    /// `mass-sending`, `e-invoice-viewer`, `phishing-protection`, `password-protection`...).
    pub features: Vec<String>,
    /// Mass sends granted at activation.
    pub free_mass_sends: u32,
}

/// The service sheet: every plan and the expansions sold.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlanSheet {
    pub plans: Vec<PlanView>,
    /// Expansion packs, in GB.
    pub expansions_gb: Vec<u32>,
}

/// The service sheet (any authenticated caller).
#[utoipa::path(get, path = "/v1/plans", operation_id = "list_plans", tag = "administration", security(("bearer" = [])),
    responses(
        (status = 200, description = "Every plan and what it includes", body = PlanSheet),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Over the rate limit of this credential: wait Retry-After seconds", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn plans<B: Backend>(
    State(app): State<Arc<App<B>>>,
    headers: HeaderMap,
) -> Result<Json<PlanSheet>, Problem> {
    principal(&app, &headers).await?;
    let plans = Plan::ALL
        .iter()
        .map(|p| {
            let e = p.entitlements();
            PlanView {
                name: p.as_str().to_string(),
                label: p.label().to_string(),
                inbox_bytes: e.inbox_bytes,
                security_archive_bytes: e.security_archive_bytes,
                conservation_bytes: e.conservation_bytes,
                features: plan::Feature::ALL
                    .iter()
                    .filter(|f| e.includes(**f))
                    .map(|f| {
                        serde_json::to_value(f)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_string))
                            .unwrap_or_default()
                    })
                    .collect(),
                free_mass_sends: e.free_mass_sends,
            }
        })
        .collect();
    Ok(Json(PlanSheet {
        plans,
        expansions_gb: plan::EXPANSION_PACKS_GB.to_vec(),
    }))
}

// -------------------------------------------------------------------------- mailboxes

/// A mailbox as its tenant administers it.
#[derive(Debug, Serialize, ToSchema)]
pub struct MailboxAdmin {
    pub address: String,
    #[schema(example = "pro")]
    pub plan: String,
    /// GB bought on top of the plan.
    pub expansion_gb: u32,
    pub quota_bytes: u64,
    pub used_bytes: u64,
    /// `active`, `pending` (waiting for its member's activation), `suspended`, `revoked`.
    #[schema(example = "active")]
    pub status: String,
    /// Why it is suspended or revoked.
    pub status_reason: Option<String>,
    pub status_since: Option<DateTime<Utc>>,
    /// Locked by the spam lockout.
    pub locked: bool,
    pub created_at: DateTime<Utc>,
}

fn mailbox_view(m: &Mailbox) -> MailboxAdmin {
    MailboxAdmin {
        address: m.address.clone(),
        plan: m.plan.as_str().to_string(),
        expansion_gb: m.expansions_gb,
        quota_bytes: m.quota_bytes,
        used_bytes: m.used_bytes,
        status: m.status.as_str().to_string(),
        status_reason: m.status_note.as_ref().map(|n| n.reason.clone()),
        status_since: m.status_note.as_ref().map(|n| n.since),
        locked: m.locked,
        created_at: m.created_at,
    }
}

/// A page of the tenant's mailboxes.
#[derive(Debug, Serialize, ToSchema)]
pub struct MailboxPage {
    pub mailboxes: Vec<MailboxAdmin>,
    /// Give it as `cursor` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

/// Paging of `GET /v1/mailboxes`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Mailboxes per page, 1 to 500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    #[param(max_length = 320)]
    pub cursor: Option<String>,
}

/// The tenant's mailboxes, by address.
#[utoipa::path(get, path = "/v1/mailboxes", operation_id = "list_mailboxes", tag = "administration", security(("bearer" = [])),
    params(PageQuery),
    responses(
        (status = 200, description = "A page of the tenant's mailboxes", body = MailboxPage),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a tenant key with the admin scope", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A bad limit", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Over the rate limit of this credential: wait Retry-After seconds", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_mailboxes<B: Backend>(
    State(app): State<Arc<App<B>>>,
    headers: HeaderMap,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<MailboxPage>, Problem> {
    let tenant = tenant_of(&app, &headers).await?;
    let Query(q) =
        query.map_err(|e| Problem::invalid(vec![FieldError::new("/limit", e.body_text())]))?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(Problem::invalid(vec![FieldError::new(
            "/limit", "1 to 500",
        )]));
    }
    if q.cursor.as_ref().is_some_and(|c| c.len() > 320) {
        return Err(Problem::invalid(vec![FieldError::new(
            "/cursor",
            "not a cursor of this list",
        )]));
    }
    let mut all = app.backend.state().tenant_mailboxes(&tenant).await?;
    all.sort_by(|a, b| a.address.cmp(&b.address));
    let after = q.cursor.unwrap_or_default();
    let mut page: Vec<&Mailbox> = all
        .iter()
        .filter(|m| after.is_empty() || m.address.as_str() > after.as_str())
        .take(limit as usize + 1)
        .collect();
    let next_cursor = if page.len() > limit as usize {
        page.truncate(limit as usize);
        page.last().map(|m| m.address.clone())
    } else {
        None
    };
    Ok(Json(MailboxPage {
        mailboxes: page.into_iter().map(mailbox_view).collect(),
        next_cursor,
    }))
}

/// `POST /v1/mailboxes`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateMailbox {
    /// In the provider's domain or one of the tenant's verified domains.
    #[schema(example = "mario.rossi@ordine.example.it", max_length = 254)]
    pub address: String,
    /// One of the sheet's plans (`GET /v1/plans`).
    #[schema(example = "pro")]
    pub plan: String,
    /// 0 (none), 1, 3 or 5 GB on top of the plan.
    #[serde(default)]
    #[schema(maximum = 1000)]
    pub expansion_gb: u32,
    /// Its first password (10 to 200 characters); stored only as an Argon2id hash.
    #[schema(min_length = 10, max_length = 200)]
    pub password: String,
}

/// Creates a mailbox of the tenant, active at once.
#[utoipa::path(post, path = "/v1/mailboxes", operation_id = "create_mailbox", tag = "administration", security(("bearer" = [])),
    request_body = CreateMailbox,
    responses(
        (status = 201, description = "Created", body = MailboxAdmin),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a tenant key with the admin scope", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The address exists already", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not an address of the tenant's domains, an unknown plan, an expansion not sold, a short password; or `password-breached`: the password is in known breach data (plans with password protection)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Over the rate limit of this credential: wait Retry-After seconds", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`breach-check-unavailable`: the password could not be checked against breach data; nothing was created, retry", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create_mailbox<B: Backend>(
    State(app): State<Arc<App<B>>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<MailboxAdmin>), Problem> {
    let tenant = tenant_of(&app, &headers).await?;
    let req: CreateMailbox = crate::send::json_body(&headers, &body)?;
    let mut errors = Vec::new();
    let plan = plan::parse_plan(&req.plan);
    if let Err(e) = &plan {
        errors.push(FieldError::new("/plan", e.to_string()));
    }
    if let Err(e) = plan::check_expansion(req.expansion_gb) {
        errors.push(FieldError::new("/expansion_gb", e.to_string()));
    }
    let min = crate::activation::MIN_PASSWORD;
    if !(min..=200).contains(&req.password.chars().count()) {
        errors.push(FieldError::new(
            "/password",
            format!("{min} to 200 characters"),
        ));
    }
    if !pec_core::addr::is_addr_spec(req.address.trim()) {
        errors.push(FieldError::new("/address", "not a mailbox address"));
    }
    let (Ok(plan), true) = (plan, errors.is_empty()) else {
        return Err(Problem::invalid(errors));
    };
    // The cheap checks first: no password is hashed for a mailbox that cannot be made.
    let provider = app.settings.hostname.to_ascii_lowercase();
    tenants::may_hold(
        app.backend.state(),
        &tenant,
        &provider,
        &req.address.trim().to_ascii_lowercase(),
    )
    .await
    .map_err(problem)?;
    let address = req.address.trim().to_ascii_lowercase();
    // A taken address is refused before its password is looked at: a tenant must not get a
    // finding recorded against another's mailbox.
    if app.backend.state().mailbox(&address).await?.is_some() {
        return Err(problem(tenants::AdminError::MailboxTaken(address)));
    }
    crate::password::check(
        &app,
        pec_ports::breach::Candidate {
            mailbox: &address,
            tenant: &tenant,
            plan,
            setting: pec_core::breach::Setting::AdminCreate,
        },
        &req.password,
    )
    .await?;
    let cost = app.settings.login_cost;
    let password = req.password;
    let hash = tokio::task::spawn_blocking(move || pec_submit::hash_password_with(&password, cost))
        .await
        .map_err(|e| Problem::unavailable(format!("password hash: {e}")))?
        .map_err(|e| Problem::unavailable(format!("password hash: {e}")))?;
    let m = tenants::create_mailbox(
        app.backend.state(),
        &Admin::Tenant(tenant.clone()),
        &tenant,
        &provider,
        &tenants::NewMailbox {
            address: req.address,
            plan,
            expansion_gb: req.expansion_gb,
            password_hash: hash,
        },
        app.now(),
    )
    .await
    .map_err(problem)?;
    tracing::info!(address = %m.address, tenant = %m.tenant, "mailbox created");
    Ok((StatusCode::CREATED, Json(mailbox_view(&m))))
}

/// `POST /v1/mailboxes/{address}/plan`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanRequest {
    /// One of the sheet's plans (`GET /v1/plans`).
    #[schema(example = "gold")]
    pub plan: String,
    /// 0 (none), 1, 3 or 5 GB on top of the plan.
    #[serde(default)]
    #[schema(maximum = 1000)]
    pub expansion_gb: u32,
}

/// An accepted plan change: in effect at once.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlanChanged {
    pub address: String,
    /// `upgrade`, `downgrade` or `unchanged`.
    pub kind: String,
    pub plan: String,
    pub expansion_gb: u32,
    pub quota_bytes: u64,
    pub features_gained: Vec<String>,
    pub features_lost: Vec<String>,
}

/// Changes a mailbox's plan: an upgrade at once; any other change only if what the mailbox
/// holds fits the new limits (`409` with the numbers otherwise).
#[utoipa::path(post, path = "/v1/mailboxes/{address}/plan", operation_id = "change_plan", tag = "administration", security(("bearer" = [])),
    params(("address" = String, Path, description = "The mailbox")),
    request_body = PlanRequest,
    responses(
        (status = 200, description = "The change, in effect", body = PlanChanged),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a tenant key with the admin scope", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such mailbox (or not the tenant's)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "What the mailbox holds does not fit the new limits", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An unknown plan or an expansion not sold", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Over the rate limit of this credential: wait Retry-After seconds", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn change_plan<B: Backend>(
    State(app): State<Arc<App<B>>>,
    headers: HeaderMap,
    Path(address): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<PlanChanged>, Problem> {
    let tenant = tenant_of(&app, &headers).await?;
    let req: PlanRequest = crate::send::json_body(&headers, &body)?;
    let to = plan::parse_plan(&req.plan).map_err(|e| problem(AdminError::Plan(e)))?;
    let admin = Admin::Tenant(tenant);
    let address = address.trim().to_ascii_lowercase();
    let c = tenants::change_plan(app.backend.state(), &admin, &address, to, req.expansion_gb)
        .await
        .map_err(problem)?;
    let names = |v: &[plan::Feature]| {
        v.iter()
            .filter_map(|f| serde_json::to_value(f).ok()?.as_str().map(str::to_string))
            .collect()
    };
    Ok(Json(PlanChanged {
        address,
        kind: serde_json::to_value(c.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        plan: c.plan.as_str().to_string(),
        expansion_gb: c.expansion_gb,
        quota_bytes: c.quota_bytes,
        features_gained: names(&c.features_gained),
        features_lost: names(&c.features_lost),
    }))
}

/// `POST /v1/mailboxes/{address}/status`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusRequest {
    /// `suspend` (with a reason), `resume` or `revoke` (final).
    #[schema(example = "suspend")]
    pub action: String,
    /// For `suspend`: `spam`, `non-payment`, `request` or `other`.
    #[schema(example = "non-payment")]
    pub reason: Option<String>,
}

/// Suspends, resumes or revokes a mailbox. Suspended and revoked mailboxes log in nowhere,
/// submit nothing, and their senders get the non-delivery notice "casella disabilitata";
/// revocation is final.
#[utoipa::path(post, path = "/v1/mailboxes/{address}/status", operation_id = "change_mailbox_status", tag = "administration", security(("bearer" = [])),
    params(("address" = String, Path, description = "The mailbox")),
    request_body = StatusRequest,
    responses(
        (status = 200, description = "The mailbox as it now is", body = MailboxAdmin),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a tenant key with the admin scope", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such mailbox (or not the tenant's)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Revoked already, or not suspended (resume)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An unknown action or reason", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Over the rate limit of this credential: wait Retry-After seconds", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn change_status<B: Backend>(
    State(app): State<Arc<App<B>>>,
    headers: HeaderMap,
    Path(address): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<MailboxAdmin>, Problem> {
    let tenant = tenant_of(&app, &headers).await?;
    let req: StatusRequest = crate::send::json_body(&headers, &body)?;
    let change = match (req.action.as_str(), req.reason.as_deref()) {
        ("suspend", Some(r)) => StatusChange::Suspend(SuspendReason::parse(r).map_err(problem)?),
        ("suspend", None) => {
            return Err(Problem::invalid(vec![FieldError::new(
                "/reason",
                "a suspension needs its reason: spam, non-payment, request or other",
            )]));
        }
        ("resume", None) => StatusChange::Resume,
        ("revoke", None) => StatusChange::Revoke,
        ("resume" | "revoke", Some(_)) => {
            return Err(Problem::invalid(vec![FieldError::new(
                "/reason",
                "only a suspension takes a reason",
            )]));
        }
        (other, _) => {
            return Err(Problem::invalid(vec![FieldError::new(
                "/action",
                format!("unknown action {other:?}: suspend, resume or revoke"),
            )]));
        }
    };
    let m = tenants::change_status(
        app.backend.state(),
        &Admin::Tenant(tenant),
        &address.trim().to_ascii_lowercase(),
        change,
        app.now(),
    )
    .await
    .map_err(problem)?;
    Ok(Json(mailbox_view(&m)))
}

// ---------------------------------------------------------------------------- domains

/// A DNS record the tenant publishes.
#[derive(Debug, Serialize, ToSchema)]
pub struct DnsRecordView {
    #[schema(example = "ordine.example.it")]
    pub name: String,
    /// `MX`, `TXT`, `CNAME`.
    #[serde(rename = "type")]
    #[schema(example = "MX")]
    pub kind: String,
    #[schema(example = "10 inbound-smtp.eu-west-1.amazonaws.com")]
    pub value: String,
}

/// One of the tenant's own domains.
#[derive(Debug, Serialize, ToSchema)]
pub struct DomainView {
    #[schema(example = "ordine.example.it")]
    pub domain: String,
    /// `pending` (publish the records, then verify), `verified` (served), `failed`.
    #[schema(example = "pending")]
    pub status: String,
    /// DKIM as the mail service last reported it.
    pub dkim_status: String,
    /// The records to publish in the domain's zone.
    pub dns: Vec<DnsRecordView>,
    pub added_at: DateTime<Utc>,
    pub checked_at: Option<DateTime<Utc>>,
    pub verified_at: Option<DateTime<Utc>>,
}

fn domain_view(d: &DomainRecord) -> DomainView {
    DomainView {
        domain: d.domain.clone(),
        status: serde_json::to_value(d.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        dkim_status: d.dkim_status.clone(),
        dns: d
            .dns
            .iter()
            .map(|r| DnsRecordView {
                name: r.name.clone(),
                kind: r.kind.clone(),
                value: r.value.clone(),
            })
            .collect(),
        added_at: d.added_at,
        checked_at: d.checked_at,
        verified_at: d.verified_at,
    }
}

/// The tenant's domains.
#[derive(Debug, Serialize, ToSchema)]
pub struct DomainList {
    pub domains: Vec<DomainView>,
}

/// `POST /v1/domains`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddDomain {
    /// Lower case, ASCII (an IDN in its `xn--` form), no trailing dot.
    #[schema(example = "ordine.example.it", max_length = 253)]
    pub domain: String,
}

/// The tenant's own domains.
#[utoipa::path(get, path = "/v1/domains", operation_id = "list_domains", tag = "administration", security(("bearer" = [])),
    responses(
        (status = 200, description = "The tenant's domains", body = DomainList),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a tenant key with the admin scope", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Over the rate limit of this credential: wait Retry-After seconds", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_domains<B: Backend>(
    State(app): State<Arc<App<B>>>,
    headers: HeaderMap,
) -> Result<Json<DomainList>, Problem> {
    let tenant = tenant_of(&app, &headers).await?;
    let domains = tenants::list_domains(app.backend.state(), &tenant)
        .await
        .map_err(problem)?;
    Ok(Json(DomainList {
        domains: domains.iter().map(domain_view).collect(),
    }))
}

/// Adds a domain of the tenant's: registered with the mail service (DKIM included), answered
/// with the DNS records to publish. Refused: the provider's own domain, another tenant's, one
/// the provider index lists under another provider. Adding it again returns it as it is.
#[utoipa::path(post, path = "/v1/domains", operation_id = "add_domain", tag = "administration", security(("bearer" = [])),
    request_body = AddDomain,
    responses(
        (status = 201, description = "Added (pending until verified): publish its records", body = DomainView),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a tenant key with the admin scope", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The provider's domain, another tenant's, or another provider's", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not a domain name as registered (capitals, trailing dot, IDN in Unicode...)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Over the rate limit of this credential: wait Retry-After seconds", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The mail service or the provider index could not be read", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn add_domain<B: Backend>(
    State(app): State<Arc<App<B>>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<DomainView>), Problem> {
    let tenant = tenant_of(&app, &headers).await?;
    let req: AddDomain = crate::send::json_body(&headers, &body)?;
    // Checked before anything is read: a bad name never costs a call.
    pec_core::domain::check(&req.domain).map_err(|e| problem(AdminError::Domain(e)))?;
    let s = &app.settings;
    let ldif = app
        .backend
        .objects()
        .get(&s.evidence_bucket, &s.provider_index_key)
        .await?
        .ok_or_else(|| {
            Problem::unavailable("the provider index is missing: domains cannot be checked")
        })?;
    let index = pec_smime::ProviderIndex::from_ldif(&ldif)
        .map_err(|e| Problem::unavailable(format!("the provider index: {e}")))?;
    let provider_domain = s.hostname.to_ascii_lowercase();
    let policy = DomainPolicy {
        dmarc_reports: Some(format!("dmarc@{provider_domain}")),
        provider_domain,
    };
    let record = tenants::add_domain(
        app.backend.state(),
        app.backend.identities(),
        Some(&index),
        &policy,
        &tenant,
        &req.domain,
        app.now(),
    )
    .await
    .map_err(problem)?;
    Ok((StatusCode::CREATED, Json(domain_view(&record))))
}

/// Asks the mail service whether the domain's records are in place and records the answer.
#[utoipa::path(post, path = "/v1/domains/{domain}/verify", operation_id = "verify_domain", tag = "administration", security(("bearer" = [])),
    params(("domain" = String, Path, description = "The domain")),
    responses(
        (status = 200, description = "The domain with its status now", body = DomainView),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a tenant key with the admin scope", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such domain (or not the tenant's)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Over the rate limit of this credential: wait Retry-After seconds", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The mail service did not answer", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn verify_domain<B: Backend>(
    State(app): State<Arc<App<B>>>,
    headers: HeaderMap,
    Path(domain): Path<String>,
) -> Result<Json<DomainView>, Problem> {
    let tenant = tenant_of(&app, &headers).await?;
    let record = tenants::verify_domain(
        app.backend.state(),
        app.backend.identities(),
        &tenant,
        &path_domain(&domain),
        app.now(),
    )
    .await
    .map_err(problem)?;
    Ok(Json(domain_view(&record)))
}

/// Removes a domain (its mail-service identity too); refused while mailboxes are in it.
#[utoipa::path(delete, path = "/v1/domains/{domain}", operation_id = "remove_domain", tag = "administration", security(("bearer" = [])),
    params(("domain" = String, Path, description = "The domain")),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a tenant key with the admin scope", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such domain (or not the tenant's)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Mailboxes are still in it", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Over the rate limit of this credential: wait Retry-After seconds", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The mail service did not answer", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn remove_domain<B: Backend>(
    State(app): State<Arc<App<B>>>,
    headers: HeaderMap,
    Path(domain): Path<String>,
) -> Result<StatusCode, Problem> {
    let tenant = tenant_of(&app, &headers).await?;
    tenants::remove_domain(
        app.backend.state(),
        app.backend.identities(),
        &tenant,
        &path_domain(&domain),
    )
    .await
    .map_err(problem)?;
    Ok(StatusCode::NO_CONTENT)
}
