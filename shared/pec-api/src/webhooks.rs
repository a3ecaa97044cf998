//! Webhook subscriptions, their delivery log and replay (tenant API keys with the `webhooks`
//! scope; a mailbox session answers `403`).
//!
//! A subscription names an `https://` URL and the event types it wants (`*` for all); its
//! signing secret (`whsec_…`, the Standard Webhooks form) is shown once, at creation. The
//! webhooks step (`pec_pipeline::webhooks`) posts each integration event of the tenant's
//! mailboxes to it, signed, retrying for over 24 hours; a delivery that exhausted its retries
//! is parked and can be replayed here.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Utc};
use pec_core::events::EventType;
use pec_ports::QueueSender;
use pec_ports::access::Scope;
use pec_ports::webhooks::{
    AttemptRequest, Delivery, DeliveryStatus, Subscription, WebhookStore, attempt_message,
    check_url, delivery_id,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::{Principal, principal};
use crate::problem::FieldError;
use crate::{App, Backend, Problem};

/// At most this many subscriptions per tenant.
pub const MAX_SUBSCRIPTIONS: usize = 25;

/// `POST /v1/webhooks`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// Where events are posted: `https://` on a public address.
    #[schema(example = "https://erp.example.it/pec/events", max_length = 2048)]
    pub url: String,
    /// The event types wanted (`pec.message.accepted`, ...), or `["*"]` (the default) for all.
    #[serde(default)]
    pub events: Option<Vec<String>>,
}

/// A subscription (its secret is shown only when it is created).
#[derive(Debug, Serialize, ToSchema)]
pub struct Webhook {
    #[schema(example = "wh_0f1e2d3c4b5a6978")]
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    pub created_at: DateTime<Utc>,
}

/// A new subscription with its signing secret: keep it, it is not shown again.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedWebhook {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    pub created_at: DateTime<Utc>,
    /// The Standard Webhooks secret: verify `webhook-signature` with it.
    #[schema(example = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")]
    pub secret: String,
}

/// The tenant's subscriptions.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookList {
    pub webhooks: Vec<Webhook>,
}

/// One attempt of a delivery.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryAttempt {
    pub at: DateTime<Utc>,
    /// The endpoint's HTTP status, if it answered.
    pub status: Option<u16>,
    /// Why the attempt failed (a non-2xx status, a refused or timed-out connection).
    pub error: Option<String>,
    pub duration_ms: u64,
}

/// One event for one subscription, with every attempt made.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookDelivery {
    /// Also the `webhook-id` header of every attempt.
    pub id: String,
    pub event_id: String,
    pub event_type: String,
    /// `pending` (an attempt is scheduled or running), `delivered`, `parked` (every attempt
    /// failed: replayable) or `cancelled` (the subscription was deleted).
    #[schema(example = "delivered")]
    pub status: String,
    pub attempts: u32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub log: Vec<DeliveryAttempt>,
}

/// A subscription's deliveries, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryList {
    pub deliveries: Vec<WebhookDelivery>,
}

/// How many deliveries.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveryQuery {
    /// At most this many (1 to 100, default 50).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
}

fn view(s: &Subscription) -> Webhook {
    Webhook {
        id: s.id.clone(),
        url: s.url.clone(),
        events: s.events.clone(),
        created_at: s.created_at,
    }
}

fn delivery_view(d: &Delivery) -> WebhookDelivery {
    WebhookDelivery {
        id: d.id.clone(),
        event_id: d.event_id.clone(),
        event_type: d.event_type.clone(),
        status: d.status.as_str().to_string(),
        attempts: d.attempts,
        next_attempt_at: d.next_attempt_at,
        created_at: d.created_at,
        log: d
            .log
            .iter()
            .map(|a| DeliveryAttempt {
                at: a.at,
                status: a.status,
                error: a.error.clone(),
                duration_ms: a.duration_ms,
            })
            .collect(),
    }
}

