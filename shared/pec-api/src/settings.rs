//! A mailbox's settings (issue #18): where ordinary mail scored as spam goes, and SMS
//! notification of new PEC. Its owner (a mailbox session) or its tenant (an `admin` key)
//! changes them; the webmail's settings page is their first client.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use pec_core::plan::{Feature, require};
use pec_ports::access::Scope;
use pec_ports::sms::SmsSettings;
use pec_ports::{Mailbox, SpamFiling, StateStore};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::{Principal, mailbox_of, principal};
use crate::problem::FieldError;
use crate::{App, Backend, Problem};

/// A mailbox's settings.
#[derive(Debug, Serialize, ToSchema)]
pub struct MailboxSettings {
    /// Ordinary (non-PEC) mail scored as spam: `junk` (the "Posta indesiderata" folder) or
    /// `delete` (not stored). PEC messages are never filtered.
    pub ordinary_spam: String,
    /// SMS notification of new PEC; absent when off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sms: Option<SmsSetting>,
    /// Whether the mailbox's plan includes SMS notification.
    pub sms_included: bool,
}

/// SMS notification of new PEC.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SmsSetting {
    /// The mobile number (any written form on input, e.g. `333 123 4567`; E.164 on output).
    pub number: String,
    /// Ordinary mail delivered to INBOX is notified too.
    #[serde(default)]
    pub ordinary: bool,
}

/// What to change; absent fields stay as they are.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsChange {
    /// `junk` or `delete`.
    pub ordinary_spam: Option<String>,
    /// An object turns SMS notification on (plans that include it), `null` turns it off.
    #[schema(value_type = Option<SmsSetting>)]
    #[serde(default, deserialize_with = "present")]
    pub sms: Option<serde_json::Value>,
}

/// A field that is present, `null` included (`Some(Value::Null)`); absent is `None` (default).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(d).map(Some)
}

fn settings_of(m: &Mailbox) -> MailboxSettings {
    MailboxSettings {
        ordinary_spam: match m.ordinary_spam {
            SpamFiling::Junk => "junk",
            SpamFiling::Delete => "delete",
        }
        .into(),
        sms: m.sms.as_ref().map(|s| SmsSetting {
            number: s.number.clone(),
            ordinary: s.ordinary,
        }),
        sms_included: m.plan.entitlements().sms_notification,
    }
}

/// A mailbox's settings.
#[utoipa::path(get, path = "/v1/mailboxes/{address}/settings", tag = "mailboxes", security(("bearer" = [])),
    params(("address" = String, Path, description = "The mailbox address")),
    responses(
        (status = 200, description = "The settings", body = MailboxSettings),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing scope", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such mailbox (or not yours)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Over the rate limit of this credential: wait Retry-After seconds", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_settings<B: Backend>(
    State(app): State<Arc<App<B>>>,
    headers: HeaderMap,
    Path(address): Path<String>,
) -> Result<Json<MailboxSettings>, Problem> {
    let who = principal(&app, &headers).await?;
    who.require(Scope::Read)?;
    let m = mailbox_of(&app, &who, &address).await?;
    Ok(Json(settings_of(&m)))
}

/// Change a mailbox's settings: its owner, or its tenant with the `admin` scope.
#[utoipa::path(patch, path = "/v1/mailboxes/{address}/settings", operation_id = "change_settings", tag = "mailboxes", security(("bearer" = [])),
    params(("address" = String, Path, description = "The mailbox address")),
    request_body = SettingsChange,
    responses(
        (status = 200, description = "The settings now", body = MailboxSettings),
        (status = 400, description = "Malformed request", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing scope, or SMS notification is not in the mailbox's plan", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such mailbox (or not yours)", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An invalid value (filing, mobile number)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Over the rate limit of this credential: wait Retry-After seconds", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn change_settings<B: Backend>(
    State(app): State<Arc<App<B>>>,
    headers: HeaderMap,
    Path(address): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<MailboxSettings>, Problem> {
    let who = principal(&app, &headers).await?;
    // The owner's own settings; a tenant's key needs admin.
    if matches!(who, Principal::Key { .. }) {
        who.require(Scope::Admin)?;
    }
    let m = mailbox_of(&app, &who, &address).await?;
    let req: SettingsChange = crate::send::json_body(&headers, &body)?;
    let mut errors = Vec::new();
    let filing = req.ordinary_spam.as_deref().and_then(|f| {
        let parsed = SpamFiling::parse(f);
        if parsed.is_none() {
            errors.push(FieldError::new("/ordinary_spam", "junk or delete"));
        }
        parsed
    });
    // None: unchanged; Some(None): off; Some(Some(..)): on.
    let sms: Option<Option<SmsSettings>> = match req.sms {
        None => None,
        Some(serde_json::Value::Null) => Some(None),
        Some(value) => match serde_json::from_value::<SmsSetting>(value) {
            Ok(s) => match pec_members::mobile_e164(&s.number) {
                Ok(number) => Some(Some(SmsSettings {
                    number,
                    ordinary: s.ordinary,
                })),
                Err(e) => {
                    errors.push(FieldError::new("/sms/number", e.to_string()));
                    None
                }
            },
            Err(e) => {
                errors.push(FieldError::new("/sms", e.to_string()));
                None
            }
        },
    };
    if !errors.is_empty() {
        return Err(Problem::invalid(errors));
    }
    let state = app.backend.state();
    let mut current = m;
    for _ in 0..5 {
        if let Some(Some(_)) = &sms {
            require(current.plan, Feature::SmsNotification)
                .map_err(|e| Problem::forbidden("not-in-plan", e.to_string()))?;
        }
        let new = Mailbox {
            ordinary_spam: filing.unwrap_or(current.ordinary_spam),
            sms: sms.clone().unwrap_or_else(|| current.sms.clone()),
            ..current.clone()
        };
        if new == current || state.replace_mailbox(&current, &new, None).await? {
            return Ok(Json(settings_of(&new)));
        }
        current = mailbox_of(&app, &who, &address).await?;
    }
    Err(Problem::conflict(
        "contended",
        format!("the mailbox {address} kept changing; try again"),
    ))
}
