//! The OpenAPI 3.1 document, generated from the handlers and types (`utoipa`). The committed
//! copy, `docs/openapi.json`, must equal [`document_json`]: a unit test fails otherwise
//! (`PEC_UPDATE_OPENAPI=1 cargo test -p pec-api openapi` rewrites it).

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "PEC provider API",
        description = "Send certified e-mail (PEC), follow every receipt and download the signed evidence; read mailboxes. Errors are RFC 9457 problem documents. Authenticate with `Authorization: Bearer` and either a session token (`/v1/auth/login`) or a tenant API key (`pec_…`).",
        version = "1.0.0",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        crate::auth::login,
        crate::auth::refresh,
        crate::auth::logout,
        crate::activation::activation,
        crate::send::send,
        crate::uploads::create,
        crate::messages::status,
        crate::bulk::create,
        crate::bulk::status,
        crate::bulk::report,
        crate::bulk::steer,
        crate::messages::evidence,
        crate::mailbox::mailbox,
        crate::settings::get_settings,
        crate::settings::change_settings,
        crate::mailbox::folders,
        crate::mailbox::list,
        crate::mailbox::message,
        crate::mailbox::raw,
        crate::mailbox::part,
        crate::organise::change_flags,
        crate::organise::move_message,
        crate::organise::delete_message,
        crate::webhooks::create,
        crate::webhooks::list,
        crate::webhooks::get_one,
        crate::webhooks::delete,
        crate::webhooks::deliveries,
        crate::webhooks::replay,
        crate::webhooks::ping,
        crate::admin::plans,
        crate::admin::list_mailboxes,
        crate::admin::create_mailbox,
        crate::admin::change_plan,
        crate::admin::change_status,
        crate::admin::list_domains,
        crate::admin::add_domain,
        crate::admin::verify_domain,
        crate::admin::remove_domain,
        crate::members::import,
        crate::members::resend_activation,
        crate::keys::list,
        crate::keys::create,
        crate::keys::rotate,
        crate::keys::revoke,
    ),
    modifiers(&Bearer),
    tags(
        (name = "auth", description = "Mailbox sessions"),
        (name = "messages", description = "Sending and following PEC"),
        (name = "mailboxes", description = "Reading and organising mailboxes"),
        (name = "webhooks", description = "Signed event deliveries (Standard Webhooks) to the tenant's endpoints"),
        (name = "administration", description = "The tenant's mailboxes, members, plans, own domains and API keys (API keys with the admin scope)"),
    )
)]
pub struct ApiDoc;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A session token (pat_…) from /v1/auth/login, or a tenant API key (pec_…)",
                    ))
                    .build(),
            ),
        );
    }
}

/// The document as pretty JSON with a final newline (the committed form).
pub fn document_json() -> String {
    let mut s = ApiDoc::openapi().to_pretty_json().unwrap_or_default();
    s.push('\n');
    s
}

/// `GET /v1/openapi.json`.
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
