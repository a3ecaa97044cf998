//! Mass sending over HTTP (issue #19): make a job from a list and templates, follow it, read its
//! report (CSV), pause, resume or cancel it. The same `pec_pipeline::bulk` as `pec bulk`; the
//! rows are submitted by the bulk function, never by the API.
//!
//! A mailbox user sees and makes jobs of its own mailbox; a tenant API key, of its tenant's
//! mailboxes (`send` to make and steer them, `read` to follow them). Another tenant's job is
//! `404`, as if it did not exist.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use chrono::{DateTime, Utc};
use pec_bulk::Templates;
use pec_bulk::message::Attachment;
use pec_pipeline::bulk::{Bulk, BulkError, BulkSettings, NewJob};
use pec_ports::access::Scope;
use pec_ports::bulk::{JobRecord, JobStatus, JobStore};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::{Principal, principal};
use crate::problem::FieldError;
use crate::send::json_body;
use crate::{App, Backend, Problem};

/// A file: its name and its bytes (base64, standard alphabet, padded).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InlineFile {
    #[schema(example = "clienti.csv")]
    pub filename: String,
    /// Its media type (attachments only; the list's type comes from its name).
    #[serde(default)]
    pub content_type: Option<String>,
    pub content: String,
}

/// A job to make.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewBulkJob {
    /// The sending mailbox (a plan with mass sending). Defaults to the logged-in mailbox.
    pub from: Option<String>,
    pub from_name: Option<String>,
    /// The job's name: its folder in the sender's mailbox is `Invii massivi/<name> (<id>)`.
    pub name: String,
    /// The list: `.csv` or `.xlsx` with a header row; each column is a template parameter.
    pub list: InlineFile,
    /// The column holding the addresses (default: the one named PEC, Email, Indirizzo...).
    pub address_column: Option<String>,
    /// With parameters: `Sollecito per {{ Nome }}`.
    pub subject: String,
    pub text: Option<String>,
    /// HTML body: parameter values are HTML-escaped.
    pub html: Option<String>,
    /// `completa` (default), `breve` or `sintetica`.
    #[serde(default)]
    pub receipt: Option<String>,
    /// Files every message carries.
    #[serde(default)]
    pub attachments: Vec<InlineFile>,
    /// Rows submitted per minute at most (default 600).
    pub per_minute: Option<u32>,
    /// Check and preview only: nothing is stored or sent.
    #[serde(default)]
    pub dry_run: bool,
}

/// A row set aside before sending.
#[derive(Debug, Serialize, ToSchema)]
pub struct SetAside {
    pub row: usize,
    pub address: String,
    pub reason: String,
}

