//! A tenant's API keys over HTTP: list, create (the key shown once), rotate (a new key with
//! the same name and scopes; the old one works for the grace asked, then stops), revoke. An
//! `admin` key of the tenant only; a key can give a new key only scopes it has itself, so an
//! `admin`-only key cannot mint a `send` key, and rotates or revokes only keys within its own
//! scopes; a rotated key manages no keys during its grace. Another tenant's key answers `404`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Utc};
use pec_ports::access::{AccessStore, ApiKey, Scope};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::{Principal, new_api_key, principal};
use crate::problem::FieldError;
use crate::{App, Backend, Problem};

/// The longest a rotated key may keep working: a week.
pub const MAX_GRACE_SECONDS: u32 = 7 * 24 * 3600;

/// One API key as listed (never its secret).
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyView {
    /// The key's public id (the `<id>` of `pec_<id>_<secret>`).
    #[schema(example = "3f9a0c1d2e4b5a69")]
    pub id: String,
    #[schema(example = "ERP production")]
    pub name: String,
    /// `send`, `read`, `admin`, `webhooks`.
    pub scopes: Vec<String>,
    pub created_at: DateTime<Utc>,
    /// To the minute.
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// A rotated key works until then.
    pub expires_at: Option<DateTime<Utc>>,
    /// Whether it authenticates requests now.
    pub active: bool,
}

fn view(k: &ApiKey, now: DateTime<Utc>) -> ApiKeyView {
    ApiKeyView {
        id: k.id.clone(),
        name: k.name.clone(),
        scopes: k.scopes.iter().map(|s| s.as_str().to_string()).collect(),
        created_at: k.created_at,
        last_used_at: k.last_used_at,
        revoked_at: k.revoked_at,
        expires_at: k.expires_at,
        active: k.works_at(now),
    }
}

/// A new key: the only time its secret is shown.
#[derive(Debug, Serialize, ToSchema)]
pub struct NewApiKey {
    /// The whole key, to send as `Authorization: Bearer <key>`. Shown only now: we keep its
    /// hash.
    #[schema(example = "pec_3f9a0c1d2e4b5a69_q8Y...")]
    pub key: String,
    #[serde(flatten)]
    pub details: ApiKeyView,
}

/// The tenant's keys, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyList {
    pub keys: Vec<ApiKeyView>,
}

/// The caller's tenant and scopes: a tenant key with the `admin` scope that is not being
/// retired. A rotated key works for its grace, but manages no keys: were it leaked (the reason
/// to rotate), it could otherwise mint a successor of its own that never expires.
async fn admin_key<B: Backend>(
    app: &App<B>,
    headers: &HeaderMap,
) -> Result<(String, Vec<Scope>), Problem> {
    let who = principal(app, headers).await?;
    who.require(Scope::Admin)?;
    match who {
        Principal::Key { id, tenant, scopes } => {
            let retiring = app
                .backend
                .access()
                .api_key(&id)
                .await?
                .is_none_or(|k| k.expires_at.is_some());
            if retiring {
                return Err(Problem::forbidden(
                    "key-retiring",
                    "this key was rotated: it works until its grace ends but manages no API \
                     keys; use its successor",
                ));
            }
            Ok((tenant, scopes))
        }
        Principal::Mailbox { .. } => Err(Problem::forbidden(
            "missing-scope",
            "API keys are managed with a tenant API key",
        )),
    }
}

/// `403` when `key` has a scope the caller lacks (a key manages only keys within its own power).
fn within(own: &[Scope], key: &ApiKey) -> Result<(), Problem> {
    match key.scopes.iter().find(|s| !own.contains(s)) {
        Some(s) => Err(Problem::forbidden(
            "missing-scope",
            format!(
                "the key has the {:?} scope, which this key does not have",
                s.as_str()
            ),
        )),
        None => Ok(()),
    }
}

