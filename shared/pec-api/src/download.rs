//! Downloads: small ones in the answer, large ones as a redirect to a storage URL.
//!
//! A Lambda answer through API Gateway carries at most 6 MB, and binary bodies travel base64
//! (a third larger). Over [`crate::Settings::max_inline_bytes`] (4 MiB) the API answers
//! `307 Temporary Redirect` to a presigned `GET` of the object, valid for [`URL_VALIDITY`], with
//! the type and disposition the inline answer would have had. An object already in storage (a
//! receipt) is signed as it is; bytes the API derives (a decoded part, a mailbox message) are
//! first written (once: content-addressed, conditional), under `downloads/<tenant>/` of the raw bucket (removed
//! after a day by a lifecycle rule).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use pec_ports::{ObjectStore, SignedUrls};

use crate::{App, Backend, Problem};

/// How long a download URL may be used.
pub const URL_VALIDITY: std::time::Duration = std::time::Duration::from_secs(5 * 60);

/// What to answer with.
pub(crate) struct Download<'a> {
    pub bytes: Vec<u8>,
    pub content_type: &'a str,
    /// `Content-Disposition`, e.g. `attachment; filename="…"`.
    pub disposition: Option<String>,
    /// Where the very bytes are stored, if they are (bucket, key).
    pub stored: Option<(&'a str, &'a str)>,
    /// The caller's tenant (derived bytes are written under it).
    pub tenant: &'a str,
}

pub(crate) async fn answer<B: Backend>(app: &App<B>, d: Download<'_>) -> Result<Response, Problem> {
    let ct = HeaderValue::from_str(d.content_type)
        .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"));
    if d.bytes.len() <= app.settings.max_inline_bytes {
        let mut response = d.bytes.into_response();
        let h = response.headers_mut();
        h.insert(header::CONTENT_TYPE, ct);
        if let Some(v) = d
            .disposition
            .as_deref()
            .and_then(|v| HeaderValue::from_str(v).ok())
        {
            h.insert(header::CONTENT_DISPOSITION, v);
        }
        return Ok(response);
    }
    let objects = app.backend.objects();
    let derived;
    let (bucket, key) = match d.stored {
        Some(place) => place,
        None => {
            derived = format!("downloads/{}/{}", d.tenant, crate::sha256_hex(&d.bytes));
            let raw = app.settings.raw_bucket.as_str();
            // Content-addressed: an existing copy is the same bytes (a conditional write;
            // no HeadObject, which would need s3:ListBucket on the raw bucket to see a 404).
            objects
                .put_if_absent(raw, &derived, d.bytes, d.content_type)
                .await?;
            (raw, derived.as_str())
        }
    };
    let url = objects
        .download_url(
            bucket,
            key,
            d.content_type,
            d.disposition.as_deref(),
            URL_VALIDITY,
        )
        .await?;
    let mut response = StatusCode::TEMPORARY_REDIRECT.into_response();
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&url) {
        h.insert(header::LOCATION, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}