/// One row rendered.
#[derive(Debug, Serialize, ToSchema)]
pub struct Preview {
    pub row: usize,
    pub to: String,
    pub subject: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// A job.
#[derive(Debug, Serialize, ToSchema)]
pub struct BulkJob {
    /// `null` for a dry run.
    pub id: Option<String>,
    pub name: String,
    pub sender: String,
    /// `running`, `paused`, `submitted` (every row submitted), `cancelled`; `dry-run`.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
    /// Rows to send.
    pub rows: usize,
    /// Rows set aside (listed when the job is made; in the report afterwards).
    pub skipped: usize,
    /// Rows submitted so far.
    pub submitted: usize,
    pub folder: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub set_aside: Vec<SetAside>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub preview: Vec<Preview>,
}

/// The most rows a job made over HTTP may have: the request stores every chunk and hands it
/// out before it answers, inside API Gateway's 29 s. Larger lists: `pec bulk send`.
pub const MAX_API_ROWS: usize = 10_000;

fn settings<B: Backend>(app: &App<B>) -> Result<BulkSettings, Problem> {
    let queue_url = app.settings.bulk_queue_url.clone().ok_or_else(|| {
        Problem::unavailable("mass sending is not configured here (PEC_BULK_QUEUE_URL)")
    })?;
    Ok(BulkSettings {
        raw_bucket: app.settings.raw_bucket.clone(),
        evidence_bucket: app.settings.evidence_bucket.clone(),
        queue_url,
        hostname: app.settings.hostname.clone(),
        max_rows: MAX_API_ROWS,
        chunk_rows: pec_bulk::job::DEFAULT_CHUNK_ROWS,
        max_message_bytes: app.settings.max_message_bytes,
    })
}

fn decode(pointer: &str, f: &InlineFile) -> Result<Vec<u8>, FieldError> {
    base64::engine::general_purpose::STANDARD
        .decode(f.content.as_bytes())
        .map_err(|e| FieldError::new(format!("{pointer}/content"), format!("not base64: {e}")))
}

fn refused(e: BulkError) -> Problem {
    match e {
        BulkError::Step(e) => Problem::unavailable(e),
        BulkError::Refused(why) if why.starts_with("no mailbox") => Problem::not_found(why),
        BulkError::Refused(why) if why.contains("does not include mass sending") => {
            Problem::forbidden("plan-lacks-mass-sending", why)
        }
        other => Problem::invalid(vec![FieldError::new("/", other.to_string())]),
    }
}

/// The job if the caller may see it (`404` otherwise).
async fn visible<B: Backend>(
    app: &App<B>,
    who: &Principal,
    id: &str,
) -> Result<JobRecord, Problem> {
    let missing = || Problem::not_found(format!("no job {id:?}"));
    if !pec_bulk::job::valid_job_id(id) {
        return Err(missing());
    }
    let job = app.backend.jobs().job(id).await?.ok_or_else(missing)?;
    if !who.sees(&job.sender, &job.tenant) {
        return Err(missing());
    }
    Ok(job)
}

async fn view<B: Backend>(app: &App<B>, job: JobRecord) -> Result<BulkJob, Problem> {
    let submitted = app
        .backend
        .jobs()
        .claims(&job.id)
        .await?
        .iter()
        .filter(|c| c.submitted)
        .count();
    let status = if job.status == JobStatus::Running && submitted >= job.rows {
        "submitted"
    } else {
        job.status.as_str()
    };
    Ok(BulkJob {
        folder: Some(pec_bulk::job::job_folder(&job.name, &job.id)),
        id: Some(job.id),
        name: job.name,
        sender: job.sender,
        status: status.into(),
        reason: job.reason,
        created_at: job.created_at,
        rows: job.rows,
        skipped: job.skipped,
        submitted,
        set_aside: Vec::new(),
        preview: Vec::new(),
    })
}

/// Make a mass-sending job.
#[utoipa::path(post, path = "/v1/bulk-jobs", operation_id = "create_bulk_job", tag = "bulk", security(("bearer" = [])),
    request_body(content = NewBulkJob, content_type = "application/json"),
    responses(
        (status = 201, description = "The job, handed to the bulk function", body = BulkJob),
        (status = 200, description = "A dry run: what would be sent", body = BulkJob),
        (status = 400, description = "Malformed request", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Over the rate limit of this credential: wait Retry-After seconds", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Over the size limit", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing scope, or the mailbox's plan has no mass sending", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such mailbox (or not yours)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The list or the templates cannot be used (nothing was stored)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Mass sending is not configured, or a store failed", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create<B: Backend>(
    State(app): State<Arc<App<B>>>,
    headers: HeaderMap,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, Problem> {
    let who = principal(&app, &headers).await?;
    who.require(Scope::Send)?;
    let body =
        body.map_err(|e| Problem::too_large(format!("the request body was refused: {e}")))?;
    let req: NewBulkJob = json_body(&headers, &body)?;
    let sender = match (&req.from, &who) {
        (Some(f), _) => f.trim().to_ascii_lowercase(),
        (None, Principal::Mailbox { address, .. }) => address.clone(),
        (None, Principal::Key { .. }) => {
            return Err(Problem::invalid(vec![FieldError::new(
                "/from",
                "with an API key, say which mailbox sends",
            )]));
        }
    };
    if let Principal::Mailbox { address, .. } = &who
        && !address.eq_ignore_ascii_case(&sender)
    {
        return Err(Problem::not_found(format!("no mailbox {sender}")));
    }
    let mut errors = Vec::new();
    let list = decode("/list", &req.list).map_err(|e| errors.push(e)).ok();
    let mut attachments = Vec::new();
    for (i, a) in req.attachments.iter().enumerate() {
        let pointer = format!("/attachments/{i}");
        let content_type = a.content_type.clone().unwrap_or_default();
        if !crate::send::valid_media_type(&content_type) {
            errors.push(FieldError::new(
                format!("{pointer}/content_type"),
                "a media type (type/subtype) is needed",
            ));
        }
        if a.filename.trim().is_empty()
            || a.filename.contains(['/', '\\'])
            || a.filename.chars().any(char::is_control)
        {
            errors.push(FieldError::new(
                format!("{pointer}/filename"),
                "a file name without folders or control characters is needed",
            ));
        }
        match decode(&pointer, a) {
            Ok(bytes) => attachments.push(Attachment {
                filename: a.filename.clone(),
                content_type,
                bytes,
            }),
            Err(e) => errors.push(e),
        }
    }
    if let Some(n) = &req.from_name
        && n.chars().any(char::is_control)
    {
        errors.push(FieldError::new(
            "/from_name",
            "one line, no control characters",
        ));
    }
    let (Some(list), true) = (list, errors.is_empty()) else {
        return Err(Problem::invalid(errors));
    };
    let settings = settings(&app)?;
    let bulk = Bulk {
        objects: app.backend.objects(),
        state: app.backend.state(),
        jobs: app.backend.jobs(),
        queue: app.backend.queue(),
        settings: &settings,
    };
    let mut random = [0u8; 8];
    getrandom::fill(&mut random).map_err(|e| Problem::unavailable(format!("randomness: {e}")))?;
    let dry_run = req.dry_run;
    let (job, plan) = bulk
        .create(
            NewJob {
                sender,
                sender_name: req.from_name,
                name: req.name,
                list_name: req.list.filename,
                list,
                address_column: req.address_column,
                templates: Templates {
                    subject: req.subject,
                    text: req.text,
                    html: req.html,
                },
                receipt: req.receipt.unwrap_or_else(|| "completa".into()),
                attachments,
                per_minute: req.per_minute,
                dry_run,
            },
            Some(who.tenant()),
            app.now(),
            random,
        )
        .await
        .map_err(refused)?;
    let mut out = if dry_run {
        BulkJob {
            id: None,
            name: job.name,
            sender: job.sender,
            status: "dry-run".into(),
            reason: None,
            created_at: job.created_at,
            rows: job.rows,
            skipped: job.skipped,
            submitted: 0,
            folder: None,
            set_aside: Vec::new(),
            preview: Vec::new(),
        }
    } else {
        view(&app, job).await?
    };
    out.set_aside = plan
        .skipped
        .into_iter()
        .map(|s| SetAside {
            row: s.row,
            address: s.address,
            reason: s.reason,
        })
        .collect();
    out.preview = plan
        .preview
        .into_iter()
        .map(|(row, to, r)| Preview {
            row,
            to,
            subject: r.subject,
            text: r.text,
        })
        .collect();
    let status = if dry_run {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let location = out.id.as_ref().map(|id| format!("/v1/bulk-jobs/{id}"));
    let mut response = (status, Json(out)).into_response();
    if let Some(v) = location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

/// Where a job stands.
#[utoipa::path(get, path = "/v1/bulk-jobs/{id}", operation_id = "get_bulk_job", tag = "bulk", security(("bearer" = [])),
    params(("id" = String, Path, description = "The job id")),
    responses(
        (status = 200, description = "The job", body = BulkJob),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Over the rate limit of this credential: wait Retry-After seconds", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing scope", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such job (or not yours)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "A store failed", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn status<B: Backend>(
    State(app): State<Arc<App<B>>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<BulkJob>, Problem> {
    let who = principal(&app, &headers).await?;
    who.require(Scope::Read)?;
    let job = visible(&app, &who, &id).await?;
    Ok(Json(view(&app, job).await?))
}

/// `?failures=true` keeps the rows not delivered.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReportQuery {
    #[serde(default)]
    pub failures: bool,
}

/// The report: one CSV line per row of the list (row, address, kind, submission id, times,
/// outcome, the reason in words).
#[utoipa::path(get, path = "/v1/bulk-jobs/{id}/report", operation_id = "bulk_job_report", tag = "bulk", security(("bearer" = [])),
    params(("id" = String, Path, description = "The job id"), ReportQuery),
    responses(
        (status = 200, description = "The report", body = String, content_type = "text/csv"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Over the rate limit of this credential: wait Retry-After seconds", body = Problem, content_type = "application/problem+json"),
        (status = 400, description = "Malformed query", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing scope", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such job (or not yours)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Mass sending is not configured, or a store failed", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn report<B: Backend>(
    State(app): State<Arc<App<B>>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    query: Result<Query<ReportQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    let who = principal(&app, &headers).await?;
    who.require(Scope::Read)?;
    let Query(q) = query.map_err(|e| Problem::bad_request("bad-query", e.body_text()))?;
    let job = visible(&app, &who, &id).await?;
    let settings = settings(&app)?;
    let bulk = Bulk {
        objects: app.backend.objects(),
        state: app.backend.state(),
        jobs: app.backend.jobs(),
        queue: app.backend.queue(),
        settings: &settings,
    };
    let lines = bulk.report(&job.id).await.map_err(refused)?;
    let csv = pec_bulk::report::to_csv(&lines, q.failures);
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{}.csv\"", job.id),
            ),
        ],
        csv,
    )
        .into_response())
}

/// Pause, resume or cancel.
#[derive(Debug, Clone, Copy)]
enum Action {
    Pause,
    Resume,
    Cancel,
}

/// Pause a job (`resume` goes on from where it stopped), resume it, or cancel it for good.
#[utoipa::path(post, path = "/v1/bulk-jobs/{id}/{action}", operation_id = "steer_bulk_job", tag = "bulk", security(("bearer" = [])),
    params(("id" = String, Path, description = "The job id"), ("action" = String, Path, description = "`pause`, `resume` or `cancel`")),
    responses(
        (status = 200, description = "The job after the change", body = BulkJob),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Over the rate limit of this credential: wait Retry-After seconds", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing scope", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such job (or not yours), or no such action", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The job was cancelled, or a resume of a job not paused", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Mass sending is not configured, or a store failed", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn steer<B: Backend>(
    State(app): State<Arc<App<B>>>,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
) -> Result<Json<BulkJob>, Problem> {
    let who = principal(&app, &headers).await?;
    who.require(Scope::Send)?;
    let action = match action.as_str() {
        "pause" => Action::Pause,
        "resume" => Action::Resume,
        "cancel" => Action::Cancel,
        other => {
            return Err(Problem::not_found(format!(
                "no action {other:?}: pause, resume or cancel"
            )));
        }
    };
    let job = visible(&app, &who, &id).await?;
    let now = app.now();
    let cancelled = || Problem::conflict("job-cancelled", format!("job {id} was cancelled"));
    let jobs = app.backend.jobs();
    match action {
        Action::Pause => {
            if !jobs
                .set_status(
                    &job.id,
                    JobStatus::Paused,
                    Some("paused by the sender"),
                    now,
                )
                .await?
            {
                return Err(cancelled());
            }
        }
        Action::Cancel => {
            if !jobs
                .set_status(
                    &job.id,
                    JobStatus::Cancelled,
                    Some("cancelled by the sender"),
                    now,
                )
                .await?
            {
                return Err(cancelled());
            }
        }
        Action::Resume => {
            // Only a paused job: a running one has its chunks out already (a second copy of
            // each would only wait in the queue).
            if job.status != JobStatus::Paused {
                return Err(match job.status {
                    JobStatus::Cancelled => cancelled(),
                    _ => Problem::conflict(
                        "job-not-paused",
                        format!(
                            "job {id} is {}: only a paused job is resumed",
                            job.status.as_str()
                        ),
                    ),
                });
            }
            let settings = settings(&app)?;
            let bulk = Bulk {
                objects: app.backend.objects(),
                state: app.backend.state(),
                jobs,
                queue: app.backend.queue(),
                settings: &settings,
            };
            bulk.resume(&job.id, now).await.map_err(|e| match e {
                BulkError::Refused(why) if why.contains("cancelled") => cancelled(),
                other => refused(other),
            })?;
        }
    }
    let job = visible(&app, &who, &id).await?;
    Ok(Json(view(&app, job).await?))
}
