//! Members over HTTP (issue #14 over issue #13's `pec_pipeline::tenants`): a members table
//! (CSV or `.xlsx`, as `pec mailbox import` reads it) becomes mailboxes with one-time
//! activation links, and a member who lost the link gets a new one. A tenant key with the
//! `admin` scope only.
//!
//! **Within a request's time.** An import answers within
//! [`crate::Settings::import_budget`] (API Gateway gives a request 29 s): it works through the
//! rows in order and, when the time is up, answers with what it did and `complete: false`.
//! Posting the same table again goes on from there: an import is idempotent (members already
//! made are `existing`, a member an interrupted run left half done is finished), so a client
//! repeats the request until `complete` is `true`.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use chrono::{DateTime, Utc};
use pec_core::plan;
use pec_pipeline::tenants::{self, Admin, ImportRow, ImportSettings};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::admin::{problem, tenant_of};
use crate::problem::FieldError;
use crate::{App, Backend, Problem, random_token};

/// The largest members table accepted: what a request through API Gateway and Lambda can carry
/// (6 MB, binary bodies base64-encoded). About 40,000 members as CSV; split larger tables.
pub const MAX_TABLE_BYTES: usize = 4 * 1024 * 1024;

/// Members handled between two looks at the clock.
const CHUNK: usize = 10;

/// The media type of an `.xlsx` workbook.
pub const XLSX: &str = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";

/// `POST /v1/members/import` query.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ImportQuery {
    /// The domain of the new addresses: a verified domain of the tenant, or the provider's.
    #[param(example = "ordine.example.it")]
    pub domain: String,
    /// The address pattern: `nome`, `cognome`, `n`, `c` joined by `.`, `-` or `_`.
    #[param(example = "nome.cognome")]
    pub pattern: Option<String>,
    /// The plan of rows without one (`standard` unless given).
    pub plan: Option<String>,
    /// Days an activation link works (1 to 30, 7 unless given).
    #[param(minimum = 1, maximum = 30)]
    pub valid_days: Option<u32>,
    /// Go on from this row (the `next_row` of the previous answer): the rows before it are
    /// not looked at again.
    #[param(minimum = 2)]
    pub from_row: Option<usize>,
}

/// One row of an import's report.
#[derive(Debug, Serialize, ToSchema)]
pub struct ImportLine {
    /// The row in the table (1 is the header).
    pub row: usize,
    pub fiscal_code: String,
    /// The member's mailbox (empty for a refused row).
    pub address: String,
    /// `created`, `completed` (an earlier interrupted import finished now), `existing`
    /// (imported before: nothing done), `refused` (see `reason`), `mail-failed` (the mailbox
    /// exists; the link could not be sent: post the table again without `from_row`, or ask
    /// for a new link with `POST /v1/mailboxes/{address}/activation`).
    pub outcome: String,
    pub reason: String,
}

/// What an import did.
#[derive(Debug, Serialize, ToSchema)]
pub struct ImportReport {
    /// `false`: the request's time ran out; post the same table again to go on.
    pub complete: bool,
    /// Rows not reached in this request.
    pub rows_left: usize,
    /// The first row not reached: send it as `from_row` with the same table (`null` when
    /// complete).
    pub next_row: Option<usize>,
    pub created: usize,
    pub completed: usize,
    pub existing: usize,
    pub refused: usize,
    pub mail_failed: usize,
    /// Row by row, in table order: the rows this request covered (from `from_row` up to
    /// `next_row`), refused ones included.
    pub rows: Vec<ImportLine>,
}

fn link_settings<B: Backend>(
    app: &App<B>,
    domain: String,
    pattern: pec_members::AddressPattern,
    valid_days: u32,
) -> Result<ImportSettings, Problem> {
    let url = app.settings.activation_url.clone().ok_or_else(|| {
        Problem::unavailable(
            "members cannot be sent activation links: this deployment has no activation page \
             (PEC_ACTIVATION_URL)",
        )
    })?;
    Ok(ImportSettings {
        domain,
        pattern,
        provider_domain: app.settings.hostname.to_ascii_lowercase(),
        activation_url: url,
        activation_valid: chrono::Duration::days(i64::from(valid_days)),
    })
}

