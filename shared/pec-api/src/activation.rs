//! `POST /v1/activation`: a member opens the one-time link a bulk import sent and chooses the
//! mailbox's password (and, for a member-paid mailbox, accepts the agreement). No
//! authentication: the link's 256-bit token is the credential, and it works once.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use pec_ports::activation::{ActivationError, activate};
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
    /// The token after `#` in the activation link.
    #[schema(min_length = 20, max_length = 200)]
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
        (status = 422, description = "Invalid fields (a short password; the agreement not accepted for a member-paid mailbox)", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn activation<B: Backend>(
    State(app): State<Arc<App<B>>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Activated>, Problem> {
    let req: ActivationRequest = crate::send::json_body(&headers, &body)?;
    let mut errors = Vec::new();
    if !(20..=200).contains(&req.token.len()) {
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
    let cost = app.settings.login_cost;
    let password = req.password;
    let hash = tokio::task::spawn_blocking(move || pec_submit::hash_password_with(&password, cost))
        .await
        .map_err(|e| Problem::unavailable(format!("password hash: {e}")))?
        .map_err(|e| Problem::unavailable(format!("password hash: {e}")))?;
    match activate(
        app.backend.state(),
        &req.token,
        &hash,
        req.accept_agreement,
        app.now(),
    )
    .await
    {
        Ok(address) => {
            tracing::info!(address = %address, "mailbox activated");
            Ok(Json(Activated { address }))
        }
        Err(ActivationError::Invalid) => Err(Problem::new(
            axum::http::StatusCode::GONE,
            "activation-invalid",
            "Activation link not usable",
            ActivationError::Invalid.to_string(),
        )),
        Err(e @ ActivationError::AgreementRequired(_)) => {
            Err(Problem::invalid(vec![FieldError::new(
                "/accept_agreement",
                e.to_string(),
            )]))
        }
        Err(ActivationError::State(e)) => Err(e.into()),
        Err(e) => Err(Problem::unavailable(e.to_string())),
    }
}
