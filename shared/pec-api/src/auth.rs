//! Who is calling: mailbox sessions (login with the mailbox password: the same Argon2id hash
//! and the same failed-login throttle as SMTP, IMAP and POP3) and tenant API keys.
//!
//! Tokens are opaque random strings; the store keeps only their SHA-256
//! ([`pec_ports::access`]). A bearer token is `pat_<43 base64url>` (15 minutes), its refresh
//! token `prt_<43>` (7 days, single use: refreshing replaces both), an API key
//! `pec_<16 hex id>_<43 base64url secret>`.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use chrono::{DateTime, DurationRound, Utc};
use pec_ports::access::{AccessStore, ApiKey, Scope, Session, SessionKind, secret_hash};
use pec_ports::{LoginVerdict, Mailbox, StateStore};
use pec_submit::{PasswordCheck as Check, check_password, dummy_hash};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use subtle::ConstantTimeEq;
use utoipa::ToSchema;

use crate::{App, Backend, Problem, random_token};

/// The caller's IP address, set by the host (the runner from the connection, the Lambda from
/// API Gateway's request context); the login throttle counts failures per source.
#[derive(Debug, Clone)]
pub struct ClientIp(pub String);

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A mailbox user (a session from `/v1/auth/login`): that mailbox only.
    Mailbox { address: String, tenant: String },
    /// A tenant API key: the tenant's mailboxes, within `scopes`.
    Key {
        id: String,
        tenant: String,
        scopes: Vec<Scope>,
    },
}

impl Principal {
    pub fn tenant(&self) -> &str {
        match self {
            Principal::Mailbox { tenant, .. } | Principal::Key { tenant, .. } => tenant,
        }
    }

    /// `403` when an API key lacks `scope` (a mailbox user may send and read their own mail,
    /// nothing else).
    pub fn require(&self, scope: Scope) -> Result<(), Problem> {
        let ok = match self {
            Principal::Mailbox { .. } => matches!(scope, Scope::Send | Scope::Read),
            Principal::Key { scopes, .. } => scopes.contains(&scope),
        };
        if ok {
            Ok(())
        } else {
            Err(Problem::forbidden(
                "missing-scope",
                format!(
                    "this credential does not have the {:?} scope",
                    scope.as_str()
                ),
            ))
        }
    }

    /// Whether the caller may act on `mailbox` (its own, or one of its tenant's).
    pub fn owns(&self, mailbox: &Mailbox) -> bool {
        match self {
            Principal::Mailbox { address, .. } => *address == mailbox.address,
            Principal::Key { tenant, .. } => *tenant == mailbox.tenant,
        }
    }

    /// Whether the caller may see a message submitted by `user` of `tenant`.
    pub fn sees(&self, user: &str, tenant: &str) -> bool {
        match self {
            Principal::Mailbox { address, .. } => address.eq_ignore_ascii_case(user),
            Principal::Key { tenant: t, .. } => t == tenant,
        }
    }

    /// Who an idempotency key belongs to.
    pub fn idempotency_scope(&self) -> String {
        match self {
            Principal::Mailbox { address, .. } => format!("mailbox/{address}"),
            Principal::Key { tenant, .. } => format!("tenant/{tenant}"),
        }
    }
}

/// The mailbox named in a path, if the caller may see it; `404` otherwise (another tenant's
/// mailbox looks exactly like a missing one).
pub(crate) async fn mailbox_of<B: Backend>(
    app: &App<B>,
    who: &Principal,
    address: &str,
) -> Result<Mailbox, Problem> {
    let address = address.trim().to_ascii_lowercase();
    let found = if pec_core::addr::is_addr_spec(&address) {
        app.backend.state().mailbox(&address).await?
    } else {
        None
    };
    found
        .filter(|m| who.owns(m))
        .ok_or_else(|| Problem::not_found(format!("no mailbox {address:?}")))
}

/// Authenticates the request's `Authorization: Bearer …` and counts it against the caller's
/// rate limit ([`crate::Settings::requests_per_minute`]: `429` with `Retry-After` beyond).
pub async fn principal<B: Backend>(
    app: &App<B>,
    headers: &HeaderMap,
) -> Result<Principal, Problem> {
    let who = authenticate(app, headers).await?;
    let now = app.now();
    let caller = match &who {
        Principal::Key { id, .. } => format!("key/{id}"),
        Principal::Mailbox { address, .. } => format!("mailbox/{address}"),
    };
    let window = now
        .duration_trunc(chrono::Duration::minutes(1))
        .unwrap_or(now);
    let limit = app.settings.requests_per_minute;
    let counted = app
        .backend
        .access()
        .count_request(
            &caller,
            window,
            limit,
            window + chrono::Duration::minutes(2),
        )
        .await?;
    if !counted {
        let wait = (window + chrono::Duration::minutes(1) - now)
            .num_seconds()
            .max(1) as u64;
        return Err(Problem::too_many(
            format!("more than {limit} requests in a minute with this credential"),
            wait,
        ));
    }
    Ok(who)
}

