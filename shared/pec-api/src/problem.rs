//! RFC 9457 problem documents: every error the API answers.
//!
//! `type` is a URN naming the problem (`urn:pec:problem:<slug>`), stable across versions, so
//! clients branch on it; `detail` says what exactly was wrong, for people; `errors` points at
//! each bad field of a request body (JSON Pointer, RFC 6901).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// A problem document (`application/problem+json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Problem {
    /// `urn:pec:problem:<slug>`.
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the problem type.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What exactly went wrong with this request.
    pub detail: String,
    /// Each invalid field of the request body.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// Seconds to wait before retrying (also sent as `Retry-After`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}

/// One invalid field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    /// JSON Pointer to the field (`/to/1`, `/attachments/0/content`).
    pub pointer: String,
    pub detail: String,
}

impl FieldError {
    pub fn new(pointer: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError {
            pointer: pointer.into(),
            detail: detail.into(),
        }
    }
}

impl Problem {
    pub fn new(status: StatusCode, slug: &str, title: &str, detail: impl Into<String>) -> Self {
        Problem {
            kind: format!("urn:pec:problem:{slug}"),
            title: title.to_string(),
            status: status.as_u16(),
            detail: detail.into(),
            errors: Vec::new(),
            retry_after: None,
        }
    }

    pub fn bad_request(slug: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, slug, "Bad request", detail)
    }

    /// No or bad credentials (`WWW-Authenticate: Bearer`).
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Authentication required",
            detail,
        )
    }

    pub fn forbidden(slug: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, slug, "Forbidden", detail)
    }

    /// Also what another tenant's or mailbox's resources answer.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
    }

    pub fn conflict(slug: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, slug, "Conflict", detail)
    }

    /// A well-formed request whose content is invalid; `errors` says where.
    pub fn invalid(errors: Vec<FieldError>) -> Self {
        let detail = match errors.as_slice() {
            [one] => format!("{}: {}", one.pointer, one.detail),
            many => format!("{} fields are invalid", many.len()),
        };
        Problem {
            errors,
            ..Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-request",
                "The request is invalid",
                detail,
            )
        }
    }

    pub fn too_large(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            "Request too large",
            detail,
        )
    }

    pub fn unsupported_media(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
            detail,
        )
    }

    pub fn too_many(detail: impl Into<String>, retry_after: u64) -> Self {
        Problem {
            retry_after: Some(retry_after),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                "Too many requests",
                detail,
            )
        }
    }

    /// A store could not answer: retry shortly. Logged; the detail names no internals.
    pub fn unavailable(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "store unavailable");
        Problem {
            retry_after: Some(1),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Temporarily unavailable",
                "the service could not reach its storage; retry shortly",
            )
        }
    }
}

impl From<pec_ports::StateError> for Problem {
    fn from(e: pec_ports::StateError) -> Self {
        Problem::unavailable(e)
    }
}

impl From<pec_ports::StoreError> for Problem {
    fn from(e: pec_ports::StoreError) -> Self {
        Problem::unavailable(e)
    }
}

impl From<pec_ports::MailStoreError> for Problem {
    fn from(e: pec_ports::MailStoreError) -> Self {
        use pec_ports::MailStoreError as E;
        match e {
            E::NoFolder(f) => Problem::not_found(format!("no folder {f:?}")),
            E::OverQuota {
                used,
                adding,
                limit,
            } => Problem::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "over-quota",
                "Mailbox full",
                format!("{used} + {adding} octets exceed the quota of {limit}"),
            ),
            // The API never makes append keys: one it passed on is a fault of ours.
            E::BadKey(m) | E::Unavailable(m) => Problem::unavailable(m),
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"pec\""),
            );
        }
        if let Some(s) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        response
    }
}

/// Any path the API does not have.
pub async fn no_route(uri: axum::http::Uri) -> Problem {
    Problem::not_found(format!("no resource at {}", uri.path()))
}

/// A path the API has, with another method.
pub async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "Method not allowed",
        format!("{} does not accept {method}", uri.path()),
    )
}
