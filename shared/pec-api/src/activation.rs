//! `POST /v1/activation`: a member opens the one-time link a bulk import sent and chooses the
//! mailbox's password (and, for a member-paid mailbox, accepts the agreement). No
//! authentication: the link's 256-bit token is the credential, and it works once.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use pec_core::breach::Setting;
use pec_ports::StateStore;
use pec_ports::activation::{ActivationError, complete, take};
use pec_ports::breach::Candidate;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::problem::{FieldError, Problem};
use crate::{App, Backend};

/// Shortest password accepted.
pub const MIN_PASSWORD: usize = 10;

/// `POST /v1/activation`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActivationRequest {
    /// The token after `#` in the activation link (base64url).
    #[schema(min_length = 20, max_length = 200, pattern = "^[A-Za-z0-9_-]+$")]
    pub token: String,
    /// The mailbox's new password (at least 10 characters).
    #[schema(min_length = 10, max_length = 200)]
    pub password: String,
    /// The member accepts the service agreement (required for member-paid mailboxes).
    #[serde(default)]
    pub accept_agreement: bool,
}

/// The mailbox activated.
#[derive(Debug, Serialize, ToSchema)]
pub struct Activated {
    pub address: String,
}

/// Activate a mailbox with its one-time link.
#[utoipa::path(post, path = "/v1/activation", tag = "auth", request_body = ActivationRequest,
    responses(
        (status = 200, description = "Activated: the mailbox logs in with the password chosen", body = Activated),
        (status = 400, description = "Malformed request", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "The link is unknown, already used or expired", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields (a short password; the agreement not accepted for a member-paid mailbox), or `password-breached`: the password is in known breach data (plans with password protection); the link still works", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`breach-check-unavailable`: the password could not be checked against breach data; the link still works, retry", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn activation<B: Backend>(
    State(app): State<Arc<App<B>>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Activated>, Problem> {
    let req: ActivationRequest = crate::send::json_body(&headers, &body)?;
    let mut errors = Vec::new();
    // Lengths in characters, as the schema's minLength/maxLength count them.
    let token_ok = (20..=200).contains(&req.token.chars().count())
        && req
            .token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !token_ok {
        errors.push(FieldError::new("/token", "not an activation token"));
    }
    let chars = req.password.chars().count();
    if !(MIN_PASSWORD..=200).contains(&chars) {
        errors.push(FieldError::new(
            "/password",
            format!("{MIN_PASSWORD} to 200 characters"),
        ));
    }
    if !errors.is_empty() {
        return Err(Problem::invalid(errors));
    }
    // The link first (a cheap read): no password is hashed for a token that is not one.
    let link = match take(
        app.backend.state(),
        &req.token,
        req.accept_agreement,
        app.now(),
    )
    .await
    {
        Ok(link) => link,
        Err(e) => return Err(problem(e)),
    };
    // Breach data, for a plan that includes it: the link is put back whatever the answer, so
    // the member chooses again with the same link.
    let plan = match app.backend.state().mailbox(&link.address).await {
        Ok(m) => m.map(|m| m.plan),
        Err(e) => {
            app.backend.state().put_activation(&link).await?;
            return Err(e.into());
        }
    };
    if let Some(plan) = plan {
        let candidate = Candidate {
            mailbox: &link.address,
            tenant: &link.tenant,
            plan,
            setting: if link.reset_for.is_some() {
                Setting::Reset
            } else {
                Setting::Activation
            },
        };
        if let Err(p) = crate::password::check(&app, candidate, &req.password).await {
            app.backend.state().put_activation(&link).await?;
            return Err(p);
        }
    }
    let cost = app.settings.login_cost;
    let password = req.password;
    let hashed =
        tokio::task::spawn_blocking(move || pec_submit::hash_password_with(&password, cost))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
    let hash = match hashed {
        Ok(h) => h,
        Err(e) => {
            // Put back: the member's link must survive our failure.
            app.backend.state().put_activation(&link).await?;
            return Err(Problem::unavailable(format!("password hash: {e}")));
        }
    };
    match complete(app.backend.state(), &link, &hash, app.now()).await {
        Ok(address) => {
            tracing::info!(address = %address, "mailbox activated");
            Ok(Json(Activated { address }))
        }
        Err(e) => Err(problem(e)),
    }
}

fn problem(e: ActivationError) -> Problem {
    match e {
        ActivationError::Invalid => Problem::new(
            axum::http::StatusCode::GONE,
            "activation-invalid",
            "Activation link not usable",
            ActivationError::Invalid.to_string(),
        ),
        e @ ActivationError::AgreementRequired(_) => {
            Problem::invalid(vec![FieldError::new("/accept_agreement", e.to_string())])
        }
        ActivationError::State(e) => e.into(),
        e => Problem::unavailable(e.to_string()),
    }
}
