//! Large attachments: a client asks for an upload, `PUT`s the file straight to S3 at the
//! presigned URL it gets, then names the upload in `POST /v1/messages` instead of inlining the
//! bytes. API Gateway and Lambda take about 6 MB per request; a PEC may be 100 MiB.
//!
//! An upload is two objects in the raw bucket under the caller's tenant: `uploads/<tenant>/<id>`
//! (the file, written by the client) and `uploads/<tenant>/<id>.json` (what was asked: type,
//! size, when, by whom). Another tenant naming the id finds nothing. The URL is valid for
//! [`URL_VALIDITY`], the upload for [`UPLOAD_LIFETIME`] (a lifecycle rule removes what is left).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Duration, Utc};
use pec_ports::access::Scope;
use pec_ports::{ObjectStore, SignedUrls};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::principal;
use crate::problem::FieldError;
use crate::{App, Backend, Problem};

/// How long the upload URL may be used.
pub const URL_VALIDITY: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// How long an upload may be named in a message (template.yaml removes `uploads/` after a day).
pub const UPLOAD_LIFETIME: i64 = 24 * 3600;

/// `POST /v1/uploads`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UploadRequest {
    /// The file's media type: the `PUT` must send it as `Content-Type`.
    #[schema(example = "application/pdf", max_length = 255)]
    pub content_type: String,
    /// The file's exact size in octets: the `PUT` must send exactly this many.
    #[schema(example = 73400320, minimum = 1, maximum = 104857600)]
    pub size: u64,
}

/// Where to put the file.
#[derive(Debug, Serialize, ToSchema)]
pub struct Upload {
    /// Name it as `{"upload": id}` in an attachment of `POST /v1/messages`.
    #[schema(example = "up_Xk2m9QvT7cRw1pLs4dYh8A")]
    pub id: String,
    /// `PUT` the file's bytes here, with the headers below, before `url_expires_at`. No
    /// `Authorization` header: the URL carries the signature.
    pub upload_url: String,
    #[schema(example = "PUT")]
    pub method: String,
    /// Headers the `PUT` must carry (they are signed).
    #[schema(value_type = Object, example = json!({"content-type": "application/pdf"}))]
    pub headers: serde_json::Value,
    pub size: u64,
    pub url_expires_at: DateTime<Utc>,
    /// After this the upload can no longer be named in a message.
    pub expires_at: DateTime<Utc>,
}

/// What was asked, kept beside the file.
#[derive(Debug, Serialize, Deserialize)]
struct Asked {
    content_type: String,
    size: u64,
    created_at: DateTime<Utc>,
    created_by: String,
}

fn file_key(tenant: &str, id: &str) -> String {
    format!("uploads/{tenant}/{id}")
}

/// Ask for an upload URL for one large attachment.
#[utoipa::path(post, path = "/v1/uploads", operation_id = "create_upload", tag = "messages", security(("bearer" = [])),
    request_body = UploadRequest,
    responses(
        (status = 201, description = "PUT the file at upload_url, then name the id in a message", body = Upload),
        (status = 400, description = "Malformed request", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing scope", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid media type, or a size of 0 or over what a PEC may be", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Over the rate limit of this credential: wait Retry-After seconds", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create<B: Backend>(
    State(app): State<Arc<App<B>>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Upload>), Problem> {
    let who = principal(&app, &headers).await?;
    who.require(Scope::Send)?;
    let req: UploadRequest = crate::send::json_body(&headers, &body)?;
    let mut errors = Vec::new();
    if req.content_type.len() > 255 || !crate::send::valid_media_type(&req.content_type) {
        errors.push(FieldError::new(
            "/content_type",
            format!("{:?} is not a media type (type/subtype)", req.content_type),
        ));
    }
    if req.size == 0 {
        errors.push(FieldError::new("/size", "an empty file needs no upload"));
    }
    let max = app.settings.max_message_bytes as u64;
    if req.size > max {
        errors.push(FieldError::new(
            "/size",
            format!("{} octets: a PEC may be at most {max}", req.size),
        ));
    }
    if !errors.is_empty() {
        return Err(Problem::invalid(errors));
    }
    let now = app.now();
    let id = format!("up_{}", &crate::random_token()?[..22]);
    let key = file_key(who.tenant(), &id);
    let content_type = req.content_type.to_ascii_lowercase();
    let asked = Asked {
        content_type: content_type.clone(),
        size: req.size,
        created_at: now,
        created_by: match &who {
            crate::auth::Principal::Key { id, .. } => format!("key {id}"),
            crate::auth::Principal::Mailbox { address, .. } => format!("mailbox {address}"),
        },
    };
    let objects = app.backend.objects();
    let raw = &app.settings.raw_bucket;
    objects
        .put_if_absent(
            raw,
            &format!("{key}.json"),
            serde_json::to_vec(&asked).unwrap_or_default(),
            "application/json",
        )
        .await?;
    let url = objects
        .upload_url(raw, &key, &content_type, req.size, URL_VALIDITY)
        .await?;
    tracing::info!(upload = %id, tenant = %who.tenant(), size = req.size, "upload URL issued");
    Ok((
        StatusCode::CREATED,
        Json(Upload {
            id,
            upload_url: url,
            method: "PUT".into(),
            headers: serde_json::json!({ "content-type": content_type }),
            size: req.size,
            url_expires_at: now + Duration::from_std(URL_VALIDITY).unwrap_or(Duration::minutes(15)),
            expires_at: now + Duration::seconds(UPLOAD_LIFETIME),
        }),
    ))
}

/// The bytes of the caller's upload `id`, named at `pointer` of a message: a field error when
/// it does not exist (or is another tenant's), is not uploaded yet, has expired or has another
/// size than was asked.
pub(crate) async fn uploaded<B: Backend>(
    app: &App<B>,
    tenant: &str,
    id: &str,
    pointer: &str,
    now: DateTime<Utc>,
) -> Result<Result<Vec<u8>, FieldError>, Problem> {
    let fail = |why: String| Ok(Err(FieldError::new(pointer, why)));
    let well_formed = id.len() == 25
        && id.starts_with("up_")
        && id[3..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !well_formed {
        return fail(format!("{id:?} is not an upload id"));
    }
    let objects = app.backend.objects();
    let raw = &app.settings.raw_bucket;
    let key = file_key(tenant, id);
    let Some(meta) = objects.get(raw, &format!("{key}.json")).await? else {
        return fail(format!("no upload {id:?}"));
    };
    let asked: Asked = serde_json::from_slice(&meta)
        .map_err(|e| Problem::unavailable(format!("upload {id}: {e}")))?;
    if now - asked.created_at > Duration::seconds(UPLOAD_LIFETIME) {
        return fail(format!(
            "upload {id:?} expired at {}",
            asked.created_at + Duration::seconds(UPLOAD_LIFETIME)
        ));
    }
    let Some(bytes) = objects.get(raw, &key).await? else {
        return fail(format!(
            "upload {id:?} has no file yet: PUT it at its upload_url first"
        ));
    };
    if bytes.len() as u64 != asked.size {
        return fail(format!(
            "upload {id:?} holds {} octets, {} were announced",
            bytes.len(),
            asked.size
        ));
    }
    Ok(Ok(bytes))
}