/// Imports members from a table: each valid row gets a mailbox (address from the pattern, the
/// next free number on a collision) and an activation link sent to its contact address; no
/// password is made or sent. Rows with mistakes are refused one by one with their reasons;
/// the others go on.
#[utoipa::path(post, path = "/v1/members/import", operation_id = "import_members", tag = "administration", security(("bearer" = [])),
    params(ImportQuery),
    request_body(description = "The members table: a header row (Nome, Cognome, Codice fiscale, E-mail, Cellulare, Piano; Italian or English names) and one member per row", content(
        (String = "text/csv", example = "Nome;Cognome;Codice fiscale;E-mail;Cellulare;Piano\r\nMario;Rossi;RSSMRA80A01H501U;mario.rossi@example.it;+393331234567;standard\r\n"),
        (Vec<u8> = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
    )),
    responses(
        (status = 200, description = "What was done, row by row; `complete: false` asks for the same request again", body = ImportReport),
        (status = 400, description = "The table cannot be read (not CSV or .xlsx, no header, a column missing or twice)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a tenant key with the admin scope", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "A table over 4 MiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Neither text/csv nor an .xlsx workbook", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not a verified domain of the tenant, an unknown plan or pattern, a link validity out of range", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Over the rate limit of this credential: wait Retry-After seconds", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "No activation page configured, or a store failed (nothing half made: post again)", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn import<B: Backend>(
    State(app): State<Arc<App<B>>>,
    headers: HeaderMap,
    query: Result<Query<ImportQuery>, axum::extract::rejection::QueryRejection>,
    body: axum::body::Bytes,
) -> Result<Json<ImportReport>, Problem> {
    let started = Instant::now();
    let tenant = tenant_of(&app, &headers).await?;
    let Query(q) =
        query.map_err(|e| Problem::invalid(vec![FieldError::new("/query", e.body_text())]))?;
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let file_name = match media.as_str() {
        "text/csv" | "text/plain" => "members.csv",
        XLSX => "members.xlsx",
        _ => {
            return Err(Problem::unsupported_media(format!(
                "send the table as text/csv or as {XLSX}"
            )));
        }
    };
    if body.len() > MAX_TABLE_BYTES {
        return Err(Problem::too_large(format!(
            "the table has {} bytes; at most {MAX_TABLE_BYTES}: split it",
            body.len()
        )));
    }
    let mut errors = Vec::new();
    let default_plan = plan::parse_plan(q.plan.as_deref().unwrap_or("standard"))
        .map_err(|e| errors.push(FieldError::new("/plan", e.to_string())));
    let pattern = q
        .pattern
        .as_deref()
        .unwrap_or("nome.cognome")
        .parse::<pec_members::AddressPattern>()
        .map_err(|e| errors.push(FieldError::new("/pattern", e.to_string())));
    let valid_days = q.valid_days.unwrap_or(7);
    if !(1..=30).contains(&valid_days) {
        errors.push(FieldError::new("/valid_days", "1 to 30"));
    }
    let domain = crate::admin::path_domain(&q.domain);
    if let Err(e) = pec_core::domain::check(&domain) {
        errors.push(FieldError::new("/domain", e.to_string()));
    }
    let (Ok(default_plan), Ok(pattern), true) = (default_plan, pattern, errors.is_empty()) else {
        return Err(Problem::invalid(errors));
    };
    let table = pec_members::table::read(file_name, &body)
        .map_err(|e| Problem::bad_request("unreadable-table", e.to_string()))?;
    let (mut members, mut refused) = pec_members::members(&table, default_plan)
        .map_err(|e| Problem::bad_request("unreadable-table", e.to_string()))?;
    // Rows an earlier request handled (duplicates are still told against the whole table).
    let from = q.from_row.unwrap_or(0);
    members.retain(|m| m.row >= from);
    refused.retain(|r| r.row >= from);
    let settings = link_settings(&app, domain, pattern, valid_days)?;
    let now = app.now();
    // Every link's secret made before anything is written (a member takes at most one): no
    // member is ever sent a link the random source could not make.
    let mut pool = (0..members.len())
        .map(|_| random_token())
        .collect::<Result<Vec<_>, _>>()?;
    let mut tokens = move || pool.pop().unwrap_or_default();
    let mut rows: Vec<ImportRow> = Vec::new();
    let mut done = 0;
    for (i, chunk) in members.chunks(CHUNK).enumerate() {
        if i > 0 && started.elapsed() >= app.settings.import_budget {
            break;
        }
        let part = tenants::import_members(
            app.backend.state(),
            app.backend.transport(),
            &tenant,
            &settings,
            chunk,
            &[],
            now,
            &mut tokens,
            &mut |_| {},
        )
        .await
        .map_err(problem)?;
        done += chunk.len();
        rows.extend(part);
    }
    // The refused rows among those this request covered: a resumed request reports each once.
    let next_row = members.get(done).map(|m| m.row);
    rows.extend(
        refused
            .iter()
            .filter(|r| next_row.is_none_or(|n| r.row < n))
            .map(ImportRow::refused),
    );
    rows.sort_by_key(|r| r.row);
    let count = |o: &str| rows.iter().filter(|r| r.outcome == o).count();
    let report = ImportReport {
        complete: done == members.len(),
        rows_left: members.len() - done,
        next_row,
        created: count("created"),
        completed: count("completed"),
        existing: count("existing"),
        refused: count("refused"),
        mail_failed: count("mail-failed"),
        rows: rows
            .into_iter()
            .map(|r| ImportLine {
                row: r.row,
                fiscal_code: r.fiscal_code,
                address: r.address,
                outcome: r.outcome.to_string(),
                reason: r.reason,
            })
            .collect(),
    };
    tracing::info!(
        tenant = %tenant, created = report.created, existing = report.existing,
        refused = report.refused, rows_left = report.rows_left, "members imported"
    );
    Ok(Json(report))
}

/// `POST /v1/mailboxes/{address}/activation`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResendActivation {
    /// Days the new link works (1 to 30, 7 unless given).
    #[schema(minimum = 1, maximum = 30)]
    pub valid_days: Option<u32>,
}

/// Where the new link went.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActivationSent {
    pub address: String,
    /// The member's contact address.
    pub email: String,
    pub expires_at: DateTime<Utc>,
}

/// Sends a member a new activation link for an imported mailbox not activated yet (the first
/// expired or was lost); the link sent before stops working.
#[utoipa::path(post, path = "/v1/mailboxes/{address}/activation", operation_id = "resend_activation", tag = "administration", security(("bearer" = [])),
    params(("address" = String, Path, description = "The mailbox")),
    request_body = ResendActivation,
    responses(
        (status = 202, description = "A new link is on its way to the member", body = ActivationSent),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a tenant key with the admin scope", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such mailbox (or not the tenant's)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Activated already, revoked, or not made by a member import", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A link validity out of range", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Over the rate limit of this credential: wait Retry-After seconds", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "No activation page configured, or the mail could not be sent (the old link still works)", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn resend_activation<B: Backend>(
    State(app): State<Arc<App<B>>>,
    headers: HeaderMap,
    Path(address): Path<String>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<ActivationSent>), Problem> {
    let tenant = tenant_of(&app, &headers).await?;
    let req: ResendActivation = if body.is_empty() {
        ResendActivation::default()
    } else {
        crate::send::json_body(&headers, &body)?
    };
    let valid_days = req.valid_days.unwrap_or(7);
    if !(1..=30).contains(&valid_days) {
        return Err(Problem::invalid(vec![FieldError::new(
            "/valid_days",
            "1 to 30",
        )]));
    }
    let settings = link_settings(
        &app,
        String::new(),
        pec_members::AddressPattern::default(),
        valid_days,
    )?;
    let mut token = Some(random_token()?);
    let mut tokens = move || token.take().unwrap_or_default();
    let r = tenants::reissue_activation(
        app.backend.state(),
        app.backend.transport(),
        &Admin::Tenant(tenant),
        &address.trim().to_ascii_lowercase(),
        &settings,
        app.now(),
        &mut tokens,
    )
    .await
    .map_err(problem)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(ActivationSent {
            address: r.address,
            email: r.email,
            expires_at: r.expires_at,
        }),
    ))
}