/// The tenant's key `id` (another tenant's is no key).
async fn tenant_key<B: Backend>(app: &App<B>, tenant: &str, id: &str) -> Result<ApiKey, Problem> {
    app.backend
        .access()
        .api_key(id)
        .await?
        .filter(|k| k.tenant == tenant)
        .ok_or_else(|| Problem::not_found(format!("no API key {id:?}")))
}

/// A key id as the keys are made: 16 lower-case hex digits (anything else is no key).
fn key_id(id: &str) -> Result<&str, Problem> {
    if id.len() == 16
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(id)
    } else {
        Err(Problem::not_found(format!("no API key {id:?}")))
    }
}

/// Lists the tenant's keys (revoked and expired ones too).
#[utoipa::path(get, path = "/v1/api-keys", operation_id = "list_api_keys", tag = "administration", security(("bearer" = [])),
    responses(
        (status = 200, description = "The tenant's keys", body = ApiKeyList),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a tenant key with the admin scope, or a rotated key", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Over the rate limit of this credential: wait Retry-After seconds", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list<B: Backend>(
    State(app): State<Arc<App<B>>>,
    headers: HeaderMap,
) -> Result<Json<ApiKeyList>, Problem> {
    let (tenant, _) = admin_key(&app, &headers).await?;
    let now = app.now();
    let keys = app.backend.access().api_keys(&tenant).await?;
    Ok(Json(ApiKeyList {
        keys: keys.iter().map(|k| view(k, now)).collect(),
    }))
}

/// `POST /v1/api-keys`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    /// A label for people (1 to 100 characters).
    #[schema(example = "ERP production")]
    pub name: String,
    /// Some of `send`, `read`, `admin`, `webhooks`: only scopes the calling key has.
    #[schema(example = json!(["send", "read"]))]
    pub scopes: Vec<String>,
}

/// Creates a key for the tenant; the answer is the only time its secret is shown.
#[utoipa::path(post, path = "/v1/api-keys", operation_id = "create_api_key", tag = "administration", security(("bearer" = [])),
    request_body = CreateApiKey,
    responses(
        (status = 201, description = "The new key, shown once", body = NewApiKey),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a tenant key with the admin scope, a rotated key, or a scope the calling key does not have", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "No name, no scope or an unknown one", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Over the rate limit of this credential: wait Retry-After seconds", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create<B: Backend>(
    State(app): State<Arc<App<B>>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<NewApiKey>), Problem> {
    let (tenant, own) = admin_key(&app, &headers).await?;
    let req: CreateApiKey = crate::send::json_body(&headers, &body)?;
    let mut errors = Vec::new();
    let name = req.name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        errors.push(FieldError::new(
            "/name",
            "1 to 100 characters, no control characters",
        ));
    }
    let mut scopes = Vec::new();
    for (i, s) in req.scopes.iter().enumerate() {
        match Scope::parse(s.trim()) {
            Some(v) if !scopes.contains(&v) => scopes.push(v),
            Some(_) => {}
            None => errors.push(FieldError::new(
                format!("/scopes/{i}"),
                format!("unknown scope {s:?}: send, read, admin or webhooks"),
            )),
        }
    }
    if req.scopes.is_empty() {
        errors.push(FieldError::new("/scopes", "at least one scope"));
    }
    if !errors.is_empty() {
        return Err(Problem::invalid(errors));
    }
    if let Some(s) = scopes.iter().find(|s| !own.contains(s)) {
        return Err(Problem::forbidden(
            "missing-scope",
            format!(
                "this key does not have the {:?} scope, so it cannot give it to a new key",
                s.as_str()
            ),
        ));
    }
    let now = app.now();
    let (shown, key) = new_api_key(&tenant, name, scopes, now)?;
    app.backend.access().put_api_key(&key).await?;
    tracing::info!(tenant = %tenant, key = %key.id, "API key created");
    Ok((
        StatusCode::CREATED,
        Json(NewApiKey {
            key: shown,
            details: view(&key, now),
        }),
    ))
}