/// The caller's tenant, if it may manage webhooks.
async fn tenant_of<B: Backend>(app: &App<B>, headers: &HeaderMap) -> Result<String, Problem> {
    let who = principal(app, headers).await?;
    who.require(Scope::Webhooks)?;
    match who {
        Principal::Key { tenant, .. } => Ok(tenant),
        Principal::Mailbox { .. } => Err(Problem::forbidden(
            "missing-scope",
            "webhooks are managed with a tenant API key",
        )),
    }
}

/// The tenant's subscription `id`; `404` for another tenant's.
async fn owned<B: Backend>(app: &App<B>, tenant: &str, id: &str) -> Result<Subscription, Problem> {
    match app.backend.hooks().subscription(id).await? {
        Some(s) if s.tenant == tenant => Ok(s),
        _ => Err(Problem::not_found(format!("no webhook {id:?}"))),
    }
}

fn random_hex(n: usize) -> Result<String, Problem> {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes).map_err(|e| Problem::unavailable(format!("no randomness: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn new_secret() -> Result<String, Problem> {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| Problem::unavailable(format!("no randomness: {e}")))?;
    Ok(format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    ))
}

/// Checks the requested event types: `*` or known ones, no duplicates.
fn event_types(requested: Option<Vec<String>>) -> Result<Vec<String>, FieldError> {
    let requested = requested.unwrap_or_else(|| vec!["*".to_string()]);
    if requested.is_empty() {
        return Err(FieldError::new(
            "/events",
            "name at least one event type, or \"*\"",
        ));
    }
    let mut out: Vec<String> = Vec::new();
    for (i, e) in requested.into_iter().enumerate() {
        let known = e == "*" || EventType::ALL.iter().any(|t| t.detail_type() == e);
        if !known {
            let all: Vec<&str> = EventType::ALL.iter().map(|t| t.detail_type()).collect();
            return Err(FieldError::new(
                format!("/events/{i}"),
                format!(
                    "unknown event type {e:?}: one of {}, or \"*\"",
                    all.join(", ")
                ),
            ));
        }
        if !out.contains(&e) {
            out.push(e);
        }
    }
    Ok(out)
}

/// Subscribe an endpoint to the tenant's events.
#[utoipa::path(post, path = "/v1/webhooks", operation_id = "create_webhook", tag = "webhooks", security(("bearer" = [])),
    request_body = CreateWebhook,
    responses(
        (status = 201, description = "Subscribed; the secret is shown only now", body = CreatedWebhook),
        (status = 400, description = "Malformed request", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a tenant key with the webhooks scope", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The tenant has the most subscriptions allowed", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid URL or event type", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Over the rate limit of this credential: wait Retry-After seconds", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create<B: Backend>(
    State(app): State<Arc<App<B>>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<CreatedWebhook>), Problem> {
    let tenant = tenant_of(&app, &headers).await?;
    let req: CreateWebhook = crate::send::json_body(&headers, &body)?;
    let mut errors = Vec::new();
    if let Err(e) = check_url(&req.url, app.settings.webhook_private_targets) {
        errors.push(FieldError::new("/url", e));
    }
    let events = event_types(req.events).unwrap_or_else(|e| {
        errors.push(e);
        Vec::new()
    });
    if !errors.is_empty() {
        return Err(Problem::invalid(errors));
    }
    let hooks = app.backend.hooks();
    if hooks.subscriptions(&tenant).await?.len() >= MAX_SUBSCRIPTIONS {
        return Err(Problem::conflict(
            "too-many-webhooks",
            format!("a tenant has at most {MAX_SUBSCRIPTIONS} webhooks: delete one first"),
        ));
    }
    let sub = Subscription {
        id: format!("wh_{}", random_hex(8)?),
        tenant,
        url: req.url,
        events,
        secret: new_secret()?,
        created_at: app.now(),
    };
    hooks.put_subscription(&sub).await?;
    tracing::info!(webhook = %sub.id, tenant = %sub.tenant, "webhook subscribed");
    Ok((
        StatusCode::CREATED,
        Json(CreatedWebhook {
            id: sub.id,
            url: sub.url,
            events: sub.events,
            created_at: sub.created_at,
            secret: sub.secret,
        }),
    ))
}

/// The tenant's subscriptions, oldest first.
#[utoipa::path(get, path = "/v1/webhooks", operation_id = "list_webhooks", tag = "webhooks", security(("bearer" = [])),
    responses(
        (status = 200, description = "The subscriptions", body = WebhookList),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a tenant key with the webhooks scope", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Over the rate limit of this credential: wait Retry-After seconds", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list<B: Backend>(
    State(app): State<Arc<App<B>>>,
    headers: HeaderMap,
) -> Result<Json<WebhookList>, Problem> {
    let tenant = tenant_of(&app, &headers).await?;
    let subs = app.backend.hooks().subscriptions(&tenant).await?;
    Ok(Json(WebhookList {
        webhooks: subs.iter().map(view).collect(),
    }))
}

/// One subscription.
#[utoipa::path(get, path = "/v1/webhooks/{id}", operation_id = "get_webhook", tag = "webhooks", security(("bearer" = [])),
    params(("id" = String, Path, description = "The webhook id")),
    responses(
        (status = 200, description = "The subscription", body = Webhook),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a tenant key with the webhooks scope", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such webhook (or not yours)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Over the rate limit of this credential: wait Retry-After seconds", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_one<B: Backend>(
    State(app): State<Arc<App<B>>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Webhook>, Problem> {
    let tenant = tenant_of(&app, &headers).await?;
    Ok(Json(view(&owned(&app, &tenant, &id).await?)))
}

/// Unsubscribe: no further deliveries are made (a delivery waiting for a retry is parked).
#[utoipa::path(delete, path = "/v1/webhooks/{id}", operation_id = "delete_webhook", tag = "webhooks", security(("bearer" = [])),
    params(("id" = String, Path, description = "The webhook id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a tenant key with the webhooks scope", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such webhook (or not yours)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Over the rate limit of this credential: wait Retry-After seconds", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn delete<B: Backend>(
    State(app): State<Arc<App<B>>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    let tenant = tenant_of(&app, &headers).await?;
    if app
        .backend
        .hooks()
        .delete_subscription(&tenant, &id)
        .await?
    {
        tracing::info!(webhook = %id, tenant = %tenant, "webhook deleted");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Problem::not_found(format!("no webhook {id:?}")))
    }
}

/// The subscription's deliveries, newest first, with every attempt.
#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries", operation_id = "list_webhook_deliveries", tag = "webhooks", security(("bearer" = [])),
    params(("id" = String, Path, description = "The webhook id"), DeliveryQuery),
    responses(
        (status = 200, description = "The deliveries", body = DeliveryList),
        (status = 400, description = "Bad limit", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a tenant key with the webhooks scope", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such webhook (or not yours)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Over the rate limit of this credential: wait Retry-After seconds", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn deliveries<B: Backend>(
    State(app): State<Arc<App<B>>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    query: Result<Query<DeliveryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<DeliveryList>, Problem> {
    let tenant = tenant_of(&app, &headers).await?;
    let Query(q) = query.map_err(|e| Problem::bad_request("bad-query", e.body_text()))?;
    let limit = match q.limit {
        None => 50,
        Some(n @ 1..=100) => n as usize,
        Some(n) => {
            return Err(Problem::bad_request(
                "bad-limit",
                format!("limit {n}: between 1 and 100"),
            ));
        }
    };
    let sub = owned(&app, &tenant, &id).await?;
    let list = app.backend.hooks().deliveries(&sub.id, limit).await?;
    Ok(Json(DeliveryList {
        deliveries: list.iter().map(delivery_view).collect(),
    }))
}

/// Replay a parked delivery: a new round of attempts on the same schedule, same `webhook-id`.
#[utoipa::path(post, path = "/v1/webhooks/{id}/deliveries/{delivery}/replay", operation_id = "replay_webhook_delivery", tag = "webhooks", security(("bearer" = [])),
    params(("id" = String, Path, description = "The webhook id"),
        ("delivery" = String, Path, description = "The delivery id")),
    responses(
        (status = 202, description = "Replay scheduled", body = WebhookDelivery),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a tenant key with the webhooks scope", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such webhook or delivery (or not yours)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The delivery is not parked", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Over the rate limit of this credential: wait Retry-After seconds", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn replay<B: Backend>(
    State(app): State<Arc<App<B>>>,
    headers: HeaderMap,
    Path((id, delivery)): Path<(String, String)>,
) -> Result<(StatusCode, Json<WebhookDelivery>), Problem> {
    let tenant = tenant_of(&app, &headers).await?;
    let sub = owned(&app, &tenant, &id).await?;
    let hooks = app.backend.hooks();
    let missing = || Problem::not_found(format!("no delivery {delivery:?} for webhook {id:?}"));
    let d = hooks
        .delivery(&delivery)
        .await?
        .filter(|d| d.subscription == sub.id)
        .ok_or_else(missing)?;
    let now = app.now();
    let d = match d.status {
        DeliveryStatus::Parked => hooks
            .replay(&d.id, now)
            .await?
            .ok_or_else(|| Problem::conflict("not-parked", "the delivery is no longer parked"))?,
        // Replayed, but the request for its first attempt may not have been queued (a crash
        // between the two): queue it again; the attempt starts at most once.
        DeliveryStatus::Pending if d.attempts == 0 => d,
        _ => {
            return Err(Problem::conflict(
                "not-parked",
                format!(
                    "the delivery is {}: only a parked delivery is replayed",
                    d.status.as_str()
                ),
            ));
        }
    };
    queue_first_attempt(&app, &d, now).await?;
    tracing::info!(webhook = %id, delivery = %d.id, "webhook delivery replayed");
    Ok((StatusCode::ACCEPTED, Json(delivery_view(&d))))
}

/// Puts the request for `d`'s first attempt on the webhook queue.
async fn queue_first_attempt<B: Backend>(
    app: &App<B>,
    d: &Delivery,
    now: DateTime<Utc>,
) -> Result<(), Problem> {
    let request = AttemptRequest {
        delivery: d.id.clone(),
        attempt: 1,
        not_before: now,
    };
    app.backend
        .queue()
        .send(&app.settings.webhook_queue_url, attempt_message(&request))
        .await
        .map_err(Problem::unavailable)
}

/// The event type of a test ping: sent only by `POST /v1/webhooks/{id}/ping`, whatever the
/// subscription's event types.
pub const TEST_EVENT: &str = "pec.webhook.test";

/// Send a test event (`pec.webhook.test`) to the endpoint now, signed and retried like any
/// delivery: to check a new endpoint and its signature verification without sending a PEC.
#[utoipa::path(post, path = "/v1/webhooks/{id}/ping", operation_id = "ping_webhook", tag = "webhooks", security(("bearer" = [])),
    params(("id" = String, Path, description = "The webhook id")),
    responses(
        (status = 202, description = "The test delivery, queued: follow it in the delivery log", body = WebhookDelivery),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a tenant key with the webhooks scope", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such webhook (or not yours)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Over the rate limit of this credential: wait Retry-After seconds", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn ping<B: Backend>(
    State(app): State<Arc<App<B>>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<WebhookDelivery>), Problem> {
    let tenant = tenant_of(&app, &headers).await?;
    let sub = owned(&app, &tenant, &id).await?;
    let now = app.now();
    let event_id = format!("test_{}", &crate::random_token()?[..22]);
    let payload = serde_json::json!({
        "type": TEST_EVENT,
        "timestamp": now,
        "data": {"webhook": sub.id, "event_id": event_id, "test": true},
    })
    .to_string();
    let fresh = Delivery {
        id: delivery_id(&event_id, &sub.id),
        subscription: sub.id.clone(),
        tenant: tenant.clone(),
        event_id,
        event_type: TEST_EVENT.to_string(),
        payload,
        status: DeliveryStatus::Pending,
        attempts: 0,
        log: Vec::new(),
        next_attempt_at: Some(now),
        created_at: now,
        started_at: None,
    };
    let d = app.backend.hooks().create_delivery(&fresh).await?;
    queue_first_attempt(&app, &d, now).await?;
    tracing::info!(webhook = %id, delivery = %d.id, "webhook test queued");
    Ok((StatusCode::ACCEPTED, Json(delivery_view(&d))))
}