async fn authenticate<B: Backend>(app: &App<B>, headers: &HeaderMap) -> Result<Principal, Problem> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| Problem::unauthorized("send Authorization: Bearer <token or API key>"))?;
    let token = value
        .to_str()
        .ok()
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
        .ok_or_else(|| Problem::unauthorized("the Authorization header is not 'Bearer <token>'"))?;
    let now = app.now();
    if let Some(rest) = token.strip_prefix("pec_") {
        return api_key(app, rest, now).await;
    }
    if token.starts_with("pat_") {
        let session = app
            .backend
            .access()
            .session(&secret_hash(token), now)
            .await?
            .filter(|s| s.kind == SessionKind::Access)
            .ok_or_else(|| Problem::unauthorized("the token is unknown, expired or revoked"))?;
        // A mailbox locked since the login loses its sessions at once.
        match app.backend.state().mailbox(&session.address).await? {
            Some(m) if m.in_service() => {}
            Some(m) => return Err(locked(&m)),
            None => return Err(Problem::unauthorized("the mailbox no longer exists")),
        }
        return Ok(Principal::Mailbox {
            address: session.address,
            tenant: session.tenant,
        });
    }
    Err(Problem::unauthorized(
        "unknown credential: expected a bearer token (pat_…) or an API key (pec_…)",
    ))
}

async fn api_key<B: Backend>(
    app: &App<B>,
    rest: &str,
    now: DateTime<Utc>,
) -> Result<Principal, Problem> {
    let bad = || Problem::unauthorized("the API key is unknown, revoked or expired");
    let (id, secret) = rest.split_once('_').ok_or_else(bad)?;
    if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let key = app.backend.access().api_key(id).await?.ok_or_else(bad)?;
    let given = secret_hash(secret);
    if !bool::from(given.as_bytes().ct_eq(key.secret_hash.as_bytes())) || !key.works_at(now) {
        return Err(bad());
    }
    if key
        .last_used_at
        .is_none_or(|t| now - t > chrono::Duration::minutes(1))
    {
        app.backend.access().touch_api_key(id, now).await?;
    }
    Ok(Principal::Key {
        id: key.id,
        tenant: key.tenant,
        scopes: key.scopes,
    })
}

fn locked(m: &pec_ports::Mailbox) -> Problem {
    // A session of this mailbox (authenticated before the lock): what happened, when, and
    // what to do. Mail programs get Mailbox::refusal's fewer words (they tell anyone).
    let detail = match m.spam_lock() {
        Some(note) => format!(
            "the mailbox {} was locked on {} because it sent spam (its password was probably \
             stolen); a link to choose a new password was sent to your contact address, or ask \
             the organisation that gave you the mailbox to send a new one",
            m.address,
            note.since.format("%Y-%m-%d %H:%M UTC")
        ),
        None => m
            .refusal()
            .unwrap_or_else(|| format!("the mailbox {} is locked", m.address)),
    };
    Problem::forbidden("mailbox-locked", detail)
}

/// A new API key for `tenant` (for `pec apikey create`): the key to show once, and the record
/// to store.
pub fn new_api_key(
    tenant: &str,
    name: &str,
    scopes: Vec<Scope>,
    now: DateTime<Utc>,
) -> Result<(String, ApiKey), Problem> {
    let mut id = [0u8; 8];
    getrandom::fill(&mut id).map_err(|e| Problem::unavailable(format!("no randomness: {e}")))?;
    let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
    let secret = random_token()?;
    let shown = format!("pec_{id}_{secret}");
    Ok((
        shown,
        ApiKey {
            id,
            tenant: tenant.to_string(),
            name: name.to_string(),
            scopes,
            secret_hash: secret_hash(&secret),
            created_at: now,
            revoked_at: None,
            last_used_at: None,
            expires_at: None,
        },
    ))
}

/// `POST /v1/auth/login`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// The PEC mailbox address.
    #[schema(example = "mario.rossi@pec.example.it")]
    pub address: String,
    pub password: String,
}

/// `POST /v1/auth/refresh`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

/// A new pair of tokens.
#[derive(Debug, Serialize, ToSchema)]
pub struct Tokens {
    /// Send as `Authorization: Bearer <access_token>`.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds the access token is valid.
    pub expires_in: i64,
    /// Exchange it once at `/v1/auth/refresh` for a new pair.
    pub refresh_token: String,
    /// Seconds the refresh token is valid.
    pub refresh_expires_in: i64,
}

async fn new_pair<B: Backend>(
    app: &App<B>,
    address: &str,
    tenant: &str,
) -> Result<Tokens, Problem> {
    let now = app.now();
    let access = format!("pat_{}", random_token()?);
    let refresh = format!("prt_{}", random_token()?);
    let (ah, rh) = (secret_hash(&access), secret_hash(&refresh));
    let session = |kind, hash: &str, pair: &str, ttl| Session {
        token_hash: hash.to_string(),
        kind,
        address: address.to_string(),
        tenant: tenant.to_string(),
        pair_hash: pair.to_string(),
        created_at: now,
        expires_at: now + ttl,
    };
    let state = app.backend.access();
    state
        .put_session(&session(
            SessionKind::Refresh,
            &rh,
            &ah,
            app.settings.refresh_ttl,
        ))
        .await?;
    state
        .put_session(&session(
            SessionKind::Access,
            &ah,
            &rh,
            app.settings.access_ttl,
        ))
        .await?;
    Ok(Tokens {
        access_token: access,
        token_type: "Bearer".into(),
        expires_in: app.settings.access_ttl.num_seconds(),
        refresh_token: refresh,
        refresh_expires_in: app.settings.refresh_ttl.num_seconds(),
    })
}