/// `POST /v1/api-keys/{id}/rotate`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateApiKey {
    /// How long the old key keeps working, in seconds (0: it stops now; at most a week), so
    /// the systems using it can be given the new one without an outage.
    #[schema(maximum = 604800, example = 86400)]
    pub grace_seconds: u32,
}

/// Rotates a key: a new key with the same name and scopes (shown once); the old one stops
/// working after the grace asked.
#[utoipa::path(post, path = "/v1/api-keys/{id}/rotate", operation_id = "rotate_api_key", tag = "administration", security(("bearer" = [])),
    params(("id" = String, Path, description = "The key's id")),
    request_body = RotateApiKey,
    responses(
        (status = 201, description = "The new key, shown once; the old key's expiry is in the list", body = NewApiKey),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a tenant key with the admin scope, a rotated key, or the key to rotate has a scope the calling key does not", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such key (or not the tenant's)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The key is revoked or already rotated", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A grace longer than a week", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Over the rate limit of this credential: wait Retry-After seconds", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn rotate<B: Backend>(
    State(app): State<Arc<App<B>>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<NewApiKey>), Problem> {
    let (tenant, own) = admin_key(&app, &headers).await?;
    let id = key_id(&id)?;
    let req: RotateApiKey = crate::send::json_body(&headers, &body)?;
    if req.grace_seconds > MAX_GRACE_SECONDS {
        return Err(Problem::invalid(vec![FieldError::new(
            "/grace_seconds",
            format!("at most {MAX_GRACE_SECONDS} (a week)"),
        )]));
    }
    let access = app.backend.access();
    let old = tenant_key(&app, &tenant, id).await?;
    within(&own, &old)?;
    let rotated = || {
        Problem::conflict(
            "key-not-rotatable",
            format!("the key {id} is revoked or was already rotated: rotate its successor"),
        )
    };
    if old.revoked_at.is_some() || old.expires_at.is_some() {
        return Err(rotated());
    }
    let now = app.now();
    let (shown, key) = new_api_key(&tenant, &old.name, old.scopes.clone(), now)?;
    // The new key first: a failure after it leaves the old one working as it was.
    access.put_api_key(&key).await?;
    let until = now + chrono::Duration::seconds(i64::from(req.grace_seconds));
    if !access.expire_api_key(&tenant, id, until).await? {
        // Another rotation (or a revocation) won: the key made here must not stay usable.
        access.revoke_api_key(&tenant, &key.id, now).await?;
        return Err(rotated());
    }
    tracing::info!(tenant = %tenant, old = %id, new = %key.id, until = %until, "API key rotated");
    Ok((
        StatusCode::CREATED,
        Json(NewApiKey {
            key: shown,
            details: view(&key, now),
        }),
    ))
}

/// Revokes a key: it stops working at once (it stays listed).
#[utoipa::path(delete, path = "/v1/api-keys/{id}", operation_id = "revoke_api_key", tag = "administration", security(("bearer" = [])),
    params(("id" = String, Path, description = "The key's id")),
    responses(
        (status = 204, description = "Revoked (or it was already)"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a tenant key with the admin scope, a rotated key, or the key to revoke has a scope the calling key does not", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such key (or not the tenant's)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Over the rate limit of this credential: wait Retry-After seconds", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn revoke<B: Backend>(
    State(app): State<Arc<App<B>>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    let (tenant, own) = admin_key(&app, &headers).await?;
    let id = key_id(&id)?;
    within(&own, &tenant_key(&app, &tenant, id).await?)?;
    if !app
        .backend
        .access()
        .revoke_api_key(&tenant, id, app.now())
        .await?
    {
        return Err(Problem::not_found(format!("no API key {id:?}")));
    }
    tracing::info!(tenant = %tenant, key = %id, "API key revoked");
    Ok(StatusCode::NO_CONTENT)
}