pub(crate) fn client_ip(ip: &Option<axum::Extension<ClientIp>>) -> String {
    ip.as_ref()
        .map_or_else(|| "unknown".to_string(), |e| e.0.0.clone())
}

/// Log in with the mailbox address and password.
#[utoipa::path(post, path = "/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in", body = Tokens),
        (status = 400, description = "Malformed request", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Wrong address or password", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The mailbox is locked or suspended", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed logins", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn login<B: Backend>(
    State(app): State<Arc<App<B>>>,
    ip: Option<axum::Extension<ClientIp>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Tokens>, Problem> {
    let req: LoginRequest = crate::send::json_body(&headers, &body)?;
    let source = client_ip(&ip);
    let now = app.now();
    let address = req.address.trim().to_ascii_lowercase();
    match app.throttle.allowed(&address, &source, now) {
        LoginVerdict::Allowed => {}
        LoginVerdict::Slowed { delay } => {
            tokio::time::sleep(delay.to_std().unwrap_or_default()).await;
        }
        LoginVerdict::Locked { until } => {
            let wait = (until - now).num_seconds().max(1) as u64;
            return Err(Problem::too_many(
                "too many failed logins; wait before trying again",
                wait,
            ));
        }
    }
    let mailbox = if pec_core::addr::is_addr_spec(&address) {
        app.backend.state().mailbox(&address).await?
    } else {
        None
    };
    let hash = mailbox.as_ref().map_or_else(
        || dummy_hash(app.settings.login_cost).to_string(),
        |m| m.password_hash.clone(),
    );
    let password = req.password.into_bytes();
    let check = tokio::task::spawn_blocking(move || check_password(&password, &hash))
        .await
        .map_err(|e| Problem::unavailable(format!("password check: {e}")))?;
    match (mailbox, check) {
        (Some(m), Check::Match) => {
            app.throttle.succeeded(&address, &source, now);
            if !m.in_service() {
                return Err(locked(&m));
            }
            tracing::info!(address = %m.address, source = %source, "API login");
            Ok(Json(new_pair(&app, &m.address, &m.tenant).await?))
        }
        (_, check) => {
            if let Check::BadHash(e) = check {
                tracing::error!(address = %address, error = %e, "stored password hash unusable");
            }
            app.throttle.failed(&address, &source, now);
            Err(Problem::unauthorized("wrong address or password"))
        }
    }
}

/// Exchange a refresh token (once) for a new pair.
#[utoipa::path(post, path = "/v1/auth/refresh", tag = "auth", request_body = RefreshRequest,
    responses(
        (status = 200, description = "A new pair; the old refresh token no longer works", body = Tokens),
        (status = 400, description = "Malformed request", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Unknown, used or expired refresh token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The mailbox is locked or suspended", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn refresh<B: Backend>(
    State(app): State<Arc<App<B>>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Tokens>, Problem> {
    let req: RefreshRequest = crate::send::json_body(&headers, &body)?;
    let now = app.now();
    let state = app.backend.access();
    let session = state
        .take_session(&secret_hash(&req.refresh_token), now)
        .await?
        .filter(|s| s.kind == SessionKind::Refresh)
        .ok_or_else(|| Problem::unauthorized("the refresh token is unknown, used or expired"))?;
    state.take_session(&session.pair_hash, now).await?;
    match app.backend.state().mailbox(&session.address).await? {
        Some(m) if !m.in_service() => Err(locked(&m)),
        Some(m) => Ok(Json(new_pair(&app, &m.address, &m.tenant).await?)),
        None => Err(Problem::unauthorized("the mailbox no longer exists")),
    }
}

/// End the session: the bearer token and its refresh token stop working.
#[utoipa::path(post, path = "/v1/auth/logout", tag = "auth", security(("bearer" = [])),
    responses(
        (status = 204, description = "Logged out"),
        (status = 401, description = "Not a live session token", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn logout<B: Backend>(
    State(app): State<Arc<App<B>>>,
    headers: HeaderMap,
) -> Result<axum::http::StatusCode, Problem> {
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(s, _)| s.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim().to_string())
        .filter(|t| t.starts_with("pat_"))
        .ok_or_else(|| Problem::unauthorized("send the session's bearer token (pat_…)"))?;
    let now = app.now();
    let state = app.backend.access();
    let session = state
        .take_session(&secret_hash(&token), now)
        .await?
        .ok_or_else(|| Problem::unauthorized("the token is unknown, expired or revoked"))?;
    state.take_session(&session.pair_hash, now).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}
